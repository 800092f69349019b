"""What a Celery app needs to run Notifier: its queues, task routes and beat jobs, in one call.

A host project points its own Celery app at them::

    app = Celery("myproduct")
    app.config_from_object("django.conf:settings", namespace="CELERY")
    app.autodiscover_tasks()
    notifier_celery(app)

The stand-alone site's app (notifier_site/celery.py) does exactly this. Task names, queue names
and the beat schedule are stable across releases (the README's upgrade notes say otherwise).
"""

from __future__ import annotations

import gc
import logging
import os
from typing import Any

from celery import signals
from django.conf import settings
from django.db import close_old_connections

from notifier.operations.probe_state import install_worker_probe
from notifier.queues import (
    CELERY_QUEUES,
    MAINTENANCE_QUEUE,
    WEBHOOKS_QUEUE,
    Lane,
    bulk_lane_only,
    prepare_queue,
)

log = logging.getLogger(__name__)

# The maintenance jobs run on their own queue, out of the way of sending, and webhook posts on
# theirs, out of the way of both (notifier/queues.py says why); everything else is routed per
# message by notifier.dispatch (lane and channel), so it needs no route here.
TASK_ROUTES: dict[str, dict[str, str]] = {
    name: {"queue": MAINTENANCE_QUEUE}
    for name in (
        "notifier.requeue_stuck_work",
        "notifier.release_held",
        "notifier.release_held_at",
        "notifier.flush_digests",
        "notifier.revive_topic_sends",
        "campaigns.start_due_steps",
        "campaigns.evaluate_triggers",
        "campaigns.rollup_stats",
        "campaigns.learn_active_hours",
        "notifier.failure_alerts",
        "notifier.retention",
        "notifier.webhooks_sweep",
        "notifier.webhooks_prune",
        "notifier.erase_again",
    )
} | {"notifier.webhooks_send": {"queue": WEBHOOKS_QUEUE}}


# Celery 5.6 closes every Django database connection before and after every task (its Django
# fixup; the CONN_MAX_AGE reuse of 5.5 was reverted upstream, celery#9824): a new PostgreSQL
# connection per task, which `make bench` measured at twice the in-app latency end to end and
# half the naive baseline's rate. A worker of a Notifier app closes them instead the way Django
# does after a request, `close_old_connections()` before and after each task: CONN_MAX_AGE and
# CONN_HEALTH_CHECKS are honoured (with Django's default CONN_MAX_AGE = 0, that is still every
# task), and a connection broken by an error is still dropped. The fixup's own closing is set
# aside by its documented knob, CELERY_DB_REUSE_MAX, at a count no worker reaches. (Forked pool
# processes still drop the connections they inherit: the fixup does that apart from the knob.)
DB_REUSE_MAX = 2**62


def notifier_celery(app: Any) -> None:
    """Declare Notifier's queues, routes and beat schedule on `app`, the worker probe, and
    Django's own connection handling around each task (above).

    The declarations read Django settings, so they are applied once the app is configured
    (Celery's on_after_configure), not at import."""
    install_worker_probe(app)
    app.on_after_configure.connect(_declare, weak=False)
    signals.task_prerun.connect(close_old_connections_around_task, weak=False)
    signals.task_postrun.connect(close_old_connections_around_task, weak=False)

    def on_worker_init(sender: Any = None, **_: object) -> None:
        if getattr(sender, "app", None) is app:  # signals are global: this app's workers only
            lower_bulk_worker_priority(app)
            if settings.NOTIFIER_WORKER_GC_TUNE:
                garbage_collection_tune()

    signals.worker_init.connect(on_worker_init, weak=False)


# A worker process allocates tens of thousands of short-lived objects per batch (rows, dicts,
# rendered strings), so the cyclic collector runs often, and every so often it walks everything
# the process holds: Django, Celery and every imported module, which never become garbage. So
# when a worker starts, before its pool processes are forked (they inherit it), what it holds
# is moved out of the collector's sight (gc.freeze, which also spares the children copying
# those pages). The thresholds stay Python's: raising the youngest generation's to 50,000 saved
# about a tenth of a batch's CPU more, but a worker's memory then crept up batch after batch
# (150 to 165 MB over 30 batches of 1,000 users in process), where with the freeze alone it
# stays flat (156 MB from the fourth batch on).
def garbage_collection_tune() -> None:
    gc.collect()
    gc.freeze()


# The lanes share CPUs wherever their workers share a machine (a host, a container, a pod): a
# campaign's fan-out keeps every core busy for minutes, and the kernel would share them evenly
# between its batches and a password reset. A worker whose queues are all on the bulk lane
# therefore lowers its own CPU priority when it starts, before its pool processes are forked
# (they inherit it): the kernel runs transactional work first and gives bulk work the rest, so
# the transactional lane stays fast by design, however many bulk processes run beside it. Nice
# values only weigh processes against others in their own scheduling group (a cgroup: each
# container or pod; an autogroup: each login session), so deploy/ gives the bulk lane a lower
# CPU weight too where its workers run in containers of their own.
def lower_bulk_worker_priority(app: Any) -> int | None:
    """A worker of `app` that consumes bulk-lane queues only raises its nice value by
    NOTIFIER_BULK_WORKER_NICE; returns the new one (None: left alone)."""
    increment = int(settings.NOTIFIER_BULK_WORKER_NICE)
    consumed = list(app.amqp.queues.consume_from)
    if increment <= 0 or not bulk_lane_only(consumed) or not hasattr(os, "nice"):
        return None
    nice = os.nice(increment)
    log.info("bulk-lane worker on %s: CPU priority lowered to nice %d", ",".join(consumed), nice)
    return nice


def close_old_connections_around_task(sender: Any = None, **_: object) -> None:
    """What Django does at the start and end of a request, at the start and end of a task (not
    of one run eagerly, inside its caller's transaction)."""
    if getattr(getattr(sender, "request", None), "is_eager", False):
        return
    close_old_connections()


def _declare(sender: Any, **_: object) -> None:
    from notifier.periodic import BEAT_SCHEDULE  # reads settings

    sender.conf["CELERY_DB_REUSE_MAX"] = DB_REUSE_MAX  # read by name by celery.fixups.django
    sender.conf.task_queues = CELERY_QUEUES
    sender.conf.task_default_queue = prepare_queue(Lane.TRANSACTIONAL)
    sender.conf.task_routes = {**(sender.conf.task_routes or {}), **TASK_ROUTES}
    sender.conf.beat_schedule = {**(sender.conf.beat_schedule or {}), **BEAT_SCHEDULE}
