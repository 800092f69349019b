"""Quiet hours on each user's own clock, across time zones and both daylight-saving switches."""

from datetime import UTC, datetime, time, timedelta
from zoneinfo import ZoneInfo

import pytest

from notifier.policies.quiet_hours import (
    QuietHours,
    bypasses_quiet_hours,
    parse_window,
    quiet_until,
    spread_offset_s,
)

SHANGHAI = ZoneInfo("Asia/Shanghai")
NEW_YORK = ZoneInfo("America/New_York")


def night(tz, start="22:00", end="08:00", enabled=True):
    return QuietHours(enabled, time.fromisoformat(start), time.fromisoformat(end), tz)


def utc(*args):
    return datetime(*args, tzinfo=UTC)


def local(tz, *args):
    return datetime(*args, tzinfo=tz)


def test_shanghai_at_23_is_quiet_until_8_the_next_morning():
    ends = quiet_until(local(SHANGHAI, 2026, 11, 20, 23, 0), night(SHANGHAI))
    assert ends == local(SHANGHAI, 2026, 11, 21, 8, 0)


def test_shanghai_just_after_midnight_is_quiet_until_8_the_same_day():
    ends = quiet_until(local(SHANGHAI, 2026, 11, 21, 0, 30), night(SHANGHAI))
    assert ends == local(SHANGHAI, 2026, 11, 21, 8, 0)


@pytest.mark.parametrize("wall", [(8, 0), (12, 0), (21, 59)])
def test_daytime_is_not_quiet(wall):
    assert quiet_until(local(SHANGHAI, 2026, 11, 21, *wall), night(SHANGHAI)) is None


def test_the_same_instant_is_quiet_in_one_zone_and_not_in_another():
    instant = utc(2026, 11, 21, 15, 0)  # 23:00 in Shanghai, 10:00 in New York
    assert quiet_until(instant, night(SHANGHAI)) is not None
    assert quiet_until(instant, night(NEW_YORK)) is None


def test_new_york_spring_forward_night_ends_at_8_local_which_is_edt():
    # 2026-03-08 02:00 EST jumps to 03:00 EDT; the night began at 22:00 EST.
    ends = quiet_until(local(NEW_YORK, 2026, 3, 7, 23, 0), night(NEW_YORK))
    assert ends == utc(2026, 3, 8, 12, 0)  # 08:00 EDT (UTC-4)
    assert ends - utc(2026, 3, 8, 4, 0) == timedelta(hours=8)  # 23:00 EST was 04:00 UTC


def test_new_york_fall_back_night_ends_at_8_local_which_is_est():
    # 2026-11-01 02:00 EDT falls back to 01:00 EST: the night is an hour longer.
    ends = quiet_until(local(NEW_YORK, 2026, 10, 31, 23, 0), night(NEW_YORK))
    assert ends == utc(2026, 11, 1, 13, 0)  # 08:00 EST (UTC-5)


def test_during_the_repeated_hour_it_is_still_quiet():
    repeated = datetime(2026, 11, 1, 1, 30, tzinfo=NEW_YORK, fold=1)  # the second 01:30
    assert quiet_until(repeated, night(NEW_YORK)) == utc(2026, 11, 1, 13, 0)


def test_a_window_ending_inside_the_spring_gap_ends_after_the_gap():
    ends = quiet_until(local(NEW_YORK, 2026, 3, 8, 1, 0), night(NEW_YORK, "22:00", "02:30"))
    assert ends is not None
    assert ends.astimezone(NEW_YORK).hour == 3  # 02:30 does not exist that night


def test_a_custom_window_within_the_day():
    lunch = night(SHANGHAI, "12:00", "13:30")
    assert quiet_until(local(SHANGHAI, 2026, 11, 21, 12, 15), lunch) == local(
        SHANGHAI, 2026, 11, 21, 13, 30
    )
    assert quiet_until(local(SHANGHAI, 2026, 11, 21, 23, 0), lunch) is None


def test_switched_off_or_empty_windows_are_never_quiet():
    at = local(SHANGHAI, 2026, 11, 21, 23, 0)
    assert quiet_until(at, night(SHANGHAI, enabled=False)) is None
    assert quiet_until(at, night(SHANGHAI, "00:00", "00:00")) is None


def test_transactional_and_critical_bypass_but_service_and_marketing_do_not():
    assert bypasses_quiet_hours(kind="transactional", priority="normal")
    assert bypasses_quiet_hours(kind="service", priority="critical")
    assert not bypasses_quiet_hours(kind="service", priority="high")
    assert not bypasses_quiet_hours(kind="marketing", priority="low")


def test_marketing_never_bypasses_on_priority_only_with_a_leads_permission():
    assert not bypasses_quiet_hours(kind="marketing", priority="critical")
    assert bypasses_quiet_hours(kind="marketing", priority="critical", marketing_allowed=True)
    assert bypasses_quiet_hours(kind="marketing", priority="low", marketing_allowed=True)
    # The permission is the campaign's, for marketing: it changes nothing for other kinds.
    assert not bypasses_quiet_hours(kind="service", priority="normal", marketing_allowed=True)


def test_spread_offsets_are_fixed_per_message_and_fill_the_window():
    offsets = [spread_offset_s(message_id, 1800) for message_id in range(1, 2001)]
    assert offsets == [spread_offset_s(m, 1800) for m in range(1, 2001)]
    assert min(offsets) >= 0
    assert max(offsets) < 1800
    per_minute = [sum(1 for o in offsets if m * 60 <= o < (m + 1) * 60) for m in range(30)]
    assert max(per_minute) < 3 * min(per_minute)  # spread out, not bunched at 08:00


@pytest.mark.parametrize("text", ["22:00", "late-early", "25:00-08:00", ""])
def test_a_bad_window_says_the_form(text):
    with pytest.raises(ValueError, match="22:00-08:00"):
        parse_window(text)
