"""Outbound webhooks through a real worker, to a real receiver on loopback that verifies every
signature with the `standardwebhooks` package and dedupes by webhook-id: every event arrives
once, a receiver that answers 500 for a while gets everything once it recovers, an event
whose task the broker lost goes out on the sweep, and the receiver can order what it got."""

from __future__ import annotations

import time
from datetime import datetime

import pytest
from django.conf import settings

from notifier.api import notify_many
from notifier.events_out import record
from notifier.events_out.sending import endpoint_create, webhooks_sweep
from notifier.models import (
    Delivery,
    InboxItem,
    WebhookAttempt,
    WebhookEndpoint,
    WebhookEvent,
)
from notifier.services.inbox import inbox_mark_read
from notifier.status import TERMINAL
from tests.conftest import wait_until
from tests.factories import UserFactory, order_context
from tests.notifier.events_out.receiver import Receiver, receiver_running

pytestmark = pytest.mark.integration


def subscribed(receiver: Receiver, *, max_batch: int) -> WebhookEndpoint:
    endpoint = endpoint_create(
        name="crm", url=receiver.url, event_types=list(record.SUBSCRIBABLE), max_batch=max_batch
    )
    receiver.secret = endpoint.secret
    # Each process reads the active endpoints once per NOTIFIER_WEBHOOK_ENDPOINTS_CACHE_S (0.2 s
    # in the tests): past that bound, the worker writes events for the new endpoint too.
    time.sleep(2 * settings.NOTIFIER_WEBHOOK_ENDPOINTS_CACHE_S)
    return endpoint


def all_sent(endpoint: WebhookEndpoint) -> bool:
    states = set(WebhookEvent.objects.filter(endpoint=endpoint).values_list("state", flat=True))
    return states == {"sent"}


def test_every_event_arrives_once_and_survives_a_failing_receiver(worker, wait_idle):
    with receiver_running(Receiver()) as receiver:
        endpoint = subscribed(receiver, max_batch=5)
        receiver.failures_left = 4  # the first four requests get a 500
        users = UserFactory.create_batch(6)
        result = notify_many(users, "order.shipped", order_context(), channels=["inapp", "email"])
        wait_until(
            lambda: Delivery.objects.filter(status__in=TERMINAL).count() == 12,
            message="twelve deliveries to finish",
        )
        item = InboxItem.objects.filter(user=users[0]).get()
        inbox_mark_read(user_id=users[0].pk, item_id=item.pk)  # delivery.read
        wait_until(
            lambda: (
                WebhookEvent.objects.filter(endpoint=endpoint).count() == 19 and all_sent(endpoint)
            ),
            timeout=60,
            message="every event to be answered 2xx",
        )
        wait_idle()

    assert receiver.refused == []  # every request verified
    outbox = {
        f"evt_{pk}": (kind, data)
        for pk, kind, data in WebhookEvent.objects.filter(endpoint=endpoint).values_list(
            "pk", "type", "data"
        )
    }
    got = receiver.events()  # deduplicated by webhook-id
    ids = [event["id"] for event in got]
    assert len(ids) == len(set(ids)), "an event arrived under two webhook-ids"
    assert set(ids) == set(outbox)
    for event in got:
        assert (event["type"], event["data"]) == outbox[event["id"]]
    kinds = sorted(event["type"] for event in got)
    assert kinds.count("message.created") == 6 and kinds.count("delivery.sent") == 12
    assert kinds.count("delivery.read") == 1
    assert {e["data"]["message_id"] for e in got if e["type"] == "message.created"} == set(
        result.message_ids
    )
    # It failed for a while: four requests answered 500, retried under their webhook-ids.
    failed = WebhookAttempt.objects.filter(endpoint=endpoint, ok=False)
    assert failed.count() == 4 and set(failed.values_list("status_code", flat=True)) == {500}
    assert set(failed.values_list("webhook_id", flat=True)) <= set(receiver.accepted())
    # Batched: fewer requests than events.
    assert len(receiver.accepted()) < len(outbox)
    # Order-safe: per delivery, the newest event by timestamp is the delivery's status now.
    newest: dict[int, tuple[datetime, str]] = {}
    for event in got:
        if event["type"].startswith("delivery."):
            at = datetime.fromisoformat(event["timestamp"])
            key = event["data"]["delivery_id"]
            if key not in newest or at > newest[key][0]:
                newest[key] = (at, event["data"]["status"])
    now = dict(Delivery.objects.values_list("pk", "status"))
    assert {pk: status for pk, (_, status) in newest.items()} == now


def test_events_whose_task_the_broker_lost_go_out_on_the_sweep(worker, wait_idle, monkeypatch):
    with receiver_running(Receiver()) as receiver:
        endpoint = subscribed(receiver, max_batch=1)
        # This process publishes no send task, as if the broker lost it (the worker's own writes
        # still wake the sender: this test's events are written here alone).
        monkeypatch.setattr(record, "sender_publish", lambda endpoint_id, countdown=0.0: None)
        from notifier.services.preferences import unsubscribe

        user = UserFactory()
        unsubscribe(
            user_id=user.pk, category="marketing", channel="inapp", scope="this", source="x"
        )
        assert WebhookEvent.objects.filter(endpoint=endpoint, state="pending").count() == 1
        wait_idle()
        assert receiver.accepted() == {}
        monkeypatch.undo()
        assert webhooks_sweep() == [endpoint.pk]  # what beat runs every 15 seconds
        wait_until(lambda: all_sent(endpoint), message="the swept event to be sent")
        wait_idle()
    [request] = receiver.accepted().values()
    assert request.body["type"] == "recipient.unsubscribed"
    assert request.body["data"]["user"] == str(user.pk)
