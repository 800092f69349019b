"""Pure campaign policies: when a step is due, when each user gets it, who is held out, which
variant they see, how a step's offset reads, and the statistics of the funnel (the window both
groups of a hold-out comparison are measured over, the uplift with its confidence interval and
test, the A/B test and when it may decide). No database, no clock: plain values in, a decision
out.

A step is an offset from the campaign's event ("3 days before"), so moving the event moves
every pending step, and nothing about a step's time is stored but its offset.
"""

from __future__ import annotations

import hashlib
import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import datetime, time, timedelta
from enum import StrEnum
from statistics import NormalDist
from typing import Any
from zoneinfo import ZoneInfo

from notifier.user_keys import UserKey

# Three days before, two days before, one hour before: the seeds' "3-2-1" rule.
DEFAULT_PLAN: tuple[tuple[str, int], ...] = (
    ("Notice", -3 * 24 * 60),
    ("Reminder", -2 * 24 * 60),
    ("Last call", -60),
)
# A step starts within this long after its moment; later than that it is skipped, not sent late.
STEP_GRACE = timedelta(minutes=15)
# Steps sent at each user's local time start fanning out this early, so that the users whose
# day comes first (UTC+14) still get it on time; each message then waits for its user's hour.
LOCAL_TIME_LEAD = timedelta(hours=26)
DEFAULT_ACTIVE_HOUR = 19  # when a user has no reading history: early evening


class Timing(StrEnum):
    OFFSET = "offset"
    LOCAL_TIME = "local_time"
    ACTIVE_HOUR = "active_hour"


@dataclass(frozen=True, slots=True)
class StepPlan:
    offset_minutes: int
    timing: Timing = Timing.OFFSET
    local_time: time | None = None


def step_moment(event_at: datetime, step: StepPlan) -> datetime:
    """The step's nominal moment: the event plus the offset."""
    return event_at + timedelta(minutes=step.offset_minutes)


def fanout_start(event_at: datetime, step: StepPlan) -> datetime:
    """When fan-out should begin: at the moment, or a day ahead for local-time steps."""
    moment = step_moment(event_at, step)
    return moment if step.timing == Timing.OFFSET else moment - LOCAL_TIME_LEAD


def send_time(
    event_at: datetime, step: StepPlan, *, tz: ZoneInfo, active_hour: int | None
) -> datetime | None:
    """When this user should get the step: None means as soon as it fans out; otherwise the
    step's day in the user's zone, at the local time or the user's usual active hour."""
    if step.timing == Timing.OFFSET:
        return None
    day = step_moment(event_at, step).astimezone(tz).date()
    if step.timing == Timing.LOCAL_TIME and step.local_time is not None:
        wall = step.local_time
    else:
        wall = time(active_hour if active_hour is not None else DEFAULT_ACTIVE_HOUR)
    return datetime.combine(day, wall, tzinfo=tz)


def step_expiry(event_at: datetime, step: StepPlan) -> datetime:
    """A reminder for an event is worthless once the event has begun; a step after the event
    (a thank-you) keeps for a day."""
    moment = step_moment(event_at, step)
    return event_at if moment < event_at else moment + timedelta(days=1)


def _amounts(minutes: int) -> list[tuple[int, str]]:
    days, rest = divmod(abs(minutes), 24 * 60)
    hours, mins = divmod(rest, 60)
    return [(value, unit) for value, unit in ((days, "day"), (hours, "hour"), (mins, "minute"))]


def format_offset(minutes: int) -> str:
    """The short form the admin's offset field reads back: -4320 -> '-3d', -3600 -> '-2d 12h'."""
    if minutes == 0:
        return "0"
    parts = [f"{value}{unit[0]}" for value, unit in _amounts(minutes) if value]
    return ("-" if minutes < 0 else "+") + " ".join(parts)


def describe_offset(minutes: int) -> str:
    """-4320 -> '3 days before the event', 90 -> '1 hour 30 minutes after the event'."""
    if minutes == 0:
        return "at the event"
    parts = [
        f"{value} {unit}{'s' if value > 1 else ''}" for value, unit in _amounts(minutes) if value
    ]
    return f"{' '.join(parts)} {'before' if minutes < 0 else 'after'} the event"


