"""Fixtures of the security tests: real gunicorn servers, DEBUG off, on the test database."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

import pytest

from tests.gunicorn import GunicornServer


@pytest.fixture(scope="session")
def gunicorn_server(
    django_db_setup: None, django_db_blocker: Any
) -> Iterator[Callable[..., GunicornServer]]:
    """`gunicorn_server(**env)`: a running gunicorn with that environment on top of the test
    settings; one process per distinct environment, shared by the session's tests. Tests that
    use it need `transactional_db`, so the server's own connection sees their rows."""
    started: dict[tuple[tuple[str, str], ...], GunicornServer] = {}

    def server(**env: str) -> GunicornServer:
        key = tuple(sorted(env.items()))
        if key not in started:
            started[key] = GunicornServer(dict(env))
            started[key].wait_ready()
        return started[key]

    try:
        yield server
    finally:
        for running in started.values():
            running.stop()
