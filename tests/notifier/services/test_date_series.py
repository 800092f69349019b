"""Per-recipient date series on PostgreSQL: setting a date schedules its steps, moving it
moves them (once, twice, at once from two sessions), removing or exiting cancels them, a click
stops the rest, a retried call writes nothing twice, and bad input is refused whole."""

from __future__ import annotations

import threading
from datetime import UTC, datetime, timedelta

import pytest
import time_machine
from django.db import connection
from django.utils import timezone

from notifier.api import (
    date_clear,
    date_clear_change,
    date_exit,
    date_exit_change,
    date_set,
    date_set_change,
    notify,
)
from notifier.errors import (
    InvalidCancelKey,
    InvalidContext,
    InvalidIdempotencyKey,
    InvalidRecipient,
    InvalidSeriesDate,
    MissingContextVariable,
    UnknownDateSeries,
)
from notifier.models import (
    DateSeries,
    DateState,
    Delivery,
    DeliveryEvent,
    Message,
    RecipientDate,
)
from notifier.services.date_series import recipient_dates_of
from notifier.services.pipeline import messages_prepare
from notifier.services.release import held_release
from notifier.services.retention import retention_run
from notifier.status import DeliveryStatus, Reason
from tests.factories import UserFactory, order_context

pytestmark = pytest.mark.django_db
S = DeliveryStatus
CONTEXT = {"plan": "Pro", "renews_on": "10 June"}
THREE_TWO_ONE = [{"before_s": 3 * 86400}, {"before_s": 2 * 86400}, {"before_s": 3600}]


@pytest.fixture
def points(db) -> DateSeries:
    return DateSeries.objects.create(
        key="points.expiring",
        name="Points expiring",
        type_id="subscription.renewal_reminder",
        steps=THREE_TWO_ONE,
    )


def in_days(days: float) -> datetime:
    return timezone.now().replace(microsecond=0) + timedelta(days=days)


def step_messages(date: RecipientDate) -> list[Message]:
    return list(Message.objects.filter(cancel_key=date.cancel_key).order_by("not_before"))


def reasons(messages: list[Message]) -> set[tuple[str, str]]:
    return set(
        Delivery.objects.filter(message__in=messages).values_list("status", "reason").distinct()
    )


# --- Setting a date --------------------------------------------------------------------------


def test_setting_a_date_schedules_each_step_as_a_message_held_until_its_time(points, published):
    user = UserFactory()
    at = in_days(10)
    date = date_set(user, "points.expiring", at, key="points:2027", context=CONTEXT)
    messages = step_messages(date)
    assert [m.not_before for m in messages] == [
        at - timedelta(days=3),
        at - timedelta(days=2),
        at - timedelta(hours=1),
    ]
    assert {m.cancel_key for m in messages} == {f"series:{date.pk}:1"}
    assert messages[0].context == {**CONTEXT, "series_date": at.isoformat(), "series_step": 1}
    assert [p["message"] for p in date.plan] == [m.pk for m in messages]
    messages_prepare(message_ids=[m.pk for m in messages])
    assert reasons(messages) <= {(S.HELD, Reason.SCHEDULED), (S.SUPPRESSED, "no_active_device")}


def test_a_local_time_step_is_the_recipients_own_morning(published):
    user = UserFactory(time_zone="Asia/Shanghai")
    renews = in_days(20).replace(hour=12, minute=0, second=0)  # 20:00 in Shanghai
    date = date_set(user, "subscription.renewal", renews, key="plan:42", context=CONTEXT)
    first, second, third = step_messages(date)
    day_before = (renews - timedelta(days=1)).date()
    assert second.not_before == datetime.combine(day_before, datetime.min.time(), UTC).replace(
        hour=2
    )  # 10:00 in Shanghai
    assert third.not_before == renews - timedelta(hours=1)
    assert first.not_before == second.not_before - timedelta(days=2)


def test_steps_already_past_are_skipped_and_say_so_in_the_plan(points, published):
    date = date_set(UserFactory(), "points.expiring", in_days(2.5), key="p", context=CONTEXT)
    assert len(step_messages(date)) == 2
    assert date.plan[0]["skipped"] == "past" and "message" not in date.plan[0]
    assert all("message" in step for step in date.plan[1:])


