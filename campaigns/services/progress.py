"""Live progress of a campaign's sending steps, for the progress bars polled by the admin.

Read from what the fan-out already keeps, never from the periodic roll-up
(campaigns.services.stats), so the bars move while a step sends:

- handed out: recipients in the step's `FanoutBatch` rows of its current walk round (the walk
  records each batch with the cursor it moved), and those batches counted done
  (`CampaignStep.batches_total` / `batches_done`);
- written, and the deliveries by status (sent or beyond, failed, held, suppressed, cancelled,
  on their way): per batch, its users' messages of the step (through the message's user
  index) and their deliveries (through the (message, channel) index); test sends left out.

A batch whose deliveries have all settled (sent or beyond, failed, suppressed, cancelled) is
kept in Django's cache for a minute or two and not counted again, so a poll reads the
deliveries of the batches still on their way, not the whole step: while 100,000 users are
sent to, each poll touches the few thousand in flight. A late bounce (sent, then failed)
shows once that batch is counted again. The whole answer is kept for PROGRESS_CACHE_S (longer
when counting took long), so several people watching one campaign share one count.

Expected: the users its segment reached when a lead approved it (`approved_audience`) until
the walk is over, then the recipients actually handed out. The hold-out is handed out but
never written, so "written" stops short of "handed out" by its size. A triggered campaign's
step shows its latest pass (each pass of new entrants is a walk round).
"""

from __future__ import annotations

import random
import time
from dataclasses import asdict, dataclass
from datetime import UTC, datetime
from typing import Any

from django.core.cache import cache
from django.db import connection

from campaigns.models import (
    Campaign,
    CampaignKind,
    CampaignStatus,
    CampaignStep,
    FanoutBatch,
    StepStatus,
)
from notifier.db import table_name
from notifier.models import Delivery, Message, Recipient
from notifier.status import ENGAGEMENT_RANK
from notifier.status import DeliveryStatus as S

SENT = frozenset(status for status, rank in ENGAGEMENT_RANK.items() if rank >= 0)
IN_FLIGHT = frozenset({S.PENDING, S.QUEUED, S.SENDING})
# Where a delivery stays for the bars (a sent one may still bounce: PROGRESS_SETTLED_S).
SETTLED = frozenset({*SENT, S.FAILED, S.SUPPRESSED, S.CANCELLED})
PROGRESS_CACHE_S = 1
PROGRESS_CACHE_MAX_S = 30
PROGRESS_SETTLED_S = 60
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


# The step's batches of its current walk round, in recipient id order: the walk hands out
# consecutive ranges of recipient ids, so a batch is the range from its first recipient to its
# last, and a message belongs to the batch whose range holds its user's recipient id.
_BATCHES_SQL = """
SELECT id, first_recipient_id, (recipient_ids ->> -1)::bigint,
       jsonb_array_length(recipient_ids), done_at IS NOT NULL, published_at
  FROM {batch}
 WHERE step_id = %s AND walk_round = %s
 ORDER BY first_recipient_id
"""

# Messages of the step and their deliveries, by batch (the bucket of the recipient id among the
# batches' first ids) and status, plus one row per batch with its messages; a message without
# a delivery yet has an empty status. {source} is either the
# whole step (one pass over its messages, hashed: for a first count) or only the recipients of
# the batches still settling (through the recipient's primary key, the message's user index and
# the delivery's (message, channel) index).
_TALLY_SQL = """
WITH handed AS MATERIALIZED (
    SELECT width_bucket(r.id, %(firsts)s::bigint[]) AS bucket, m.id AS message_id
      FROM {source}
     WHERE m.step_id = %(step)s AND NOT m.is_test AND m.created_at >= %(since)s
)
SELECT h.bucket, COALESCE(d.status, ''), COUNT(*)
  FROM handed h LEFT JOIN {delivery} d ON d.message_id = h.message_id
 GROUP BY 1, 2
UNION ALL
SELECT bucket, %(messages)s, COUNT(*) FROM handed GROUP BY 1
"""
_WHOLE_STEP = "{message} m JOIN {recipient} r ON r.user_id = m.user_id"
_LISTED = """{recipient} r
      JOIN {message} m ON m.user_id = r.user_id AND r.id = ANY(%(recipient_ids)s::bigint[])"""
MESSAGES = "#messages"  # the row per batch that counts its messages, not a status
# Above this share of a step's batches still settling, one pass over the whole step is cheaper
# than looking each of their users up.
WHOLE_STEP_SHARE = 0.25


@dataclass(frozen=True)
class Batch:
    pk: int
    first: int
    last: int
    users: int
    done: bool


@dataclass(frozen=True)
class BatchTally:
    """A batch's messages and its deliveries by status."""

    messages: int
    deliveries: dict[str, int]

    @property
    def settled(self) -> bool:
        """Written, every message with a delivery, every delivery past its way out."""
        return (
            bool(self.messages)
            and "" not in self.deliveries
            and not (set(self.deliveries) - SETTLED)
        )


