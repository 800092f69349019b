"""Health: is this process able to do its work, and is beat still driving the periodic jobs?

- `/health/live/`: the process answers (no dependency checked: a liveness probe that failed
  on a database outage would restart every pod for nothing).
- `/health/ready/`: PostgreSQL answers, Redis answers (when not embedded), and beat is fresh.
  503 with every check's outcome when one fails, so a load balancer stops sending traffic and
  an operator sees which part is down.

Beat freshness comes from a heartbeat: each periodic job, when a worker finishes it, writes the
time into Redis (`beat_heartbeat`). A job whose heartbeat is older than `STALE_AFTER` times its
interval means beat, or the maintenance worker, has stopped.
"""

from __future__ import annotations

import contextlib
import time
from dataclasses import asdict, dataclass
from typing import Any

import redis
from django.db import connection

from notifier.periodic import BEAT_SCHEDULE
from notifier.redis_client import state_client

HEARTBEAT_KEY = "notifier:beat:heartbeat:{job}"
# The job whose heartbeat tells that beat is alive: the most frequent one (every 15 s).
WATCHED_JOB = "release-held"
STALE_AFTER = 4  # intervals without a heartbeat
REDIS_TIMEOUT_S = 0.5
TASK_JOBS = {spec["task"]: name for name, spec in BEAT_SCHEDULE.items()}


@dataclass(frozen=True)
class Check:
    name: str
    ok: bool
    detail: str


def beat_fresh(*, last_run: float | None, now: float, interval_s: float) -> Check:
    """Pure: is a job's last heartbeat recent enough?"""
    if last_run is None:
        return Check("beat", False, f"no heartbeat of {WATCHED_JOB} yet: is beat running?")
    age = now - last_run
    limit = STALE_AFTER * interval_s
    if age > limit:
        return Check(
            "beat", False, f"{WATCHED_JOB} last ran {age:.0f}s ago (more than {limit:.0f}s)"
        )
    return Check("beat", True, f"{WATCHED_JOB} ran {max(age, 0):.0f}s ago")


def _client() -> redis.Redis | None:
    return state_client(timeout_s=REDIS_TIMEOUT_S)


def beat_heartbeat(task_name: str) -> None:
    """Record that a periodic job ran (called when a worker finishes one); best effort."""
    job = TASK_JOBS.get(task_name)
    if job is None:  # every task passes here: no Redis client for the ordinary ones
        return
    client = _client()
    if client is None:
        return
    with contextlib.suppress(redis.RedisError):  # the readiness check reports Redis itself
        client.set(HEARTBEAT_KEY.format(job=job), repr(time.time()), ex=24 * 3600)


def check_database() -> Check:
    try:
        with connection.cursor() as cursor:
            cursor.execute("SELECT 1")
            cursor.fetchone()
    except Exception as exc:  # any driver error means "not ready"
        return Check("database", False, f"{type(exc).__name__}: {exc}".strip()[:300])
    return Check("database", True, connection.vendor)


def check_redis_and_beat(now: float | None = None) -> list[Check]:
    client = _client()
    if client is None:
        embedded = "embedded mode: no Redis, beat runs in-process"
        return [Check("redis", True, embedded), Check("beat", True, embedded)]
    try:
        client.ping()
        raw: bytes | None = client.get(HEARTBEAT_KEY.format(job=WATCHED_JOB))  # type: ignore[assignment]
    except redis.RedisError as exc:
        return [
            Check("redis", False, f"{type(exc).__name__}: {exc}"[:300]),
            Check("beat", False, "unknown: Redis is down"),
        ]
    interval = float(BEAT_SCHEDULE[WATCHED_JOB]["schedule"])
    last_run = float(raw) if raw is not None else None
    return [
        Check("redis", True, "PONG"),
        beat_fresh(
            last_run=last_run, now=now if now is not None else time.time(), interval_s=interval
        ),
    ]


def readiness(*, include_beat: bool = True) -> tuple[bool, dict[str, Any]]:
    """`include_beat=False` is for a web pod's readiness probe: a stopped beat is an alert for
    operators, not a reason to take every web pod out of the load balancer."""
    checks = [check_database(), *check_redis_and_beat()]
    if not include_beat:
        checks = [check for check in checks if check.name != "beat"]
    ok = all(check.ok for check in checks)
    return ok, {"status": "ok" if ok else "unavailable", "checks": [asdict(c) for c in checks]}
