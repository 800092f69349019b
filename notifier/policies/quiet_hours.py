"""Quiet hours: is it night for this user, and when does their night end?

Computed on the user's own wall clock with zoneinfo, so a window "22:00-08:00" ends at 08:00
local on both sides of a daylight-saving change. Transactional and critical service messages
bypass; marketing only with its campaign's audited permission.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, date, datetime, time, timedelta
from zoneinfo import ZoneInfo

from notifier.models.types import Kind, Priority


@dataclass(frozen=True, slots=True)
class QuietHours:
    enabled: bool
    start: time
    end: time
    tz: ZoneInfo


def parse_window(text: str) -> tuple[time, time]:
    """'22:00-08:00' -> (22:00, 08:00); raises ValueError naming the accepted form."""
    try:
        start, end = (time.fromisoformat(part.strip()) for part in text.split("-"))
    except ValueError as exc:
        raise ValueError(f"quiet hours {text!r} must look like '22:00-08:00'") from exc
    return start, end


def bypasses_quiet_hours(*, kind: str, priority: str, marketing_allowed: bool = False) -> bool:
    """Transactional and critical service messages go out at night. Marketing never does on
    its priority: only where a marketing lead allowed it on its campaign (`marketing_allowed`)."""
    if kind == Kind.MARKETING:
        return marketing_allowed
    return kind == Kind.TRANSACTIONAL or priority == Priority.CRITICAL


def _local_moment(day: date, wall: time, tz: ZoneInfo) -> datetime:
    # A wall time that does not exist (the spring-forward gap) resolves, with fold=0, to the
    # same distance after the gap's start: a window ending at 02:30 ends at 03:30 that day.
    return datetime.combine(day, wall, tzinfo=tz).astimezone(UTC)


def quiet_until(now: datetime, quiet: QuietHours) -> datetime | None:
    """When the quiet window around `now` ends (aware, UTC), or None when it is not quiet."""
    if not quiet.enabled or quiet.start == quiet.end:
        return None
    local = now.astimezone(quiet.tz)
    wall = local.time().replace(tzinfo=None)
    if quiet.start < quiet.end:  # a window within one day, e.g. 13:00-14:00
        inside, end_day = quiet.start <= wall < quiet.end, local.date()
    else:  # across midnight, e.g. 22:00-08:00
        inside = wall >= quiet.start or wall < quiet.end
        end_day = local.date() if wall < quiet.end else local.date() + timedelta(days=1)
    return _local_moment(end_day, quiet.end, quiet.tz) if inside else None


def spread_offset_s(message_id: int, window_s: int) -> int:
    """A fixed offset in [0, window_s) per message (Knuth's multiplicative hash), so a night's
    held messages are released across the morning, each at one time however often the job runs."""
    return (message_id * 2654435761) % window_s if window_s > 0 else 0
