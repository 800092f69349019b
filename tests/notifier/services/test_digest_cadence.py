"""Digests at each person's cadence, on PostgreSQL: a type that honours it collects a person's
messages until their hourly, daily or weekly due time (on their own clock, stored on the
digest), sends each as it comes for "immediately", uses the type's window for those who chose
nothing; never digests transactional or critical messages; and a throttle that folds collects
what is over its limit into the digest of its key, with the reason for support."""

from __future__ import annotations

import threading
from datetime import UTC, datetime, time, timedelta

import pytest
import time_machine
from django.core.exceptions import ValidationError
from django.db import connection
from django.urls import reverse

from notifier.api import notify
from notifier.models import Delivery, Digest, DigestCadence, Message, NotificationType
from notifier.selectors import type_cache_clear
from notifier.services.cadences import (
    CadenceError,
    digest_cadence_clear,
    digest_cadence_set,
    digest_cadences_of,
)
from notifier.services.digests import digests_flush
from notifier.services.release import held_release
from notifier.status import DeliveryStatus, Reason
from tests.factories import DeviceFactory, UserFactory, daytime_zone
from tests.notifier.services.test_digests import comment, prepared

pytestmark = pytest.mark.django_db
S = DeliveryStatus
# A Monday, 10:17 UTC: 18:17 in Shanghai, outside the default quiet hours (22:00-08:00).
MONDAY = datetime(2026, 1, 5, 10, 17, tzinfo=UTC)


def shanghai_user():
    return UserFactory(time_zone="Asia/Shanghai")


def test_hourly_collects_until_the_next_whole_local_hour(published):
    user = shanghai_user()
    digest_cadence_set(user_id=user.pk, scope="", cadence="hourly")
    with time_machine.travel(MONDAY, tick=False):
        assert prepared(comment(user, "Ana")) == {"sent": 1}  # the type's first goes at once
        assert prepared(comment(user, "Ben"), comment(user, "Cy")) == {"collected": 2}
    digest = Digest.objects.get()
    assert digest.due_at == datetime(2026, 1, 5, 11, 0, tzinfo=UTC)
    assert digests_flush(now=digest.due_at - timedelta(seconds=1)).sent == 0
    assert digests_flush(now=digest.due_at).sent == 1


def test_daily_is_due_at_the_chosen_local_time(published):
    user = shanghai_user()
    digest_cadence_set(user_id=user.pk, scope="", cadence="daily", at="09:00")
    with time_machine.travel(MONDAY, tick=False):
        prepared(comment(user, "Ana"), comment(user, "Ben"))
    # 09:00 on Tuesday in Shanghai is 01:00 UTC.
    assert Digest.objects.get().due_at == datetime(2026, 1, 6, 1, 0, tzinfo=UTC)


def test_weekly_is_due_on_the_chosen_weekday(published):
    user = shanghai_user()
    digest_cadence_set(
        user_id=user.pk, scope="social.new_comment", cadence="weekly", at="08:30", weekday="friday"
    )
    with time_machine.travel(MONDAY, tick=False):
        prepared(comment(user, "Ana"), comment(user, "Ben"))
    assert Digest.objects.get().due_at == datetime(2026, 1, 9, 0, 30, tzinfo=UTC)


def test_immediately_sends_each_as_it_comes(published):
    user = shanghai_user()
    digest_cadence_set(user_id=user.pk, scope="", cadence="immediately")
    with time_machine.travel(MONDAY, tick=False):  # in Shanghai's day: not held for the night
        assert prepared(comment(user, "Ana"), comment(user, "Ben")) == {"sent": 2}
    assert not Digest.objects.exists()


def test_a_choice_for_the_type_wins_over_the_one_for_all(published):
    user = shanghai_user()
    digest_cadence_set(user_id=user.pk, scope="", cadence="immediately")
    digest_cadence_set(user_id=user.pk, scope="social.new_comment", cadence="hourly")
    with time_machine.travel(MONDAY, tick=False):
        assert prepared(comment(user, "Ana"), comment(user, "Ben")) == {"sent": 1, "collected": 1}
    assert Digest.objects.get().due_at == datetime(2026, 1, 5, 11, 0, tzinfo=UTC)
    assert [s.scope for s in digest_cadences_of(user_id=user.pk)] == ["", "social.new_comment"]
    assert digest_cadence_clear(user_id=user.pk, scope="social.new_comment")
    assert not digest_cadence_clear(user_id=user.pk, scope="social.new_comment")


def test_no_choice_is_the_types_own_window(published):
    user = shanghai_user()
    with time_machine.travel(MONDAY, tick=False):
        prepared(comment(user, "Ana"), comment(user, "Ben"))
    assert Digest.objects.get().due_at == MONDAY + timedelta(minutes=10)


