"""A real `gunicorn notifier_site.wsgi` on a free loopback port, on the test database, DEBUG off.

The Django test client calls the handler in-process: it re-raises a view's exception instead of
answering 500, never decodes a charset the way a server's WSGI environ carries it, and skips
the WSGI application the deployment serves. The HTTP security tests talk to this server over a
socket instead, as an attacker would. Data a test makes must be committed (`transactional_db`)
for the server's own connection to see it.
"""

from __future__ import annotations

import contextlib
import http.client
import os
import secrets
import socket
import subprocess
import sys
import tempfile
from dataclasses import dataclass, field
from http.cookies import SimpleCookie
from pathlib import Path
from urllib.parse import urlencode

from django.conf import settings

from tests.conftest import wait_until

ROOT = Path(__file__).resolve().parent.parent

# The service API's live tests (the Schemathesis fuzz, the README's curl examples): many calls
# from one address, with the public limits out of the way (the API keys' own limits stay). The
# broker is in memory, so nothing the server publishes is ever consumed: a session's worker
# process on the test Redis (tests/conftest.py) would otherwise run the pipeline for a call the
# server accepted and write rows while a later refused call's "wrote nothing" is being checked.
API_SERVER_ENV = {
    "NOTIFIER_RATE_LIMIT_PUBLIC": "false",
    "CELERY_BROKER_URL": "memory://localhost/",
}


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


@dataclass(frozen=True)
class Answer:
    status: int
    headers: dict[str, str]
    body: bytes
    cookies: dict[str, str] = field(default_factory=dict)  # what Set-Cookie set, by name

    @property
    def text(self) -> str:
        return self.body.decode("utf-8", "replace")

    def header(self, name: str) -> str:
        return self.headers.get(name.lower(), "")


@dataclass
class GunicornServer:
    """One `gunicorn notifier_site.wsgi` process (one sync worker) with `extra_env` on top of the
    test settings, the test database and the test Redis database."""

    extra_env: dict[str, str] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self.port = free_port()
        db = settings.DATABASES["default"]
        env = {
            **os.environ,
            "DJANGO_SETTINGS_MODULE": "tests.settings",
            "DJANGO_DEBUG": "false",
            "DJANGO_ALLOWED_HOSTS": "127.0.0.1,localhost",
            "DATABASE_URL": (
                f"postgres://{db['USER']}@{db['HOST'] or '127.0.0.1'}:"
                f"{db['PORT'] or 5432}/{db['NAME']}"
            ),
            "REDIS_URL": settings.NOTIFIER_REDIS_URL,
            "CELERY_BROKER_URL": settings.CELERY_BROKER_URL,
            **self.extra_env,
        }
        self.log = tempfile.NamedTemporaryFile(  # noqa: SIM115 - kept open for the server's life
            prefix="gunicorn-", suffix=".log", delete=False
        )
        self.process = subprocess.Popen(
            self.command(),
            cwd=ROOT,
            env=env,
            stdout=self.log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )

    def command(self) -> list[str]:
        return [
            sys.executable,
            "-m",
            "gunicorn",
            "notifier_site.wsgi",
            f"--bind=127.0.0.1:{self.port}",
            "--workers=1",
            "--timeout=60",
            "--graceful-timeout=5",
            # The longest request line gunicorn takes (its default, 4094, answers a
            # fuzzed query string a little over 4 KB with its own HTML 414 before the
            # app sees it: the fuzz tests judge the API, not gunicorn's front door).
            "--limit-request-line=8190",
            # Each test server alone: gunicorn 27 otherwise shares one control socket
            # (~/.gunicorn/gunicorn.ctl) among all servers on the machine.
            "--no-control-socket",
        ]

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def wait_ready(self, timeout: float = 60.0) -> None:
        def answers() -> bool:
            if self.process.poll() is not None:
                raise AssertionError(
                    f"gunicorn exited with {self.process.returncode}: {self.tail()}"
                )
            try:
                return self.request("GET", "/health/live/").status == 200
            except OSError:
                return False

        wait_until(answers, timeout=timeout, interval=0.1, message="gunicorn to answer")

    def request(
        self,
        method: str,
        path: str,
        body: bytes = b"",
        headers: dict[str, str] | None = None,
    ) -> Answer:
        """One request on a new connection; the body as given, byte for byte."""
        connection = http.client.HTTPConnection("127.0.0.1", self.port, timeout=60)
        try:
            connection.putrequest(method, path, skip_host=True, skip_accept_encoding=True)
            sent = {"Host": f"127.0.0.1:{self.port}", **(headers or {})}
            if body or method in ("POST", "PUT", "PATCH"):
                sent.setdefault("Content-Length", str(len(body)))
            for name, value in sent.items():
                connection.putheader(name, value)
            # A server may answer without reading a body it does not want, and close: sending
            # the rest then fails. Its answer may still be in our socket; if not, status 0.
            with contextlib.suppress(BrokenPipeError, ConnectionResetError):
                connection.endheaders(body or None)
            try:
                response = connection.getresponse()
            except (ConnectionResetError, http.client.RemoteDisconnected):
                return Answer(0, {}, b"")
            cookies = SimpleCookie()
            for set_cookie in response.headers.get_all("Set-Cookie") or []:
                cookies.load(set_cookie)
            return Answer(
                response.status,
                {name.lower(): value for name, value in response.getheaders()},
                response.read(),
                {name: morsel.value for name, morsel in cookies.items()},
            )
        finally:
            connection.close()

    def log_size(self) -> int:
        return Path(self.log.name).stat().st_size

    def errors_since(self, offset: int) -> list[str]:
        """The lines of 500s logged after `offset`: gunicorn's own ("Error handling request")
        and Django's ("Internal Server Error")."""
        with open(self.log.name, "rb") as log:
            log.seek(offset)
            lines = log.read().decode(errors="replace").splitlines()
        return [line for line in lines if "[ERROR]" in line or "Internal Server Error" in line]

    def tail(self, lines: int = 60) -> str:
        """The end of the server's log: the traceback behind a 500."""
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


class Browser:
    """A client of the server with a cookie jar and a client address of its own: the address
    travels in X-Forwarded-For, which the server believes when started with
    NOTIFIER_TRUSTED_PROXIES=127.0.0.1 (a load balancer on the same box)."""

    def __init__(self, server: GunicornServer, address: str = "203.0.113.7") -> None:
        self.server = server
        self.address = address
        # Django accepts its CSRF secret itself as the token: no page needs to be read first.
        self.cookies: dict[str, str] = {"csrftoken": secrets.token_hex(16)}

    def request(
        self, method: str, path: str, body: bytes = b"", headers: dict[str, str] | None = None
    ) -> Answer:
        sent = {
            "X-Forwarded-For": self.address,
            "Cookie": "; ".join(f"{name}={value}" for name, value in self.cookies.items()),
            **(headers or {}),
        }
        answer = self.server.request(method, path, body, sent)
        self.cookies.update(answer.cookies)
        return answer

    def post_form(self, path: str, fields: dict[str, str]) -> Answer:
        """A form post as a browser sends it, with the CSRF token."""
        body = urlencode({"csrfmiddlewaretoken": self.cookies["csrftoken"], **fields}).encode()
        return self.request(
            "POST", path, body, {"Content-Type": "application/x-www-form-urlencoded"}
        )

    def log_in(self, path: str, username: str, password: str) -> Answer:
        return self.post_form(path, {"username": username, "password": password})
