"""Inbox changes go to the user's channel after commit, once per user; none on rollback."""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from typing import Any

import pytest
import redis
from django.db import transaction

from notifier.api import notify
from notifier.live_inbox import inbox_channel
from notifier.models import Delivery, InboxItem
from notifier.redis_client import state_client
from notifier.services.deliveries import deliveries_deliver
from notifier.services.inbox import inbox_archive, inbox_mark_all_read, inbox_mark_read
from notifier.services.pipeline import messages_prepare
from tests.factories import UserFactory

pytestmark = pytest.mark.django_db(transaction=True)


class Listener:
    """A subscriber to some users' channels, as the stream server's hub is."""

    def __init__(self, users: list[Any]) -> None:
        client = state_client()
        assert client is not None
        self.pubsub = client.pubsub(ignore_subscribe_messages=True)
        self.channels = {inbox_channel(user.pk): user.pk for user in users}
        self.pubsub.subscribe(*self.channels)
        # Subscribed once Redis answers: a PING on the connection comes back after it.
        self.pubsub.ping()
        deadline = time.monotonic() + 5
        while self.pubsub.get_message(timeout=0.1) is None and time.monotonic() < deadline:
            pass

    def events(self, within: float) -> list[tuple[Any, dict[str, Any]]]:
        """(user id, event) for everything published within `within` seconds."""
        heard = []
        deadline = time.monotonic() + within
        while (left := deadline - time.monotonic()) > 0:
            message = self.pubsub.get_message(timeout=left)
            if message and message["type"] == "message":
                heard.append(
                    (self.channels[message["channel"].decode()], json.loads(message["data"]))
                )
        return heard


@pytest.fixture
def listen() -> Iterator[Any]:
    made: list[Listener] = []

    def start(*users: Any) -> Listener:
        made.append(Listener(list(users)))
        return made[-1]

    yield start
    for listener in made:
        listener.pubsub.close()


@pytest.fixture(autouse=True)
def _no_broker(monkeypatch):
    from notifier import dispatch

    monkeypatch.setattr(dispatch, "publish_prepare", lambda *a, **k: None)
    monkeypatch.setattr(dispatch, "publish_deliver", lambda *a, **k: None)


def send_inapp(*users: Any) -> list[int]:
    """One in-app message per user given (a user given twice gets two), prepared in one batch."""
    ids = [
        notify(
            user,
            "social.new_follower",
            {"follower_name": "Fan", "follower_url": "https://x.test/fan"},
            channels=["inapp"],
        ).pk
        for user in users
    ]
    messages_prepare(message_ids=ids)
    deliveries_deliver(
        delivery_ids=list(Delivery.objects.filter(message_id__in=ids).values_list("pk", flat=True))
    )
    return ids


def test_a_batch_of_new_items_is_one_event_per_user(listen):
    ana, bo = UserFactory(), UserFactory()
    listener = listen(ana, bo)
    send_inapp(ana, ana, ana, bo)
    assert InboxItem.objects.filter(user=ana).count() == 3
    assert sorted(listener.events(within=0.5), key=lambda e: e[0]) == sorted(
        [(ana.pk, {"change": "new"}), (bo.pk, {"change": "new"})], key=lambda e: e[0]
    )


def test_a_read_is_published_after_its_commit_not_before(listen):
    user = UserFactory()
    send_inapp(user)
    item = InboxItem.objects.get(user=user)
    listener = listen(user)
    with transaction.atomic():
        inbox_mark_read(user_id=user.pk, item_id=item.pk)
        assert listener.events(within=0.3) == []  # a page reading now would see it unread
    assert listener.events(within=0.5) == [(user.pk, {"change": "read", "item": item.pk})]


def test_a_rolled_back_change_publishes_nothing(listen):
    user = UserFactory()
    send_inapp(user)
    item = InboxItem.objects.get(user=user)
    listener = listen(user)

    def read_archive_and_fail() -> None:
        with transaction.atomic():
            inbox_mark_read(user_id=user.pk, item_id=item.pk)
            inbox_archive(user_id=user.pk, item_id=item.pk)
            raise RuntimeError("the caller's transaction fails")

    with pytest.raises(RuntimeError):
        read_archive_and_fail()
    assert listener.events(within=0.5) == []
    assert InboxItem.objects.get(pk=item.pk).read_at is None


def test_what_changes_nothing_publishes_nothing(listen):
    user = UserFactory()
    send_inapp(user)
    item = InboxItem.objects.get(user=user)
    inbox_mark_read(user_id=user.pk, item_id=item.pk)
    inbox_archive(user_id=user.pk, item_id=item.pk)
    listener = listen(user)
    inbox_mark_read(user_id=user.pk, item_id=item.pk)  # read already
    inbox_archive(user_id=user.pk, item_id=item.pk)  # archived already
    inbox_mark_all_read(user_id=user.pk)  # nothing unread
    assert listener.events(within=0.5) == []


def test_read_all_and_archive_are_published(listen):
    user = UserFactory()
    send_inapp(user, user)
    first = InboxItem.objects.filter(user=user).first()
    assert first is not None
    listener = listen(user)
    inbox_mark_all_read(user_id=user.pk)
    inbox_archive(user_id=user.pk, item_id=first.pk)
    assert listener.events(within=0.5) == [
        (user.pk, {"change": "read_all"}),
        (user.pk, {"change": "archived", "item": first.pk}),
    ]


def test_switched_off_nothing_is_published(listen, settings):
    settings.NOTIFIER_LIVE_INBOX = False
    user = UserFactory()
    listener = listen(user)
    send_inapp(user)
    assert listener.events(within=0.5) == []


def test_a_publish_that_fails_fails_no_delivery(listen, monkeypatch):
    from notifier import live_inbox
    from notifier.operations.metrics import LIVE_PUBLISH_FAILURES

    nowhere = redis.Redis(host="127.0.0.1", port=1, socket_connect_timeout=0.2)
    monkeypatch.setattr(live_inbox, "state_client", lambda: nowhere)
    before = LIVE_PUBLISH_FAILURES.labels("new")._value.get()
    user = UserFactory()
    send_inapp(user, user)
    assert InboxItem.objects.filter(user=user).count() == 2
    assert set(Delivery.objects.filter(message__user=user).values_list("status", flat=True)) == {
        "sent"
    }
    assert LIVE_PUBLISH_FAILURES.labels("new")._value.get() == before + 1  # one user's event lost
