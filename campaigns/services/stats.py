"""The campaign funnel, rolled up into CampaignStats rows; the A/B test; users' usual active hour.

Definitions (every number the admin's funnel page shows comes from here):

Scope. A campaign's messages are its `Message` rows with `is_test` false: a marketer's test
sends are left out of every count, rate, feedback tally, conversion and timeline. A step's
messages are those with that `step`, a variant's those with that `variant`. Each scope is one
CampaignStats row: "campaign", "step:<id>", "variant:<id>".

Recipients (distinct users, so a user sent all three 3-2-1 reminders is one recipient of the
campaign, and a re-entered user of a triggered campaign one recipient of the step):

- targeted: users with at least one message in the scope;
- reached: users with at least one delivery in the scope that the provider accepted and that
  is still sent or beyond (sent, delivered, opened, read, clicked). A delivery that bounced
  after sending is failed, not reached;
- delivered / opened / clicked: users with a delivery delivered-or-beyond / opened-or-read-or-
  beyond / clicked. Callbacks only move a delivery forward (notifier.status.ENGAGEMENT_RANK),
  so a delivery's status is the furthest stage it reached;
- converted: users with a Conversion attributed to a message in the scope (Conversion.message
  set); several orders by one user count once;
- unsubscribed: users with an Unsubscribe that came through a message in the scope.

Rates: open rate = opened / reached, CTR = clicked / reached, conversion rate = converted /
reached; None (shown as "—") while nobody was reached.

Deliveries (counted per delivery, i.e. per (message, channel); per channel and in total). Each
delivery is in exactly one of: sent (sent or beyond, as above), failed, suppressed, held (now),
cancelled, in flight (pending, queued, sending). delivered / opened / clicked are the sent
deliveries that got that far. Suppressed, failed, held and cancelled are also broken down by
reason.

Feedback: inbox items of the scope's messages with a 👍 useful / 😕 meh / 👎 irrelevant verdict,
counted per item (one per in-app message).

Hold-out (campaign scope only): an intention-to-treat comparison of two randomly split groups
measured over the same window. Treated = users with a (non-test) message of the campaign,
whatever happened to it (suppressed, failed, held: the split was random, the routing is not);
hold-out = the campaign's Holdout users. A user of either group converted if they have any
Conversion inside the window, whichever campaign it was attributed to (attribution prefers
messages, so it cannot be the yardstick for a group that gets none). The window: for a one-off
campaign with an event, one calendar window for everybody (policies.measurement_window: from the
first step's fan-out to the last step's expiry plus attribution_hours); otherwise each user's
own window from the moment the fan-out assigned them (their first message, or their Holdout
row) for attribution_hours (policies.user_window). Reported: both groups' size, converted and
rate, uplift = treated rate - hold-out rate (points) with its 95 % confidence interval
(Newcombe's hybrid score interval) and the pooled two-proportion z-test's two-sided p-value,
relative uplift = points / hold-out rate, and "final" once the shared window has closed.
The funnel's own conversion rate (attributed conversions / reached) is a different number.

Timeline (campaign scope only): deliveries counted as sent above, by the UTC hour of `sent_at`;
only hours with sends are stored, so the sum equals the campaign's sent deliveries.

A/B (step scope, steps with 2+ variants), on the campaign's ab_metric: "ctr" = clicked /
reached users, "conversion" = users converted in their window / users assigned the variant. The
best variant against each other one, pooled two-proportion z-tests, Bonferroni-adjusted, the
largest p reported (policies.ab_test). A fixed horizon, so that a roll-up every few minutes
cannot make a winner come and go: only users whose window is over count, and the test decides
once, when every variant has ab_sample_size of them or no more can come (a one-off step's
window has ended, a finished triggered campaign's last window has ended). Before that the page
shows the live counts with no winner, leader or p-value; after it the decision is stored in
CampaignStats.ab_decisions (first writer wins) and every later roll-up shows it unchanged. There
is a winner only when p < 0.05 and every variant had at least ab_sample_size users.

Usual active hour: the most frequent local hour (user's time zone) of their inbox reads and
delivery opens and clicks in the last `days`; ties go to the earliest hour; fewer than three
events leave the field as it was.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

from django.db import connection
from django.db.models import Count, Q, QuerySet
from django.db.models.functions import TruncHour
from django.utils import timezone

from campaigns.models import (
    Campaign,
    CampaignKind,
    CampaignStats,
    CampaignStatus,
    CampaignStep,
    Conversion,
    Holdout,
    StepVariant,
)
from campaigns.policies import (
    ABMetric,
    ABResult,
    Comparison,
    StepPlan,
    Timing,
    VariantCounts,
    Window,
    ab_horizon_reached,
    ab_test,
    format_p,
    measurement_window,
    step_window,
    two_proportion_z_test,
    uplift,
)
from notifier.models import Delivery, Feedback, InboxItem, Message, Recipient, Unsubscribe
from notifier.status import ENGAGEMENT_RANK, DeliveryStatus, Reason
from notifier.user_keys import UserKey

S = DeliveryStatus

REACHED = frozenset(status for status, rank in ENGAGEMENT_RANK.items() if rank >= 0)
DELIVERED = frozenset(status for status, rank in ENGAGEMENT_RANK.items() if rank >= 1)
OPENED = frozenset(status for status, rank in ENGAGEMENT_RANK.items() if rank >= 2)
CLICKED = frozenset(status for status, rank in ENGAGEMENT_RANK.items() if rank >= 3)
IN_FLIGHT = frozenset({S.PENDING, S.QUEUED, S.SENDING})

# Finished campaigns keep being rolled up this long: late opens, clicks and conversions.
ROLLUP_AFTER_DONE = timedelta(days=7)
MIN_ACTIVE_HOUR_EVENTS = 3

CAMPAIGN_SCOPE = "campaign"
RECIPIENT_STAGES = (
    "targeted",
    "reached",
    "delivered",
    "opened",
    "clicked",
    "converted",
    "unsubscribed",
)
DELIVERY_COUNTS = (
    "total",
    "sent",
    "delivered",
    "opened",
    "clicked",
    "failed",
    "suppressed",
    "held",
    "cancelled",
    "in_flight",
)
FEEDBACK_VALUES = tuple(Feedback.values)


def step_scope(step_id: int) -> str:
    return f"step:{step_id}"


def variant_scope(variant_id: int) -> str:
    return f"variant:{variant_id}"


def reason_label(reason: str) -> str:
    """The support-readable label of a delivery reason (unknown or blank ones said as such)."""
    if not reason:
        return "No reason recorded"
    try:
        return str(Reason(reason).label)
    except ValueError:
        return reason


# --- The funnel -----------------------------------------------------------------------------


@dataclass
class DeliveryTally:
    """Delivery counts of one scope on one channel (or all channels)."""

    counts: dict[str, int] = field(default_factory=lambda: dict.fromkeys(DELIVERY_COUNTS, 0))
    suppressed_by_reason: dict[str, int] = field(default_factory=dict)
    failed_by_reason: dict[str, int] = field(default_factory=dict)
    held_by_reason: dict[str, int] = field(default_factory=dict)
    cancelled_by_reason: dict[str, int] = field(default_factory=dict)

    def add(self, status: str, reason: str, n: int) -> None:
        counts = self.counts
        counts["total"] += n
        if status in REACHED:
            counts["sent"] += n
            counts["delivered"] += n if status in DELIVERED else 0
            counts["opened"] += n if status in OPENED else 0
            counts["clicked"] += n if status in CLICKED else 0
        elif status == S.FAILED:
            counts["failed"] += n
            _bump(self.failed_by_reason, reason, n)
        elif status == S.SUPPRESSED:
            counts["suppressed"] += n
            _bump(self.suppressed_by_reason, reason, n)
        elif status == S.HELD:
            counts["held"] += n
            _bump(self.held_by_reason, reason, n)
        elif status == S.CANCELLED:
            counts["cancelled"] += n
            _bump(self.cancelled_by_reason, reason, n)
        elif status in IN_FLIGHT:
            counts["in_flight"] += n

    def as_dict(self) -> dict[str, Any]:
        return {
            **self.counts,
            "suppressed_by_reason": dict(sorted(self.suppressed_by_reason.items())),
            "failed_by_reason": dict(sorted(self.failed_by_reason.items())),
            "held_by_reason": dict(sorted(self.held_by_reason.items())),
            "cancelled_by_reason": dict(sorted(self.cancelled_by_reason.items())),
        }


def _bump(counter: dict[str, int], key: str, n: int) -> None:
    counter[key] = counter.get(key, 0) + n


@dataclass
class ScopeTally:
    """Everything counted for one scope before it becomes a CampaignStats row's data."""

    scope: str
    level: str
    name: str
    step_id: int | None = None
    variant_id: int | None = None
    recipients: dict[str, int] = field(default_factory=lambda: dict.fromkeys(RECIPIENT_STAGES, 0))
    total: DeliveryTally = field(default_factory=DeliveryTally)
    channels: dict[str, DeliveryTally] = field(default_factory=dict)
    feedback: dict[str, int] = field(default_factory=lambda: dict.fromkeys(FEEDBACK_VALUES, 0))
    extra: dict[str, Any] = field(default_factory=dict)

    def add_deliveries(self, channel: str, status: str, reason: str, n: int) -> None:
        self.total.add(status, reason, n)
        self.channels.setdefault(channel, DeliveryTally()).add(status, reason, n)

    def rates(self) -> dict[str, float | None]:
        reached = self.recipients["reached"]
        return {
            "open_rate": _ratio(self.recipients["opened"], reached),
            "ctr": _ratio(self.recipients["clicked"], reached),
            "conversion_rate": _ratio(self.recipients["converted"], reached),
        }

    def as_data(self) -> dict[str, Any]:
        return {
            "scope": self.scope,
            "level": self.level,
            "name": self.name,
            "step_id": self.step_id,
            "variant_id": self.variant_id,
            "recipients": dict(self.recipients),
            "rates": self.rates(),
            "deliveries": {
                "total": self.total.as_dict(),
                "channels": {
                    channel: tally.as_dict() for channel, tally in sorted(self.channels.items())
                },
            },
            "feedback": dict(self.feedback),
            **self.extra,
        }


