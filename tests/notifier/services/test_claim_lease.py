"""The claim's lease: sends recorded as they happen, a live sender's claims never taken, a sender
whose claim was taken sends no more, and the claims sweep brings lost transactional work back."""

from __future__ import annotations

import datetime as dt
import uuid

import pytest
from django.utils import timezone

from channels import sandbox
from channels.models import SandboxSend
from notifier.api import notify
from notifier.models import Delivery, Message
from notifier.services import deliveries
from notifier.services.deliveries import (
    deliveries_deliver,
    record_now,
    requeue_expired_claims,
    requeue_stuck_work,
)
from notifier.services.pipeline import messages_prepare
from notifier.status import DeliveryStatus, Reason
from tests.factories import UserFactory, order_context

pytestmark = pytest.mark.django_db
S = DeliveryStatus


def prepared_batch(count: int, channel: str = "sms") -> list[Delivery]:
    ids = [
        notify(UserFactory(), "order.shipped", order_context(), channels=[channel]).pk
        for _ in range(count)
    ]  # transactional, one by one
    messages_prepare(message_ids=ids)
    return list(Delivery.objects.filter(message_id__in=ids).order_by("pk"))


@pytest.fixture
def provider_calls(monkeypatch):
    """Each sandbox call, with what PostgreSQL held at that moment about the batch's other
    deliveries (their statuses) and the sandbox ledger (its rows), as seen by the provider."""
    calls: list[dict[str, object]] = []
    decide = sandbox._decide

    def watching(outgoing, provider):
        calls.append(
            {
                "delivery": outgoing.delivery_id,
                "statuses": dict(Delivery.objects.values_list("pk", "status")),
                "ledger": SandboxSend.objects.count(),
            }
        )
        for hook in hooks:
            hook(len(calls))
        return decide(outgoing, provider)

    hooks: list = []
    monkeypatch.setattr(sandbox, "_decide", watching)
    return calls, hooks


def test_each_accepted_send_is_recorded_before_the_next_goes_out(
    published, provider_calls, settings
):
    calls, _ = provider_calls
    settings.NOTIFIER_SANDBOX_LATENCY_MS = (
        20  # a round trip: each answer is written before the next call
    )
    batch = prepared_batch(5)
    deliveries_deliver(delivery_ids=[d.pk for d in batch])
    assert [c["delivery"] for c in calls] == [d.pk for d in batch]
    for index, call in enumerate(calls):
        # Every earlier one is written as sent, and on the provider's ledger, already.
        assert [call["statuses"][d.pk] for d in batch[:index]] == [S.SENT] * index
        assert [call["statuses"][d.pk] for d in batch[index:]] == [S.SENDING] * (5 - index)
        assert call["ledger"] == index
    assert set(
        Delivery.objects.filter(pk__in=[d.pk for d in batch]).values_list("status", flat=True)
    ) == {S.SENT}


@pytest.mark.parametrize(("within_ms", "writes"), [(0, 3), (60_000, 1)])
def test_an_instant_provider_is_never_recorded_ahead_of_its_ledger(
    published, settings, monkeypatch, within_ms, writes
):
    """No latency: the sandbox takes requests of four and answers them one by one. Whether
    the sender writes each request's answers before the next request goes out (no window:
    4 + 4 + 2) or gathers the whole batch into one write, every send it writes is on the
    provider's ledger already."""
    settings.NOTIFIER_SANDBOX_LATENCY_MS = 0
    settings.NOTIFIER_SANDBOX_BATCH = 4
    settings.NOTIFIER_RECORD_WITHIN_MS = within_ms
    batch = prepared_batch(10)
    record = deliveries._record
    seen: list[tuple[list[int], list[int]]] = []

    def watched(group, results, *args, **kwargs):
        ids = [d.pk for d in group]
        on_ledger = SandboxSend.objects.filter(delivery_id__in=ids, outcome="sent")
        seen.append((ids, sorted(on_ledger.values_list("delivery_id", flat=True))))
        return record(group, results, *args, **kwargs)

    monkeypatch.setattr(deliveries, "_record", watched)
    report = deliveries_deliver(delivery_ids=[d.pk for d in batch])
    assert report.sent == 10
    assert len(seen) == writes
    assert [pk for ids, _ in seen for pk in ids] == [d.pk for d in batch]
    assert all(ids == on_ledger for ids, on_ledger in seen), seen
    assert SandboxSend.objects.filter(outcome="sent").count() == 10


@pytest.mark.parametrize(
    ("waited_ms", "call_ms", "now"),
    [
        (0, 50, True),  # a provider with a real round trip: every answer written at once
        (0, 10, True),
        (0, 0.3, False),  # a quick one: a few answers gathered into one write...
        (9.8, 0.3, True),  # ... never held longer than the window
    ],
)
def test_answers_are_gathered_only_within_the_window(waited_ms, call_ms, now):
    assert record_now(waited_s=waited_ms / 1000, call_s=call_ms / 1000, within_s=0.010) is now


