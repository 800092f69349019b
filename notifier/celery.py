"""The Celery app: configured from Django settings (CELERY_*), queues from `notifier.queues`."""

from __future__ import annotations

import os

from celery import Celery
from celery.signals import before_task_publish, task_postrun, task_prerun

from notifier.probe_state import install_worker_probe

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "notifier.settings")

app = Celery("notifier")
app.config_from_object("django.conf:settings", namespace="CELERY")
app.autodiscover_tasks(["notifier", "campaigns"])

# Worker health for exec probes: a heartbeat file from the consumer's event loop.
install_worker_probe(app)


@app.on_after_configure.connect
def _declare_queues_and_schedule(sender: Celery, **_: object) -> None:
    from notifier.periodic import BEAT_SCHEDULE
    from notifier.queues import CELERY_QUEUES, MAINTENANCE_QUEUE, Lane, prepare_queue

    sender.conf.task_queues = CELERY_QUEUES
    sender.conf.task_default_queue = prepare_queue(Lane.TRANSACTIONAL)
    sender.conf.task_routes = {
        "notifier.requeue_stuck_work": {"queue": MAINTENANCE_QUEUE},
        "notifier.release_held": {"queue": MAINTENANCE_QUEUE},
        "campaigns.start_due_steps": {"queue": MAINTENANCE_QUEUE},
        "campaigns.evaluate_triggers": {"queue": MAINTENANCE_QUEUE},
        "campaigns.rollup_stats": {"queue": MAINTENANCE_QUEUE},
        "campaigns.learn_active_hours": {"queue": MAINTENANCE_QUEUE},
        "notifier.failure_alerts": {"queue": MAINTENANCE_QUEUE},
        "notifier.retention": {"queue": MAINTENANCE_QUEUE},
    }
    sender.conf.beat_schedule = BEAT_SCHEDULE


@task_postrun.connect
def _beat_heartbeat(task: object = None, state: str | None = None, **_: object) -> None:
    """A periodic job that finished leaves a heartbeat: the readiness check's "is beat alive"."""
    name = getattr(task, "name", None)
    if state == "SUCCESS" and isinstance(name, str):
        from notifier.health import beat_heartbeat

        beat_heartbeat(name)


# --- Observability: ids in task headers, cron check-ins of periodic jobs ---------------------


@before_task_publish.connect
def _ids_into_headers(headers: dict[str, object] | None = None, **_: object) -> None:
    from notifier.logcontext import add_ids_to_headers

    add_ids_to_headers(headers)


@task_prerun.connect
def _ids_and_checkin(task_id: str = "", task: object = None, **_: object) -> None:
    from notifier.logcontext import restore_ids
    from notifier.observability import checkin_started

    restore_ids(getattr(task, "request", None))
    name = getattr(task, "name", None)
    if isinstance(name, str):
        checkin_started(task_id, name)


@task_postrun.connect
def _checkin_done(task_id: str = "", state: str | None = None, **_: object) -> None:
    from notifier.logcontext import clear_ids
    from notifier.observability import checkin_finished

    checkin_finished(task_id, ok=state == "SUCCESS")
    clear_ids()