def test_the_same_date_set_again_writes_nothing(points, published):
    user, at = UserFactory(), in_days(10)
    first = date_set(user, "points.expiring", at, key="p", context=CONTEXT)
    again = date_set(user, "points.expiring", at, key="p", context=CONTEXT)
    assert again.version == first.version == 1
    assert Message.objects.count() == 3


# --- Moving, removing, exiting ---------------------------------------------------------------


def test_moving_a_date_cancels_the_old_steps_and_schedules_the_new(points, published):
    user = UserFactory()
    old = date_set(user, "points.expiring", in_days(10), key="p", context=CONTEXT)
    old_messages = step_messages(old)
    messages_prepare(message_ids=[m.pk for m in old_messages])
    new_at = in_days(20)
    moved = date_set(user, "points.expiring", new_at, key="p", context=CONTEXT)
    assert moved.pk == old.pk and moved.version == 2
    assert reasons(old_messages) <= {
        (S.CANCELLED, Reason.SERIES_MOVED),
        (S.SUPPRESSED, "no_active_device"),
    }
    assert (S.CANCELLED, Reason.SERIES_MOVED) in reasons(old_messages)
    assert [m.not_before for m in step_messages(moved)] == [
        new_at - timedelta(days=3),
        new_at - timedelta(days=2),
        new_at - timedelta(hours=1),
    ]


def test_a_date_moved_twice_keeps_only_the_final_dates_steps(points, published):
    user = UserFactory()
    for days in (10, 12, 14):
        date = date_set(user, "points.expiring", in_days(days), key="p", context=CONTEXT)
    messages_prepare(message_ids=list(Message.objects.values_list("pk", flat=True)))
    live = Message.objects.filter(
        deliveries__status=S.HELD, deliveries__reason=Reason.SCHEDULED
    ).distinct()
    assert {m.cancel_key for m in live} == {f"series:{date.pk}:3"}
    assert sorted(m.not_before for m in live) == [m.not_before for m in step_messages(date)]


