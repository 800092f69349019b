"""The half-open probe race with real workers: deliveries that lost it go out as soon as the
probe closes the breaker, not after the probe lease or the cooldown (here 10 minutes)."""

from __future__ import annotations

import pytest
from django.utils import timezone

from channels.base import SendResult
from channels.models import SandboxSend
from notifier import provider_limits
from notifier.api import notify_many
from notifier.models import Delivery, User
from notifier.provider_limits import State, breaker_allows, breaker_redis_keys, breaker_state
from notifier.redis_client import redis_client
from notifier.services.deliveries import _record_health
from notifier.status import DeliveryStatus, Reason
from tests.conftest import wait_until
from tests.factories import order_context
from tests.integration.rig import ledger_for

pytestmark = [pytest.mark.integration, pytest.mark.django_db(transaction=True)]
KEY = "email:sandbox"
LONG_S = 600  # the probe lease and the cooldown: what the losers would otherwise wait


def test_probe_race_losers_in_worker_processes_go_out_once_the_probe_succeeds(
    rig, settings, monkeypatch
):
    settings.NOTIFIER_REDIS_URL = (
        rig.server.url
    )  # the workers' breakers, read and written from here
    settings.NOTIFIER_CIRCUIT_COOLDOWN_S = LONG_S
    monkeypatch.setattr(provider_limits, "PROBE_LEASE_S", float(LONG_S))
    # A breaker whose cooldown has just ended, and another worker's probe in flight.
    redis_client(rig.server.url).hset(breaker_redis_keys(KEY)[0], "open_until", 0)
    assert breaker_state(KEY) is State.HALF_OPEN
    assert breaker_allows(KEY).probe
    rig.worker(NOTIFIER_CIRCUIT_COOLDOWN_S=str(LONG_S))
    User.objects.bulk_create(
        [User(username=f"race-{i}", email=f"race-{i}@example.com", password="!") for i in range(40)]
    )
    users = list(User.objects.filter(username__startswith="race-"))
    ids = notify_many(
        users, "order.shipped", order_context(), channels=["email"], idempotency_key="race"
    ).message_ids
    waiting = Delivery.objects.filter(
        message_id__in=ids, status=DeliveryStatus.QUEUED, reason=Reason.CIRCUIT_OPEN
    )
    wait_until(lambda: waiting.count() == 40, timeout=60, message="the losers to defer")
    soonest = min(waiting.values_list("next_attempt_at", flat=True))
    # Left alone they would wait minutes (the lease, capped at the longest broker countdown).
    assert (soonest - timezone.now()).total_seconds() > 120
    assert not SandboxSend.objects.filter(message_id__in=ids).exists()

    # The probing worker's send succeeds, and it records so (as deliveries_deliver does).
    _record_health(KEY, [SendResult.sent("sandbox", "probe")])

    sent = Delivery.objects.filter(message_id__in=ids, status=DeliveryStatus.SENT)
    wait_until(lambda: sent.count() == 40, timeout=60, message="the woken losers to be sent")
    ledger = ledger_for(ids, ["email"])
    assert (ledger.lost, ledger.duplicated) == (0, 0)
