"""When each step of a per-recipient date series goes: pure arithmetic on the date, the steps
and the recipient's time zone (notifier.services.date_series writes what it decides)."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, time, timedelta
from typing import Any
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

# A step this little past still goes (at once): the caller's clock and ours differ by that
# much, and "3 days before" computed a moment ago has just passed. Further past, it is skipped.
PAST_GRACE = timedelta(minutes=1)


@dataclass(frozen=True)
class StepTime:
    step: int  # 1-based, in the series' order
    at: datetime  # UTC
    past: bool  # its time had gone when the date was set: not sent


def _zone(name: str) -> ZoneInfo:
    try:
        return ZoneInfo(name or "UTC")
    except (ValueError, ZoneInfoNotFoundError):  # the profile validates it; an old row may not
        return ZoneInfo("UTC")


def step_moment(date: datetime, step: dict[str, Any], time_zone: str) -> datetime:
    """The moment (UTC) of one step around `date` (aware).

    `{"days_before": N, "at": "HH:MM"}` is that wall-clock time on the recipient's calendar
    day N days before the date's own day there; a time a daylight-saving change skips falls
    the length of the gap later, one that happens twice is its first occurrence (as
    `send_at_local`)."""
    if "before_s" in step:
        return (date - timedelta(seconds=step["before_s"])).astimezone(UTC)
    if "after_s" in step:
        return (date + timedelta(seconds=step["after_s"])).astimezone(UTC)
    zone = _zone(time_zone)
    day = date.astimezone(zone).date() - timedelta(days=step["days_before"])
    hour, minute = (int(part) for part in step["at"].split(":"))
    return datetime.combine(day, time(hour, minute), tzinfo=zone).astimezone(UTC)


def step_times(
    date: datetime, steps: Sequence[dict[str, Any]], time_zone: str, now: datetime
) -> list[StepTime]:
    """Every step's moment, in the series' order, and whether it had passed by `now`."""
    times = []
    for index, step in enumerate(steps, 1):
        moment = step_moment(date, step, time_zone)
        times.append(StepTime(index, moment, moment < now - PAST_GRACE))
    return times


def series_exits(exit_on: str, seen: bool, clicked: bool) -> bool:
    """Whether what the person did with a date's earlier steps stops the rest."""
    if exit_on == "clicked":
        return clicked
    if exit_on == "seen":
        return seen or clicked
    return False
