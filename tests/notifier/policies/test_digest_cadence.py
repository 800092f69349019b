"""A digest's due time on the person's own clock: hourly, daily, weekly, across DST switches."""

from datetime import UTC, datetime, time
from zoneinfo import ZoneInfo

import pytest

from notifier.policies.digests import Cadence, CadenceChoice, digest_due_at, never_digested

SHANGHAI = ZoneInfo("Asia/Shanghai")
BERLIN = ZoneInfo("Europe/Berlin")
KOLKATA = ZoneInfo("Asia/Kolkata")


def utc(*args):
    return datetime(*args, tzinfo=UTC)


def local(tz, *args):
    return datetime(*args, tzinfo=tz)


def test_immediately_is_no_digest():
    assert digest_due_at(CadenceChoice(Cadence.IMMEDIATELY), SHANGHAI, utc(2026, 1, 5)) is None


def test_hourly_is_the_next_whole_local_hour():
    due = digest_due_at(CadenceChoice(Cadence.HOURLY), SHANGHAI, utc(2026, 1, 5, 10, 17, 3))
    assert due == utc(2026, 1, 5, 11, 0)


def test_hourly_on_the_hour_waits_a_whole_hour():
    due = digest_due_at(CadenceChoice(Cadence.HOURLY), SHANGHAI, utc(2026, 1, 5, 10, 0))
    assert due == utc(2026, 1, 5, 11, 0)


def test_hourly_in_a_half_hour_zone_is_on_its_local_hour():
    due = digest_due_at(CadenceChoice(Cadence.HOURLY), KOLKATA, utc(2026, 1, 5, 10, 10))
    assert due == utc(2026, 1, 5, 10, 30)  # 16:00 in Kolkata (UTC+05:30)


def test_hourly_across_the_autumn_fold_is_one_hour_later():
    # 02:30 CEST (first pass) -> 02:00 CET, one real hour later, not two.
    opened = utc(2026, 10, 25, 0, 30)
    due = digest_due_at(CadenceChoice(Cadence.HOURLY), BERLIN, opened)
    assert due == utc(2026, 10, 25, 1, 0)


def test_daily_before_its_time_is_due_today():
    opened = local(SHANGHAI, 2026, 1, 5, 8, 59).astimezone(UTC)
    due = digest_due_at(CadenceChoice(Cadence.DAILY, time(9, 0)), SHANGHAI, opened)
    assert due == local(SHANGHAI, 2026, 1, 5, 9, 0)


def test_daily_after_its_time_is_due_tomorrow():
    opened = local(SHANGHAI, 2026, 1, 5, 9, 0).astimezone(UTC)
    due = digest_due_at(CadenceChoice(Cadence.DAILY, time(9, 0)), SHANGHAI, opened)
    assert due == local(SHANGHAI, 2026, 1, 6, 9, 0)


@pytest.mark.parametrize(
    ("opened", "due"),
    [
        # Spring forward (29 March): 09:00 local is 07:00 UTC after, 08:00 UTC before.
        (utc(2026, 3, 28, 12, 0), utc(2026, 3, 29, 7, 0)),
        # Autumn back (25 October): 09:00 local is 08:00 UTC after, 07:00 UTC before.
        (utc(2026, 10, 24, 12, 0), utc(2026, 10, 25, 8, 0)),
    ],
)
def test_daily_stays_at_nine_local_across_dst(opened, due):
    assert digest_due_at(CadenceChoice(Cadence.DAILY, time(9, 0)), BERLIN, opened) == due


def test_daily_at_a_time_the_spring_gap_skips_lands_after_the_gap():
    opened = utc(2026, 3, 28, 12, 0)
    due = digest_due_at(CadenceChoice(Cadence.DAILY, time(2, 30)), BERLIN, opened)
    assert due == local(BERLIN, 2026, 3, 29, 3, 30)  # 01:30 UTC


def test_daily_at_a_time_the_autumn_fold_doubles_is_its_first():
    opened = utc(2026, 10, 24, 12, 0)
    due = digest_due_at(CadenceChoice(Cadence.DAILY, time(2, 30)), BERLIN, opened)
    assert due == utc(2026, 10, 25, 0, 30)  # 02:30 CEST, the first of the two


def test_weekly_is_the_next_chosen_weekday_at_the_time():
    monday = local(SHANGHAI, 2026, 1, 5, 12, 0).astimezone(UTC)  # a Monday, after 09:00
    due = digest_due_at(CadenceChoice(Cadence.WEEKLY, time(9, 0), weekday=0), SHANGHAI, monday)
    assert due == local(SHANGHAI, 2026, 1, 12, 9, 0)
    due = digest_due_at(CadenceChoice(Cadence.WEEKLY, time(9, 0), weekday=4), SHANGHAI, monday)
    assert due == local(SHANGHAI, 2026, 1, 9, 9, 0)  # that Friday


def test_weekly_counts_the_weekday_on_the_local_calendar():
    # Sunday 20:00 UTC is already Monday 04:00 in Shanghai: Monday 09:00 is the same day.
    due = digest_due_at(
        CadenceChoice(Cadence.WEEKLY, time(9, 0), weekday=0), SHANGHAI, utc(2026, 1, 4, 20, 0)
    )
    assert due == local(SHANGHAI, 2026, 1, 5, 9, 0)


def test_transactional_and_critical_are_never_digested():
    assert never_digested(kind="transactional", priority="normal")
    assert never_digested(kind="social", priority="critical")
    assert not never_digested(kind="social", priority="normal")
