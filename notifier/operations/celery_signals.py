"""Notifier's hooks into whichever Celery app runs its tasks (connected in NotifierConfig.ready):
ids carried in task headers into log lines, cron check-ins of periodic jobs, and the heartbeat
that tells the readiness check beat is alive."""

from __future__ import annotations

from celery.signals import before_task_publish, task_postrun, task_prerun

from notifier.logcontext import add_ids_to_headers, clear_ids, restore_ids
from notifier.operations.health import beat_heartbeat
from notifier.operations.observability import checkin_finished, checkin_started


def connect() -> None:
    before_task_publish.connect(_ids_into_headers, dispatch_uid="notifier-ids-into-headers")
    task_prerun.connect(_ids_and_checkin, dispatch_uid="notifier-ids-and-checkin")
    task_postrun.connect(_checkin_done, dispatch_uid="notifier-checkin-done")
    task_postrun.connect(_beat_heartbeat, dispatch_uid="notifier-beat-heartbeat")


def _beat_heartbeat(task: object = None, state: str | None = None, **_: object) -> None:
    """A periodic job that finished leaves a heartbeat: the readiness check's "is beat alive"."""
    name = getattr(task, "name", None)
    if state == "SUCCESS" and isinstance(name, str):
        beat_heartbeat(name)


def _ids_into_headers(headers: dict[str, object] | None = None, **_: object) -> None:
    add_ids_to_headers(headers)


def _ids_and_checkin(task_id: str = "", task: object = None, **_: object) -> None:
    restore_ids(getattr(task, "request", None))
    name = getattr(task, "name", None)
    if isinstance(name, str):
        checkin_started(task_id, name)


def _checkin_done(task_id: str = "", state: str | None = None, **_: object) -> None:
    checkin_finished(task_id, ok=state == "SUCCESS")
    clear_ids()
