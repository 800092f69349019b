"""Failure-rate policies: counts in, a decision and its reason out."""

from notifier.policies.alerts import Counts, campaign_pause, provider_alert

WINDOW = 300.0


def alert(total: int, failed: int, threshold: float = 0.25, min_attempts: int = 20):
    return provider_alert(
        "sms:twilio",
        Counts(total, failed),
        threshold=threshold,
        min_attempts=min_attempts,
        window_s=WINDOW,
    )


def test_a_provider_above_the_threshold_alerts_with_the_numbers():
    decision = alert(100, 30)
    assert decision.act
    assert decision.reason == (
        "sms:twilio: 30 of 100 attempts failed (30%) in the last 5 min, above the 25% threshold"
    )


def test_a_provider_at_or_below_the_threshold_does_not_alert():
    assert not alert(100, 25).act
    assert "within the 25% threshold" in alert(100, 25).reason
    assert not alert(100, 0).act


def test_too_few_attempts_never_alert_even_when_all_failed():
    decision = alert(19, 19)
    assert not decision.act
    assert "fewer than 20 attempts, too few to judge" in decision.reason
    assert alert(20, 20).act


def pause(total: int, failed: int, threshold_percent: int = 20, min_sample: int = 50):
    return campaign_pause(
        "Double 11",
        Counts(total, failed),
        threshold_percent=threshold_percent,
        min_sample=min_sample,
        window_s=WINDOW,
    )


def test_a_campaign_above_its_threshold_is_paused_with_a_reason_for_the_marketer():
    decision = pause(200, 60)
    assert decision.act
    assert decision.reason.startswith(
        "60 of its last 200 sends failed (30%) in the last 5 min, above its 20% threshold."
    )
    assert "then resume" in decision.reason


def test_a_campaign_within_its_threshold_or_with_too_few_sends_goes_on():
    assert not pause(200, 40).act  # exactly 20%
    assert not pause(49, 49).act
    assert "too few to judge" in pause(49, 49).reason
    assert pause(50, 50).act


def test_each_campaign_has_its_own_threshold():
    assert pause(100, 15, threshold_percent=10).act
    assert not pause(100, 15, threshold_percent=50).act


def test_counts_rate_with_nothing_counted_is_zero():
    assert Counts(0, 0).rate == 0.0
