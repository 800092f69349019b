"""For `manage.py bench --only live`: idle inbox streams held by one uvicorn process, and how fast
one change published to all their users reaches them.

One `uvicorn notifier_site.asgi` process (one event loop, as the `web-live` service runs it) on
loopback, on the bench's database and Redis. N users with a logged-in session each open one
stream (from this process, on asyncio); once every stream has its first event, the server's
resident memory, threads and Redis connections are read: memory per connection is the growth
over a server holding one stream, divided by N. Then, a few rounds: one "new" change published
for all N users (`inbox_changed`, one pipelined PUBLISH per user, as a fan-out batch does) and
the time until each stream has its event, which includes the server reading each user's unread
count. Nothing here asserts a speed.
"""

from __future__ import annotations

import asyncio
import os
import resource
import string
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from datetime import timedelta
from pathlib import Path
from typing import Any

import psutil
from django.conf import settings
from django.contrib.auth import BACKEND_SESSION_KEY, HASH_SESSION_KEY, SESSION_KEY
from django.contrib.sessions.backends.db import SessionStore
from django.contrib.sessions.models import Session
from django.utils import timezone
from django.utils.crypto import get_random_string

from notifier.live_inbox import InboxChange, inbox_changed
from notifier.models import User
from notifier.redis_client import state_client
from notifier_site.bench_http import LoggedServer, free_port

LIVE_CONNECTIONS = 2000
LIVE_ROUNDS = 5
STREAM_PATH = "/api/inbox/stream/"
USER_PREFIX = "bench-live-"
SESSION_KEY_CHARS = string.ascii_lowercase + string.digits  # as Django's own session keys


class LiveSite(LoggedServer):
    """`uvicorn notifier_site.asgi`, one process, DEBUG off, the public limits off (every
    stream comes from one address)."""

    def __init__(self, root: Path) -> None:
        self.port = free_port()
        self.log = tempfile.NamedTemporaryFile(  # noqa: SIM115 - kept open for the server's life
            prefix="bench-uvicorn-", suffix=".log", delete=False
        )
        env = {
            **os.environ,
            "DJANGO_DEBUG": "false",
            "DJANGO_ALLOWED_HOSTS": "127.0.0.1",
            "NOTIFIER_RATE_LIMIT_PUBLIC": "false",
        }
        self.process = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "uvicorn",
                "notifier_site.asgi:application",
                "--host=127.0.0.1",
                f"--port={self.port}",
                "--no-access-log",
                "--lifespan=off",
                "--backlog=4096",
                "--timeout-graceful-shutdown=2",
            ],
            cwd=root,
            env=env,
            stdout=self.log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )


def live_users(count: int) -> list[tuple[int, str]]:
    """(user id, session cookie) for `count` bench users, made once and kept."""
    have = set(
        User.objects.filter(username__startswith=USER_PREFIX).values_list("username", flat=True)
    )
    User.objects.bulk_create(
        [
            User(username=f"{USER_PREFIX}{n}", password="!")
            for n in range(count)
            if f"{USER_PREFIX}{n}" not in have
        ],
        batch_size=1000,
    )
    users = list(User.objects.filter(username__startswith=USER_PREFIX).order_by("pk")[:count])
    encoder = SessionStore()
    expires = timezone.now() + timedelta(days=1)
    sessions = []
    for user in users:
        data = {
            SESSION_KEY: str(user.pk),
            BACKEND_SESSION_KEY: settings.AUTHENTICATION_BACKENDS[0],
            HASH_SESSION_KEY: user.get_session_auth_hash(),
        }
        key = get_random_string(32, SESSION_KEY_CHARS)
        sessions.append(
            Session(session_key=key, session_data=encoder.encode(data), expire_date=expires)
        )
    Session.objects.bulk_create(sessions, batch_size=1000)
    name = settings.SESSION_COOKIE_NAME
    return [(user.pk, f"{name}={s.session_key}") for user, s in zip(users, sessions, strict=True)]


class Stream:
    """One stream read on asyncio: the time each `inbox` event arrived."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.reader, self.writer = reader, writer
        self.arrivals: list[float] = []
        self.first = asyncio.get_running_loop().create_future()

    @classmethod
    async def open(cls, port: int, cookie: str) -> Stream:
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        writer.write(
            f"GET {STREAM_PATH} HTTP/1.1\r\nHost: 127.0.0.1\r\nCookie: {cookie}\r\n\r\n".encode()
        )
        await writer.drain()
        return cls(reader, writer)

    async def read(self) -> None:
        status = await self.reader.readline()
        if b" 200 " not in status:
            self.first.set_exception(RuntimeError(f"the stream answered {status!r}"))
            return
        while line := await self.reader.readline():
            if line.startswith(b"event: inbox"):
                self.arrivals.append(time.perf_counter())
                if not self.first.done():
                    self.first.set_result(None)

    def close(self) -> None:
        self.writer.close()


def _server_figures(pid: int) -> tuple[int, int, int]:
    """The server's resident bytes, threads and TCP connections to the state Redis."""
    process = psutil.Process(pid)
    client = state_client()
    redis_port = client.connection_pool.connection_kwargs.get("port", 6379) if client else 6379
    to_redis = sum(
        1 for c in process.net_connections(kind="tcp") if c.raddr and c.raddr.port == redis_port
    )
    return process.memory_info().rss, process.num_threads(), to_redis