def _ratio(numerator: int, denominator: int) -> float | None:
    return numerator / denominator if denominator else None


def _recipient_annotations(campaign_id: int) -> dict[str, Count]:
    attributed = Conversion.objects.filter(message__campaign_id=campaign_id).values("message_id")
    unsubscribed = Unsubscribe.objects.filter(message__campaign_id=campaign_id).values("message_id")

    def users(condition: Q | None = None) -> Count:
        return Count("user_id", distinct=True, filter=condition)

    return {
        "targeted": users(),
        "reached": users(Q(deliveries__status__in=sorted(REACHED))),
        "delivered": users(Q(deliveries__status__in=sorted(DELIVERED))),
        "opened": users(Q(deliveries__status__in=sorted(OPENED))),
        "clicked": users(Q(deliveries__status__in=sorted(CLICKED))),
        # IN (uncorrelated subquery): PostgreSQL hashes it once per query.
        "converted": users(Q(pk__in=attributed)),
        "unsubscribed": users(Q(pk__in=unsubscribed)),
    }


def _campaign_messages(campaign_id: int) -> QuerySet[Message]:
    return Message.objects.filter(campaign_id=campaign_id, is_test=False)


@dataclass(frozen=True)
class Measurement:
    """What the hold-out comparison and the A/B tests of one campaign are measured by."""

    kind: str
    attribution_hours: int
    ab_metric: ABMetric
    ab_sample_size: int
    # One-off campaigns with an event: the campaign's window and each step's; otherwise None
    # and {}: each user is measured over their own window (policies.user_window).
    window: Window | None
    step_windows: dict[int, Window]
    # A triggered campaign that finished: no user can join a variant any more.
    finished_at: datetime | None