def test_two_moves_at_once_leave_exactly_one_dates_steps(points, published, transactional_db):
    user = UserFactory()
    date_set(user, "points.expiring", in_days(10), key="p", context=CONTEXT)
    barrier = threading.Barrier(2)
    errors: list[BaseException] = []

    def move(days: int) -> None:
        try:
            barrier.wait()
            date_set(user, "points.expiring", in_days(days), key="p", context=CONTEXT)
        except BaseException as exc:
            errors.append(exc)
        finally:
            connection.close()

    threads = [threading.Thread(target=move, args=(days,)) for days in (20, 30)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert not errors
    date = RecipientDate.objects.get()
    assert date.version == 3
    pending = Message.objects.filter(cancel_key__startswith="series:").exclude(
        deliveries__status=S.CANCELLED
    )
    messages_prepare(message_ids=list(pending.values_list("pk", flat=True)))
    live = Message.objects.filter(deliveries__status=S.HELD).distinct()
    assert {m.cancel_key for m in live} == {date.cancel_key}
    assert sorted(m.not_before for m in live) == [
        date.at - timedelta(days=3),
        date.at - timedelta(days=2),
        date.at - timedelta(hours=1),
    ]


def test_removing_a_date_cancels_its_pending_steps(points, published):
    user = UserFactory()
    date = date_set(user, "points.expiring", in_days(10), key="p", context=CONTEXT)
    messages = step_messages(date)
    messages_prepare(message_ids=[m.pk for m in messages[:1]])  # one routed, two not yet
    assert date_clear(user, "points.expiring", key="p") is True
    assert (S.CANCELLED, Reason.SERIES_REMOVED) in reasons(messages[:1])
    assert {d.reason for d in Delivery.objects.filter(message__in=messages[1:])} == {
        Reason.SERIES_REMOVED
    }
    assert RecipientDate.objects.get().state == DateState.REMOVED
    assert date_clear(user, "points.expiring", key="p") is True  # again: nothing more
    assert date_clear(user, "points.expiring", key="nothing") is False


def test_exiting_cancels_the_rest_with_the_callers_reason(points, published):
    user = UserFactory()
    date = date_set(user, "points.expiring", in_days(10), key="p", context=CONTEXT)
    assert date_exit(user, "points.expiring", key="p", reason="renewed") is True
    event = DeliveryEvent.objects.filter(delivery__message__in=step_messages(date)).first()
    assert event is not None and event.reason == Reason.SERIES_EXITED
    assert "renewed" in event.detail["action"]
    row = RecipientDate.objects.get()
    assert (row.state, row.state_note) == (DateState.EXITED, "renewed")
    # The same date set again (a host re-syncing its dates) does not start it again ...
    assert date_set(user, "points.expiring", row.at, key="p", context=CONTEXT).version == 1
    # ... a new date does.
    assert date_set(user, "points.expiring", in_days(40), key="p", context=CONTEXT).version == 2


def test_a_click_on_one_step_stops_the_rest_when_they_come_up(points, published):
    user = UserFactory()
    at = in_days(10)
    date = date_set(user, "points.expiring", at, key="p", context=CONTEXT)
    first, second, third = step_messages(date)
    messages_prepare(message_ids=[first.pk, second.pk, third.pk])
    assert held_release(now=at - timedelta(days=3) + timedelta(seconds=1)).released >= 1
    Delivery.objects.filter(message=first, channel="email").update(status=S.CLICKED)
    with time_machine.travel(at - timedelta(days=2) + timedelta(seconds=1)):
        report = held_release()
    assert report.released == 0 and report.suppressed >= 1
    assert (S.SUPPRESSED, Reason.SERIES_EXITED) in reasons([second])
    row = RecipientDate.objects.get()
    assert (row.state, row.state_note) == (DateState.EXITED, "clicked an earlier reminder")
    assert (S.HELD, Reason.SCHEDULED) in reasons([third])  # held until its own time: stopped then


def test_a_date_of_a_series_that_never_exits_goes_on_after_a_click(points, published):
    points.exit_on = "never"
    points.save()
    user = UserFactory()
    at = in_days(10)
    date = date_set(user, "points.expiring", at, key="p", context=CONTEXT)
    first, second, _ = step_messages(date)
    messages_prepare(message_ids=[first.pk, second.pk])
    held_release(now=at - timedelta(days=3) + timedelta(seconds=1))
    Delivery.objects.filter(message=first, channel="email").update(status=S.CLICKED)
    assert held_release(now=at - timedelta(days=2) + timedelta(seconds=1)).released >= 1


# --- Out of order: as_of ---------------------------------------------------------------------
# A task redelivered late, or an HTTP retry behind a newer call: the caller says when its change
# happened (as_of), and a call older than what the date holds changes nothing.


def ago(hours: float) -> datetime:
    return timezone.now() - timedelta(hours=hours)


def pending(date: RecipientDate) -> list[tuple[int, datetime | None]]:
    """The date's step messages not cancelled, by id and time."""
    return list(
        Message.objects.filter(cancel_key__startswith="series:")
        .exclude(deliveries__status=S.CANCELLED)
        .order_by("pk")
        .values_list("pk", "not_before")
    )


def test_a_set_redelivered_late_with_an_older_as_of_moves_nothing(points, published, caplog):
    user, t1, t2 = UserFactory(), ago(2), ago(1)
    newer = date_set(user, "points.expiring", in_days(20), key="p", context=CONTEXT, as_of=t2)
    messages_prepare(message_ids=[m.pk for m in step_messages(newer)])
    before = pending(newer)
    with caplog.at_level("INFO", logger="notifier.services.date_series"):
        late = date_set_change(
            user, "points.expiring", in_days(10), key="p", context=CONTEXT, as_of=t1
        )
    assert late.applied is False
    assert late.date is not None and (late.date.at, late.date.version) == (newer.at, 1)
    row = RecipientDate.objects.get()
    assert (row.at, row.version, row.as_of) == (newer.at, 1, t2)
    assert pending(row) == before and len(before) == 3
    assert not Delivery.objects.filter(status=S.CANCELLED).exists()
    assert "ignored as stale: set of points.expiring p" in caplog.text
    # date_set itself answers with the date as it stands
    assert date_set(
        user, "points.expiring", in_days(10), key="p", context=CONTEXT, as_of=t1
    ).at == (newer.at)


def test_a_clear_ahead_of_its_set_leaves_a_tombstone_the_older_set_finds(points, published):
    user, t1, t2, t3 = UserFactory(), ago(3), ago(2), ago(1)
    assert date_clear(user, "points.expiring", key="p", as_of=t2) is False  # "no such date"
    tombstone = RecipientDate.objects.get()
    assert (tombstone.state, tombstone.version, tombstone.plan, tombstone.context) == (
        DateState.REMOVED,
        0,
        [],
        {},
    )
    assert tombstone.at == tombstone.as_of == t2
    assert recipient_dates_of(user_id=user.pk) == []  # never listed as a date
    stale = date_set_change(
        user, "points.expiring", in_days(10), key="p", context=CONTEXT, as_of=t1
    )
    assert stale.applied is False and not stale.found
    assert not Message.objects.exists()
    newer = date_set_change(
        user, "points.expiring", in_days(10), key="p", context=CONTEXT, as_of=t3
    )
    assert newer.applied and newer.found
    assert newer.date is not None and newer.date.version == 1
    assert newer.date.state == DateState.ACTIVE and newer.date.as_of == t3
    assert len(step_messages(newer.date)) == 3
    assert not Delivery.objects.filter(status=S.CANCELLED).exists()  # version 0: none to cancel
    assert [d.key for d in recipient_dates_of(user_id=user.pk)] == ["p"]


def test_an_exit_then_a_stale_set_leaves_the_date_exited(points, published):
    user, t0, t1, t2 = UserFactory(), ago(3), ago(2), ago(1)
    date = date_set(user, "points.expiring", in_days(10), key="p", context=CONTEXT, as_of=t0)
    assert date_exit(user, "points.expiring", key="p", reason="renewed", as_of=t2) is True
    late = date_set_change(user, "points.expiring", in_days(30), key="p", context=CONTEXT, as_of=t1)
    assert late.applied is False
    row = RecipientDate.objects.get()
    assert (row.state, row.state_note, row.version, row.at) == (
        DateState.EXITED,
        "renewed",
        1,
        date.at,
    )
    assert Message.objects.count() == 3
    assert reasons(step_messages(date)) == {(S.CANCELLED, Reason.SERIES_EXITED)}


def test_an_exit_ahead_of_its_set_makes_the_older_set_ignored(points, published):
    user, t1, t2 = UserFactory(), ago(2), ago(1)
    assert date_exit(user, "points.expiring", key="p", reason="renewed", as_of=t2) is False
    assert recipient_dates_of(user_id=user.pk) == []
    late = date_set_change(user, "points.expiring", in_days(10), key="p", context=CONTEXT, as_of=t1)
    assert late.applied is False and not Message.objects.exists()
    assert RecipientDate.objects.get().version == 0


def test_a_call_older_than_a_clear_or_exit_changes_nothing_either(points, published):
    user, t1, t2 = UserFactory(), ago(2), ago(1)
    date_set(user, "points.expiring", in_days(10), key="p", context=CONTEXT, as_of=t2)
    assert date_clear_change(user, "points.expiring", key="p", as_of=t1).applied is False
    assert date_exit_change(user, "points.expiring", key="p", as_of=t1).applied is False
    assert RecipientDate.objects.get().state == DateState.ACTIVE
    assert not Delivery.objects.filter(status=S.CANCELLED).exists()


def test_the_same_call_again_with_the_same_as_of_changes_nothing(points, published):
    user, t1, when = UserFactory(), ago(1), in_days(10)  # one date: in_days reads the clock
    first = date_set_change(user, "points.expiring", when, key="p", context=CONTEXT, as_of=t1)
    again = date_set_change(user, "points.expiring", when, key="p", context=CONTEXT, as_of=t1)
    assert first.applied and again.applied  # not stale: the same moment
    assert again.date is not None and again.date.version == 1
    assert Message.objects.count() == 3
    t2 = ago(0.5)
    assert date_clear_change(user, "points.expiring", key="p", as_of=t2).applied
    removed = RecipientDate.objects.get()
    events = DeliveryEvent.objects.count()
    assert date_clear_change(user, "points.expiring", key="p", as_of=t2).applied
    assert DeliveryEvent.objects.count() == events
    row = RecipientDate.objects.get()
    assert (row.state, row.updated_at, row.as_of) == (DateState.REMOVED, removed.updated_at, t2)


def test_a_different_call_with_an_equal_as_of_applies(points, published):
    user, t1 = UserFactory(), ago(1)
    date_set(user, "points.expiring", in_days(10), key="p", context=CONTEXT, as_of=t1)
    moved = date_set(user, "points.expiring", in_days(20), key="p", context=CONTEXT, as_of=t1)
    assert moved.version == 2


def test_a_newer_as_of_on_the_same_date_is_kept_for_the_next_call(points, published):
    user, t1, t2, t3, when = UserFactory(), ago(3), ago(2), ago(1), in_days(10)
    date = date_set(user, "points.expiring", when, key="p", context=CONTEXT, as_of=t1)
    date_set(user, "points.expiring", when, key="p", context=CONTEXT, as_of=t3)  # re-sync
    assert RecipientDate.objects.get().as_of == t3
    late = date_set_change(user, "points.expiring", in_days(20), key="p", context=CONTEXT, as_of=t2)
    assert late.applied is False
    assert RecipientDate.objects.get().at == date.at


def test_a_call_without_as_of_applies_as_before_and_keeps_the_stored_one(points, published):
    user, t2 = UserFactory(), ago(1)
    date_set(user, "points.expiring", in_days(20), key="p", context=CONTEXT, as_of=t2)
    moved = date_set_change(user, "points.expiring", in_days(10), key="p", context=CONTEXT)
    assert moved.applied and moved.date is not None and moved.date.version == 2
    row = RecipientDate.objects.get()
    assert (row.at, row.as_of) == (moved.date.at, t2)
    assert date_clear(user, "points.expiring", key="p") is True
    assert RecipientDate.objects.get().as_of == t2
    assert date_clear(user, "points.expiring", key="never") is False
    assert RecipientDate.objects.count() == 1  # no tombstone without as_of


def test_erasing_a_person_deletes_their_tombstones_too(points, published):
    from notifier.models import Recipient
    from notifier.services.erasure import recipient_erase

    user = UserFactory()
    date_clear(user, "points.expiring", key="p", as_of=ago(1))
    assert RecipientDate.objects.filter(user_id=user.pk).exists()
    recipient_erase(Recipient.objects.get(user_id=user.pk), by="test", reason="ticket 1")
    assert not RecipientDate.objects.filter(user_id=user.pk).exists()


# --- Bad input -------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("call", "error", "words"),
    [
        (lambda u: date_set(u, "no.such", in_days(5), key="p", context=CONTEXT), UnknownDateSeries,
         "no date series"),
        (lambda u: date_set(u, "points.expiring", datetime(2030, 1, 1), key="p", context=CONTEXT),  # noqa: DTZ001
         InvalidSeriesDate, "no UTC offset"),
        (lambda u: date_set(u, "points.expiring", in_days(5000), key="p", context=CONTEXT),
         InvalidSeriesDate, "ten years"),
        (lambda u: date_set(u, "points.expiring", in_days(5), key="", context=CONTEXT),
         InvalidSeriesDate, "key must be"),
        (lambda u: date_set(u, "points.expiring", in_days(5), key="plan/42", context=CONTEXT),
         InvalidSeriesDate, 'may not contain "/"'),
        (lambda u: date_exit(u, "points.expiring", key="plan/42"), InvalidSeriesDate,
         'may not contain "/"'),
        (lambda u: date_set(u, "points.expiring", in_days(5), key="p", context={"plan": "Pro"}),
         MissingContextVariable, "renews_on"),
        (lambda u: date_set(u, "points.expiring", in_days(5), key="p",
                            context={**CONTEXT, "series_step": 9}), InvalidContext, "series_step"),
        (lambda u: date_set(987654321, "points.expiring", in_days(5), key="p", context=CONTEXT),
         InvalidRecipient, "987654321"),
        (lambda u: notify(u, "order.shipped", order_context(), cancel_key="series:1:1"),
         InvalidCancelKey, "series:"),
        (lambda u: notify(u, "order.shipped", order_context(), idempotency_key="series:1:1:1"),
         InvalidIdempotencyKey, "series:"),
        (lambda u: date_set(u, "points.expiring", in_days(5), key="p", context=CONTEXT,
                            as_of=datetime(2026, 1, 1)),  # noqa: DTZ001
         InvalidSeriesDate, "as_of has no UTC offset"),
        (lambda u: date_set(u, "points.expiring", in_days(5), key="p", context=CONTEXT,
                            as_of=timezone.now() + timedelta(days=3)),
         InvalidSeriesDate, "ahead of this server's clock"),
        (lambda u: date_set(u, "points.expiring", in_days(5), key="p", context=CONTEXT,
                            as_of=datetime(9999, 12, 31, 23, tzinfo=UTC)),
         InvalidSeriesDate, "at most a day"),
        (lambda u: date_set(u, "points.expiring", in_days(5), key="p", context=CONTEXT,
                            as_of=datetime(1, 1, 1, tzinfo=UTC)),
         InvalidSeriesDate, "ten years"),
        (lambda u: date_clear(u, "points.expiring", key="p", as_of="yesterday"),
         InvalidSeriesDate, "as_of must be a timezone-aware datetime"),
        (lambda u: date_exit(u, "points.expiring", key="p", as_of=1767225600),
         InvalidSeriesDate, "as_of must be a timezone-aware datetime"),
    ],
)  # fmt: skip
def test_bad_input_is_refused_with_what_to_fix_and_nothing_written(points, call, error, words):
    with pytest.raises(error, match=words):
        call(UserFactory())
    assert not RecipientDate.objects.exists() and not Message.objects.exists()


