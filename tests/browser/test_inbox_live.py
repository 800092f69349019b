"""The live inbox in Chromium: two tabs of one user's inbox on the ASGI server; a message a real
Celery worker delivers appears in both without a reload, a read in one shows in the other, and
after the stream server restarts the page reconnects and its badge is right again."""

from __future__ import annotations

import re
from collections.abc import Iterator

import pytest
from playwright.sync_api import Browser, Page, expect

from notifier.api import notify
from notifier.models import InboxItem
from tests.browser.conftest import PASSWORD
from tests.conftest import wait_until
from tests.factories import UserFactory
from tests.uvicorn import UvicornServer

pytestmark = [pytest.mark.browser, pytest.mark.django_db(transaction=True)]

# Polling once a minute: what the tabs show within seconds came over the stream.
SERVER_ENV = {"NOTIFIER_LIVE_POLL_S": "60", "NOTIFIER_LIVE_RETRY_MS": "300"}
# The whole site on uvicorn (the deployed web-live answers the stream only; no proxy here).
SITE = "notifier_site.asgi:site_application"


@pytest.fixture
def server(django_db_setup) -> Iterator[UvicornServer]:
    """The whole site on uvicorn (the pages and the stream on one origin, as behind the proxy)."""
    started = [UvicornServer(dict(SERVER_ENV), app=SITE)]
    started[0].wait_ready()
    yield started[0]
    for running in started:
        running.stop()


def tabs(browser: Browser, server: UvicornServer, user, count: int) -> list[Page]:
    user.set_password(PASSWORD)
    user.save(update_fields=["password"])
    context = browser.new_context(base_url=server.base_url)
    first = context.new_page()
    first.set_default_timeout(10_000)
    first.goto("/login/?next=/inbox/")
    first.get_by_label("Username").fill(user.username)
    first.get_by_label("Password").fill(PASSWORD)
    first.get_by_role("button", name="Log in").click()
    first.wait_for_url("**/inbox/")
    pages = [first]
    for _ in range(count - 1):
        page = context.new_page()
        page.set_default_timeout(10_000)
        page.goto("/inbox/")
        pages.append(page)
    for page in pages:
        expect(page.locator("#inbox-items")).to_have_attribute("data-live", "stream")
    return pages


def send(user, name: str) -> None:
    notify(
        user,
        "social.new_follower",
        {"follower_name": name, "follower_url": "https://x.test/fan"},
        channels=["inapp"],
    )


def test_a_message_a_worker_delivers_appears_in_both_tabs_and_a_read_in_one_shows_in_the_other(
    browser, server, worker
):
    user = UserFactory()
    one, two = tabs(browser, server, user, 2)
    expect(one.locator("#unread-count")).to_have_text("0")

    send(user, "Ana")  # committed: the worker prepares and delivers it, then publishes

    for page in (one, two):
        expect(page.locator("#unread-count")).to_have_text("1")
        expect(page.locator("#inbox-items > li")).to_have_count(1)
        expect(page.locator("#inbox-items .title")).to_have_text("Ana followed you")
    item = InboxItem.objects.get(user=user)
    row_two = two.locator(f'#inbox-items li[data-id="{item.pk}"]')
    expect(row_two).to_have_class(re.compile(r"\bunread\b"))

    one.get_by_role("button", name="Mark read").click()

    expect(two.locator("#unread-count")).to_have_text("0", timeout=2_000)
    expect(row_two).not_to_have_class(re.compile(r"\bunread\b"), timeout=2_000)
    assert InboxItem.objects.get(pk=item.pk).read_at is not None

    one.get_by_role("button", name="Archive").click()
    expect(row_two).to_have_count(0, timeout=2_000)


def test_after_the_stream_server_restarts_the_badge_is_right_again(browser, server, worker):
    """Messages delivered while the stream server is down publish to nobody; the reconnect's
    first event carries the count read afresh, and the list fetches what it missed."""
    user = UserFactory()
    [page] = tabs(browser, server, user, 1)
    port = server.port
    server.stop()
    send(user, "Bo")
    send(user, "Cy")
    wait_until(
        lambda: InboxItem.objects.filter(user=user).count() == 2,
        timeout=30,
        message="the worker to deliver both while the stream server is down",
    )
    expect(page.locator("#unread-count")).to_have_text("0")  # nobody told it yet

    again = UvicornServer(dict(SERVER_ENV), port_wanted=port, app=SITE)
    try:
        again.wait_ready()
        expect(page.locator("#unread-count")).to_have_text("2", timeout=10_000)
        expect(page.locator("#inbox-items > li")).to_have_count(2)
        expect(page.locator("#inbox-items")).to_have_attribute("data-live", "stream")
    finally:
        again.stop()


def test_a_group_item_updated_in_place_is_redrawn_on_top_and_a_new_item_of_the_burst_too(
    browser, server, monkeypatch
):
    """A digest replaces the words of its group's item (read, lower in the list) and another
    message lands in the same burst: the tab draws the new words and count, unread again, on
    top, and still inserts the other item."""
    from django.db import transaction

    from notifier import dispatch
    from notifier.models import Digest, Message, NotificationType
    from notifier.selectors import type_cache_clear
    from notifier.services.digests import digests_flush
    from notifier.services.pipeline import messages_prepare

    # Prepared here, in the test's process: nothing waits on the broker.
    monkeypatch.setattr(dispatch, "publish_prepare", lambda ids, lane: None)
    monkeypatch.setattr(dispatch, "publish_deliver", lambda *args, **kwargs: None)
    NotificationType.objects.filter(pk="social.new_comment").update(digest_first_now=True)
    type_cache_clear()
    user = UserFactory()

    def comment(name: str):
        return notify(
            user,
            "social.new_comment",
            {
                "commenter_name": name,
                "post_title": "My trip",
                "excerpt": "Nice!",
                "comment_url": "https://x.test/post",
            },
            channels=["inapp"],
            digest_key="post:42",
        )

    def prepare(*messages) -> None:
        messages_prepare(message_ids=[m.pk for m in messages])

    prepare(comment("Ana"))  # the first of its window: its own item at once
    prepare(comment("Ben"), comment("Cy"))  # collected
    digest = Digest.objects.get(user=user)
    digests_flush(now=digest.due_at)
    digest.refresh_from_db()
    send(user, "Fay")
    fay = Message.objects.get(user=user, type_id="social.new_follower")
    [page] = tabs(browser, server, user, 1)
    group = InboxItem.objects.get(user=user)
    row = page.locator(f'#inbox-items li[data-id="{group.pk}"]')
    expect(row.locator(".title")).to_have_text("Ana commented on My trip")
    page.get_by_role("button", name="Mark read").click()
    expect(row).not_to_have_class(re.compile(r"\bunread\b"))
    expect(page.locator("#unread-count")).to_have_text("0")

    with transaction.atomic():  # one burst: both items' news after one commit
        prepare(fay)  # a new item, older than the group's update below it in the list
        prepare(digest.message)

    items = page.locator("#inbox-items > li")
    expect(items).to_have_count(2)
    expect(items.nth(0).locator(".title")).to_have_text("Cy and 1 other commented on My trip")
    expect(items.nth(0)).to_have_class(re.compile(r"\bunread\b"))
    expect(items.nth(0)).to_have_attribute("data-id", str(group.pk))
    expect(items.nth(1).locator(".title")).to_have_text("Fay followed you")
    expect(page.locator("#unread-count")).to_have_text("2")
