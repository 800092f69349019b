"""The end users' pages in the customer's language: Simplified Chinese for a customer whose
profile says zh-hans (from a signed link, with no session), English by default, the browser's
Accept-Language when the profile's locale is not one the pages speak, the language switch;
times in the customer's zone and locale; the grouped preference centre saving the right rows;
the unsubscribe page's sentence naming what the customer received."""

# ruff: noqa: RUF001 (Chinese text is written with Chinese punctuation)
from __future__ import annotations

import datetime as dt

import pytest
from django.conf import settings
from django.test import Client
from django.urls import reverse

from campaigns.models import Campaign
from notifier.api import notify
from notifier.links import preferences_token, unsubscribe_token
from notifier.models import Consent, InboxItem, Preference, Unsubscribe
from notifier.services.preferences import consent_give, unsubscribe
from tests.factories import UserFactory
from tests.notifier.pages.test_inbox_api import deliver_inbox
from tests.notifier.pages.test_inbox_page import _no_broker  # noqa: F401 (autouse fixture)
from tests.notifier.pages.test_unsubscribe import SALE, form_of

pytestmark = pytest.mark.django_db


def prefs_path(user) -> str:
    return reverse(
        "notifier:preferences-page", kwargs={"token": preferences_token(user_id=user.pk)}
    )


def unsubscribe_path(user, *, message_id=None, category="promo.flash_sale") -> str:
    token = unsubscribe_token(
        user_id=user.pk, category=category, channel="email", message_id=message_id
    )
    return reverse("notifier:unsubscribe", kwargs={"token": token})


def text(response) -> str:
    return response.content.decode()


# --- Which language ---------------------------------------------------------------------------


def test_a_chinese_customers_preference_link_opens_in_chinese_without_a_session():
    user = UserFactory(locale="zh-hans")
    response = Client().get(prefs_path(user))
    assert response.status_code == 200
    html = text(response)
    assert '<html lang="zh-hans">' in html
    assert "我们给您发送的消息" in html  # "What we send you"
    assert "优惠与促销" in html  # "Offers and promotions"
    assert "保存我的选择" in html
    assert "What we send you" not in html
    assert response["Content-Language"] == "zh-hans"
    assert "Accept-Language" in response["Vary"]


def test_a_locale_written_another_way_finds_the_same_language():
    for locale in ("zh-CN", "zh_Hans", "zh-cn"):
        user = UserFactory(locale=locale)
        assert "我们给您发送的消息" in text(Client().get(prefs_path(user))), locale


def test_the_customers_locale_wins_over_the_browsers_language():
    english = UserFactory(locale="en")
    html = text(Client().get(prefs_path(english), HTTP_ACCEPT_LANGUAGE="zh-CN,zh;q=0.9"))
    assert "What we send you" in html
    assert '<html lang="en">' in html


def test_without_a_locale_the_pages_speak_the_browsers_language_else_english():
    french = UserFactory(locale="fr")  # a locale the pages do not speak
    asked = Client().get(prefs_path(french), HTTP_ACCEPT_LANGUAGE="fr-FR,zh-CN;q=0.8")
    assert "我们给您发送的消息" in text(asked)
    plain = Client().get(prefs_path(french))
    assert "What we send you" in text(plain)
    # A bad link names nobody: only the browser can say.
    bad = Client().get(
        reverse("notifier:preferences-page", kwargs={"token": "a:b:c"}),
        HTTP_ACCEPT_LANGUAGE="zh-Hans",
    )
    assert bad.status_code == 400
    assert "此链接无效" in text(bad)


def test_accept_language_is_read_by_preference_over_the_pages_languages():
    french = UserFactory(locale="fr")
    for header, heading in [
        ("zh-CN;q=0.5, en;q=0.9", "What we send you"),
        ("de, zh-TW;q=0.2, zh-Hans;q=0.8", "我们给您发送的消息"),
        ("*", "What we send you"),
        ("garbage;;;q=x", "What we send you"),
    ]:
        response = Client().get(prefs_path(french), HTTP_ACCEPT_LANGUAGE=header)
        assert response.status_code == 200
        assert heading in text(response), header


def test_a_host_that_offers_only_english_gets_english_and_no_switch(settings):
    settings.LANGUAGES = [("en", "English")]
    html = text(Client().get(prefs_path(UserFactory(locale="zh-hans"))))
    assert "What we send you" in html
    assert "hreflang" not in html


def test_the_language_switch_changes_the_page_and_is_remembered():
    user = UserFactory(locale="zh-hans")
    client = Client()
    # One link, as the customer has it: a token is timestamped to the second, so two made a
    # second apart differ.
    path = prefs_path(user)
    first = text(client.get(path))
    assert f'href="{path}?lang=en"' in first
    assert 'lang="en" hreflang="en">English</a>' in first
    switched = client.get(path, {"lang": "en"})
    assert "What we send you" in text(switched)
    assert switched.cookies[settings.LANGUAGE_COOKIE_NAME].value == "en"
    assert "What we send you" in text(client.get(path))  # the cookie remembers
    # A language the pages do not speak is ignored, not an error.
    assert Client().get(path, {"lang": "xx"}).status_code == 200


# --- Times in the customer's zone and locale --------------------------------------------------


