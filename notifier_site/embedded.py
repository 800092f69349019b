"""Starting workers: in-process for the embedded default and the demo, or as processes.

On the in-memory transport only a worker in the same process can see the queues, so the demo
starts one in a thread. Production runs `celery worker` processes per lane instead (deploy/).
"""

from __future__ import annotations

import sys
from collections.abc import Iterator
from contextlib import contextmanager

from celery.contrib.testing.worker import start_worker

from notifier.queues import ALL_QUEUES, Lane, lane_of_queue
from notifier_site.celery import app


def worker_argv(
    *, name: str, queues: list[str], concurrency: int = 2, include: tuple[str, ...] = ()
) -> list[str]:
    """The command line of a `celery worker` process on the given queues (tests and bench)."""
    argv = [
        sys.executable,
        "-m",
        "celery",
        "-A",
        "notifier_site",
        "worker",
        "-n",
        name,
        "-Q",
        ",".join(queues),
        "-c",
        str(concurrency),
        "-P",
        "prefork",
        "--without-gossip",
        "--without-mingle",
        "-l",
        "warning",
    ]
    if not any(lane_of_queue(queue) == Lane.BULK for queue in queues):
        # As deploy/ runs the transactional and maintenance workers: a process takes one task
        # at a time and is handed one only when idle, so a long task holds nothing another
        # process could run. (A bulk-lane-only worker lowers its own CPU priority on start:
        # notifier.celery_config.)
        argv += ["--prefetch-multiplier", "1", "-O", "fair"]
    for module in include:
        argv += ["-I", module]
    return argv


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
