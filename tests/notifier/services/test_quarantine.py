"""One message never takes its batch down: rows Python cannot read, copy that cannot render, a
run cut by the soft time limit, and a message that kills its worker again and again.

The prepare task is called in-process. A worker dying mid-batch is played by WorkerDied, a
BaseException raised from the render (as SIGKILL would, it skips every `except Exception`);
the broker re-delivers the task of a dead worker (acks_late + reject_on_worker_lost), which the
tests play by running the same batch again.
"""

from __future__ import annotations

import threading
from contextlib import suppress
from datetime import timedelta

import pytest
from celery.exceptions import SoftTimeLimitExceeded
from django.db import connection, transaction
from django.utils import timezone

from notifier.api import notify_many
from notifier.models import Delivery, DeliveryEvent, Message, PrepareRun
from notifier.queues import Lane
from notifier.rendering import RenderError
from notifier.services import pipeline, quarantine
from notifier.services.deliveries import requeue_stuck_work
from notifier.services.messages import NewMessage, messages_create
from notifier.status import DeliveryStatus, Reason
from notifier.tasks import prepare_messages
from tests.factories import UserFactory, order_context

pytestmark = pytest.mark.django_db
S = DeliveryStatus
POISON = "POISON"

# Stored fine by PostgreSQL, unreadable by Python: a timestamp in the year 10000 (what
# notify() accepted for 9999-12-31 23:59:59-05:00), and JSON nested 12,000 deep: deeper than any
# supported Python reads (3.11 and 3.12 stop near 1,000 levels, 3.13 near 10,000), within what
# PostgreSQL stores (about 14,000 with its default max_stack_depth).
YEAR_10000 = "9999-12-31 23:59:59-05:00"
DEEP_CONTEXT = '{"order_number": ' + "[" * 12_000 + "]" * 12_000 + "}"


class WorkerDied(BaseException):
    """The worker process running the batch was killed (SIGKILL, out of memory, hard limit)."""


def batch_of(count: int) -> list[int]:
    users = UserFactory.create_batch(count, first_name="Ann")
    written = notify_many(users, "order.shipped", order_context(), channels=["inapp", "email"])
    return written.message_ids


def statuses(message_id: int) -> dict[str, tuple[str, str]]:
    return {d.channel: (d.status, d.reason) for d in Delivery.objects.filter(message_id=message_id)}


def routed(message_id: int) -> bool:
    return Message.objects.filter(pk=message_id, routed_at__isnull=False).exists()


def corrupt(message_id: int, column: str, value: str) -> None:
    """What notify() let in before the door was closed, written past it."""
    cast = "::jsonb" if column == "context" else ""
    with connection.cursor() as cursor:
        cursor.execute(
            f"UPDATE notifier_message SET {column} = %s{cast} WHERE id = %s", [value, message_id]
        )


@pytest.fixture
def poison_render(monkeypatch):
    """Rendering any message whose order number is POISON kills the worker running it."""
    real = pipeline.render

    def render(type_key, channel, context, locale):
        if context.get("order_number") == POISON:
            raise WorkerDied
        return real(type_key, channel, context, locale)

    monkeypatch.setattr(pipeline, "render", render)


def run_until_settled(published, first: list[int], *, max_runs: int = 30) -> int:
    """Run prepare tasks as workers and the broker would until none is left: every task the
    runs publish, and a died task again (re-delivered). Returns how many runs died."""
    queue, deaths = [first], 0
    for _ in range(max_runs):
        if not queue:
            return deaths
        batch = queue.pop(0)
        published.prepare.clear()
        try:
            prepare_messages(batch)
        except WorkerDied:
            deaths += 1
            queue.append(batch)
        queue += [ids for ids, _ in published.prepare]
    raise AssertionError(f"still running after {max_runs} runs ({deaths} died): never settles")


# --- Rows that cannot be read ---------------------------------------------------------------


