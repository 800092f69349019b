"""Cooldowns: "the first caller in N seconds", shared by every process through Redis (SET NX
with an expiry), in process when there is no Redis (the embedded default). Alerts use them to
alert once per cooldown, Sentry cron check-ins to check in once a minute."""

from __future__ import annotations

import logging
import threading
import time

import redis

from notifier.redis_client import state_client

log = logging.getLogger(__name__)

COOLDOWN_KEY = "notifier:alerts:cooldown:{key}"  # the key name predates this module; kept
_local_cooldowns: dict[str, float] = {}
_local_lock = threading.Lock()


def cooldown_take(key: str, seconds: float) -> bool:
    """True for the first caller in `seconds` (shared by every process through Redis)."""
    client = state_client()
    if client is None:
        with _local_lock:
            now = time.monotonic()
            if _local_cooldowns.get(key, 0.0) > now:
                return False
            _local_cooldowns[key] = now + seconds
            return True
    try:
        return bool(client.set(COOLDOWN_KEY.format(key=key), "1", nx=True, ex=max(1, int(seconds))))
    except redis.RedisError:
        log.warning("cannot reach Redis for the alert cooldown of %s; alerting anyway", key)
        return True


def cooldown_reset() -> None:
    """Forget every cooldown (tests)."""
    _local_cooldowns.clear()
    client = state_client(timeout_s=None)
    if client is not None:
        keys = list(client.scan_iter(match=COOLDOWN_KEY.format(key="*")))
        if keys:
            client.delete(*keys)
