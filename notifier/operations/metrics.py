"""Prometheus metrics: what the workers did (counters, histograms) and how things stand now.

Two kinds, collected two ways:

- **Events** (deliveries sent or failed, retries, provider call latency) are counted where they
  happen, in prefork worker processes. With PROMETHEUS_MULTIPROC_DIR set (before Python
  starts: prometheus_client reads it at import), each process writes its values to files in
  that directory and `/metrics/` adds up every process's files; without it, each process keeps
  its own and `/metrics/` shows only the web process's, which is right for the embedded demo
  (one process) and wrong for a deployment, so deploy sets it.
- **State** (queue depths, held deliveries by reason, circuit breakers) is read when Prometheus
  scrapes, by `StateCollector`: a few LLENs and breaker reads on Redis and one grouped COUNT on
  a partial index in PostgreSQL. Nothing to keep in sync, and the numbers are never stale.

`/metrics/` answers only a request carrying `Authorization: Bearer $NOTIFIER_METRICS_TOKEN`,
and is a 404 when the token is not set: metrics name providers and volumes, not for the public.
"""

from __future__ import annotations

import hmac
import logging
import os
import socket
from collections.abc import Iterator
from typing import Any

from django.conf import settings
from django.http import Http404, HttpRequest, HttpResponse
from prometheus_client import (
    CONTENT_TYPE_LATEST,
    REGISTRY,
    CollectorRegistry,
    Counter,
    Histogram,
    generate_latest,
)
from prometheus_client.core import GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

log = logging.getLogger(__name__)


def multiprocess_dir() -> str:
    return os.environ.get("PROMETHEUS_MULTIPROC_DIR", "")


if multiprocess_dir():
    # prometheus_client names each process's file after its pid; containers sharing the
    # directory each have their own pid 1, 7, ... so the host name goes into the name too.
    from prometheus_client import values

    _host = socket.gethostname().replace("_", "-")  # the file name is split on "_"
    values.ValueClass = values.MultiProcessValue(
        process_identifier=lambda: f"{_host}-{os.getpid()}"
    )

DELIVERIES = Counter(
    "notifier_deliveries",
    "Deliveries that reached sent or failed, by channel, provider and status",
    ["channel", "provider", "status"],
)
RETRIES = Counter(
    "notifier_retries",
    "Attempts that failed transiently and were scheduled to retry",
    ["channel", "provider"],
)
SEND_LATENCY = Histogram(
    "notifier_send_latency_seconds",
    "Duration of one provider call (a batch for providers that send in bulk)",
    ["channel", "provider"],
    buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0),
)

LIVE_PUBLISH_FAILURES = Counter(
    "notifier_live_inbox_publish_failures",
    "Inbox change events that could not be published to open inbox pages (Redis down); "
    "those pages catch up when their stream reconnects",
    # Labelled, so that importing this module creates no file in the multiprocess directory
    # (an unlabelled counter does at once, and `manage.py migrate` runs before it exists).
    ["change"],
)

BREAKER_VALUES = {"closed": 0, "half_open": 1, "open": 2, "unknown": -1}


def record_send(
    *,
    channel: str,
    provider: str,
    seconds: float | None,
    sent: int,
    failed: int,
    retried: int,
) -> None:
    """One provider call's outcome (`seconds` None: no call was made). Never raises."""
    try:
        if seconds is not None:
            SEND_LATENCY.labels(channel, provider).observe(seconds)
        if sent:
            DELIVERIES.labels(channel, provider, "sent").inc(sent)
        if failed:
            DELIVERIES.labels(channel, provider, "failed").inc(failed)
        if retried:
            RETRIES.labels(channel, provider).inc(retried)
    except Exception:  # a full disk under the multiprocess dir must not stop sending
        log.warning("could not record send metrics", exc_info=True)


def record_live_publish_failure(events: int, change: str) -> None:
    """Count inbox change events lost to a failed publish. Never raises."""
    try:
        LIVE_PUBLISH_FAILURES.labels(change).inc(events)
    except Exception:  # a full disk under the multiprocess dir must not stop sending
        log.warning("could not record live inbox metrics", exc_info=True)


# --- State read at scrape time ----------------------------------------------------------------


