"""The inbox page on a phone, in a real browser: the badge, reading, feedback, archiving and
paging each checked against the database, and the layout checked at 390 and 360 px."""

from __future__ import annotations

import re
from zoneinfo import ZoneInfo

import pytest
from playwright.sync_api import expect

from notifier.api import notify_topic, topic_subscribe
from notifier.models import Delivery, DeliveryEvent, InboxItem, Message, TopicSnooze
from notifier.services.pipeline import messages_prepare
from notifier.services.topics import topic_send_walk
from notifier.status import DeliveryStatus
from tests.browser.conftest import assert_fits, small_tap_targets
from tests.factories import UserFactory
from tests.notifier.pages.test_inbox_api import deliver_inbox

pytestmark = [pytest.mark.browser, pytest.mark.django_db(transaction=True)]


@pytest.fixture(autouse=True)
def _no_broker(monkeypatch):
    """Items are delivered in the test through the services; the page needs no worker."""
    from notifier import dispatch

    monkeypatch.setattr(dispatch, "publish_prepare", lambda *a, **k: None)
    monkeypatch.setattr(dispatch, "publish_deliver", lambda *a, **k: None)


def unread(user) -> int:
    return InboxItem.objects.filter(user=user, read_at__isnull=True).count()


def row(page, item):
    return page.locator(f'#inbox-items li[data-id="{item.pk}"]')


def test_the_badge_counts_unread_and_tapping_an_item_marks_it_read(phone):
    user = UserFactory()
    newest, middle, oldest = deliver_inbox(user, 3)
    InboxItem.objects.filter(pk=oldest.pk).update(read_at=oldest.created_at)
    page = phone(user)
    assert unread(user) == 2
    expect(page.locator("#unread-count")).to_have_text("2")
    expect(page.locator("#inbox-items > li")).to_have_count(3)
    expect(row(page, newest)).to_have_class(re.compile(r"\bunread\b"))
    expect(row(page, oldest)).not_to_have_class(re.compile(r"\bunread\b"))

    row(page, middle).locator(".body").tap()

    expect(page.locator("#unread-count")).to_have_text("1")
    expect(row(page, middle)).not_to_have_class(re.compile(r"\bunread\b"))
    expect(row(page, middle).get_by_role("button", name="Mark read")).to_be_hidden()
    middle.refresh_from_db()
    assert middle.read_at is not None
    assert Delivery.objects.get(pk=middle.delivery_id).status == DeliveryStatus.READ
    assert unread(user) == 1
    # The explicit button does the same, for keyboards and screen readers.
    row(page, newest).get_by_role("button", name="Mark read").tap()
    expect(page.locator("#unread-count")).to_have_text("0")
    expect(page.locator("#inbox-status")).to_have_text("Marked as read.")
    assert unread(user) == 0
    expect(page).to_have_title(re.compile(r"^Inbox"))


def test_tapping_a_link_records_the_read_before_following_it(phone):
    user = UserFactory()
    (item,) = deliver_inbox(user, 1)
    InboxItem.objects.filter(pk=item.pk).update(link="/health/live/")
    page = phone(user)
    row(page, item).get_by_role("link", name="Fan 0 followed you").tap()
    page.wait_for_url("**/health/live/")
    item.refresh_from_db()
    assert item.read_at is not None
    assert Delivery.objects.get(pk=item.delivery_id).status == DeliveryStatus.READ


def test_mark_all_read(phone):
    user = UserFactory()
    deliver_inbox(user, 4)
    page = phone(user)
    expect(page.locator("#unread-count")).to_have_text("4")

    page.get_by_role("button", name="Mark all read").tap()

    expect(page.locator("#unread-count")).to_have_text("0")
    expect(page.locator("#inbox-items > li.unread")).to_have_count(0)
    expect(page.locator("#inbox-status")).to_have_text("Marked 4 as read.")
    assert unread(user) == 0
    assert Delivery.objects.filter(inbox_item__user=user, status=DeliveryStatus.READ).count() == 4


def test_feedback_is_recorded(phone):
    user = UserFactory()
    item, other = deliver_inbox(user, 2)
    page = phone(user)
    feedback = row(page, item).get_by_role("group", name="Was this useful?")

    feedback.get_by_role("button", name="Irrelevant").tap()

    expect(feedback.get_by_role("button", name="Irrelevant")).to_have_attribute(
        "aria-pressed", "true"
    )
    expect(page.locator("#inbox-status")).to_have_text("Thanks for telling us: Irrelevant.")
    item.refresh_from_db()
    assert item.feedback == "irrelevant"
    assert DeliveryEvent.objects.filter(
        delivery_id=item.delivery_id, detail__feedback="irrelevant"
    ).exists()
    # Changing one's mind overwrites; the other item is untouched.
    feedback.get_by_role("button", name="Useful").tap()
    expect(feedback.get_by_role("button", name="Useful")).to_have_attribute("aria-pressed", "true")
    expect(feedback.get_by_role("button", name="Irrelevant")).to_have_attribute(
        "aria-pressed", "false"
    )
    item.refresh_from_db()
    other.refresh_from_db()
    assert (item.feedback, other.feedback) == ("useful", "")


