"""`manage.py bench`: pipeline throughput and latency, side by side with a naive baseline.

Both runs use the same PostgreSQL, Redis and worker processes, over the same N in-app + email
notifications. Prints a table, then one JSON line. Not a test: nothing here asserts a speed.
"""

from __future__ import annotations

import json
import os
import subprocess
import time
import uuid
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import redis
from django.conf import settings
from django.core.management import call_command
from django.core.management.base import BaseCommand, CommandError
from django.db import connection

from notifier.api import notify, notify_many
from notifier.benchmarks import NAIVE_QUEUE, naive_notify
from notifier.celery import app
from notifier.embedded import worker_argv
from notifier.models import Delivery, InboxItem, User
from notifier.queues import ALL_QUEUES
from notifier.status import TERMINAL

ROOT = Path(settings.BASE_DIR)
TYPE_KEY = "order.shipped"
CHANNELS = ["inapp", "email"]
IDLE_GAP_S = 0.02
CONTEXT = {
    "order_number": "B1",
    "carrier": "SF Express",
    "eta": "Tuesday",
    "tracking_url": "https://example.com/track/B1",
}
TABLES = [
    "notifier_deliveryevent",
    "notifier_inboxitem",
    "notifier_delivery",
    "notifier_message",
    "notifier_channels_sandboxsend",
]


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    if not ordered:
        return float("nan")
    index = min(len(ordered) - 1, max(0, round(q / 100 * (len(ordered) - 1))))
    return ordered[index]


