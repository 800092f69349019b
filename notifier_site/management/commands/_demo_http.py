"""The demo's other half: another service calling Notifier over HTTP with an API key, and a
webhook receiver of the product's getting the events back, signatures verified.

Both servers run in threads of the demo's process, on loopback ports the system picks: the
site itself under a WSGI server (what gunicorn does in production), and a small receiver that
checks every request with the same `standardwebhooks` library a product would use.
"""

from __future__ import annotations

import json
import logging
import threading
import time
import urllib.error
import urllib.request
import warnings
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from socketserver import ThreadingMixIn
from typing import Any
from wsgiref.simple_server import WSGIRequestHandler, WSGIServer, make_server

from django.conf import settings
from django.core.wsgi import get_wsgi_application
from standardwebhooks.webhooks import Webhook, WebhookVerificationError

from notifier.events_out.sending import endpoint_create
from notifier.models import ApiScope, WebhookEndpoint, WebhookEvent
from notifier.services.api_keys import api_key_create

EVENT_TYPES = [
    "message.created",
    "delivery.sent",
    "delivery.delivered",
    "delivery.failed",
    "delivery.read",
]


@dataclass
class Received:
    """What the receiver accepted (each webhook-id once) and refused."""

    secret: str = ""  # the endpoint's signing secret, once it is made
    events: list[dict[str, Any]] = field(default_factory=list)
    seen: set[str] = field(default_factory=set)
    refused: int = 0
    lock: threading.Lock = field(default_factory=threading.Lock)


def _receiver(received: Received) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
            try:
                payload = Webhook(received.secret).verify(body, dict(self.headers.items()))
            except WebhookVerificationError:
                with received.lock:
                    received.refused += 1
                self.send_response(401)
                self.end_headers()
                return
            with received.lock:
                webhook_id = self.headers["webhook-id"]
                if webhook_id not in received.seen:  # a retry of one already taken
                    received.seen.add(webhook_id)
                    batch = payload.get("data", {}).get("events")
                    received.events.extend(batch if payload.get("type") == "batch" else [payload])
            self.send_response(204)
            self.end_headers()

        def log_message(self, format: str, *args: Any) -> None:
            pass

    return Handler


class _QuietHandler(WSGIRequestHandler):
    def log_message(self, format: str, *args: Any) -> None:
        pass


class _ThreadingWSGIServer(ThreadingMixIn, WSGIServer):
    daemon_threads = True


@dataclass
class Showcase:
    site: str
    token: str
    key_prefix: str
    endpoint: WebhookEndpoint
    received: Received

    def call(self, method: str, path: str, body: object, **headers: str) -> tuple[int, Any]:
        request = urllib.request.Request(
            f"{self.site}/api/v1/{path}",
            data=json.dumps(body).encode(),
            method=method,
            headers={
                "Authorization": f"Bearer {self.token}",
                "Content-Type": "application/json",
                **headers,
            },
        )
        try:
            with urllib.request.urlopen(request, timeout=30) as response:
                return response.status, json.loads(response.read() or b"null")
        except urllib.error.HTTPError as refused:
            return refused.code, json.loads(refused.read() or b"null")

    def events_for(self, message_id: int) -> list[dict[str, Any]]:
        with self.received.lock:
            return [e for e in self.received.events if e["data"].get("message_id") == message_id]

    def wait_for_events(self, message_id: int, wanted: set[str], timeout: float) -> bool:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if wanted <= {e["type"] for e in self.events_for(message_id)}:
                return True
            time.sleep(0.2)
        return False


def _serve(server: Any) -> threading.Thread:
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    return thread


@contextmanager
def service_api_showcase() -> Iterator[Showcase]:
    """The site on a loopback port, an API key for it, and a receiver subscribed to events."""
    # The receiver is on loopback: the demo's own machine is where its "product" lives.
    settings.NOTIFIER_WEBHOOK_ALLOW_PRIVATE_NETWORKS = True
    # The demo prints each refusal itself; and it serves no static files.
    logging.getLogger("django.request").setLevel(logging.ERROR)
    warnings.filterwarnings("ignore", message="No directory at", category=UserWarning)
    site = make_server(
        "127.0.0.1",
        0,
        get_wsgi_application(),
        server_class=_ThreadingWSGIServer,
        handler_class=_QuietHandler,
    )
    received = Received()
    hooks = ThreadingHTTPServer(("127.0.0.1", 0), _receiver(received))
    WebhookEndpoint.objects.filter(name="demo receiver").update(active=False)  # earlier runs'
    endpoint = endpoint_create(
        name="demo receiver",
        url=f"http://127.0.0.1:{hooks.server_address[1]}/hooks/notifier",
        event_types=EVENT_TYPES,
    )
    received.secret = endpoint.secret
    made = api_key_create(name="demo checkout service", scopes=ApiScope.values)
    _serve(site)
    _serve(hooks)
    try:
        yield Showcase(
            site=f"http://127.0.0.1:{site.server_address[1]}",
            token=made.token,
            key_prefix=made.key.prefix,
            endpoint=endpoint,
            received=received,
        )
        # Whatever the demo's other messages set off meanwhile reaches the receiver too.
        deadline = time.monotonic() + 30
        waiting = WebhookEvent.objects.filter(endpoint=endpoint).exclude(state="sent")
        while waiting.exists() and time.monotonic() < deadline:
            time.sleep(0.2)
    finally:
        site.shutdown()
        hooks.shutdown()
        WebhookEndpoint.objects.filter(pk=endpoint.pk).update(active=False)
