"""Digest cadence: when a person's open digest is due, on their own wall clock.

Pure: a cadence (immediately / hourly / daily at a local time / weekly on a weekday at a local
time), a time zone and the moment the digest opened give its due time. Computed with zoneinfo
on the person's calendar, so "daily at 09:00" is 09:00 local on both sides of a daylight-saving
change; a wall time that does not exist that day (the spring-forward gap) resolves to the same
distance after the gap, one that happens twice (the autumn fold) to its first occurrence.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, date, datetime, time, timedelta
from enum import StrEnum
from zoneinfo import ZoneInfo

from notifier.models.types import Kind, Priority


class Cadence(StrEnum):
    IMMEDIATELY = "immediately"  # no digest: each message as it comes
    HOURLY = "hourly"  # on the hour, local
    DAILY = "daily"  # each day at `at`, local
    WEEKLY = "weekly"  # each `weekday` at `at`, local


DEFAULT_AT = time(9, 0)
DEFAULT_WEEKDAY = 0  # Monday, as date.weekday() counts


@dataclass(frozen=True, slots=True)
class CadenceChoice:
    """A person's cadence: `at` is for daily and weekly, `weekday` (0 = Monday) for weekly."""

    cadence: Cadence
    at: time = DEFAULT_AT
    weekday: int = DEFAULT_WEEKDAY


def never_digested(*, kind: str, priority: str) -> bool:
    """Transactional and critical messages go as they come, whatever the type or the person
    chose: a receipt or a security alert must not wait for a summary."""
    return kind == Kind.TRANSACTIONAL or priority == Priority.CRITICAL


def collectable(*, kind: str, priority: str, is_test: bool, has_cancel_key: bool) -> bool:
    """Whether a digest type may collect this message: never a transactional or critical one,
    a marketer's test, nor one a cancel key names (it is sent, and cancelled, alone). The
    rule of digests' `_rule`, for the inbox's grouping (selectors.message_inbox_group)."""
    return not (is_test or has_cancel_key or never_digested(kind=kind, priority=priority))


def _local_moment(day: date, wall: time, tz: ZoneInfo) -> datetime:
    # fold=0: a gap time lands the same distance after the gap, a doubled time on its first.
    return datetime.combine(day, wall, tzinfo=tz).astimezone(UTC)


def digest_due_at(choice: CadenceChoice, tz: ZoneInfo, opened_at: datetime) -> datetime | None:
    """When a digest opened at `opened_at` (aware) is due under `choice`, in UTC; None for
    IMMEDIATELY (no digest). Always strictly after `opened_at`."""
    local = opened_at.astimezone(tz)
    if choice.cadence == Cadence.IMMEDIATELY:
        return None
    if choice.cadence == Cadence.HOURLY:
        # The next whole local hour; in UTC, so a DST change (an hour repeated or skipped) is
        # still one hour later. Zones with a half-hour offset get their own half hour.
        start = local.replace(minute=0, second=0, microsecond=0)
        return start.astimezone(UTC) + timedelta(hours=1)
    day = local.date()
    for _ in range(9):  # a week and a day: the weekly one is found by then
        if choice.cadence == Cadence.DAILY or day.weekday() == choice.weekday:
            due = _local_moment(day, choice.at, tz)
            if due > opened_at:
                return due
        day += timedelta(days=1)
    raise AssertionError(f"no due time found for {choice}")  # pragma: no cover
