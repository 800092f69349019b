"""The web pod's readiness probe leaves beat out (`/health/ready/?beat=0`); the default keeps it."""

import pytest
from django.urls import reverse

from notifier.operations.health import HEARTBEAT_KEY, WATCHED_JOB

pytestmark = pytest.mark.django_db


@pytest.fixture
def no_beat(redis_client):
    redis_client.delete(HEARTBEAT_KEY.format(job=WATCHED_JOB))


def test_without_beat_ready_needs_only_database_and_redis(client, no_beat):
    response = client.get(reverse("notifier:health-ready"), {"beat": "0"})
    assert response.status_code == 200
    assert [c["name"] for c in response.json()["checks"]] == ["database", "redis"]


def test_by_default_a_missing_beat_still_makes_it_unready(client, no_beat):
    assert client.get(reverse("notifier:health-ready")).status_code == 503


def test_without_beat_an_unreachable_redis_is_still_unready(client, settings):
    settings.NOTIFIER_REDIS_URL = "redis://127.0.0.1:1/0"
    response = client.get(reverse("notifier:health-ready"), {"beat": "0"})
    assert response.status_code == 503
    assert {c["name"]: c["ok"] for c in response.json()["checks"]} == {
        "database": True,
        "redis": False,
    }
