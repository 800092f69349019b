"""Observability with a real worker process: logs, metrics and Sentry from the worker.

The worker runs on a private Redis (the fault rig's), with Sentry sending into a spool file,
JSON logs into a file and prometheus_client in multiprocess mode on a directory the test's
/metrics/ endpoint reads, as web and workers do on one box.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import pytest
from django.db import transaction
from django.http import HttpResponse
from django.test import Client, RequestFactory
from prometheus_client.parser import text_string_to_metric_families

from notifier.api import notify
from notifier.logcontext import RequestIdMiddleware
from notifier.models import Delivery
from notifier.queues import MAINTENANCE_QUEUE
from notifier.status import TERMINAL, DeliveryStatus
from tests.conftest import wait_until
from tests.factories import UserFactory, order_context
from tests.integration.rig import RedisServer, Rig
from tests.observability.spool import read_spool

pytestmark = [pytest.mark.integration, pytest.mark.django_db(transaction=True)]
S = DeliveryStatus
TOKEN = "scrape-me-0123456789"


@pytest.fixture
def observed(monkeypatch, tmp_path) -> Iterator[tuple[Rig, Path]]:
    """A rig with one worker whose Sentry, logs and metrics land in tmp_path."""
    (tmp_path / "prom").mkdir()
    rig = Rig(RedisServer(), monkeypatch)
    try:
        rig.worker(
            concurrency=2,
            PROMETHEUS_MULTIPROC_DIR=str(tmp_path / "prom"),
            NOTIFIER_TEST_SENTRY_SPOOL=str(tmp_path / "sentry.jsonl"),
            NOTIFIER_TEST_LOG_FILE=str(tmp_path / "log.jsonl"),
            LOG_LEVEL="DEBUG",
        )
        yield rig, tmp_path
    finally:
        rig.close()


def json_logs(path: Path) -> list[dict[str, object]]:
    if not path.exists():
        return []
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def notify_in_a_request(emails: list[str], request_id: str) -> list[int]:
    """A web request, through the real middleware, whose view notifies in a transaction."""
    created: list[int] = []

    def view(request):
        with transaction.atomic():  # published on commit, still inside the request
            for email in emails:
                user = UserFactory(email=email)
                message = notify(user, "order.shipped", order_context(), channels=["email"])
                created.append(message.pk)
        return HttpResponse("ok")

    response = RequestIdMiddleware(view)(
        RequestFactory().post("/orders/ship/", HTTP_X_REQUEST_ID=request_id)
    )
    assert response["X-Request-ID"] == request_id
    return created


def all_finished(message_ids: list[int]) -> bool:
    statuses = list(
        Delivery.objects.filter(message_id__in=message_ids).values_list("status", flat=True)
    )
    return len(statuses) == len(message_ids) and all(s in TERMINAL for s in statuses)


def test_a_worker_log_line_carries_the_web_request_id_and_the_delivery_id(observed):
    _, tmp = observed
    [message_id] = notify_in_a_request(["ada@example.com"], request_id="req-web-7f3a")
    wait_until(lambda: all_finished([message_id]), timeout=60, message="the email to be sent")
    delivery = Delivery.objects.get(message_id=message_id)
    assert delivery.status == S.SENT

    def sent_line() -> dict[str, object] | None:
        return next(
            (
                r
                for r in json_logs(tmp / "log.jsonl")
                if r["message"] == "email via sandbox attempt 1: sent"
                and r["delivery_id"] == str(delivery.pk)
            ),
            None,
        )

    record = wait_until(sent_line, timeout=30, message="the worker's log line for the send")
    assert record["request_id"] == "req-web-7f3a"
    assert record["message_id"] == str(message_id)
    assert record["logger"] == "notifier.services.deliveries"
    assert record["level"] == "DEBUG"


def scrape(client: Client, **headers: str) -> tuple[int, str]:
    response = client.get("/metrics/", **headers)
    return response.status_code, response.content.decode()


def samples(text: str) -> dict[tuple[str, frozenset[tuple[str, str]]], float]:
    return {
        (sample.name, frozenset(sample.labels.items())): sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
    }


def test_metrics_after_real_sends_by_a_worker(observed, monkeypatch, settings):
    _, tmp = observed
    settings.NOTIFIER_METRICS_TOKEN = TOKEN
    monkeypatch.setenv("PROMETHEUS_MULTIPROC_DIR", str(tmp / "prom"))
    ids = notify_in_a_request(
        ["ok@example.com", "gone+fail-permanent@example.com", "slow+fail-transient-1@example.com"],
        request_id="req-metrics",
    )
    wait_until(lambda: all_finished(ids), timeout=90, message="every email to finish")

    client = Client()
    assert scrape(client)[0] == 403
    assert scrape(client, HTTP_AUTHORIZATION="Bearer wrong")[0] == 403
    status, text = scrape(client, HTTP_AUTHORIZATION=f"Bearer {TOKEN}")
    assert status == 200
    got = samples(text)
    email = {("channel", "email"), ("provider", "sandbox")}
    assert got[("notifier_deliveries_total", frozenset({*email, ("status", "sent")}))] == 2
    assert got[("notifier_deliveries_total", frozenset({*email, ("status", "failed")}))] == 1
    assert got[("notifier_retries_total", frozenset(email))] == 1
    calls = got[("notifier_send_latency_seconds_count", frozenset(email))]
    assert calls >= 2  # the first attempts (one batch or more) and the retry
    assert got[("notifier_send_latency_seconds_sum", frozenset(email))] > 0
    # State read at scrape time.
    assert got[("notifier_circuit_breaker_state", frozenset(email))] == 0
    assert ("notifier_queue_depth", frozenset({("lane", "bulk"), ("queue", "bulk.email")})) in got


def test_metrics_are_off_without_a_token(client, settings):
    settings.NOTIFIER_METRICS_TOKEN = ""
    assert client.get("/metrics/", HTTP_AUTHORIZATION="Bearer anything").status_code == 404


def test_sentry_is_set_up_in_the_worker_and_a_periodic_job_checks_in(observed):
    rig, tmp = observed
    rig.send("notifier.release_held", (), MAINTENANCE_QUEUE)

    def checkins() -> list[dict[str, object]]:
        found = [i["payload"] for i in read_spool(tmp / "sentry.jsonl") if i["type"] == "check_in"]
        return found if len(found) >= 2 else []

    first, second = wait_until(checkins, timeout=30, message="the job's two check-ins")
    assert (first["monitor_slug"], first["status"]) == ("release-held", "in_progress")
    assert (second["monitor_slug"], second["status"]) == ("release-held", "ok")
    assert first["check_in_id"] == second["check_in_id"]
    assert second["monitor_config"]["schedule"] == {
        "type": "interval",
        "value": 1,
        "unit": "minute",
    }