def test_a_switched_off_series_is_refused(points):
    points.is_active = False
    points.save()
    with pytest.raises(UnknownDateSeries, match="switched off"):
        date_set(UserFactory(), "points.expiring", in_days(5), key="p", context=CONTEXT)


def test_a_date_of_a_series_switched_off_may_still_be_removed(points, published):
    user = UserFactory()
    date = date_set(user, "points.expiring", in_days(10), key="p", context=CONTEXT)
    points.is_active = False
    points.save()
    assert date_clear(user, "points.expiring", key="p") is True
    assert reasons(step_messages(date)) == {(S.CANCELLED, Reason.SERIES_REMOVED)}


def test_the_persons_dates_are_listed_soonest_first(points, published):
    user = UserFactory()
    date_set(user, "points.expiring", in_days(30), key="later", context=CONTEXT)
    date_set(user, "points.expiring", in_days(10), key="sooner", context=CONTEXT)
    assert [d.key for d in recipient_dates_of(user_id=user.pk)] == ["sooner", "later"]


# --- By task name, and from the admin ------------------------------------------------------


def test_another_codebase_sets_clears_and_exits_a_date_by_task_name(points, published):
    from notifier.models import RefusedCall
    from notifier.services.remote_calls import date_call

    user = UserFactory()
    call = {"user": user.pk, "series": "points.expiring", "key": "p"}
    at = in_days(10).isoformat()
    set_call = {**call, "at": at, "context": CONTEXT}
    assert date_call(set_call, action="set", caller="t1") == {"version": 1, "applied": True}
    assert date_call(set_call, action="set", caller="t2") == {
        "version": 1,
        "applied": True,
    }  # delivered twice: nothing moves
    assert date_call({**call, "reason": "renewed"}, action="exit", caller="t3") == {
        "found": True,
        "applied": True,
    }
    assert date_call(call, action="clear", caller="t4") == {"found": True, "applied": True}
    assert RecipientDate.objects.get().state == DateState.REMOVED
    assert date_call({**call, "at": "next week"}, action="set", caller="t5") is None
    assert date_call({**call, "colour": "red"}, action="clear", caller="t6") is None
    refused = list(RefusedCall.objects.order_by("pk").values_list("source", "message"))
    assert refused[0][0] == "celery task notifier.date_set" and "ISO 8601" in refused[0][1]
    assert refused[1][0] == "celery task notifier.date_clear" and "'colour'" in refused[1][1]


