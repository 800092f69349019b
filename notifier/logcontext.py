"""Ids that follow a notification from the web request into every task: on each log record.

`request_id`, `message_id`, `delivery_id`, `campaign_id` and `step_id` live in contextvars. The
request middleware sets the request id (an incoming X-Request-ID is kept), notify() and the
pipeline bind the others where they are known, `before_task_publish` copies them into the
task's headers and `task_prerun` restores them in the worker, so a log line written while
sending a delivery still names the web request that caused it. `IdsFilter` puts them on every
log record (empty ones as "-"), for the plain format and for the JSON one alike.
"""

from __future__ import annotations

import logging
import re
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from contextvars import ContextVar, Token
from typing import Any

from django.http import HttpRequest, HttpResponse

IDS = ("request_id", "message_id", "delivery_id", "campaign_id", "step_id")
HEADER = "notifier_ids"  # the Celery message header carrying them
REQUEST_HEADER = "X-Request-ID"
# An incoming id is kept only when it is short and plain: it ends up in every log line.
_SAFE_ID = re.compile(r"^[A-Za-z0-9._:-]{1,64}$")

_vars: dict[str, ContextVar[str | None]] = {name: ContextVar(name, default=None) for name in IDS}


def current_ids() -> dict[str, str]:
    """The ids set in this context (only those that are set)."""
    return {name: value for name, var in _vars.items() if (value := var.get()) is not None}


def set_ids(**ids: object) -> dict[str, Token[str | None]]:
    """Set ids (None clears one); returns tokens for `reset_ids`."""
    unknown = set(ids) - set(IDS)
    if unknown:
        raise ValueError(f"unknown log context ids: {sorted(unknown)}")
    return {
        name: _vars[name].set(None if value is None else str(value)) for name, value in ids.items()
    }


def reset_ids(tokens: dict[str, Token[str | None]]) -> None:
    for name, token in tokens.items():
        _vars[name].reset(token)


def clear_ids() -> None:
    for var in _vars.values():
        var.set(None)


@contextmanager
def bound(**ids: object) -> Iterator[None]:
    """Within the block, log records (and tasks published) carry these ids."""
    tokens = set_ids(**ids)
    try:
        yield
    finally:
        reset_ids(tokens)


class IdsFilter(logging.Filter):
    """Puts every id on the record: `%(request_id)s` in a format, a field in JSON."""

    def filter(self, record: logging.LogRecord) -> bool:
        for name, var in _vars.items():
            if not hasattr(record, name):  # an explicit extra= wins
                setattr(record, name, var.get() or "-")
        return True


def request_id_from(header: str | None) -> str:
    if header and _SAFE_ID.match(header):
        return header
    return uuid.uuid4().hex


class RequestIdMiddleware:
    """Gives each request an id (the caller's X-Request-ID when it sent a sane one), binds it
    for the request's logs and tasks, and returns it in the response's X-Request-ID."""

    def __init__(self, get_response: Callable[[HttpRequest], HttpResponse]) -> None:
        self.get_response = get_response

    def __call__(self, request: HttpRequest) -> HttpResponse:
        request_id = request_id_from(request.headers.get(REQUEST_HEADER))
        tokens = set_ids(request_id=request_id, message_id=None, delivery_id=None)
        try:
            response = self.get_response(request)
        finally:
            reset_ids(tokens)
        response[REQUEST_HEADER] = request_id
        return response


# --- Celery ----------------------------------------------------------------------------------


def add_ids_to_headers(headers: dict[str, Any] | None) -> None:
    """before_task_publish: the publisher's ids travel with the task."""
    ids = current_ids()
    if ids and headers is not None:
        headers[HEADER] = ids


def ids_from_request(request: Any) -> dict[str, str]:
    """The ids a task was published with (Celery puts custom headers on the request)."""
    raw = getattr(request, HEADER, None)
    if raw is None:
        headers = getattr(request, "headers", None) or {}
        raw = headers.get(HEADER) if isinstance(headers, dict) else None
    if not isinstance(raw, dict):
        return {}
    return {name: str(value) for name, value in raw.items() if name in IDS and value is not None}


def restore_ids(request: Any) -> None:
    """task_prerun: start from the publisher's ids and nothing else (a pool process runs many
    tasks one after the other; none may inherit the previous one's ids)."""
    clear_ids()
    set_ids(**ids_from_request(request))
