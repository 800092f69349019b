"""Campaign policies: step times relative to the event, per-user send times, hold-out, variants."""

from collections import Counter
from datetime import UTC, datetime, time, timedelta
from zoneinfo import ZoneInfo

from campaigns.policies import (
    DEFAULT_PLAN,
    LOCAL_TIME_LEAD,
    STEP_GRACE,
    StepDecision,
    StepPlan,
    Timing,
    fanout_start,
    in_holdout,
    pick_variant,
    send_time,
    step_decision,
    step_expiry,
    step_moment,
    variant_picker,
)

EVENT = datetime(2026, 11, 11, 12, 0, tzinfo=UTC)  # Double 11, 20:00 in Shanghai
NEW_YORK = ZoneInfo("America/New_York")
SHANGHAI = ZoneInfo("Asia/Shanghai")


def test_the_default_plan_is_three_days_two_days_and_one_hour_before():
    moments = [step_moment(EVENT, StepPlan(offset)) for _, offset in DEFAULT_PLAN]
    assert [EVENT - m for m in moments] == [
        timedelta(days=3),
        timedelta(days=2),
        timedelta(hours=1),
    ]


def test_moving_the_event_moves_every_step():
    later = EVENT + timedelta(days=5)
    for _, offset in DEFAULT_PLAN:
        plan = StepPlan(offset)
        assert step_moment(later, plan) - step_moment(EVENT, plan) == timedelta(days=5)


def test_a_local_time_step_fans_out_a_day_early_and_each_user_gets_it_at_their_hour():
    plan = StepPlan(-2 * 24 * 60, Timing.LOCAL_TIME, time(10, 0))
    assert fanout_start(EVENT, plan) == step_moment(EVENT, plan) - LOCAL_TIME_LEAD
    assert send_time(EVENT, plan, tz=SHANGHAI, active_hour=None) == datetime(
        2026, 11, 9, 10, 0, tzinfo=SHANGHAI
    )
    assert send_time(EVENT, plan, tz=NEW_YORK, active_hour=None) == datetime(
        2026, 11, 9, 10, 0, tzinfo=NEW_YORK
    )


def test_a_local_time_step_keeps_its_wall_time_across_daylight_saving():
    event = datetime(2026, 3, 10, 17, 0, tzinfo=UTC)  # two days after New York springs forward
    plan = StepPlan(-3 * 24 * 60, Timing.LOCAL_TIME, time(10, 0))
    when = send_time(event, plan, tz=NEW_YORK, active_hour=None)
    assert when == datetime(2026, 3, 7, 10, 0, tzinfo=NEW_YORK)  # EST: 15:00 UTC
    assert when.astimezone(UTC).hour == 15
    after = send_time(event + timedelta(days=2), plan, tz=NEW_YORK, active_hour=None)
    assert after.astimezone(UTC).hour == 14  # EDT: the same 10:00 on the wall


def test_the_active_hour_step_uses_the_users_hour_or_the_default():
    plan = StepPlan(-24 * 60, Timing.ACTIVE_HOUR)
    assert send_time(EVENT, plan, tz=SHANGHAI, active_hour=8).hour == 8
    assert send_time(EVENT, plan, tz=SHANGHAI, active_hour=None).hour == 19


def test_an_offset_step_goes_as_soon_as_it_fans_out():
    assert send_time(EVENT, StepPlan(-60), tz=SHANGHAI, active_hour=8) is None


def test_reminders_expire_when_the_event_begins_and_follow_ups_a_day_after():
    assert step_expiry(EVENT, StepPlan(-60)) == EVENT
    assert step_expiry(EVENT, StepPlan(24 * 60)) == EVENT + timedelta(days=2)


def test_a_step_waits_starts_on_time_and_is_skipped_when_too_late():
    start = EVENT - timedelta(days=3)
    assert step_decision(now=start - timedelta(seconds=1), start_at=start) is StepDecision.WAIT
    assert step_decision(now=start, start_at=start) is StepDecision.START
    assert step_decision(now=start + STEP_GRACE, start_at=start) is StepDecision.START
    assert (
        step_decision(now=start + STEP_GRACE + timedelta(seconds=1), start_at=start)
        is StepDecision.SKIP
    )


def test_the_holdout_is_stable_and_about_the_asked_share():
    held = [in_holdout(campaign_id=7, user_id=u, percent=10) for u in range(20_000)]
    assert held == [in_holdout(campaign_id=7, user_id=u, percent=10) for u in range(20_000)]
    assert 1800 < sum(held) < 2200
    assert not any(in_holdout(campaign_id=7, user_id=u, percent=0) for u in range(1000))


def test_variants_are_stable_per_user_and_follow_their_weights():
    variants = [(1, 3), (2, 1)]
    picks = [pick_variant(step_id=5, user_id=u, variants=variants) for u in range(20_000)]
    assert picks == [pick_variant(step_id=5, user_id=u, variants=variants) for u in range(20_000)]
    share = Counter(picks)[1] / len(picks)
    assert 0.72 < share < 0.78


def test_a_users_variant_never_changes_across_releases():
    # Picks made before the per-step picker: a user who got variant 12 keeps getting it, and
    # the funnel's A/B groups stay as they were.
    weighted = [(11, 50), (12, 30), (13, 20)]
    assert [pick_variant(step_id=5, user_id=u, variants=weighted) for u in range(12)] == [
        12, 13, 11, 13, 12, 11, 12, 13, 12, 13, 11, 13,
    ]  # fmt: skip
    unweighted = [(21, 0), (22, 0)]  # no weights: an even split
    assert [pick_variant(step_id=9, user_id=u, variants=unweighted) for u in range(12)] == [
        22, 21, 21, 22, 22, 21, 22, 21, 22, 22, 22, 21,
    ]  # fmt: skip
    assert {pick_variant(step_id=9, user_id=u, variants=[(21, 0), (22, 5)]) for u in range(50)} == {
        22
    }
    uuids = [f"3f2c9a7e-0000-4000-8000-00000000000{u}" for u in range(8)]
    assert [pick_variant(step_id=3, user_id=u, variants=[(31, 1), (32, 1)]) for u in uuids] == [
        32, 32, 31, 32, 31, 32, 32, 31,
    ]  # fmt: skip


def test_the_step_picker_picks_what_pick_variant_picks():
    for variants in ([(1, 3), (2, 1)], [(4, 0), (5, 0), (6, 0)], [(7, 10)], [(8, 0), (9, 2)]):
        pick = variant_picker(step_id=42, variants=variants)
        assert [pick(u) for u in range(3000)] == [
            pick_variant(step_id=42, user_id=u, variants=variants) for u in range(3000)
        ]


def test_different_steps_split_users_independently():
    variants = [(1, 1), (2, 1)]
    first = [pick_variant(step_id=1, user_id=u, variants=variants) for u in range(2000)]
    second = [pick_variant(step_id=2, user_id=u, variants=variants) for u in range(2000)]
    agreement = sum(a == b for a, b in zip(first, second, strict=True)) / 2000
    assert 0.4 < agreement < 0.6