def test_a_task_redelivered_late_says_it_was_not_applied(points, published):
    from notifier.services.remote_calls import date_call

    user = UserFactory()
    call = {"user": user.pk, "series": "points.expiring", "key": "p"}
    t1, t2, t3 = (ago(hours).isoformat() for hours in (3, 2, 1))
    newer = {**call, "at": in_days(20).isoformat(), "context": CONTEXT, "as_of": t2}
    older = {**newer, "at": in_days(10).isoformat(), "as_of": t1}
    assert date_call(newer, action="set", caller="t1") == {"version": 1, "applied": True}
    assert date_call(older, action="set", caller="t2") == {"version": 1, "applied": False}
    assert RecipientDate.objects.get().at == datetime.fromisoformat(newer["at"])
    assert date_call({**call, "as_of": t1}, action="exit", caller="t3") == {
        "found": True,
        "applied": False,
    }
    assert date_call({**call, "as_of": t3}, action="clear", caller="t4") == {
        "found": True,
        "applied": True,
    }
    other = {**call, "key": "q"}
    assert date_call({**other, "as_of": t2}, action="clear", caller="t5") == {
        "found": False,
        "applied": True,
    }  # a tombstone: its older set, arriving next, is ignored
    assert date_call({**other, "at": older["at"], "context": CONTEXT, "as_of": t1},
                     action="set", caller="t6") == {"version": 0, "applied": False}  # fmt: skip


