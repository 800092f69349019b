"""A campaign's own send rate: its messages go out no faster than it, whichever worker sends
them; what the bucket cannot take now goes back to the queue, never dropped and never twice."""

from __future__ import annotations

from collections import Counter

import pytest
from django.utils import timezone

from campaigns.models import Campaign
from notifier import dispatch
from notifier.models import Delivery, Message
from notifier.provider_limits import take
from notifier.services.deliveries import CAMPAIGN_BUCKET, campaign_rate, deliveries_deliver
from notifier.status import DeliveryStatus
from tests.campaigns.services.test_forecast import approved, person, run_step

pytestmark = pytest.mark.django_db
S = DeliveryStatus


def test_the_rate_reads_as_a_minute_spread_over_its_seconds():
    assert campaign_rate(600).per_second == 10
    assert campaign_rate(600).burst == 10  # about a second's worth at once
    assert campaign_rate(1).burst == 1


def fanned_out(marketer, lead, published, *, rate: int | None) -> tuple[Campaign, list[int]]:
    for _ in range(4):
        person()
    campaign = approved(marketer, lead, send_rate=rate)
    step = run_step(campaign, "Notice", published)
    ids = sorted(Delivery.objects.filter(message__step=step).values_list("pk", flat=True))
    # With a rate of its own, every delivery waits for the campaign's bucket; without one,
    # in-app went out as it was routed (nothing to wait for), and email is queued.
    statuses = set(Delivery.objects.filter(pk__in=ids).values_list("channel", "status"))
    assert len(ids) == 8 and statuses == (
        {("inapp", S.QUEUED), ("email", S.QUEUED)}
        if rate
        else {("inapp", S.SENT), ("email", S.QUEUED)}
    )
    return campaign, ids


def test_a_campaign_sends_no_more_than_its_bucket_grants_and_queues_the_rest(
    marketer, lead, published
):
    """One a minute: the first delivery takes the only token; the other seven go back to the
    queue with no attempt used up and a deliver task published for them."""
    _, ids = fanned_out(marketer, lead, published, rate=1)
    published.deliver.clear()
    report = deliveries_deliver(delivery_ids=ids)
    assert (report.sent, len(report.deferred)) == (1, 7)
    statuses = Counter(Delivery.objects.filter(pk__in=ids).values_list("status", flat=True))
    assert statuses == Counter({S.SENT: 1, S.QUEUED: 7})
    waiting = Delivery.objects.filter(pk__in=report.deferred)
    assert set(waiting.values_list("attempts", flat=True)) == {0}
    assert all(d.next_attempt_at > d.updated_at for d in waiting)  # later, not now
    assert sorted(pk for batch in published.deliver for pk in batch) == sorted(report.deferred)


def test_a_second_worker_finds_the_bucket_empty_and_sends_nothing_twice(marketer, lead, published):
    campaign, ids = fanned_out(marketer, lead, published, rate=1)
    # Another worker took this minute's token already.
    assert take(CAMPAIGN_BUCKET.format(campaign.pk), campaign_rate(1)).granted == 1
    first = deliveries_deliver(delivery_ids=ids)
    assert (first.sent, len(first.deferred)) == (0, 8)
    # The same task run again (a broker re-delivery): not due yet, so nothing is claimed.
    again = deliveries_deliver(delivery_ids=ids)
    assert (again.claimed, again.sent) == (0, 0)
    assert set(Delivery.objects.filter(pk__in=ids).values_list("status", flat=True)) == {S.QUEUED}


def test_without_a_rate_of_its_own_everything_goes_at_once(marketer, lead, published):
    _, ids = fanned_out(marketer, lead, published, rate=None)
    report = deliveries_deliver(delivery_ids=ids)
    assert (report.sent, report.skipped, report.deferred) == (4, 4, [])  # in-app: sent already
    assert set(Delivery.objects.filter(pk__in=ids).values_list("status", flat=True)) == {S.SENT}


def test_another_campaigns_rate_is_not_this_ones(marketer, lead, published):
    _, ids = fanned_out(marketer, lead, published, rate=1)
    other = Campaign.objects.create(name="Other", send_rate_per_minute=1)
    assert take(CAMPAIGN_BUCKET.format(other.pk), campaign_rate(1)).granted == 1
    report = deliveries_deliver(delivery_ids=ids)
    assert report.sent == 1


def test_each_deferred_delivery_is_published_for_its_own_wait(
    marketer, lead, published, monkeypatch
):
    """Two campaigns with different rates in one batch: each campaign's deferred deliveries are
    published for when they are due (next_attempt_at), not all for the last wait computed.
    Published too early they are not claimable yet and sit until the stuck-work sweep; too late,
    the faster campaign waits a minute for nothing."""
    _, ids = fanned_out(marketer, lead, published, rate=1)
    faster = Campaign.objects.create(name="Faster", send_rate_per_minute=60)
    moved = Delivery.objects.filter(pk__in=ids[4:]).values_list("message_id", flat=True)
    Message.objects.filter(pk__in=list(moved)).update(campaign=faster)
    countdowns: dict[int, float] = {}

    def publish(delivery_ids, lane, channel, countdown=0.0):
        countdowns.update(dict.fromkeys(delivery_ids, countdown))

    monkeypatch.setattr(dispatch, "publish_deliver", publish)
    started = timezone.now()
    report = deliveries_deliver(delivery_ids=ids)
    assert (report.sent, len(report.deferred)) == (2, 6)
    assert set(countdowns) == set(report.deferred)
    for delivery in Delivery.objects.filter(pk__in=report.deferred):
        due_in = (delivery.next_attempt_at - started).total_seconds()
        assert abs(countdowns[delivery.pk] - due_in) < 1.5, (delivery.pk, countdowns, due_in)
