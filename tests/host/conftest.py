"""Fixtures of the host project's own test run (tests/test_host_project.py starts it with
`--ds=tests.host.settings --confcutdir=tests/host`, so none of the suite's other fixtures, and
none of Notifier's own settings, are in play)."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import redis
from django.conf import settings

from notifier.queues import ALL_QUEUES

ROOT = Path(__file__).resolve().parents[2]


def wait_until(predicate: Callable[[], Any], *, timeout: float = 60.0, what: str = "it") -> Any:
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {what}")
        time.sleep(0.1)


@pytest.fixture
def host_worker(transactional_db: None) -> Iterator[subprocess.Popen[bytes]]:
    """A `celery worker` of the host's own Celery app, on every Notifier queue, on the test
    database (the test's writes are committed so it sees them)."""
    from tests.host.celery import app

    # Nothing queued by an earlier run is taken for this one.
    redis.Redis.from_url(settings.CELERY_BROKER_URL).flushdb()
    name = f"host-{uuid.uuid4().hex[:8]}@localhost"
    env = {
        **os.environ,
        "DJANGO_SETTINGS_MODULE": "tests.host.settings",
        "HOST_DB_NAME": settings.DATABASES["default"]["NAME"],
    }
    argv = [sys.executable, "-m", "celery", "-A", "tests.host.celery", "worker", "-n", name]
    argv += ["-Q", ",".join(ALL_QUEUES), "-c", "2", "-P", "prefork", "-l", "warning"]
    argv += ["--without-gossip", "--without-mingle"]
    process = subprocess.Popen(argv, cwd=ROOT, env=env, start_new_session=True)
    try:
        wait_until(
            lambda: process.poll() is None and app.control.ping(destination=[name], timeout=0.5),
            what="the host's worker to answer",
        )
        yield process
    finally:
        os.killpg(process.pid, signal.SIGTERM)
        try:
            process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, signal.SIGKILL)