def _measurement(campaign_id: int, steps: Sequence[Mapping[str, Any]]) -> Measurement:
    settings = Campaign.objects.values(
        "kind",
        "event_at",
        "attribution_hours",
        "ab_metric",
        "ab_sample_size",
        "status",
        "finished_at",
    ).get(pk=campaign_id)
    event_at, hours = settings["event_at"], settings["attribution_hours"]
    plans = {
        step["id"]: StepPlan(step["offset_minutes"], Timing(step["timing"]), step["local_time"])
        for step in steps
    }
    window: Window | None = None
    step_windows: dict[int, Window] = {}
    if settings["kind"] == CampaignKind.ONE_OFF and event_at is not None:
        started = [step["started_at"] for step in steps if step["started_at"] is not None]
        window = measurement_window(
            event_at=event_at,
            steps=list(plans.values()),
            first_start=min(started, default=None),
            attribution_hours=hours,
        )
        step_windows = {
            step["id"]: step_window(
                event_at=event_at,
                step=plans[step["id"]],
                started_at=step["started_at"],
                attribution_hours=hours,
            )
            for step in steps
        }
    finished = settings["status"] in (CampaignStatus.DONE, CampaignStatus.CANCELLED)
    return Measurement(
        kind=settings["kind"],
        attribution_hours=hours,
        ab_metric=ABMetric(settings["ab_metric"]),
        ab_sample_size=settings["ab_sample_size"],
        window=window,
        step_windows=step_windows,
        finished_at=settings["finished_at"] if finished else None,
    )


