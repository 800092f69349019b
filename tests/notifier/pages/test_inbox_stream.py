"""The inbox stream's answers outside a live ASGI server: who may open it, and 204 (poll instead)
where an open stream would hold a WSGI worker. The stream itself: tests/integration/."""

from __future__ import annotations

import pytest
from django.test import Client
from django.urls import reverse

from tests.factories import UserFactory

pytestmark = pytest.mark.django_db

URL = "notifier:inbox-stream"


def test_anonymous_visitors_are_told_to_log_in():
    response = Client().get(reverse(URL))
    assert response.status_code == 401
    assert response.json() == {"error": "log in to read your inbox"}


def test_under_wsgi_the_stream_answers_204_so_the_page_polls():
    client = Client()
    client.force_login(UserFactory())
    response = client.get(reverse(URL))
    assert response.status_code == 204  # EventSource stops reconnecting on a 204
    assert not response.streaming


def test_only_get_is_allowed():
    client = Client()
    client.force_login(UserFactory())
    assert client.post(reverse(URL)).status_code == 405
