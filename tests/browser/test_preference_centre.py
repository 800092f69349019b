"""The signed-link pages on a phone, in a real browser: the preference centre's switches saved
to the database, the unsubscribe flow from a message's link, and both laid out for 390 and
360 px without sideways scrolling."""

from __future__ import annotations

import pytest
from playwright.sync_api import expect

from notifier.links import preferences_url, unsubscribe_url
from notifier.models import Consent, Preference, Unsubscribe
from notifier.policies.preferences import channel_enabled
from notifier.selectors import preferences_of
from notifier.services.preferences import consent_give
from tests.browser.conftest import assert_fits, small_tap_targets
from tests.factories import UserFactory

pytestmark = [pytest.mark.browser, pytest.mark.django_db(transaction=True)]


def path_of(url: str) -> str:
    """The links carry NOTIFIER_SITE_URL; the browser opens them on the live server."""
    return "/" + url.split("/", 3)[3]


def group(page, name: str):
    return page.get_by_role("group", name=name, exact=True)


def section(page, name: str):
    return page.get_by_role("region", name=name, exact=True)


def enabled(user, category: str, kind: str, channel: str) -> bool:
    prefs = preferences_of(user_ids=[user.pk])[user.pk]
    return channel_enabled(prefs, kind=kind, type_key=category, channel=channel)


@pytest.fixture
def user():
    user = UserFactory()
    consent_give(user_id=user.pk, channel="email", source="signup_form", wording="Email offers")
    return user


def test_switching_a_category_off_for_a_channel_is_saved(phone, user):
    page = phone()
    page.goto(path_of(preferences_url(user_id=user.pk)))
    social_push = group(page, "Social activity").get_by_role("switch", name="Push notifications")
    expect(social_push).to_be_checked()
    assert enabled(user, "social.new_follower", "social", "push")

    page.locator('label[for="switch:social:push"]').tap()  # the whole label is the target
    expect(social_push).not_to_be_checked()
    page.get_by_role("button", name="Save my choices").tap()

    saved = page.get_by_role("status")
    expect(saved).to_contain_text("Saved. From the next message on:")
    expect(saved.get_by_role("listitem")).to_have_text(
        ["Social activity by push notification: off"]
    )
    expect(saved).to_be_focused()
    assert set(
        Preference.objects.filter(user=user).values_list("category", "channel", "enabled")
    ) == {("social", "push", False)}
    assert not enabled(user, "social.new_follower", "social", "push")
    assert enabled(user, "social.new_follower", "social", "inapp")
    # The page shows what is now stored, the type following its kind.
    social = group(page, "Social activity")
    expect(social.get_by_role("switch", name="Push notifications")).not_to_be_checked()
    expect(social.get_by_role("switch", name="In the app")).to_be_checked()
    # Message by message, folded away: the type follows its topic.
    section(page, "Social activity").get_by_text("Choose message by message").tap()
    followers = group(page, "New followers")
    expect(followers.get_by_role("switch", name="Push notifications")).not_to_be_checked()


def test_locked_categories_say_they_are_always_sent_and_why(phone, user):
    page = phone()
    page.goto(path_of(preferences_url(user_id=user.pk)))
    orders = section(page, "Orders and payments")
    expect(orders).to_contain_text(
        "Always sent: you need them to keep track of your orders and payments."
    )
    expect(orders).to_contain_text("Sent by: In the app, Email, Text message (SMS), Push")
    expect(orders.get_by_role("switch")).to_have_count(0)  # nothing to switch off
    account = section(page, "Account and security")
    expect(account).to_contain_text("Always sent: they protect your account.")
    account.get_by_text("Which message (1)").tap()
    expect(account).to_contain_text("Your password was changed")


def test_the_preference_centre_fits_a_phone(phone, user):
    page = phone()
    page.goto(path_of(preferences_url(user_id=user.pk)))
    assert_fits(page)
    # Every toggle's label is the tap target, and every control is at least 44 x 44 px.
    assert (
        small_tap_targets(page, "label.switch, label.choice, button, select, summary", at_least=12)
        == []
    )
    unlabelled = page.eval_on_selector_all(
        "input[type=checkbox]:not([disabled])",
        "els => els.filter(el => !el.labels.length).map(el => el.name)",
    )
    assert unlabelled == []


def test_the_unsubscribe_link_in_a_message_leads_to_the_choices_and_unsubscribes(phone, user):
    link = unsubscribe_url(user_id=user.pk, category="promo.flash_sale", channel="email")
    page = phone()
    page.goto(path_of(link))
    expect(page.get_by_role("heading", name="Unsubscribe")).to_be_visible()
    assert_fits(page)
    assert small_tap_targets(page, "label.choice, button", at_least=4) == []
    assert not Unsubscribe.objects.exists()  # opening the link changed nothing

    page.get_by_label("All offers and promotions by email").tap()
    page.get_by_role("button", name="Unsubscribe").tap()

    expect(page.get_by_role("heading", name="You are unsubscribed")).to_be_visible()
    assert Unsubscribe.objects.filter(user=user, scope="channel", channel="email").count() == 1
    assert not enabled(user, "promo.flash_sale", "marketing", "email")
    assert enabled(user, "promo.flash_sale", "marketing", "inapp")
    assert Consent.objects.filter(user=user, channel="email").latest("id").granted is False

    # "Changed your mind?": the preference centre shows it, and turning it back on saves.
    page.get_by_role("link", name="your preferences page").tap()
    # Offers by email is one box, the consent itself: asked once, not twice.
    offers_email = page.get_by_label("Yes, send me offers and promotions by email.")
    expect(offers_email).not_to_be_checked()
    offers_email.tap()
    page.get_by_role("button", name="Save my choices").tap()
    expect(page.get_by_role("status").get_by_role("listitem")).to_have_text(
        ["Offers and promotions by email: on", "Offers and promotions by email: you agreed"]
    )
    assert enabled(user, "promo.flash_sale", "marketing", "email")
    assert Consent.objects.filter(user=user, channel="email").latest("id").granted is True


def test_the_one_click_address_opened_in_a_browser_only_shows_the_choices(phone, user):
    link = unsubscribe_url(user_id=user.pk, category="promo.flash_sale", channel="email")
    page = phone()
    response = page.goto(path_of(link) + "one-click/")
    assert response is not None
    assert response.status == 200
    expect(page.get_by_role("heading", name="Unsubscribe")).to_be_visible()
    assert not Unsubscribe.objects.exists()
    assert enabled(user, "promo.flash_sale", "marketing", "email")
    page.get_by_role("button", name="Unsubscribe").tap()  # the first choice: this category
    expect(page.get_by_role("heading", name="You are unsubscribed")).to_be_visible()
    assert not enabled(user, "promo.flash_sale", "marketing", "email")
    assert enabled(user, "marketing", "marketing", "email")  # only the flash sales


def test_a_tampered_link_is_a_400_page_that_fits(phone, user):
    link = path_of(preferences_url(user_id=user.pk))
    page = phone()
    response = page.goto(link[:-3] + "xyz/")
    assert response is not None
    assert response.status == 400
    expect(page.get_by_role("heading", name="This link is not valid")).to_be_visible()
    assert_fits(page)
