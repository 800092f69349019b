"""A real `uvicorn notifier_site.asgi` on a free loopback port, and a raw client of its streams.

The server is tests/gunicorn.py's, served over ASGI (one process, one event loop, as the
`web-live` service runs). `EventStream` speaks HTTP over a plain socket with a session cookie
and reads Server-Sent Events off it with a deadline, so a test can hold hundreds open at once.
"""

from __future__ import annotations

import json
import socket
import sys
import time
from dataclasses import dataclass
from typing import Any

from django.conf import settings
from django.contrib.auth import BACKEND_SESSION_KEY, HASH_SESSION_KEY, SESSION_KEY
from django.contrib.sessions.backends.db import SessionStore

from tests.gunicorn import GunicornServer

STREAM_PATH = "/api/inbox/stream/"


@dataclass
class UvicornServer(GunicornServer):
    # A port to listen on again (a restarted server that open pages reconnect to); 0: any free.
    port_wanted: int = 0
    # The ASGI application: the deployed one (the stream and health only), or
    # "notifier_site.asgi:site_application" for the whole site on one origin.
    app: str = "notifier_site.asgi:application"

    def command(self) -> list[str]:
        if self.port_wanted:  # instead of the free one GunicornServer picked
            self.port = self.port_wanted
        return [
            sys.executable,
            "-m",
            "uvicorn",
            self.app,
            "--host=127.0.0.1",
            f"--port={self.port}",
            "--no-access-log",
            "--lifespan=off",
            "--timeout-graceful-shutdown=2",
        ]


def session_cookie(user: Any) -> str:
    """A logged-in session for `user`, as Django's login() writes it (committed by the caller's
    transactional test)."""
    session = SessionStore()
    session[SESSION_KEY] = str(user.pk)
    session[BACKEND_SESSION_KEY] = settings.AUTHENTICATION_BACKENDS[0]
    session[HASH_SESSION_KEY] = user.get_session_auth_hash()
    session.create()
    return f"{settings.SESSION_COOKIE_NAME}={session.session_key}"


@dataclass(frozen=True)
class Event:
    name: str
    data: dict[str, Any]


class EventStream:
    """One GET of the stream on its own socket; `next_event` parses what arrives."""

    def __init__(self, port: int, cookie: str, *, path: str = STREAM_PATH) -> None:
        self.socket = socket.create_connection(("127.0.0.1", port), timeout=10)
        self.socket.sendall(
            (
                f"GET {path} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nCookie: {cookie}\r\n"
                "Accept: text/event-stream\r\n\r\n"
            ).encode()
        )
        self.buffer = b""  # bytes off the socket
        self._pending = b""  # the body, dechunked, not yet parsed
        self.status = 0
        self.headers: dict[str, str] = {}
        self.comments = 0
        self.retry_ms = 0

    def _fill(self, deadline: float) -> None:
        left = deadline - time.monotonic()
        if left <= 0:
            raise TimeoutError("no more from the stream before the deadline")
        self.socket.settimeout(left)
        chunk = self.socket.recv(65536)
        if not chunk:
            raise ConnectionError("the server closed the stream")
        self.buffer += chunk

    def read_head(self, timeout: float = 10.0) -> int:
        deadline = time.monotonic() + timeout
        while b"\r\n\r\n" not in self.buffer:
            self._fill(deadline)
        head, self.buffer = self.buffer.split(b"\r\n\r\n", 1)
        status_line, *lines = head.decode("latin-1").split("\r\n")
        self.status = int(status_line.split()[1])
        self.headers = {
            name.strip().lower(): value.strip()
            for name, value in (line.split(":", 1) for line in lines)
        }
        return self.status

    def _body_line(self, deadline: float) -> str:
        """One line of the event stream, chunked transfer encoding taken off."""
        while True:
            text = self._dechunked()
            if b"\n" in text:
                line, rest = text.split(b"\n", 1)
                self._pending = rest
                return line.decode()
            self._fill(deadline)

    def _dechunked(self) -> bytes:
        chunked = self.headers.get("transfer-encoding") == "chunked"
        while chunked and b"\r\n" in self.buffer:
            size_line, rest = self.buffer.split(b"\r\n", 1)
            size = int(size_line, 16)
            if len(rest) < size + 2:
                break
            self._pending += rest[:size]
            self.buffer = rest[size + 2 :]
        if not chunked:
            self._pending, self.buffer = self._pending + self.buffer, b""
        return self._pending

    def next_event(self, timeout: float = 5.0) -> Event:
        """The next event (comments are counted and skipped)."""
        if not self.status:
            self.read_head(timeout)
        deadline = time.monotonic() + timeout
        name, data = "message", []
        while True:
            line = self._body_line(deadline)
            if line == "":
                if data:
                    return Event(name, json.loads("\n".join(data)))
                continue
            field, _, value = line.partition(":")
            value = value.removeprefix(" ")
            if field == "":
                self.comments += 1
            elif field == "retry":
                self.retry_ms = int(value)
            elif field == "event":
                name = value
            elif field == "data":
                data.append(value)

    def close(self) -> None:
        self.socket.close()
