"""Priority never takes marketing through quiet hours: only a marketing lead's "Send in quiet
hours" on the campaign does. The switch is shown to leads only, its changes are logged, approval
covers it, and each delivery sent in quiet hours because of it says so."""

from __future__ import annotations

import uuid
from datetime import datetime, timedelta
from zoneinfo import ZoneInfo

import pytest
import time_machine
from django.contrib.admin.models import LogEntry

from campaigns.models import Campaign, Segment, VariantTemplate
from campaigns.services.lifecycle import campaign_approve, campaign_create, campaign_submit
from notifier.models import Delivery, DeliveryEvent, EventKind, Message, NotificationType
from notifier.roles import roles_sync
from notifier.services.pipeline import messages_prepare
from notifier.status import DeliveryStatus, Reason
from tests.campaigns.approvals import FANS, NOW, audience, beat_at, person, texts
from tests.campaigns.test_campaign_admin import post_data, url

pytestmark = pytest.mark.django_db
S = DeliveryStatus
LONDON = ZoneInfo("Europe/London")
NIGHT = datetime(2026, 11, 9, 1, 20, tzinfo=LONDON)  # the review's 01:20 local
DAY = datetime(2026, 11, 9, 10, 0, tzinfo=LONDON)


@pytest.fixture
def marketer(db):
    roles_sync()
    return person("Marketer")


@pytest.fixture
def lead(db):
    roles_sync()
    return person("Marketing lead")


def campaign_of(marketer, lead, *, priority: str, allowed: bool, notice: datetime) -> Campaign:
    """An approved campaign whose Notice (three days before the event) goes out at `notice`."""
    with time_machine.travel(NOW):
        campaign = campaign_create(
            name="Night owls",
            category=NotificationType.objects.get(pk="promo.flash_sale"),
            created_by=marketer,
            segment=Segment.objects.create(name=uuid.uuid4().hex, tags_any=[FANS]),
            event_at=notice + timedelta(days=3),
            priority=priority,
            channels=["inapp", "email"],
            variables={"headline": "50% off"},
        )
        for variant in [v for s in campaign.steps.all() for v in s.variants.all()]:
            VariantTemplate.objects.create(
                variant=variant, channel="inapp", title="{{ headline }}", body="Hi", link=""
            )
            VariantTemplate.objects.create(
                variant=variant,
                channel="email",
                subject="{{ headline }}",
                body="Hi\n{{ unsubscribe_url }}",
            )
        Campaign.objects.filter(pk=campaign.pk).update(quiet_hours_allowed=allowed)
        campaign_submit(campaign=campaign, by=marketer)
        campaign_approve(campaign=campaign, by=lead)
    return Campaign.objects.get(pk=campaign.pk)


def routed_at(campaign: Campaign, published, moment: datetime) -> list[Delivery]:
    """Beat starts the Notice at `moment`; its messages are written and routed then."""
    beat_at(moment, published)
    ids = list(Message.objects.filter(campaign=campaign).values_list("pk", flat=True))
    assert ids
    with time_machine.travel(moment):
        messages_prepare(message_ids=ids)  # those the batch left for the prepare task
    return list(Delivery.objects.filter(message_id__in=ids))


def test_a_critical_campaign_waits_for_the_customers_morning(published, marketer, lead):
    audience(3, time_zone="Europe/London", quiet_hours_enabled=True)
    campaign = campaign_of(marketer, lead, priority="critical", allowed=False, notice=NIGHT)
    deliveries = routed_at(campaign, published, NIGHT)
    assert len(deliveries) == 6
    assert {(d.status, d.reason) for d in deliveries} == {(S.HELD, Reason.QUIET_HOURS)}
    assert all(d.next_attempt_at.astimezone(LONDON).hour == 8 for d in deliveries)


