"""notifier_celery(app): a worker keeps its PostgreSQL connection between tasks as Django keeps
one between requests (CONN_MAX_AGE), instead of Celery 5.6's new connection for every task."""

from __future__ import annotations

from types import SimpleNamespace

import pytest
from celery import Celery
from celery.fixups.django import DjangoWorkerFixup
from django.db import connection

from notifier.celery_config import close_old_connections_around_task, notifier_celery

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