def test_a_type_that_does_not_honour_cadences_keeps_its_window(published):
    NotificationType.objects.filter(pk="social.new_comment").update(digest_cadence=False)
    type_cache_clear()
    user = shanghai_user()
    DigestCadence.objects.create(user=user, scope="", cadence="daily", at=time(9, 0))
    with time_machine.travel(MONDAY, tick=False):
        prepared(comment(user, "Ana"), comment(user, "Ben"))
    assert Digest.objects.get().due_at == MONDAY + timedelta(minutes=10)


def test_a_critical_message_of_a_digest_type_is_never_collected(published):
    user = shanghai_user()
    digest_cadence_set(user_id=user.pk, scope="", cadence="daily")
    prepared(comment(user, "Ana"))
    urgent = comment(user, "Ben")
    Message.objects.filter(pk=urgent.pk).update(priority="critical")
    assert prepared(Message.objects.get(pk=urgent.pk)) == {"sent": 1}


@pytest.mark.parametrize(
    ("scope", "cadence", "at", "weekday", "words"),
    [
        ("", "fortnightly", None, None, "cadence is one of"),
        ("", "daily", "9am", None, "at is a local time"),
        ("", "weekly", "09:00", "funday", "weekday is one of"),
        ("order.shipped", "daily", None, None, "does not come as a digest"),
        ("no.such", "daily", None, None, "no notification type"),
        ("", "weekly", "09:00", "\u00b2", "weekday is one of"),  # a digit, but no weekday
        ("", "weekly", "09:00", "7", "weekday is one of"),
        ("social.new_comment" + "x" * 150, "daily", None, None, "at most 100 characters"),
    ],
)
def test_a_bad_cadence_says_what_to_fix_and_writes_nothing(scope, cadence, at, weekday, words):
    user = UserFactory()
    with pytest.raises(CadenceError, match=words):
        digest_cadence_set(user_id=user.pk, scope=scope, cadence=cadence, at=at, weekday=weekday)
    assert not DigestCadence.objects.exists()


def test_a_transactional_or_critical_type_cannot_digest():
    kind = NotificationType.objects.get(pk="order.shipped")
    kind.digest_cadence = True
    kind.kind, kind.priority = "transactional", "normal"
    with pytest.raises(ValidationError, match="never digested"):
        kind.clean()


# --- A throttle that folds its overflow into a digest ---------------------------------------


def folding(limit: int = 1, window_s: int = 3600) -> None:
    NotificationType.objects.filter(pk="social.new_follower").update(
        throttle_limit=limit, throttle_window_s=window_s, throttle_over="digest"
    )
    type_cache_clear()


def followed(user, key="follows:today") -> Message:
    context = {"follower_name": "Ana", "follower_url": "https://x.test/ana"}
    return notify(user, "social.new_follower", context, channels=["inapp"], throttle_key=key)


def test_over_the_throttle_a_folding_type_collects_into_the_digest_of_the_key(
    published, admin_client
):
    folding(limit=1)
    user = UserFactory(time_zone=daytime_zone(MONDAY))  # in their afternoon on MONDAY
    with time_machine.travel(MONDAY, tick=False):
        first = followed(user)
        assert prepared(first) == {"sent": 1}
        over = [followed(user), followed(user)]
        assert prepared(*over) == {"collected": 2}
        assert prepared(followed(user, key="follows:other")) == {"sent": 1}  # its own key
    assert not Delivery.objects.filter(message__in=over).exists()
    digest = Digest.objects.get()
    assert (digest.key, digest.count) == ("follows:today", 2)
    assert digest.due_at == MONDAY + timedelta(hours=1)  # the throttle's window
    assert all(Message.objects.get(pk=m.pk).throttled_into_digest for m in over)
    page = admin_client.get(reverse("admin:notifier_user_customer", args=[user.pk]))
    assert f"Over its throttle (key full), folded into digest #{digest.pk}" in page.content.decode()
    assert digests_flush(now=digest.due_at).sent == 1
    digest.refresh_from_db()
    assert digest.message is not None and digest.message.context["digest"]["count"] == 2
    with time_machine.travel(digest.due_at, tick=False):  # the digest itself is not throttled
        assert prepared(digest.message) == {"sent": 1}


def test_a_dropping_throttle_still_suppresses_with_the_reason(published):
    folding(limit=1)
    NotificationType.objects.filter(pk="social.new_follower").update(throttle_over="drop")
    type_cache_clear()
    user = UserFactory()
    prepared(followed(user))
    second = followed(user)
    prepared(second)
    assert set(Delivery.objects.filter(message=second).values_list("status", "reason")) == {
        (S.SUPPRESSED, Reason.THROTTLED)
    }
    assert not Digest.objects.exists()


