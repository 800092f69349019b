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
deliveries that got that far. Suppressed, failed and held are also broken down by reason.

Feedback: inbox items of the scope's messages with a 👍 useful / 😕 meh / 👎 irrelevant verdict,
counted per item (one per in-app message).

Hold-out (campaign scope only): size = the campaign's Holdout users; converted = hold-out users
with a Conversion for the campaign that no message is attributed to (campaign set, message
null); rate = converted / size. Uplift = campaign conversion rate - hold-out rate (in
points) and, relative, that difference / hold-out rate.

Timeline (campaign scope only): deliveries counted as sent above, by the UTC hour of `sent_at`;
only hours with sends are stored, so the sum equals the campaign's sent deliveries.

A/B (step scope, steps with 2+ variants): a two-proportion z-test (pooled) of clicked / reached
between the variant with the best CTR and each other one, two-sided p-value from the normal
tail (erfc). With more than two variants the p-values are Bonferroni-adjusted for the
comparisons made, and the reported p-value is the largest (the weakest comparison). There is
a winner only when that p < 0.05 and every variant reached at least 100 users; below that the
verdict is "not enough data yet".

Usual active hour: the most frequent local hour (user's time zone) of their inbox reads and
delivery opens and clicks in the last `days`; ties go to the earliest hour; fewer than three
events leave the field as it was.
"""

from __future__ import annotations

import math
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
    CampaignStats,
    CampaignStatus,
    CampaignStep,
    Conversion,
    Holdout,
    StepVariant,
)
from notifier.models import Delivery, Feedback, InboxItem, Message, Unsubscribe, User
from notifier.status import ENGAGEMENT_RANK, DeliveryStatus, Reason

S = DeliveryStatus

REACHED = frozenset(status for status, rank in ENGAGEMENT_RANK.items() if rank >= 0)
DELIVERED = frozenset(status for status, rank in ENGAGEMENT_RANK.items() if rank >= 1)
OPENED = frozenset(status for status, rank in ENGAGEMENT_RANK.items() if rank >= 2)
CLICKED = frozenset(status for status, rank in ENGAGEMENT_RANK.items() if rank >= 3)
IN_FLIGHT = frozenset({S.PENDING, S.QUEUED, S.SENDING})

SIGNIFICANCE_LEVEL = 0.05
MIN_REACHED_PER_VARIANT = 100
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


# --- A/B test: pure statistics --------------------------------------------------------------


@dataclass(frozen=True)
class VariantCounts:
    name: str
    reached: int
    clicked: int

    @property
    def ctr(self) -> float | None:
        return self.clicked / self.reached if self.reached else None


@dataclass(frozen=True)
class Comparison:
    """The best variant against one other: z statistic and (adjusted) two-sided p-value."""

    name: str
    z: float
    p_value: float


@dataclass(frozen=True)
class ABResult:
    best: str | None
    winner: str | None
    p_value: float | None
    enough_data: bool
    verdict: str
    comparisons: tuple[Comparison, ...] = ()
    variants: tuple[VariantCounts, ...] = ()

    def as_dict(self) -> dict[str, Any]:
        return {
            "best": self.best,
            "winner": self.winner,
            "p_value": self.p_value,
            "enough_data": self.enough_data,
            "verdict": self.verdict,
            "comparisons": [
                {"name": c.name, "z": c.z, "p_value": c.p_value} for c in self.comparisons
            ],
            "variants": [
                {"name": v.name, "reached": v.reached, "clicked": v.clicked, "ctr": v.ctr}
                for v in self.variants
            ],
        }


def two_proportion_z_test(
    successes_a: int, trials_a: int, successes_b: int, trials_b: int
) -> tuple[float, float]:
    """(z, two-sided p-value) of "the two rates are equal", with the pooled standard error.

    No trials on either side, or a pooled rate of 0 or 1, is no evidence at all: (0.0, 1.0).
    """
    if trials_a <= 0 or trials_b <= 0:
        return 0.0, 1.0
    pooled = (successes_a + successes_b) / (trials_a + trials_b)
    variance = pooled * (1 - pooled) * (1 / trials_a + 1 / trials_b)
    if variance <= 0:
        return 0.0, 1.0
    z = (successes_a / trials_a - successes_b / trials_b) / math.sqrt(variance)
    return z, math.erfc(abs(z) / math.sqrt(2))


def format_p(p_value: float) -> str:
    return "p < 0.0001" if p_value < 0.0001 else f"p = {p_value:.4f}"


def ab_test(variants: list[VariantCounts]) -> ABResult:
    """Is one variant's CTR better than every other one's? See the module docstring's rule."""
    if len(variants) < 2:
        return ABResult(
            best=None,
            winner=None,
            p_value=None,
            enough_data=False,
            verdict="Only one variant: nothing to compare",
            variants=tuple(variants),
        )
    # Highest CTR first; a variant nobody was reached with ranks last; ties keep list order.
    best = max(variants, key=lambda v: -1.0 if v.ctr is None else v.ctr)
    others = [v for v in variants if v is not best]
    comparisons = []
    for other in others:
        z, p = two_proportion_z_test(best.clicked, best.reached, other.clicked, other.reached)
        comparisons.append(Comparison(other.name, z, min(1.0, p * len(others))))
    p_value = max(c.p_value for c in comparisons)
    enough_data = all(v.reached >= MIN_REACHED_PER_VARIANT for v in variants)
    if not enough_data:
        verdict = (
            f"Not enough data yet: each variant needs at least {MIN_REACHED_PER_VARIANT} "
            "reached recipients"
        )
        winner = None
    elif p_value < SIGNIFICANCE_LEVEL:
        winner = best.name
        verdict = f"{best.name} wins ({format_p(p_value)})"
    else:
        winner = None
        verdict = f"No significant difference yet ({format_p(p_value)})"
    return ABResult(
        best=best.name if best.reached else None,
        winner=winner,
        p_value=p_value,
        enough_data=enough_data,
        verdict=verdict,
        comparisons=tuple(comparisons),
        variants=tuple(variants),
    )


# --- The funnel -----------------------------------------------------------------------------


@dataclass
class DeliveryTally:
    """Delivery counts of one scope on one channel (or all channels)."""

    counts: dict[str, int] = field(default_factory=lambda: dict.fromkeys(DELIVERY_COUNTS, 0))
    suppressed_by_reason: dict[str, int] = field(default_factory=dict)
    failed_by_reason: dict[str, int] = field(default_factory=dict)
    held_by_reason: dict[str, int] = field(default_factory=dict)

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
        elif status in IN_FLIGHT:
            counts["in_flight"] += n

    def as_dict(self) -> dict[str, Any]:
        return {
            **self.counts,
            "suppressed_by_reason": dict(sorted(self.suppressed_by_reason.items())),
            "failed_by_reason": dict(sorted(self.failed_by_reason.items())),
            "held_by_reason": dict(sorted(self.held_by_reason.items())),
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


def campaign_funnel(campaign_id: int) -> dict[str, dict[str, Any]]:
    """The funnel of one campaign at every scope: {"campaign": data, "step:<id>": data,
    "variant:<id>": data}, each data ready to store as CampaignStats.data.

    Nine aggregate queries however large the audience (see the module docstring for what
    each number means).
    """
    steps = list(
        CampaignStep.objects.filter(campaign_id=campaign_id)
        .order_by("offset_minutes", "id")
        .values("id", "name", "offset_minutes")
    )
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
    campaign.extra["holdout"] = _holdout(campaign_id, campaign.rates()["conversion_rate"])
    campaign.extra["timeline"] = _timeline(campaign_id)
    campaign.extra["steps"] = [step["id"] for step in steps]

    for step_id, step_tally in by_step.items():
        children = [v for v in by_variant.values() if v.step_id == step_id]
        step_tally.extra["variants"] = [v.variant_id for v in children]
        step_tally.extra["ab"] = (
            ab_test(
                [
                    VariantCounts(v.name, v.recipients["reached"], v.recipients["clicked"])
                    for v in children
                ]
            ).as_dict()
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


def _holdout(campaign_id: int, campaign_rate: float | None) -> dict[str, Any]:
    unattributed = Conversion.objects.filter(campaign_id=campaign_id, message__isnull=True).values(
        "user_id"
    )
    counts = Holdout.objects.filter(campaign_id=campaign_id).aggregate(
        size=Count("user_id", distinct=True),
        converted=Count("user_id", distinct=True, filter=Q(user_id__in=unattributed)),
    )
    rate = _ratio(counts["converted"], counts["size"])
    points = campaign_rate - rate if campaign_rate is not None and rate is not None else None
    return {
        "size": counts["size"],
        "converted": counts["converted"],
        "conversion_rate": rate,
        "uplift_points": points,
        "uplift_relative": points / rate if points is not None and rate else None,
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


def stats_rollup(*, campaign_ids: Iterable[int] | None = None) -> int:
    """Recompute and upsert the CampaignStats rows (every scope) of the given campaigns, or of
    the campaigns worth watching; returns how many rows were written. Safe to run twice."""
    campaigns = (
        Campaign.objects.filter(pk__in=list(campaign_ids))
        if campaign_ids is not None
        else campaigns_to_roll_up()
    )
    written = 0
    for campaign_id in campaigns.order_by("pk").values_list("pk", flat=True):
        written += _store(campaign_id, campaign_funnel(campaign_id))
    return written


def _store(campaign_id: int, funnel: Mapping[str, dict[str, Any]]) -> int:
    computed_at = timezone.now()
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
    return len(rows)


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
      JOIN {user} u ON u.id = e.user_id
     WHERE u.time_zone IN (SELECT name FROM pg_timezone_names)
     GROUP BY 1, 2
),
best AS (
    SELECT DISTINCT ON (user_id) user_id, hour, SUM(n) OVER (PARTITION BY user_id) AS events
      FROM hours
     ORDER BY user_id, n DESC, hour ASC
)
UPDATE {user} u
   SET usual_active_hour = best.hour
  FROM best
 WHERE u.id = best.user_id
   AND best.events >= %(min_events)s
   AND u.usual_active_hour IS DISTINCT FROM best.hour
"""


def learn_active_hours(
    *, user_ids: Sequence[int] | None = None, days: int = 90, now: datetime | None = None
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
        user=User._meta.db_table,
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
