"""Callbacks that come before the send is recorded: kept, then applied once, in the order they
happened, when the sender records the provider id (or by the re-queue job if it missed them)."""

from __future__ import annotations

import uuid
from datetime import timedelta

import pytest
from django.utils import timezone

from notifier.api import notify
from notifier.models import (
    Delivery,
    DeliveryEvent,
    EventOutcome,
    ProviderEvent,
    SuppressedAddress,
)
from notifier.policies.providers import email_event_action
from notifier.services import deliveries
from notifier.services.callbacks import early_callbacks_apply, early_callbacks_reconcile
from notifier.services.deliveries import deliveries_deliver, requeue_stuck_work
from notifier.services.pipeline import messages_prepare
from notifier.status import DeliveryStatus, Reason
from notifier.webhooks.events import ProviderEventIn, provider_event_apply
from tests.factories import UserFactory, order_context
from tests.notifier.services.test_webhooks import at_once

pytestmark = pytest.mark.django_db
S = DeliveryStatus


def queued_email(address: str = "early@example.com") -> Delivery:
    user = UserFactory(email=address)
    message = notify(user, "order.shipped", order_context(), channels=["email"])
    messages_prepare(message_ids=[message.pk])
    delivery = Delivery.objects.get(message=message)
    assert delivery.status == S.QUEUED
    return delivery


def sandbox_id(delivery: Delivery, attempt: int = 1) -> str:
    """The provider id the sandbox will give this send (it is known before the send here)."""
    return f"sandbox-{delivery.pk}-{attempt}"


def report(delivery: Delivery, event_type: str, *, minutes_ago: float = 0, reject=None):
    """A tracking event of the kind anymail hands over, about `delivery`'s send."""
    return provider_event_apply(
        ProviderEventIn(
            source="mailgun",
            event_id=uuid.uuid4().hex,
            event_type=event_type,
            delivery_provider="sandbox",
            provider_message_id=sandbox_id(delivery),
            occurred_at=timezone.now() - timedelta(minutes=minutes_ago),
            recipient=delivery.user.email,
            error="550 5.1.1 no such mailbox" if event_type == "bounced" else "",
        ),
        email_event_action(event_type, reject),
    )


def test_a_bounce_before_the_send_is_recorded_fails_the_delivery_when_it_is(published):
    email = queued_email()
    early = report(email, "bounced", reject="bounced")
    assert early.outcome == EventOutcome.UNKNOWN  # nobody knows that provider id yet

    deliveries_deliver(delivery_ids=[email.pk])  # the send is recorded: the bounce applies

    email.refresh_from_db()
    assert (email.status, email.reason) == (S.FAILED, Reason.INVALID_RECIPIENT)
    assert "550 5.1.1" in email.last_error
    assert SuppressedAddress.objects.filter(address="early@example.com").exists()
    event = ProviderEvent.objects.get()
    assert (event.outcome, event.delivery_id) == (EventOutcome.MOVED, email.pk)
    timeline = set(DeliveryEvent.objects.filter(delivery=email).values_list("kind", "status"))
    assert {("attempt", S.SENT), ("callback", S.FAILED)} <= timeline

    # Applying again (the hook twice, the re-queue job) changes nothing.
    assert early_callbacks_apply(refs=[("sandbox", email.provider_message_id)]) == 0
    assert early_callbacks_reconcile() == 0
    assert DeliveryEvent.objects.filter(delivery=email, kind="callback").count() == 1


