"""The live inbox on a real uvicorn process: changes reach open streams within a second, hundreds
of idle streams cost no thread and one Redis connection, and a lost Redis connection ends in a
resync with the right count."""

from __future__ import annotations

import psutil
import pytest
import redis
from django.conf import settings
from django.utils import timezone

from notifier.api import notify
from notifier.live_inbox import inbox_channel_prefix
from notifier.models import Delivery, InboxItem
from notifier.redis_client import state_client
from notifier.services.deliveries import deliveries_deliver
from notifier.services.inbox import inbox_archive, inbox_mark_all_read, inbox_mark_read
from notifier.services.pipeline import messages_prepare
from tests.conftest import wait_until
from tests.factories import UserFactory
from tests.uvicorn import EventStream, UvicornServer, session_cookie

pytestmark = pytest.mark.django_db(transaction=True)

# Hundreds of streams from one address, with the public limits out of the way.
SERVER_ENV = {"NOTIFIER_RATE_LIMIT_PUBLIC": "false"}


@pytest.fixture(autouse=True)
def _no_broker(monkeypatch):
    """The pipeline runs in this process; nothing goes to a worker."""
    from notifier import dispatch

    monkeypatch.setattr(dispatch, "publish_prepare", lambda *a, **k: None)
    monkeypatch.setattr(dispatch, "publish_deliver", lambda *a, **k: None)


@pytest.fixture
def server(uvicorn_server) -> UvicornServer:
    return uvicorn_server(**SERVER_ENV)


def deliver_inbox(user, count: int) -> list[InboxItem]:
    ids = [
        notify(
            user,
            "social.new_follower",
            {"follower_name": f"Fan {n}", "follower_url": f"https://x.test/{n}"},
            channels=["inapp"],
        ).pk
        for n in range(count)
    ]
    messages_prepare(message_ids=ids)
    deliveries_deliver(
        delivery_ids=list(Delivery.objects.filter(message_id__in=ids).values_list("pk", flat=True))
    )
    return list(InboxItem.objects.filter(user=user).order_by("-created_at", "-id"))


def test_a_stream_starts_with_the_count_then_hears_new_read_and_archived_within_a_second(server):
    user = UserFactory()
    deliver_inbox(user, 1)
    stream = EventStream(server.port, session_cookie(user))
    first = stream.next_event()
    assert stream.status == 200
    assert stream.headers["content-type"].startswith("text/event-stream")
    assert first.name == "inbox"
    assert first.data == {"unread_count": 1, "changes": [{"change": "resync"}]}

    items = deliver_inbox(user, 1)
    new = stream.next_event(timeout=1.0)
    assert new.data == {"unread_count": 2, "changes": [{"change": "new"}]}

    inbox_mark_read(user_id=user.pk, item_id=items[0].pk)
    read = stream.next_event(timeout=1.0)
    assert read.data == {"unread_count": 1, "changes": [{"change": "read", "item": items[0].pk}]}

    inbox_archive(user_id=user.pk, item_id=items[1].pk)
    archived = stream.next_event(timeout=1.0)
    assert archived.data == {
        "unread_count": 0,
        "changes": [{"change": "archived", "item": items[1].pk}],
    }
    stream.close()


def test_a_stream_hears_only_its_own_user(server):
    mine, theirs = UserFactory(), UserFactory()
    stream = EventStream(server.port, session_cookie(mine))
    stream.next_event()
    deliver_inbox(theirs, 1)
    deliver_inbox(mine, 1)
    inbox_mark_all_read(user_id=mine.pk)
    # The other user's item came first: had it reached this stream, it would be the next event.
    assert stream.next_event(timeout=1.0).data == {
        "unread_count": 1,
        "changes": [{"change": "new"}],
    }
    assert stream.next_event(timeout=1.0).data == {
        "unread_count": 0,
        "changes": [{"change": "read_all"}],
    }
    stream.close()


def test_an_idle_stream_gets_a_comment_line_every_heartbeat_and_a_retry_hint(uvicorn_server):
    server = uvicorn_server(**SERVER_ENV, NOTIFIER_LIVE_HEARTBEAT_S="0.2")
    stream = EventStream(server.port, session_cookie(UserFactory()))
    stream.next_event()
    assert stream.retry_ms == settings.NOTIFIER_LIVE_RETRY_MS
    with pytest.raises(TimeoutError):
        stream.next_event(timeout=1.0)  # no change: comments only
    assert stream.comments >= 3
    stream.close()


def test_without_redis_the_stream_says_so_and_ends_for_the_browser_to_retry_later(uvicorn_server):
    server = uvicorn_server(**SERVER_ENV, REDIS_URL="redis://127.0.0.1:1/0")
    stream = EventStream(server.port, session_cookie(UserFactory()))
    with pytest.raises(ConnectionError):  # the server ended the stream
        stream.next_event(timeout=10)
    assert stream.status == 200
    assert stream.retry_ms == 10_000
    assert stream.comments == 1  # ": live updates are unavailable"
    stream.close()


def test_an_anonymous_stream_is_refused(server):
    stream = EventStream(server.port, "sessionid=nobody")
    assert stream.read_head() == 401
    stream.close()


def redis_ports_of(pid: int) -> set[int]:
    """The local ports of the process's connections to the state Redis."""
    redis_port = state_client().connection_pool.connection_kwargs["port"]  # type: ignore[union-attr]
    return {
        c.laddr.port
        for c in psutil.Process(pid).net_connections(kind="tcp")
        if c.raddr and c.raddr.port == redis_port
    }


