"""With Sentry on, a task Notifier publishes carries Sentry's trace headers, as Celery's
send_task gives them (Sentry's Celery integration adds them there): an error in the worker
joins the trace of the request that published it."""

from __future__ import annotations

import json
import uuid
from typing import Any

import pytest
import sentry_sdk
from celery import current_app

from notifier import dispatch
from notifier.redis_client import broker_client
from tests.observability.capture import capture_sentry


@pytest.fixture
def queue() -> Any:
    name = f"test.dispatch-{uuid.uuid4().hex[:8]}"
    yield name
    broker_client().delete(name)


def headers_of(queue: str) -> dict[str, Any]:
    raw = broker_client().rpop(queue)
    assert raw is not None
    return dict(json.loads(raw)["headers"])


@pytest.mark.parametrize("publish", ["send_task", "notifier"])
def test_a_published_task_carries_sentrys_trace_headers(queue, publish):
    # As in a request: Sentry's Django integration runs each in a transaction (unsampled here).
    with capture_sentry(), sentry_sdk.start_transaction(name="request"):
        if publish == "send_task":
            current_app.send_task(dispatch.PREPARE_TASK, args=([1],), queue=queue)
        else:
            dispatch.publish(dispatch.PREPARE_TASK, args=([1],), queue=queue)
        headers = headers_of(queue)
    assert "sentry-trace" in headers
    assert "baggage" in headers


def test_without_sentry_notifiers_own_publishes_take_the_short_way(queue, monkeypatch):
    calls: list[str] = []
    monkeypatch.setattr(current_app, "send_task", lambda *a, **k: calls.append("send_task"))
    dispatch.publish(dispatch.PREPARE_TASK, args=([1],), queue=queue)
    assert calls == []
    assert headers_of(queue)["task"] == dispatch.PREPARE_TASK
