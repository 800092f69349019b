"""Scheduled sends and cancels through a real Celery worker on Redis and PostgreSQL: what other
products' users met (a scheduled job orphaned when the broker lost it, a delay that never got
delivered, a cancel that came too late to matter) does not happen here, because the schedule
lives in PostgreSQL and the release job reads it there."""

from __future__ import annotations

from datetime import timedelta
from unittest import mock

import pytest
from celery import Celery
from django.conf import settings
from django.utils import timezone

from channels.models import SandboxSend
from notifier import dispatch
from notifier.api import notify
from notifier.models import Delivery, DeliveryEvent, Message, RefusedCall
from notifier.queues import ALL_QUEUES, MAINTENANCE_QUEUE, Lane, prepare_queue
from notifier.services.deliveries import requeue_stuck_work
from notifier.services.release import held_release, held_release_due
from notifier.status import DeliveryStatus, Reason
from notifier.tasks import release_held_task
from tests.conftest import wait_until
from tests.factories import UserFactory, order_context

pytestmark = pytest.mark.integration
S = DeliveryStatus


@pytest.fixture
def other_codebase() -> Celery:
    """A Celery app that knows nothing of Notifier's tasks, on the same broker."""
    app = Celery("checkout", broker=settings.CELERY_BROKER_URL)
    app.conf.task_default_queue = prepare_queue(Lane.TRANSACTIONAL)
    return app


def email_of(message: Message) -> Delivery:
    return Delivery.objects.get(message=message, channel="email")


def status_is(message: Message, status: DeliveryStatus) -> bool:
    return Delivery.objects.filter(message=message, channel="email", status=status).exists()


def test_a_scheduled_send_survives_a_wiped_broker_and_goes_out_after_its_time(worker, redis_client):
    send_at = timezone.now() + timedelta(seconds=3)
    message = notify(
        UserFactory(), "order.shipped", order_context(), channels=["email"], send_at=send_at
    )
    wait_until(lambda: status_is(message, S.HELD), message="the worker to route it, held")
    assert email_of(message).reason == Reason.SCHEDULED
    redis_client.delete(*ALL_QUEUES)  # the broker loses everything it held
    wait_until(lambda: timezone.now() >= send_at, message="the send time to come")
    release_held_task.apply_async(queue=MAINTENANCE_QUEUE)  # beat's next tick
    wait_until(lambda: status_is(message, S.SENT), message="the scheduled email to go out")
    send = SandboxSend.objects.get(message_id=message.pk)
    assert send.at >= send_at  # not a moment early
    kinds = list(
        DeliveryEvent.objects.filter(delivery=email_of(message))
        .order_by("at", "pk")
        .values_list("kind", "status")
    )
    assert kinds == [("routed", "held"), ("released", "queued"), ("attempt", "sent")]


def test_a_release_whose_deliver_task_never_reached_the_broker_is_sent_by_the_requeue(worker):
    send_at = timezone.now() + timedelta(seconds=1)
    message = notify(
        UserFactory(), "order.shipped", order_context(), channels=["email"], send_at=send_at
    )
    wait_until(lambda: status_is(message, S.HELD), message="the worker to route it, held")
    wait_until(lambda: timezone.now() >= send_at, message="the send time to come")
    # The release commits, and its process dies before publishing the deliver task.
    with mock.patch.object(dispatch, "publish_deliver"):
        assert held_release().released == 1
    assert status_is(message, S.QUEUED)
    # Time passes with no deliver task anywhere: the row is overdue by the re-queue's measure.
    overdue = timezone.now() - timedelta(seconds=settings.NOTIFIER_REQUEUE_AFTER_S + 1)
    Delivery.objects.filter(pk=email_of(message).pk).update(next_attempt_at=overdue)
    assert requeue_stuck_work().queued == 1
    wait_until(lambda: status_is(message, S.SENT), message="the re-queued email to go out")
    assert SandboxSend.objects.filter(message_id=message.pk).count() == 1


def test_a_cancel_sent_by_task_name_stops_a_scheduled_send_for_good(
    worker, other_codebase, redis_client
):
    user = UserFactory()
    send_at = timezone.now() + timedelta(seconds=3)
    other_codebase.send_task(
        "notifier.notify",
        kwargs={
            "user": user.pk,
            "type": "order.shipped",
            "context": order_context(),
            "channels": ["email"],
            "send_at": send_at.isoformat(),
            "cancel_key": "order:A1001",
        },
    )
    wait_until(
        lambda: Delivery.objects.filter(message__user=user, status=S.HELD).exists(),
        message="the task's message to be routed, held",
    )
    message = Message.objects.get(user=user)
    assert message.cancel_key == "order:A1001"
    cancel = other_codebase.send_task("notifier.cancel", kwargs={"cancel_key": "order:A1001"})
    wait_until(lambda: status_is(message, S.CANCELLED), message="the cancel task to run")
    assert cancel.id and not RefusedCall.objects.exists()
    wait_until(lambda: timezone.now() >= send_at, message="the send time to come")
    assert held_release_due().messages == 0  # beat's tick: nothing of it is due any more
    assert email_of(message).reason == Reason.SENDER_CANCELLED
    assert not SandboxSend.objects.filter(message_id=message.pk).exists()


def test_a_send_due_between_beat_ticks_goes_at_its_time_not_at_the_next_tick(worker):
    """The release beat ticks every 15 s; a tick before a send's time publishes a wake-up for
    it, and with no further tick the worker sends it at its time (never before it)."""
    send_at = timezone.now() + timedelta(seconds=6)
    message = notify(
        UserFactory(), "order.shipped", order_context(), channels=["email"], send_at=send_at
    )
    wait_until(lambda: status_is(message, S.HELD), message="the worker to route it, held")
    release_held_task()  # a tick, run here (as beat's worker would), the last of this test
    assert timezone.now() < send_at, "the tick came too late to prove anything"
    assert status_is(message, S.HELD)  # the tick left it: not due yet
    wait_until(
        lambda: status_is(message, S.SENT), timeout=30, message="the email to go at its time"
    )
    released = DeliveryEvent.objects.get(delivery=email_of(message), kind="released").at
    assert send_at <= released < send_at + timedelta(seconds=3), (send_at, released)