@pytest.mark.parametrize(
    ("as_of", "words"),
    [
        ("2026-12-01T09:30:00", "as_of has no UTC offset"),
        ("next week", "as_of must be ISO 8601 text with its zone"),
        (12, "as_of must be ISO 8601 text with its zone"),
        ("2999-01-01T00:00:00+00:00", "ahead of this server's clock"),
    ],
)
def test_a_task_with_a_bad_as_of_is_refused_and_recorded(points, published, as_of, words):
    from notifier.models import RefusedCall
    from notifier.services.remote_calls import date_call

    call = {"user": UserFactory().pk, "series": "points.expiring", "key": "p", "as_of": as_of}
    assert date_call(call, action="clear", caller="t1") is None
    set_call = {**call, "at": in_days(10).isoformat(), "context": CONTEXT}
    assert date_call(set_call, action="set", caller="t2") is None
    refused = list(RefusedCall.objects.order_by("pk").values_list("source", "message"))
    assert [source for source, _ in refused] == [
        "celery task notifier.date_clear",
        "celery task notifier.date_set",
    ]
    assert all(words in message for _, message in refused)
    assert not RecipientDate.objects.exists() and not Message.objects.exists()


def test_a_task_naming_an_unknown_argument_is_told_of_as_of(points):
    from notifier.models import RefusedCall
    from notifier.services.remote_calls import date_call

    call = {"user": UserFactory().pk, "series": "points.expiring", "key": "p", "asof": "x"}
    assert date_call(call, action="exit", caller="t1") is None
    message = RefusedCall.objects.get().message
    assert "'asof'" in message and "reason, as_of" in message


