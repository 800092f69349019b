"""With a real Celery worker process on real Redis and PostgreSQL."""

from __future__ import annotations

import datetime as dt

import pytest
from django.utils import timezone

from channels.base import Channel
from channels.models import SandboxSend
from notifier import dispatch
from notifier.api import notify, notify_many
from notifier.models import Delivery, DeliveryEvent, InboxItem, Message
from notifier.queues import Lane
from notifier.services.pipeline import messages_prepare
from notifier.status import TERMINAL, DeliveryStatus, Reason
from notifier.tasks import deliver, requeue_stuck_work_task
from tests.conftest import wait_until
from tests.factories import DeviceFactory, UserFactory, order_context

pytestmark = pytest.mark.integration
S = DeliveryStatus


def statuses(message: Message) -> dict[str, str]:
    return dict(Delivery.objects.filter(message=message).values_list("channel", "status"))


def all_terminal(message: Message, count: int) -> bool:
    rows = list(Delivery.objects.filter(message=message).values_list("status", flat=True))
    return len(rows) == count and all(status in TERMINAL for status in rows)


def test_notify_reaches_all_four_channels(worker):
    user = UserFactory(first_name="Mei")
    DeviceFactory(user=user)
    message = notify(user, "order.shipped", order_context(), idempotency_key="ship:1")
    wait_until(lambda: all_terminal(message, 4), message="four deliveries to finish")
    assert statuses(message) == {"inapp": "sent", "email": "sent", "sms": "sent", "push": "sent"}
    sends = {s.channel: s for s in SandboxSend.objects.filter(message_id=message.pk)}
    assert set(sends) == {"email", "sms", "push"}
    assert sends["email"].recipient == user.email
    assert sends["email"].payload["content"]["subject"] == "Order A1001 has shipped"
    assert sends["sms"].recipient == user.notifier_recipient.phone
    assert "A1001" in sends["sms"].payload["content"]["body"]
    assert InboxItem.objects.get(message=message, user=user).title.startswith("Your order A1001")
    for delivery in Delivery.objects.filter(message=message):
        assert delivery.attempts == 1
        kinds = list(delivery.events.order_by("at", "id").values_list("kind", flat=True))
        # in-app was sent as it was routed: its one event is the attempt
        assert kinds == (["attempt"] if delivery.channel == "inapp" else ["routed", "attempt"])


def test_suppressed_channels_are_logged_with_reasons_and_never_sent(worker):
    user = UserFactory(phone="", email="")
    message = notify(user, "order.shipped", order_context())
    wait_until(lambda: all_terminal(message, 4), message="deliveries to finish")
    rows = {d.channel: d for d in Delivery.objects.filter(message=message)}
    assert rows["inapp"].status == S.SENT
    assert {c: rows[c].reason for c in ("email", "sms", "push")} == {
        "email": Reason.NO_EMAIL_ADDRESS,
        "sms": Reason.NO_PHONE_NUMBER,
        "push": Reason.NO_ACTIVE_DEVICE,
    }
    assert not SandboxSend.objects.filter(message_id=message.pk).exists()


def test_a_deliver_task_published_three_times_sends_once(worker, wait_idle):
    message = notify(UserFactory(), "order.shipped", order_context(), channels=["email"])
    wait_until(
        lambda: Message.objects.filter(pk=message.pk, routed_at__isnull=False).exists(),
        message="the message to be routed",
    )
    # routed by the worker, which published its own deliver task: four publishes in all
    email = Delivery.objects.get(message=message)
    for _ in range(3):
        deliver.apply_async(args=([email.pk],), queue="transactional.email")
    wait_until(lambda: Delivery.objects.get(pk=email.pk).status == S.SENT, message="send")
    wait_idle()
    assert SandboxSend.objects.filter(delivery_id=email.pk, outcome="sent").count() == 1
    assert Delivery.objects.get(pk=email.pk).attempts == 1


