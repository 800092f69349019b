# ruff: noqa: RUF001 (Chinese text is written with Chinese punctuation)
"""A customer whose profile says zh-hans, on a phone: the inbox, the preference centre and the
unsubscribe page in Simplified Chinese, with no sideways scrolling at 390 and 360 px; a change
saved from the Chinese preference centre reaches the database; the language switch works."""

from __future__ import annotations

import datetime as dt
import re

import pytest
from playwright.sync_api import expect

from campaigns.models import Campaign
from notifier.api import notify
from notifier.links import preferences_url, unsubscribe_url
from notifier.models import Consent, InboxItem, Preference, Unsubscribe
from notifier.services.preferences import consent_give
from tests.browser.conftest import assert_fits, small_tap_targets
from tests.browser.test_preference_centre import path_of
from tests.factories import UserFactory
from tests.notifier.pages.test_inbox_api import deliver_inbox
from tests.notifier.pages.test_unsubscribe import SALE

pytestmark = [pytest.mark.browser, pytest.mark.django_db(transaction=True)]


@pytest.fixture
def customer():
    # No quiet hours: the inbox fills at once whatever the hour in Shanghai as the suite runs.
    user = UserFactory(locale="zh-hans", time_zone="Asia/Shanghai", quiet_hours_enabled=False)
    consent_give(user_id=user.pk, channel="email", source="signup_form", wording="邮件优惠")
    return user


def test_the_inbox_in_chinese_on_a_phone(phone, customer):
    items = deliver_inbox(customer, 21)  # a page holds 20: "load more" renders in the script
    # Next year's 7 December (the page shows no year): still the newest, first on the page,
    # whatever the date the suite runs at.
    next_year = dt.datetime.now(dt.UTC).year + 1
    InboxItem.objects.filter(pk=items[0].pk).update(
        created_at=dt.datetime(next_year, 12, 7, 12, 5, tzinfo=dt.UTC)
    )
    page = phone(customer)
    expect(page.locator("html")).to_have_attribute("lang", "zh-hans")
    expect(page.get_by_role("heading", name="站内信")).to_be_visible()
    expect(page.locator("#unread-badge")).to_have_text("21 条未读")
    first = page.locator(f'#inbox-items > li[data-id="{items[0].pk}"]')
    expect(first.locator("time")).to_have_text("12月7日 20:05")  # Shanghai time, Chinese form
    expect(first.locator(".category")).to_have_text("社交动态")
    expect(first.get_by_role("button", name="标为已读")).to_be_visible()
    assert_fits(page)

    page.set_viewport_size({"width": 390, "height": 844})
    page.get_by_role("link", name="加载更多").tap()
    expect(page.locator("#inbox-status")).to_have_text("已加载 1 条更早的消息。")
    last = page.locator(f'#inbox-items > li[data-id="{items[-1].pk}"]')
    expect(last.locator(".category")).to_have_text("社交动态")
    expect(last.locator("time")).to_have_text(re.compile(r"^\d{1,2}月\d{1,2}日 \d\d:\d\d$"))
    last.get_by_role("button", name="归档").tap()
    expect(page.locator("#inbox-status")).to_have_text("已归档。")
    assert InboxItem.objects.get(pk=items[-1].pk).archived_at is not None


def test_the_preference_centre_in_chinese_saves_a_change(phone, customer):
    page = phone()
    page.goto(path_of(preferences_url(user_id=customer.pk)))
    expect(page.get_by_role("heading", name="我们给您发送的消息")).to_be_visible()
    for topic in ["订单与付款", "账户与安全", "提醒与动态", "优惠与促销", "社交动态"]:
        expect(page.get_by_role("heading", name=topic)).to_be_visible()
    expect(page.get_by_role("region", name="订单与付款")).to_contain_text("始终发送")
    assert_fits(page)
    assert small_tap_targets(page, "label.switch, label.choice, button, select", at_least=8) == []

    page.set_viewport_size({"width": 390, "height": 844})
    social_push = page.get_by_role("group", name="社交动态").get_by_role("switch", name="推送通知")
    expect(social_push).to_be_checked()
    page.locator('label[for="switch:social:push"]').tap()
    page.get_by_label("是的，请通过短信向我发送优惠和促销信息。").tap()
    page.get_by_role("button", name="保存我的选择").tap()

    saved = page.get_by_role("status")
    expect(saved).to_contain_text("已保存。")
    expect(saved.get_by_role("listitem")).to_have_text(
        ["社交动态（通过推送通知）：关闭", "优惠与促销（通过短信）：您已同意"]
    )
    assert set(
        Preference.objects.filter(user=customer).values_list("category", "channel", "enabled")
    ) == {("social", "push", False)}
    sms = Consent.objects.filter(user=customer, channel="sms").latest("id")
    assert (sms.granted, sms.wording) == (True, "是的，请通过短信向我发送优惠和促销信息。")
    assert_fits(page)


def test_the_language_switch_shows_the_page_in_english(phone, customer):
    page = phone()
    page.goto(path_of(preferences_url(user_id=customer.pk)))
    page.get_by_role("navigation", name="语言").get_by_role("link", name="English").tap()
    expect(page.get_by_role("heading", name="What we send you")).to_be_visible()
    expect(page.locator("html")).to_have_attribute("lang", "en")
    page.reload()  # remembered
    expect(page.get_by_role("heading", name="What we send you")).to_be_visible()


def test_the_unsubscribe_page_in_chinese_names_the_campaign(phone, customer):
    message = notify(customer, "promo.flash_sale", SALE)
    message.campaign = Campaign.objects.create(name="冬季卡牌展")
    message.save(update_fields=["campaign"])
    link = unsubscribe_url(
        user_id=customer.pk, category="promo.flash_sale", channel="email", message_id=message.pk
    )
    page = phone()
    page.goto(path_of(link))
    expect(page.get_by_role("heading", name="退订")).to_be_visible()
    expect(page.locator("main")).to_contain_text("您通过电子邮件收到了“冬季卡牌展”。")
    assert_fits(page)
    assert not Unsubscribe.objects.exists()  # opening the link changed nothing

    page.get_by_role("button", name="退订").tap()

    expect(page.get_by_role("heading", name="您已退订")).to_be_visible()
    expect(page.locator("#what-stops")).to_have_text(
        "您将不会再通过电子邮件收到“冬季卡牌展”这类优惠。"
    )
    assert Unsubscribe.objects.filter(user=customer, message=message, scope="this").count() == 1
    assert_fits(page)
