"""The inbox stream outside a live server: who may open it, 204 (poll instead) where an open
stream would hold a WSGI worker, grouped count reads and gradual admission. The stream itself,
on uvicorn: tests/integration/test_live_inbox_server.py."""

from __future__ import annotations

import time
from concurrent.futures import ThreadPoolExecutor

import pytest
from django.db import connections
from django.test import Client
from django.urls import reverse

from tests.factories import UserFactory

pytestmark = pytest.mark.django_db

URL = "notifier:inbox-stream"


def test_anonymous_visitors_are_told_to_log_in():
    response = Client().get(reverse(URL))
    assert response.status_code == 401
    assert response.json() == {"error": "log in to read your inbox"}


def test_under_wsgi_the_stream_answers_204_so_the_page_polls():
    client = Client()
    client.force_login(UserFactory())
    response = client.get(reverse(URL))
    assert response.status_code == 204  # EventSource stops reconnecting on a 204
    assert not response.streaming


def test_only_get_is_allowed():
    client = Client()
    client.force_login(UserFactory())
    assert client.post(reverse(URL)).status_code == 405


@pytest.mark.django_db(transaction=True)
def test_a_burst_of_counts_is_read_in_grouped_queries_each_asked_before_it_ran(monkeypatch):
    """300 streams asking at once cost a grouped query or two, not 300; and a count asked while
    a query runs waits for the next one (it must see what committed before it was asked)."""
    import asyncio

    from notifier.pages import inbox_stream

    users = UserFactory.create_batch(3)
    read_by_query: list[list[object]] = []
    real = inbox_stream._unread_counts_now

    def recorded(user_ids):
        read_by_query.append(list(user_ids))
        return real(user_ids)

    monkeypatch.setattr(inbox_stream, "_unread_counts_now", recorded)
    # A thread of the test's own, whose database connection is closed at the end.
    thread = ThreadPoolExecutor(max_workers=1)
    monkeypatch.setattr(inbox_stream, "_db_threads", thread)

    async def burst() -> tuple[list[int], int]:
        counts = inbox_stream.UnreadCounts()
        first = [asyncio.ensure_future(counts.count(users[n % 3].pk)) for n in range(300)]
        await asyncio.sleep(0)  # the first query is running now
        late = asyncio.ensure_future(counts.count(users[0].pk))
        return [*await asyncio.gather(*first)], await late

    try:
        answers, late = asyncio.run(burst())
    finally:
        thread.submit(connections.close_all).result()
        thread.shutdown()
    assert answers == [0] * 300 and late == 0
    assert read_by_query == [[u.pk for u in users], [users[0].pk]]


def test_streams_are_set_up_a_few_at_a_time_and_other_paths_pass_straight_through():
    """A burst of stream requests: at most `at_once` between arriving and their first body
    message; a page request is not held behind them."""
    import asyncio

    from notifier.pages.inbox_stream import streams_admitted_gradually

    setting_up = {"now": 0, "most": 0}

    async def django(scope, receive, send):
        if scope["path"].endswith("api/inbox/stream/"):
            setting_up["now"] += 1
            setting_up["most"] = max(setting_up["most"], setting_up["now"])
            await asyncio.sleep(0.01)  # the session, the user, the subscription
            await send({"type": "http.response.start", "status": 200, "headers": []})
            setting_up["now"] -= 1
            await send({"type": "http.response.body", "body": b"retry: 3000\n", "more_body": True})
            await asyncio.sleep(0.05)  # then idle, holding nothing
        else:
            await send({"type": "http.response.start", "status": 200, "headers": []})
            await send({"type": "http.response.body", "body": b"page"})

    app = streams_admitted_gradually(django, at_once=3)

    async def request(path: str) -> float:
        async def receive():
            return {"type": "http.request", "body": b""}

        async def send(message):
            pass

        started = time.perf_counter()
        await app({"type": "http", "path": path}, receive, send)
        return time.perf_counter() - started

    async def burst() -> float:
        streams = [asyncio.ensure_future(request("/n/api/inbox/stream/")) for _ in range(30)]
        await asyncio.sleep(0)
        page = await request("/n/inbox/")
        await asyncio.gather(*streams)
        return page

    page_s = asyncio.run(burst())
    assert setting_up["most"] == 3
    assert page_s < 0.01  # not behind the 30 streams' setups (at least 0.1 s of them)