def queue_depths() -> dict[tuple[str, str], int]:
    """(lane, queue) -> tasks waiting, from the Redis broker; empty without one."""
    from notifier.queues import MAINTENANCE_QUEUE, WEBHOOKS_QUEUE, Lane, lane_queues
    from notifier.redis_client import broker_client

    client = broker_client()
    if client is None:
        return {}
    queues = [(str(lane), q) for lane in Lane for q in lane_queues(lane)]
    queues.append(("maintenance", MAINTENANCE_QUEUE))
    queues.append(("webhooks", WEBHOOKS_QUEUE))
    with client.pipeline(transaction=False) as pipe:
        for _, queue in queues:
            pipe.llen(queue)
        depths = pipe.execute()
    return {key: int(depth) for key, depth in zip(queues, depths, strict=True)}


def held_counts() -> dict[str, int]:
    """Held deliveries by reason (one grouped COUNT on the partial not-sent index)."""
    from django.db.models import Count

    from notifier.models import Delivery
    from notifier.status import DeliveryStatus

    rows = (
        Delivery.objects.filter(status=DeliveryStatus.HELD)
        .values_list("reason")
        .annotate(n=Count("pk"))
        .order_by()
    )
    return {reason or "none": n for reason, n in rows}


def breaker_states() -> dict[tuple[str, str], str]:
    from channels.base import Channel
    from channels.registry import configured_names
    from notifier.provider_limits import breaker_state

    return {
        (str(channel), name): str(breaker_state(f"{channel}:{name}"))
        for channel in Channel
        for name in configured_names(channel)
    }


class StateCollector(Collector):
    """Gauges read when scraped; a part that cannot be read is left out and logged."""

    def collect(self) -> Iterator[Metric]:
        yield from self._part("queue depths", self._queues)
        yield from self._part("held counts", self._held)
        yield from self._part("circuit breakers", self._breakers)

    @staticmethod
    def _part(what: str, build: Any) -> Iterator[Metric]:
        try:
            metric = build()
        except Exception:
            log.warning("metrics: cannot read %s", what, exc_info=True)
            return
        yield metric

    @staticmethod
    def _queues() -> Metric:
        family = GaugeMetricFamily(
            "notifier_queue_depth", "Tasks waiting in a Celery queue", labels=["lane", "queue"]
        )
        for (lane, queue), depth in sorted(queue_depths().items()):
            family.add_metric([lane, queue], depth)
        return family

    @staticmethod
    def _held() -> Metric:
        family = GaugeMetricFamily(
            "notifier_held_deliveries", "Deliveries held now, by reason", labels=["reason"]
        )
        for reason, count in sorted(held_counts().items()):
            family.add_metric([reason], count)
        return family

    @staticmethod
    def _breakers() -> Metric:
        family = GaugeMetricFamily(
            "notifier_circuit_breaker_state",
            "Circuit breaker per provider: 0 closed, 1 half-open, 2 open, -1 unknown (no Redis)",
            labels=["channel", "provider"],
        )
        for (channel, provider), state in sorted(breaker_states().items()):
            family.add_metric([channel, provider], BREAKER_VALUES.get(state, -1))
        return family


class _ThisProcess(Collector):
    """The default registry's metrics (this process only: no multiprocess dir)."""

    def collect(self) -> Iterator[Metric]:
        yield from REGISTRY.collect()


def scrape_registry(*, state: bool = True) -> CollectorRegistry:
    """What a scrape returns: every process's events (when shared) plus the state gauges."""
    from prometheus_client import multiprocess

    registry = CollectorRegistry()
    if multiprocess_dir():
        multiprocess.MultiProcessCollector(registry)
    else:
        registry.register(_ThisProcess())
    if state:
        registry.register(StateCollector())
    return registry


def token_allows(header: str, token: str) -> bool:
    """Pure: does an Authorization header carry the bearer token?"""
    scheme, _, given = header.partition(" ")
    return bool(token) and scheme.lower() == "bearer" and hmac.compare_digest(given.strip(), token)


def metrics_view(request: HttpRequest) -> HttpResponse:
    token = settings.NOTIFIER_METRICS_TOKEN
    if not token:
        raise Http404("metrics are off: set NOTIFIER_METRICS_TOKEN")
    if not token_allows(request.headers.get("Authorization", ""), token):
        return HttpResponse("a bearer token is required", status=403, content_type="text/plain")
    return HttpResponse(generate_latest(scrape_registry()), content_type=CONTENT_TYPE_LATEST)
