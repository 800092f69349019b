"""Preference, consent and unsubscribe writes, on the real database.

Each test also reads the result back the way routing does (`preferences_of`, `consent_of` and
the pure policies), so "switched off" means the router would really not send.
"""

from __future__ import annotations

import pytest
from django.conf import settings

from notifier.models import Consent, NotificationType, Preference, User
from notifier.policies.preferences import channel_enabled, consent_reason, preference_reason
from notifier.selectors import consent_of, preferences_of
from notifier.services.preferences import (
    CategoryLocked,
    InvalidConsent,
    InvalidFrequency,
    InvalidScope,
    PreferenceChange,
    PreferenceError,
    UnknownCategory,
    UnknownChannel,
    UnknownUser,
    consent_give,
    consent_withdraw,
    preference_set,
    preferences_update,
    unsubscribe,
)
from notifier.status import Reason
from tests.factories import UserFactory

pytestmark = pytest.mark.django_db

ALL = ("inapp", "email", "sms", "push")


@pytest.fixture
def user():
    return UserFactory()


def rows(user) -> set[tuple[str, str, bool]]:
    return set(Preference.objects.filter(user=user).values_list("category", "channel", "enabled"))


def enabled(user, type_key: str, kind: str, channel: str) -> bool:
    prefs = preferences_of(user_ids=[user.pk])[user.pk]
    return channel_enabled(prefs, kind=kind, type_key=type_key, channel=channel)


def consent_granted(user, channel: str) -> bool:
    return consent_of(user_ids=[user.pk])[user.pk].granted(channel)


def snapshot(user) -> tuple:
    user.refresh_from_db()
    consents = list(Consent.objects.filter(user=user).order_by("id").values_list("pk", flat=True))
    return rows(user), user.notifier_recipient.marketing_frequency, consents


# --- Switches -------------------------------------------------------------------------------


def test_with_no_rows_everything_is_on_by_default(user):
    assert rows(user) == set()
    for channel in ALL:
        assert enabled(user, "promo.flash_sale", "marketing", channel)
        assert enabled(user, "social.new_follower", "social", channel)
    assert preferences_of(user_ids=[user.pk])[user.pk].marketing_frequency == "as_sent"


def test_switching_off_stores_an_override_row(user):
    assert preference_set(
        user_id=user.pk, category="promo.flash_sale", channel="email", enabled=False
    )
    assert rows(user) == {("promo.flash_sale", "email", False)}
    assert not enabled(user, "promo.flash_sale", "marketing", "email")
    assert enabled(user, "promo.flash_sale", "marketing", "push")


def test_switching_back_to_the_default_deletes_the_row(user):
    preference_set(user_id=user.pk, category="social", channel="push", enabled=False)
    assert preference_set(user_id=user.pk, category="social", channel="push", enabled=True)
    assert rows(user) == set()
    assert enabled(user, "social.new_follower", "social", "push")


def test_setting_the_same_value_twice_writes_nothing_more(user):
    preference_set(user_id=user.pk, category="social", channel="all", enabled=False)
    before = Preference.objects.get(user=user).updated_at
    assert not preference_set(user_id=user.pk, category="social", channel="all", enabled=False)
    assert Preference.objects.get(user=user).updated_at == before
    assert not preference_set(user_id=user.pk, category="service", channel="sms", enabled=True)
    assert rows(user) == {("social", "all", False)}


def test_an_on_row_under_a_broader_off_is_kept_so_most_specific_wins(user):
    preference_set(user_id=user.pk, category="marketing", channel="all", enabled=False)
    preference_set(user_id=user.pk, category="promo.flash_sale", channel="email", enabled=True)

    assert rows(user) == {("marketing", "all", False), ("promo.flash_sale", "email", True)}
    assert enabled(user, "promo.flash_sale", "marketing", "email")
    assert not enabled(user, "promo.flash_sale", "marketing", "push")