def test_messages_python_cannot_read_fail_alone_with_the_reason_and_their_batch_routes(published):
    ids = batch_of(4)
    far_future, deep = ids[1], ids[2]
    corrupt(far_future, "expires_at", YEAR_10000)
    corrupt(deep, "context", DEEP_CONTEXT)

    prepare_messages(ids)

    for good in (ids[0], ids[3]):
        assert routed(good)
        assert statuses(good) == {"inapp": (S.SENT, ""), "email": (S.QUEUED, "")}
    for bad, words in (
        (far_future, "This message could not be read: its expiry date is out of range"),
        (deep, "This message could not be read: its context is nested too deeply to read"),
    ):
        assert routed(bad)  # done with: no run and no re-queue picks it up again
        deliveries = Delivery.objects.filter(message_id=bad)
        assert {d.channel for d in deliveries} == {"inapp", "email"}
        for delivery in deliveries:
            assert (delivery.status, delivery.reason, delivery.last_error) == (
                S.FAILED,
                Reason.UNREADABLE,
                words,
            )
            # on the support timeline, with the words
            event = DeliveryEvent.objects.get(delivery=delivery)
            assert (event.status, event.reason, event.error) == (S.FAILED, Reason.UNREADABLE, words)


def test_the_requeue_job_publishes_unrouted_messages_without_reading_what_cannot_be_read(
    published,
):
    ids = batch_of(3)
    corrupt(ids[0], "expires_at", YEAR_10000)
    Message.objects.filter(pk__in=ids).update(created_at=timezone.now() - timedelta(hours=1))
    report = requeue_stuck_work()
    assert report.messages == 3
    assert sorted(pk for batch, _ in published.prepare for pk in batch) == sorted(ids)
    # and the run it publishes fails the unreadable one and routes the others
    prepare_messages(ids)
    assert statuses(ids[0])["inapp"][1] == Reason.UNREADABLE
    assert statuses(ids[1])["inapp"] == (S.SENT, "")


# --- Copy that cannot render ----------------------------------------------------------------


def test_any_exception_from_one_message_s_render_fails_that_message_not_the_batch(
    published, monkeypatch
):
    """Not only RenderError: copy that cannot compile raises SyntaxError, deep copy
    RecursionError; a batch that let those through crashed on every run."""
    real = pipeline.render

    def render(type_key, channel, context, locale):
        if context.get("order_number") == POISON:
            raise SyntaxError("too many statically nested blocks")
        return real(type_key, channel, context, locale)

    monkeypatch.setattr(pipeline, "render", render)
    good = batch_of(2)
    bad = notify_many(
        [UserFactory()], "order.shipped", order_context(order_number=POISON), channels=["inapp"]
    ).message_ids
    prepare_messages([*good, *bad])
    assert statuses(bad[0]) == {"inapp": (S.FAILED, Reason.RENDER_FAILED)}
    assert "SyntaxError: too many statically nested blocks" in (
        Delivery.objects.get(message_id=bad[0]).last_error
    )
    assert all(statuses(pk)["inapp"] == (S.SENT, "") for pk in good)


# --- The soft time limit --------------------------------------------------------------------


def out_of_time(type_key: str) -> None:
    """What Celery's soft time limit looks like through the template engine: raised inside
    the render, reported as the engine's own error."""
    try:
        raise SoftTimeLimitExceeded
    except SoftTimeLimitExceeded as exc:
        raise RenderError(f"{type_key}: SoftTimeLimitExceeded") from exc


@pytest.fixture
def slow_render(monkeypatch):
    """Renders that the soft time limit strikes: the POISON message's always (too slow even
    alone), and the Nth render of a run when the test says so (the limit striking whoever
    happens to be rendering after the others spent the run's time)."""
    real = pipeline.render
    strike = {"at": 0, "count": 0}

    def render(type_key, channel, context, locale):
        strike["count"] += 1
        if context.get("order_number") == POISON or strike["count"] == strike["at"]:
            out_of_time(type_key)
        return real(type_key, channel, context, locale)

    monkeypatch.setattr(pipeline, "render", render)

    def strike_at(nth: int) -> None:
        strike.update(at=nth, count=0)

    return strike_at


