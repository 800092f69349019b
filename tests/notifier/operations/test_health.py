"""Health endpoints: liveness answers without dependencies; readiness checks PostgreSQL, Redis
and beat's heartbeat, and says which one failed (503)."""

from __future__ import annotations

import time

import pytest
from celery.signals import task_postrun
from django.urls import reverse

from notifier.operations import health
from notifier.operations.health import HEARTBEAT_KEY, STALE_AFTER, WATCHED_JOB, beat_fresh
from notifier.tasks import release_held_task, requeue_stuck_work_task

INTERVAL = 15.0


# --- Pure: how old may a heartbeat be ---------------------------------------------------------


def test_no_heartbeat_means_beat_is_not_known_to_run():
    check = beat_fresh(last_run=None, now=1000.0, interval_s=INTERVAL)
    assert (check.ok, check.name) == (False, "beat")
    assert "no heartbeat" in check.detail


def test_a_heartbeat_within_its_allowance_is_fresh_and_an_older_one_is_stale():
    limit = STALE_AFTER * INTERVAL
    assert beat_fresh(last_run=1000.0, now=1000.0 + limit, interval_s=INTERVAL).ok
    stale = beat_fresh(last_run=1000.0, now=1000.0 + limit + 1, interval_s=INTERVAL)
    assert not stale.ok
    assert f"last ran {limit + 1:.0f}s ago" in stale.detail


# --- The heartbeat, written when a periodic job finishes ---------------------------------------


@pytest.fixture
def heartbeat(redis_client):
    key = HEARTBEAT_KEY.format(job=WATCHED_JOB)
    redis_client.delete(key)
    yield key
    redis_client.delete(key)


def test_a_periodic_job_that_finished_leaves_a_heartbeat(redis_client, heartbeat):
    before = time.time()
    task_postrun.send(sender=release_held_task, task=release_held_task, state="SUCCESS")
    assert before <= float(redis_client.get(heartbeat)) <= time.time()


def test_a_failed_job_or_another_job_leaves_no_heartbeat_of_the_watched_one(
    redis_client, heartbeat
):
    task_postrun.send(sender=release_held_task, task=release_held_task, state="FAILURE")
    task_postrun.send(sender=requeue_stuck_work_task, task=requeue_stuck_work_task, state="SUCCESS")
    assert redis_client.get(heartbeat) is None


# --- The endpoints -----------------------------------------------------------------------------


@pytest.mark.django_db
def test_live_answers_without_looking_at_anything(client, settings):
    settings.NOTIFIER_REDIS_URL = "redis://127.0.0.1:1/0"  # even with Redis unreachable
    response = client.get(reverse("notifier:health-live"))
    assert (response.status_code, response.json()) == (200, {"status": "ok"})


def checks_of(response) -> dict[str, bool]:
    return {check["name"]: check["ok"] for check in response.json()["checks"]}


@pytest.mark.django_db
def test_ready_when_database_redis_and_beat_are_all_well(client, heartbeat):
    health.beat_heartbeat("notifier.release_held")
    response = client.get(reverse("notifier:health-ready"))
    assert response.status_code == 200
    assert response.json()["status"] == "ok"
    assert checks_of(response) == {"database": True, "redis": True, "beat": True}


@pytest.mark.django_db
def test_not_ready_when_beat_has_not_run_and_it_says_so(client, heartbeat):
    response = client.get(reverse("notifier:health-ready"))
    assert response.status_code == 503
    assert checks_of(response) == {"database": True, "redis": True, "beat": False}


@pytest.mark.django_db
def test_not_ready_when_beat_stopped_long_ago(client, redis_client, heartbeat):
    redis_client.set(heartbeat, repr(time.time() - STALE_AFTER * INTERVAL - 5))
    response = client.get(reverse("notifier:health-ready"))
    assert response.status_code == 503
    beat = next(c for c in response.json()["checks"] if c["name"] == "beat")
    assert "last ran" in beat["detail"]


@pytest.mark.django_db
def test_not_ready_when_redis_is_unreachable(client, settings):
    settings.NOTIFIER_REDIS_URL = "redis://127.0.0.1:1/0"
    response = client.get(reverse("notifier:health-ready"))
    assert response.status_code == 503
    assert checks_of(response) == {"database": True, "redis": False, "beat": False}


@pytest.mark.django_db
def test_ready_only_answers_get(client):
    assert client.post(reverse("notifier:health-ready")).status_code == 405
