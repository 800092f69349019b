"""Log context: ids set by the request middleware and the pipeline, carried in task headers."""

from __future__ import annotations

import json
import logging
from types import SimpleNamespace

from django.http import HttpResponse
from django.test import RequestFactory
from pythonjsonlogger.json import JsonFormatter

from notifier.logcontext import (
    HEADER,
    IdsFilter,
    RequestIdMiddleware,
    add_ids_to_headers,
    bound,
    current_ids,
    restore_ids,
)


def record(message: str = "hello") -> logging.LogRecord:
    return logging.LogRecord("notifier.test", logging.INFO, __file__, 1, message, (), None)


def test_the_filter_puts_every_id_on_the_record():
    with bound(request_id="r-1", delivery_id=42):
        entry = record()
        assert IdsFilter().filter(entry)
    assert (entry.request_id, entry.delivery_id, entry.message_id) == ("r-1", "42", "-")


def test_json_lines_carry_the_ids():
    formatter = JsonFormatter("%(levelname)s %(name)s %(message)s %(request_id)s %(delivery_id)s")
    with bound(request_id="r-2", delivery_id=7):
        entry = record("sent")
        IdsFilter().filter(entry)
    line = json.loads(formatter.format(entry))
    assert (line["message"], line["request_id"], line["delivery_id"]) == ("sent", "r-2", "7")


def test_the_middleware_keeps_a_sane_incoming_request_id_and_returns_it():
    seen = {}

    def view(request):
        seen.update(current_ids())
        return HttpResponse("ok")

    response = RequestIdMiddleware(view)(RequestFactory().get("/", HTTP_X_REQUEST_ID="abc-123"))
    assert seen == {"request_id": "abc-123"}
    assert response["X-Request-ID"] == "abc-123"
    assert current_ids() == {}  # nothing leaks past the request


def test_the_middleware_replaces_an_unsafe_or_missing_request_id():
    ids = []

    def view(request):
        ids.append(current_ids()["request_id"])
        return HttpResponse("ok")

    middleware = RequestIdMiddleware(view)
    middleware(RequestFactory().get("/", HTTP_X_REQUEST_ID="evil\nlog line" + "x" * 80))
    middleware(RequestFactory().get("/"))
    assert all(len(i) == 32 and i.isalnum() for i in ids)
    assert ids[0] != ids[1]


def test_ids_travel_in_task_headers_and_replace_whatever_the_process_had():
    headers: dict[str, object] = {}
    with bound(request_id="r-3", campaign_id=5):
        add_ids_to_headers(headers)
    assert headers == {HEADER: {"request_id": "r-3", "campaign_id": "5"}}

    with bound(delivery_id=99):  # left over from a previous task in the same pool process
        restore_ids(SimpleNamespace(**headers))
        assert current_ids() == {"request_id": "r-3", "campaign_id": "5"}


def test_no_ids_means_no_header():
    headers: dict[str, object] = {}
    add_ids_to_headers(headers)
    assert headers == {}
