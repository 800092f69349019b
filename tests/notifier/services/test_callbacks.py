"""Provider callbacks applied twice, late and out of order, also at the same moment."""

from __future__ import annotations

import threading
from datetime import timedelta

import pytest
from django.db import connection
from django.utils import timezone

from notifier.api import notify
from notifier.models import Delivery, DeliveryEvent
from notifier.services.callbacks import Applied, ProviderStatus, delivery_status_callback
from notifier.services.deliveries import deliveries_deliver
from notifier.services.pipeline import messages_prepare
from notifier.status import DeliveryStatus, Reason
from tests.factories import UserFactory, order_context

S = DeliveryStatus
P = ProviderStatus


def sent_email() -> Delivery:
    message = notify(UserFactory(), "order.shipped", order_context(), channels=["email"])
    messages_prepare(message_ids=[message.pk])
    delivery = Delivery.objects.get(message=message)
    deliveries_deliver(delivery_ids=[delivery.pk])
    return Delivery.objects.get(pk=delivery.pk)


def callback(delivery: Delivery, status: ProviderStatus, at=None):
    return delivery_status_callback(
        provider=delivery.provider,
        provider_message_id=delivery.provider_message_id,
        status=status,
        occurred_at=at,
    )


@pytest.mark.django_db
def test_a_duplicate_changes_nothing(published):
    email = sent_email()
    assert callback(email, P.DELIVERED).applied is Applied.MOVED
    assert callback(email, P.DELIVERED).applied is Applied.RECORDED
    assert DeliveryEvent.objects.filter(delivery=email, kind="callback").count() == 1


@pytest.mark.django_db
def test_a_late_delivered_never_undoes_a_click_but_records_when_it_happened(published):
    email = sent_email()
    t0 = timezone.now()
    callback(email, P.CLICKED, t0 + timedelta(minutes=5))
    assert callback(email, P.DELIVERED, t0).applied is Applied.RECORDED
    fresh = Delivery.objects.get(pk=email.pk)
    assert fresh.status == S.CLICKED
    assert fresh.delivered_at == t0
    assert fresh.clicked_at == t0 + timedelta(minutes=5)


@pytest.mark.django_db
def test_a_bounce_after_sent_fails_the_delivery_but_not_after_delivery(published):
    email = sent_email()
    callback(email, P.BOUNCED)
    bounced = Delivery.objects.get(pk=email.pk)
    assert (bounced.status, bounced.reason) == (S.FAILED, Reason.INVALID_RECIPIENT)
    other = sent_email()
    callback(other, P.DELIVERED)
    assert callback(other, P.BOUNCED).applied is Applied.RECORDED
    assert Delivery.objects.get(pk=other.pk).status == S.DELIVERED


@pytest.mark.django_db
def test_an_unknown_reference_is_reported_not_raised():
    result = delivery_status_callback(
        provider="sandbox", provider_message_id="nope", status=P.DELIVERED
    )
    assert result.applied is Applied.UNKNOWN


@pytest.mark.django_db(transaction=True)
def test_callbacks_applied_twice_and_out_of_order_at_once_end_at_the_furthest_status(published):
    email = sent_email()
    t0 = timezone.now()
    statuses = [P.CLICKED, P.DELIVERED, P.OPENED, P.DELIVERED, P.CLICKED, P.OPENED]
    start = threading.Barrier(len(statuses))

    def apply(status: ProviderStatus) -> None:
        try:
            start.wait()
            callback(email, status, t0)
        finally:
            connection.close()

    threads = [threading.Thread(target=apply, args=(s,)) for s in statuses]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=30)
    fresh = Delivery.objects.get(pk=email.pk)
    assert fresh.status == S.CLICKED
    assert fresh.delivered_at == fresh.opened_at == fresh.clicked_at == t0
    moves = list(
        DeliveryEvent.objects.filter(delivery=email, kind="callback").values_list(
            "status", flat=True
        )
    )
    assert len(moves) == len(set(moves))  # no status entered twice
    assert "clicked" in moves
