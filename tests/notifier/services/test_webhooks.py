"""Webhook events applied once, also when the same event arrives twice at the same moment."""

from __future__ import annotations

import threading

import pytest
from django.db import connection

from notifier.api import notify
from notifier.models import Consent, Delivery, DeliveryEvent, ProviderEvent, SuppressedAddress
from notifier.policies.providers import email_event_action
from notifier.services.deliveries import deliveries_deliver
from notifier.services.pipeline import messages_prepare
from notifier.services.preferences import consent_give
from notifier.status import DeliveryStatus, Reason
from notifier.webhooks.events import ProviderEventIn, provider_event_apply, sms_inbound_apply
from tests.factories import UserFactory, order_context

S = DeliveryStatus
COPIES = 4


def sent_email() -> Delivery:
    message = notify(UserFactory(), "order.shipped", order_context(), channels=["email"])
    messages_prepare(message_ids=[message.pk])
    delivery = Delivery.objects.get(message=message)
    deliveries_deliver(delivery_ids=[delivery.pk])
    return Delivery.objects.get(pk=delivery.pk)


def at_once(work, copies: int = COPIES) -> list:
    """Run `work` in `copies` threads released together; return what each returned."""
    start = threading.Barrier(copies)
    results: list = [None] * copies

    def run(index: int) -> None:
        try:
            start.wait()
            results[index] = work()
        finally:
            connection.close()

    threads = [threading.Thread(target=run, args=(i,)) for i in range(copies)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=30)
    return results


@pytest.mark.django_db(transaction=True)
def test_the_same_bounce_four_times_at_once_is_applied_once(published):
    email = sent_email()
    event = ProviderEventIn(
        source="mailgun",
        event_id="token-1",
        event_type="bounced",
        delivery_provider=email.provider,
        provider_message_id=email.provider_message_id,
        recipient=email.user.email,
        error="550 5.1.1 no such user",
    )

    results = at_once(lambda: provider_event_apply(event, email_event_action("bounced", None)))

    assert sorted(r.replayed for r in results) == [False] + [True] * (COPIES - 1)
    fresh = Delivery.objects.get(pk=email.pk)
    assert (fresh.status, fresh.reason) == (S.FAILED, Reason.INVALID_RECIPIENT)
    assert DeliveryEvent.objects.filter(delivery=email, kind="callback").count() == 1
    assert ProviderEvent.objects.count() == 1
    assert SuppressedAddress.objects.count() == 1


@pytest.mark.django_db(transaction=True)
def test_the_same_stop_four_times_at_once_withdraws_once():
    user = UserFactory(phone="+8613800138000")
    consent_give(user_id=user.pk, channel="sms", source="signup_form", wording="Texts")

    at_once(
        lambda: sms_inbound_apply(
            source="twilio", event_id="SM1", phone="+8613800138000", body="STOP"
        )
    )

    assert list(
        Consent.objects.filter(user=user).order_by("at", "id").values_list("granted", "source")
    ) == [
        (True, "signup_form"),
        (False, "sms-stop"),
    ]
