"""What a worker writes for its health probe (read by `python -m notifier.probe`, see there).

A consumer bootstep touches `heartbeat` from the consumer's event loop and keeps `state.json`
(consuming / reconnecting / stopped) in NOTIFIER_WORKER_PROBE_DIR.
"""

from __future__ import annotations

import contextlib
import json
import os
import tempfile
import time
from enum import StrEnum
from pathlib import Path
from typing import Any

PROBE_DIR_ENV = "NOTIFIER_WORKER_PROBE_DIR"
HEARTBEAT_FILE = "heartbeat"
STATE_FILE = "state.json"
# A heartbeat older than this many intervals means the event loop stopped turning.
STALE_AFTER_INTERVALS = 4


class WorkerState(StrEnum):
    CONSUMING = "consuming"
    RECONNECTING = "reconnecting"
    STOPPED = "stopped"


def write_state(directory: Path, *, state: WorkerState, hostname: str, interval: float) -> None:
    """Replace state.json atomically, so the probe never reads half a file."""
    directory.mkdir(parents=True, exist_ok=True)
    body = {
        "state": str(state),
        "since": time.time(),
        "pid": os.getpid(),
        "hostname": hostname,
        "interval": interval,
    }
    fd, tmp = tempfile.mkstemp(dir=directory, prefix=".state-")
    with os.fdopen(fd, "w") as handle:
        json.dump(body, handle)
    os.replace(tmp, directory / STATE_FILE)


def touch_heartbeat(directory: Path) -> None:
    (directory / HEARTBEAT_FILE).touch()


def _make_step() -> type:
    from celery import bootsteps

    class WorkerProbeStep(bootsteps.StartStopStep):
        """Writes the probe's files from the consumer: started once the broker connection and
        the task consumer are up (again, after a reconnect), stopped when the connection goes.
        """

        requires = ("celery.worker.consumer.tasks:Tasks",)

        def __init__(self, parent: Any, **kwargs: Any) -> None:
            super().__init__(parent, **kwargs)
            from django.conf import settings

            self.directory = Path(settings.NOTIFIER_WORKER_PROBE_DIR or ".")
            self.enabled = bool(settings.NOTIFIER_WORKER_PROBE_DIR)
            self.interval = float(settings.NOTIFIER_WORKER_HEARTBEAT_S)
            self.tref: Any = None
            if self.enabled:
                self.directory.mkdir(parents=True, exist_ok=True)

        def _write(self, consumer: Any, state: WorkerState) -> None:
            write_state(
                self.directory, state=state, hostname=consumer.hostname, interval=self.interval
            )

        def _touch(self) -> None:
            with contextlib.suppress(OSError):  # a full disk must not kill the event loop
                touch_heartbeat(self.directory)

        def _cancel(self) -> None:
            if self.tref is not None:
                self.tref.cancel()
                self.tref = None

        def start(self, consumer: Any) -> None:
            self._touch()
            self._write(consumer, WorkerState.CONSUMING)
            # The consumer's timer runs inside its event loop: no loop, no touches.
            self.tref = consumer.timer.call_repeatedly(self.interval, self._touch)

        def stop(self, consumer: Any) -> None:
            """The connection was lost (Celery reconnects, then calls start() again), or the
            worker is stopping (shutdown() follows)."""
            self._cancel()
            self._write(consumer, WorkerState.RECONNECTING)

        def terminate(self, consumer: Any) -> None:
            self.stop(consumer)

        def shutdown(self, consumer: Any) -> None:
            self._cancel()
            self._write(consumer, WorkerState.STOPPED)

    return WorkerProbeStep


def install_worker_probe(app: Any) -> None:
    """Add the probe's bootstep to the worker's consumer; it writes nothing unless
    NOTIFIER_WORKER_PROBE_DIR is set."""
    app.steps["consumer"].add(_make_step())
