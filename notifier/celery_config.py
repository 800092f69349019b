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

from typing import Any

from notifier.operations.probe_state import install_worker_probe
from notifier.queues import CELERY_QUEUES, MAINTENANCE_QUEUE, Lane, prepare_queue

# The maintenance jobs run on their own queue, out of the way of sending; everything else is
# routed per message by notifier.dispatch (lane and channel), so it needs no route here.
TASK_ROUTES: dict[str, dict[str, str]] = {
    name: {"queue": MAINTENANCE_QUEUE}
    for name in (
        "notifier.requeue_stuck_work",
        "notifier.release_held",
        "campaigns.start_due_steps",
        "campaigns.evaluate_triggers",
        "campaigns.rollup_stats",
        "campaigns.learn_active_hours",
        "notifier.failure_alerts",
        "notifier.retention",
    )
}


def notifier_celery(app: Any) -> None:
    """Declare Notifier's queues, routes and beat schedule on `app`, and the worker probe.

    The declarations read Django settings, so they are applied once the app is configured
    (Celery's on_after_configure), not at import."""
    install_worker_probe(app)
    app.on_after_configure.connect(_declare, weak=False)


def _declare(sender: Any, **_: object) -> None:
    from notifier.periodic import BEAT_SCHEDULE  # reads settings

    sender.conf.task_queues = CELERY_QUEUES
    sender.conf.task_default_queue = prepare_queue(Lane.TRANSACTIONAL)
    sender.conf.task_routes = {**(sender.conf.task_routes or {}), **TASK_ROUTES}
    sender.conf.beat_schedule = {**(sender.conf.beat_schedule or {}), **BEAT_SCHEDULE}
