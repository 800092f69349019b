"""Publishing pipeline work to Celery. Services call these from `transaction.on_commit`.

Publishing never raises into the caller, and never waits for a broker that is away: the rows
are already in PostgreSQL, and the re-queue job publishes them again later.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from typing import Any, cast

from celery import current_app
from celery.utils import uuid
from celery.utils.saferepr import saferepr
from django.conf import settings
from kombu.exceptions import OperationalError as BrokerUnreachable

from channels.base import Channel
from notifier.logcontext import bound
from notifier.queues import TEST_SENDS_QUEUE, Lane, deliver_queue, prepare_queue

log = logging.getLogger(__name__)

# Longest delay ever put in a broker ETA. Longer waits live in PostgreSQL (next_attempt_at)
# because Redis re-delivers ETA tasks after its visibility timeout, and they fill worker memory.
MAX_BROKER_COUNTDOWN_S = 300.0

# One more try at once (a pooled connection gone stale is opened again), then give up: the work
# is in PostgreSQL and the re-queue job publishes it later. Celery's default (three more tries,
# 0.2 s apart) made every notify() in a web request wait about 0.6 s while Redis was down.
PUBLISH_RETRY_POLICY: dict[str, float] = {
    "max_retries": 1,
    "interval_start": 0,
    "interval_step": 0,
    "interval_max": 0,
}


# Tasks are published by name (notifier/tasks.py declares them): the services that publish
# need not import the tasks that call them back.
PREPARE_TASK = "notifier.prepare_messages"
DELIVER_TASK = "notifier.deliver"


def publish(task_name: str, **options: Any) -> None:
    """Send one task to the broker through the Celery app in use (the host's, or the site's).

    Notifier's own publishes (a queue named; args, kwargs, a countdown) take the short way
    below; anything else, and a publish the short way could not make (the broker unreachable,
    a pooled connection gone stale), goes through Celery's `send_task` with the retry policy
    it was given."""
    limits = _time_limits(task_name)
    if (
        options.keys() <= _DIRECT_OPTIONS
        and "queue" in options
        and limits is not None
        and not _sentry_traces_tasks()
    ):
        try:
            _publish_direct(task_name, time_limits=limits, **options)
            return
        except BrokerUnreachable:
            log.debug("direct publish of %s failed; once more through send_task", task_name)
    current_app.send_task(task_name, **options)


def _sentry_traces_tasks() -> bool:
    """Whether Sentry's Celery integration is on in this process: it adds its trace headers
    (sentry-trace, baggage: an error in the task joins the trace of the request that published
    it) in `send_task`, which the short way does not go through."""
    try:
        import sentry_sdk
        from sentry_sdk.integrations.celery import CeleryIntegration
    except ImportError:
        return False
    return sentry_sdk.get_client().get_integration(CeleryIntegration) is not None


# What `_publish_direct` takes; `retry_policy` applies only to the send_task that follows a
# failed direct publish.
_DIRECT_OPTIONS = frozenset({"args", "kwargs", "queue", "countdown", "retry_policy"})
# Queues this process has declared once (see _publish_direct).
_declared: set[tuple[int, str]] = set()


def _time_limits(task_name: str) -> tuple[float | None, float | None] | None:
    """The time limits send_task would put in the message of `task_name` (a task registered in
    this process's finalized app brings its own; one known only by name, none); None when the
    task declares other publishing options, which only send_task applies."""
    task = cast(Any, current_app)._tasks.get(task_name)
    if task is None:
        return (None, None)
    declared = {k: v for k, v in task._get_exec_options().items() if v is not None}
    if declared.get("serializer") == current_app.conf.task_serializer:
        del declared["serializer"]  # what the message is serialized with anyway
    if declared.keys() - {"time_limit", "soft_time_limit"}:
        return None
    return (declared.get("time_limit"), declared.get("soft_time_limit"))


def _publish_direct(
    task_name: str,
    *,
    time_limits: tuple[float | None, float | None],
    queue: str,
    args: Sequence[Any] = (),
    kwargs: dict[str, Any] | None = None,
    countdown: float | None = None,
    retry_policy: dict[str, float] | None = None,
) -> None:
    """The message `send_task` would build (task protocol 2, the same headers and properties,
    the before/after_task_publish signals), sent through the app's own producer pool, without
    what costs `send_task` most of its 0.4 ms a call and a notify() does not need: the router
    (the queue is given), the registry's task options (the worker applies its own time limits),
    a result object, the repr of the arguments through saferepr, a retry wrapper built per call
    (one attempt here; the caller's fallback retries), and the queue's declaration on every
    publish (once per process and app here: queues are durable, and workers declare theirs)."""
    app = cast(Any, current_app)._get_current_object()  # the proxy, resolved once
    amqp = app.amqp
    task_id = uuid()
    parent = app.current_worker_task
    root_id = parent_id = None
    if parent is not None:  # as send_task records it: which task published this one
        root_id = parent.request.root_id or parent.request.id
        parent_id = parent.request.id
    message = amqp.create_task_message(
        task_id,
        task_name,
        tuple(args),
        kwargs,
        countdown=countdown,
        reply_to=app.thread_oid,
        time_limit=time_limits[0],
        soft_time_limit=time_limits[1],
        create_sent_event=app.conf.task_send_sent_event,
        ignore_result=None,  # as send_task leaves it: the task's own setting applies
        root_id=root_id,
        parent_id=parent_id,
        argsrepr=_short_repr(app, tuple(args), amqp.argsrepr_maxsize),
        kwargsrepr=_short_repr(app, kwargs or {}, amqp.kwargsrepr_maxsize),
    )
    declared = (id(app), queue) in _declared
    with (
        app.producer_or_acquire() as producer,
        producer.connection._reraise_as_library_errors(),
    ):
        amqp.send_task_message(
            producer,
            task_name,
            message,
            queue=queue,
            retry=False,
            declare=[] if declared else None,
        )
    _declared.add((id(app), queue))


def _short_repr(app: Any, value: object, maxsize: int) -> str:
    """repr() of a task's arguments (ids and plain values), as saferepr would give it when it
    is short; saferepr's cut, as send_task makes it, when it is not."""
    text = repr(value)
    if len(text) <= maxsize:
        return text
    return str(saferepr(value, maxsize, maxlevels=app.conf.task_repr_maxlevels))


def chunks(ids: Sequence[int], size: int | None = None) -> list[list[int]]:
    size = size or settings.NOTIFIER_BATCH_SIZE
    return [list(ids[start : start + size]) for start in range(0, len(ids), size)]


def publish_prepare(message_ids: Sequence[int], lane: Lane) -> None:
    """One prepare task per batch, on the lane's prepare queue."""
    _publish_prepare(message_ids, prepare_queue(lane))


def publish_test_sends(message_ids: Sequence[int]) -> None:
    """Prepare marketers' test sends on their own queue of the bulk lane (see notifier.queues)."""
    _publish_prepare(message_ids, TEST_SENDS_QUEUE)


def publish_prepare_of(message_ids: Sequence[int], lane: Lane, *, test_sends: bool) -> None:
    """Where any prepare task goes, first time or again (a run cut short, the re-queue job, a
    batch split up): test sends on their own queue, whatever their lane; the rest on their
    lane's prepare queue."""
    if test_sends:
        publish_test_sends(message_ids)
    else:
        publish_prepare(message_ids, lane)


def _publish_prepare(message_ids: Sequence[int], queue: str) -> None:
    for batch in chunks(message_ids):
        try:
            # A task about one message carries its id into the worker's log lines.
            with bound(**({"message_id": batch[0]} if len(batch) == 1 else {})):
                publish(PREPARE_TASK, args=(batch,), queue=queue, retry_policy=PUBLISH_RETRY_POLICY)
        except Exception:
            log.exception(
                "could not publish prepare for %d messages; re-queue job will", len(batch)
            )


def publish_deliver(
    delivery_ids: Sequence[int], lane: Lane, channel: Channel, *, countdown: float = 0.0
) -> None:
    options = {"countdown": min(countdown, MAX_BROKER_COUNTDOWN_S)} if countdown > 0 else {}
    for batch in chunks(delivery_ids):
        try:
            with bound(**({"delivery_id": batch[0]} if len(batch) == 1 else {})):
                publish(
                    DELIVER_TASK,
                    args=(batch,),
                    queue=deliver_queue(lane, channel),
                    retry_policy=PUBLISH_RETRY_POLICY,
                    **options,
                )
        except Exception:
            log.exception(
                "could not publish deliver for %d deliveries; re-queue job will", len(batch)
            )
