"""A rig for fault-injection tests: a private Redis, real workers on it, and the ledger count.

Each test gets its own `redis-server` on a free port, so it can shut it down without touching
the Redis other tests use, and its own worker processes on the test database. The test process
publishes through the rig too (the pipeline's publish functions are pointed at it).
"""

from __future__ import annotations

import contextlib
import shutil
import socket
import subprocess
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import redis
from celery import Celery

from notifier import dispatch
from notifier.queues import (
    ALL_QUEUES,
    MAINTENANCE_QUEUE,
    TEST_SENDS_QUEUE,
    Lane,
    deliver_queue,
    prepare_queue,
)
from notifier.redis_client import redis_client
from tests.conftest import WorkerProcess, wait_until


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


class RedisServer:
    """A throwaway redis-server that keeps nothing on disk."""

    def __init__(self, port: int | None = None) -> None:
        binary = shutil.which("redis-server")
        if binary is None:
            raise RuntimeError("redis-server is not installed; the fault tests need it")
        self.binary = binary
        self.port = port or free_port()
        self.process: subprocess.Popen[bytes] | None = None
        self.start()

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def client(self) -> redis.Redis:
        return redis_client(self.url, timeout_s=2.0)

    def start(self) -> None:
        self.process = subprocess.Popen(
            [
                self.binary,
                "--port",
                str(self.port),
                "--bind",
                "127.0.0.1",
                "--save",
                "",
                "--appendonly",
                "no",
            ],
            stdout=subprocess.DEVNULL,
        )
        wait_until(self._answers, timeout=15, message="the private redis-server to start")

    def _answers(self) -> bool:
        try:
            return bool(self.client().ping())
        except redis.RedisError:
            return False

    def shutdown_nosave(self) -> None:
        """Everything queued in it is gone: Redis restarted with no persistence."""
        with contextlib.suppress(redis.ConnectionError):  # SHUTDOWN drops its own connection
            self.client().shutdown(nosave=True)
        if self.process is not None:
            self.process.wait(timeout=15)

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.terminate()
            self.process.wait(timeout=15)


FAST_RECOVERY = {
    # Recover lost work within seconds instead of minutes, so tests can wait for the drain.
    "NOTIFIER_REQUEUE_AFTER_S": "2",
    "NOTIFIER_CLAIM_LEASE_S": "4",  # a dead sender's claims come back 4 s after its last send
    "EMAIL_TIMEOUT": "3",  # kept below the lease, as the system check asks
    "NOTIFIER_TRANSACTIONAL_REQUEUE_AFTER_S": "2",
}


class Rig:
    def __init__(self, server: RedisServer, monkeypatch: Any) -> None:
        self.server = server
        # broker_url would lose to the CELERY_BROKER_URL environment variable the test settings
        # set; the read and write URLs take precedence over it.
        self.app = Celery(
            "fault-rig",
            set_as_current=False,
            config_source={
                "broker_url": server.url,
                "broker_read_url": server.url,
                "broker_write_url": server.url,
                "task_serializer": "json",
                "accept_content": ["json"],
                "broker_connection_retry_on_startup": True,
            },
        )
        self.workers: list[WorkerProcess] = []
        monkeypatch.setattr(dispatch, "publish_prepare", self.publish_prepare)
        monkeypatch.setattr(dispatch, "publish_test_sends", self.publish_test_sends)
        monkeypatch.setattr(dispatch, "publish_deliver", self.publish_deliver)

    def worker(
        self, *, concurrency: int = 2, queues: list[str] | None = None, **env: str
    ) -> WorkerProcess:
        worker = WorkerProcess(
            queues=queues or ALL_QUEUES,
            concurrency=concurrency,
            extra_env={**FAST_RECOVERY, **env},
            control_app=self.app,
            broker_url=self.server.url,
        )
        worker.wait_ready()
        self.workers.append(worker)
        return worker

    def send(self, name: str, args: tuple[Any, ...], queue: str, countdown: float = 0) -> None:
        self.app.send_task(name, args=args, queue=queue, countdown=countdown or None)

    def publish_prepare(self, ids: Any, lane: Lane) -> None:
        self.send("notifier.prepare_messages", (list(ids),), prepare_queue(lane))

    def publish_test_sends(self, ids: Any) -> None:
        self.send("notifier.prepare_messages", (list(ids),), TEST_SENDS_QUEUE)

    def publish_deliver(self, ids: Any, lane: Lane, channel: Any, *, countdown: float = 0) -> None:
        self.send("notifier.deliver", (list(ids),), deliver_queue(lane, channel), countdown)

    def drain(
        self, done: Callable[[], bool], *, timeout: float = 180.0, requeue_every: float = 2.0
    ) -> None:
        """Run the re-queue job and the claims sweep now and then (as beat would) until
        `done()` holds."""
        state = {"last": 0.0}

        def check() -> bool:
            import time

            if done():
                return True
            if time.monotonic() - state["last"] > requeue_every:
                self.send("notifier.requeue_stuck_work", (), MAINTENANCE_QUEUE)
                self.send("notifier.requeue_expired_claims", (), MAINTENANCE_QUEUE)
                state["last"] = time.monotonic()
            return False

        wait_until(check, timeout=timeout, interval=0.2, message="the pipeline to drain")

    def close(self) -> None:
        for worker in self.workers:
            worker.stop()
        self.server.stop()


@dataclass(frozen=True)
class Ledger:
    """What the providers saw, for a set of messages (the issue's counting rule)."""

    expected: int  # (message, channel) pairs that should have been sent
    sends: int  # accepted sends (sandbox "sent" rows, plus inbox items)
    distinct: int  # distinct deliveries among them
    replays: int  # a delivery asked for again after a crash, answered from the idempotency key

    @property
    def lost(self) -> int:
        return self.expected - self.distinct

    @property
    def duplicated(self) -> int:
        return self.sends - self.distinct

    @property
    def resent(self) -> int:
        """Sends a provider without an idempotency key (SMTP, Twilio, FCM) would have made
        twice: the sandbox's replays are such calls, answered from the key."""
        return self.duplicated + self.replays


def ledger_for(message_ids: list[int], channels: list[str]) -> Ledger:
    from channels.models import SandboxSend
    from notifier.models import InboxItem

    sandbox = SandboxSend.objects.filter(message_id__in=message_ids)
    sent = sandbox.filter(outcome="sent")
    inbox = InboxItem.objects.filter(message_id__in=message_ids)
    inbox_sends = inbox.count() if "inapp" in channels else 0
    return Ledger(
        expected=len(message_ids) * len(channels),
        sends=sent.count() + inbox_sends,
        distinct=sent.values("delivery_id").distinct().count()
        + (inbox.values("delivery_id").distinct().count() if "inapp" in channels else 0),
        replays=sandbox.filter(outcome="replayed").count(),
    )
