"""Frequency caps for marketing: how many a user may get per day and week, and what to do over.

Windows are the user's own calendar day and ISO week (from Monday). Over the cap, a message is
deferred to the start of the next window when it will still be fresh then, and suppressed
when it would be stale. 👎 "irrelevant" feedback on a type lowers the weekly cap for that type.
When several compete for the slots left, the higher priority wins: a message yields to the
higher-priority ones of the same user that are due later the same day (`outranked_until`).
"""

from __future__ import annotations

from collections.abc import Sequence
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


# How long past a higher-priority rival's due time a message that yielded to it looks again:
# long enough for the rival's release to have run first in the same pass, or in the next.
YIELD_AFTER = timedelta(seconds=1)


def outranked_until(
    *, room: int, ahead: int, rivals: Sequence[datetime], now: datetime
) -> datetime | None:
    """When a message should look again because higher-priority messages of the same user will
    fill the slots left today, or None when it may try for a slot now.

    `room` is what is left of the user's day and week caps, `ahead` how many higher-priority
    messages of the same decision come first, `rivals` when the held higher-priority ones that
    are due before the user's day ends come due. With no room left the cap itself defers the
    message to the next window; without rivals, whoever comes first is served.
    """
    if not rivals or room <= 0 or ahead + len(rivals) < room:
        return None
    return max(now, min(rivals)) + YIELD_AFTER
