"""Escalation through a real Celery worker on Redis and PostgreSQL: an unread in-app message
escalates to push when its wait is over, on the release job's tick; one read in time does not,
and says why."""

from __future__ import annotations

from datetime import timedelta

import pytest
from django.utils import timezone

from channels.models import SandboxSend
from notifier.api import notify
from notifier.models import Delivery, InboxItem, NotificationType
from notifier.queues import MAINTENANCE_QUEUE
from notifier.selectors import type_cache_clear
from notifier.services.inbox import inbox_mark_read
from notifier.services.release import held_release_due
from notifier.status import DeliveryStatus, Reason
from notifier.tasks import release_held_task
from tests.conftest import wait_until
from tests.factories import DeviceFactory, UserFactory

pytestmark = pytest.mark.integration
S = DeliveryStatus
FOLLOWER = {"follower_name": "Fan", "follower_url": "https://x.test/fan"}


@pytest.fixture
def escalating(worker):
    NotificationType.objects.filter(pk="social.new_follower").update(
        escalation=[{"channel": "inapp", "after_s": 0}, {"channel": "push", "after_s": 2}]
    )
    # This process; the worker caches a type for 30 s, and no other worker test sends this one.
    type_cache_clear()


def push_of(message) -> Delivery:
    return Delivery.objects.get(message=message, channel="push")


def routed(message) -> bool:
    return Delivery.objects.filter(message=message, channel="push").exists()


def test_unread_it_escalates_to_push_on_the_release_tick(escalating, worker):
    user = UserFactory()
    DeviceFactory(user=user)
    message = notify(user, "social.new_follower", FOLLOWER)
    wait_until(lambda: routed(message), message="the worker to route it")
    assert Delivery.objects.get(message=message, channel="inapp").status == S.SENT
    due = push_of(message).next_attempt_at
    assert (push_of(message).status, push_of(message).reason) == (S.HELD, Reason.ESCALATION_WAIT)
    wait_until(lambda: timezone.now() >= due, message="the push step's time")
    release_held_task.apply_async(queue=MAINTENANCE_QUEUE)
    wait_until(lambda: push_of(message).status == S.SENT, message="the push to go out")
    assert SandboxSend.objects.get(message_id=message.pk, channel="push").at >= due


def test_read_in_time_it_does_not_escalate(escalating, worker):
    user = UserFactory()
    DeviceFactory(user=user)
    message = notify(user, "social.new_follower", FOLLOWER)
    wait_until(lambda: routed(message), message="the worker to route it")
    item = InboxItem.objects.get(message=message)
    inbox_mark_read(user_id=user.pk, item_id=item.pk)
    due = push_of(message).next_attempt_at
    wait_until(lambda: timezone.now() >= due + timedelta(milliseconds=50), message="its time")
    assert held_release_due().suppressed == 1  # beat's tick, here
    assert (push_of(message).status, push_of(message).reason) == (
        S.SUPPRESSED,
        Reason.ESCALATION_STOPPED,
    )
    assert not SandboxSend.objects.filter(message_id=message.pk).exists()