def _batch_key(step_id: int, batch_id: int) -> str:
    return f"campaigns:progress:step:{step_id}:batch:{batch_id}"


def _tallies(
    step_id: int, batches: list[Batch], wanted: list[Batch], *, since: datetime
) -> dict[int, BatchTally]:
    """Count the `wanted` batches of the step (one query)."""
    if not wanted:
        return {}
    whole = len(wanted) > WHOLE_STEP_SHARE * len(batches)
    source = (_WHOLE_STEP if whole else _LISTED).format(
        message=table_name(Message), recipient=table_name(Recipient)
    )
    sql = _TALLY_SQL.format(source=source, delivery=table_name(Delivery))
    params: dict[str, Any] = {
        "firsts": [batch.first for batch in batches],
        "step": step_id,
        "since": since,
        "recipient_ids": []
        if whole
        else [
            pk
            for ids in FanoutBatch.objects.filter(pk__in=[batch.pk for batch in wanted])
            .values_list("recipient_ids", flat=True)
            .iterator()
            for pk in ids
        ],
        "messages": MESSAGES,
    }
    messages: dict[int, int] = {}
    deliveries: dict[int, dict[str, int]] = {}
    with connection.cursor() as cursor:
        cursor.execute(sql, params)
        for bucket, status, count in cursor.fetchall():
            if not bucket:
                continue  # a recipient before the round's first batch: not handed out in it
            pk = batches[bucket - 1].pk
            if status == MESSAGES:
                messages[pk] = int(count)
            else:  # "": messages with no delivery yet, so the batch is not settled
                deliveries.setdefault(pk, {})[status] = int(count)
    return {
        batch.pk: BatchTally(messages.get(batch.pk, 0), deliveries.get(batch.pk, {}))
        for batch in (batches if whole else wanted)
    }


def step_tally(
    step_id: int, walk_round: int, *, triggered: bool = False, cached: bool = True
) -> tuple[int, BatchTally]:
    """(users handed out, messages and deliveries by status) of the step's round.

    Batches whose deliveries have all settled are kept in the cache (PROGRESS_SETTLED_S or up
    to twice that, so a late bounce still shows within minutes) and not counted again: a poll
    reads only the deliveries of batches still on their way. A triggered step's round is its
    latest pass: only messages made since its first batch was handed out count."""
    with connection.cursor() as cursor:
        cursor.execute(_BATCHES_SQL.format(batch=table_name(FanoutBatch)), [step_id, walk_round])
        rows = cursor.fetchall()
    batches = [
        Batch(int(pk), int(first), int(last), int(n), bool(done))
        for pk, first, last, n, done, _ in rows
    ]
    since = min((row[5] for row in rows), default=None) if triggered else None
    keys = {batch.pk: f"campaigns:progress:step:{step_id}:batch:{batch.pk}" for batch in batches}
    kept = cache.get_many(list(keys.values())) if cached else {}
    tallies: dict[int, BatchTally] = {
        pk: hit for pk, key in keys.items() if isinstance(hit := kept.get(key), BatchTally)
    }
    counted = _tallies(
        step_id,
        batches,
        [batch for batch in batches if batch.pk not in tallies],
        since=since or datetime.min.replace(tzinfo=UTC),
    )
    done = {batch.pk for batch in batches if batch.done}
    cache.set_many(
        {keys[pk]: tally for pk, tally in counted.items() if pk in done and tally.settled},
        PROGRESS_SETTLED_S + random.randint(0, PROGRESS_SETTLED_S),
    )
    tallies.update(counted)
    total: dict[str, int] = {}
    for tally in tallies.values():
        for status, n in tally.deliveries.items():
            total[status] = total.get(status, 0) + n
    handed_out = sum(batch.users for batch in batches)
    return handed_out, BatchTally(sum(t.messages for t in tallies.values()), total)


def _step_progress(
    step: CampaignStep, approved_audience: int | None, *, triggered: bool, cached: bool
) -> StepProgress:
    handed_out, tally = step_tally(
        step.pk,
        step.walk_round,
        triggered=triggered,
        cached=cached,
    )
    by_status = {status: n for status, n in tally.deliveries.items() if status}
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
        written=tally.messages,
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
    started = time.monotonic()
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
        steps=[
            _step_progress(
                step,
                campaign.approved_audience,
                triggered=campaign.kind == CampaignKind.TRIGGERED,
                cached=cached,
            )
            for step in steps
        ],
    )
    if cached:
        # Kept longer when counting took long (a large step held for its users' local time
        # settles no batch): the database spends at most a tenth of its time on one campaign's
        # bars, however many people watch them.
        elapsed = time.monotonic() - started
        cache.set(key, progress, min(PROGRESS_CACHE_MAX_S, max(PROGRESS_CACHE_S, 10 * elapsed)))
    return progress


__all__ = ["BatchTally", "CampaignProgress", "StepProgress", "campaign_progress", "step_tally"]