def test_transient_failures_retry_then_succeed(worker):
    user = UserFactory(email="slow+fail-transient-2@example.com")
    message = notify(user, "order.shipped", order_context(), channels=["email", "inapp"])
    wait_until(lambda: all_terminal(message, 2), message="email to be sent after retries")
    email = Delivery.objects.get(message=message, channel=Channel.EMAIL)
    assert (email.status, email.attempts, email.reason) == (S.SENT, 3, "")
    outcomes = list(
        SandboxSend.objects.filter(delivery_id=email.pk)
        .order_by("id")
        .values_list("outcome", flat=True)
    )
    assert outcomes == ["transient", "transient", "sent"]
    attempts = list(
        DeliveryEvent.objects.filter(delivery=email, kind="attempt").values_list(
            "attempt", "status"
        )
    )
    assert attempts == [(1, "queued"), (2, "queued"), (3, "sent")]


def test_a_permanent_failure_fails_once_without_retrying(worker, wait_idle):
    user = UserFactory(email="gone+fail-permanent@example.com")
    message = notify(user, "order.shipped", order_context(), channels=["email"])
    wait_until(lambda: all_terminal(message, 1), message="email to fail")
    wait_idle()
    email = Delivery.objects.get(message=message)
    assert (email.status, email.reason, email.attempts) == (S.FAILED, Reason.INVALID_RECIPIENT, 1)
    assert SandboxSend.objects.filter(delivery_id=email.pk).count() == 1


def test_retries_exhausted_fail_with_the_reason_kept(worker):
    user = UserFactory(email="down+fail-always@example.com")
    message = notify(user, "order.shipped", order_context(), channels=["email"])
    wait_until(lambda: all_terminal(message, 1), timeout=60, message="retries to run out")
    email = Delivery.objects.get(message=message)
    assert (email.status, email.reason, email.attempts) == (S.FAILED, Reason.RETRIES_EXHAUSTED, 5)
    assert "503" in email.last_error
    assert SandboxSend.objects.filter(delivery_id=email.pk, outcome="transient").count() == 5


def test_a_lost_prepare_task_is_recovered_by_the_requeue_job(worker, monkeypatch):
    monkeypatch.setattr(dispatch, "publish_prepare", lambda ids, lane: None)  # the broker lost it
    message = notify(UserFactory(), "order.shipped", order_context(), channels=["inapp"])
    monkeypatch.undo()
    Message.objects.filter(pk=message.pk).update(created_at=timezone.now() - dt.timedelta(hours=1))
    assert statuses(message) == {}
    requeue_stuck_work_task.apply_async(queue="maintenance")
    wait_until(lambda: statuses(message) == {"inapp": "sent"}, message="recovered delivery")


def test_lost_deliver_tasks_are_recovered_by_the_requeue_job(worker, monkeypatch):
    # Both publishes are "lost": the message is routed here, and its deliver tasks go nowhere.
    monkeypatch.setattr(dispatch, "publish_prepare", lambda ids, lane: None)
    monkeypatch.setattr(dispatch, "publish_deliver", lambda *a, **k: None)
    message = notify(UserFactory(), "order.shipped", order_context(), channels=["inapp", "sms"])
    messages_prepare(message_ids=[message.pk])
    monkeypatch.undo()
    # in-app needed no deliver task: it went out as it was routed; sms waits for its lost one
    assert statuses(message) == {"inapp": "sent", "sms": "queued"}
    Delivery.objects.filter(message=message).update(
        next_attempt_at=timezone.now() - dt.timedelta(hours=1)
    )
    requeue_stuck_work_task.apply_async(queue="maintenance")
    wait_until(
        lambda: statuses(message) == {"inapp": "sent", "sms": "sent"},
        message="recovered deliveries",
    )


def test_notify_many_delivers_every_recipient_once(worker):
    users = UserFactory.create_batch(60)
    result = notify_many(
        users,
        "order.shipped",
        order_context(),
        idempotency_key="batch",
        channels=["inapp", "email"],
    )
    assert result.created == 60
    wait_until(
        lambda: Delivery.objects.filter(status=S.SENT).count() == 120, message="120 deliveries sent"
    )
    assert InboxItem.objects.count() == 60
    assert (
        SandboxSend.objects.filter(channel="email", outcome="sent")
        .values("delivery_id")
        .distinct()
        .count()
        == 60
    )
    assert set(Message.objects.values_list("lane", flat=True)) == {Lane.TRANSACTIONAL}