def test_a_sender_whose_claim_was_taken_sends_no_more(published, provider_calls, settings):
    calls, hooks = provider_calls
    settings.NOTIFIER_CLAIM_LEASE_S = 0.02  # renewed before every send
    settings.NOTIFIER_SANDBOX_LATENCY_MS = 10
    batch = prepared_batch(6)
    other = uuid.uuid4()

    def taken_after_two(count: int) -> None:
        if count == 2:  # the sweep took the rest back and another run claimed them
            Delivery.objects.filter(pk__in=[d.pk for d in batch[2:]]).update(claim_token=other)

    hooks.append(taken_after_two)
    report = deliveries_deliver(delivery_ids=[d.pk for d in batch])
    assert [c["delivery"] for c in calls] == [batch[0].pk, batch[1].pk]
    assert report.sent == 2
    fresh = {d.pk: d for d in Delivery.objects.filter(pk__in=[d.pk for d in batch])}
    assert [fresh[d.pk].status for d in batch] == [S.SENT] * 2 + [S.SENDING] * 4
    assert {fresh[d.pk].claim_token for d in batch[2:]} == {other}  # left to their new owner


def test_the_lease_is_renewed_while_the_sender_lives(published, provider_calls, settings):
    calls, hooks = provider_calls
    settings.NOTIFIER_CLAIM_LEASE_S = 0.05
    settings.NOTIFIER_SANDBOX_LATENCY_MS = 20
    batch = prepared_batch(6)
    seen: list[dt.datetime] = []
    hooks.append(lambda _: seen.append(Delivery.objects.get(pk=batch[-1].pk).claimed_until))
    deliveries_deliver(delivery_ids=[d.pk for d in batch])
    assert len(calls) == 6
    assert seen == sorted(seen) and len(set(seen)) >= 3  # pushed forward as it went


def test_the_sweep_leaves_a_live_claim_however_old(published):
    (sms,) = prepared_batch(1)
    long_ago = timezone.now() - dt.timedelta(minutes=30)
    Delivery.objects.filter(pk=sms.pk).update(
        status=S.SENDING,
        attempts=1,
        claimed_at=long_ago,
        claimed_until=timezone.now() + dt.timedelta(seconds=10),  # renewed a moment ago
        claim_token=uuid.uuid4(),
    )
    assert requeue_stuck_work().expired_claims == 0
    assert requeue_expired_claims().expired_claims == 0
    assert Delivery.objects.get(pk=sms.pk).status == S.SENDING


def test_the_sweep_takes_back_a_claim_whose_lease_ran_out(
    published, django_capture_on_commit_callbacks
):
    (sms,) = prepared_batch(1)
    Delivery.objects.filter(pk=sms.pk).update(
        status=S.SENDING,
        attempts=1,
        claimed_at=timezone.now() - dt.timedelta(seconds=20),
        claimed_until=timezone.now() - dt.timedelta(seconds=1),
        claim_token=uuid.uuid4(),
    )
    with django_capture_on_commit_callbacks(execute=True):
        report = requeue_expired_claims()
    fresh = Delivery.objects.get(pk=sms.pk)
    assert (report.expired_claims, fresh.status, fresh.reason) == (
        1,
        S.QUEUED,
        Reason.CLAIM_EXPIRED,
    )
    assert (fresh.claimed_until, fresh.claim_token) == (None, None)
    assert published.delivered_ids()[-1] == sms.pk
    deliveries_deliver(delivery_ids=[sms.pk])
    assert (Delivery.objects.get(pk=sms.pk).status, Delivery.objects.get(pk=sms.pk).attempts) == (
        S.SENT,
        2,
    )


@pytest.fixture
def lane_depth(monkeypatch):
    depth = {"transactional": 0}
    monkeypatch.setattr(deliveries, "lane_queue_depth", lambda lane: depth[lane])
    return depth


def test_the_sweep_publishes_lost_transactional_work_within_seconds(
    published, settings, django_capture_on_commit_callbacks, lane_depth
):
    settings.NOTIFIER_TRANSACTIONAL_REQUEUE_AFTER_S = 10
    user = UserFactory()
    (sms,) = prepared_batch(1)
    unrouted = notify(user, "order.shipped", order_context(), channels=["sms"])
    soon = timezone.now() + dt.timedelta(seconds=5)
    assert (requeue_expired_claims(now=soon).queued, requeue_expired_claims(now=soon).messages) == (
        0,
        0,
    )
    later = timezone.now() + dt.timedelta(seconds=12)
    with django_capture_on_commit_callbacks(execute=True):
        report = requeue_expired_claims(now=later)
    assert (report.queued, report.messages) == (1, 1)
    assert published.delivered_ids()[-1] == sms.pk
    assert [unrouted.pk] in [ids for ids, _ in published.prepare]
    # the clock restarted: the next sweep right after publishes the delivery no more
    assert requeue_expired_claims(now=later + dt.timedelta(seconds=1)).queued == 0


def test_the_sweep_publishes_nothing_more_while_tasks_wait_in_the_lane(
    published, settings, lane_depth
):
    """A backlog, not a loss: copies of waiting tasks would only make it deeper."""
    prepared_batch(1)
    lane_depth["transactional"] = 3
    report = requeue_expired_claims(now=timezone.now() + dt.timedelta(seconds=30))
    assert (report.queued, report.messages) == (0, 0)
    lane_depth["transactional"] = 0
    assert requeue_expired_claims(now=timezone.now() + dt.timedelta(seconds=30)).queued == 1


def test_the_sweep_leaves_bulk_work_to_the_minute_job(published, settings, lane_depth):
    settings.NOTIFIER_TRANSACTIONAL_REQUEUE_AFTER_S = 10
    (email,) = prepared_batch(1, channel="email")
    Message.objects.filter(pk=email.message_id).update(lane="bulk")
    report = requeue_expired_claims(now=timezone.now() + dt.timedelta(seconds=30))
    assert (report.queued, report.messages) == (0, 0)
