"""notify() while the broker is away: the caller does not wait for it, and nothing is lost.

A web process (here a Python process of its own, as a gunicorn worker would be) calls notify()
in its transaction with CELERY_BROKER_URL pointing at a port nobody listens on: each call,
commit and on-commit publish included, returns at once, the message waiting in PostgreSQL.
Then Redis comes up on that port, and the re-queue job (run by a real worker, as beat would)
publishes the messages, which go out.
"""

from __future__ import annotations

import json
import os
import statistics
import subprocess
import sys

import pytest
from django.conf import settings

from notifier.models import Delivery, Message
from notifier.status import DeliveryStatus
from tests.conftest import ROOT
from tests.factories import UserFactory
from tests.integration.rig import RedisServer, Rig, free_port

pytestmark = [pytest.mark.integration, pytest.mark.django_db(transaction=True)]
S = DeliveryStatus
CALLS = 7

# What a view calling notify() does; prints each call's wall time, commit included.
WEB_REQUESTS = f"""
import json, sys, time
import django
django.setup()
from django.db import transaction
from notifier.api import notify
from notifier.models import User
from tests.factories import order_context

user = User.objects.get(pk=int(sys.argv[1]))
took = []
for call in range({CALLS}):
    started = time.perf_counter()
    with transaction.atomic():
        notify(user, "order.shipped", order_context(), channels=["inapp"],
               idempotency_key=f"broker-down-{{call}}")
    took.append(time.perf_counter() - started)
print(json.dumps(took))
"""


def web_process_notifies(user_id: int, broker_url: str) -> list[float]:
    db = settings.DATABASES["default"]
    env = {
        **os.environ,
        "DJANGO_SETTINGS_MODULE": "tests.settings",
        "DATABASE_URL": (
            f"postgres://{db['USER']}@{db['HOST'] or '127.0.0.1'}:{db['PORT'] or 5432}/{db['NAME']}"
        ),
        "CELERY_BROKER_URL": broker_url,
        "REDIS_URL": settings.NOTIFIER_REDIS_URL,  # only the broker is away
    }
    done = subprocess.run(
        [sys.executable, "-c", WEB_REQUESTS, str(user_id)],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    return [float(t) for t in json.loads(done.stdout.strip().splitlines()[-1])]


def test_notify_does_not_wait_for_a_broker_that_is_down_and_requeue_publishes_later(
    monkeypatch,
):
    closed_port = free_port()
    user = UserFactory()
    took = web_process_notifies(user.pk, f"redis://127.0.0.1:{closed_port}/0")

    # Celery's default publish retry cost every call about 0.6 s (at least 0.4 s of sleeps).
    assert statistics.median(took) < 0.3, took
    messages = list(Message.objects.filter(user=user).values_list("pk", flat=True))
    assert len(messages) == CALLS
    assert not Message.objects.filter(pk__in=messages, routed_at__isnull=False).exists()

    rig = Rig(RedisServer(port=closed_port), monkeypatch)  # the broker is back
    try:
        rig.worker()

        def all_sent() -> bool:
            statuses = list(
                Delivery.objects.filter(message_id__in=messages).values_list("status", flat=True)
            )
            return len(statuses) == CALLS and set(statuses) == {S.SENT}

        rig.drain(all_sent, timeout=120)
    finally:
        rig.close()