@pytest.mark.parametrize(
    ("locale", "shown", "words"),
    [("zh-hans", "12月6日 20:05", "条未读"), ("en", "6 Dec, 20:05", "unread")],
)
def test_the_inbox_shows_times_in_the_customers_zone_and_language(locale, shown, words):
    # In Shanghai, with no quiet hours: whatever the hour the suite runs at, the message is
    # in the inbox at once (quiet hours are not what this is about).
    user = UserFactory(locale=locale, time_zone="Asia/Shanghai", quiet_hours_enabled=False)
    [item] = deliver_inbox(user, 1)
    InboxItem.objects.filter(pk=item.pk).update(
        created_at=dt.datetime(2026, 12, 6, 12, 5, tzinfo=dt.UTC)  # 20:05 in Shanghai
    )
    client = Client()
    client.force_login(user)
    html = text(client.get(reverse("notifier:inbox-page")))
    assert f'datetime="2026-12-06T12:05:00+00:00">{shown}</time>' in html
    assert words in html
    if locale == "zh-hans":
        assert "社交动态" in html  # the item's topic, not "SOCIAL"
        assert '"date_locale": "zh-CN"' in html  # the script formats loaded items alike
        assert "站内信" in html


# --- Customer words -----------------------------------------------------------------------------


def test_the_preference_centre_uses_customer_words_not_kinds_or_keys():
    html = text(Client().get(prefs_path(UserFactory())))
    for words in [
        "Orders and payments",
        "Account and security",
        "Reminders and updates",
        "Offers and promotions",
        "Social activity",
        "Your order is on its way",
        "Always sent: they protect your account.",
    ]:
        assert words in html, words
    for internal in ["Transactional", "TRANSACTIONAL", "promo.flash_sale<", "Needs marketing"]:
        assert internal not in html, internal


def test_the_preference_centre_is_a_few_sections_not_a_wall_of_switches():
    html = text(Client().get(prefs_path(UserFactory())))
    # Outside "message by message", at most a dozen boxes; consent asked once per channel.
    top = html.split("<details")[0] + "".join(
        part.split("</details>", 1)[1] for part in html.split("<details")[1:]
    )
    assert top.count('type="checkbox"') <= 12
    for channel in settings.NOTIFIER_CONSENT_CHANNELS:
        assert html.count(f'name="consent:{channel}"') == 1


def test_ticking_offers_by_email_in_chinese_records_consent_in_chinese_and_switches_it_on():
    user = UserFactory(locale="zh-hans")
    consent_give(user_id=user.pk, channel="email", source="signup", wording="Email offers")
    unsubscribe(
        user_id=user.pk,
        category="promo.flash_sale",
        channel="email",
        scope="channel",
        source="test",
    )
    client = Client(enforce_csrf_checks=True)
    form = form_of(client.get(prefs_path(user)))
    assert form.checkboxes["consent:email"] is False
    data = form.submission(**{"consent:email": True, "switch:social:push": False})
    response = client.post(prefs_path(user), data)
    assert response.status_code == 200
    assert [str(line) for line in response.context["changed"]] == [
        "社交动态（通过推送通知）：关闭",
        "优惠与促销（通过电子邮件）：开启",
        "优惠与促销（通过电子邮件）：您已同意",
    ]
    assert set(
        Preference.objects.filter(user=user).values_list("category", "channel", "enabled")
    ) == {("social", "push", False)}  # marketing by email back on: its "off" row is gone
    latest = Consent.objects.filter(user=user, channel="email").latest("id")
    assert (latest.granted, latest.wording) == (
        True,
        "是的，请通过电子邮件向我发送优惠和促销信息。",
    )
    assert form_of(response).checkboxes["consent:email"] is True


# --- The unsubscribe page names what was received ----------------------------------------------


@pytest.fixture
def campaign_message():
    def make(user):
        message = notify(user, "promo.flash_sale", SALE)
        campaign = Campaign.objects.create(name="Winter card fair")
        message.campaign = campaign
        message.save(update_fields=["campaign"])
        return message

    return make


def test_the_unsubscribe_page_names_the_campaign_and_reads_as_a_sentence(campaign_message):
    user = UserFactory()
    consent_give(user_id=user.pk, channel="email", source="signup", wording="Email offers")
    message = campaign_message(user)
    path = unsubscribe_path(user, message_id=message.pk)
    asked = text(Client().get(path))
    assert "You got <strong>“Winter card fair”</strong> by email." in asked
    assert "Only “Flash sales” by email" in asked
    done = Client().post(path, {"scope": "this"})
    assert done.status_code == 200
    assert (
        '<p id="what-stops">You will no longer get offers like “Winter card fair” by email.</p>'
        in text(done)
    )
    assert Unsubscribe.objects.filter(user=user, message=message).count() == 1


def test_the_unsubscribe_sentence_in_chinese(campaign_message):
    user = UserFactory(locale="zh-hans")
    message = campaign_message(user)
    path = unsubscribe_path(user, message_id=message.pk)
    assert "您通过电子邮件收到了<strong>“Winter card fair”</strong>" in text(Client().get(path))
    done = text(Client().post(path, {"scope": "this"}))
    assert "您将不会再通过电子邮件收到“Winter card fair”这类优惠。" in done
    assert "您已退订" in done


def test_without_a_campaign_the_sentence_names_the_type_for_customers():
    user = UserFactory()
    done = text(Client().post(unsubscribe_path(user), {"scope": "this"}))
    assert "You will no longer get “Flash sales” by email." in done
    channel = text(Client().post(unsubscribe_path(user), {"scope": "channel"}))
    assert "You will no longer get offers or promotions by email." in channel


def test_one_click_post_still_answers_the_mail_provider_in_plain_text():
    user = UserFactory(locale="zh-hans")
    token = unsubscribe_token(user_id=user.pk, category="promo.flash_sale", channel="email")
    response = Client(enforce_csrf_checks=True).post(
        reverse("notifier:unsubscribe-one-click", kwargs={"token": token}),
        {"List-Unsubscribe": "One-Click"},
    )
    assert response.status_code == 200
    assert response["Content-Type"].startswith("text/plain")
    assert text(response) == "Unsubscribed from Flash sale by email.\n"
