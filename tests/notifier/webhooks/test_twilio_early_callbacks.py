"""Twilio's status callback as fast as Twilio can be: before the API answer for that very send
is read, so before the send's SID is recorded. Kept, then applied as the send is recorded."""

from __future__ import annotations

import json
from typing import Any
from urllib.parse import parse_qs

import pytest
import responses

from notifier.api import notify
from notifier.models import Delivery, DeliveryEvent, EventOutcome, ProviderEvent
from notifier.services.deliveries import deliveries_deliver
from notifier.services.pipeline import messages_prepare
from notifier.status import DeliveryStatus, Reason
from tests.factories import UserFactory, order_context
from tests.notifier.webhooks.test_twilio_webhooks import (  # noqa: F401 - the fixture
    FROM,
    MESSAGES_URL,
    SID,
    STATUS_PATH,
    signed_post,
    twilio,
)

pytestmark = pytest.mark.django_db
S = DeliveryStatus


def test_an_undelivered_that_comes_before_the_send_is_recorded_fails_the_sms(client, twilio):  # noqa: F811
    message = notify(UserFactory(), "order.shipped", order_context(), channels=["sms"])
    messages_prepare(message_ids=[message.pk])
    sms = Delivery.objects.get(message=message)
    message_sid = "SM" + "e" * 32
    answered: list[tuple[int, str]] = []

    def created_and_called_back(request: Any) -> tuple[int, dict[str, str], str]:
        to = parse_qs(request.body)["To"][0]
        callback = {
            "AccountSid": SID,
            "MessageSid": message_sid,
            "MessageStatus": "undelivered",
            "ErrorCode": "30005",
            "To": to,
            "From": FROM,
        }
        answered.append(
            (
                signed_post(client, STATUS_PATH, callback).status_code,
                Delivery.objects.get(pk=sms.pk).status,
            )
        )
        body = {"sid": message_sid, "status": "queued", "to": to, "from": FROM, "error_code": None}
        return 201, {}, json.dumps(body)

    twilio.remove(responses.POST, MESSAGES_URL)
    twilio.add_callback(responses.POST, MESSAGES_URL, callback=created_and_called_back)

    deliveries_deliver(delivery_ids=[sms.pk])

    assert answered == [(200, S.SENDING)]  # answered while the send was not yet recorded
    sms.refresh_from_db()
    assert (sms.status, sms.reason, sms.provider_message_id) == (
        S.FAILED,
        Reason.UNDELIVERED,
        message_sid,
    )
    assert "30005" in sms.last_error
    event = ProviderEvent.objects.get()
    assert (event.outcome, event.delivery_id) == (EventOutcome.MOVED, sms.pk)
    callback = DeliveryEvent.objects.get(delivery=sms, kind="callback")
    assert callback.detail["error_code"] == "30005"
