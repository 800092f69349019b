"""Shared fixtures: real Celery worker processes on real Redis and the test PostgreSQL database."""

from __future__ import annotations

import os
import signal
import subprocess
import time
import uuid
from collections.abc import Callable, Iterator
from datetime import datetime
from pathlib import Path
from typing import Any

import pytest
import redis
import time_machine
from django.conf import settings

from channels.registry import reset_providers
from notifier.backpressure import reset_depth_cache
from notifier.events_out.record import endpoints_cache_clear
from notifier.provider_limits import limits_reset
from notifier.redis_client import broker_client
from notifier.selectors import type_cache_clear
from notifier_site.embedded import worker_argv

ROOT = Path(__file__).resolve().parent.parent


def wait_until(
    predicate: Callable[[], Any],
    *,
    timeout: float = 30.0,
    interval: float = 0.05,
    message: str = "condition",
) -> Any:
    """Poll until predicate() is truthy; fail the test with `message` after `timeout` seconds."""
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {message}")
        time.sleep(interval)


# CI provides every service and tool a test needs (PostgreSQL, Redis, RabbitMQ, Chromium,
# kubectl): there, a test that skips for want of one is a failure, not a quiet pass.
STRICT = os.environ.get("NOTIFIER_TESTS_STRICT") == "1"


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo[None]) -> Iterator[None]:
    outcome = yield
    report = outcome.get_result()  # type: ignore[attr-defined]
    if STRICT and report.skipped and not hasattr(report, "wasxfail"):
        reason = report.longrepr[2] if isinstance(report.longrepr, tuple) else report.longrepr
        report.outcome = "failed"
        report.longrepr = (
            f"skipped where every service is provided (NOTIFIER_TESTS_STRICT=1): {reason}"
        )


@pytest.fixture(scope="session", autouse=True)
def _wall_clock() -> Iterator[None]:
    """NOTIFIER_TEST_CLOCK=2026-12-06T23:00+00:00 runs the tests as if started at that instant,
    the clock ticking on from there: a check that no test depends on the hour it runs at (users
    have quiet hours, 22:00-08:00 local). Only this process's clock moves: worker processes,
    PostgreSQL and file times keep the real one, so it checks the tests without workers, and
    a test that compares with a file's time (the worker probe's heartbeat) fails under it."""
    at = os.environ.get("NOTIFIER_TEST_CLOCK")
    if not at:
        yield
        return
    with time_machine.travel(datetime.fromisoformat(at), tick=True):
        yield


@pytest.fixture
def report_figure(record_property: Callable[[str, object], None]) -> Callable[[str], None]:
    """Record a figure a test measured (a rate, a latency), for the summary at the end of the
    run: the README quotes some of them, and a passing test's output is otherwise never shown."""

    def report(text: str) -> None:
        record_property("figure", text)

    return report


def pytest_terminal_summary(terminalreporter: Any) -> None:
    figures = [
        (report.nodeid, value)
        for reports in terminalreporter.stats.values()
        for report in reports
        if getattr(report, "when", None) == "call"
        for name, value in getattr(report, "user_properties", ())
        if name == "figure"
    ]
    if figures:
        terminalreporter.section("figures measured by tests")
        for nodeid, text in figures:
            terminalreporter.write_line(f"{nodeid}: {text}")


@pytest.fixture(autouse=True)
def _fresh_caches() -> Iterator[None]:
    """Per-process caches and shared limit and breaker state never leak from one test into the
    next."""
    type_cache_clear()
    reset_providers()
    reset_depth_cache()
    limits_reset()
    endpoints_cache_clear()
    yield
    type_cache_clear()
    reset_providers()
    reset_depth_cache()
    endpoints_cache_clear()


@pytest.fixture
def inapp_through_the_queue(settings: Any) -> None:
    """In-app deliveries take the queue, as any channel's do: a rate limit on the in-app
    provider (high enough never to defer one) means its deliver task must ask the bucket, so
    routing no longer writes them sent at once. For tests of the deliver path itself."""
    settings.NOTIFIER_RATE_LIMITS = {**settings.NOTIFIER_RATE_LIMITS, "inapp:inapp": "10000/s"}


def broker_redis() -> redis.Redis:
    """The test broker's Redis, with no timeout (FLUSHDB, waits on workers)."""
    client = broker_client(timeout_s=None)
    assert client is not None, "the tests need a Redis broker: CELERY_BROKER_URL=redis://..."
    return client


@pytest.fixture
def redis_client() -> redis.Redis:
    return broker_redis()


