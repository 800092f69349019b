"""Deliver: the claim prevents double sends; outcomes follow the retry policy; lost work returns."""

from __future__ import annotations

import datetime as dt

import pytest
import time_machine
from django.utils import timezone

from channels.base import Channel
from channels.models import SandboxSend
from channels.sandbox import ledger_sends
from notifier.api import notify
from notifier.models import Delivery, DeliveryEvent, Device, EventKind, InboxItem, Message
from notifier.services.deliveries import deliveries_deliver, requeue_stuck_work
from notifier.services.pipeline import messages_prepare
from notifier.services.transitions import delivery_advance
from notifier.status import DeliveryStatus, Reason
from tests.factories import DeviceFactory, UserFactory, order_context

pytestmark = pytest.mark.django_db
S = DeliveryStatus


def prepared(user, channels=("inapp", "email", "sms", "push"), **ctx) -> dict[str, Delivery]:
    message = notify(user, "order.shipped", order_context(**ctx), channels=list(channels))
    messages_prepare(message_ids=[message.pk])
    return {d.channel: d for d in Delivery.objects.filter(message=message)}


def reload(delivery: Delivery) -> Delivery:
    return Delivery.objects.get(pk=delivery.pk)


def test_all_four_channels_are_sent_and_logged(published):
    user = UserFactory()
    DeviceFactory(user=user)
    rows = prepared(user)
    assert rows["inapp"].status == S.SENT  # our own inbox: written as it was routed
    report = deliveries_deliver(delivery_ids=[d.pk for d in rows.values()])
    assert (report.claimed, report.sent, report.skipped) == (3, 3, 1)
    for channel, delivery in rows.items():
        fresh = reload(delivery)
        assert fresh.status == S.SENT, channel
        assert fresh.attempts == 1
        assert fresh.sent_at is not None and fresh.finished_at is not None
        attempt = DeliveryEvent.objects.get(delivery=delivery, kind=EventKind.ATTEMPT)
        assert (attempt.status, attempt.attempt) == (S.SENT, 1)
    assert reload(rows["email"]).provider == "sandbox"
    assert reload(rows["email"]).provider_message_id.startswith("sandbox-")
    assert InboxItem.objects.get(delivery=rows["inapp"]).title == "Your order A1001 is on its way"
    assert {s.channel for s in ledger_sends()} == {"email", "sms", "push"}


def test_a_duplicated_deliver_task_sends_once(published, inapp_through_the_queue):
    rows = prepared(UserFactory(), channels=["email", "inapp"])
    ids = [d.pk for d in rows.values()]
    first = deliveries_deliver(delivery_ids=ids)
    second = deliveries_deliver(delivery_ids=ids)
    assert (first.sent, second.claimed, second.skipped) == (2, 0, 2)
    assert len(ledger_sends(Channel.EMAIL)) == 1
    assert InboxItem.objects.count() == 1
    assert reload(rows["email"]).attempts == 1


def test_a_transient_failure_is_retried_with_backoff_then_sent(published, settings):
    settings.NOTIFIER_RETRY_BASE_S, settings.NOTIFIER_RETRY_MAX_S = 10.0, 60.0  # 5..10 s
    user = UserFactory(email="bob+fail-transient-1@example.com")
    email = prepared(user, channels=["email"])["email"]
    report = deliveries_deliver(delivery_ids=[email.pk])
    assert (report.retried, report.sent) == (1, 0)
    waiting = reload(email)
    assert (waiting.status, waiting.reason, waiting.attempts) == (
        S.QUEUED,
        Reason.RETRY_SCHEDULED,
        1,
    )
    assert "timed out" in waiting.last_error
    assert waiting.next_attempt_at > timezone.now()
    # the retry is published with a countdown matching next_attempt_at
    (ids, lane, channel, countdown) = published.deliver[-1]
    assert (ids, lane, channel) == ([email.pk], "transactional", "email")
    assert 0 < countdown <= 300
    # a task arriving before next_attempt_at (a duplicate) does not jump the queue
    early = deliveries_deliver(delivery_ids=[email.pk])
    assert early.claimed == 0
    with time_machine.travel(waiting.next_attempt_at + dt.timedelta(seconds=1)):
        report = deliveries_deliver(delivery_ids=[email.pk])
    done = reload(email)
    assert (report.sent, done.status, done.attempts, done.reason, done.last_error) == (
        1,
        S.SENT,
        2,
        "",
        "",
    )
    outcomes = list(
        SandboxSend.objects.filter(delivery_id=email.pk).values_list("outcome", flat=True)
    )
    assert outcomes == ["transient", "sent"]
    kinds = list(DeliveryEvent.objects.filter(delivery=email).values_list("kind", "status"))
    assert kinds == [("routed", "queued"), ("attempt", "queued"), ("attempt", "sent")]


def test_a_permanent_failure_fails_at_once_with_its_reason(published):
    user = UserFactory(email="nobody+fail-permanent@example.com")
    email = prepared(user, channels=["email"])["email"]
    published.deliver.clear()
    report = deliveries_deliver(delivery_ids=[email.pk])
    failed = reload(email)
    assert (report.failed, failed.status, failed.reason, failed.attempts) == (
        1,
        S.FAILED,
        Reason.INVALID_RECIPIENT,
        1,
    )
    assert "does not exist" in failed.last_error
    assert failed.next_attempt_at is None
    assert published.deliver == []  # no retry is scheduled: it would fail the same way
    assert SandboxSend.objects.filter(delivery_id=email.pk).count() == 1