class Command(BaseCommand):
    help = "Measure the pipeline against a naive one-task-per-recipient baseline."

    def add_arguments(self, parser: Any) -> None:
        parser.add_argument(
            "--messages",
            type=int,
            default=4000,
            help="notifications per throughput run (each in-app + email)",
        )
        parser.add_argument("--latency-samples", type=int, default=300)
        parser.add_argument(
            "--concurrency",
            type=int,
            default=2,
            help="worker processes (prefork children) for both runs",
        )

    def handle(self, *args: Any, **options: Any) -> None:
        if connection.vendor != "postgresql" or settings.NOTIFIER_EMBEDDED:
            raise CommandError(
                "bench runs on PostgreSQL and Redis: set DATABASE_URL and "
                "CELERY_BROKER_URL (or use `make bench`)"
            )
        call_command("migrate", verbosity=0, interactive=False)
        n, samples = options["messages"], options["latency_samples"]
        users = self.users(max(n, samples))
        self.clean()
        redis.Redis.from_url(settings.CELERY_BROKER_URL).flushdb()
        worker = self.start_worker(options["concurrency"])
        try:
            self.say(
                f"bench: {n} notifications x {len(CHANNELS)} channels, "
                f"{options['concurrency']} worker processes, {os.cpu_count()} CPUs"
            )
            naive = self.run_naive(users[:n])
            self.clean()
            pipeline = self.run_pipeline(users[:n])
            self.clean()
            call_ms, e2e_ms = self.idle_latencies(users[:samples])
        finally:
            worker.terminate()
            worker.wait(timeout=30)
        result = {
            "messages": n,
            "naive_msgs_per_s": round(naive, 1),
            "pipeline_msgs_per_s": round(pipeline, 1),
            "ratio": round(pipeline / naive, 2),
            "notify_call_ms_p50": round(percentile(call_ms, 50), 3),
            "notify_call_ms_p99": round(percentile(call_ms, 99), 3),
            "e2e_inapp_ms_p50": round(percentile(e2e_ms, 50), 1),
            "e2e_inapp_ms_p99": round(percentile(e2e_ms, 99), 1),
        }
        self.table(result)
        self.stdout.write(json.dumps(result))

    # --- setup -----------------------------------------------------------------------------

    def say(self, text: str) -> None:
        self.stderr.write(text)

    def users(self, count: int) -> list[User]:
        existing = list(User.objects.filter(username__startswith="bench-").order_by("pk")[:count])
        missing = count - len(existing)
        if missing > 0:
            start = len(existing)
            User.objects.bulk_create(
                [
                    User(
                        username=f"bench-{i}",
                        email=f"bench-{i}@example.com",
                        first_name="Bench",
                        password="!",
                    )
                    for i in range(start, start + missing)
                ]
            )
            existing = list(
                User.objects.filter(username__startswith="bench-").order_by("pk")[:count]
            )
        return existing

    def clean(self) -> None:
        with connection.cursor() as cursor:
            cursor.execute(f"TRUNCATE {', '.join(TABLES)} RESTART IDENTITY")

    def start_worker(self, concurrency: int) -> subprocess.Popen[bytes]:
        name = f"bench-{uuid.uuid4().hex[:6]}@localhost"
        argv = worker_argv(
            name=name,
            queues=[*ALL_QUEUES, NAIVE_QUEUE],
            concurrency=concurrency,
            include=("notifier.benchmarks",),
        )
        worker = subprocess.Popen(argv, cwd=ROOT, env=os.environ.copy())
        deadline = time.monotonic() + 60
        while not app.control.ping(destination=[name], timeout=0.5):
            if worker.poll() is not None or time.monotonic() > deadline:
                raise CommandError("the bench worker did not start")
        return worker

    def wait_for(self, label: str, done: Any, total: int, timeout: float = 600) -> None:
        deadline = time.monotonic() + timeout
        last_report = 0.0
        while True:
            count = done()
            if count >= total:
                return
            if time.monotonic() - last_report > 2:
                self.say(f"  {label}: {count}/{total}")
                last_report = time.monotonic()
            if time.monotonic() > deadline:
                raise CommandError(f"{label}: only {count}/{total} after {timeout}s")
            time.sleep(0.05)

    def finished_deliveries(self) -> int:
        return Delivery.objects.filter(status__in=TERMINAL).count()

    # --- runs ------------------------------------------------------------------------------

    def run_naive(self, users: list[User]) -> float:
        self.say("naive baseline: one task per recipient, one INSERT per row")
        start = time.perf_counter()
        for user in users:
            naive_notify.apply_async(args=(user.pk, TYPE_KEY, CONTEXT, CHANNELS), queue=NAIVE_QUEUE)
        self.wait_for("naive", self.finished_deliveries, len(users) * len(CHANNELS))
        return len(users) / (time.perf_counter() - start)

    def run_pipeline(self, users: list[User]) -> float:
        self.say("pipeline: notify_many -> batched prepare -> batched deliver per channel")
        start = time.perf_counter()
        notify_many(
            users, TYPE_KEY, CONTEXT, channels=CHANNELS, idempotency_key=f"bench:{uuid.uuid4().hex}"
        )
        self.wait_for("pipeline", self.finished_deliveries, len(users) * len(CHANNELS))
        return len(users) / (time.perf_counter() - start)

    def idle_latencies(self, users: list[User]) -> tuple[list[float], list[float]]:
        """One notify() at a time on an idle system, each waiting for the last to land.

        Returns the call's own cost (what the caller pays: one INSERT and one publish, in
        autocommit) and the in-app end-to-end time, from notify() returning to the inbox item's
        creation time as written by the worker.
        """
        self.say("notify() call and in-app end to end, one at a time on an idle system")
        calls, e2e = [], []
        for user in users:
            start = time.perf_counter()
            message = notify(user, TYPE_KEY, CONTEXT, channels=["inapp"])
            calls.append((time.perf_counter() - start) * 1000)
            returned = datetime.now(UTC)
            deadline = time.monotonic() + 10
            while True:
                created = (
                    InboxItem.objects.filter(message_id=message.pk)
                    .values_list("created_at", flat=True)
                    .first()
                )
                if created is not None:
                    break
                if time.monotonic() > deadline:
                    raise CommandError(f"message {message.pk} never reached the inbox")
                time.sleep(0.002)
            e2e.append((created - returned).total_seconds() * 1000)
            # The worker acks and tidies up after the inbox row commits; let it finish so the
            # next call meets an idle system, as this measure promises.
            time.sleep(IDLE_GAP_S)
        return calls, e2e

    def table(self, result: dict[str, Any]) -> None:
        rows = [
            ("naive baseline", f"{result['naive_msgs_per_s']:.0f} msgs/s", "1.00x"),
            (
                "pipeline (notify_many)",
                f"{result['pipeline_msgs_per_s']:.0f} msgs/s",
                f"{result['ratio']:.2f}x",
            ),
            (
                "notify() call p50 / p99 (idle)",
                f"{result['notify_call_ms_p50']:.2f} / {result['notify_call_ms_p99']:.2f} ms",
                "",
            ),
            (
                "in-app e2e p50 / p99 (idle)",
                f"{result['e2e_inapp_ms_p50']:.1f} / {result['e2e_inapp_ms_p99']:.1f} ms",
                "",
            ),
        ]
        self.stdout.write(f"{'measure':30} {'value':22} vs naive")
        for name, value, ratio in rows:
            self.stdout.write(f"{name:30} {value:22} {ratio}")