def test_early_events_apply_in_the_order_they_happened_so_a_later_delivered_never_undoes_a_bounce(
    published,
):
    email = queued_email()
    # They arrive the other way round: the bounce (which happened later) first.
    report(email, "bounced", minutes_ago=1, reject="bounced")
    report(email, "delivered", minutes_ago=2)
    deliveries_deliver(delivery_ids=[email.pk])
    email.refresh_from_db()
    # Delivered, then the bounce of a delivered message changes nothing: the status rules.
    assert email.status == S.DELIVERED

    other = queued_email("other@example.com")
    report(other, "delivered", minutes_ago=1)
    report(other, "bounced", minutes_ago=2, reject="bounced")
    deliveries_deliver(delivery_ids=[other.pk])
    other.refresh_from_db()
    assert (other.status, other.reason) == (S.FAILED, Reason.INVALID_RECIPIENT)
    assert other.delivered_at is not None  # the late "delivered" only says when
    assert set(ProviderEvent.objects.values_list("outcome", flat=True)) == {
        EventOutcome.MOVED,
        EventOutcome.RECORDED,
    }


def test_an_event_the_hook_missed_is_applied_by_the_requeue_job_once(published, monkeypatch):
    email = queued_email()
    report(email, "bounced", reject="bounced")
    with monkeypatch.context() as patched:  # its webhook committed while the send was recorded
        patched.setattr(deliveries, "early_callbacks_apply", lambda **_: 0)
        deliveries_deliver(delivery_ids=[email.pk])
    email.refresh_from_db()
    assert email.status == S.SENT

    assert requeue_stuck_work().callbacks == 1
    email.refresh_from_db()
    assert email.status == S.FAILED
    assert requeue_stuck_work().callbacks == 0
    assert DeliveryEvent.objects.filter(delivery=email, kind="callback").count() == 1


def test_an_event_for_a_send_never_recorded_keeps_waiting_and_changes_nothing(published):
    email = queued_email()
    stray = ProviderEventIn(
        source="mailgun",
        event_id="stray",
        event_type="bounced",
        delivery_provider="sandbox",
        provider_message_id="sandbox-someone-else",
    )
    provider_event_apply(stray, email_event_action("bounced", "bounced"))
    deliveries_deliver(delivery_ids=[email.pk])
    assert early_callbacks_reconcile() == 0
    email.refresh_from_db()
    assert email.status == S.SENT
    assert ProviderEvent.objects.get().outcome == EventOutcome.UNKNOWN
    assert not SuppressedAddress.objects.exists()


@pytest.mark.django_db(transaction=True)
def test_the_hook_and_the_requeue_job_at_once_apply_an_early_event_once(published, monkeypatch):
    email = queued_email()
    report(email, "bounced", reject="bounced")
    with monkeypatch.context() as patched:  # left for the runs below
        patched.setattr(deliveries, "early_callbacks_apply", lambda **_: 0)
        deliveries_deliver(delivery_ids=[email.pk])

    applied = at_once(
        lambda: (
            early_callbacks_apply(refs=[("sandbox", sandbox_id(email))])
            + early_callbacks_reconcile()
        )
    )

    assert sum(applied) == 1
    email.refresh_from_db()
    assert email.status == S.FAILED
    assert DeliveryEvent.objects.filter(delivery=email, kind="callback").count() == 1
    assert SuppressedAddress.objects.count() == 1


def test_the_sender_applies_early_events_only_when_one_waits_for_its_sends(published, monkeypatch):
    """One look per write before its transaction; the guarded apply (two savepoints) runs
    only for a write some event waits for."""
    applied: list[list[tuple[str, str]]] = []
    apply = deliveries.early_callbacks_apply

    def counted(*, refs):
        applied.append(list(refs))
        return apply(refs=refs)

    monkeypatch.setattr(deliveries, "early_callbacks_apply", counted)
    quiet = queued_email("quiet@example.com")
    deliveries_deliver(delivery_ids=[quiet.pk])
    assert applied == []  # nothing waited

    awaited = queued_email("awaited@example.com")
    report(awaited, "delivered")
    deliveries_deliver(delivery_ids=[awaited.pk])
    assert applied == [[("sandbox", sandbox_id(awaited))]]
    awaited.refresh_from_db()
    assert awaited.status == S.DELIVERED