def test_retries_end_in_failure_with_the_last_error_kept(published, settings):
    settings.NOTIFIER_MAX_ATTEMPTS = 3
    user = UserFactory(email="down+fail-always@example.com")
    email = prepared(user, channels=["email"])["email"]
    for _ in range(3):
        with time_machine.travel(timezone.now() + dt.timedelta(minutes=10)):
            deliveries_deliver(delivery_ids=[email.pk])
    failed = reload(email)
    assert (failed.status, failed.reason, failed.attempts) == (
        S.FAILED,
        Reason.RETRIES_EXHAUSTED,
        3,
    )
    assert "503" in failed.last_error
    assert SandboxSend.objects.filter(delivery_id=email.pk).count() == 3


def test_an_unregistered_push_token_fails_and_deactivates_the_device(published):
    user = UserFactory()
    device = DeviceFactory(user=user, token="tok-fail-permanent")
    push = prepared(user, channels=["push"])["push"]
    deliveries_deliver(delivery_ids=[push.pk])
    assert reload(push).reason == Reason.DEVICE_UNREGISTERED
    assert Device.objects.get(pk=device.pk).active is False


def test_a_provider_that_raises_is_a_transient_error_not_a_stuck_delivery(published, monkeypatch):
    from channels import sandbox

    def explode(self, outgoings):
        raise RuntimeError("provider SDK bug")

    monkeypatch.setattr(sandbox.SandboxSmsProvider, "send_each", explode)
    sms = prepared(UserFactory(), channels=["sms"])["sms"]
    deliveries_deliver(delivery_ids=[sms.pk])
    fresh = reload(sms)
    assert (fresh.status, fresh.reason) == (S.QUEUED, Reason.RETRY_SCHEDULED)
    assert "provider SDK bug" in fresh.last_error


# --- Recovering lost work ---------------------------------------------------------------------


def test_requeue_publishes_unrouted_messages_and_overdue_deliveries_once(
    published, settings, django_capture_on_commit_callbacks
):
    user = UserFactory()
    lost_message = notify(user, "order.shipped", order_context(), channels=["inapp"])
    email = prepared(user, channels=["email"])["email"]
    later = timezone.now() + dt.timedelta(seconds=settings.NOTIFIER_REQUEUE_AFTER_S + 5)
    with django_capture_on_commit_callbacks(execute=True):
        report = requeue_stuck_work(now=later)
    assert (report.messages, report.queued) == (1, 1)
    assert [lost_message.pk] in [ids for ids, _ in published.prepare]
    assert published.delivered_ids()[-1] == email.pk
    # the clock restarted: a second run right after publishes nothing more
    again = requeue_stuck_work(now=later + dt.timedelta(seconds=1))
    assert again.queued == 0


def test_requeue_takes_back_a_claim_left_by_a_dead_worker(published, settings):
    sms = prepared(UserFactory(), channels=["sms"])["sms"]
    lease = dt.timedelta(seconds=settings.NOTIFIER_CLAIM_LEASE_S)
    Delivery.objects.filter(pk=sms.pk).update(
        status=S.SENDING,
        attempts=1,
        claimed_at=timezone.now(),
        claimed_until=timezone.now() + lease,
    )
    too_soon = requeue_stuck_work(now=timezone.now() + lease - dt.timedelta(seconds=2))
    assert too_soon.expired_claims == 0
    later = timezone.now() + lease + dt.timedelta(seconds=1)
    report = requeue_stuck_work(now=later)
    fresh = reload(sms)
    assert (report.expired_claims, fresh.status, fresh.reason) == (
        1,
        S.QUEUED,
        Reason.CLAIM_EXPIRED,
    )
    with time_machine.travel(later):
        deliveries_deliver(delivery_ids=[sms.pk])
    assert (reload(sms).status, reload(sms).attempts) == (S.SENT, 2)


def test_a_claim_that_kills_every_worker_eventually_fails(published, settings):
    settings.NOTIFIER_MAX_ATTEMPTS = 2
    sms = prepared(UserFactory(), channels=["sms"])["sms"]
    Delivery.objects.filter(pk=sms.pk).update(
        status=S.SENDING, attempts=2, claimed_at=timezone.now(), claimed_until=timezone.now()
    )
    later = timezone.now() + dt.timedelta(seconds=1)
    assert requeue_stuck_work(now=later).exhausted == 1
    assert (reload(sms).status, reload(sms).reason) == (S.FAILED, Reason.RETRIES_EXHAUSTED)


# --- Moving forward only ----------------------------------------------------------------------


def test_callbacks_move_forward_only_and_duplicates_change_nothing(published):
    email = prepared(UserFactory(), channels=["email"])["email"]
    deliveries_deliver(delivery_ids=[email.pk])
    assert delivery_advance(email.pk, S.CLICKED, kind=EventKind.ENGAGEMENT)
    assert not delivery_advance(email.pk, S.DELIVERED, kind=EventKind.CALLBACK)
    assert not delivery_advance(email.pk, S.CLICKED, kind=EventKind.ENGAGEMENT)
    fresh = reload(email)
    assert fresh.status == S.CLICKED and fresh.clicked_at is not None
    assert DeliveryEvent.objects.filter(delivery=email, kind=EventKind.ENGAGEMENT).count() == 1


def test_a_batch_is_delivered_with_a_bounded_number_of_queries(
    published, django_assert_max_num_queries, inapp_through_the_queue
):
    users = UserFactory.create_batch(30)
    messages = [notify(u, "order.shipped", order_context(), channels=["inapp"]) for u in users]
    messages_prepare(message_ids=[m.pk for m in messages])
    ids = list(Delivery.objects.values_list("pk", flat=True))
    with django_assert_max_num_queries(14):
        report = deliveries_deliver(delivery_ids=ids)
    assert report.sent == 30
    assert Message.objects.count() == InboxItem.objects.count() == 30