def campaign_funnel(campaign_id: int, *, now: datetime | None = None) -> dict[str, dict[str, Any]]:
    """The funnel of one campaign at every scope: {"campaign": data, "step:<id>": data,
    "variant:<id>": data}, each data ready to store as CampaignStats.data. A step's A/B test
    that reaches its horizon now carries its decision under data["ab"] with "new": True (the
    roll-up stores it once); one decided earlier is read back as it was.

    A dozen aggregate queries however large the audience (see the module docstring for what
    each number means).
    """
    now = now or timezone.now()
    steps = list(
        CampaignStep.objects.filter(campaign_id=campaign_id)
        .order_by("offset_minutes", "id")
        .values("id", "name", "offset_minutes", "timing", "local_time", "started_at")
    )
    measurement = _measurement(campaign_id, steps)
    variants = list(
        StepVariant.objects.filter(step__campaign_id=campaign_id)
        .order_by("name", "id")
        .values("id", "name", "step_id")
    )
    campaign = ScopeTally(scope=CAMPAIGN_SCOPE, level="campaign", name="Whole campaign")
    by_step: dict[int, ScopeTally] = {}
    for step in steps:
        by_step[step["id"]] = ScopeTally(
            scope=step_scope(step["id"]),
            level="step",
            name=step["name"],
            step_id=step["id"],
        )
    by_variant: dict[int, ScopeTally] = {}
    for variant in variants:
        if variant["step_id"] not in by_step:  # its step was added after the first read
            continue
        by_variant[variant["id"]] = ScopeTally(
            scope=variant_scope(variant["id"]),
            level="variant",
            name=variant["name"],
            step_id=variant["step_id"],
            variant_id=variant["id"],
        )

    _count_recipients(campaign_id, campaign, by_step, by_variant)
    _count_deliveries(campaign_id, campaign, by_step, by_variant)
    _count_feedback(campaign_id, campaign, by_step, by_variant)
    campaign.extra["holdout"] = _holdout(campaign_id, measurement, now)
    campaign.extra["timeline"] = _timeline(campaign_id)
    campaign.extra["steps"] = [step["id"] for step in steps]

    samples = _ab_samples(campaign_id, measurement, now)
    decided = _decisions(campaign_id)
    for step_id, step_tally in by_step.items():
        children = [v for v in by_variant.values() if v.step_id == step_id]
        step_tally.extra["variants"] = [v.variant_id for v in children]
        step_tally.extra["ab"] = (
            _ab(
                step_id,
                [(v.name, samples.get(v.variant_id or 0, VariantSample())) for v in children],
                measurement,
                decided.get(step_scope(step_id), {}),
                now,
            )
            if len(children) >= 2
            else None
        )

    tallies = [campaign, *by_step.values(), *by_variant.values()]
    return {tally.scope: tally.as_data() for tally in tallies}


def _count_recipients(
    campaign_id: int,
    campaign: ScopeTally,
    by_step: Mapping[int, ScopeTally],
    by_variant: Mapping[int, ScopeTally],
) -> None:
    # Distinct users do not add up across steps, so each level is its own GROUP BY.
    messages = _campaign_messages(campaign_id)
    annotations = _recipient_annotations(campaign_id)
    campaign.recipients.update(messages.aggregate(**annotations))
    groupings: list[tuple[str, Mapping[int, ScopeTally]]] = [
        ("step_id", by_step),
        ("variant_id", by_variant),
    ]
    for key, tallies in groupings:
        for row in messages.values(key).annotate(**annotations).order_by():
            tally = tallies.get(row[key])
            if tally is not None:
                tally.recipients.update({stage: row[stage] for stage in RECIPIENT_STAGES})


def _count_deliveries(
    campaign_id: int,
    campaign: ScopeTally,
    by_step: Mapping[int, ScopeTally],
    by_variant: Mapping[int, ScopeTally],
) -> None:
    # Deliveries do add up: one GROUP BY at the finest grain, summed upwards here.
    rows = (
        Delivery.objects.filter(message__campaign_id=campaign_id, message__is_test=False)
        .values("message__step_id", "message__variant_id", "channel", "status", "reason")
        .annotate(n=Count("id"))
        .order_by()
    )
    for row in rows:
        for tally in _tallies_of(
            row["message__step_id"], row["message__variant_id"], campaign, by_step, by_variant
        ):
            tally.add_deliveries(row["channel"], row["status"], row["reason"], row["n"])


