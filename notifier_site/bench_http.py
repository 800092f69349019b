"""For `manage.py bench --only api`: the site on a real gunicorn on loopback (DEBUG off, the
bench's database and Redis), and a client that keeps one connection open to it, so a measured
call is the server's work and the HTTP exchange, not a TCP handshake each time."""

from __future__ import annotations

import http.client
import json
import os
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


class LoggedServer:
    """A server process on loopback whose output goes to a temporary log file: its last lines
    for an error message, and a stop that cleans up."""

    process: subprocess.Popen[bytes]
    log: Any

    def tail(self, lines: int = 30) -> str:
        return "\n".join(Path(self.log.name).read_text(errors="replace").splitlines()[-lines:])

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=20)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        self.log.close()
        Path(self.log.name).unlink(missing_ok=True)


class LoopbackSite(LoggedServer):
    """`gunicorn notifier_site.wsgi`, one worker process with one thread. The gthread worker,
    because deploy/'s sync workers close the connection after each answer: a caller that
    keeps its connection (a service's HTTP client pool) would reconnect on every call."""

    def __init__(self, root: Path) -> None:
        self.port = free_port()
        self.log = tempfile.NamedTemporaryFile(  # noqa: SIM115 - kept open for the server's life
            prefix="bench-gunicorn-", suffix=".log", delete=False
        )
        env = {
            **os.environ,
            "DJANGO_DEBUG": "false",
            "DJANGO_ALLOWED_HOSTS": "127.0.0.1",
            "NOTIFIER_RATE_LIMIT_PUBLIC": "false",  # one address makes every call
        }
        self.process = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "gunicorn",
                "notifier_site.wsgi",
                f"--bind=127.0.0.1:{self.port}",
                "--workers=1",
                "--worker-class=gthread",
                "--threads=1",
                "--keep-alive=30",
            ],
            cwd=root,
            env=env,
            stdout=self.log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )

    def wait_ready(self, timeout: float = 60.0) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"gunicorn exited with {self.process.returncode}: {self.tail()}")
            try:
                connection = http.client.HTTPConnection("127.0.0.1", self.port, timeout=5)
                connection.request("GET", "/health/live/")
                if connection.getresponse().status == 200:
                    return
            except OSError:
                pass
            time.sleep(0.1)
        raise RuntimeError(f"gunicorn did not answer in {timeout:.0f} s: {self.tail()}")


class KeptConnection:
    """JSON calls over one HTTP/1.1 connection; it fails loudly if the server closes it, so a
    measure never silently includes reconnecting."""

    def __init__(self, port: int, token: str) -> None:
        self.connection = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
        self.headers = {
            "Authorization": f"Bearer {token}",
            "Content-Type": "application/json",
            "Host": f"127.0.0.1:{port}",
        }

    def post(self, path: str, body: dict[str, Any]) -> tuple[int, bytes]:
        self.connection.request("POST", path, json.dumps(body).encode(), self.headers)
        response = self.connection.getresponse()
        answer = response.read()
        if response.will_close:
            raise RuntimeError("the server closed the connection: the measure would reconnect")
        return response.status, answer

    def close(self) -> None:
        self.connection.close()