def test_a_series_made_in_the_admin_is_validated_and_then_used(admin_client, published):
    url = "/admin/notifier/dateseries/add/"
    form = {
        "key": "booking.visit",
        "name": "Visit reminders",
        "type": "subscription.renewal_reminder",
        "exit_on": "seen",
        "is_active": "on",
    }
    refused = admin_client.post(url, {**form, "steps": '[{"before_s": 3600, "after_s": 1}]'})
    assert refused.status_code == 200
    assert "step 1: one of" in " ".join(refused.context["adminform"].form.errors["steps"])
    assert not DateSeries.objects.filter(key="booking.visit").exists()
    made = admin_client.post(url, {**form, "steps": '[{"days_before": 1, "at": "18:00"}]'})
    assert made.status_code == 302
    date = date_set(UserFactory(), "booking.visit", in_days(5), key="visit:9", context=CONTEXT)
    assert len(step_messages(date)) == 1


def test_a_catalog_series_is_only_switched_on_and_off_in_the_admin(admin_client):
    page = admin_client.get("/admin/notifier/dateseries/subscription.renewal/change/")
    assert page.status_code == 200
    form = page.context["adminform"].form
    assert set(form.fields) == {"is_active"}


def test_a_catalog_series_of_an_unknown_type_is_a_loud_error_at_sync(db):
    from notifier.catalog import SeriesSpec, sync_series

    spec = SeriesSpec("plan.renewal", "Renewal", "no.such_type", ({"before_s": 60},))
    with pytest.raises(ValueError, match="which no catalog declares"):
        sync_series([spec])
    assert sync_series() == 1  # the built-in one
    assert DateSeries.objects.get(key="subscription.renewal").code_defined


