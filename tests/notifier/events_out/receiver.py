"""A webhook receiver on loopback, as a product would write one: it verifies each request's
signature with the same `standardwebhooks` package, and dedupes by webhook-id."""

from __future__ import annotations

import json
import ssl
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from standardwebhooks.webhooks import Webhook, WebhookVerificationError


@dataclass
class Received:
    webhook_id: str
    body: dict[str, Any]

    @property
    def events(self) -> list[dict[str, Any]]:
        if self.body.get("type") == "batch":
            return list(self.body["data"]["events"])
        return [self.body]


@dataclass
class Receiver:
    """Answers `failures_left` requests with 500 (or `status` forever), then 200."""

    secret: str = ""
    failures_left: int = 0
    status: int = 200
    url: str = ""
    requests: list[Received] = field(default_factory=list)  # every verified request
    refused: list[str] = field(default_factory=list)  # why a request failed verification
    hosts: list[str] = field(default_factory=list)  # the Host header of every request
    delay_s: float = 0.0  # a slow receiver: each request is answered this much later
    in_flight: int = 0  # requests being answered now
    lock: threading.Lock = field(default_factory=threading.Lock)

    def answer(self, webhook_id: str, body: dict[str, Any]) -> int:
        with self.lock:
            if self.failures_left > 0:
                self.failures_left -= 1
                return 500
            if self.status != 200:
                return self.status
            self.requests.append(Received(webhook_id, body))
            return 200

    def accepted(self) -> dict[str, Received]:
        """The requests answered 2xx, deduplicated by webhook-id as the spec asks."""
        with self.lock:
            return {r.webhook_id: r for r in self.requests}

    def events(self) -> list[dict[str, Any]]:
        return [event for r in self.accepted().values() for event in r.events]


@contextmanager
def receiver_running(
    receiver: Receiver, *, tls: ssl.SSLContext | None = None, host: str = "127.0.0.1"
) -> Iterator[Receiver]:
    """Serve on loopback (over TLS with `tls`); the URL names `host`, which the test makes
    resolve to loopback."""

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            with receiver.lock:
                receiver.hosts.append(self.headers.get("host", ""))
                receiver.in_flight += 1
            try:
                time.sleep(receiver.delay_s)
                self.respond()
            finally:
                with receiver.lock:
                    receiver.in_flight -= 1

        def respond(self) -> None:
            raw = self.rfile.read(int(self.headers.get("content-length", 0)))
            try:
                body = Webhook(receiver.secret).verify(raw, dict(self.headers.items()))
            except WebhookVerificationError as exc:
                receiver.refused.append(str(exc))
                self.send_response(401)
                self.end_headers()
                return
            status = receiver.answer(self.headers["webhook-id"], body)
            self.send_response(status)
            self.end_headers()
            self.wfile.write(json.dumps({"status": status}).encode())

        def log_message(self, *args: Any) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    if tls is not None:
        server.socket = tls.wrap_socket(server.socket, server_side=True)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    scheme = "https" if tls else "http"
    receiver.url = f"{scheme}://{host}:{server.server_address[1]}/hooks/notifier"
    try:
        yield receiver
    finally:
        server.shutdown()
        server.server_close()
        thread.join(5)
