"""Per-key throttle, on PostgreSQL: a type that allows at most N per recipient and throttle key
in a window lets N through and suppresses the rest with the reason, counts a sliding window,
and never lets two prepare runs at once both take the last slot."""

from __future__ import annotations

import threading
from collections import Counter
from datetime import timedelta

import pytest
import time_machine
from django.core.exceptions import ValidationError
from django.db import connection, transaction
from django.utils import timezone

from notifier.api import notify, notify_cancel, notify_many
from notifier.catalog import TypeSpec
from notifier.errors import InvalidThrottleKey
from notifier.models import Delivery, Message, NotificationType, ThrottleSlot
from notifier.models.types import Kind, Priority
from notifier.policies.throttle import throttle_admits
from notifier.selectors import type_cache_clear
from notifier.services.pipeline import messages_prepare
from notifier.services.release import held_release
from notifier.services.throttles import throttles_take
from notifier.status import DeliveryStatus, Reason
from tests.factories import UserFactory, order_context

pytestmark = pytest.mark.django_db
S = DeliveryStatus
DAY = 86400


def throttle(type_key: str = "order.shipped", limit: int = 1, window_s: int = DAY) -> None:
    NotificationType.objects.filter(pk=type_key).update(
        throttle_limit=limit, throttle_window_s=window_s
    )
    type_cache_clear()


def shipped(user, **kwargs) -> Message:
    return notify(user, "order.shipped", order_context(), channels=["inapp", "email"], **kwargs)


def outcome(message: Message) -> set[tuple[str, str]]:
    return set(Delivery.objects.filter(message=message).values_list("status", "reason"))


def test_the_second_of_a_key_in_the_window_is_suppressed_with_the_reason(published):
    throttle(limit=1)
    user = UserFactory()
    first = shipped(user, throttle_key="product:42")
    second = shipped(user, throttle_key="product:42")
    other_key = shipped(user, throttle_key="product:43")
    messages_prepare(message_ids=[first.pk])
    messages_prepare(message_ids=[second.pk, other_key.pk])
    assert S.SUPPRESSED not in {status for status, _ in outcome(first)}
    assert outcome(second) == {(S.SUPPRESSED, Reason.THROTTLED)}
    assert S.SUPPRESSED not in {status for status, _ in outcome(other_key)}
    assert ThrottleSlot.objects.filter(key="product:42").count() == 1


def test_another_recipient_or_a_type_without_a_throttle_is_not_held_back(published):
    throttle(limit=1)
    ann, bob = UserFactory(), UserFactory()
    ids = [shipped(ann, throttle_key="k").pk, shipped(bob, throttle_key="k").pk]
    ids.append(
        notify(
            ann,
            "subscription.renewal_reminder",
            {"plan": "Pro", "renews_on": "1 June"},
            channels=["inapp"],
            throttle_key="k",
        ).pk
    )
    messages_prepare(message_ids=ids)
    assert not Delivery.objects.filter(reason=Reason.THROTTLED).exists()


def test_without_a_key_the_type_itself_is_throttled(published):
    throttle(limit=2)
    user = UserFactory()
    result = notify_many([user], "order.shipped", order_context(), channels=["inapp"])
    ids = [result.message_ids[0], shipped(user).pk, shipped(user).pk]
    messages_prepare(message_ids=ids)
    reasons = Counter(Delivery.objects.filter(channel="inapp").values_list("reason", flat=True))
    assert reasons[Reason.THROTTLED] == 1


def test_the_window_slides_and_old_slots_are_pruned(published):
    throttle(limit=1, window_s=3600)
    user = UserFactory()
    first = shipped(user, throttle_key="k")
    messages_prepare(message_ids=[first.pk])
    with time_machine.travel(timezone.now() + timedelta(minutes=59)):
        early = shipped(user, throttle_key="k")
        messages_prepare(message_ids=[early.pk])
    assert outcome(early) == {(S.SUPPRESSED, Reason.THROTTLED)}
    with time_machine.travel(timezone.now() + timedelta(minutes=61)):
        later = shipped(user, throttle_key="k")
        messages_prepare(message_ids=[later.pk])
    assert S.SUPPRESSED not in {status for status, _ in outcome(later)}
    assert list(ThrottleSlot.objects.values_list("message_id", flat=True)) == [later.pk]


def test_a_scheduled_message_takes_its_slot_when_it_goes(published):
    throttle(limit=1)
    user = UserFactory()
    send_at = timezone.now() + timedelta(hours=2)
    scheduled = shipped(user, throttle_key="k", send_at=send_at)
    messages_prepare(message_ids=[scheduled.pk])
    assert not ThrottleSlot.objects.exists()  # not yet: it has not gone
    now = shipped(user, throttle_key="k")
    messages_prepare(message_ids=[now.pk])
    assert S.SUPPRESSED not in {status for status, _ in outcome(now)}
    with time_machine.travel(send_at + timedelta(seconds=1)):
        held_release()  # inside the window of the one sent now: throttled at its time
    assert outcome(scheduled) == {(S.SUPPRESSED, Reason.THROTTLED)}
    assert list(ThrottleSlot.objects.values_list("message_id", flat=True)) == [now.pk]


