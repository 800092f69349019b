"""The Celery task `notifier.notify`, sent by name as another codebase on the same broker sends
it (`send_task`, no import of Notifier), through a real worker: it notifies, it is idempotent
when the broker delivers it twice, and a refused call is recorded for the operator."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

import pytest
from celery import Celery
from django.conf import settings
from django.utils import timezone

from notifier.models import Delivery, Message, RefusedCall
from notifier.queues import Lane, prepare_queue
from notifier.services.recipients import recipient_put
from tests.conftest import wait_until
from tests.factories import UserFactory, order_context

pytestmark = pytest.mark.integration


@pytest.fixture
def other_codebase() -> Celery:
    """A Celery app that knows nothing of Notifier's tasks, on the same broker."""
    app = Celery("checkout", broker=settings.CELERY_BROKER_URL)
    app.conf.task_default_queue = prepare_queue(Lane.TRANSACTIONAL)
    return app


def sent_inapp(user: object) -> bool:
    return Delivery.objects.filter(message__user=user, channel="inapp", status="sent").exists()


def idle(worker: Any, client: Any) -> bool:
    if client.llen(prepare_queue(Lane.TRANSACTIONAL)):
        return False
    inspect = worker.app.control.inspect([worker.name], timeout=1.0)
    return not any((view or {}).get(worker.name) for view in (inspect.active(), inspect.reserved()))


def test_send_task_by_name_notifies_and_a_twice_delivered_task_makes_one_message(
    worker, other_codebase, redis_client
):
    user = UserFactory()
    kwargs = {"user": user.pk, "type": "order.shipped", "context": order_context()}
    other_codebase.send_task("notifier.notify", kwargs=kwargs, task_id="checkout-task-1")
    # The broker hands the same task over again (a worker lost before it acknowledged).
    other_codebase.send_task("notifier.notify", kwargs=kwargs, task_id="checkout-task-1")
    wait_until(lambda: sent_inapp(user), message="the task's message to reach the inbox")
    # Both copies taken and finished: nothing queued, reserved or running.
    wait_until(lambda: idle(worker, redis_client), message="the worker to run both copies")
    message = Message.objects.get(user=user)
    assert message.idempotency_key == "task:checkout-task-1"
    assert Delivery.objects.filter(message=message, channel="inapp", status="sent").exists()
    # The worker took both copies: still one message.
    assert Message.objects.filter(user=user).count() == 1


def test_send_task_by_external_id_with_the_callers_own_key(worker, other_codebase):
    saved = recipient_put("crm-77", {"email": "crm77@example.com"})
    other_codebase.send_task(
        "notifier.notify",
        kwargs={
            "recipient": "crm-77",
            "type": "order.shipped",
            "context": order_context(),
            "idempotency_key": "ship-77",
            "channels": ["email"],
            "expires_at": (timezone.now() + timedelta(days=1)).isoformat(),
        },
    )
    wait_until(
        lambda: Message.objects.filter(idempotency_key="ship-77").exists(),
        message="the message keyed ship-77",
    )
    assert not RefusedCall.objects.exists()
    message = Message.objects.get(idempotency_key="ship-77")
    assert message.user_id == saved.recipient.user_id
    assert message.channels == ["email"]


@pytest.mark.parametrize(
    ("kwargs", "error_type", "words"),
    [
        ({"type": "order.shipped", "context": {}}, "InvalidRecipient", "either user"),
        ({"user": 1, "type": "no.such.type"}, "UnknownNotificationType", "no.such.type"),
        ({"user": 1, "kind": "order.shipped"}, "InvalidCall", "no argument 'kind'"),
        ({"recipient": "ghost", "type": "order.shipped"}, "InvalidRecipient", "ghost"),
        ({"user": 1, "type": "order.shipped", "expires_at": "tomorrow"}, "InvalidExpiry", "ISO"),
    ],
)
def test_a_refused_call_is_recorded_for_the_operator_and_writes_no_message(
    worker, other_codebase, kwargs, error_type, words
):
    result = other_codebase.send_task("notifier.notify", kwargs=kwargs)
    wait_until(
        lambda: RefusedCall.objects.filter(caller=result.id).exists(),
        message="the refused call to be recorded",
    )
    refused = RefusedCall.objects.get(caller=result.id)
    assert refused.error_type == error_type
    assert words in refused.message
    assert refused.source == "celery task notifier.notify"
    assert not Message.objects.exists()


def test_positional_arguments_are_refused_with_how_to_send_them(worker, other_codebase):
    result = other_codebase.send_task("notifier.notify", args=[1, "order.shipped"])
    wait_until(
        lambda: RefusedCall.objects.filter(caller=result.id).exists(),
        message="the refused call to be recorded",
    )
    assert "kwargs=" in RefusedCall.objects.get(caller=result.id).message


def test_the_same_key_with_another_body_is_refused_like_the_api_does(worker, other_codebase):
    user = UserFactory()
    call = {"user": user.pk, "type": "order.shipped", "idempotency_key": "ship-1"}
    other_codebase.send_task("notifier.notify", kwargs={**call, "context": order_context()})
    wait_until(lambda: Message.objects.filter(idempotency_key="ship-1").exists(), message="ship-1")
    changed = order_context(order_number="Z9")
    result = other_codebase.send_task("notifier.notify", kwargs={**call, "context": changed})
    wait_until(
        lambda: RefusedCall.objects.filter(caller=result.id).exists(),
        message="the second call to be refused",
    )
    assert RefusedCall.objects.get(caller=result.id).error_type == "IdempotencyKeyReused"
    assert Message.objects.get(idempotency_key="ship-1").context["order_number"] != "Z9"
