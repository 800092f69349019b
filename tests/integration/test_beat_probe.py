"""Beat's probe against a real `celery beat` process on the test database: alive while its loop
ticks, unhealthy within a bounded time once the process is frozen, and at once when it is gone."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from django.conf import settings

from tests.conftest import ROOT, broker_redis, wait_until
from tests.integration.test_worker_probe import wait_probe

pytestmark = pytest.mark.integration

MAX_INTERVAL_S = 1
LIMIT_S = 6 * MAX_INTERVAL_S  # notifier.operations.probe_state.BEAT_STALE_AFTER_TICKS ticks


@pytest.fixture
def beat(tmp_path: Path, transactional_db: None) -> Iterator[tuple[subprocess.Popen, Path]]:
    probe_dir = tmp_path / "probe"
    db = settings.DATABASES["default"]
    env = {
        **os.environ,
        "PYTHONPATH": str(ROOT),
        "DJANGO_SETTINGS_MODULE": "tests.settings",
        "DATABASE_URL": (
            f"postgres://{db['USER']}@{db['HOST'] or '127.0.0.1'}:{db['PORT'] or 5432}/{db['NAME']}"
        ),
        "NOTIFIER_PROBE_DIR": str(probe_dir),
    }
    process = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "celery",
            "-A",
            "notifier_site",
            "beat",
            "-l",
            "warning",
            "--max-interval",
            str(MAX_INTERVAL_S),
            "--pidfile=",
            "-s",
            str(tmp_path / "schedule"),
        ],  # the scheduler comes from CELERY_BEAT_SCHEDULER
        cwd=tmp_path,
        env=env,
        start_new_session=True,
    )
    try:
        yield process, probe_dir
    finally:
        if process.poll() is None:
            os.killpg(process.pid, signal.SIGCONT)
            process.terminate()
            process.wait(timeout=20)
        # The jobs it published to the maintenance queue have no worker here.
        broker_redis().flushdb()


def test_beat_is_healthy_while_ticking_then_unhealthy_once_frozen_or_gone(beat):
    process, probe_dir = beat
    wait_probe(probe_dir, "live", ok=True, contains="beat ticking", timeout=60, role="beat")

    os.kill(process.pid, signal.SIGSTOP)
    frozen_at = time.monotonic()
    wait_probe(
        probe_dir, "live", ok=False, contains="stuck or frozen", timeout=LIMIT_S + 10, role="beat"
    )
    assert time.monotonic() - frozen_at >= LIMIT_S - MAX_INTERVAL_S

    os.kill(process.pid, signal.SIGCONT)
    wait_probe(
        probe_dir, "live", ok=True, contains="beat ticking", timeout=LIMIT_S + 10, role="beat"
    )

    process.kill()
    process.wait(timeout=10)
    wait_until(lambda: process.poll() is not None, timeout=5, message="beat to die")
    wait_probe(probe_dir, "live", ok=False, contains="is gone", timeout=5, role="beat")
