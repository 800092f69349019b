"""The one place that opens Redis clients: which URL each job reads, and one client per URL.

Two Redises, possibly the same server:

- **state** (`state_redis_url`, `state_client`): what Notifier shares between processes:
  provider rate-limit buckets and circuit breakers, request limits, alert cooldowns, beat
  heartbeats. NOTIFIER_REDIS_URL, else the Celery broker when that is Redis. None in embedded mode
  (NOTIFIER_EMBEDDED), where that state lives in process.
- **broker** (`broker_redis_url`, `broker_client`): the Celery broker, read for queue depths
  (backpressure, metrics) and by the bench. None when the broker is not Redis (RabbitMQ, the
  embedded in-memory broker).

Clients are made on first use (importing this must not need Redis) and kept, one per URL and
options, so each process reuses one connection pool instead of opening a connection per call.
redis-py's pools notice a fork and start afresh in the child, so prefork workers share none.
"""

from __future__ import annotations

import threading

import redis
import redis.asyncio
from django.conf import settings

# URL schemes redis-py connects to (unix:// is a socket path).
REDIS_SCHEMES = ("redis://", "rediss://", "unix://")
# Connect and read timeouts unless a caller asks otherwise: Redis sits on the hot path of
# every delivery (limits, breakers) and of readiness probes, and a slow or black-holed Redis
# must cost them half a second, not a hang.
FAST_TIMEOUT_S = 0.5
# A pooled connection idle this long is pinged before use, so one that a proxy or a failover
# dropped is replaced instead of failing the command.
HEALTH_CHECK_INTERVAL_S = 30

_ClientKey = tuple[str, float | None, bool]
_clients: dict[_ClientKey, redis.Redis] = {}
_clients_lock = threading.Lock()


def is_redis_url(url: str) -> bool:
    return url.startswith(REDIS_SCHEMES)


def state_redis_url() -> str:
    """NOTIFIER_REDIS_URL, else the Celery broker when it is Redis; "" when neither is."""
    if settings.NOTIFIER_REDIS_URL:
        return str(settings.NOTIFIER_REDIS_URL)
    broker = str(settings.CELERY_BROKER_URL)
    return broker if is_redis_url(broker) else ""


def broker_redis_url() -> str:
    """The Celery broker's URL when the broker is Redis; "" otherwise."""
    broker = str(settings.CELERY_BROKER_URL)
    return broker if is_redis_url(broker) else ""


def state_client(
    *, timeout_s: float | None = FAST_TIMEOUT_S, decode_responses: bool = False
) -> redis.Redis | None:
    """The client for Notifier's shared state; None in embedded mode or without Redis."""
    url = state_redis_url()
    if settings.NOTIFIER_EMBEDDED or not url:
        return None
    return redis_client(url, timeout_s=timeout_s, decode_responses=decode_responses)


def broker_client(
    *, timeout_s: float | None = FAST_TIMEOUT_S, decode_responses: bool = False
) -> redis.Redis | None:
    """The client for the Celery broker; None when the broker is not Redis."""
    url = broker_redis_url()
    if not url:
        return None
    return redis_client(url, timeout_s=timeout_s, decode_responses=decode_responses)


def redis_client(
    url: str, *, timeout_s: float | None = FAST_TIMEOUT_S, decode_responses: bool = False
) -> redis.Redis:
    """The process's client for `url` (made once). `timeout_s` bounds connecting and each
    command (None: wait as long as the command takes, for bulk jobs such as FLUSHDB);
    `decode_responses` returns str instead of bytes."""
    key = (url, timeout_s, decode_responses)
    client = _clients.get(key)
    if client is None:
        with _clients_lock:
            client = _clients.get(key)
            if client is None:
                client = _clients[key] = redis.Redis.from_url(
                    url,
                    socket_timeout=timeout_s,
                    socket_connect_timeout=timeout_s,
                    health_check_interval=HEALTH_CHECK_INTERVAL_S,
                    decode_responses=decode_responses,
                )
    return client


def state_async_client_new() -> redis.asyncio.Redis | None:
    """A new asyncio client for the state Redis (None where `state_client` is None), for the
    caller to keep: an asyncio client belongs to the event loop it first runs on, so it cannot
    be shared process-wide like the others. Its reads wait as long as they must (a pub/sub
    listener is idle for hours); connecting is bounded as everywhere else, and TCP keepalive
    notices a peer that vanished without closing."""
    url = state_redis_url()
    if settings.NOTIFIER_EMBEDDED or not url:
        return None
    return redis.asyncio.Redis.from_url(
        url,
        socket_timeout=None,
        socket_connect_timeout=FAST_TIMEOUT_S,
        socket_keepalive=True,
        health_check_interval=HEALTH_CHECK_INTERVAL_S,
    )
