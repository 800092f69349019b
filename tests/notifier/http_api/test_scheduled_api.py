"""Scheduled sends and cancelling by key over the service API: `send_at` / `send_at_local` /
`if_past` / `cancel_key` on /notify and /notify/bulk, and POST /notify/cancel, with the same
typed errors as notify() and nothing written when refused."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest
import time_machine
from django.utils import timezone

from notifier.models import Delivery, Message
from notifier.services.pipeline import messages_prepare
from notifier.services.recipients import recipient_put
from notifier.status import DeliveryStatus, Reason
from tests.factories import UserFactory
from tests.notifier.http_api.test_service_api import BULK, NOTIFY, post, shipped, token

pytestmark = pytest.mark.django_db
CANCEL = "/api/v1/notify/cancel"
S = DeliveryStatus


def later(**delta: float) -> str:
    return (timezone.now() + timedelta(**delta)).isoformat()


def test_notify_with_send_at_and_a_cancel_key_writes_both():
    user = UserFactory()
    send_at = (timezone.now() + timedelta(hours=3)).replace(microsecond=0)
    response = post(
        NOTIFY, shipped(user.pk, send_at=send_at.isoformat(), cancel_key="order:A1"), token()
    )
    assert response.status_code == 202, response.json()
    message = Message.objects.get(pk=response.json()["message"])
    assert (message.not_before, message.cancel_key) == (send_at, "order:A1")


def test_send_at_local_is_read_in_the_recipients_zone():
    with time_machine.travel(datetime(2027, 1, 4, 12, 0, tzinfo=UTC)):  # before that moment
        user = UserFactory(time_zone="Asia/Tokyo")
        response = post(NOTIFY, shipped(user.pk, send_at_local="2027-05-01T08:00:00"), token())
    assert response.status_code == 202, response.json()
    message = Message.objects.get(pk=response.json()["message"])
    assert message.not_before == datetime(2027, 4, 30, 23, 0, tzinfo=UTC)


@pytest.mark.parametrize(
    ("changes", "words"),
    [
        ({"send_at": "2027-05-01T08:00:00"}, "no UTC offset"),
        ({"send_at_local": "2027-05-01T08:00:00+09:00"}, "without a time zone"),
        ({"send_at": "2001-01-01T08:00:00+00:00"}, "ten years"),
        ({"send_at": "__PAST__"}, "already passed"),
        ({"send_at": "2030-01-01T08:00:00Z", "send_at_local": "2030-01-01T08:00:00"}, "not both"),
        ({"cancel_key": ""}, "non-empty"),
    ],
)
def test_a_schedule_that_cannot_be_kept_is_a_422_saying_what_to_fix(changes, words):
    if changes.get("send_at") == "__PAST__":
        changes = {"send_at": later(hours=-2)}
    response = post(NOTIFY, shipped(UserFactory().pk, **changes), token())
    assert response.status_code == 422
    assert response.json()["type"] in ("InvalidSchedule", "InvalidCancelKey")
    assert words in response.json()["message"]
    assert not Message.objects.exists()


def test_an_if_past_the_api_does_not_know_is_a_422():
    response = post(NOTIFY, shipped(UserFactory().pk, send_at=later(hours=1), if_past="x"), token())
    assert (response.status_code, response.json()["type"]) == (422, "InvalidRequest")
    assert "if_past" in response.json()["message"]


def test_a_past_send_at_with_send_now_is_accepted():
    response = post(
        NOTIFY, shipped(UserFactory().pk, send_at=later(hours=-2), if_past="send_now"), token()
    )
    assert response.status_code == 202


def test_the_same_idempotency_key_with_another_send_time_is_a_conflict():
    user, key = UserFactory(), token()
    first = post(NOTIFY, shipped(user.pk, send_at=later(hours=2)), key, **{"Idempotency-Key": "k1"})
    assert first.status_code == 202
    again = post(NOTIFY, shipped(user.pk, send_at=later(hours=3)), key, **{"Idempotency-Key": "k1"})
    assert (again.status_code, again.json()["type"]) == (409, "IdempotencyKeyReused")


def test_cancel_over_http_takes_back_the_scheduled_messages_and_says_what_it_did():
    key = token()
    users = UserFactory.create_batch(2)
    response = post(
        BULK,
        {
            "users": [u.pk for u in users],
            "type": "order.shipped",
            "context": shipped(0)["context"],
            "channels": ["email"],
            "send_at": later(hours=1),
            "cancel_key": "flash:7",
        },
        key,
    )
    assert response.status_code == 202, response.json()
    messages_prepare(message_ids=response.json()["messages"])
    answer = post(CANCEL, {"cancel_key": "flash:7"}, key)
    assert answer.status_code == 200
    assert answer.json() == {"messages": 2, "cancelled": 2, "too_late": 0}
    assert set(Delivery.objects.values_list("status", "reason")) == {
        (S.CANCELLED, Reason.SENDER_CANCELLED)
    }
    assert post(CANCEL, {"cancel_key": "flash:7"}, key).json() == {
        "messages": 2,
        "cancelled": 0,
        "too_late": 0,
    }


def test_cancel_for_named_recipients_only():
    key = token("notify", "recipients")
    ann = recipient_put("ann-1", {"email": "ann@example.com"}).recipient
    bob = recipient_put("bob-1", {"email": "bob@example.com"}).recipient
    for who in ("ann-1", "bob-1"):
        body = {"recipient": who, "type": "order.shipped", "context": shipped(0)["context"]}
        post(NOTIFY, {**body, "send_at": later(hours=1), "cancel_key": "c"}, key)
    answer = post(CANCEL, {"cancel_key": "c", "recipients": ["ann-1", "nobody-9"]}, key)
    assert answer.json()["messages"] == 1
    assert Message.objects.get(user_id=ann.user_id).routed_at is not None  # closed, cancelled
    assert Message.objects.filter(user_id=bob.user_id, routed_at__isnull=True).exists()
    bad = post(CANCEL, {"cancel_key": "c", "recipients": ["a\u0000b"]}, key)
    assert bad.status_code == 422


@pytest.mark.parametrize(
    "body",
    [
        {},
        {"cancel_key": 5},
        {"cancel_key": ""},
        {"cancel_key": "k", "users": [1], "recipients": []},
    ],
)
def test_a_bad_cancel_is_a_422(body):
    response = post(CANCEL, body, token())
    assert response.status_code == 422


def test_cancel_needs_the_notify_scope():
    response = post(CANCEL, {"cancel_key": "k"}, token("read"))
    assert response.status_code == 403
