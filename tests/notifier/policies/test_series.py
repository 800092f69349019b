"""When a date series' steps go: offsets, the recipient's local times across daylight-saving
changes, and steps already past when the date is set."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from notifier.models.series import series_steps_problem
from notifier.policies.series import series_exits, step_moment, step_times

DATE = datetime(2027, 6, 10, 12, 0, tzinfo=UTC)


def test_offsets_count_back_and_forward_from_the_date():
    assert step_moment(DATE, {"before_s": 3 * 86400}, "Asia/Shanghai") == DATE - timedelta(days=3)
    assert step_moment(DATE, {"after_s": 3600}, "UTC") == DATE + timedelta(hours=1)


def test_a_local_time_step_is_that_time_on_the_recipients_own_calendar():
    # 10 June 12:00 UTC is 20:00 in Shanghai: "the day before at 10:00" is 9 June 10:00 there.
    step = {"days_before": 1, "at": "10:00"}
    assert step_moment(DATE, step, "Asia/Shanghai") == datetime(2027, 6, 9, 2, 0, tzinfo=UTC)
    # In Los Angeles the same moment is 05:00 on 10 June: the day before is still 9 June.
    assert step_moment(DATE, step, "America/Los_Angeles") == datetime(2027, 6, 9, 17, tzinfo=UTC)
    # Late in the evening UTC it is already the next day in Tokyo: its day before is the 10th.
    late = datetime(2027, 6, 10, 20, 0, tzinfo=UTC)
    assert step_moment(late, step, "Asia/Tokyo") == datetime(2027, 6, 10, 1, 0, tzinfo=UTC)


def test_a_local_time_step_keeps_the_wall_clock_across_a_daylight_saving_change():
    # Berlin goes to summer time on 28 March 2027: 10:00 on the 27th is UTC+1, on the 29th +2.
    renewal = datetime(2027, 3, 30, 12, 0, tzinfo=UTC)
    three = step_moment(renewal, {"days_before": 3, "at": "10:00"}, "Europe/Berlin")
    one = step_moment(renewal, {"days_before": 1, "at": "10:00"}, "Europe/Berlin")
    assert three == datetime(2027, 3, 27, 9, 0, tzinfo=UTC)
    assert one == datetime(2027, 3, 29, 8, 0, tzinfo=UTC)


def test_a_local_time_the_spring_change_skips_falls_the_gap_later():
    renewal = datetime(2027, 3, 29, 12, 0, tzinfo=UTC)  # the day after the change
    moment = step_moment(renewal, {"days_before": 1, "at": "02:30"}, "Europe/Berlin")
    assert moment == datetime(2027, 3, 28, 1, 30, tzinfo=UTC)  # 03:30 summer time


def test_an_unknown_time_zone_reads_as_utc():
    step = {"days_before": 0, "at": "09:00"}
    assert step_moment(DATE, step, "Mars/Olympus") == datetime(2027, 6, 10, 9, tzinfo=UTC)


def test_steps_already_past_are_marked_and_a_minute_late_still_goes():
    steps = [{"before_s": 3 * 86400}, {"before_s": 86400}, {"before_s": 3600}]
    now = DATE - timedelta(days=2)
    assert [(t.step, t.past) for t in step_times(DATE, steps, "UTC", now)] == [
        (1, True),
        (2, False),
        (3, False),
    ]
    just = DATE - timedelta(days=3) + timedelta(seconds=59)
    assert not step_times(DATE, steps, "UTC", just)[0].past


def test_the_exit_rule_decides_what_stops_the_rest():
    assert series_exits("clicked", seen=False, clicked=True)
    assert not series_exits("clicked", seen=True, clicked=False)
    assert series_exits("seen", seen=True, clicked=False)
    assert not series_exits("never", seen=True, clicked=True)


def test_steps_are_validated_with_what_to_fix():
    assert series_steps_problem([{"before_s": 60}, {"days_before": 1, "at": "10:00"}]) == ""
    assert "1 to 10 steps" in series_steps_problem([])
    assert "1 to 10 steps" in series_steps_problem([{"before_s": 1}] * 11)
    assert series_steps_problem([{"before_s": -5}]).startswith("step 1: before_s is whole")
    assert series_steps_problem([{"before_s": 1.5}]).startswith("step 1: before_s is whole")
    assert "HH:MM" in series_steps_problem([{"days_before": 1, "at": "25:00"}])
    assert "days_before" in series_steps_problem([{"days_before": -1, "at": "10:00"}])
    assert series_steps_problem([{"before_s": 1, "after_s": 1}]).startswith("step 1: one of")
    assert series_steps_problem(["3 days"]).startswith("step 1: one of")


def test_a_catalog_series_says_what_is_wrong_with_it():
    import pytest

    from notifier.catalog import SeriesSpec

    with pytest.raises(ValueError, match="must look like"):
        SeriesSpec("Renewal", "Renewal", "subscription.renewal_reminder", ({"before_s": 60},))
    with pytest.raises(ValueError, match="step 1: before_s is whole seconds"):
        SeriesSpec("plan.renewal", "Renewal", "subscription.renewal_reminder", ({"before_s": -1},))
    with pytest.raises(ValueError, match="exit_on is one of"):
        SeriesSpec(
            "plan.renewal", "R", "subscription.renewal_reminder", ({"before_s": 1},), "bought"
        )