def test_archive_removes_the_item_and_the_last_one_leaves_the_empty_state(phone):
    user = UserFactory()
    first, second = deliver_inbox(user, 2)
    page = phone(user)
    expect(page.locator("#inbox-empty")).to_be_hidden()

    row(page, first).get_by_role("button", name="Archive").tap()

    expect(row(page, first)).to_have_count(0)
    expect(page.locator("#unread-count")).to_have_text("1")  # archived items are not counted
    first.refresh_from_db()
    assert first.archived_at is not None
    second.refresh_from_db()
    assert second.archived_at is None

    row(page, second).get_by_role("button", name="Archive").tap()
    expect(page.locator("#inbox-empty")).to_be_visible()
    expect(page.locator("#inbox-empty")).to_contain_text("Nothing here yet.")
    expect(page.locator("#unread-count")).to_have_text("0")
    assert not InboxItem.objects.filter(user=user, archived_at__isnull=True).exists()
    page.reload()  # and it stays archived
    expect(page.locator("#inbox-empty")).to_be_visible()


def test_load_more_pages_through_the_cursor(phone):
    user = UserFactory()
    items = deliver_inbox(user, 23)  # newest first; a page holds 20
    page = phone(user)
    listed = page.locator("#inbox-items > li")
    expect(listed).to_have_count(20)

    page.get_by_role("link", name="Load more").tap()

    expect(listed).to_have_count(23)
    expect(page.get_by_role("link", name="Load more")).to_have_count(0)
    ids = [int(i) for i in listed.evaluate_all("els => els.map(el => el.dataset.id)")]
    assert ids == [item.pk for item in items]
    # The loaded items work like the others: one is read in the database after a tap.
    last = items[-1]
    row(page, last).locator(".body").tap()
    expect(page.locator("#unread-count")).to_have_text("22")
    last.refresh_from_db()
    assert last.read_at is not None
    expect(row(page, last).locator(".category")).to_have_text("Social activity")
    # Rendered by the script like the server renders it: in the user's own time zone.
    local = last.created_at.astimezone(ZoneInfo(user.notifier_recipient.time_zone))
    expect(row(page, last).locator("time")).to_have_text(local.strftime("%-d %b, %H:%M"))
    first_local = items[0].created_at.astimezone(ZoneInfo(user.notifier_recipient.time_zone))
    expect(row(page, items[0]).locator("time")).to_have_text(first_local.strftime("%-d %b, %H:%M"))
    expect(row(page, last).locator(".title a")).to_have_attribute("href", "https://x.test/0")


def test_the_page_fits_a_phone_with_large_tap_targets(phone):
    user = UserFactory()
    items = deliver_inbox(user, 21)
    # A long unbroken word and URL must wrap, not widen the page.
    InboxItem.objects.filter(pk=items[0].pk).update(
        title="Supercalifragilisticexpialidocious" * 3,
        body="Track it at https://shop.example.com/track/" + "A" * 120,
    )
    page = phone(user)
    expect(page.locator("#inbox-items > li")).to_have_count(20)
    assert_fits(page)
    controls = "main button, main a, main .item-main"
    # Per item: the text, Mark read, three feedback buttons, Archive (and its link, if any).
    assert small_tap_targets(page, controls, at_least=20 * 6) == []
    font_size = page.eval_on_selector(".body", "el => parseFloat(getComputedStyle(el).fontSize)")
    assert font_size >= 16


def test_anonymous_visitors_log_in_first_and_land_on_the_inbox(phone):
    user = UserFactory()
    deliver_inbox(user, 1)
    page = phone()
    page.goto("/inbox/")
    expect(page).to_have_url(re.compile(r"/login/\?next=/inbox/$"))
    assert_fits(page)
    page.get_by_label("Username").fill(user.username)
    page.get_by_label("Password").fill("wrong")
    page.get_by_role("button", name="Log in").tap()
    expect(page.get_by_role("alert")).to_contain_text("correct username and password")
    page.close()
    page = phone(user)  # logs in through the same form
    expect(page.locator("#unread-count")).to_have_text("1")


def test_without_javascript_the_forms_still_work(phone):
    user = UserFactory()
    item, other = deliver_inbox(user, 2)
    page = phone(user, javascript=False)
    row(page, item).get_by_role("button", name="Mark read").tap()
    page.wait_for_url("**/inbox/")
    expect(page.locator("#unread-count")).to_have_text("1")
    item.refresh_from_db()
    assert item.read_at is not None
    row(page, other).get_by_role("button", name="Meh").tap()
    expect(row(page, other).get_by_role("button", name="Meh")).to_have_attribute(
        "aria-pressed", "true"
    )
    other.refresh_from_db()
    assert other.feedback == "meh"


def test_an_item_from_a_topic_offers_snoozing_the_topic_and_does_it(phone):
    user = UserFactory()
    (plain,) = deliver_inbox(user, 1)
    topic_subscribe("card:42", [user])
    send = notify_topic(
        "card:42", "social.new_follower", {"follower_name": "Ana", "follower_url": "/x"}
    )
    topic_send_walk(send_id=send.pk)
    messages_prepare(
        message_ids=list(Message.objects.filter(topic__key="card:42").values_list("pk", flat=True))
    )
    from_topic = InboxItem.objects.get(user=user, message__topic__key="card:42")
    page = phone(user)
    button = "Snooze this topic a week"
    expect(row(page, plain).get_by_role("button", name=button)).to_be_hidden()

    row(page, from_topic).get_by_role("button", name=button).tap()

    expect(page.locator("#inbox-status")).to_have_text(
        "Topic snoozed for a week: its messages come to this inbox only until then."
    )
    snooze = TopicSnooze.objects.get(user=user)
    assert snooze.topic.key == "card:42" and snooze.until is not None
