"""The pipeline on RabbitMQ, as an operator who runs it would deploy it: real worker processes
with `CELERY_BROKER_URL=amqp://…` (Redis stays the rate limiter's and the caches' store) take
notifications end to end, and a worker SIGKILLed mid-flight loses and doubles nothing.

RabbitMQ hands a dead consumer's unacknowledged tasks to the next one at once (acks_late), where
Redis waits for its visibility timeout; the ledger counts what the providers saw either way.
"""

from __future__ import annotations

import os
from collections.abc import Iterator

import pytest
from django.conf import settings
from kombu import Connection, Exchange, Queue
from kombu.exceptions import OperationalError

from notifier.api import notify_many
from notifier.models import Delivery, Message, User
from notifier.queues import ALL_QUEUES
from notifier.status import TERMINAL, DeliveryStatus
from tests.factories import order_context
from tests.integration.rig import Rig, ledger_for

pytestmark = [pytest.mark.integration, pytest.mark.django_db(transaction=True)]
S = DeliveryStatus

AMQP_URL = os.environ.get("NOTIFIER_TEST_AMQP_URL", "amqp://guest:guest@127.0.0.1:5672//")


class RabbitBroker:
    """The local RabbitMQ, with the pipeline's queues emptied before and after a test."""

    def __init__(self) -> None:
        self.url = AMQP_URL
        self.connection = Connection(AMQP_URL, connect_timeout=2)
        try:
            self.connection.ensure_connection(max_retries=1)
        except (*self.connection.connection_errors, OperationalError):
            pytest.skip(f"no RabbitMQ at {AMQP_URL} (set NOTIFIER_TEST_AMQP_URL)")
        self.empty()

    def empty(self) -> None:
        channel = self.connection.channel()
        for name in ALL_QUEUES:
            Queue(name, Exchange(name), routing_key=name)(channel).delete()

    def stop(self) -> None:
        self.empty()
        self.connection.release()


@pytest.fixture
def rig(monkeypatch) -> Iterator[Rig]:
    rig = Rig(RabbitBroker(), monkeypatch)  # type: ignore[arg-type]
    try:
        yield rig
    finally:
        rig.close()


def rabbit_worker(rig: Rig, **env: str):  # type: ignore[no-untyped-def]
    # The broker is RabbitMQ; Redis keeps its other jobs (limits, breakers, caches, probes).
    return rig.worker(REDIS_URL=settings.NOTIFIER_REDIS_URL, **env)


def all_done(message_ids: list[int], per_message: int) -> bool:
    unrouted = Message.objects.filter(pk__in=message_ids, routed_at__isnull=True).exists()
    statuses = Delivery.objects.filter(message_id__in=message_ids).values_list("status", flat=True)
    return (
        not unrouted
        and len(statuses) == len(message_ids) * per_message
        and all(status in TERMINAL for status in statuses)
    )


def users(count: int) -> list[User]:
    User.objects.bulk_create(
        [
            User(username=f"rabbit-{i}", email=f"rabbit-{i}@example.com", password="!")
            for i in range(count)
        ]
    )
    return list(User.objects.filter(username__startswith="rabbit-").order_by("pk"))


def test_a_worker_on_rabbitmq_delivers_every_notification_once(rig):
    rabbit_worker(rig)
    ids = notify_many(
        users(60), "order.shipped", order_context(), channels=["inapp", "email"]
    ).message_ids

    rig.drain(lambda: all_done(ids, 2), timeout=120)

    ledger = ledger_for(ids, ["inapp", "email"])
    assert (ledger.expected, ledger.lost, ledger.duplicated) == (120, 0, 0), ledger
    assert set(Delivery.objects.filter(message_id__in=ids).values_list("status", flat=True)) == {
        S.SENT
    }


def test_a_worker_on_rabbitmq_sigkilled_mid_flight_loses_and_doubles_nothing(rig):
    slow = {"SANDBOX_LATENCY_MS": "10", "NOTIFIER_BATCH_SIZE": "25"}
    worker = rabbit_worker(rig, **slow)
    ids = notify_many(
        users(400), "order.shipped", order_context(), channels=["inapp", "email"]
    ).message_ids
    rig.drain(lambda: all_done(ids, 2) or Delivery.objects.filter(status=S.SENT).count() > 100)
    assert not all_done(ids, 2), "the work finished before the worker could be killed"

    worker.kill()
    rabbit_worker(rig, **slow)
    rig.drain(lambda: all_done(ids, 2), timeout=240)

    ledger = ledger_for(ids, ["inapp", "email"])
    assert (ledger.expected, ledger.lost, ledger.duplicated) == (800, 0, 0), ledger