def _count_feedback(
    campaign_id: int,
    campaign: ScopeTally,
    by_step: Mapping[int, ScopeTally],
    by_variant: Mapping[int, ScopeTally],
) -> None:
    rows = (
        InboxItem.objects.filter(
            message__campaign_id=campaign_id,
            message__is_test=False,
            feedback__in=FEEDBACK_VALUES,
        )
        .values("message__step_id", "message__variant_id", "feedback")
        .annotate(n=Count("id"))
        .order_by()
    )
    for row in rows:
        for tally in _tallies_of(
            row["message__step_id"], row["message__variant_id"], campaign, by_step, by_variant
        ):
            tally.feedback[row["feedback"]] += row["n"]


def _tallies_of(
    step_id: int | None,
    variant_id: int | None,
    campaign: ScopeTally,
    by_step: Mapping[int, ScopeTally],
    by_variant: Mapping[int, ScopeTally],
) -> list[ScopeTally]:
    tallies = [campaign]
    if step_id is not None and step_id in by_step:
        tallies.append(by_step[step_id])
    if variant_id is not None and variant_id in by_variant:
        tallies.append(by_variant[variant_id])
    return tallies


# Who was assigned when: a treated user at their first (non-test) message of the campaign, a
# held-out user at their Holdout row; the same fan-out writes one or the other. Each user is
# measured over the shared window when there is one, else over their own, and converted means
# any conversion of theirs in it, whichever campaign (if any) it was attributed to.
_HOLDOUT_SQL = """
WITH held AS (
    SELECT h.user_id, h.created_at AS assigned_at
      FROM {holdout} h
     WHERE h.campaign_id = %(campaign)s
),
treated AS (
    SELECT m.user_id, MIN(m.created_at) AS assigned_at
      FROM {message} m
     WHERE m.campaign_id = %(campaign)s AND NOT m.is_test
       AND m.user_id NOT IN (SELECT user_id FROM held)
     GROUP BY m.user_id
),
assigned AS (
    SELECT 'holdout' AS grp, user_id, assigned_at FROM held
    UNION ALL
    SELECT 'treated', user_id, assigned_at FROM treated
),
windowed AS (
    SELECT grp, user_id,
           COALESCE(%(start)s::timestamptz, assigned_at) AS w_start,
           COALESCE(%(end)s::timestamptz, assigned_at + make_interval(hours => %(hours)s)) AS w_end
      FROM assigned
)
SELECT grp,
       COUNT(*) AS size,
       COUNT(*) FILTER (WHERE EXISTS (
           SELECT 1 FROM {conversion} c
            WHERE c.user_id = w.user_id AND c.occurred_at BETWEEN w.w_start AND w.w_end
       )) AS converted,
       COUNT(*) FILTER (WHERE w.w_end <= %(now)s) AS matured
  FROM windowed w
 GROUP BY grp
"""


def _holdout(campaign_id: int, measurement: Measurement, now: datetime) -> dict[str, Any]:
    window = measurement.window
    sql = _HOLDOUT_SQL.format(
        holdout=Holdout._meta.db_table,
        message=Message._meta.db_table,
        conversion=Conversion._meta.db_table,
    )
    params = {
        "campaign": campaign_id,
        "start": window.start if window else None,
        "end": window.end if window else None,
        "hours": measurement.attribution_hours,
        "now": now,
    }
    groups = {"holdout": (0, 0, 0), "treated": (0, 0, 0)}
    with connection.cursor() as cursor:
        cursor.execute(sql, params)
        for grp, size, converted, matured in cursor.fetchall():
            groups[grp] = (size, converted, matured)
    size, converted, _ = groups["holdout"]
    treated_size, treated_converted, _ = groups["treated"]
    result = uplift(
        treated_converted=treated_converted,
        treated_size=treated_size,
        control_converted=converted,
        control_size=size,
    )
    return {
        "window": {"start": window.start.isoformat(), "end": window.end.isoformat()}
        if window
        else None,
        "attribution_hours": measurement.attribution_hours,
        "final": window is not None and now >= window.end,
        "size": size,
        "converted": converted,
        "conversion_rate": _ratio(converted, size),
        "treated": {
            "size": treated_size,
            "converted": treated_converted,
            "conversion_rate": _ratio(treated_converted, treated_size),
        },
        "uplift_points": result.points if result else None,
        "uplift_relative": result.relative if result else None,
        "ci_low": result.low if result else None,
        "ci_high": result.high if result else None,
        "confidence": result.confidence if result else None,
        "z": result.z if result else None,
        "p_value": result.p_value if result else None,
        "significant": result.significant if result else None,
    }