def test_an_explicit_off_survives_a_later_broader_on(user):
    preference_set(user_id=user.pk, category="marketing", channel="all", enabled=False)
    preference_set(user_id=user.pk, category="promo.flash_sale", channel="email", enabled=False)
    preference_set(user_id=user.pk, category="marketing", channel="all", enabled=True)

    assert rows(user) == {("promo.flash_sale", "email", False)}
    assert not enabled(user, "promo.flash_sale", "marketing", "email")
    assert enabled(user, "promo.flash_sale", "marketing", "push")


@pytest.mark.parametrize(
    ("category", "channel", "error"),
    [
        ("promotions", "email", UnknownCategory),
        ("", "email", UnknownCategory),
        ("promo.no_such_type", "all", UnknownCategory),
        ("marketing", "fax", UnknownChannel),
        ("marketing", "", UnknownChannel),
        ("marketing", "EMAIL", UnknownChannel),
    ],
)
def test_an_unknown_category_or_channel_is_refused_and_nothing_written(
    user, category, channel, error
):
    with pytest.raises(error) as caught:
        preference_set(user_id=user.pk, category=category, channel=channel, enabled=False)
    assert repr(category if error is UnknownCategory else channel) in str(caught.value)
    assert "use" in str(caught.value)  # says what to use instead
    assert rows(user) == set()


@pytest.mark.parametrize(
    "category",
    ["transactional", "order.shipped", "payment.succeeded", "account.password_changed"],
)
def test_transactional_and_critical_categories_cannot_be_switched_off(user, category):
    for channel in ("all", "email"):
        with pytest.raises(CategoryLocked, match="cannot be switched off"):
            preference_set(user_id=user.pk, category=category, channel=channel, enabled=False)
    assert rows(user) == set()


def test_a_critical_type_of_a_switchable_kind_is_locked_too(user):
    NotificationType.objects.create(
        key="service.outage", name="Outage", kind="service", priority="critical", channels=["sms"]
    )
    with pytest.raises(CategoryLocked, match="critical"):
        preference_set(user_id=user.pk, category="service.outage", channel="sms", enabled=False)
    assert rows(user) == set()
    # the kind it belongs to stays switchable; the policy still lets the critical type through
    preference_set(user_id=user.pk, category="service", channel="sms", enabled=False)
    prefs = preferences_of(user_ids=[user.pk])[user.pk]
    assert (
        preference_reason(
            prefs, kind="service", type_key="service.outage", priority="critical", channel="sms"
        )
        is None
    )


def test_switching_a_locked_category_on_is_allowed_and_clears_a_stale_row(user):
    Preference.objects.create(user=user, category="order.shipped", channel="sms", enabled=False)
    assert preference_set(user_id=user.pk, category="order.shipped", channel="sms", enabled=True)
    assert rows(user) == set()


def test_a_user_that_does_not_exist_is_refused():
    with pytest.raises(UnknownUser):
        preference_set(user_id=987654, category="marketing", channel="email", enabled=False)
    assert Preference.objects.count() == 0


def test_errors_are_preference_errors_and_value_errors():
    for error in (UnknownCategory, UnknownChannel, CategoryLocked, InvalidFrequency, UnknownUser):
        assert issubclass(error, PreferenceError)
    assert issubclass(PreferenceError, ValueError)


# --- Several at once ------------------------------------------------------------------------


def test_preferences_update_applies_switches_and_frequency_together(user):
    changed = preferences_update(
        user_id=user.pk,
        changes=[
            PreferenceChange("social", "push", False),
            PreferenceChange("service", "sms", False),
        ],
        marketing_frequency="weekly",
    )
    user.refresh_from_db()
    assert changed
    assert rows(user) == {("social", "push", False), ("service", "sms", False)}
    assert user.notifier_recipient.marketing_frequency == "weekly"


@pytest.mark.parametrize(
    ("bad_change", "frequency", "error"),
    [
        (PreferenceChange("transactional", "email", False), None, CategoryLocked),
        (PreferenceChange("nope", "email", False), None, UnknownCategory),
        (PreferenceChange("social", "pigeon", False), None, UnknownChannel),
        (PreferenceChange("social", "push", True), "daily", InvalidFrequency),
    ],
)
def test_preferences_update_is_all_or_nothing(user, bad_change, frequency, error):
    before = snapshot(user)
    with pytest.raises(error):
        preferences_update(
            user_id=user.pk,
            changes=[PreferenceChange("marketing", "email", False), bad_change],
            marketing_frequency=frequency,
        )
    assert snapshot(user) == before