def test_the_soft_time_limit_in_a_run_of_ten_fails_nobody_and_each_goes_on_alone(
    published, slow_render
):
    """Nine messages spent the run's time and the limit struck the tenth, which did nothing
    wrong: the run is undone, nobody is failed, and each message goes on in a task of its own
    with a whole time limit, where all ten route."""
    batch = notify_many(
        UserFactory.create_batch(10, first_name="Ann"),
        "order.shipped",
        order_context(),
        channels=["inapp"],
    ).message_ids
    slow_render(10)

    prepare_messages(batch)

    assert not Delivery.objects.filter(message_id__in=batch).exists()
    assert sorted(ids for ids, _ in published.prepare) == [[pk] for pk in sorted(batch)]
    # The run ended; it did not die: no record of it stays, no crash counted.
    assert not PrepareRun.objects.exists()
    assert set(Message.objects.filter(pk__in=batch).values_list("prepare_crashes", flat=True)) == {
        0
    }
    slow_render(0)
    for pk in batch:
        prepare_messages([pk])
    assert all(statuses(pk) == {"inapp": (S.SENT, "")} for pk in batch)


def test_a_message_too_slow_alone_fails_with_the_reason_and_its_batch_routes(
    published, slow_render
):
    first = batch_of(1)
    slow = notify_many(
        [UserFactory()], "order.shipped", order_context(order_number=POISON), channels=["inapp"]
    ).message_ids
    last = batch_of(1)

    run_until_settled(published, [*first, *slow, *last])

    failed = Delivery.objects.get(message_id=slow[0])
    assert (failed.status, failed.reason) == (S.FAILED, Reason.RENDER_TIMEOUT)
    assert failed.last_error.startswith("Rendering the inapp copy was stopped after")
    assert routed(slow[0])
    assert all(statuses(pk)["inapp"] == (S.SENT, "") for pk in [*first, *last])
    assert not PrepareRun.objects.exists()


def test_test_sends_handed_on_again_stay_on_their_own_queue(published, slow_render, settings):
    """A run split by the soft time limit, and the re-queue job, publish a marketer's test
    send where it was first published: never on a lane's prepare queue."""
    user = UserFactory()
    rows = [
        NewMessage(
            user_id=user.pk,
            type_key="order.shipped",
            context=order_context(),
            channels=["inapp"],
            lane=Lane.TRANSACTIONAL,
            idempotency_key=None,
            is_test=is_test,
        )
        for is_test in (True, False)
    ]
    test, real = messages_create(rows=rows).messages
    slow_render(1)
    prepare_messages([test.pk, real.pk])
    assert published.test_sends == [[test.pk]]
    assert [ids for ids, _ in published.prepare] == [[real.pk]]

    published.test_sends.clear()
    published.prepare.clear()
    Message.objects.filter(pk__in=[test.pk, real.pk]).update(
        created_at=timezone.now() - timedelta(hours=1)
    )
    requeue_stuck_work()
    assert published.test_sends == [[test.pk]]
    assert published.prepare == [([real.pk], Lane.TRANSACTIONAL)]


# --- A message that kills its worker --------------------------------------------------------


def test_a_message_that_kills_its_worker_is_set_aside_after_three_deaths_and_its_batch_routes(
    published, poison_render
):
    good = batch_of(3)
    poison = notify_many(
        [UserFactory()], "order.shipped", order_context(order_number=POISON), channels=["inapp"]
    ).message_ids[0]
    batch = [good[0], poison, *good[1:]]

    deaths = run_until_settled(published, batch)

    # The batch died once; then each message went alone, and the poison died twice more.
    assert deaths == 3
    assert all(statuses(pk)["inapp"] == (S.SENT, "") for pk in good)
    failed = Delivery.objects.get(message_id=poison)
    assert (failed.status, failed.reason) == (S.FAILED, Reason.PREPARE_CRASHED)
    assert failed.last_error.startswith("Preparing this message stopped its worker 3 times")
    assert routed(poison)


def test_the_requeue_job_fails_a_message_past_the_crash_limit_instead_of_publishing_it(
    published, settings
):
    settings.NOTIFIER_PREPARE_MAX_CRASHES = 2
    crashed, suspect, *fresh = batch_of(4)
    Message.objects.filter(pk__in=[crashed, suspect, *fresh]).update(
        created_at=timezone.now() - timedelta(hours=1)
    )
    Message.objects.filter(pk=crashed).update(prepare_crashes=2)  # two runs died on it
    Message.objects.filter(pk=suspect).update(prepare_crashes=1)  # one run died with it in

    report = requeue_stuck_work()

    # The crashed one is failed, not published; the suspect goes alone, so that if it is the
    # cause it takes down nobody else; the rest go in a batch as before.
    published_batches = sorted(ids for ids, _ in published.prepare)
    assert published_batches == sorted([[suspect], fresh])
    assert (report.messages, report.set_aside) == (3, 1)
    assert statuses(crashed)["inapp"] == (S.FAILED, Reason.PREPARE_CRASHED)
    assert routed(crashed)


