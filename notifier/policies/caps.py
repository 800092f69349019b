"""Frequency caps for marketing: how many a user may get per day and week, and what to do over.

Windows are the user's own calendar day and ISO week (from Monday). Over the cap, a message is
deferred to the start of the next window when it will still be fresh then, and suppressed
when it would be stale. 👎 "irrelevant" feedback on a type lowers the weekly cap for that type.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from zoneinfo import ZoneInfo

from notifier.models.preferences import CapPeriod
from notifier.models.users import MarketingFrequency


@dataclass(frozen=True, slots=True)
class Caps:
    day: int
    week: int


@dataclass(frozen=True, slots=True)
class Windows:
    day: date  # the user's local date
    week: date  # the Monday of the user's local week


def caps_for(*, frequency: str, base_day: int, base_week: int, irrelevant: int) -> Caps:
    day, week = base_day, base_week
    if frequency == MarketingFrequency.WEEKLY:
        day, week = min(day, 1), min(week, 1)
    if frequency == MarketingFrequency.OFF:
        day, week = 0, 0
    week = max(0, week - irrelevant)
    return Caps(day=min(day, week), week=week)


def windows_at(now: datetime, tz: ZoneInfo) -> Windows:
    today = now.astimezone(tz).date()
    return Windows(day=today, week=today - timedelta(days=today.weekday()))


def next_window_start(now: datetime, tz: ZoneInfo, period: CapPeriod) -> datetime:
    """Local midnight starting the next day (or next week's Monday), as aware UTC."""
    windows = windows_at(now, tz)
    first_day = (
        windows.day + timedelta(days=1)
        if period == CapPeriod.DAY
        else windows.week + timedelta(weeks=1)
    )
    return datetime.combine(first_day, datetime.min.time(), tzinfo=tz).astimezone(UTC)
