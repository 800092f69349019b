"""Webhook posts on their own queue, through the workers as deployed (deploy/compose.yaml's
worker-webhooks and worker-maintenance command lines) on a broker of their own: while a slow
receiver holds both webhooks processes, a maintenance job still runs at once, and the posts all
arrive."""

from __future__ import annotations

import celery
import pytest

from notifier.events_out import record
from notifier.events_out.sending import endpoint_create, endpoint_test_event
from notifier.models import WebhookEvent
from notifier.operations.health import HEARTBEAT_KEY, WATCHED_JOB
from notifier.queues import MAINTENANCE_QUEUE
from tests.conftest import WorkerProcess, wait_until
from tests.integration.test_claim_lease_workers import deployed, named
from tests.notifier.events_out.receiver import Receiver, receiver_running

pytestmark = [pytest.mark.integration, pytest.mark.django_db(transaction=True)]


def test_a_slow_receiver_holds_the_webhooks_worker_and_no_maintenance_job(rig, monkeypatch):
    # The sender is published by the code under test (record.sender_publish, which names the
    # queue), onto the rig's broker.
    monkeypatch.setattr(celery, "current_app", rig.app)
    monkeypatch.setattr(record, "state_client", lambda: None)  # no wake-up keys in this Redis
    workers = {
        service: WorkerProcess(
            queues=[],
            control_app=rig.app,
            broker_url=rig.server.url,
            argv=named(deployed(service)),
            extra_env={"NOTIFIER_WEBHOOK_TIMEOUT_S": "30"},  # the receiver is slower than 5 s
        )
        for service in ("worker-webhooks", "worker-maintenance")
    }
    rig.workers.extend(workers.values())
    for worker in workers.values():
        worker.wait_ready()
    heartbeat = HEARTBEAT_KEY.format(job=WATCHED_JOB)
    broker = rig.server.client()

    # Slow enough that a loaded machine still runs the maintenance job well inside one answer.
    with receiver_running(Receiver(delay_s=15.0)) as receiver:
        endpoints = [
            endpoint_create(name=f"crm-{n}", url=receiver.url, event_types=["delivery.sent"])
            for n in range(3)
        ]
        receiver.secret = endpoints[0].secret
        for endpoint in endpoints:
            endpoint.secret = receiver.secret  # one receiver verifies them all
            endpoint.save(update_fields=["secret"])
            endpoint_test_event(endpoint=endpoint)  # wakes a send run on the webhooks queue

        wait_until(
            lambda: receiver.in_flight == 2,
            timeout=30,
            message="both webhooks processes to be waiting on the slow receiver",
        )
        rig.send("notifier.release_held", (), MAINTENANCE_QUEUE)
        wait_until(
            lambda: broker.get(heartbeat) is not None,
            timeout=12,
            message="the maintenance job to run while the receiver is still answering",
        )
        assert receiver.in_flight > 0, "the maintenance job waited for the slow receiver"

        wait_until(
            lambda: set(WebhookEvent.objects.values_list("state", flat=True)) == {"sent"},
            timeout=90,
            message="every test event to be answered",
        )
    assert receiver.refused == []
    assert sorted(e["data"]["endpoint"] for e in receiver.events()) == ["crm-0", "crm-1", "crm-2"]
