"""notifier_celery(app): a worker keeps its PostgreSQL connection between tasks as Django keeps
one between requests (CONN_MAX_AGE), instead of Celery 5.6's new connection for every task; and
each task reaches the queue its worker consumes (webhook posts on their own)."""

from __future__ import annotations

from types import SimpleNamespace

import pytest
from celery import Celery
from celery.fixups.django import DjangoWorkerFixup
from django.db import connection

from notifier.celery_config import (
    TASK_ROUTES,
    close_old_connections_around_task,
    notifier_celery,
)
from notifier.queues import ALL_QUEUES, MAINTENANCE_QUEUE, WEBHOOKS_QUEUE

pytestmark = pytest.mark.django_db(transaction=True)


def app_of(*, with_notifier: bool) -> Celery:
    app = Celery("probe", set_as_current=False)
    app.config_from_object("django.conf:settings", namespace="CELERY")
    if with_notifier:
        notifier_celery(app)
    app.loader.import_default_modules()  # configures it: on_after_configure fires
    return app


def open_connection() -> object:
    connection.ensure_connection()
    with connection.cursor() as cursor:
        cursor.execute("SELECT pg_backend_pid()")
        return cursor.fetchone()[0]


@pytest.fixture
def max_age(monkeypatch):
    def set_to(seconds: int) -> None:
        monkeypatch.setitem(connection.settings_dict, "CONN_MAX_AGE", seconds)

    return set_to


def test_celerys_own_fixup_closes_the_connection_around_every_task(max_age):
    max_age(60)
    open_connection()
    DjangoWorkerFixup(app_of(with_notifier=False)).close_database()
    assert connection.connection is None  # what this module exists to undo


def test_a_notifier_app_keeps_it_as_django_would(max_age):
    max_age(60)
    pid = open_connection()
    fixup = DjangoWorkerFixup(app_of(with_notifier=True))
    task = SimpleNamespace(request=SimpleNamespace(is_eager=False))
    for _ in range(3):  # before and after each of three tasks
        fixup.on_task_prerun(task)
        close_old_connections_around_task(task)
        fixup.on_task_postrun(task)
        close_old_connections_around_task(task)
    assert connection.connection is not None
    assert open_connection() == pid


def test_with_djangos_default_max_age_each_task_still_gets_a_fresh_connection(max_age):
    max_age(0)
    connection.close()
    open_connection()
    connection.close_at = 0  # as Django sets it for CONN_MAX_AGE = 0 when it connects
    close_old_connections_around_task(SimpleNamespace(request=SimpleNamespace(is_eager=False)))
    assert connection.connection is None


def test_a_task_run_eagerly_leaves_its_callers_connection_alone(max_age):
    max_age(0)
    open_connection()
    connection.close_at = 0
    close_old_connections_around_task(SimpleNamespace(request=SimpleNamespace(is_eager=True)))
    assert connection.connection is not None


def test_webhook_posts_have_a_queue_of_their_own_and_the_sweep_stays_on_maintenance():
    app = app_of(with_notifier=True)

    def queue_of(task: str) -> str:
        return app.amqp.router.route({}, task)["queue"].name

    assert queue_of("notifier.webhooks_send") == WEBHOOKS_QUEUE
    # Short database work; the sweep re-publishes lost sends, so it must not wait behind them.
    assert queue_of("notifier.webhooks_sweep") == MAINTENANCE_QUEUE
    assert queue_of("notifier.webhooks_prune") == MAINTENANCE_QUEUE
    assert queue_of("notifier.requeue_stuck_work") == MAINTENANCE_QUEUE
    assert {route["queue"] for route in TASK_ROUTES.values()} <= set(ALL_QUEUES)
    assert {q.name for q in app.conf.task_queues} == set(ALL_QUEUES)
    assert ALL_QUEUES.count(WEBHOOKS_QUEUE) == 1


def test_the_recorder_wakes_a_sender_on_the_webhooks_queue(monkeypatch):
    from celery import current_app

    from notifier.events_out import record

    sent: list[dict] = []
    monkeypatch.setattr(
        current_app, "send_task", lambda name, **options: sent.append({"name": name, **options})
    )
    record.sender_publish(7, countdown=1.5)
    [task] = sent
    assert (task["name"], task["args"], task["queue"]) == (
        "notifier.webhooks_send",
        (7,),
        "webhooks",
    )
    assert task["countdown"] == 1.5