class WorkerProcess:
    """A `celery worker` subprocess on the test database and the test Redis database."""

    def __init__(
        self,
        *,
        queues: list[str],
        concurrency: int = 2,
        extra_env: dict[str, str] | None = None,
        control_app: Any = None,
        broker_url: str | None = None,
        argv: Callable[[str], list[str]] | None = None,
    ) -> None:
        """`argv`, given the worker's name, makes its command line (e.g. a deployed one)."""
        from notifier_site.celery import app

        self.app = control_app or app
        self.name = f"test-{uuid.uuid4().hex[:8]}@localhost"
        db = settings.DATABASES["default"]
        env = {
            **os.environ,
            "DJANGO_SETTINGS_MODULE": "tests.settings",
            "DATABASE_URL": (
                f"postgres://{db['USER']}@{db['HOST'] or '127.0.0.1'}:"
                f"{db['PORT'] or 5432}/{db['NAME']}"
            ),
            "CELERY_BROKER_URL": broker_url or settings.CELERY_BROKER_URL,
            "REDIS_URL": broker_url or settings.NOTIFIER_REDIS_URL,
            "NOTIFIER_RETRY_BASE_S": str(settings.NOTIFIER_RETRY_BASE_S),
            "NOTIFIER_RETRY_MAX_S": str(settings.NOTIFIER_RETRY_MAX_S),
            **(extra_env or {}),
        }
        # A session of its own, so a test can SIGKILL the worker and its pool in one go.
        self.process = subprocess.Popen(
            argv(self.name)
            if argv
            else worker_argv(name=self.name, queues=queues, concurrency=concurrency),
            cwd=ROOT,
            env=env,
            start_new_session=True,
        )

    def wait_ready(self, timeout: float = 60.0) -> None:
        def answered() -> bool:
            if self.process.poll() is not None:
                raise AssertionError(f"worker exited with {self.process.returncode}")
            return bool(self.app.control.ping(destination=[self.name], timeout=0.5))

        wait_until(answered, timeout=timeout, message=f"worker {self.name} to answer ping")

    def kill(self) -> None:
        """SIGKILL the worker and its pool children at once, like a machine that dies."""
        if self.process.poll() is None:
            os.killpg(self.process.pid, signal.SIGKILL)
            self.process.wait()

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=20)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()


@pytest.fixture(scope="session")
def celery_worker_process(django_db_setup: None, django_db_blocker: Any) -> Iterator[WorkerProcess]:
    """One real worker on every queue, shared by the integration tests of a session."""
    from notifier.queues import ALL_QUEUES

    broker_redis().flushdb()
    worker = WorkerProcess(queues=ALL_QUEUES)
    try:
        worker.wait_ready()
        yield worker
    finally:
        worker.stop()


@pytest.fixture
def worker(
    celery_worker_process: WorkerProcess, transactional_db: None, redis_client: redis.Redis
) -> Iterator[WorkerProcess]:
    """A running worker, with the test's writes committed so it can see them. Nothing the test
    set going outlives it (`worker_left_idle`)."""
    yield celery_worker_process
    worker_left_idle(celery_worker_process, redis_client)


def worker_left_idle(worker: WorkerProcess, client: redis.Redis) -> None:
    """Drop what a test left queued or scheduled (a retry's countdown) in the shared worker and
    wait for what it is running: the session's worker otherwise goes on writing into the next
    test's database, whose ids may be the same numbers again after the flush."""
    from notifier.queues import ALL_QUEUES

    inspect = worker.app.control.inspect([worker.name], timeout=1.0)
    for view in (inspect.scheduled(), inspect.reserved()):
        for task in (view or {}).get(worker.name, []):
            task_id = (task.get("request") or task).get("id")
            if task_id:
                worker.app.control.revoke(task_id)
    client.delete(*ALL_QUEUES)
    wait_until(
        lambda: not (inspect.active() or {}).get(worker.name),
        timeout=60,
        message="the shared worker to finish the test's running tasks",
    )


@pytest.fixture(scope="session")
def gunicorn_server(django_db_setup: None, django_db_blocker: Any) -> Iterator[Callable[..., Any]]:
    """`gunicorn_server(**env)`: a running `gunicorn notifier_site.wsgi` (tests/gunicorn.py) with
    that environment on top of the test settings; one process per distinct environment, shared
    by the session's tests. Tests that use it need `transactional_db`, so the server's own
    connection sees their rows."""
    from tests.gunicorn import GunicornServer  # it imports this module: not at the top

    started: dict[tuple[tuple[str, str], ...], GunicornServer] = {}

    def server(**env: str) -> GunicornServer:
        key = tuple(sorted(env.items()))
        if key not in started:
            started[key] = GunicornServer(dict(env))
            started[key].wait_ready()
        return started[key]

    try:
        yield server
    finally:
        for running in started.values():
            running.stop()


@pytest.fixture(scope="session")
def uvicorn_server(django_db_setup: None, django_db_blocker: Any) -> Iterator[Callable[..., Any]]:
    """`uvicorn_server(**env)`: a running `uvicorn notifier_site.asgi` (tests/uvicorn.py), one
    process per distinct environment, shared by the session's tests, as `gunicorn_server`.
    The file limit is raised first (the server inherits it): tests hold hundreds of streams."""
    import resource

    from tests.uvicorn import UvicornServer

    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (max(soft, min(hard, 8192)), hard))
    started: dict[tuple[tuple[str, str], ...], UvicornServer] = {}

    def server(**env: str) -> UvicornServer:
        key = tuple(sorted(env.items()))
        if key not in started or started[key].process.poll() is not None:
            started[key] = UvicornServer(dict(env))
            started[key].wait_ready()
        return started[key]

    try:
        yield server
    finally:
        for running in started.values():
            running.stop()
