"""Frequency caps: per user's calendar, lowered by feedback and by their chosen frequency."""

from datetime import UTC, date, datetime
from zoneinfo import ZoneInfo

from notifier.models import CapPeriod
from notifier.policies.caps import Caps, caps_for, next_window_start, windows_at

SHANGHAI = ZoneInfo("Asia/Shanghai")


def test_defaults_apply_as_sent():
    assert caps_for(frequency="as_sent", base_day=1, base_week=2, irrelevant=0) == Caps(1, 2)


def test_weekly_frequency_means_one_a_week():
    assert caps_for(frequency="weekly", base_day=2, base_week=5, irrelevant=0) == Caps(1, 1)


def test_off_means_none():
    assert caps_for(frequency="off", base_day=1, base_week=2, irrelevant=0) == Caps(0, 0)


def test_each_irrelevant_lowers_the_weekly_cap_down_to_zero():
    assert caps_for(frequency="as_sent", base_day=1, base_week=2, irrelevant=1) == Caps(1, 1)
    assert caps_for(frequency="as_sent", base_day=1, base_week=2, irrelevant=5) == Caps(0, 0)


def test_windows_follow_the_users_calendar():
    # Sunday 2026-11-22 20:00 UTC is Monday 04:00 in Shanghai: a new day and a new week there.
    at = datetime(2026, 11, 22, 20, 0, tzinfo=UTC)
    assert windows_at(at, SHANGHAI).day == date(2026, 11, 23)
    assert windows_at(at, SHANGHAI).week == date(2026, 11, 23)
    assert windows_at(at, ZoneInfo("UTC")).week == date(2026, 11, 16)


def test_the_next_window_starts_at_local_midnight():
    at = datetime(2026, 11, 20, 10, 0, tzinfo=UTC)  # Friday 18:00 in Shanghai
    assert next_window_start(at, SHANGHAI, CapPeriod.DAY) == datetime(
        2026, 11, 21, 0, 0, tzinfo=SHANGHAI
    )
    assert next_window_start(at, SHANGHAI, CapPeriod.WEEK) == datetime(
        2026, 11, 23, 0, 0, tzinfo=SHANGHAI
    )
