"""Recording events: one signal per batch, after commit only; outbox rows only for the active
endpoints that want the type, written in one statement per batch, and nothing at all (not a
query) when nobody wants them."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
from django.db import connection, transaction
from django.test import override_settings
from django.test.utils import CaptureQueriesContext
from django.utils import timezone

from notifier.api import notify
from notifier.events_out import record, signals
from notifier.events_out.signals import DeliveryChange
from notifier.models import (
    Delivery,
    Message,
    WebhookEndpoint,
    WebhookEvent,
    recipient_for,
)
from notifier.services.deliveries import deliveries_deliver
from notifier.services.pipeline import messages_prepare
from notifier.services.preferences import (
    PreferenceChange,
    consent_give,
    preferences_update,
    unsubscribe,
)
from notifier.services.transitions import deliveries_move
from notifier.status import DeliveryStatus, Reason
from tests.factories import UserFactory, order_context

S = DeliveryStatus
pytestmark = pytest.mark.django_db


class Heard:
    """A signal receiver that keeps what it was sent."""

    def __init__(self) -> None:
        self.calls: list[dict[str, Any]] = []

    def __call__(self, sender: Any, **kwargs: Any) -> None:
        kwargs.pop("signal")
        self.calls.append({"sender": sender, **kwargs})


@pytest.fixture
def heard() -> Iterator[dict[str, Heard]]:
    receivers = {
        name: Heard()
        for name in (
            "message_created",
            "deliveries_changed",
            "unsubscribed",
            "consent_changed",
            "preferences_changed",
        )
    }
    for name, receiver in receivers.items():
        getattr(signals, name).connect(receiver, weak=False, dispatch_uid=f"test-{name}")
    yield receivers
    for name in receivers:
        getattr(signals, name).disconnect(dispatch_uid=f"test-{name}")


@pytest.fixture
def woken(monkeypatch) -> list[int]:
    """The send tasks the recorder would publish (after commit), each wake-up publishing (the
    Redis debounce has its own test)."""
    published: list[int] = []
    monkeypatch.setattr(record, "state_client", lambda: None)
    monkeypatch.setattr(
        record, "sender_publish", lambda endpoint_id, countdown=0.0: published.append(endpoint_id)
    )
    return published


def endpoint(types: list[str], *, active: bool = True, name: str = "crm") -> WebhookEndpoint:
    made = WebhookEndpoint.objects.create(
        name=name,
        url="http://127.0.0.1:9/hooks",
        secret="whsec_" + "A" * 44,
        event_types=types,
        active=active,
    )
    record.endpoints_cache_clear()
    return made


def queued(published, count: int) -> list[int]:
    users = UserFactory.create_batch(count)
    # Routed while in-app takes the queue (a rate limit on it): queued, for a deliver task.
    with override_settings(NOTIFIER_RATE_LIMITS={"inapp:inapp": "10000/s"}):
        messages_prepare(
            message_ids=[
                notify(u, "order.shipped", order_context(), channels=["inapp"]).pk for u in users
            ]
        )
    ids = list(Delivery.objects.filter(status=S.QUEUED).order_by("pk").values_list("pk", flat=True))
    assert len(ids) >= count
    return ids[-count:]


def test_one_deliveries_changed_signal_per_batch_after_commit(
    published, heard, django_capture_on_commit_callbacks
):
    ids = queued(published, 5)
    heard["deliveries_changed"].calls.clear()
    now = timezone.now()
    with django_capture_on_commit_callbacks(execute=True):
        moved = deliveries_move(
            ids, sources=[S.QUEUED], to=S.CANCELLED, kind="manual", at=now, reason="cancelled"
        )
    assert moved == ids
    [call] = heard["deliveries_changed"].calls
    assert call["sender"] is Delivery
    assert call["changes"] == tuple(DeliveryChange(pk, S.CANCELLED, "cancelled", now) for pk in ids)


def test_a_rolled_back_change_sends_no_signal_and_writes_no_event(
    published, heard, woken, django_capture_on_commit_callbacks
):
    ids = queued(published, 2)
    hook = endpoint(["delivery.failed"])
    heard["deliveries_changed"].calls.clear()

    def fails_after_writing() -> None:
        with transaction.atomic():
            deliveries_move(ids, sources=[S.QUEUED], to=S.FAILED, kind="manual", at=timezone.now())
            assert WebhookEvent.objects.filter(endpoint=hook).count() == 2
            raise RuntimeError("the caller's transaction fails")

    with django_capture_on_commit_callbacks(execute=True), pytest.raises(RuntimeError):
        fails_after_writing()
    assert heard["deliveries_changed"].calls == []
    assert not WebhookEvent.objects.exists()
    assert woken == []


def test_outbox_rows_go_to_the_active_endpoints_that_want_the_type(
    published, woken, django_capture_on_commit_callbacks
):
    sent_hook = endpoint(["delivery.sent", "delivery.failed"], name="sent")
    created_hook = endpoint(["message.created"], name="created")
    endpoint(["message.created", "delivery.sent"], active=False, name="off")
    user = UserFactory()
    recipient = recipient_for(user)
    recipient.external_id = "cust-42"
    recipient.save(update_fields=["external_id"])
    with django_capture_on_commit_callbacks(execute=True):
        message = notify(user, "order.shipped", order_context(), channels=["inapp"])
    with django_capture_on_commit_callbacks(execute=True):
        messages_prepare(message_ids=[message.pk])  # in-app: sent as it is routed
    delivery = Delivery.objects.get(message=message)
    assert delivery.status == S.SENT

    [created] = WebhookEvent.objects.filter(endpoint=created_hook)
    assert created.type == "message.created"
    assert created.data == {
        "message_id": message.pk,
        "notification_type": "order.shipped",
        "idempotency_key": None,
        "campaign_id": None,
        "user": str(user.pk),
        "external_id": "cust-42",
    }
    [sent] = WebhookEvent.objects.filter(endpoint=sent_hook)
    assert (sent.type, sent.state) == ("delivery.sent", "pending")
    assert sent.data == {
        "delivery_id": delivery.pk,
        "message_id": message.pk,
        "channel": "inapp",
        "status": "sent",
        "reason": "",
        "notification_type": "order.shipped",
        "campaign_id": None,
        "user": str(user.pk),
        "external_id": "cust-42",
    }
    assert WebhookEvent.objects.count() == 2  # the disabled endpoint got nothing
    assert sorted(set(woken)) == sorted([created_hook.pk, sent_hook.pk])
    # No content, no address: only ids, statuses and the product's own keys.
    assert "Your order" not in str(sent.data) and "@" not in str(sent.data)


def _move_queries(published, count: int) -> int:
    ids = queued(published, count)
    with CaptureQueriesContext(connection) as queries:
        deliveries_move(ids, sources=[S.QUEUED], to=S.FAILED, kind="manual", at=timezone.now())
    assert WebhookEvent.objects.filter(data__delivery_id__in=ids).count() == 2 * count
    return len(queries)


def test_queries_do_not_grow_with_the_rows_of_a_batch(published, heard, woken, settings):
    settings.NOTIFIER_WEBHOOK_ENDPOINTS_CACHE_S = 3600  # no re-read between the two batches
    endpoint(["delivery.failed"])
    endpoints_read = endpoint(["delivery.failed"], name="second")
    assert record.endpoints_wanting("delivery.failed")  # the cache is warm
    few, many = _move_queries(published, 3), _move_queries(published, 40)
    assert few == many
    assert WebhookEvent.objects.filter(endpoint=endpoints_read).count() == 43


def test_nobody_listening_costs_no_query(published):
    ids = queued(published, 3)
    assert record.endpoints_wanting("delivery.failed") == ()  # the cache is warm, and empty
    with CaptureQueriesContext(connection) as queries:
        deliveries_move(ids, sources=[S.QUEUED], to=S.FAILED, kind="manual", at=timezone.now())
    assert not [q for q in queries if "webhook" in q["sql"]]
    # The UPDATE, as before (the events' COPY goes past Django's cursor, so is not counted).
    assert len(queries) == 1


def test_the_endpoints_are_read_once_per_cache_period(published, settings):
    settings.NOTIFIER_WEBHOOK_ENDPOINTS_CACHE_S = 60
    record.endpoints_cache_clear()
    with CaptureQueriesContext(connection) as queries:
        for _ in range(5):
            record.endpoints_wanting("delivery.sent")
    assert len([q for q in queries if "webhookendpoint" in q["sql"]]) == 1


def test_message_created_once_per_write_with_its_ids(
    published, heard, django_capture_on_commit_callbacks
):
    users = UserFactory.create_batch(3)
    from notifier.api import notify_many

    with django_capture_on_commit_callbacks(execute=True):
        result = notify_many([u.pk for u in users], "order.shipped", order_context())
    [call] = heard["message_created"].calls
    assert call["sender"] is Message
    assert sorted(call["message_ids"]) == sorted(result.message_ids)


def test_preferences_consent_and_unsubscribe_are_told(
    published, heard, woken, django_capture_on_commit_callbacks
):
    hook = endpoint(["preferences.changed", "consent.changed", "recipient.unsubscribed"])
    user = UserFactory()
    with django_capture_on_commit_callbacks(execute=True):
        preferences_update(
            user_id=user.pk,
            changes=[PreferenceChange(category="marketing", channel="sms", enabled=False)],
            marketing_frequency="weekly",
        )
        consent_give(user_id=user.pk, channel="email", source="signup", wording="Yes, email me")
        unsubscribe(
            user_id=user.pk, category="marketing", channel="email", scope="channel", source="link"
        )
    [prefs] = heard["preferences_changed"].calls
    assert prefs["user_id"] == user.pk
    assert prefs["changes"] == (("marketing", "sms", False),)
    assert prefs["marketing_frequency"] == "weekly"
    given, withdrawn = heard["consent_changed"].calls  # the unsubscribe withdrew consent
    assert (given["channel"], given["granted"], withdrawn["granted"]) == ("email", True, False)
    [unsub] = heard["unsubscribed"].calls
    assert (unsub["scope"], unsub["channel"], unsub["source"]) == ("channel", "email", "link")
    types = list(
        WebhookEvent.objects.filter(endpoint=hook).order_by("pk").values_list("type", flat=True)
    )
    assert types == [
        "preferences.changed",
        "consent.changed",
        "consent.changed",
        "recipient.unsubscribed",
    ]
    prefs_event = WebhookEvent.objects.filter(type="preferences.changed").get()
    assert prefs_event.data["changes"] == [
        {"category": "marketing", "channel": "sms", "enabled": False}
    ]
    assert prefs_event.data["user"] == str(user.pk)


def test_a_write_that_changes_nothing_tells_nothing(
    published, heard, django_capture_on_commit_callbacks
):
    user = UserFactory()
    with django_capture_on_commit_callbacks(execute=True):
        for _ in range(2):
            unsubscribe(
                user_id=user.pk, category="marketing", channel="email", scope="all", source="link"
            )
    assert len(heard["unsubscribed"].calls) == 1


def test_a_receiver_that_raises_does_not_undo_the_pipeline(
    published, django_capture_on_commit_callbacks, caplog
):
    ids = queued(published, 1)

    def broken(sender: Any, **kwargs: Any) -> None:
        raise ValueError("receiver bug")

    signals.deliveries_changed.connect(broken, weak=False, dispatch_uid="test-broken")
    try:
        with django_capture_on_commit_callbacks(execute=True):
            deliveries_move(
                ids,
                sources=[S.QUEUED],
                to=S.CANCELLED,
                kind="manual",
                at=timezone.now(),
                reason=Reason.CANCELLED,
            )
    finally:
        signals.deliveries_changed.disconnect(dispatch_uid="test-broken")
    assert Delivery.objects.get(pk=ids[0]).status == S.CANCELLED
    assert "receiver bug" in caplog.text


def test_many_wake_ups_publish_one_send_task_until_it_starts(monkeypatch, redis_client):
    published: list[tuple[int, float]] = []
    monkeypatch.setattr(
        record,
        "sender_publish",
        lambda endpoint_id, countdown=0.0: published.append((endpoint_id, countdown)),
    )
    redis_client.delete(record.WAKE_KEY.format(endpoint=987654))
    for _ in range(100):  # a campaign's sends, recorded one by one
        record.sender_wake([987654])
    assert published == [(987654, 0.2)]  # NOTIFIER_WEBHOOK_BATCH_WAIT_S of the tests
    record.sender_woken(987654)  # the task starts: the next event wakes another
    record.sender_wake([987654])
    assert len(published) == 2
    record.sender_woken(987654)


class _ElsewhereThanPostgres:
    """The connection, as the recorder sees it on SQLite (the embedded default)."""

    vendor = "sqlite"

    def __getattr__(self, name: str) -> Any:
        return getattr(connection, name)


def test_the_embedded_databases_path_writes_the_same_events(published, woken, monkeypatch):
    hook = endpoint(["message.created", "delivery.failed"])
    ids = queued(published, 2)
    now = timezone.now()
    changes = [DeliveryChange(pk, S.FAILED, "render_failed", now) for pk in ids]
    message_ids = list(Delivery.objects.filter(pk__in=ids).values_list("message_id", flat=True))

    def written() -> list[tuple[str, Any, dict[str, Any]]]:
        rows = WebhookEvent.objects.filter(endpoint=hook).order_by("type", "data__delivery_id")
        found = [(e.type, e.at, e.data) for e in rows]
        WebhookEvent.objects.all().delete()
        return sorted(found, key=repr)

    WebhookEvent.objects.all().delete()
    record._deliveries_outbox(changes, [hook.pk])
    record._messages_outbox(message_ids, [hook.pk])
    on_postgres = written()
    monkeypatch.setattr(record, "connection", _ElsewhereThanPostgres())
    record._deliveries_outbox(changes, [hook.pk])
    record._messages_outbox(message_ids, [hook.pk])
    assert written() == on_postgres and len(on_postgres) == 4


def _deliver_queries(published, count: int) -> int:
    ids = queued(published, count)
    with CaptureQueriesContext(connection) as queries:
        deliveries_deliver(delivery_ids=ids)
    assert WebhookEvent.objects.filter(data__delivery_id__in=ids, type="delivery.sent").count() == (
        count
    )
    return len(queries)


def test_recording_a_batch_of_sends_costs_the_same_for_3_or_60(published, heard, woken, settings):
    settings.NOTIFIER_WEBHOOK_ENDPOINTS_CACHE_S = 3600  # no re-read between the two batches
    endpoint(["delivery.sent", "message.created"])
    assert record.endpoints_wanting("delivery.sent")
    _deliver_queries(published, 1)  # caches of the first send (provider chain, types) warm
    few, many = _deliver_queries(published, 3), _deliver_queries(published, 60)
    assert few == many
    assert len(heard["deliveries_changed"].calls) == 0  # after commit only (the test's is never)
