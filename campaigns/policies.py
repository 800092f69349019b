"""Pure campaign policies: when a step is due, when each user gets it, who is held out, which
variant they see, and how a step's offset reads. No database, no clock: plain values in, a
decision out.

A step is an offset from the campaign's event ("3 days before"), so moving the event moves
every pending step, and nothing about a step's time is stored but its offset.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, time, timedelta
from enum import StrEnum
from zoneinfo import ZoneInfo

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


def in_holdout(*, campaign_id: int, user_id: int, percent: int) -> bool:
    """The same users are held out of a campaign on every step and every run."""
    return percent > 0 and _bucket(f"holdout:{campaign_id}:{user_id}", 100) < percent


def pick_variant(*, step_id: int, user_id: int, variants: Sequence[tuple[int, int]]) -> int:
    """A variant id by weight, the same for a user every time (variants: (id, weight))."""
    weighted = [(pk, weight) for pk, weight in variants if weight > 0] or list(variants)
    total = sum(weight for _, weight in weighted) or len(weighted)
    point = _bucket(f"variant:{step_id}:{user_id}", total)
    for pk, weight in weighted:
        if point < (weight or 1):
            return pk
        point -= weight or 1
    return weighted[-1][0]


def series_stops(stop_on: str, *, converted: bool, clicked: bool) -> bool:
    """Whether a customer's series ends (the steps not yet sent to them are not sent), given
    the campaign's rule ("converted", "clicked", "either" or "never") and what they did."""
    return {
        "converted": converted,
        "clicked": clicked,
        "either": converted or clicked,
    }.get(stop_on, False)
