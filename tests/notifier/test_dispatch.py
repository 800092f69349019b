"""notifier.dispatch.publish: Notifier's own publishes take the short way (the message Celery's
send_task would build, without its per-call layers) and reach the broker as send_task's would;
when the short way cannot reach the broker, send_task publishes with its retry policy."""

from __future__ import annotations

import base64
import json
import uuid
from typing import Any

import pytest
from celery import current_app
from kombu.exceptions import OperationalError

from notifier import dispatch, tasks
from notifier.redis_client import broker_client

# The parts of a message that differ from one publish to the next, whoever builds it.
PER_PUBLISH = {"id", "root_id", "correlation_id", "delivery_tag"}


@pytest.fixture
def queue() -> Any:
    name = f"test.dispatch-{uuid.uuid4().hex[:8]}"  # no worker consumes it
    yield name
    broker_client().delete(name)


def taken(queue: str) -> dict[str, Any]:
    raw = broker_client().rpop(queue)
    assert raw is not None, f"nothing was published to {queue}"
    envelope = json.loads(raw)
    envelope["body"] = json.loads(base64.b64decode(envelope["body"]))
    for part in (envelope, envelope["headers"], envelope["properties"]):
        for key in PER_PUBLISH & set(part):
            part[key] = "*"
    return envelope


def test_the_short_way_publishes_what_send_task_publishes(queue):
    current_app.send_task(
        dispatch.PREPARE_TASK,
        args=([7, 8],),
        queue=queue,
        retry_policy=dispatch.PUBLISH_RETRY_POLICY,
    )
    by_celery = taken(queue)
    dispatch.publish(
        dispatch.PREPARE_TASK,
        args=([7, 8],),
        queue=queue,
        retry_policy=dispatch.PUBLISH_RETRY_POLICY,
    )
    assert taken(queue) == by_celery
    assert by_celery["body"][0] == [[7, 8]]


def test_a_task_this_process_has_loaded_carries_its_time_limits_as_send_task_gives_them(queue):
    assert current_app.tasks[dispatch.PREPARE_TASK]  # the app finalized, as in a worker
    current_app.send_task(dispatch.PREPARE_TASK, args=([1],), queue=queue)
    by_celery = taken(queue)
    dispatch.publish(dispatch.PREPARE_TASK, args=([1],), queue=queue)
    message = taken(queue)
    assert message == by_celery
    limits = [tasks.prepare_messages.time_limit, tasks.prepare_messages.soft_time_limit]
    assert message["headers"]["timelimit"] == limits


def test_a_task_known_only_by_name_carries_none(queue):
    current_app.send_task("elsewhere.a_task", args=([1],), queue=queue)
    by_celery = taken(queue)
    dispatch.publish("elsewhere.a_task", args=([1],), queue=queue)
    message = taken(queue)
    assert message == by_celery
    assert message["headers"]["timelimit"] == [None, None]


def test_a_countdown_becomes_the_same_eta_and_kwargs_travel(queue):
    dispatch.publish(
        "notifier.erase_again",
        kwargs={"recipient_id": 1, "record_id": 2},
        queue=queue,
        countdown=60,
    )
    message = taken(queue)
    assert message["headers"]["eta"] is not None
    assert message["body"][1] == {"recipient_id": 1, "record_id": 2}
    assert message["headers"]["kwargsrepr"] == "{'recipient_id': 1, 'record_id': 2}"


def test_long_arguments_are_whole_in_the_body_and_cut_in_their_repr_as_send_task_cuts_it(queue):
    ids = list(range(1_000_000, 1_000_500))
    current_app.send_task(dispatch.DELIVER_TASK, args=(ids,), queue=queue)
    by_celery = taken(queue)
    dispatch.publish(dispatch.DELIVER_TASK, args=(ids,), queue=queue)
    message = taken(queue)
    assert message["body"][0] == [ids]
    assert message["headers"]["argsrepr"] == by_celery["headers"]["argsrepr"]
    assert len(message["headers"]["argsrepr"]) < len(repr((ids,)))


def test_when_the_short_way_cannot_reach_the_broker_send_task_publishes(queue, monkeypatch):
    def unreachable(task_name: str, **options: Any) -> None:
        raise OperationalError("Error 111 connecting to 127.0.0.1:6379. Connection refused.")

    monkeypatch.setattr(dispatch, "_publish_direct", unreachable)
    sent: list[dict[str, Any]] = []
    real_send_task = current_app.send_task

    def send_task(name: str, **options: Any) -> Any:
        sent.append(options)
        return real_send_task(name, **options)

    monkeypatch.setattr(current_app, "send_task", send_task)
    dispatch.publish(
        dispatch.PREPARE_TASK, args=([5],), queue=queue, retry_policy=dispatch.PUBLISH_RETRY_POLICY
    )
    assert [options["retry_policy"] for options in sent] == [dispatch.PUBLISH_RETRY_POLICY]
    assert taken(queue)["body"][0] == [[5]]