def test_a_message_held_for_quiet_hours_keeps_the_slot_it_took(published):
    throttle("social.new_follower", limit=1)
    user = UserFactory(time_zone="Etc/UTC", quiet_hours_enabled=True)
    night = timezone.now().replace(hour=23, minute=0, second=0, microsecond=0)
    follower = {"follower_name": "Fan", "follower_url": "https://x.test/fan"}
    with time_machine.travel(night):
        held = notify(user, "social.new_follower", follower, throttle_key="k")
        messages_prepare(message_ids=[held.pk])
        second = notify(user, "social.new_follower", follower, throttle_key="k")
        messages_prepare(message_ids=[second.pk])
    assert {status for status, _ in outcome(held)} == {S.HELD}
    assert outcome(second) == {(S.SUPPRESSED, Reason.THROTTLED)}
    with time_machine.travel(night + timedelta(hours=10)):  # the morning
        held_release()
    assert {status for status, _ in outcome(held)} == {S.QUEUED}  # its own slot, not twice
    assert ThrottleSlot.objects.count() == 1


def test_a_cancelled_message_gives_its_slot_back(published):
    throttle(limit=1)
    user = UserFactory()
    first = notify(
        user, "order.shipped", order_context(), channels=["email"], throttle_key="k", cancel_key="c"
    )
    messages_prepare(message_ids=[first.pk])  # queued: not out yet
    assert notify_cancel("c").cancelled == 1
    assert not ThrottleSlot.objects.exists()
    again = shipped(user, throttle_key="k")
    messages_prepare(message_ids=[again.pk])
    assert S.SUPPRESSED not in {status for status, _ in outcome(again)}


def test_a_route_that_rolls_back_gives_its_slot_back():
    throttle(limit=1)
    message = shipped(UserFactory(), throttle_key="k")

    def route_that_dies() -> None:
        with transaction.atomic():
            assert throttles_take([message], timezone.now()) == set()
            raise RuntimeError("the routing transaction dies")

    with pytest.raises(RuntimeError):
        route_that_dies()
    assert not ThrottleSlot.objects.exists()
    assert throttles_take([message], timezone.now()) == set()


def test_within_one_batch_the_higher_priority_wins_the_last_slot(published):
    throttle("promo.flash_sale", limit=1)
    throttle("order.shipped", limit=1)
    user = UserFactory()
    low = shipped(user, throttle_key="k")
    Message.objects.filter(pk=low.pk).update(priority=Priority.LOW)
    high = shipped(user, throttle_key="k")
    messages_prepare(message_ids=[low.pk, high.pk])
    assert outcome(low) == {(S.SUPPRESSED, Reason.THROTTLED)}
    assert S.SUPPRESSED not in {status for status, _ in outcome(high)}


@pytest.mark.django_db(transaction=True)
def test_two_prepare_runs_at_once_never_both_take_the_last_slot(published):
    throttle(limit=3)
    user = UserFactory()
    ids = [shipped(user, throttle_key="flash").pk for _ in range(12)]
    start = threading.Barrier(2)

    def run(batch: list[int]) -> None:
        try:
            start.wait()
            messages_prepare(message_ids=batch)
        finally:
            connection.close()

    threads = [threading.Thread(target=run, args=(ids[i::2],)) for i in range(2)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=60)
    through = Message.objects.exclude(deliveries__reason=Reason.THROTTLED).count()
    assert through == 3
    assert ThrottleSlot.objects.count() == 3


@pytest.mark.parametrize("key", ["", 7, "x" * 256])
def test_a_throttle_key_that_is_not_plain_text_is_refused(key):
    with pytest.raises(InvalidThrottleKey):
        shipped(UserFactory(), throttle_key=key)
    assert not Message.objects.exists()


def test_a_throttle_needs_both_its_limit_and_its_window():
    kind = NotificationType(key="ops.alert", name="Alert", kind=Kind.SERVICE, channels=["inapp"])
    kind.throttle_limit = 1
    with pytest.raises(ValidationError, match="both its limit and its window"):
        kind.full_clean()
    with pytest.raises(ValueError, match="limit and its window"):
        TypeSpec("ops.alert", "Alert", Kind.SERVICE, Priority.LOW, ("inapp",), throttle_limit=1)


def test_the_policy_admits_in_order_while_there_is_room():
    wanted = ["a", "a", "b", "a"]
    assert throttle_admits(wanted, {"a": 1}, {"a": 2, "b": 1}) == [True, False, True, False]
