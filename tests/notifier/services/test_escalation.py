"""Escalation when unread, on PostgreSQL: a type that escalates sends its first step at once and
holds each later one for its wait; a step whose time comes with nothing of the message read,
opened or clicked goes out (quiet hours, caps and preferences still apply), and one whose
message was seen is suppressed with the reason on the support timeline."""

from __future__ import annotations

from datetime import timedelta

import pytest
import time_machine
from django.core.exceptions import ValidationError
from django.utils import timezone

from notifier.api import notify, notify_cancel
from notifier.catalog import TypeSpec
from notifier.models import Delivery, DeliveryEvent, InboxItem, Message, NotificationType
from notifier.models.types import Kind, Priority
from notifier.selectors import type_cache_clear
from notifier.services.inbox import inbox_mark_read
from notifier.services.pipeline import messages_prepare
from notifier.services.release import held_release
from notifier.status import DeliveryStatus, Reason
from tests.factories import DeviceFactory, UserFactory, order_context

pytestmark = pytest.mark.django_db
S = DeliveryStatus
LADDER = [
    {"channel": "inapp", "after_s": 0},
    {"channel": "push", "after_s": 600},
    {"channel": "email", "after_s": 3600},
    {"channel": "sms", "after_s": 7200, "critical_only": True},
]


def escalating(steps: list[dict[str, object]] = LADDER, type_key: str = "order.shipped") -> None:
    NotificationType.objects.filter(pk=type_key).update(escalation=steps)
    type_cache_clear()


def rows(message: Message) -> dict[str, tuple[str, str]]:
    return {d.channel: (d.status, d.reason) for d in Delivery.objects.filter(message=message)}


@pytest.fixture
def reachable():
    user = UserFactory()
    DeviceFactory(user=user)
    return user


def test_the_first_step_goes_at_once_and_the_later_ones_wait_their_turn(published, reachable):
    escalating()
    started = timezone.now()
    message = notify(reachable, "order.shipped", order_context())
    messages_prepare(message_ids=[message.pk])
    assert rows(message) == {
        "inapp": (S.SENT, ""),
        "push": (S.HELD, Reason.ESCALATION_WAIT),
        "email": (S.HELD, Reason.ESCALATION_WAIT),
    }  # no SMS: that step is for critical messages only
    waits = {
        d.channel: d.next_attempt_at - started
        for d in Delivery.objects.filter(message=message, status=S.HELD)
    }
    assert timedelta(minutes=10) <= waits["push"] < timedelta(minutes=11)
    assert timedelta(hours=1) <= waits["email"] < timedelta(hours=1, minutes=1)


def test_unread_it_escalates_step_by_step(published, reachable):
    escalating()
    message = notify(reachable, "order.shipped", order_context())
    messages_prepare(message_ids=[message.pk])
    with time_machine.travel(timezone.now() + timedelta(minutes=9)):
        assert held_release().released == 0  # not yet
    with time_machine.travel(timezone.now() + timedelta(minutes=11)):
        assert held_release().released == 1
    assert rows(message)["push"] == (S.QUEUED, "")
    assert rows(message)["email"] == (S.HELD, Reason.ESCALATION_WAIT)
    with time_machine.travel(timezone.now() + timedelta(minutes=61)):
        assert held_release().released == 1
    assert rows(message)["email"][0] == S.QUEUED


def test_once_read_the_rest_is_not_sent_and_says_why(published, reachable):
    escalating()
    message = notify(reachable, "order.shipped", order_context())
    messages_prepare(message_ids=[message.pk])
    item = InboxItem.objects.get(message=message)
    inbox_mark_read(user_id=reachable.pk, item_id=item.pk)
    with time_machine.travel(timezone.now() + timedelta(hours=2)):
        report = held_release()
    assert (report.released, report.suppressed) == (0, 2)
    assert rows(message) == {
        "inapp": (S.READ, ""),
        "push": (S.SUPPRESSED, Reason.ESCALATION_STOPPED),
        "email": (S.SUPPRESSED, Reason.ESCALATION_STOPPED),
    }
    event = DeliveryEvent.objects.filter(
        delivery__message=message, delivery__channel="push", kind="released"
    ).get()
    assert (event.status, event.reason) == (S.SUPPRESSED, Reason.ESCALATION_STOPPED)


def test_read_after_the_first_escalation_stops_only_what_is_still_waiting(published, reachable):
    escalating()
    message = notify(reachable, "order.shipped", order_context())
    messages_prepare(message_ids=[message.pk])
    with time_machine.travel(timezone.now() + timedelta(minutes=11)):
        held_release()
    item = InboxItem.objects.get(message=message)
    inbox_mark_read(user_id=reachable.pk, item_id=item.pk)
    with time_machine.travel(timezone.now() + timedelta(minutes=61)):
        held_release()
    assert rows(message)["push"][0] == S.QUEUED
    assert rows(message)["email"] == (S.SUPPRESSED, Reason.ESCALATION_STOPPED)