def test_a_click_whose_step_retention_pruned_still_stops_the_rest(published, tmp_path):
    """The earlier step's message is kept while a later step of its date still waits: the
    click that stops the rest is read from it when that step comes up."""
    DateSeries.objects.create(
        key="long",
        name="Long",
        type_id="subscription.renewal_reminder",
        steps=[{"before_s": 80 * 86400}, {"before_s": 7 * 86400}],
    )
    user, other = UserFactory(), UserFactory()
    at = in_days(81)
    date = date_set(user, "long", at, key="p", context=CONTEXT)
    old = notify(other, "order.shipped", order_context())  # no series: pruned as ever
    first, second = step_messages(date)
    messages_prepare(message_ids=[first.pk, second.pk, old.pk])
    clicked_at = at - timedelta(days=80) + timedelta(seconds=1)
    with time_machine.travel(clicked_at):
        assert held_release(now=clicked_at).released >= 1
        Delivery.objects.filter(message__in=[first, old]).update(
            status=S.CLICKED, updated_at=clicked_at
        )
    second_at = at - timedelta(days=7) + timedelta(seconds=1)
    with time_machine.travel(second_at - timedelta(hours=1)):
        report = retention_run(days=30, archive_dir=tmp_path)
    assert report.messages == 1 and not Message.objects.filter(pk=old.pk).exists()
    assert Message.objects.filter(pk=first.pk).exists()
    with time_machine.travel(second_at):
        held_release(now=second_at)
    assert (S.SUPPRESSED, Reason.SERIES_EXITED) in reasons([second])
    assert RecipientDate.objects.get(pk=date.pk).state == DateState.EXITED
    # Once no step of the date waits, its steps are pruned as any message.
    with time_machine.travel(at + timedelta(days=40)):
        retention_run(days=30, archive_dir=tmp_path)
    assert not Message.objects.filter(cancel_key=date.cancel_key).exists()


def test_a_set_redelivered_after_a_clear_of_the_same_moment_stays_cleared(points, published):
    """A caller's set and clear made in one transaction share its clock: on a tie of as_of,
    the clear (or exit) wins, so the set's task redelivered after it brings nothing back."""
    user, t1, when = UserFactory(), ago(1), in_days(10)
    date_set(user, "points.expiring", when, key="p", context=CONTEXT, as_of=t1)
    assert date_clear(user, "points.expiring", key="p", as_of=t1) is True
    late = date_set_change(user, "points.expiring", when, key="p", context=CONTEXT, as_of=t1)
    assert late.applied is False
    row = RecipientDate.objects.get()
    assert (row.state, row.version) == (DateState.REMOVED, 1)
    assert not Delivery.objects.filter(status=S.HELD).exists()
    # The same with an exit.
    date_set(user, "points.expiring", when, key="q", context=CONTEXT, as_of=t1)
    assert date_exit(user, "points.expiring", key="q", reason="renewed", as_of=t1) is True
    again = date_set_change(user, "points.expiring", when, key="q", context=CONTEXT, as_of=t1)
    assert again.applied is False
    assert RecipientDate.objects.get(key="q").state == DateState.EXITED


def test_a_clear_with_as_of_for_someone_who_does_not_exist_writes_nothing(points, published):
    assert date_clear(987654321, "points.expiring", key="p", as_of=ago(1)) is False
    assert date_exit(987654321, "points.expiring", key="p", as_of=ago(1)) is False
    assert not RecipientDate.objects.exists()