def test_preferences_update_result_does_not_depend_on_the_order_of_changes(user):
    preference_set(user_id=user.pk, category="marketing", channel="all", enabled=False)
    # narrow "off" first, then the broad "on": the narrow one must still hold
    preferences_update(
        user_id=user.pk,
        changes=[
            PreferenceChange("promo.flash_sale", "email", False),
            PreferenceChange("marketing", "all", True),
        ],
    )
    assert not enabled(user, "promo.flash_sale", "marketing", "email")
    assert enabled(user, "promo.flash_sale", "marketing", "push")


def test_setting_the_current_frequency_again_changes_nothing(user):
    assert not preferences_update(user_id=user.pk, changes=[], marketing_frequency="as_sent")
    assert preferences_update(user_id=user.pk, changes=[], marketing_frequency="off")
    prefs = preferences_of(user_ids=[user.pk])[user.pk]
    assert (
        preference_reason(
            prefs, kind="marketing", type_key="promo.flash_sale", priority="low", channel="inapp"
        )
        == Reason.MARKETING_OFF
    )


# --- Consent --------------------------------------------------------------------------------


def test_consent_give_logs_wording_source_and_ip_and_grants(user):
    consent = consent_give(
        user_id=user.pk,
        channel="email",
        source="signup_form",
        wording="Send me offers by email",
        ip_address="203.0.113.9",
    )
    row = Consent.objects.get(user=user)
    assert row.pk == consent.pk
    assert (row.purpose, row.channel, row.granted) == ("marketing", "email", True)
    assert (row.source, row.wording, row.ip_address) == (
        "signup_form",
        "Send me offers by email",
        "203.0.113.9",
    )
    assert row.at is not None
    assert consent_granted(user, "email")
    assert not consent_granted(user, "sms")


def test_giving_consent_again_appends_another_record(user):
    consent_give(user_id=user.pk, channel="sms", source="a", wording="v1")
    consent_give(user_id=user.pk, channel="sms", source="b", wording="v2")
    assert list(
        Consent.objects.filter(user=user).order_by("id").values_list("wording", flat=True)
    ) == [
        "v1",
        "v2",
    ]


def test_consent_withdraw_appends_a_withdrawal_and_revokes(user):
    consent_give(user_id=user.pk, channel="email", source="signup_form", wording="Offers by email")
    withdrawal = consent_withdraw(
        user_id=user.pk, channel="email", source="preference_centre", ip_address="2001:db8::1"
    )
    assert withdrawal is not None
    assert (withdrawal.granted, withdrawal.source, withdrawal.ip_address) == (
        False,
        "preference_centre",
        "2001:db8::1",
    )
    assert Consent.objects.filter(user=user).count() == 2
    assert not consent_granted(user, "email")
    state = consent_of(user_ids=[user.pk])[user.pk]
    assert (
        consent_reason(
            state, kind="marketing", channel="email", consent_channels=frozenset({"email"})
        )
        == Reason.NO_CONSENT
    )


def test_withdrawing_consent_that_is_not_in_force_writes_nothing(user):
    assert consent_withdraw(user_id=user.pk, channel="email", source="x") is None
    consent_give(user_id=user.pk, channel="email", source="x", wording="yes")
    consent_withdraw(user_id=user.pk, channel="email", source="x")
    assert consent_withdraw(user_id=user.pk, channel="email", source="x") is None
    assert Consent.objects.filter(user=user).count() == 2


def test_withdrawing_on_all_revokes_every_channel(user):
    consent_give(user_id=user.pk, channel="email", source="x", wording="email")
    consent_give(user_id=user.pk, channel="sms", source="x", wording="sms")
    consent_withdraw(user_id=user.pk, channel="all", source="x")
    assert not any(consent_granted(user, c) for c in settings.NOTIFIER_CONSENT_CHANNELS)
    assert Consent.objects.filter(user=user, granted=False).get().channel == "all"


