"""Scheduled sends and cancelling by key, in process on PostgreSQL: `send_at` and
`send_at_local` hold a message until its time (the release job lets it go), a time already
past is refused or sent at once as the caller said, and `notify_cancel` takes back what has
not gone out, with the reason on the timeline."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from unittest import mock
from zoneinfo import ZoneInfo

import pytest
import time_machine
from django.utils import timezone

from notifier import dispatch
from notifier.api import notify, notify_cancel, notify_many, same_call
from notifier.errors import InvalidCancelKey, InvalidSchedule
from notifier.models import Delivery, DeliveryEvent, EventKind, InboxItem, Message
from notifier.services.deliveries import deliveries_deliver
from notifier.services.pipeline import messages_prepare
from notifier.services.release import (
    held_release,
    held_release_due,
    held_wakeups,
    held_wakeups_publish,
)
from notifier.status import DeliveryStatus, Reason
from tests.factories import UserFactory, order_context

pytestmark = pytest.mark.django_db
S = DeliveryStatus


def wall_clock(text: str) -> datetime:
    """A naive datetime: a time of day as a clock on the wall shows it, in no zone."""
    return datetime.fromisoformat(text)


def statuses(message: Message) -> dict[str, str]:
    return dict(Delivery.objects.filter(message=message).values_list("channel", "status"))


def shipped(user, **kwargs) -> Message:
    return notify(user, "order.shipped", order_context(), channels=["inapp", "email"], **kwargs)


# --- Holding until the send time -------------------------------------------------------------


def test_a_message_sent_for_later_is_held_until_then_and_released_at_its_time(
    published, django_capture_on_commit_callbacks
):
    send_at = timezone.now().replace(microsecond=0) + timedelta(hours=2)
    message = shipped(UserFactory(), send_at=send_at)
    assert Message.objects.get(pk=message.pk).not_before == send_at
    messages_prepare(message_ids=[message.pk])
    rows = Delivery.objects.filter(message=message)
    assert {(d.channel, d.status, d.reason, d.next_attempt_at) for d in rows} == {
        ("inapp", S.HELD, Reason.SCHEDULED, send_at),
        ("email", S.HELD, Reason.SCHEDULED, send_at),
    }
    assert not InboxItem.objects.exists()  # the in-app copy waits too
    assert held_release(now=send_at - timedelta(seconds=1)).released == 0
    assert statuses(message) == {"inapp": S.HELD, "email": S.HELD}
    with (
        time_machine.travel(send_at + timedelta(seconds=1)),
        django_capture_on_commit_callbacks(execute=True),
    ):
        report = held_release()
    assert report.released == 2
    assert statuses(message) == {"inapp": S.QUEUED, "email": S.QUEUED}
    assert sorted(published.delivered_ids()) == sorted(d.pk for d in rows)


# The local times below are in 2027: the tests that schedule them run at this moment.
BEFORE_2027_SPRING = datetime(2027, 1, 4, 12, 0, tzinfo=UTC)


def test_send_at_local_is_each_recipients_own_wall_clock_time():
    shanghai = UserFactory(time_zone="Asia/Shanghai")
    lisbon = UserFactory(time_zone="Europe/Lisbon")
    nine = wall_clock("2027-06-01T09:00")  #: nine in the morning wherever each one lives
    with time_machine.travel(BEFORE_2027_SPRING):  # ahead of the moments, whenever this runs
        result = notify_many(
            [shanghai, lisbon], "order.shipped", order_context(), send_at_local=nine
        )
    by_user = dict(
        Message.objects.filter(pk__in=result.message_ids).values_list("user_id", "not_before")
    )
    assert by_user == {
        shanghai.pk: datetime(2027, 6, 1, 1, 0, tzinfo=UTC),  # UTC+8
        lisbon.pk: datetime(2027, 6, 1, 8, 0, tzinfo=UTC),  # UTC+1 in summer
    }


def test_a_wall_clock_time_skipped_by_daylight_saving_falls_the_gap_later():
    user = UserFactory(time_zone="America/New_York")
    # 14 March 2027, 02:00 EST jumps to 03:00 EDT: 02:30 never happens that night.
    with time_machine.travel(BEFORE_2027_SPRING):
        message = shipped(user, send_at_local=wall_clock("2027-03-14T02:30"))
    moment = Message.objects.get(pk=message.pk).not_before
    assert moment == datetime(2027, 3, 14, 7, 30, tzinfo=UTC)
    assert moment.astimezone(ZoneInfo("America/New_York")).strftime("%H:%M") == "03:30"


def test_scheduled_marketing_goes_stale_counting_from_its_send_time_not_its_writing(published):
    user = UserFactory()
    send_at = timezone.now() + timedelta(days=5)  # further off than the 72 h marketing TTL
    sale = {
        "sale_name": "Double 11",
        "starts_at": "tonight",
        "headline": "Up to 50% off",
        "sale_url": "https://shop.example.com/sale",
    }
    message = notify(user, "promo.flash_sale", sale, channels=["inapp"], send_at=send_at)
    messages_prepare(message_ids=[message.pk])
    assert statuses(message) == {"inapp": S.HELD}
    with time_machine.travel(send_at + timedelta(minutes=1)):
        held_release()
    assert statuses(message) == {"inapp": S.QUEUED}


# --- Times refused, and the explicit "send it now" -------------------------------------------


def test_a_time_already_past_is_refused_and_nothing_is_written():
    user = UserFactory()
    with pytest.raises(InvalidSchedule, match=r"already passed.*send_now"):
        shipped(user, send_at=timezone.now() - timedelta(hours=1))
    assert not Message.objects.exists()


def test_a_time_past_with_send_now_goes_out_at_once_and_keeps_the_time_asked_for(published):
    asked = timezone.now() - timedelta(hours=1)
    message = shipped(UserFactory(), send_at=asked, if_past="send_now")
    assert Message.objects.get(pk=message.pk).not_before == asked
    messages_prepare(message_ids=[message.pk])
    assert statuses(message) == {"inapp": S.SENT, "email": S.QUEUED}


def test_a_send_time_a_few_seconds_past_is_clock_skew_and_goes_out(published):
    message = shipped(UserFactory(), send_at=timezone.now() - timedelta(seconds=20))
    messages_prepare(message_ids=[message.pk])
    assert statuses(message) == {"inapp": S.SENT, "email": S.QUEUED}


def test_a_bulk_call_whose_local_time_has_passed_for_one_user_is_refused_whole():
    now = datetime.now(UTC)
    # Two hours from now in UTC is already past where the clock is 12 hours ahead.
    local = (now + timedelta(hours=2)).replace(tzinfo=None, microsecond=0)
    behind, ahead = UserFactory(time_zone="Etc/UTC"), UserFactory(time_zone="Etc/GMT-12")
    with pytest.raises(InvalidSchedule, match=f"time zone of user {ahead.pk}"):
        notify_many([behind, ahead], "order.shipped", order_context(), send_at_local=local)
    assert not Message.objects.exists()
    result = notify_many(
        [behind, ahead], "order.shipped", order_context(), send_at_local=local, if_past="send_now"
    )
    assert result.created == 2


@pytest.mark.parametrize(
    ("kwargs", "words"),
    [
        ({"send_at": wall_clock("2030-01-01T09:00")}, "no UTC offset"),
        ({"send_at": "2030-01-01T09:00:00+08:00"}, "timezone-aware datetime"),
        ({"send_at_local": datetime(2030, 1, 1, 9, 0, tzinfo=UTC)}, "without a time zone"),
        ({"send_at_local": "09:00"}, "without a time zone"),
        (
            {
                "send_at": datetime(2030, 1, 1, tzinfo=UTC),
                "send_at_local": wall_clock("2030-01-01T00:00"),
            },
            "not both",
        ),
        ({"send_at": datetime(2040, 1, 1, tzinfo=UTC)}, "ten years"),
        ({"send_at_local": wall_clock("0001-01-01T00:00")}, "days from now"),
        ({"send_at": datetime(2030, 1, 1, tzinfo=UTC), "if_past": "later"}, "if_past must be"),
        (
            {
                "send_at": datetime(2030, 1, 2, tzinfo=UTC),
                "expires_at": datetime(2030, 1, 1, tzinfo=UTC),
            },
            "would never go out",
        ),
    ],
)
def test_a_schedule_that_cannot_be_kept_is_refused_saying_what_to_fix(kwargs, words):
    with pytest.raises(InvalidSchedule, match=words):
        shipped(UserFactory(), **kwargs)
    assert not Message.objects.exists()


@pytest.mark.parametrize("key", ["", "   ", 42, "x" * 256, "bad\x00key"])
def test_a_cancel_key_that_is_not_plain_text_is_refused(key):
    with pytest.raises(InvalidCancelKey):
        shipped(UserFactory(), cancel_key=key)
    with pytest.raises(InvalidCancelKey):
        notify_cancel(key)
    assert not Message.objects.exists()


def test_a_retry_after_the_send_time_gives_back_the_message_the_first_call_made():
    user = UserFactory()
    send_at = timezone.now() + timedelta(minutes=10)
    first = shipped(user, send_at=send_at, idempotency_key="ship:A1001", cancel_key="order:A1001")
    with time_machine.travel(send_at + timedelta(hours=1)):
        again = shipped(
            user, send_at=send_at, idempotency_key="ship:A1001", cancel_key="order:A1001"
        )
    assert again.pk == first.pk
    stored = Message.objects.get(pk=first.pk)
    assert same_call(
        stored,
        context=order_context(),
        channels=["inapp", "email"],
        expires_at=None,
        send_at=send_at,
        cancel_key="order:A1001",
    )
    assert not same_call(
        stored,
        context=order_context(),
        channels=["inapp", "email"],
        expires_at=None,
        send_at=send_at + timedelta(minutes=1),
        cancel_key="order:A1001",
    )


# --- Cancelling by key ------------------------------------------------------------------------


def test_cancel_takes_back_a_scheduled_message_with_the_reason_on_its_timeline(published):
    send_at = timezone.now() + timedelta(hours=1)
    message = shipped(UserFactory(), send_at=send_at, cancel_key="order:A1001")
    messages_prepare(message_ids=[message.pk])
    report = notify_cancel("order:A1001")
    assert (report.messages, report.cancelled, report.too_late) == (1, 2, 0)
    rows = Delivery.objects.filter(message=message)
    assert {(d.status, d.reason, d.next_attempt_at) for d in rows} == {
        (S.CANCELLED, Reason.SENDER_CANCELLED, None)
    }
    assert all(d.finished_at is not None for d in rows)
    event = DeliveryEvent.objects.filter(delivery__in=rows, kind=EventKind.CANCELLED).first()
    assert event is not None and event.detail["cancel_key"] == "order:A1001"
    with time_machine.travel(send_at + timedelta(minutes=1)):
        assert held_release().released == 0
    assert published.deliver == []
    again = notify_cancel("order:A1001")  # a second call cancels nothing more
    assert (again.messages, again.cancelled, again.too_late) == (1, 0, 0)


def test_cancel_before_the_message_is_routed_closes_it_so_no_run_ever_sends_it(published):
    message = shipped(UserFactory(), send_at=timezone.now() + timedelta(hours=1), cancel_key="k")
    report = notify_cancel("k")
    assert (report.messages, report.cancelled) == (1, 2)
    assert statuses(message) == {"inapp": S.CANCELLED, "email": S.CANCELLED}
    assert set(Delivery.objects.filter(message=message).values_list("reason", flat=True)) == {
        Reason.SENDER_CANCELLED
    }
    assert Message.objects.get(pk=message.pk).routed_at is not None
    assert messages_prepare(message_ids=[message.pk]) == {}  # routed: a late prepare skips it
    assert statuses(message) == {"inapp": S.CANCELLED, "email": S.CANCELLED}


def test_what_has_gone_out_is_left_alone_and_counted_too_late(published):
    message = shipped(UserFactory(), cancel_key="k")  # now: in-app sent at once, email queued
    messages_prepare(message_ids=[message.pk])
    report = notify_cancel("k")
    assert (report.cancelled, report.too_late) == (1, 1)
    assert statuses(message) == {"inapp": S.SENT, "email": S.CANCELLED}
    assert InboxItem.objects.filter(message=message).exists()


def test_a_deliver_task_that_comes_after_the_cancel_sends_nothing(published):
    message = shipped(UserFactory(), cancel_key="k")
    messages_prepare(message_ids=[message.pk])
    email = Delivery.objects.get(message=message, channel="email")
    notify_cancel("k")
    report = deliveries_deliver(delivery_ids=[email.pk])
    assert report.claimed == 0
    assert Delivery.objects.get(pk=email.pk).status == S.CANCELLED


def test_a_cancel_that_comes_after_the_claim_is_too_late_for_that_delivery(published):
    message = shipped(UserFactory(), cancel_key="k")
    messages_prepare(message_ids=[message.pk])
    email = Delivery.objects.get(message=message, channel="email")
    Delivery.objects.filter(pk=email.pk).update(status=S.SENDING)  # a worker has it
    report = notify_cancel("k")
    assert (report.cancelled, report.too_late) == (0, 2)
    assert Delivery.objects.get(pk=email.pk).status == S.SENDING


def test_cancel_for_some_users_leaves_the_others_messages_with_the_same_key(published):
    later = timezone.now() + timedelta(hours=1)
    ann, bob = UserFactory(), UserFactory()
    result = notify_many(
        [ann, bob],
        "order.shipped",
        order_context(),
        channels=["inapp", "email"],
        send_at=later,
        cancel_key="sale:42",
    )
    messages_prepare(message_ids=result.message_ids)
    report = notify_cancel("sale:42", users=[ann])
    assert report.messages == 1
    assert set(Delivery.objects.filter(message__user=bob).values_list("status", flat=True)) == {
        S.HELD
    }
    assert set(Delivery.objects.filter(message__user=ann).values_list("status", flat=True)) == {
        S.CANCELLED
    }


def test_a_key_nothing_was_sent_with_cancels_nothing_and_is_not_an_error():
    report = notify_cancel("never-used")
    assert (report.messages, report.cancelled, report.too_late) == (0, 0, 0)


def test_one_release_tick_lets_out_every_due_message_not_just_one_batch(published):
    send_at = timezone.now() + timedelta(minutes=5)
    result = notify_many(
        UserFactory.create_batch(5),
        "order.shipped",
        order_context(),
        channels=["email"],
        send_at=send_at,
    )
    messages_prepare(message_ids=result.message_ids)
    with time_machine.travel(send_at + timedelta(seconds=1)):
        report = held_release_due(limit=2)  # three runs of at most two messages
    assert (report.messages, report.released) == (5, 5)
    assert set(Delivery.objects.values_list("status", flat=True)) == {S.QUEUED}


def test_the_celery_cancel_task_refuses_recipient_ids_that_cannot_be_ids():
    from notifier.models import RefusedCall
    from notifier.services.remote_calls import cancel_call

    for recipients in (["a\x00b"], ["\ud800"], ["has/slash"], "not-a-list"):
        assert cancel_call({"cancel_key": "k", "recipients": recipients}, caller="t") is None
    assert RefusedCall.objects.filter(error_type="InvalidRecipient").count() == 4


def test_the_release_wakes_up_once_per_second_in_which_held_sends_come_due(published):
    now = timezone.now().replace(microsecond=0)
    user = UserFactory()
    times = [
        now + timedelta(seconds=3, milliseconds=100),
        now + timedelta(seconds=3, milliseconds=700),
        now + timedelta(seconds=9, milliseconds=250),
        now + timedelta(seconds=40),  # beyond the look-ahead: the beat's own ticks
    ]
    for at in times:
        messages_prepare(
            message_ids=[
                notify(user, "order.shipped", order_context(), channels=["email"], send_at=at).pk
            ]
        )
    assert Delivery.objects.filter(status=S.HELD).count() == 4
    # The latest due time of each second, within the look-ahead only, soonest first.
    wakeups = held_wakeups(since=now, within=timedelta(seconds=16))
    assert wakeups == [times[1], times[2]]
    with mock.patch.object(dispatch, "publish") as publish:
        assert held_wakeups_publish(since=now, within=timedelta(seconds=16)) == 2
    # Counted down to each from the clock as it publishes (a moment after `now`).
    late = (timezone.now() - now).total_seconds()
    countdowns = [call.kwargs["countdown"] for call in publish.call_args_list]
    assert countdowns == pytest.approx([3.72 - late, 9.27 - late], abs=0.05)
    assert [call.kwargs["expires"] for call in publish.call_args_list] == [
        pytest.approx(countdown + 16) for countdown in countdowns
    ]
    assert {call.args[0] for call in publish.call_args_list} == {"notifier.release_held_at"}


def test_only_sends_with_a_time_of_their_own_get_a_wake_up(published):
    """Quiet hours end on a schedule of their own (spread over the morning): the ticks
    release them; a scheduled send due as soon gets its wake-up."""
    now = timezone.now()
    user = UserFactory()
    scheduled = notify(
        user,
        "order.shipped",
        order_context(),
        channels=["email"],
        send_at=now + timedelta(seconds=5),
    )
    quiet = notify(user, "order.shipped", order_context(), channels=["sms"])
    messages_prepare(message_ids=[scheduled.pk, quiet.pk])
    Delivery.objects.filter(message=quiet).update(
        status=S.HELD, reason=Reason.QUIET_HOURS, next_attempt_at=now + timedelta(seconds=3)
    )
    assert held_wakeups(since=now, within=timedelta(seconds=16)) == [
        Delivery.objects.get(message=scheduled).next_attempt_at
    ]
