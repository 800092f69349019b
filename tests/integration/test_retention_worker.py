"""The retention job as deployed: the beat task on the maintenance queue, run by a real worker
process twice at once (two prefork children), archives every old message exactly once."""

from __future__ import annotations

import gzip
import json
from datetime import timedelta

import pytest
import time_machine
from django.utils import timezone

from notifier import dispatch
from notifier.api import notify
from notifier.models import Delivery, Message
from notifier.queues import MAINTENANCE_QUEUE
from notifier.services.deliveries import deliveries_deliver
from notifier.services.pipeline import messages_prepare
from notifier_site.celery import app
from tests.conftest import WorkerProcess, wait_until
from tests.factories import UserFactory, order_context

pytestmark = [pytest.mark.integration, pytest.mark.django_db(transaction=True)]


def old_message(user) -> Message:
    with time_machine.travel(timezone.now() - timedelta(days=400), tick=False):
        message = notify(user, "order.shipped", order_context(), channels=["email"])
        messages_prepare(message_ids=[message.pk])
        deliveries_deliver(
            delivery_ids=list(Delivery.objects.filter(message=message).values_list("pk", flat=True))
        )
    return message


def test_two_runs_at_once_in_a_worker_archive_each_old_message_once(tmp_path, monkeypatch):
    monkeypatch.setattr(dispatch, "publish_prepare", lambda ids, lane: None)
    monkeypatch.setattr(dispatch, "publish_deliver", lambda *args, **kwargs: None)
    user = UserFactory()
    old = [old_message(user).pk for _ in range(30)]
    archive = tmp_path / "archive"
    worker = WorkerProcess(
        queues=[MAINTENANCE_QUEUE],
        concurrency=2,
        extra_env={
            "NOTIFIER_RETENTION_DAYS": "180",
            "NOTIFIER_RETENTION_BATCH": "2",
            "NOTIFIER_ARCHIVE_DIR": str(archive),
        },
    )
    try:
        worker.wait_ready()
        for _ in range(2):  # what a re-run of the nightly job, or a second beat, would do
            app.send_task("notifier.retention", queue=MAINTENANCE_QUEUE)
        wait_until(
            lambda: not Message.objects.filter(pk__in=old).exists(),
            timeout=120,
            message="the old messages to be archived and deleted",
        )
    finally:
        worker.stop()

    archived = []
    for path in sorted(archive.glob("*.jsonl.gz")):
        with gzip.open(path, "rt") as handle:
            archived += [json.loads(line)["message"]["id"] for line in handle]
    assert sorted(archived) == sorted(old)  # none twice, none missing
    assert not list(archive.glob(".*.partial"))
