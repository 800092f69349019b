"""Preference and consent policies: defaults in code, overrides most specific first."""

from datetime import UTC, datetime, timedelta

from notifier.policies.preferences import (
    ConsentRecord,
    ConsentState,
    Preferences,
    channel_enabled,
    consent_reason,
    preference_reason,
)
from notifier.status import Reason

T0 = datetime(2026, 11, 1, tzinfo=UTC)
CONSENT_CHANNELS = frozenset({"email", "sms", "push"})


def reason(prefs, kind="marketing", type_key="promo.flash_sale", priority="low", channel="email"):
    return preference_reason(
        prefs, kind=kind, type_key=type_key, priority=priority, channel=channel
    )


def test_with_no_overrides_everything_is_on():
    assert reason(Preferences()) is None


def test_the_most_specific_override_wins():
    prefs = Preferences(
        overrides={("marketing", "all"): False, ("promo.flash_sale", "email"): True}
    )
    assert channel_enabled(prefs, kind="marketing", type_key="promo.flash_sale", channel="email")
    assert not channel_enabled(prefs, kind="marketing", type_key="promo.flash_sale", channel="push")
    assert not channel_enabled(prefs, kind="marketing", type_key="promo.other", channel="email")


def test_switching_a_category_off_suppresses_with_opted_out():
    prefs = Preferences(overrides={("social", "push"): False})
    assert reason(prefs, kind="social", type_key="social.new_follower", channel="push") is (
        Reason.OPTED_OUT
    )
    assert reason(prefs, kind="social", type_key="social.new_follower", channel="inapp") is None


def test_transactional_and_critical_cannot_be_switched_off():
    prefs = Preferences(
        overrides={("transactional", "all"): False, ("service", "all"): False},
        marketing_frequency="off",
    )
    assert reason(prefs, kind="transactional", type_key="order.shipped", priority="high") is None
    assert (
        reason(prefs, kind="service", type_key="subscription.renewal_reminder", priority="critical")
        is None
    )


def test_marketing_can_always_be_switched_off_whatever_its_priority():
    """A campaign set to Critical is still marketing: the user's "no" and "none" hold."""
    opted_out = Preferences(overrides={("marketing", "all"): False})
    assert reason(opted_out, kind="marketing", priority="critical") is Reason.OPTED_OUT
    none = Preferences(marketing_frequency="off")
    assert reason(none, kind="marketing", priority="critical") is Reason.MARKETING_OFF


def test_marketing_frequency_off_suppresses_all_marketing():
    assert reason(Preferences(marketing_frequency="off")) is Reason.MARKETING_OFF


def test_marketing_needs_consent_on_consent_channels_only():
    none = ConsentState()
    assert (
        consent_reason(none, kind="marketing", channel="email", consent_channels=CONSENT_CHANNELS)
        is Reason.NO_CONSENT
    )
    assert (
        consent_reason(none, kind="marketing", channel="inapp", consent_channels=CONSENT_CHANNELS)
        is None
    )
    assert (
        consent_reason(none, kind="service", channel="email", consent_channels=CONSENT_CHANNELS)
        is None
    )


def test_the_newest_consent_record_holds_whether_for_the_channel_or_for_all():
    given_all_then_withdrawn_email = ConsentState(
        latest={
            "all": ConsentRecord(granted=True, at=T0),
            "email": ConsentRecord(granted=False, at=T0 + timedelta(days=1)),
        }
    )
    assert not given_all_then_withdrawn_email.granted("email")
    assert given_all_then_withdrawn_email.granted("sms")
    regiven = ConsentState(
        latest={
            "email": ConsentRecord(granted=False, at=T0),
            "all": ConsentRecord(granted=True, at=T0 + timedelta(days=2)),
        }
    )
    assert regiven.granted("email")