def pubsub_clients_of(pid: int) -> list[dict]:
    ports = redis_ports_of(pid)
    client = state_client()
    assert client is not None
    return [
        entry
        for entry in client.client_list()
        if int(entry["addr"].rsplit(":", 1)[1]) in ports and int(entry.get("sub", 0)) > 0
    ]


def test_500_idle_streams_hold_no_thread_each_and_share_one_redis_connection(server):
    users = UserFactory.create_batch(250)
    cookies = [session_cookie(user) for user in users]
    streams = [EventStream(server.port, cookie) for cookie in cookies for _ in range(2)]
    try:
        for stream in streams:  # all open and counted
            first = stream.next_event(timeout=10)
            assert first.data["unread_count"] == 0, server.tail()
        process = psutil.Process(server.process.pid)
        # The event loop, the hub's few helpers, the count threads: not one per stream.
        threads = wait_until(
            lambda: process.num_threads() if process.num_threads() <= 20 else None,
            timeout=10,
            message="the requests' threads to be handed back",
        )
        assert threads <= 20
        [pubsub] = pubsub_clients_of(server.process.pid)
        assert int(pubsub["sub"]) == 250  # one channel per user, both tabs on it
        assert len(redis_ports_of(server.process.pid)) <= 3

        # Both of one user's tabs hear a change; it costs the others nothing.
        deliver_inbox(users[7], 1)
        for stream in streams[14:16]:
            assert stream.next_event(timeout=1.0).data["unread_count"] == 1
    finally:
        for stream in streams:
            stream.close()
    wait_until(
        lambda: not pubsub_clients_of(server.process.pid),
        timeout=10,
        message="the hub to unsubscribe when the streams closed",
    )


def test_a_stream_resyncs_with_the_right_count_after_its_process_lost_redis(server):
    """An event lost while Redis was out of reach (here: a read written without one) cannot
    leave the badge wrong: the hub reconnects and every stream reads the count again."""
    user = UserFactory()
    deliver_inbox(user, 2)
    stream = EventStream(server.port, session_cookie(user))
    assert stream.next_event().data["unread_count"] == 2
    InboxItem.objects.filter(user=user).update(read_at=timezone.now())  # no event published
    [pubsub] = pubsub_clients_of(server.process.pid)
    client = state_client()
    assert client is not None
    client.client_kill_filter(_id=pubsub["id"])
    resync = stream.next_event(timeout=5.0)
    assert resync.data == {"unread_count": 0, "changes": [{"change": "resync"}]}
    # And the hub listens again: the next change arrives as before.
    deliver_inbox(user, 1)
    assert stream.next_event(timeout=1.0).data == {
        "unread_count": 1,
        "changes": [{"change": "new"}],
    }
    stream.close()


def test_a_failed_publish_costs_the_stream_its_event_but_not_the_read(server, monkeypatch):
    """Redis unreachable for the writer: the read is written and counted as lost; the stream
    hears nothing, and its next (re)connect starts with the right count."""
    from notifier import live_inbox
    from notifier.operations.metrics import LIVE_PUBLISH_FAILURES

    user = UserFactory()
    [item] = deliver_inbox(user, 1)
    stream = EventStream(server.port, session_cookie(user))
    assert stream.next_event().data["unread_count"] == 1
    before = LIVE_PUBLISH_FAILURES.labels("read")._value.get()
    nowhere = redis.Redis(host="127.0.0.1", port=1, socket_connect_timeout=0.2)
    monkeypatch.setattr(live_inbox, "state_client", lambda: nowhere)
    inbox_mark_read(user_id=user.pk, item_id=item.pk)
    assert InboxItem.objects.get(pk=item.pk).read_at is not None
    assert LIVE_PUBLISH_FAILURES.labels("read")._value.get() == before + 1
    with pytest.raises(TimeoutError):
        stream.next_event(timeout=0.5)
    stream.close()
    again = EventStream(server.port, session_cookie(user))
    assert again.next_event().data == {"unread_count": 0, "changes": [{"change": "resync"}]}
    again.close()


def test_channels_carry_the_redis_database_number():
    database = redis.connection.parse_url(settings.NOTIFIER_REDIS_URL).get("db", 0)
    assert inbox_channel_prefix() == f"notifier:inbox:{database}:"


def test_the_stream_server_answers_the_stream_and_health_and_nothing_else(server):
    """web-live takes only the stream off the proxy: the rest of the site (and its request
    bodies, which the WSGI wrapper vets) stays on the web service."""
    assert server.request("GET", "/health/live/").status == 200
    assert server.request("GET", "/health/ready/?beat=0").status in (200, 503)
    stream = EventStream(server.port, session_cookie(UserFactory()))
    assert stream.next_event().data == {"unread_count": 0, "changes": [{"change": "resync"}]}
    assert stream.status == 200
    stream.close()
    for method, path, body in (
        ("GET", "/inbox/", b""),
        ("GET", "/admin/login/", b""),
        ("GET", "/api/inbox/", b""),
        ("POST", "/api/v1/notify", b'{"type": "order.shipped"}'),
        ("POST", "/login/", b"\xff\xfe"),
    ):
        answer = server.request(
            method, path, body, headers={"Content-Type": "text/plain; charset=latin-7"}
        )
        assert answer.status == 404, (method, path, answer.status)
        assert "only the live inbox stream" in answer.text