def test_a_critical_message_takes_the_critical_only_step_too(published, reachable):
    escalating(type_key="payment.succeeded")
    message = notify(reachable, "payment.succeeded", {"amount": "¥88", "order_number": "A1"})
    messages_prepare(message_ids=[message.pk])
    assert rows(message)["sms"] == (S.HELD, Reason.ESCALATION_WAIT)


def test_channels_named_by_the_caller_go_at_once_without_escalating(published, reachable):
    escalating()
    message = notify(reachable, "order.shipped", order_context(), channels=["inapp", "email"])
    messages_prepare(message_ids=[message.pk])
    assert rows(message) == {"inapp": (S.SENT, ""), "email": (S.QUEUED, "")}


def test_the_product_reports_success_with_the_cancel_key_and_the_rest_is_cancelled(
    published, reachable
):
    escalating()
    message = notify(reachable, "order.shipped", order_context(), cancel_key="order:A1001")
    messages_prepare(message_ids=[message.pk])
    report = notify_cancel("order:A1001")
    assert (report.cancelled, report.too_late) == (2, 1)
    assert rows(message)["push"] == (S.CANCELLED, Reason.SENDER_CANCELLED)


def test_a_step_due_in_quiet_hours_waits_for_the_morning_and_still_stops_if_read(published):
    escalating(
        [{"channel": "inapp", "after_s": 0}, {"channel": "push", "after_s": 600}],
        type_key="social.new_follower",
    )
    user = UserFactory(time_zone="Etc/UTC", quiet_hours_enabled=True)
    DeviceFactory(user=user)
    evening = timezone.now().replace(hour=21, minute=45, second=0, microsecond=0)
    with time_machine.travel(evening):
        message = notify(
            user,
            "social.new_follower",
            {"follower_name": "Fan", "follower_url": "https://x.test/fan"},
        )
        messages_prepare(message_ids=[message.pk])
    assert rows(message)["push"] == (S.HELD, Reason.ESCALATION_WAIT)
    with time_machine.travel(evening + timedelta(minutes=30)):  # 22:15: quiet
        report = held_release()
    assert report.held_again == 1
    push = Delivery.objects.get(message=message, channel="push")
    assert (push.status, push.reason) == (S.HELD, Reason.ESCALATION_WAIT)  # still a step
    event = DeliveryEvent.objects.filter(delivery=push, kind="released").get()
    assert event.reason == Reason.QUIET_HOURS  # why it waits longer
    inbox_mark_read(user_id=user.pk, item_id=InboxItem.objects.get(message=message).pk)
    with time_machine.travel(push.next_attempt_at + timedelta(seconds=1)):  # the morning
        held_release()
    assert rows(message)["push"] == (S.SUPPRESSED, Reason.ESCALATION_STOPPED)


def test_a_scheduled_message_escalates_counting_from_its_send_time(published, reachable):
    escalating()
    send_at = timezone.now() + timedelta(hours=3)
    message = notify(reachable, "order.shipped", order_context(), send_at=send_at)
    messages_prepare(message_ids=[message.pk])
    due = {
        d.channel: (d.reason, d.next_attempt_at) for d in Delivery.objects.filter(message=message)
    }
    assert due["inapp"] == (Reason.SCHEDULED, send_at)
    assert due["push"] == (Reason.ESCALATION_WAIT, send_at + timedelta(minutes=10))
    assert due["email"] == (Reason.ESCALATION_WAIT, send_at + timedelta(hours=1))


@pytest.mark.parametrize(
    ("steps", "words"),
    [
        ([{"channel": "fax", "after_s": 0}], "not one of the type's channels"),
        ([{"channel": "inapp", "after_s": 5}], "step 1 goes at once"),
        (
            [{"channel": "inapp", "after_s": 0}, {"channel": "inapp", "after_s": 5}],
            "twice",
        ),
        (
            [
                {"channel": "inapp", "after_s": 0},
                {"channel": "push", "after_s": 600},
                {"channel": "email", "after_s": 60},
            ],
            "before the step before it",
        ),
        ([{"channel": "inapp", "after_s": "0"}], "whole seconds"),
        ({"channel": "inapp"}, "a list of at most 8 steps"),
    ],
)
def test_an_escalation_that_cannot_work_is_refused_in_the_admin_and_the_catalog(steps, words):
    kind = NotificationType(
        key="ops.page", name="Page", kind=Kind.SERVICE, channels=["inapp", "push", "email"]
    )
    kind.escalation = steps
    with pytest.raises(ValidationError, match=words):
        kind.full_clean()
    if isinstance(steps, list) and all(isinstance(s.get("after_s"), int) for s in steps):
        with pytest.raises(ValueError, match=words):
            TypeSpec(
                "ops.page",
                "Page",
                Kind.SERVICE,
                Priority.HIGH,
                ("inapp", "push", "email"),
                escalation=tuple((s["channel"], timedelta(seconds=s["after_s"])) for s in steps),
            )