@dataclass(frozen=True)
class VariantSample:
    """One variant's users (distinct), and those whose measurement window is over."""

    users: int = 0
    reached: int = 0
    clicked: int = 0
    converted: int = 0
    matured_users: int = 0
    matured_reached: int = 0
    matured_clicked: int = 0
    matured_converted: int = 0

    def counts(self, name: str, metric: ABMetric, *, matured: bool) -> VariantCounts:
        if metric == ABMetric.CTR:
            trials, successes = (
                (self.matured_reached, self.matured_clicked)
                if matured
                else (self.reached, self.clicked)
            )
        else:
            trials, successes = (
                (self.matured_users, self.matured_converted)
                if matured
                else (self.users, self.converted)
            )
        return VariantCounts(name, trials, successes)


_AB_SAMPLES_SQL = """
WITH assigned AS (
    SELECT m.step_id, m.variant_id, m.user_id, MIN(m.created_at) AS assigned_at,
           BOOL_OR(d.status = ANY(%(reached)s)) AS reached,
           BOOL_OR(d.status = ANY(%(clicked)s)) AS clicked
      FROM {message} m
      LEFT JOIN {delivery} d ON d.message_id = m.id
     WHERE m.campaign_id = %(campaign)s AND NOT m.is_test AND m.variant_id IS NOT NULL
     GROUP BY 1, 2, 3
),
windows AS (
    SELECT * FROM unnest(%(step_ids)s::bigint[], %(starts)s::timestamptz[],
                         %(ends)s::timestamptz[]) AS w(step_id, w_start, w_end)
),
windowed AS (
    SELECT a.variant_id, a.user_id, COALESCE(a.reached, false) AS reached,
           COALESCE(a.clicked, false) AS clicked,
           COALESCE(w.w_start, a.assigned_at) AS w_start,
           COALESCE(w.w_end, a.assigned_at + make_interval(hours => %(hours)s)) AS w_end
      FROM assigned a LEFT JOIN windows w ON w.step_id = a.step_id
),
judged AS (
    SELECT variant_id, reached, clicked, w_end <= %(now)s AS matured,
           EXISTS (SELECT 1 FROM {conversion} c
                    WHERE c.user_id = x.user_id AND c.occurred_at BETWEEN x.w_start AND x.w_end)
               AS converted
      FROM windowed x
)
SELECT variant_id,
       COUNT(*), COUNT(*) FILTER (WHERE reached), COUNT(*) FILTER (WHERE clicked),
       COUNT(*) FILTER (WHERE converted),
       COUNT(*) FILTER (WHERE matured), COUNT(*) FILTER (WHERE matured AND reached),
       COUNT(*) FILTER (WHERE matured AND clicked), COUNT(*) FILTER (WHERE matured AND converted)
  FROM judged
 GROUP BY variant_id
"""


def _ab_samples(
    campaign_id: int, measurement: Measurement, now: datetime
) -> dict[int, VariantSample]:
    """Per variant: its users and, for the A/B test, those whose window is over (one query).
    A user of a variant counts once, reached/clicked if any delivery of theirs got that far."""
    windows = measurement.step_windows
    sql = _AB_SAMPLES_SQL.format(
        message=Message._meta.db_table,
        delivery=Delivery._meta.db_table,
        conversion=Conversion._meta.db_table,
    )
    params: dict[str, Any] = {
        "campaign": campaign_id,
        "reached": sorted(REACHED),
        "clicked": sorted(CLICKED),
        "step_ids": list(windows),
        "starts": [window.start for window in windows.values()],
        "ends": [window.end for window in windows.values()],
        "hours": measurement.attribution_hours,
        "now": now,
    }
    with connection.cursor() as cursor:
        cursor.execute(sql, params)
        return {row[0]: VariantSample(*row[1:]) for row in cursor.fetchall()}


def _decisions(campaign_id: int) -> dict[str, dict[str, Any]]:
    """The A/B decisions already taken, by step scope and metric."""
    rows = (
        CampaignStats.objects.filter(
            campaign_id=campaign_id, step__isnull=False, variant__isnull=True
        )
        .exclude(ab_decisions__isnull=True)
        .values_list("scope", "ab_decisions")
    )
    return {scope: decisions for scope, decisions in rows if isinstance(decisions, dict)}