def offset_words(minutes: int) -> str:
    """-4320 -> '3 days before', -60 -> '1 hour before', 0 -> 'at the event': what the steps
    read as, and what the admin's offset box takes back (campaigns.admin.parse_offset)."""
    return (
        describe_offset(minutes) if minutes == 0 else describe_offset(minutes)[: -len(" the event")]
    )


def day_words(minutes: int) -> str:
    """The day of a step's moment from the event's: 'the day before', '3 days before', 'on the
    event's day'."""
    days, rest = divmod(abs(minutes), 24 * 60)
    if rest:
        return f"on the day {offset_words(minutes)}"
    if days == 0:
        return "on the event's day"
    side = "before" if minutes < 0 else "after"
    return f"the day {side}" if days == 1 else f"{days} days {side}"


def step_reading(step: StepPlan) -> str:
    """A step as a marketer says it: '3 days before', 'at 20:00 the day before', 'at each
    customer's usual hour, 2 days before', '1 hour before'."""
    if step.timing == Timing.LOCAL_TIME and step.local_time is not None:
        return f"at {step.local_time:%H:%M} {day_words(step.offset_minutes)}"
    if step.timing != Timing.OFFSET:
        return f"at each customer's usual hour, {day_words(step.offset_minutes)}"
    return offset_words(step.offset_minutes)


class StepDecision(StrEnum):
    WAIT = "wait"
    START = "start"
    SKIP = "skip"


def step_decision(*, now: datetime, start_at: datetime) -> StepDecision:
    if now < start_at:
        return StepDecision.WAIT
    if now > start_at + STEP_GRACE:
        return StepDecision.SKIP
    return StepDecision.START


def _bucket(key: str, modulo: int) -> int:
    digest = hashlib.blake2b(key.encode(), digest_size=8).digest()
    return int.from_bytes(digest, "big") % modulo


def in_holdout(*, campaign_id: int, user_id: UserKey, percent: int) -> bool:
    """The same users are held out of a campaign on every step and every run."""
    return percent > 0 and _bucket(f"holdout:{campaign_id}:{user_id}", 100) < percent


def pick_variant(*, step_id: int, user_id: UserKey, variants: Sequence[tuple[int, int]]) -> int:
    """A variant id by weight, the same for a user every time (variants: (id, weight))."""
    return variant_picker(step_id=step_id, variants=variants)(user_id)


def variant_picker(
    *, step_id: int, variants: Sequence[tuple[int, int]]
) -> Callable[[UserKey], int]:
    """`pick_variant` for one step and many users: the weights are read once."""
    weighted = [(pk, weight) for pk, weight in variants if weight > 0] or list(variants)
    total = sum(weight for _, weight in weighted) or len(weighted)
    if len(weighted) == 1:
        only = weighted[0][0]
        return lambda user_id: only  # whatever the bucket, the one variant
    prefix = f"variant:{step_id}:"

    def pick(user_id: UserKey) -> int:
        point = _bucket(f"{prefix}{user_id}", total)
        for pk, weight in weighted:
            if point < (weight or 1):
                return pk
            point -= weight or 1
        return weighted[-1][0]

    return pick


# --- Measuring: one window for both groups, the uplift, the A/B test and its horizon --------

SIGNIFICANCE_LEVEL = 0.05
CONFIDENCE = 0.95
# The A/B test's default pre-set sample: users per variant whose window is over.
DEFAULT_AB_SAMPLE_SIZE = 100


@dataclass(frozen=True, slots=True)
class Window:
    """A closed interval of time over which conversions are counted."""

    start: datetime
    end: datetime


