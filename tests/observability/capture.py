"""Sentry in the test process, with a transport that keeps what would have been sent."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import sentry_sdk
from sentry_sdk.envelope import Envelope
from sentry_sdk.transport import Transport

from notifier.logcontext import clear_ids
from notifier.operations.observability import init_sentry
from tests.observability.spool import TEST_DSN


class ListTransport(Transport):
    def __init__(self) -> None:
        super().__init__()
        self.items: list[dict[str, Any]] = []

    def capture_envelope(self, envelope: Envelope) -> None:
        for item in envelope.items:
            self.items.append({"type": item.type, "payload": item.payload.json})

    def events(self) -> list[dict[str, Any]]:
        return [i["payload"] for i in self.items if i["type"] == "event"]

    def checkins(self) -> list[dict[str, Any]]:
        return [i["payload"] for i in self.items if i["type"] == "check_in"]


@contextmanager
def capture_sentry() -> Iterator[ListTransport]:
    """Sentry set up as settings do it, sending into a list; switched off afterwards."""
    transport = ListTransport()
    init_sentry(TEST_DSN, environment="test", transport=transport)
    try:
        yield transport
    finally:
        sentry_sdk.flush()
        sentry_sdk.get_global_scope().set_client(None)
        clear_ids()