def test_a_batch_whose_run_died_is_not_run_whole_again(published, poison_render):
    ids = batch_of(2)
    poison = notify_many(
        [UserFactory()], "order.shipped", order_context(order_number=POISON), channels=["inapp"]
    ).message_ids[0]
    batch = [*ids, poison]
    with suppress(WorkerDied):
        prepare_messages(batch)
    # The run was recorded before its work, and the record outlives it.
    assert list(PrepareRun.objects.values_list("message_ids", flat=True)) == [batch]
    published.prepare.clear()
    prepare_messages(batch)  # re-delivered: no death this time, because nothing is rendered
    assert sorted(ids for ids, _ in published.prepare) == [[pk] for pk in batch]
    assert not Delivery.objects.filter(message_id__in=batch).exists()
    assert set(Message.objects.filter(pk__in=batch).values_list("prepare_crashes", flat=True)) == {
        1
    }
    assert not PrepareRun.objects.exists()


def test_the_requeue_job_counts_a_run_that_died_and_sends_its_messages_one_by_one(
    published, poison_render
):
    ids = batch_of(2)
    poison = notify_many(
        [UserFactory()], "order.shipped", order_context(order_number=POISON), channels=["inapp"]
    ).message_ids[0]
    batch = [*ids, poison]
    with suppress(WorkerDied):  # the task is lost with its worker (a hard time limit acks it)
        prepare_messages(batch)
    Message.objects.filter(pk__in=batch).update(created_at=timezone.now() - timedelta(hours=1))
    PrepareRun.objects.update(started_at=timezone.now() - timedelta(hours=1))
    published.prepare.clear()
    requeue_stuck_work()
    assert sorted(ids for ids, _ in published.prepare) == [[pk] for pk in batch]
    assert not PrepareRun.objects.exists()


@pytest.mark.django_db(transaction=True)
def test_a_run_at_work_is_not_taken_for_a_dead_one():
    """A live run holds its record (deleted, not yet committed) in its own transaction: other
    sessions skip it. The moment the run dies (its transaction rolls back), it is a dead run."""
    run = PrepareRun.objects.create(message_ids=[1, 2, 3], started_at=timezone.now())

    def seen_from_another_session() -> list[tuple[int, list[int]]]:
        found: list[tuple[int, list[int]]] = []

        def look() -> None:
            try:
                found.extend(quarantine._unheld_runs())
            finally:
                connection.close()

        thread = threading.Thread(target=look)
        thread.start()
        thread.join()
        return found

    with suppress(WorkerDied), transaction.atomic():
        PrepareRun.objects.filter(pk=run.pk).delete()  # what a run does first thing
        assert seen_from_another_session() == []  # at work
        raise WorkerDied
    assert seen_from_another_session() == [(run.pk, [1, 2, 3])]  # died


def test_a_run_postgresql_aborts_to_break_a_deadlock_runs_again_at_once_and_is_no_crash(
    published, monkeypatch
):
    """The prepare run's known lock-order window (pipeline.py: collect, throttles, fold): the
    run PostgreSQL picks to abort rolled back whole; it is run again at once, not left for the
    re-queue job with a crash counted against its messages."""
    from django.db import OperationalError
    from psycopg2.errors import DeadlockDetected

    ids = batch_of(2)
    real, runs = quarantine.messages_prepare, []

    def aborted_first(**kwargs):
        runs.append(kwargs["message_ids"])
        if len(runs) == 1:
            try:
                raise DeadlockDetected("deadlock detected")
            except DeadlockDetected as exc:  # as Django raises it: psycopg2's error its cause
                raise OperationalError("deadlock detected") from exc
        return real(**kwargs)

    monkeypatch.setattr(quarantine, "messages_prepare", aborted_first)
    prepare_messages(ids)
    assert runs == [ids, ids]
    assert all(routed(pk) for pk in ids)
    assert not PrepareRun.objects.exists()
    assert set(Message.objects.filter(pk__in=ids).values_list("prepare_crashes", flat=True)) == {0}