def test_folding_needs_a_throttle():
    kind = NotificationType.objects.get(pk="social.new_follower")
    kind.throttle_over = "digest"
    kind.throttle_limit = kind.throttle_window_s = None
    with pytest.raises(ValidationError, match="needs a throttle"):
        kind.clean()


@pytest.mark.django_db(transaction=True)
def test_two_prepare_runs_over_the_throttle_at_once_fold_into_one_digest(published):
    folding(limit=1)
    user = UserFactory()
    prepared(followed(user))  # takes the one slot
    over = [followed(user), followed(user)]
    start = threading.Barrier(2)
    results: list[dict[str, int]] = []

    def run(message: Message) -> None:
        try:
            start.wait()
            results.append(prepared(message))
        finally:
            connection.close()

    threads = [threading.Thread(target=run, args=(m,)) for m in over]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=60)
    assert results == [{"collected": 1}, {"collected": 1}]
    digest = Digest.objects.get()
    assert (digest.state, digest.count) == ("open", 2)
    assert set(Message.objects.filter(digest=digest).values_list("pk", flat=True)) == {
        m.pk for m in over
    }


def test_a_scheduled_message_released_over_a_folding_throttle_joins_the_digest(
    published, admin_client
):
    """Scheduled, it takes its throttle slot when it goes; the key is full by then, and the type
    folds: it goes into the key's digest rather than being dropped, its held deliveries not
    sent on their own."""
    folding(limit=1)
    user = UserFactory(time_zone=daytime_zone(MONDAY))  # in their afternoon on MONDAY
    context = {"follower_name": "Ben", "follower_url": "https://x.test/ben"}
    with time_machine.travel(MONDAY, tick=False):
        scheduled = notify(
            user,
            "social.new_follower",
            context,
            channels=["inapp"],
            throttle_key="follows:today",
            send_at=MONDAY + timedelta(minutes=30),
        )
        assert prepared(scheduled) == {"held": 1}
        assert prepared(followed(user)) == {"sent": 1}  # takes the key's one slot
    with time_machine.travel(MONDAY + timedelta(minutes=31), tick=False):
        report = held_release()
    assert (report.released, report.suppressed) == (0, 1)
    digest = Digest.objects.get()
    assert (digest.key, digest.count) == ("follows:today", 1)
    scheduled.refresh_from_db()
    assert scheduled.digest_id == digest.pk and scheduled.throttled_into_digest
    assert set(Delivery.objects.filter(message=scheduled).values_list("status", "reason")) == {
        (S.SUPPRESSED, Reason.THROTTLED)
    }
    page = admin_client.get(reverse("admin:notifier_user_customer", args=[user.pk]))
    assert f"Over its throttle (key full), folded into digest #{digest.pk}" in page.content.decode()
    assert digests_flush(now=digest.due_at).sent == 1
    digest.refresh_from_db()
    assert digest.message is not None and digest.message.context["digest"]["count"] == 1


def test_a_folded_scheduled_messages_later_escalation_step_is_not_sent_alone(published):
    """Folded at its release, the message goes with the digest: its escalation's later step
    (push, ten minutes on) is suppressed with it, not sent alone when its time comes."""
    folding(limit=1)
    NotificationType.objects.filter(pk="social.new_follower").update(
        escalation=[{"channel": "inapp", "after_s": 0}, {"channel": "push", "after_s": 600}]
    )
    type_cache_clear()
    user = UserFactory(time_zone=daytime_zone(MONDAY))  # in their afternoon on MONDAY
    DeviceFactory(user=user)
    context = {"follower_name": "Ben", "follower_url": "https://x.test/ben"}
    with time_machine.travel(MONDAY, tick=False):
        scheduled = notify(
            user,
            "social.new_follower",
            context,
            throttle_key="follows:today",
            send_at=MONDAY + timedelta(minutes=30),
        )
        prepared(scheduled)
        assert prepared(followed(user)) == {"sent": 1}  # takes the key's one slot
    with time_machine.travel(MONDAY + timedelta(minutes=31), tick=False):
        assert held_release().suppressed == 2
    assert set(Delivery.objects.filter(message=scheduled).values_list("channel", "status")) == {
        ("inapp", S.SUPPRESSED),
        ("push", S.SUPPRESSED),
    }
    with time_machine.travel(MONDAY + timedelta(minutes=45), tick=False):
        assert held_release().released == 0
    assert Message.objects.get(pk=scheduled.pk).digest_id == Digest.objects.get().pk
