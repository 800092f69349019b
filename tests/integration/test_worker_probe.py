"""The worker probe against real `celery worker` processes: healthy while the worker consumes,
unhealthy within a bounded time once it is frozen or stopped, and not ready (but alive) while
its broker is down."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from notifier.operations.probe_state import STATE_FILE
from notifier.queues import MAINTENANCE_QUEUE
from tests.conftest import ROOT, WorkerProcess, wait_until
from tests.integration.rig import RedisServer

pytestmark = pytest.mark.integration

HEARTBEAT_S = 0.5
LIMIT_S = 4 * HEARTBEAT_S  # notifier.operations.probe_state.STALE_AFTER_INTERVALS intervals


def probe(directory: Path, check: str = "ready", role: str = "worker") -> tuple[int, str]:
    """Run the probe exactly as a Kubernetes exec probe or a compose healthcheck does."""
    done = subprocess.run(
        [sys.executable, "-m", "notifier.operations.probe", role, check, "--dir", str(directory)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=30,
        env={**os.environ, "PYTHONWARNINGS": "error::RuntimeWarning"},
    )
    assert done.stderr == ""
    return done.returncode, done.stdout.strip()


def wait_probe(
    directory: Path, check: str, *, ok: bool, contains: str, timeout: float, role: str = "worker"
) -> str:
    def matches() -> str | None:
        code, line = probe(directory, check, role)
        return line if (code == 0) == ok and contains in line else None

    return wait_until(
        matches, timeout=timeout, interval=0.1, message=f"{role} probe {check} ok={ok} {contains!r}"
    )


def start_worker(directory: Path, broker_url: str | None = None) -> WorkerProcess:
    return WorkerProcess(
        queues=[MAINTENANCE_QUEUE],
        concurrency=1,
        broker_url=broker_url,
        extra_env={
            "NOTIFIER_PROBE_DIR": str(directory),
            "NOTIFIER_WORKER_HEARTBEAT_S": str(HEARTBEAT_S),
        },
    )


@pytest.fixture
def probe_dir(tmp_path: Path) -> Path:
    return tmp_path / "probe"


@pytest.fixture
def probed_worker(probe_dir: Path) -> Iterator[WorkerProcess]:
    process = start_worker(probe_dir)
    try:
        yield process
    finally:
        if process.process.poll() is None:
            os.kill(process.process.pid, signal.SIGCONT)
        process.stop()


def test_healthy_while_consuming_then_unhealthy_within_the_limit_once_frozen(
    probed_worker, probe_dir
):
    wait_probe(probe_dir, "ready", ok=True, contains="consuming", timeout=60)
    # Stays healthy over several heartbeat intervals: the timer keeps touching.
    for _ in range(5):
        assert probe(probe_dir, "live")[0] == 0
        time.sleep(HEARTBEAT_S)

    os.kill(
        probed_worker.process.pid, signal.SIGSTOP
    )  # the process exists, its event loop is frozen
    frozen_at = time.monotonic()
    line = wait_probe(probe_dir, "live", ok=False, contains="heartbeat", timeout=LIMIT_S + 10)
    assert "the consumer's event loop is stuck" in line
    # Not before the limit: a slow tick is not a stuck worker.
    assert time.monotonic() - frozen_at >= LIMIT_S - HEARTBEAT_S

    os.kill(probed_worker.process.pid, signal.SIGCONT)
    wait_probe(probe_dir, "live", ok=True, contains="consuming", timeout=LIMIT_S + 10)


def test_unhealthy_once_the_worker_is_terminated(probed_worker, probe_dir):
    wait_probe(probe_dir, "ready", ok=True, contains="consuming", timeout=60)
    probed_worker.stop()  # SIGTERM: warm shutdown
    assert json.loads((probe_dir / STATE_FILE).read_text())["state"] == "stopped"
    code, line = probe(probe_dir, "live")
    assert (code, line.endswith("is gone")) == (1, True)


def test_a_killed_worker_is_unhealthy_at_once(probed_worker, probe_dir):
    wait_probe(probe_dir, "ready", ok=True, contains="consuming", timeout=60)
    probed_worker.kill()  # SIGKILL: no chance to write anything
    code, line = probe(probe_dir, "live")
    assert (code, line.endswith("is gone")) == (1, True)


def test_broker_down_is_alive_but_not_ready_and_ready_again_when_it_returns(probe_dir):
    server = RedisServer()
    process = start_worker(probe_dir, broker_url=server.url)
    try:
        wait_probe(probe_dir, "ready", ok=True, contains="consuming", timeout=60)
        server.shutdown_nosave()
        wait_probe(probe_dir, "ready", ok=False, contains="reconnecting", timeout=30)
        # Restarting the pod would not bring Redis back: liveness holds while it reconnects.
        wait_probe(probe_dir, "live", ok=True, contains="reconnecting", timeout=5)
        server.start()
        wait_probe(probe_dir, "ready", ok=True, contains="consuming", timeout=60)
    finally:
        process.stop()
        server.stop()
