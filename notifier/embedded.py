"""An in-process Celery worker, for the embedded default (memory transport) and the demo.

On the in-memory transport only a worker in the same process can see the queues, so the demo
starts one in a thread. Production runs `celery worker` processes per lane instead (deploy/).
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

from celery.contrib.testing.worker import start_worker

from notifier.celery import app
from notifier.queues import ALL_QUEUES


@contextmanager
def embedded_worker() -> Iterator[None]:
    """Run a solo-pool worker on every queue in a background thread while the block runs."""
    with start_worker(
        app,
        pool="solo",
        concurrency=1,
        queues=ALL_QUEUES,
        perform_ping_check=False,
        loglevel="WARNING",
        shutdown_timeout=30,
    ):
        yield