def _ab(
    step_id: int,
    samples: Sequence[tuple[str, VariantSample]],
    measurement: Measurement,
    decided: Mapping[str, Any],
    now: datetime,
) -> dict[str, Any]:
    """A step's A/B test at a fixed horizon (policies.ab_horizon_reached): the decision taken
    then, kept as it was; before it, the live counts and no winner, leader or p-value."""
    metric, sample_size = measurement.ab_metric, measurement.ab_sample_size
    if metric in decided:
        return dict(decided[metric])
    window = measurement.step_windows.get(step_id)
    hours = measurement.attribution_hours
    if window is not None:
        closed = now >= window.end
        horizon = f"at {window.end:%Y-%m-%d %H:%M} UTC (the step's window end)"
    else:
        closed = measurement.finished_at is not None and now >= measurement.finished_at + (
            timedelta(hours=hours)
        )
        horizon = f"when each variant has {sample_size} users whose {hours}-hour window is over"
    matured = [sample.counts(name, metric, matured=True) for name, sample in samples]
    common = {
        "metric": str(metric),
        "sample_size": sample_size,
        "horizon": horizon,
        "window_end": window.end.isoformat() if window else None,
    }
    if ab_horizon_reached(
        matured=[counts.trials for counts in matured], sample_size=sample_size, closed=closed
    ):
        result = ab_test(matured, sample_size=sample_size)
        return {
            **result.as_dict(),
            **common,
            "stage": "decided",
            "decided_at": now.isoformat(),
            "new": True,
        }
    live = [sample.counts(name, metric, matured=False) for name, sample in samples]
    so_far = ", ".join(f"{counts.name} {counts.trials}" for counts in matured)
    return {
        **ABResult(
            best=None,
            winner=None,
            p_value=None,
            enough_data=False,
            verdict=f"Running: decides once, {horizon}; no winner before (so far {so_far})",
            variants=tuple(live),
        ).as_dict(),
        **common,
        "stage": "running",
        "decided_at": None,
    }


def _timeline(campaign_id: int) -> list[dict[str, Any]]:
    rows = (
        Delivery.objects.filter(
            message__campaign_id=campaign_id,
            message__is_test=False,
            status__in=sorted(REACHED),
            sent_at__isnull=False,
        )
        .annotate(hour=TruncHour("sent_at", tzinfo=UTC))
        .values("hour")
        .annotate(sent=Count("id"))
        .order_by("hour")
    )
    return [{"hour": row["hour"].isoformat(), "sent": row["sent"]} for row in rows]


# --- The roll-up ----------------------------------------------------------------------------


def campaigns_to_roll_up(*, now: datetime | None = None) -> QuerySet[Campaign]:
    """Running and paused campaigns, and those done within ROLLUP_AFTER_DONE."""
    now = now or timezone.now()
    return Campaign.objects.filter(
        Q(status__in=[CampaignStatus.RUNNING, CampaignStatus.PAUSED])
        | Q(status=CampaignStatus.DONE, finished_at__gte=now - ROLLUP_AFTER_DONE)
    )


def stats_rollup(*, campaign_ids: Iterable[int] | None = None, now: datetime | None = None) -> int:
    """Recompute and upsert the CampaignStats rows (every scope) of the given campaigns, or of
    the campaigns worth watching; returns how many rows were written. Safe to run twice: an A/B
    decision, once stored, is kept whatever later roll-ups count."""
    now = now or timezone.now()
    campaigns = (
        Campaign.objects.filter(pk__in=list(campaign_ids))
        if campaign_ids is not None
        else campaigns_to_roll_up(now=now)
    )
    written = 0
    for campaign_id in campaigns.order_by("pk").values_list("pk", flat=True):
        written += _store(campaign_id, campaign_funnel(campaign_id, now=now))
    return written


def _store(campaign_id: int, funnel: Mapping[str, dict[str, Any]]) -> int:
    computed_at = timezone.now()
    decided_now = [
        scope for scope, data in funnel.items() if data.get("ab") and data["ab"].pop("new", False)
    ]
    rows = [
        CampaignStats(
            campaign_id=campaign_id,
            step_id=data["step_id"],
            variant_id=data["variant_id"],
            scope=scope,
            data=data,
            computed_at=computed_at,
        )
        for scope, data in funnel.items()
    ]
    CampaignStats.objects.bulk_create(
        rows,
        update_conflicts=True,
        unique_fields=["campaign", "scope"],
        update_fields=["step", "variant", "data", "computed_at"],
    )
    for scope in decided_now:
        _store_decision(campaign_id, scope, funnel[scope])
    return len(rows)


