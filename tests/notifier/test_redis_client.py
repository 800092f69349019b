"""The Redis client factory: which URL each job reads, one client per URL and options."""

from __future__ import annotations

import pytest
from django.conf import settings as django_settings

from notifier.redis_client import (
    FAST_TIMEOUT_S,
    broker_client,
    broker_redis_url,
    redis_client,
    state_client,
    state_redis_url,
)


@pytest.fixture
def not_embedded(settings):
    settings.NOTIFIER_EMBEDDED = False
    return settings


def test_state_reads_redis_url_first(not_embedded):
    not_embedded.NOTIFIER_REDIS_URL = "redis://127.0.0.1:6379/3"
    not_embedded.CELERY_BROKER_URL = "redis://127.0.0.1:6379/4"

    assert state_redis_url() == "redis://127.0.0.1:6379/3"
    assert broker_redis_url() == "redis://127.0.0.1:6379/4"


@pytest.mark.parametrize(
    "broker", ["redis://127.0.0.1:6379/4", "rediss://cache.example.com:6380/0", "unix:///r.sock"]
)
def test_state_falls_back_to_a_redis_broker(not_embedded, broker):
    not_embedded.NOTIFIER_REDIS_URL = ""
    not_embedded.CELERY_BROKER_URL = broker

    assert state_redis_url() == broker
    assert broker_redis_url() == broker


@pytest.mark.parametrize(
    "broker", ["amqp://guest@127.0.0.1:5672//", "pyamqp://rabbit//", "memory://localhost/"]
)
def test_a_broker_that_is_not_redis_gives_no_redis(not_embedded, broker):
    not_embedded.NOTIFIER_REDIS_URL = ""
    not_embedded.CELERY_BROKER_URL = broker

    assert state_redis_url() == ""
    assert state_client() is None
    assert broker_redis_url() == ""
    assert broker_client() is None


def test_a_rabbitmq_broker_keeps_state_in_redis_url(not_embedded):
    not_embedded.NOTIFIER_REDIS_URL = "redis://127.0.0.1:6379/3"
    not_embedded.CELERY_BROKER_URL = "amqp://guest@127.0.0.1:5672//"

    client = state_client()
    assert client is not None
    assert client.connection_pool.connection_kwargs["db"] == 3
    assert broker_client() is None


def test_embedded_mode_has_no_state_client_even_with_a_url(settings):
    settings.NOTIFIER_EMBEDDED = True
    settings.NOTIFIER_REDIS_URL = "redis://127.0.0.1:6379/3"

    assert state_client() is None


def test_one_client_per_url_and_options():
    url = django_settings.NOTIFIER_REDIS_URL

    assert redis_client(url) is redis_client(url)
    assert state_client() is redis_client(url)
    assert redis_client(url, timeout_s=None) is not redis_client(url)
    assert redis_client(url, decode_responses=True) is not redis_client(url)


def test_timeouts_bound_connecting_and_each_command_unless_turned_off():
    url = django_settings.NOTIFIER_REDIS_URL

    fast = redis_client(url).connection_pool.connection_kwargs
    patient = redis_client(url, timeout_s=None).connection_pool.connection_kwargs

    assert (fast["socket_timeout"], fast["socket_connect_timeout"]) == (FAST_TIMEOUT_S,) * 2
    assert (patient["socket_timeout"], patient["socket_connect_timeout"]) == (None, None)


def test_decode_responses_returns_text_from_the_same_server():
    key = "test-redis-client:decode"
    url = django_settings.NOTIFIER_REDIS_URL
    redis_client(url).set(key, "héllo", ex=60)

    assert redis_client(url).get(key) == "héllo".encode()
    assert redis_client(url, decode_responses=True).get(key) == "héllo"
    assert state_client(decode_responses=True) is redis_client(url, decode_responses=True)
