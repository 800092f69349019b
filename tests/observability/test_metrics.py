"""Metrics: the endpoint is not public; the state gauges are read at scrape time."""

from __future__ import annotations

import pytest
from django.utils import timezone
from prometheus_client.parser import text_string_to_metric_families

from notifier.models import Delivery
from notifier.operations.metrics import token_allows
from notifier.provider_limits import breaker_record
from notifier.services.pipeline import messages_prepare
from notifier.status import DeliveryStatus
from tests.factories import UserFactory, order_context
from tests.integration.rig import RedisServer

TOKEN = "t0ken-for-tests"


@pytest.mark.parametrize(
    ("header", "allowed"),
    [
        (f"Bearer {TOKEN}", True),
        (f"bearer {TOKEN}", True),
        ("Bearer wrong", False),
        (TOKEN, False),
        (f"Basic {TOKEN}", False),
        ("", False),
    ],
)
def test_token_allows(header, allowed):
    assert token_allows(header, TOKEN) is allowed


def test_an_empty_token_allows_nothing():
    assert not token_allows("Bearer ", "")


@pytest.mark.django_db
def test_the_endpoint_is_404_when_off_and_403_without_the_token(client, settings):
    settings.NOTIFIER_METRICS_TOKEN = ""
    assert client.get("/metrics/").status_code == 404
    settings.NOTIFIER_METRICS_TOKEN = TOKEN
    assert client.get("/metrics/").status_code == 403
    assert client.get("/metrics/", HTTP_AUTHORIZATION="Bearer nope").status_code == 403


@pytest.mark.django_db
def test_state_gauges_are_read_when_scraped(client, settings, published):
    from notifier.api import notify

    settings.NOTIFIER_METRICS_TOKEN = TOKEN
    settings.NOTIFIER_CIRCUIT_MIN_CALLS = 2
    message = notify(UserFactory(), "order.shipped", order_context(), channels=["email", "sms"])
    messages_prepare(message_ids=[message.pk])
    Delivery.objects.filter(message=message).update(
        status=DeliveryStatus.HELD, reason="quiet_hours", next_attempt_at=timezone.now()
    )
    breaker_record("sms:sandbox", success=False)
    breaker_record("sms:sandbox", success=False)  # opens it
    # A broker of its own: a worker of another test may be draining the shared one.
    broker = RedisServer()
    try:
        broker.client().rpush("bulk.email", "a", "b", "c")
        settings.CELERY_BROKER_URL = broker.url
        response = client.get("/metrics/", HTTP_AUTHORIZATION=f"Bearer {TOKEN}")
    finally:
        broker.stop()
    assert response.status_code == 200
    got = {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for family in text_string_to_metric_families(response.content.decode())
        for s in family.samples
    }
    assert got[("notifier_held_deliveries", (("reason", "quiet_hours"),))] == 2
    assert got[("notifier_queue_depth", (("lane", "bulk"), ("queue", "bulk.email")))] == 3
    breaker = "notifier_circuit_breaker_state"
    assert got[(breaker, (("channel", "sms"), ("provider", "sandbox")))] == 2  # open
    assert got[(breaker, (("channel", "email"), ("provider", "sandbox")))] == 0  # closed


def test_the_worker_box_exporter_needs_the_token_too():
    from notifier.management.commands.metrics_exporter import exporter_app

    app = exporter_app(TOKEN)
    statuses: list[str] = []

    def start_response(status, headers):
        statuses.append(status)

    environ = {"REQUEST_METHOD": "GET", "PATH_INFO": "/", "QUERY_STRING": ""}
    app(environ, start_response)
    body = b"".join(app({**environ, "HTTP_AUTHORIZATION": f"Bearer {TOKEN}"}, start_response))
    assert statuses == ["403 Forbidden", "200 OK"]
    assert b"# HELP notifier_deliveries_total" in body
    assert b"notifier_queue_depth" not in body  # state gauges come from the web, once
