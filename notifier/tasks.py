"""Celery tasks: thin. Each takes ids, calls one service, and owns only its delivery options.

Per-delivery retries are decided by `notifier.policies.retry` and scheduled by the service
(a new deliver task with a countdown), not by Celery's task retry: one failed recipient must
not re-run its whole batch. Tasks that render have soft and hard time limits; what a soft limit
means for the batch is the service's business (`notifier.services.quarantine`).
"""

from __future__ import annotations

import logging
from datetime import timedelta
from typing import Any

from celery import shared_task
from django.conf import settings
from django.db import InterfaceError, OperationalError
from django.utils import timezone

from notifier.operations.alerts import failure_alerts_run
from notifier.services.deliveries import (
    deliveries_deliver,
    requeue_expired_claims,
    requeue_stuck_work,
)
from notifier.services.digests import digests_flush_due
from notifier.services.erasure import ERASE_AGAIN_TASK, recipient_erase_again
from notifier.services.quarantine import messages_prepare_guarded
from notifier.services.release import held_release, held_release_due, held_wakeups_publish
from notifier.services.remote_calls import cancel_call, date_call, notify_call
from notifier.services.retention import retention_run
from notifier.services.topics import topic_send_walk, topic_sends_revive

log = logging.getLogger(__name__)

# acks_late + reject_on_worker_lost: a task whose worker dies is re-delivered, not lost. It may
# therefore run twice; the claim on the delivery row (not the broker) prevents a double send.
PIPELINE_TASK_OPTIONS: dict[str, Any] = {
    "acks_late": True,
    "reject_on_worker_lost": True,
    "ignore_result": True,
}
# Rendering marketers' copy is work a bad template can stretch without end: no task that
# renders holds a worker process longer than these (seconds; see settings).
PREPARE_TIME_LIMITS: dict[str, Any] = {
    "soft_time_limit": settings.NOTIFIER_PREPARE_SOFT_TIME_LIMIT_S,
    "time_limit": settings.NOTIFIER_PREPARE_TIME_LIMIT_S,
}
DELIVER_TIME_LIMITS: dict[str, Any] = {  # deliver renders fallbacks
    "soft_time_limit": settings.NOTIFIER_DELIVER_SOFT_TIME_LIMIT_S,
    "time_limit": settings.NOTIFIER_DELIVER_TIME_LIMIT_S,
}


@shared_task(name="notifier.prepare_messages", **PIPELINE_TASK_OPTIONS, **PREPARE_TIME_LIMITS)
def prepare_messages(message_ids: list[int]) -> dict[str, int]:
    """Generate + route a batch of messages into deliveries (a test send is one too)."""
    return dict(messages_prepare_guarded(message_ids=message_ids))


# The tasks another codebase sends by name. The database away for a moment (a failover, a
# restart): tried again, not lost. A notify task's id is the message's key unless the caller
# gave one, so a retry makes no second; a cancel run again cancels nothing more.
REMOTE_CALL_OPTIONS: dict[str, Any] = {
    "bind": True,
    "acks_late": True,
    "reject_on_worker_lost": True,
    "autoretry_for": (OperationalError, InterfaceError),
    "retry_backoff": 2,
    "retry_backoff_max": 300,
    "retry_jitter": True,
    "max_retries": 12,
}


@shared_task(name="notifier.notify", **REMOTE_CALL_OPTIONS)
def notify_task(self: Any, *args: Any, **kwargs: Any) -> int | None:
    """`notify()` for another codebase on the same broker (`send_task("notifier.notify",
    kwargs={...})`; arguments in notifier.services.remote_calls). Returns the message id; a
    refused call is recorded for the operator (RefusedCall) and returns None."""
    return notify_call(kwargs, caller=self.request.id or "", positional=args)


@shared_task(name="notifier.cancel", **REMOTE_CALL_OPTIONS)
def cancel_task(self: Any, *args: Any, **kwargs: Any) -> dict[str, int] | None:
    """`notify_cancel()` for another codebase (`send_task("notifier.cancel", kwargs={
    "cancel_key": ...})`). Running twice cancels nothing more; a refused call is recorded
    for the operator (RefusedCall) and returns None."""
    return cancel_call(kwargs, caller=self.request.id or "", positional=args)


@shared_task(name="notifier.date_set", **REMOTE_CALL_OPTIONS)
def date_set_task(self: Any, *args: Any, **kwargs: Any) -> dict[str, Any] | None:
    """`date_set()` for another codebase: a person's date in a series, set or moved (its
    steps move with it). The same call again changes nothing, and so does one whose `as_of`
    (ISO 8601) is older than the date's (a task redelivered late: `"applied": false`); a
    refused call is recorded (RefusedCall) and returns None."""
    return date_call(kwargs, action="set", caller=self.request.id or "", positional=args)


