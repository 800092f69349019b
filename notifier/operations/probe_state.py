"""What workers and beat write for their health probe (read by
`python -m notifier.operations.probe`).

In NOTIFIER_PROBE_DIR, a worker's consumer bootstep touches `heartbeat` from the consumer's
event loop and keeps `state.json` (consuming / reconnecting / stopped); beat's scheduler
(notifier.operations.beat_scheduler) touches `beat-heartbeat` on every tick and writes `beat.json`.
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

PROBE_DIR_ENV = "NOTIFIER_PROBE_DIR"
HEARTBEAT_FILE = "heartbeat"
STATE_FILE = "state.json"
# A heartbeat older than this many intervals means the event loop stopped turning.
STALE_AFTER_INTERVALS = 4
BEAT_HEARTBEAT_FILE = "beat-heartbeat"
BEAT_STATE_FILE = "beat.json"
# Beat ticks at least every max_interval (5 s with django-celery-beat); a tick may also sync
# the schedule with the database, hence more slack than for a worker.
BEAT_STALE_AFTER_TICKS = 6


class WorkerState(StrEnum):
    CONSUMING = "consuming"
    RECONNECTING = "reconnecting"
    STOPPED = "stopped"


def write_json(directory: Path, name: str, body: dict[str, Any]) -> None:
    """Replace a state file atomically, so the probe never reads half of one."""
    directory.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=directory, prefix=".state-")
    with os.fdopen(fd, "w") as handle:
        json.dump(body, handle)
    os.replace(tmp, directory / name)


def write_state(directory: Path, *, state: WorkerState, hostname: str, interval: float) -> None:
    body = {
        "state": str(state),
        "since": time.time(),
        "pid": os.getpid(),
        "hostname": hostname,
        "interval": interval,
    }
    write_json(directory, STATE_FILE, body)


def touch_heartbeat(directory: Path, name: str = HEARTBEAT_FILE) -> None:
    (directory / name).touch()


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

            self.directory = Path(settings.NOTIFIER_PROBE_DIR or ".")
            # Without a directory the step is left out of the consumer altogether.
            self.enabled = bool(settings.NOTIFIER_PROBE_DIR)
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
    NOTIFIER_PROBE_DIR is set."""
    app.steps["consumer"].add(_make_step())
