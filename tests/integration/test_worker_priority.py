"""A worker that consumes only bulk-lane queues runs niced (NOTIFIER_BULK_WORKER_NICE), its pool
processes too; a transactional worker, started the same way, keeps its priority. Real `celery
worker` processes, started as the bench and the tests start them (notifier_site.embedded)."""

from __future__ import annotations

import os

import psutil
import pytest

from notifier.queues import MAINTENANCE_QUEUE, Lane, lane_queues
from tests.conftest import WorkerProcess, wait_until

pytestmark = [pytest.mark.integration, pytest.mark.django_db(transaction=True)]


def nice_values(worker: WorkerProcess, concurrency: int) -> list[int]:
    """The nice value of the worker's main process and of each of its pool processes."""
    main = psutil.Process(worker.process.pid)
    wait_until(
        lambda: len(main.children()) >= concurrency,
        timeout=60,
        message="the worker's pool processes to start",
    )
    return [main.nice(), *(child.nice() for child in main.children())]


def test_a_bulk_lane_worker_runs_niced_and_a_transactional_worker_does_not():
    own = os.nice(0)
    bulk = WorkerProcess(queues=lane_queues(Lane.BULK), concurrency=2)
    transactional = WorkerProcess(
        queues=[*lane_queues(Lane.TRANSACTIONAL), MAINTENANCE_QUEUE], concurrency=1
    )
    try:
        bulk.wait_ready()
        transactional.wait_ready()
        assert nice_values(bulk, 2) == [own + 10] * 3
        assert nice_values(transactional, 1) == [own] * 2
    finally:
        bulk.stop()
        transactional.stop()


def test_the_setting_at_zero_leaves_a_bulk_worker_alone():
    own = os.nice(0)
    bulk = WorkerProcess(
        queues=lane_queues(Lane.BULK),
        concurrency=1,
        extra_env={"NOTIFIER_BULK_WORKER_NICE": "0"},
    )
    try:
        bulk.wait_ready()
        assert nice_values(bulk, 1) == [own] * 2
    finally:
        bulk.stop()