def measurement_window(
    *,
    event_at: datetime | None,
    steps: Sequence[StepPlan],
    first_start: datetime | None,
    attribution_hours: int,
) -> Window | None:
    """The one calendar window a one-off campaign's treated and hold-out users are both
    measured over: from the first step's fan-out (`first_start`, when it started; before that
    the planned start), when the campaign could first reach anyone, to the last moment any of
    its messages may still go out (the latest step expiry: a reminder expires at the event)
    plus `attribution_hours`. None without an event or a step: measure each user over their own
    window instead (`user_window`)."""
    if event_at is None or not steps:
        return None
    start = first_start or min(fanout_start(event_at, step) for step in steps)
    last_send = max(step_expiry(event_at, step) for step in steps)
    return Window(start, max(start, last_send + timedelta(hours=attribution_hours)))


def step_window(
    *, event_at: datetime, step: StepPlan, started_at: datetime | None, attribution_hours: int
) -> Window:
    """The window a step's variants are compared over: from its fan-out to its expiry (the
    last moment a message of it may go out) plus `attribution_hours`, the same for every user
    of every variant."""
    start = started_at or fanout_start(event_at, step)
    end = step_expiry(event_at, step) + timedelta(hours=attribution_hours)
    return Window(start, max(start, end))


def user_window(*, assigned_at: datetime, attribution_hours: int) -> Window:
    """Without a shared window (a triggered campaign, or no event): from the moment the user was
    assigned to the campaign or its hold-out (the same fan-out writes either) for
    `attribution_hours`; the same rule for both groups."""
    return Window(assigned_at, assigned_at + timedelta(hours=attribution_hours))


def normal_quantile(confidence: float) -> float:
    """The two-sided critical value: 1.959964 for 95 %."""
    return NormalDist().inv_cdf(0.5 + confidence / 2)


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


def wilson_interval(
    successes: int, trials: int, *, confidence: float = CONFIDENCE
) -> tuple[float, float]:
    """The Wilson score interval of a rate; (0, 1) without trials."""
    if trials <= 0:
        return 0.0, 1.0
    z = normal_quantile(confidence)
    rate = successes / trials
    denominator = 1 + z * z / trials
    centre = rate + z * z / (2 * trials)
    half = z * math.sqrt(rate * (1 - rate) / trials + z * z / (4 * trials * trials))
    return max(0.0, (centre - half) / denominator), min(1.0, (centre + half) / denominator)


def difference_interval(
    successes_a: int,
    trials_a: int,
    successes_b: int,
    trials_b: int,
    *,
    confidence: float = CONFIDENCE,
) -> tuple[float, float] | None:
    """Confidence interval of rate a - rate b: Newcombe's hybrid score interval (his method
    10, built from each rate's Wilson interval), which, unlike the textbook Wald interval,
    keeps its coverage at the low rates conversions have and with no conversions at all on a
    side. None without trials on either side."""
    if trials_a <= 0 or trials_b <= 0:
        return None
    rate_a, rate_b = successes_a / trials_a, successes_b / trials_b
    low_a, high_a = wilson_interval(successes_a, trials_a, confidence=confidence)
    low_b, high_b = wilson_interval(successes_b, trials_b, confidence=confidence)
    difference = rate_a - rate_b
    return (
        difference - math.sqrt((rate_a - low_a) ** 2 + (high_b - rate_b) ** 2),
        difference + math.sqrt((high_a - rate_a) ** 2 + (rate_b - low_b) ** 2),
    )


@dataclass(frozen=True, slots=True)
class Uplift:
    """Treated against control: the difference in rates (points), its confidence interval,
    the relative uplift, and the pooled two-proportion z-test of "no difference"."""

    points: float
    low: float
    high: float
    relative: float | None
    z: float
    p_value: float
    significant: bool
    confidence: float


def uplift(
    *,
    treated_converted: int,
    treated_size: int,
    control_converted: int,
    control_size: int,
    confidence: float = CONFIDENCE,
) -> Uplift | None:
    """The uplift of the treated group's rate over the control's; None while a group is
    empty. Significant when the two-sided p-value is below 1 - confidence."""
    interval = difference_interval(
        treated_converted, treated_size, control_converted, control_size, confidence=confidence
    )
    if interval is None:
        return None
    treated_rate = treated_converted / treated_size
    control_rate = control_converted / control_size
    z, p_value = two_proportion_z_test(
        treated_converted, treated_size, control_converted, control_size
    )
    points = treated_rate - control_rate
    return Uplift(
        points=points,
        low=interval[0],
        high=interval[1],
        relative=points / control_rate if control_rate else None,
        z=z,
        p_value=p_value,
        significant=p_value < 1 - confidence,
        confidence=confidence,
    )


