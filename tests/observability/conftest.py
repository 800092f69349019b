"""Fixtures of the observability tests."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from notifier.logcontext import clear_ids
from tests.notifier.services.conftest import published  # noqa: F401
from tests.observability.capture import ListTransport, capture_sentry


@pytest.fixture(autouse=True)
def _no_ids_leak() -> Iterator[None]:
    clear_ids()
    yield
    clear_ids()


@pytest.fixture
def sentry() -> Iterator[ListTransport]:
    with capture_sentry() as transport:
        yield transport
