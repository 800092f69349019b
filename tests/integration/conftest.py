"""Helpers for tests that run a real worker."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
import redis

from notifier.queues import ALL_QUEUES
from tests.conftest import WorkerProcess, wait_until
from tests.integration.rig import RedisServer, Rig


def worker_idle(worker: WorkerProcess, client: redis.Redis) -> bool:
    """Nothing waiting in any queue, and nothing running, reserved or scheduled in the worker."""
    if any(client.llen(queue) for queue in ALL_QUEUES):
        return False
    inspect = worker.app.control.inspect([worker.name], timeout=1.0)
    for view in (inspect.active(), inspect.reserved(), inspect.scheduled()):
        if view is None or any(view.get(worker.name, [])):
            return False
    return True


@pytest.fixture
def wait_idle(worker, redis_client):
    def wait(timeout: float = 30.0) -> None:
        # twice in a row: a task may be between the queue and the worker's reserved list
        wait_until(
            lambda: worker_idle(worker, redis_client) and worker_idle(worker, redis_client),
            timeout=timeout,
            message="the worker to go idle",
        )

    return wait


@pytest.fixture
def rig(monkeypatch) -> Iterator[Rig]:
    """The fault rig on a Redis server of its own (a test module may override it)."""
    rig = Rig(RedisServer(), monkeypatch)
    try:
        yield rig
    finally:
        rig.close()
