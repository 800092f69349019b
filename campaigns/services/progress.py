"""Live progress of a campaign's sending steps, for the progress bars polled by the admin.

Read from what the fan-out already keeps, never from the periodic roll-up
(campaigns.services.stats), so the bars move while a step sends:

- handed out: recipients in the step's `FanoutBatch` rows of its current walk round (the walk
  records each batch with the cursor it moved), and those batches counted done
  (`CampaignStep.batches_total` / `batches_done`);
- written: the step's messages (`Message.step_id` is indexed; an index-only count);
- sent, failed, held, suppressed, cancelled, in flight: the step's deliveries by status, one
  aggregate that walks the step's messages by that index and joins each to its deliveries by
  the (message, channel) unique index; test sends are left out, as in the funnel.

Expected: the users its segment reached when a lead approved it (`approved_audience`) until
the walk is over, then the recipients actually handed out (users who left the segment or were
deactivated meanwhile are not counted twice). The hold-out is handed out but never written,
so "written" stops short of "handed out" by its size.

A few small queries per campaign; on 100,000 deliveries the aggregate costs tens of
milliseconds (see the report in tests/campaigns/services/test_progress.py), and its answer is
kept for PROGRESS_CACHE_S so several people watching the same campaign share one count.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

from django.core.cache import cache
from django.db import connection

from campaigns.models import Campaign, CampaignStatus, CampaignStep, FanoutBatch, StepStatus
from notifier.db import table_name
from notifier.models import Delivery, Message
from notifier.status import ENGAGEMENT_RANK
from notifier.status import DeliveryStatus as S

SENT = frozenset(status for status, rank in ENGAGEMENT_RANK.items() if rank >= 0)
IN_FLIGHT = frozenset({S.PENDING, S.QUEUED, S.SENDING})
PROGRESS_CACHE_S = 1
# Campaigns whose steps may be sending (or have just been): the page polls only these.
LIVE = frozenset({CampaignStatus.RUNNING, CampaignStatus.PAUSED})
# Steps shown: the one sending, and those done or cancelled (their final numbers).
SHOWN_STEPS = (StepStatus.RUNNING, StepStatus.DONE, StepStatus.CANCELLED)


@dataclass(frozen=True)
class StepProgress:
    """One step's bar: every count is of recipients (handed out, written) or deliveries."""

    step_id: int
    name: str
    status: str
    status_label: str
    expected: int | None
    handed_out: int
    batches_total: int
    batches_done: int
    walk_done: bool
    written: int
    deliveries: int
    sent: int
    failed: int
    held: int
    suppressed: int
    cancelled: int
    in_flight: int
    complete: bool

    @property
    def percent_handed_out(self) -> int | None:
        return _percent(self.handed_out, self.expected)

    @property
    def percent_settled(self) -> int | None:
        """Deliveries no longer on their way (sent, failed, suppressed, cancelled or held)."""
        return _percent(self.deliveries - self.in_flight, self.deliveries)

    def as_dict(self) -> dict[str, Any]:
        return {
            **asdict(self),
            "percent_handed_out": self.percent_handed_out,
            "percent_settled": self.percent_settled,
        }


def _percent(part: int, whole: int | None) -> int | None:
    if not whole:
        return None
    return min(100, round(100 * part / whole))


@dataclass(frozen=True)
class CampaignProgress:
    campaign_id: int
    status: str
    status_label: str
    live: bool  # worth polling again
    steps: list[StepProgress]

    def as_dict(self) -> dict[str, Any]:
        return {
            "campaign_id": self.campaign_id,
            "status": self.status,
            "status_label": self.status_label,
            "live": self.live,
            "steps": [step.as_dict() for step in self.steps],
        }


_DELIVERIES_SQL = """
SELECT d.status, COUNT(*)
  FROM {delivery} d
  JOIN {message} m ON m.id = d.message_id
 WHERE m.step_id = %s AND NOT m.is_test
 GROUP BY d.status
"""

_HANDED_OUT_SQL = """
SELECT COALESCE(SUM(jsonb_array_length(recipient_ids)), 0)
  FROM {batch}
 WHERE step_id = %s AND walk_round = %s
"""


def step_delivery_counts(step_id: int) -> dict[str, int]:
    """The step's (non-test) deliveries by status: one indexed aggregate."""
    sql = _DELIVERIES_SQL.format(delivery=table_name(Delivery), message=table_name(Message))
    with connection.cursor() as cursor:
        cursor.execute(sql, [step_id])
        return {status: int(n) for status, n in cursor.fetchall()}


def _handed_out(step_id: int, walk_round: int) -> int:
    with connection.cursor() as cursor:
        cursor.execute(_HANDED_OUT_SQL.format(batch=table_name(FanoutBatch)), [step_id, walk_round])
        row = cursor.fetchone()
    return int(row[0]) if row else 0


def _step_progress(step: CampaignStep, approved_audience: int | None) -> StepProgress:
    by_status = step_delivery_counts(step.pk)
    handed_out = _handed_out(step.pk, step.walk_round)
    written = Message.objects.filter(step_id=step.pk, is_test=False).count()
    in_flight = sum(n for status, n in by_status.items() if status in IN_FLIGHT)
    batches_written = step.batches_done >= step.batches_total
    return StepProgress(
        step_id=step.pk,
        name=step.name,
        status=step.status,
        status_label=str(step.get_status_display()),
        expected=handed_out if step.walk_done else approved_audience,
        handed_out=handed_out,
        batches_total=step.batches_total,
        batches_done=step.batches_done,
        walk_done=step.walk_done,
        written=written,
        deliveries=sum(by_status.values()),
        sent=sum(n for status, n in by_status.items() if status in SENT),
        failed=by_status.get(S.FAILED, 0),
        held=by_status.get(S.HELD, 0),
        suppressed=by_status.get(S.SUPPRESSED, 0),
        cancelled=by_status.get(S.CANCELLED, 0),
        in_flight=in_flight,
        complete=step.status in (StepStatus.DONE, StepStatus.CANCELLED)
        or (step.walk_done and batches_written and in_flight == 0),
    )


def campaign_progress(campaign: Campaign, *, cached: bool = True) -> CampaignProgress:
    """The progress of the campaign's steps that are sending or have sent (a few queries per
    step), shared for PROGRESS_CACHE_S between callers when `cached`."""
    key = f"campaigns:progress:{campaign.pk}"
    if cached:
        hit = cache.get(key)
        if isinstance(hit, CampaignProgress):
            return hit
    steps = list(
        CampaignStep.objects.filter(campaign=campaign, status__in=SHOWN_STEPS).order_by(
            "offset_minutes", "pk"
        )
    )
    progress = CampaignProgress(
        campaign_id=campaign.pk,
        status=campaign.status,
        status_label=str(campaign.get_status_display()),
        live=campaign.status in LIVE and any(step.status == StepStatus.RUNNING for step in steps),
        steps=[_step_progress(step, campaign.approved_audience) for step in steps],
    )
    if cached:
        cache.set(key, progress, PROGRESS_CACHE_S)
    return progress


__all__ = ["CampaignProgress", "StepProgress", "campaign_progress", "step_delivery_counts"]
