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
