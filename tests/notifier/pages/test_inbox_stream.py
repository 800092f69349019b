"""The inbox stream's answers outside a live ASGI server: who may open it, and 204 (poll instead)
where an open stream would hold a WSGI worker. The stream itself: tests/integration/."""

from __future__ import annotations

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
