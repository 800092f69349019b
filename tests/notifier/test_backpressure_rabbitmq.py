"""Backpressure on a RabbitMQ broker: the bulk lane's depth is read from the broker itself, so
switching CELERY_BROKER_URL to amqp:// keeps admission control and the fan-out's pacing."""

from __future__ import annotations

import os
from collections.abc import Iterator

import pytest
from kombu import Connection, Exchange, Producer, Queue
from kombu.exceptions import OperationalError

from notifier import backpressure
from notifier.queues import Lane, deliver_queue, lane_queues, prepare_queue

# RabbitMQ's default vhost on this machine; skipped when there is no RabbitMQ.
AMQP_URL = os.environ.get("NOTIFIER_TEST_AMQP_URL", "amqp://guest:guest@127.0.0.1:5672//")


@pytest.fixture
def rabbit(settings) -> Iterator[Connection]:
    connection = Connection(AMQP_URL, connect_timeout=2)
    try:
        connection.ensure_connection(max_retries=1)
    except (*connection.connection_errors, OperationalError):
        pytest.skip(f"no RabbitMQ at {AMQP_URL} (set NOTIFIER_TEST_AMQP_URL)")
    channel = connection.channel()
    for name in lane_queues(Lane.BULK):
        Queue(name, Exchange(name), routing_key=name)(channel).delete()
    settings.CELERY_BROKER_URL = AMQP_URL
    backpressure.reset_depth_cache()
    yield connection
    for name in lane_queues(Lane.BULK):
        Queue(name, Exchange(name), routing_key=name)(channel).delete()
    for conn in backpressure._amqp_connections.values():
        conn.release()
    backpressure._amqp_connections.clear()
    connection.release()


def publish(connection: Connection, queue_name: str, count: int) -> None:
    queue = Queue(queue_name, Exchange(queue_name), routing_key=queue_name)
    producer = Producer(connection.channel())
    for index in range(count):
        producer.publish(
            {"n": index}, exchange=queue.exchange, routing_key=queue_name, declare=[queue]
        )


def test_depth_is_the_ready_messages_of_the_bulk_queues(rabbit, settings):
    assert backpressure.bulk_queue_depth() == 0  # not declared yet: nothing waiting
    publish(rabbit, prepare_queue(Lane.BULK), 3)
    publish(rabbit, deliver_queue(Lane.BULK, "email"), 4)
    publish(rabbit, deliver_queue(Lane.TRANSACTIONAL, "email"), 50)  # another lane: not counted
    backpressure.reset_depth_cache()
    assert backpressure.bulk_queue_depth() == 7

    settings.NOTIFIER_BULK_HIGH_WATER = 6
    backpressure.reset_depth_cache()
    assert backpressure.bulk_congested()
    Queue(deliver_queue(Lane.TRANSACTIONAL, "email"))(rabbit.channel()).delete()


def test_an_unreachable_rabbitmq_admits_as_usual(rabbit, settings):
    settings.CELERY_BROKER_URL = "amqp://guest:guest@127.0.0.1:1//"
    backpressure.reset_depth_cache()
    assert backpressure.bulk_queue_depth() == 0
    assert settings.CELERY_BROKER_URL not in backpressure._amqp_connections
