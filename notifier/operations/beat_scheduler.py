"""Beat's scheduler: django-celery-beat's DatabaseScheduler, plus a heartbeat for its probe.

Every tick of beat's loop touches `beat-heartbeat` in NOTIFIER_PROBE_DIR, so `python -m
notifier.operations.probe beat` can tell a beat whose loop stopped (stuck on a lock, frozen)
from one that runs; the readiness endpoint's beat check, by contrast, also needs a maintenance
worker to run the jobs.
"""

from __future__ import annotations

import contextlib
import os
import time
from pathlib import Path
from typing import Any

from django.conf import settings
from django_celery_beat.schedulers import DatabaseScheduler

from notifier.operations.probe_state import (
    BEAT_HEARTBEAT_FILE,
    BEAT_STATE_FILE,
    touch_heartbeat,
    write_json,
)


class ProbedScheduler(DatabaseScheduler):
    """The DatabaseScheduler (jobs from notifier.periodic, tunable in the admin) with a probe."""

    def setup_schedule(self) -> None:
        super().setup_schedule()
        directory = self._probe_dir()
        if directory is not None:
            body = {"pid": os.getpid(), "since": time.time(), "max_interval": self.max_interval}
            write_json(directory, BEAT_STATE_FILE, body)

    def tick(self, *args: Any, **kwargs: Any) -> float:
        directory = self._probe_dir()
        if directory is not None:
            with contextlib.suppress(OSError):  # a full disk must not stop beat
                touch_heartbeat(directory, BEAT_HEARTBEAT_FILE)
        return float(super().tick(*args, **kwargs))

    @staticmethod
    def _probe_dir() -> Path | None:
        return Path(settings.NOTIFIER_PROBE_DIR) if settings.NOTIFIER_PROBE_DIR else None
