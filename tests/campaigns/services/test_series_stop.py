"""A customer who converted (or clicked, as the campaign says) gets no more of its series."""

from __future__ import annotations

from datetime import timedelta
from decimal import Decimal

import pytest
import time_machine
from django.utils import timezone

from campaigns.models import Campaign, SeriesStop
from campaigns.policies import series_stops
from campaigns.services.definitions import approval_changes
from campaigns.services.tracking import conversion_record, record_click
from notifier.models import Delivery, DeliveryEvent
from notifier.services.release import held_release
from notifier.status import DeliveryStatus, Reason
from tests.campaigns.services.test_campaign_flow import (
    audience,
    scheduled,
    start_step,
    step_start,
)

pytestmark = pytest.mark.django_db
S = DeliveryStatus


@pytest.mark.parametrize(
    ("rule", "converted", "clicked", "stops"),
    [
        ("converted", True, False, True),
        ("converted", False, True, False),
        ("clicked", False, True, True),
        ("clicked", True, False, False),
        ("either", True, False, True),
        ("either", False, True, True),
        ("either", False, False, False),
        ("never", True, True, False),
    ],
)
def test_the_rule_says_whose_series_stops(rule, converted, clicked, stops):
    assert series_stops(rule, converted=converted, clicked=clicked) is stops


def sent(delivery: Delivery) -> Delivery:
    """As if the provider accepted it (no worker runs in these tests)."""
    Delivery.objects.filter(pk=delivery.pk).update(status=S.SENT, sent_at=timezone.now())
    delivery.refresh_from_db()
    return delivery


def notice_then_reminder(marketer, lead, published, *, stop_on: str, at_ten_local=()):
    buyer, other = audience(2)
    campaign = scheduled(marketer, lead, at_ten_local=at_ten_local)
    Campaign.objects.filter(pk=campaign.pk).update(stop_series_on=stop_on)
    approved = campaign.approved_definition
    approved["campaign"]["stop_series_on"] = stop_on  # as the lead approved it
    Campaign.objects.filter(pk=campaign.pk).update(approved_definition=approved)
    notice = start_step(campaign, "Notice", published)
    with time_machine.travel(step_start(campaign, notice)):
        inapp = sent(Delivery.objects.get(message__step=notice, user=buyer, channel="inapp"))
    return campaign, notice, inapp, buyer, other


def test_a_customer_who_converted_gets_no_later_step_and_support_sees_why(
    marketer, lead, published
):
    campaign, notice, _inapp, buyer, other = notice_then_reminder(
        marketer, lead, published, stop_on=SeriesStop.CONVERTED
    )
    with time_machine.travel(step_start(campaign, notice) + timedelta(hours=2)):
        conversion = conversion_record(
            user_id=buyer.pk,
            name="purchase",
            value=Decimal("20"),
            reference="order:1",
            occurred_at=timezone.now(),
        )
    assert conversion.campaign_id == campaign.pk
    reminder = start_step(campaign, "Reminder", published)
    stopped = Delivery.objects.filter(message__step=reminder, user=buyer)
    assert stopped.exists()
    assert set(stopped.values_list("status", "reason")) == {(S.SUPPRESSED, Reason.SERIES_STOPPED)}
    assert (
        DeliveryEvent.objects.filter(delivery__in=stopped, reason=Reason.SERIES_STOPPED).count()
        == stopped.count()
    )
    still = Delivery.objects.filter(message__step=reminder, user=other)
    assert set(still.values_list("channel", "status")) == {("inapp", S.SENT), ("email", S.QUEUED)}


def test_a_held_later_step_is_not_released_to_a_customer_who_clicked(marketer, lead, published):
    campaign, _notice, inapp, buyer, other = notice_then_reminder(
        marketer, lead, published, stop_on=SeriesStop.CLICKED, at_ten_local=("Last call",)
    )
    last_call = campaign.steps.get(name="Last call")  # 10:00 local (UTC), held until then
    fanned = step_start(campaign, last_call) - timedelta(hours=26)
    start_step(campaign, "Last call", published, at=fanned)
    held = Delivery.objects.filter(message__step=last_call, user=buyer)
    assert set(held.values_list("status", flat=True)) == {S.HELD}
    with time_machine.travel(fanned + timedelta(hours=1)):
        assert record_click(message_id=inapp.message_id, channel="inapp", index=0)
    with time_machine.travel(step_start(campaign, last_call) - timedelta(minutes=30)):
        held_release()
    assert set(held.values_list("status", "reason")) == {(S.SUPPRESSED, Reason.SERIES_STOPPED)}
    others = Delivery.objects.filter(message__step=last_call, user=other)
    assert set(others.values_list("status", flat=True)) == {S.QUEUED}


def test_never_sends_every_step_to_everyone(marketer, lead, published):
    campaign, notice, inapp, buyer, _other = notice_then_reminder(
        marketer, lead, published, stop_on=SeriesStop.NEVER
    )
    with time_machine.travel(step_start(campaign, notice) + timedelta(hours=2)):
        record_click(message_id=inapp.message_id, channel="inapp", index=0)
        conversion_record(
            user_id=buyer.pk,
            name="purchase",
            value=Decimal("20"),
            reference="order:2",
            occurred_at=timezone.now(),
        )
    reminder = start_step(campaign, "Reminder", published)
    sent_to_buyer = Delivery.objects.filter(message__step=reminder, user=buyer)
    assert set(sent_to_buyer.values_list("channel", "status")) == {
        ("inapp", S.SENT),
        ("email", S.QUEUED),
    }


def test_changing_the_rule_of_an_approved_campaign_needs_a_new_approval(marketer, lead):
    audience(1)
    campaign = scheduled(marketer, lead)
    assert campaign.stop_series_on == SeriesStop.CONVERTED
    Campaign.objects.filter(pk=campaign.pk).update(stop_series_on=SeriesStop.NEVER)
    campaign.refresh_from_db()
    [change] = approval_changes(campaign)
    assert "Stop the series for a customer who" in change.text