def test_a_leads_switch_sends_at_night_and_each_delivery_says_why(published, marketer, lead):
    audience(3, time_zone="Europe/London", quiet_hours_enabled=True)
    campaign = campaign_of(marketer, lead, priority="low", allowed=True, notice=NIGHT)
    deliveries = routed_at(campaign, published, NIGHT)
    # Email waits for its deliver task; in-app went out as it was routed, its reason cleared.
    assert {(d.channel, d.status, d.reason) for d in deliveries} == {
        ("email", S.QUEUED, Reason.QUIET_HOURS_ALLOWED),
        ("inapp", S.SENT, ""),
    }
    # The reason stays on the timeline after the send clears the row's: on each email's
    # routed event, and on each in-app delivery's one event (sent as it was routed).
    events = DeliveryEvent.objects.filter(delivery__in=deliveries).select_related("delivery")
    assert sorted((e.delivery.channel, e.kind, e.reason) for e in events) == sorted(
        [("email", EventKind.ROUTED, Reason.QUIET_HOURS_ALLOWED)] * 3
        + [("inapp", EventKind.ATTEMPT, Reason.QUIET_HOURS_ALLOWED)] * 3
    )
    assert "marketing lead" in Reason.QUIET_HOURS_ALLOWED.label


def test_in_the_day_the_switch_records_nothing(published, marketer, lead):
    audience(2, time_zone="Europe/London", quiet_hours_enabled=True)
    campaign = campaign_of(marketer, lead, priority="low", allowed=True, notice=DAY)
    deliveries = routed_at(campaign, published, DAY)
    assert {(d.channel, d.status, d.reason) for d in deliveries} == {
        ("email", S.QUEUED, ""),
        ("inapp", S.SENT, ""),
    }


def test_approval_covers_the_switch(published, marketer, lead):
    campaign = campaign_of(marketer, lead, priority="low", allowed=False, notice=DAY)
    assert texts(campaign) == []  # approvals recorded before the switch existed still match
    Campaign.objects.filter(pk=campaign.pk).update(quiet_hours_allowed=True)
    assert texts(campaign) == ["Send in quiet hours: no → allowed"]


def draft(marketer) -> Campaign:
    with time_machine.travel(NOW):
        return campaign_create(
            name="Draft",
            category=NotificationType.objects.get(pk="promo.flash_sale"),
            created_by=marketer,
            segment=Segment.objects.create(name=uuid.uuid4().hex, tags_any=[FANS]),
            event_at=DAY + timedelta(days=3),
            priority="critical",
            channels=["inapp", "email"],
        )


def test_a_marketer_neither_sees_nor_sets_the_switch(client, marketer):
    campaign = draft(marketer)
    client.force_login(marketer)
    page = client.get(url("campaign_change", campaign.pk))
    assert "quiet_hours_allowed" not in page.context["adminform"].form.fields
    assert 'name="quiet_hours_allowed"' not in page.content.decode()
    data = post_data(page, quiet_hours_allowed="on")
    assert client.post(url("campaign_change", campaign.pk), data).status_code == 302
    assert not Campaign.objects.get(pk=campaign.pk).quiet_hours_allowed


def test_a_lead_sets_the_switch_and_the_change_is_logged(client, marketer, lead):
    campaign = draft(marketer)
    client.force_login(lead)
    page = client.get(url("campaign_change", campaign.pk))
    assert "quiet_hours_allowed" in page.context["adminform"].form.fields
    assert 'name="quiet_hours_allowed"' in page.content.decode()
    data = post_data(page, quiet_hours_allowed="on")
    assert client.post(url("campaign_change", campaign.pk), data).status_code == 302
    assert Campaign.objects.get(pk=campaign.pk).quiet_hours_allowed
    entry = LogEntry.objects.filter(object_id=str(campaign.pk)).latest("action_time")
    assert entry.user_id == lead.pk
    assert "Send in quiet hours" in entry.get_change_message()


def test_the_priority_help_text_says_it_does_not_skip_quiet_hours():
    help_text = str(Campaign._meta.get_field("priority").help_text)
    assert "quiet hours" in help_text
    assert "never" in help_text
