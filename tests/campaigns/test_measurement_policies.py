"""The statistics of campaign measurement, against hand-computed and published values: the one
window both groups are measured over, Wilson and Newcombe intervals, the uplift's z-test, the
fixed horizon of the A/B test."""

import math
from datetime import UTC, datetime, timedelta

import pytest

from campaigns.policies import (
    DEFAULT_PLAN,
    StepPlan,
    Timing,
    VariantCounts,
    Window,
    ab_horizon_reached,
    ab_test,
    difference_interval,
    measurement_window,
    normal_quantile,
    step_window,
    two_proportion_z_test,
    uplift,
    user_window,
    wilson_interval,
)

EVENT = datetime(2026, 11, 11, 12, 0, tzinfo=UTC)
PLAN = [StepPlan(offset) for _, offset in DEFAULT_PLAN]


# --- The window -------------------------------------------------------------------------------


def test_the_default_plan_is_measured_from_the_notice_to_72_hours_after_the_event():
    # Every 3-2-1 reminder expires at the event, so the last message can go out then; the
    # hold-out is measured over the same window, not one that closes at the event.
    window = measurement_window(event_at=EVENT, steps=PLAN, first_start=None, attribution_hours=72)

    assert window == Window(EVENT - timedelta(days=3), EVENT + timedelta(hours=72))


def test_the_window_starts_when_the_first_step_actually_fanned_out():
    started = EVENT - timedelta(days=3) + timedelta(minutes=4)
    window = measurement_window(
        event_at=EVENT, steps=PLAN, first_start=started, attribution_hours=24
    )

    assert window == Window(started, EVENT + timedelta(hours=24))


def test_a_step_after_the_event_keeps_a_day_and_a_local_time_step_fans_out_a_day_early():
    steps = [StepPlan(-60, Timing.LOCAL_TIME), StepPlan(120)]
    window = measurement_window(event_at=EVENT, steps=steps, first_start=None, attribution_hours=10)

    # Fan-out of the local-time step starts 26 hours before its moment; the thank-you two
    # hours after the event may go out for a day, plus 10 hours.
    assert window == Window(
        EVENT - timedelta(hours=27), EVENT + timedelta(hours=2, days=1) + timedelta(hours=10)
    )


def test_no_event_or_no_step_means_each_user_is_measured_over_their_own_window():
    assert (
        measurement_window(event_at=None, steps=PLAN, first_start=None, attribution_hours=1) is None
    )
    assert (
        measurement_window(event_at=EVENT, steps=[], first_start=None, attribution_hours=1) is None
    )
    assigned = EVENT - timedelta(hours=5)
    assert user_window(assigned_at=assigned, attribution_hours=72) == Window(
        assigned, assigned + timedelta(hours=72)
    )


def test_a_steps_window_runs_from_its_fanout_to_its_expiry_plus_attribution():
    notice = PLAN[0]

    assert step_window(
        event_at=EVENT, step=notice, started_at=None, attribution_hours=72
    ) == Window(EVENT - timedelta(days=3), EVENT + timedelta(hours=72))


# --- Intervals and tests ----------------------------------------------------------------------


def test_the_95_percent_critical_value():
    assert normal_quantile(0.95) == pytest.approx(1.959964, abs=1e-6)


@pytest.mark.parametrize(
    ("successes", "trials", "low", "high"),
    [
        # Newcombe (1998), "Two-sided confidence intervals for the single proportion", the
        # Wilson score interval (his method 3) of his examples.
        (81, 263, 0.2553, 0.3662),
        (15, 148, 0.0624, 0.1605),
        (0, 20, 0.0, 0.1611),
        (1, 29, 0.0061, 0.1718),
    ],
)
def test_wilson_interval_matches_the_published_values(successes, trials, low, high):
    assert wilson_interval(successes, trials) == (
        pytest.approx(low, abs=1e-4),
        pytest.approx(high, abs=1e-4),
    )


