"""A fallback survives the worker that should have started it: the re-queue job finds failures
whose message still has channels to try and no fallback yet, and hands them over, once."""

from __future__ import annotations

from datetime import timedelta

import pytest
from django.utils import timezone

from notifier.api import notify
from notifier.models import Delivery, Message, RoutingRule
from notifier.services import deliveries
from notifier.services.callbacks import ProviderStatus, delivery_status_callback
from notifier.services.deliveries import deliveries_deliver, requeue_stuck_work
from notifier.services.pipeline import FALLBACK_GRACE, deliveries_fall_back, messages_prepare
from notifier.status import DeliveryStatus, Reason
from tests.factories import DeviceFactory, UserFactory
from tests.notifier.services.test_webhooks import at_once

pytestmark = pytest.mark.django_db
S = DeliveryStatus
RENEWAL = {"plan": "Pro", "renews_on": "1 December"}


class WorkerDied(BaseException):
    """The process stopped right after committing the failure (a SIGKILL, a lost machine)."""


def push_that_will_fail() -> tuple[Message, Delivery]:
    """A renewal reminder routed to push (email next in its chain) whose device is then gone."""
    user = UserFactory(email="renew@example.com")
    DeviceFactory(user=user)
    message = notify(user, "subscription.renewal_reminder", RENEWAL)
    messages_prepare(message_ids=[message.pk])
    push = Delivery.objects.get(message=message, channel="push")
    assert push.status == S.QUEUED
    user.devices.update(active=False)
    return message, push


def die_before_falling_back(monkeypatch, push: Delivery) -> None:
    def died(**_: object) -> list[int]:
        raise WorkerDied

    with monkeypatch.context() as patched:
        patched.setattr(deliveries, "deliveries_fall_back", died)
        with pytest.raises(WorkerDied):
            deliveries_deliver(delivery_ids=[push.pk])
    push.refresh_from_db()
    assert push.status == S.FAILED


def test_the_requeue_job_starts_a_fallback_whose_worker_died_and_only_once(
    published, monkeypatch, django_capture_on_commit_callbacks
):
    message, push = push_that_will_fail()
    die_before_falling_back(monkeypatch, push)
    assert not Delivery.objects.filter(message=message, channel="email").exists()

    # Within the grace the sender may still be handing over: the job leaves it alone.
    assert requeue_stuck_work(now=timezone.now()).fallbacks == 0

    later = timezone.now() + FALLBACK_GRACE + timedelta(seconds=1)
    with django_capture_on_commit_callbacks(execute=True):
        report = requeue_stuck_work(now=later)
    assert report.fallbacks == 1
    email = Delivery.objects.get(message=message, channel="email")
    assert (email.status, email.fallback_of_id) == (S.QUEUED, push.pk)
    assert email.pk in published.delivered_ids()

    # The next runs, and the sender's own hand-over arriving late, change nothing.
    assert requeue_stuck_work(now=later + timedelta(minutes=1)).fallbacks == 0
    assert deliveries_fall_back(failed_ids=[push.pk]) == []
    assert Delivery.objects.filter(message=message).count() == 3  # inapp, push, email


def test_a_fallback_run_twice_goes_one_step_down_the_chain_not_two(published):
    RoutingRule.objects.create(
        name="push, then email, then in-app",
        type_id="subscription.renewal_reminder",
        send_all=[],
        fallback_chain=["push", "email", "inapp"],
    )
    message, push = push_that_will_fail()
    assert Message.objects.get(pk=message.pk).fallback_chain == ["email", "inapp"]
    deliveries_deliver(delivery_ids=[push.pk])  # fails for good and hands over to email
    assert set(Delivery.objects.filter(message=message).values_list("channel", flat=True)) == {
        "push",
        "email",
    }

    assert deliveries_fall_back(failed_ids=[push.pk]) == []  # e.g. the re-queue job, racing
    assert requeue_stuck_work(now=timezone.now() + timedelta(minutes=1)).fallbacks == 0
    assert set(Delivery.objects.filter(message=message).values_list("channel", flat=True)) == {
        "push",
        "email",
    }


def test_a_bounce_reported_later_is_not_handed_over_by_the_requeue_job(published):
    """The job recovers what the sender would have done, nothing more: a delivery the provider
    accepted and later bounced keeps its place (callbacks do not start fallbacks)."""
    message, push = push_that_will_fail()
    Delivery.objects.filter(pk=push.pk).update(
        status=S.SENT, sent_at=timezone.now(), attempts=1, provider="push", provider_message_id="p1"
    )
    delivery_status_callback(
        provider="push",
        provider_message_id="p1",
        status=ProviderStatus.REJECTED,
        failure_reason=Reason.UNDELIVERED,
    )
    push.refresh_from_db()
    assert push.status == S.FAILED
    assert requeue_stuck_work(now=timezone.now() + timedelta(minutes=1)).fallbacks == 0
    assert not Delivery.objects.filter(message=message, channel="email").exists()


@pytest.mark.django_db(transaction=True)
def test_the_sender_and_the_requeue_job_handing_over_at_once_hand_over_once(published, monkeypatch):
    RoutingRule.objects.create(
        name="push, then email, then in-app",
        type_id="subscription.renewal_reminder",
        send_all=[],
        fallback_chain=["push", "email", "inapp"],
    )
    message, push = push_that_will_fail()
    die_before_falling_back(monkeypatch, push)

    handed_over = at_once(lambda: deliveries_fall_back(failed_ids=[push.pk]))

    assert sum(len(ids) for ids in handed_over) == 1
    assert set(Delivery.objects.filter(message=message).values_list("channel", flat=True)) == {
        "push",
        "email",
    }
    assert Message.objects.get(pk=message.pk).fallback_chain == ["inapp"]