@shared_task(name="notifier.date_clear", **REMOTE_CALL_OPTIONS)
def date_clear_task(self: Any, *args: Any, **kwargs: Any) -> dict[str, Any] | None:
    """`date_clear()` for another codebase: the date removed, its pending steps cancelled
    (unless its `as_of` is older than the date's)."""
    return date_call(kwargs, action="clear", caller=self.request.id or "", positional=args)


@shared_task(name="notifier.date_exit", **REMOTE_CALL_OPTIONS)
def date_exit_task(self: Any, *args: Any, **kwargs: Any) -> dict[str, Any] | None:
    """`date_exit()` for another codebase: the person acted, the rest of the steps stop
    (unless its `as_of` is older than the date's)."""
    return date_call(kwargs, action="exit", caller=self.request.id or "", positional=args)


@shared_task(name=ERASE_AGAIN_TASK, ignore_result=True, acks_late=True)
def erase_again(recipient_id: int, record_id: int) -> int:
    """An erasure's follow-up, once the sends it found under way are done (rows changed)."""
    report = recipient_erase_again(recipient_id=recipient_id, record_id=record_id)
    return report.rows if report is not None else 0


@shared_task(name="notifier.deliver", **PIPELINE_TASK_OPTIONS, **DELIVER_TIME_LIMITS)
def deliver(delivery_ids: list[int]) -> dict[str, int]:
    """Send a batch of deliveries of one lane and channel."""
    report = deliveries_deliver(delivery_ids=delivery_ids)
    return {
        "claimed": report.claimed,
        "sent": report.sent,
        "retried": report.retried,
        "failed": report.failed,
        "skipped": report.skipped,
    }


@shared_task(name="notifier.requeue_stuck_work", ignore_result=True)
def requeue_stuck_work_task() -> dict[str, int]:
    """Beat: publish again whatever a lost broker message left in PostgreSQL."""
    report = requeue_stuck_work()
    if any(report.__dict__.values()):
        log.warning("re-queued stuck work: %s", report)
    return report.__dict__


@shared_task(name="notifier.requeue_expired_claims", ignore_result=True)
def requeue_expired_claims_task() -> dict[str, int]:
    """Beat, every few seconds: take back dead senders' claims; re-publish lost transactional
    deliveries."""
    report = requeue_expired_claims()
    if any(report.__dict__.values()):
        log.warning("claims sweep: %s", report)
    return report.__dict__


@shared_task(name="notifier.release_held", ignore_result=True)
def release_held_task() -> dict[str, int]:
    """Beat: release held deliveries that are due (quiet hours over, queues drained, new cap
    window), highest priority first; then publish wake-ups for the scheduled sends and
    escalation steps coming due before the next tick (NOTIFIER_RELEASE_LOOKAHEAD_S), so they
    go at their time."""
    started = timezone.now()
    report = held_release_due().__dict__
    if settings.NOTIFIER_RELEASE_LOOKAHEAD_S > 0:
        lookahead = timedelta(seconds=settings.NOTIFIER_RELEASE_LOOKAHEAD_S)
        held_wakeups_publish(since=started, within=lookahead)
    return report


@shared_task(name="notifier.release_held_at", ignore_result=True)
def release_held_at_task() -> dict[str, int]:
    """A wake-up the release beat published for a second in which sends come due between its
    ticks: one release run (the ticks take care of anything larger), no wake-ups of its own."""
    return held_release().__dict__


@shared_task(name="notifier.flush_digests", ignore_result=True)
def flush_digests_task() -> dict[str, int]:
    """Beat: send each digest whose window has ended as one message."""
    return digests_flush_due().__dict__


@shared_task(name="notifier.walk_topic_send", **PIPELINE_TASK_OPTIONS)
def walk_topic_send(send_id: int) -> dict[str, object]:
    """Hand a topic send's subscribers out, a thousand per transaction (and publish the next
    run when its time is up)."""
    return topic_send_walk(send_id=send_id).__dict__


@shared_task(name="notifier.revive_topic_sends", ignore_result=True)
def revive_topic_sends_task() -> list[int]:
    """Beat: walks of topic sends whose task was lost start again where they were."""
    return topic_sends_revive()


@shared_task(name="notifier.failure_alerts", ignore_result=True)
def failure_alerts_task() -> dict[str, list[str] | list[int]]:
    """Beat: alert on providers failing too often; pause campaigns failing above threshold."""
    report = failure_alerts_run()
    return {"alerted": report.alerted, "paused": report.paused}


@shared_task(name="notifier.retention", ignore_result=True)
def retention_task() -> dict[str, object]:
    """Beat, nightly: archive then delete finished delivery-log rows past the retention, then
    prune the workflows' rows that are done with (notifier.services.workflow_retention)."""
    report = retention_run()
    log.info("retention: %s", report.summary())
    return {"messages": report.messages, "deliveries": report.deliveries, "files": report.files}
