"""Publishing pipeline work to Celery. Services call these from `transaction.on_commit`.

Publishing never raises into the caller, and never waits for a broker that is away: the rows
are already in PostgreSQL, and the re-queue job publishes them again later.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from typing import Any

from celery import current_app
from django.conf import settings

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
    """Send one task to the broker through the Celery app in use (the host's, or the site's)."""
    current_app.send_task(task_name, **options)


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