_DECIDE_SQL = """
UPDATE {stats}
   SET ab_decisions = COALESCE(ab_decisions, '{{}}'::jsonb) || %(decision)s::jsonb
 WHERE campaign_id = %(campaign)s AND scope = %(scope)s
   AND NOT COALESCE(ab_decisions, '{{}}'::jsonb) ? %(metric)s
"""


def _store_decision(campaign_id: int, scope: str, data: dict[str, Any]) -> None:
    """Keep a step's A/B decision for good; the first roll-up to write it wins (compare-and-set
    on the metric's key), and a roll-up that lost shows the kept one."""
    ab = data["ab"]
    metric = ab["metric"]
    with connection.cursor() as cursor:
        cursor.execute(
            _DECIDE_SQL.format(stats=CampaignStats._meta.db_table),
            {
                "decision": json.dumps({metric: ab}),
                "campaign": campaign_id,
                "scope": scope,
                "metric": metric,
            },
        )
        won = cursor.rowcount == 1
    if not won:
        kept = CampaignStats.objects.filter(campaign_id=campaign_id, scope=scope).values_list(
            "ab_decisions", flat=True
        )
        ab = (kept.first() or {}).get(metric, ab)
    CampaignStats.objects.filter(campaign_id=campaign_id, scope=scope).update(
        data={**data, "ab": ab}
    )


# --- Usual active hour ----------------------------------------------------------------------

# One statement: events → (user, local hour, count) → the top hour per user → UPDATE.
# An in-app read writes the inbox item's read_at and its delivery's opened_at at the same
# instant; UNION (not UNION ALL) on (delivery, instant) counts that read once. Time zones
# PostgreSQL does not know are skipped rather than failing the whole statement.
_ACTIVE_HOURS_SQL = """
WITH events AS (
    SELECT i.delivery_id, i.user_id, i.read_at AS at
      FROM {inbox} i
     WHERE i.read_at >= %(since)s {inbox_users}
    UNION
    SELECT d.id, d.user_id, d.opened_at
      FROM {delivery} d
     WHERE d.opened_at >= %(since)s {delivery_users}
    UNION
    SELECT d.id, d.user_id, d.clicked_at
      FROM {delivery} d
     WHERE d.clicked_at >= %(since)s {delivery_users}
),
hours AS (
    SELECT e.user_id,
           EXTRACT(HOUR FROM e.at AT TIME ZONE u.time_zone)::int AS hour,
           COUNT(*) AS n
      FROM events e
      JOIN {recipient} u ON u.user_id = e.user_id
     WHERE u.time_zone IN (SELECT name FROM pg_timezone_names)
     GROUP BY 1, 2
),
best AS (
    SELECT DISTINCT ON (user_id) user_id, hour, SUM(n) OVER (PARTITION BY user_id) AS events
      FROM hours
     ORDER BY user_id, n DESC, hour ASC
)
UPDATE {recipient} u
   SET usual_active_hour = best.hour
  FROM best
 WHERE u.user_id = best.user_id
   AND best.events >= %(min_events)s
   AND u.usual_active_hour IS DISTINCT FROM best.hour
"""


def learn_active_hours(
    *, user_ids: Sequence[UserKey] | None = None, days: int = 90, now: datetime | None = None
) -> int:
    """Set each user's usual_active_hour from their last `days` of reads, opens and clicks
    (see the module docstring); one SQL statement. Returns how many users' hour changed."""
    since = (now or timezone.now()) - timedelta(days=days)
    params: dict[str, Any] = {"since": since, "min_events": MIN_ACTIVE_HOUR_EVENTS}
    inbox_users = delivery_users = ""
    if user_ids is not None:
        params["user_ids"] = list(user_ids)
        inbox_users = "AND i.user_id = ANY(%(user_ids)s)"
        delivery_users = "AND d.user_id = ANY(%(user_ids)s)"
    sql = _ACTIVE_HOURS_SQL.format(
        inbox=InboxItem._meta.db_table,
        delivery=Delivery._meta.db_table,
        recipient=Recipient._meta.db_table,
        inbox_users=inbox_users,
        delivery_users=delivery_users,
    )
    with connection.cursor() as cursor:
        cursor.execute(sql, params)
        return cursor.rowcount


__all__ = [
    "ABResult",
    "Comparison",
    "VariantCounts",
    "ab_test",
    "campaign_funnel",
    "campaigns_to_roll_up",
    "format_p",
    "learn_active_hours",
    "reason_label",
    "stats_rollup",
    "two_proportion_z_test",
]