class ABMetric(StrEnum):
    CTR = "ctr"
    CONVERSION = "conversion"


AB_METRIC_LABELS = {
    ABMetric.CTR: "click-through rate (clicked / reached)",
    ABMetric.CONVERSION: "conversion rate (converted in the window / assigned)",
}


@dataclass(frozen=True, slots=True)
class VariantCounts:
    """One variant's sample: trials (reached for CTR, assigned users for conversion) and
    successes (clicked, converted)."""

    name: str
    trials: int
    successes: int

    @property
    def rate(self) -> float | None:
        return self.successes / self.trials if self.trials else None


@dataclass(frozen=True, slots=True)
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
                {"name": v.name, "trials": v.trials, "successes": v.successes, "rate": v.rate}
                for v in self.variants
            ],
        }


def format_p(p_value: float) -> str:
    return "p < 0.0001" if p_value < 0.0001 else f"p = {p_value:.4f}"


def ab_test(
    variants: Sequence[VariantCounts], *, sample_size: int = DEFAULT_AB_SAMPLE_SIZE
) -> ABResult:
    """Is one variant's rate better than every other one's? The best (highest rate) against
    each other one, a pooled two-proportion z-test each, Bonferroni-adjusted for the number of
    comparisons; the reported p-value is the largest (the weakest comparison). A winner only
    when that p < SIGNIFICANCE_LEVEL and every variant has at least `sample_size` trials."""
    if len(variants) < 2:
        return ABResult(
            best=None,
            winner=None,
            p_value=None,
            enough_data=False,
            verdict="Only one variant: nothing to compare",
            variants=tuple(variants),
        )
    # Highest rate first; a variant without trials ranks last; ties keep list order.
    best = max(variants, key=lambda v: -1.0 if v.rate is None else v.rate)
    others = [v for v in variants if v is not best]
    comparisons = []
    for other in others:
        z, p = two_proportion_z_test(best.successes, best.trials, other.successes, other.trials)
        comparisons.append(Comparison(other.name, z, min(1.0, p * len(others))))
    p_value = max(c.p_value for c in comparisons)
    enough_data = all(v.trials >= sample_size for v in variants)
    if not enough_data:
        verdict = f"Not enough data: each variant needs at least {sample_size}"
        winner = None
    elif p_value < SIGNIFICANCE_LEVEL:
        winner = best.name
        verdict = f"{best.name} wins ({format_p(p_value)})"
    else:
        winner = None
        verdict = f"No significant difference ({format_p(p_value)})"
    return ABResult(
        best=best.name if best.trials else None,
        winner=winner,
        p_value=p_value,
        enough_data=enough_data,
        verdict=verdict,
        comparisons=tuple(comparisons),
        variants=tuple(variants),
    )


def ab_horizon_reached(*, matured: Sequence[int], sample_size: int, closed: bool) -> bool:
    """The fixed horizon: the A/B test decides once, when every variant has `sample_size`
    users whose measurement window is over, or when no more users can come (`closed`: a
    one-off step's window has ended, a finished triggered campaign's last window has ended).
    Before that there is no winner however the numbers look; after it the decision is kept."""
    return closed or (len(matured) >= 2 and min(matured) >= sample_size)


def series_stops(stop_on: str, *, converted: bool, clicked: bool) -> bool:
    """Whether a customer's series ends (the steps not yet sent to them are not sent), given
    the campaign's rule ("converted", "clicked", "either" or "never") and what they did."""
    return {
        "converted": converted,
        "clicked": clicked,
        "either": converted or clicked,
    }.get(stop_on, False)
