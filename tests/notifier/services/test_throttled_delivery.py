"""Deliver under global rate limits, open circuits and provider failover."""

from __future__ import annotations

from datetime import timedelta

import pytest
from django.core import mail
from django.utils import timezone

from channels.base import ErrorCode, SendResult
from channels.models import SandboxOutage, SandboxSend
from channels.registry import reset_providers
from notifier.api import notify
from notifier.models import Delivery
from notifier.provider_limits import (
    State,
    breaker_allows,
    breaker_record,
    breaker_redis_keys,
    breaker_state,
)
from notifier.redis_client import redis_client, state_redis_url
from notifier.services.deliveries import _record_health, deliveries_deliver
from notifier.services.pipeline import messages_prepare
from notifier.status import DeliveryStatus, Reason
from tests.factories import UserFactory, order_context

pytestmark = pytest.mark.django_db
S = DeliveryStatus


def emails(count: int) -> list[int]:
    ids = [
        notify(UserFactory(), "order.shipped", order_context(), channels=["email"]).pk
        for _ in range(count)
    ]
    messages_prepare(message_ids=ids)
    return list(Delivery.objects.filter(message_id__in=ids).values_list("pk", flat=True))


def test_a_global_rate_limit_sends_what_it_allows_and_defers_the_rest(published, settings):
    settings.NOTIFIER_RATE_LIMITS = {"email:sandbox": "5/s"}
    ids = emails(20)
    report = deliveries_deliver(delivery_ids=ids)
    assert (report.sent, len(report.deferred)) == (5, 15)
    waiting = Delivery.objects.filter(pk__in=report.deferred)
    assert set(waiting.values_list("status", flat=True)) == {S.QUEUED}
    assert set(waiting.values_list("attempts", flat=True)) == {0}  # no attempt used up
    # one task for the deferred batch, with a short countdown (not one ETA per delivery)
    deferred_publishes = [p for p in published.deliver if sorted(p[0]) == sorted(report.deferred)]
    assert len(deferred_publishes) == 1
    assert 0 < deferred_publishes[0][3] <= 1.0


def test_a_burst_of_provider_errors_opens_the_circuit_and_later_deliveries_wait(
    published, settings
):
    settings.NOTIFIER_CIRCUIT_MIN_CALLS, settings.NOTIFIER_CIRCUIT_COOLDOWN_S = 5, 30
    SandboxOutage.objects.create(channel="email", until=timezone.now() + timedelta(minutes=5))
    first = emails(5)
    deliveries_deliver(delivery_ids=first)
    assert breaker_state("email:sandbox") is State.OPEN
    assert set(Delivery.objects.filter(pk__in=first).values_list("reason", flat=True)) == {
        Reason.RETRY_SCHEDULED
    }
    later = emails(3)
    report = deliveries_deliver(delivery_ids=later)
    assert (report.sent, report.failed, len(report.deferred)) == (0, 0, 3)
    held_back = Delivery.objects.filter(pk__in=later)
    assert set(held_back.values_list("reason", flat=True)) == {Reason.CIRCUIT_OPEN}
    assert set(held_back.values_list("attempts", flat=True)) == {0}
    assert not SandboxSend.objects.filter(delivery_id__in=later).exists()  # provider not called


def test_a_second_provider_takes_over_while_the_first_is_down(published, settings):
    settings.NOTIFIER_PROVIDERS = {**settings.NOTIFIER_PROVIDERS, "email": ["sandbox", "django"]}
    settings.NOTIFIER_ALLOW_SANDBOX_FAILOVER = True  # the sandbox plays a failing real provider
    settings.NOTIFIER_CIRCUIT_MIN_CALLS = 3
    reset_providers()
    SandboxOutage.objects.create(channel="email", until=timezone.now() + timedelta(minutes=5))
    deliveries_deliver(delivery_ids=emails(3))  # opens the sandbox's circuit
    assert breaker_state("email:sandbox") is State.OPEN
    mail.outbox.clear()
    ids = emails(2)
    report = deliveries_deliver(delivery_ids=ids)
    assert report.sent == 2
    assert set(Delivery.objects.filter(pk__in=ids).values_list("provider", flat=True)) == {"django"}
    assert len(mail.outbox) == 2


def test_deliveries_that_lost_the_probe_race_go_out_as_soon_as_the_probe_succeeds(
    published, settings
):
    """A half-open breaker whose probe is in flight (another worker's): this batch defers
    for the probe lease; the probe's success publishes it again at once, due now."""
    settings.NOTIFIER_CIRCUIT_MIN_CALLS, settings.NOTIFIER_CIRCUIT_COOLDOWN_S = 3, 30
    key = "email:sandbox"
    for _ in range(3):
        breaker_record(key, success=False)
    assert breaker_state(key) is State.OPEN
    # The 30 s cooldown has just ended (without waiting it out in a test).
    redis_client(state_redis_url()).hset(breaker_redis_keys(key)[0], "open_until", 0)
    assert breaker_state(key) is State.HALF_OPEN
    assert breaker_allows(key).probe  # another worker's probe, now in flight
    ids = emails(3)

    report = deliveries_deliver(delivery_ids=ids)

    assert sorted(report.deferred) == sorted(ids)
    assert report.deferred_for_s > 10  # left alone, they would wait out the lease
    published.deliver.clear()
    # The probing worker's send succeeds and it records so, as deliveries_deliver does.
    _record_health(key, [SendResult.sent("sandbox", "probe-1")])

    assert breaker_state(key) is State.CLOSED
    assert [(sorted(i), countdown) for i, _, _, countdown in published.deliver] == [
        (sorted(ids), 0.0)
    ]
    again = deliveries_deliver(delivery_ids=ids)
    assert again.sent == 3
    assert SandboxSend.objects.filter(delivery_id__in=ids).count() == 3


def test_a_batch_with_three_percent_soft_failures_leaves_the_breaker_closed(published, settings):
    """What a deliver task reports for a batch of 500 with 15 soft failures: 15 failures and
    485 sends, in one report; the default breaker stays closed however many such batches."""
    results = [SendResult.sent("sandbox", f"ok-{n}") for n in range(485)] + [
        SendResult.transient("sandbox", ErrorCode.PROVIDER_UNAVAILABLE, "503") for _ in range(15)
    ]
    for _ in range(4):
        _record_health("email:sandbox", results)
    assert breaker_state("email:sandbox") is State.CLOSED
