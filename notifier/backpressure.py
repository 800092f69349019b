"""Backpressure: how deep are the bulk queues, and is it time to admit less?

Depth is read from the broker (LLEN of each bulk queue on Redis, the ready-message count of a
passive queue declare on RabbitMQ), at most once a second per process. Above
NOTIFIER_BULK_HIGH_WATER tasks, marketing and low-priority messages are held in PostgreSQL
instead of queued, and the release job lets them in as the queues drain.
Transactional traffic is never held for this.
"""

from __future__ import annotations

import logging
import time
from typing import Any

import redis
from django.conf import settings
from kombu import Connection

from notifier.queues import Lane, lane_queues
from notifier.redis_client import broker_client

log = logging.getLogger(__name__)
CACHE_S = 1.0
RETRY_HOLD_S = 60

_cache: dict[str, tuple[float, int]] = {}
_amqp_connections: dict[str, Connection] = {}


def bulk_queue_depth() -> int:
    """Tasks waiting in the bulk lane's queues (each a batch of up to NOTIFIER_BATCH_SIZE)."""
    return lane_queue_depth(Lane.BULK)


def lane_queue_depth(lane: Lane) -> int:
    """Tasks waiting in a lane's queues (0 when the broker cannot be read)."""
    now = time.monotonic()
    hit = _cache.get(lane)
    if hit and now - hit[0] < CACHE_S:
        return hit[1]
    depth = 0
    if settings.CELERY_BROKER_URL.startswith(("amqp://", "amqps://", "pyamqp://")):
        depth = _amqp_depth(settings.CELERY_BROKER_URL, lane_queues(lane))
    elif (client := broker_client()) is not None:  # None: the embedded in-memory broker
        try:
            with client.pipeline(transaction=False) as pipe:
                for queue in lane_queues(lane):
                    pipe.llen(queue)
                depth = sum(int(n) for n in pipe.execute())
        except redis.RedisError:
            log.warning("cannot read %s queue depth; admitting as usual", lane, exc_info=True)
    _cache[lane] = (now, depth)
    return depth


def _amqp_depth(url: str, queues: list[str]) -> int:
    """Ready messages in the queues on RabbitMQ (one connection per process, kept)."""
    connection = _amqp_connections.setdefault(url, Connection(url, connect_timeout=0.5))
    total = 0
    try:
        for queue in queues:
            channel: Any = connection.channel()
            try:
                total += channel.queue_declare(queue=queue, passive=True).message_count
            except connection.channel_errors:  # not declared yet: no worker consumed it
                continue
            finally:
                channel.close()
    except connection.connection_errors:
        log.warning("cannot read bulk queue depth; admitting as usual", exc_info=True)
        _amqp_connections.pop(url).release()
        return 0
    return total


def bulk_congested() -> bool:
    return bulk_queue_depth() > settings.NOTIFIER_BULK_HIGH_WATER


def reset_depth_cache() -> None:
    _cache.clear()