def test_consent_given_on_all_covers_every_consent_channel(user):
    consent_give(user_id=user.pk, channel="all", source="signup_form", wording="Offers anywhere")
    assert all(consent_granted(user, c) for c in settings.NOTIFIER_CONSENT_CHANNELS)


@pytest.mark.parametrize(
    ("kwargs", "error"),
    [
        ({"channel": "inapp"}, UnknownChannel),
        ({"channel": "fax"}, UnknownChannel),
        ({"wording": ""}, InvalidConsent),
        ({"wording": "   "}, InvalidConsent),
        ({"source": ""}, InvalidConsent),
        ({"source": "x" * 101}, InvalidConsent),
        ({"ip_address": "not-an-ip"}, InvalidConsent),
    ],
)
def test_bad_consent_input_is_refused_and_nothing_written(user, kwargs, error):
    good = {"channel": "email", "source": "signup_form", "wording": "Offers by email"}
    with pytest.raises(error):
        consent_give(user_id=user.pk, **{**good, **kwargs})
    assert not Consent.objects.filter(user=user).exists()


# --- Unsubscribe ----------------------------------------------------------------------------


@pytest.fixture
def consenting(user):
    """A user who agreed to marketing on email and SMS."""
    consent_give(user_id=user.pk, channel="email", source="signup_form", wording="Email offers")
    consent_give(user_id=user.pk, channel="sms", source="signup_form", wording="SMS offers")
    return user


def route_reason(user, type_key: str, kind: str, channel: str) -> Reason | None:
    prefs = preferences_of(user_ids=[user.pk])[user.pk]
    consent = consent_of(user_ids=[user.pk])[user.pk]
    return preference_reason(
        prefs, kind=kind, type_key=type_key, priority="low", channel=channel
    ) or consent_reason(
        consent,
        kind=kind,
        channel=channel,
        consent_channels=frozenset(settings.NOTIFIER_CONSENT_CHANNELS),
    )


def test_unsubscribe_this_switches_off_only_the_category_on_that_channel(consenting):
    user = consenting
    assert unsubscribe(
        user_id=user.pk,
        category="promo.flash_sale",
        channel="email",
        scope="this",
        source="unsubscribe_link",
    )
    assert rows(user) == {("promo.flash_sale", "email", False)}
    assert consent_granted(user, "email")  # "this" leaves consent as it was
    assert Consent.objects.filter(user=user).count() == 2
    assert route_reason(user, "promo.flash_sale", "marketing", "email") == Reason.OPTED_OUT
    assert route_reason(user, "promo.flash_sale", "marketing", "sms") is None


def test_unsubscribe_channel_stops_all_marketing_there_and_withdraws_its_consent(consenting):
    user = consenting
    # marketing off, but this type explicitly on everywhere: that "on" must not keep email coming
    preference_set(user_id=user.pk, category="marketing", channel="all", enabled=False)
    preference_set(user_id=user.pk, category="promo.flash_sale", channel="all", enabled=True)
    assert rows(user) == {("marketing", "all", False), ("promo.flash_sale", "all", True)}
    assert enabled(user, "promo.flash_sale", "marketing", "email")

    unsubscribe(
        user_id=user.pk,
        category="promo.flash_sale",
        channel="email",
        scope="channel",
        source="unsubscribe_link",
        ip_address="198.51.100.4",
    )

    assert not enabled(user, "promo.flash_sale", "marketing", "email")
    assert not enabled(user, "marketing", "marketing", "email")
    assert enabled(user, "promo.flash_sale", "marketing", "push")  # other channels untouched
    withdrawal = Consent.objects.filter(user=user, granted=False).get()
    assert (withdrawal.channel, withdrawal.source, withdrawal.ip_address) == (
        "email",
        "unsubscribe_link",
        "198.51.100.4",
    )
    assert not consent_granted(user, "email")
    assert consent_granted(user, "sms")
    assert route_reason(user, "promo.flash_sale", "marketing", "email") is not None
    assert route_reason(user, "promo.flash_sale", "marketing", "sms") is None