async def _measure(
    port: int, pid: int, users: list[tuple[int, str]], rounds: int, say: Callable[[str], None]
) -> dict[str, Any]:
    warm = await Stream.open(port, users[0][1])
    warm_task = asyncio.create_task(warm.read())
    await asyncio.wait_for(warm.first, 30)
    await asyncio.sleep(1.0)  # the warm-up request's thread handed back
    rss_before, _, _ = _server_figures(pid)

    started = time.perf_counter()
    streams: list[Stream] = []
    tasks = []
    for _, cookie in users[1:]:
        stream = await Stream.open(port, cookie)
        streams.append(stream)
        tasks.append(asyncio.create_task(stream.read()))
    await asyncio.wait_for(asyncio.gather(*(s.first for s in streams)), 300)
    open_s = time.perf_counter() - started
    say(f"bench: {len(streams) + 1} streams open in {open_s:.1f} s")
    await asyncio.sleep(2.0)  # idle: every request's thread handed back
    rss_after, threads, to_redis = _server_figures(pid)
    held = 1 + sum(1 for s in streams if not s.reader.at_eof())

    all_streams = [warm, *streams]
    user_ids = [user_id for user_id, _ in users]
    latencies_ms: list[float] = []
    for _ in range(rounds):
        before = [len(s.arrivals) for s in all_streams]
        published = time.perf_counter()
        # In a thread (the ORM is sync); outside a transaction, so published at once.
        await asyncio.to_thread(inbox_changed, user_ids, InboxChange.NEW)
        deadline = time.monotonic() + 60
        while any(len(s.arrivals) == n for s, n in zip(all_streams, before, strict=True)):
            if time.monotonic() > deadline:
                raise RuntimeError("an event did not reach every stream within 60 s")
            await asyncio.sleep(0.005)
        latencies_ms += [(s.arrivals[-1] - published) * 1000 for s in all_streams]
        await asyncio.sleep(0.5)
    for stream in all_streams:
        stream.close()
    for task in [warm_task, *tasks]:
        task.cancel()
    await asyncio.gather(warm_task, *tasks, return_exceptions=True)
    latencies_ms.sort()
    return {
        "sse_connections_per_process": held,
        "sse_open_s": round(open_s, 2),
        "sse_memory_per_connection_kib": round((rss_after - rss_before) / len(streams) / 1024, 1),
        "sse_server_threads": threads,
        "sse_server_redis_connections": to_redis,
        "sse_event_rounds": rounds,
        "sse_event_p50_ms": round(latencies_ms[len(latencies_ms) // 2], 1),
        "sse_event_p99_ms": round(latencies_ms[int(len(latencies_ms) * 0.99) - 1], 1),
    }


def live_phases(
    *, root: Path, connections: int = LIVE_CONNECTIONS, say: Callable[[str], None] = print
) -> dict[str, Any]:
    """The live inbox figures for the bench's JSON line."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    wanted = connections * 2 + 1024  # this process's sockets, and the server's (inherited)
    if soft < wanted:
        resource.setrlimit(resource.RLIMIT_NOFILE, (min(hard, wanted), hard))
    say(f"bench: {connections} idle inbox streams on one uvicorn process")
    users = live_users(connections)
    site = LiveSite(root)
    try:
        _wait_ready(site)
        return asyncio.run(_measure(site.port, site.process.pid, users, LIVE_ROUNDS, say))
    finally:
        site.stop()
        Session.objects.filter(
            session_key__in=[cookie.split("=", 1)[1] for _, cookie in users]
        ).delete()


def live_table_rows(result: dict[str, Any]) -> list[tuple[str, str, str]]:
    return [
        (
            "idle SSE streams on one uvicorn process",
            f"{result['sse_connections_per_process']}",
            f"opened in {result['sse_open_s']:.1f} s; {result['sse_server_threads']} threads, "
            f"{result['sse_server_redis_connections']} Redis connections",
        ),
        ("  memory per stream", f"{result['sse_memory_per_connection_kib']:.1f} KiB", "RSS"),
        (
            "  one change to all their users p50 / p99",
            f"{result['sse_event_p50_ms']:.0f} / {result['sse_event_p99_ms']:.0f} ms",
            f"{result['sse_event_rounds']} rounds, the counts read grouped",
        ),
    ]


def _wait_ready(site: LiveSite, timeout: float = 60.0) -> None:
    import http.client

    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if site.process.poll() is not None:
            raise RuntimeError(f"uvicorn exited with {site.process.returncode}: {site.tail()}")
        try:
            connection = http.client.HTTPConnection("127.0.0.1", site.port, timeout=5)
            connection.request("GET", "/health/live/")
            if connection.getresponse().status == 200:
                return
        except OSError:
            pass
        time.sleep(0.1)
    raise RuntimeError(f"uvicorn did not answer in {timeout:.0f} s: {site.tail()}")