@pytest.mark.parametrize(
    ("a", "b", "low", "high"),
    [
        # Newcombe (1998), "Interval estimation for the difference between independent
        # proportions", Table II, method 10 (hybrid score), examples (a) to (e) and (g).
        ((56, 70), (48, 80), 0.0524, 0.3339),
        ((9, 10), (3, 10), 0.1705, 0.8090),
        ((6, 7), (2, 7), 0.0582, 0.8062),
        ((5, 56), (0, 29), -0.0381, 0.1926),
        ((0, 10), (0, 20), -0.1611, 0.2775),
        ((10, 10), (0, 20), 0.6791, 1.0),
    ],
)
def test_difference_interval_matches_newcombes_published_values(a, b, low, high):
    assert difference_interval(*a, *b) == (
        pytest.approx(low, abs=1e-4),
        pytest.approx(high, abs=1e-4),
    )


def test_difference_interval_without_trials_is_none():
    assert difference_interval(0, 0, 1, 10) is None
    assert difference_interval(1, 10, 0, 0) is None


def test_uplift_of_56_in_70_over_48_in_80_by_hand():
    result = uplift(treated_converted=56, treated_size=70, control_converted=48, control_size=80)

    assert result is not None
    # 0.8 - 0.6 = 0.2 points; pooled 104/150, se = sqrt(0.69333 * 0.30667 * (1/70 + 1/80))
    # = 0.075467, z = 0.2 / se = 2.6502, p = erfc(z / sqrt 2) = 0.00805.
    assert result.points == pytest.approx(0.2)
    assert result.relative == pytest.approx(0.2 / 0.6)
    assert result.z == pytest.approx(2.6502, abs=1e-4)
    assert result.p_value == pytest.approx(0.00805, abs=1e-5)
    assert result.p_value == pytest.approx(math.erfc(2.6502 / math.sqrt(2)), abs=1e-4)
    assert (result.low, result.high) == (
        pytest.approx(0.0524, abs=1e-4),
        pytest.approx(0.3339, abs=1e-4),
    )
    assert result.significant is True


def test_uplift_with_no_difference_is_not_significant_and_its_interval_spans_zero():
    result = uplift(treated_converted=25, treated_size=100, control_converted=5, control_size=20)

    assert result is not None
    assert result.points == pytest.approx(0.0)
    assert result.p_value == pytest.approx(1.0)
    assert result.low < 0 < result.high
    assert result.significant is False


def test_uplift_against_a_hold_out_without_conversions_has_no_relative_value():
    result = uplift(treated_converted=3, treated_size=100, control_converted=0, control_size=10)

    assert result is not None
    assert result.relative is None
    assert result.low < 0  # 0 of 10 is weak evidence: the interval still reaches below zero
    assert uplift(treated_converted=1, treated_size=10, control_converted=0, control_size=0) is None


def test_z_test_of_200_in_1000_against_150_in_1000_by_hand():
    z, p = two_proportion_z_test(200, 1000, 150, 1000)

    # Pooled rate 0.175; se = sqrt(0.175 * 0.825 * (2 / 1000)) = 0.016993; z = 0.05 / se.
    assert z == pytest.approx(2.94245, abs=1e-4)
    assert p == pytest.approx(0.003256, abs=2e-5)


# --- The A/B test's fixed horizon -------------------------------------------------------------


def test_the_horizon_is_every_variant_at_its_sample_or_no_more_users_to_come():
    assert not ab_horizon_reached(matured=[99, 500], sample_size=100, closed=False)
    assert ab_horizon_reached(matured=[100, 100], sample_size=100, closed=False)
    assert ab_horizon_reached(matured=[3, 4], sample_size=100, closed=True)
    assert not ab_horizon_reached(matured=[500], sample_size=100, closed=False)


def test_ab_test_uses_the_given_sample_size():
    counts = [VariantCounts("A", 300, 30), VariantCounts("B", 300, 60)]

    assert ab_test(counts, sample_size=300).winner == "B"
    small = ab_test(counts, sample_size=301)
    assert small.winner is None
    assert small.verdict == "Not enough data: each variant needs at least 301"