def test_unsubscribe_channel_in_app_switches_off_without_consent_records(consenting):
    user = consenting
    preference_set(user_id=user.pk, category="marketing", channel="all", enabled=False)
    preference_set(user_id=user.pk, category="promo.flash_sale", channel="inapp", enabled=True)
    assert enabled(user, "promo.flash_sale", "marketing", "inapp")

    unsubscribe(
        user_id=user.pk, category="marketing", channel="inapp", scope="channel", source="link"
    )
    assert not enabled(user, "promo.flash_sale", "marketing", "inapp")
    assert Consent.objects.filter(user=user).count() == 2  # in-app needs no consent


def test_unsubscribe_all_turns_marketing_off_and_withdraws_consent_everywhere(consenting):
    user = consenting
    unsubscribe(
        user_id=user.pk,
        category="promo.flash_sale",
        channel="email",
        scope="all",
        source="unsubscribe_link",
    )
    user.refresh_from_db()
    assert user.notifier_recipient.marketing_frequency == "off"
    withdrawal = Consent.objects.filter(user=user, granted=False).get()
    assert withdrawal.channel == "all"
    assert not any(consent_granted(user, c) for c in settings.NOTIFIER_CONSENT_CHANNELS)
    for channel in ALL:
        assert route_reason(user, "promo.flash_sale", "marketing", channel) is not None
    # transactional mail is not marketing: still routed
    assert route_reason(user, "order.shipped", "transactional", "email") is None


@pytest.mark.parametrize("scope", ["this", "channel", "all"])
def test_unsubscribing_twice_changes_nothing_more(consenting, scope):
    user = consenting
    kwargs = {
        "user_id": user.pk,
        "category": "promo.flash_sale",
        "channel": "email",
        "scope": scope,
        "source": "unsubscribe_link",
    }
    assert unsubscribe(**kwargs)
    after_first = snapshot(user)
    updated = list(Preference.objects.filter(user=user).values_list("updated_at", flat=True))

    assert not unsubscribe(**kwargs)
    assert snapshot(user) == after_first
    assert (
        list(Preference.objects.filter(user=user).values_list("updated_at", flat=True)) == updated
    )


def test_unsubscribe_all_without_consent_on_record_writes_no_withdrawal(user):
    unsubscribe(user_id=user.pk, category="marketing", channel="email", scope="all", source="x")
    user.refresh_from_db()
    assert user.notifier_recipient.marketing_frequency == "off"
    assert not Consent.objects.filter(user=user).exists()


def test_unsubscribe_this_from_a_locked_category_is_refused(user):
    with pytest.raises(CategoryLocked):
        unsubscribe(
            user_id=user.pk, category="order.shipped", channel="email", scope="this", source="x"
        )
    assert snapshot(user) == (set(), "as_sent", [])


@pytest.mark.parametrize(
    ("kwargs", "error"),
    [
        ({"scope": "everything"}, InvalidScope),
        ({"category": "nope"}, UnknownCategory),
        ({"channel": "fax"}, UnknownChannel),
        ({"source": ""}, InvalidConsent),
    ],
)
def test_bad_unsubscribe_input_is_refused_and_nothing_written(user, kwargs, error):
    good = {"category": "marketing", "channel": "email", "scope": "all", "source": "link"}
    with pytest.raises(error):
        unsubscribe(user_id=user.pk, **{**good, **kwargs})
    assert snapshot(user) == (set(), "as_sent", [])


def test_writes_touch_only_the_named_user(user):
    other = UserFactory()
    consent_give(user_id=other.pk, channel="email", source="x", wording="yes")
    before = snapshot(other)
    preference_set(user_id=user.pk, category="social", channel="all", enabled=False)
    unsubscribe(user_id=user.pk, category="marketing", channel="email", scope="all", source="x")
    assert snapshot(other) == before
    assert User.objects.get(pk=other.pk).notifier_recipient.marketing_frequency == "as_sent"
