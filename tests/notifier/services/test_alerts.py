"""The failure-rate job on real PostgreSQL (and Redis for the cooldown): real sends through
the sandbox provider, counted from their attempt events."""

from __future__ import annotations

import logging
from collections.abc import Iterator
from datetime import timedelta

import pytest
from django.utils import timezone

from campaigns.models import Campaign, CampaignStatus
from campaigns.services.lifecycle import campaign_resume
from notifier.api import notify
from notifier.cooldowns import cooldown_reset
from notifier.models import Delivery, DeliveryEvent, Message
from notifier.operations.alerts import failure_alerts_run
from notifier.services.deliveries import deliveries_deliver
from notifier.services.pipeline import messages_prepare
from notifier.status import DeliveryStatus, Reason
from notifier.tasks import failure_alerts_task
from tests.factories import UserFactory, order_context
from tests.observability.capture import ListTransport, capture_sentry

pytestmark = pytest.mark.django_db
S = DeliveryStatus


@pytest.fixture(autouse=True)
def _thresholds(settings):
    settings.NOTIFIER_ALERT_WINDOW_S = 300
    settings.NOTIFIER_ALERT_FAILURE_RATE = 0.25
    settings.NOTIFIER_ALERT_MIN_ATTEMPTS = 5
    settings.NOTIFIER_ALERT_COOLDOWN_S = 600
    settings.NOTIFIER_CAMPAIGN_PAUSE_MIN_SENDS = 4
    cooldown_reset()
    yield
    cooldown_reset()


@pytest.fixture
def sentry() -> Iterator[ListTransport]:
    with capture_sentry() as transport:
        yield transport


def send_emails(emails: list[str], campaign: Campaign | None = None) -> list[Delivery]:
    """notify + route + one delivery attempt each, in process, as the workers would."""
    deliveries = []
    for email in emails:
        message = notify(
            UserFactory(email=email), "order.shipped", order_context(), channels=["email"]
        )
        if campaign is not None:
            Message.objects.filter(pk=message.pk).update(campaign=campaign)
        messages_prepare(message_ids=[message.pk])
        deliveries.append(Delivery.objects.get(message=message))
    deliveries_deliver(delivery_ids=[d.pk for d in deliveries])
    return deliveries


def test_a_failing_provider_alerts_once_then_cools_down(published, sentry, caplog):
    send_emails([f"u{i}+fail-always@example.com" for i in range(5)] + ["ok@example.com"])
    caplog.set_level(logging.WARNING, logger="notifier.operations.alerts")

    first = failure_alerts_run()
    assert first.alerted == ["email:sandbox"]
    warning = next(r for r in caplog.records if r.name == "notifier.operations.alerts")
    assert warning.getMessage() == (
        "provider failure rate: email:sandbox: 5 of 6 attempts failed (83%) in the last 5 min, "
        "above the 25% threshold"
    )
    events = sentry.events()
    assert [e["tags"]["provider_key"] for e in events] == ["email:sandbox"]
    assert events[0]["level"] == "warning"

    again = failure_alerts_run()  # a minute later: still failing, but it said so already
    assert (again.alerted, again.cooling_down) == ([], ["email:sandbox"])
    assert len(sentry.events()) == 1


def test_a_healthy_provider_or_an_old_failure_does_not_alert(published):
    send_emails([f"u{i}@example.com" for i in range(6)])
    assert failure_alerts_run().alerted == []
    send_emails([f"f{i}+fail-always@example.com" for i in range(6)])
    ten_minutes_on = timezone.now() + timedelta(minutes=10)  # outside the 5-minute window
    assert failure_alerts_run(now=ten_minutes_on).alerted == []


def running_campaign(**fields) -> Campaign:
    return Campaign.objects.create(
        name="Double 11", status=CampaignStatus.RUNNING, started_at=timezone.now(), **fields
    )


def test_a_campaign_failing_above_its_threshold_is_paused_with_the_reason(published, sentry):
    campaign = running_campaign(pause_failure_percent=50)
    send_emails(
        [f"c{i}+fail-permanent@example.com" for i in range(3)] + ["c@example.com"], campaign
    )
    # One more of its messages is queued and not yet sent: pausing holds it.
    waiting = notify(UserFactory(), "order.shipped", order_context(), channels=["email"])
    Message.objects.filter(pk=waiting.pk).update(campaign=campaign)
    messages_prepare(message_ids=[waiting.pk])

    report = failure_alerts_task.apply().get()
    assert report["paused"] == [campaign.pk]
    campaign.refresh_from_db()
    assert campaign.status == CampaignStatus.PAUSED
    assert campaign.pause_reason.startswith(
        "3 of its last 4 sends failed (75%) in the last 5 min, above its 50% threshold."
    )
    held = Delivery.objects.get(message=waiting)
    assert (held.status, held.reason) == (S.HELD, Reason.CAMPAIGN_PAUSED)
    assert DeliveryEvent.objects.filter(delivery=held, status=S.HELD).exists()
    (event,) = sentry.events()
    assert event["message"].startswith("campaign 'Double 11' paused: 3 of its last 4 sends")
    assert event["tags"]["campaign_id"] == str(campaign.pk)

    # Running again finds it paused: nothing more happens.
    assert failure_alerts_run().paused == []
    # Resuming clears the reason.
    campaign_resume(campaign=campaign, by=None)
    campaign.refresh_from_db()
    assert (campaign.status, campaign.pause_reason) == (CampaignStatus.RUNNING, "")


def test_a_campaign_within_its_threshold_goes_on(published):
    campaign = running_campaign(pause_failure_percent=80)
    send_emails(
        [f"d{i}+fail-permanent@example.com" for i in range(3)] + ["d@example.com"], campaign
    )
    assert failure_alerts_run().paused == []
    campaign.refresh_from_db()
    assert (campaign.status, campaign.pause_reason) == (CampaignStatus.RUNNING, "")


def test_transient_failures_still_being_retried_do_not_count_against_a_campaign(published):
    campaign = running_campaign(pause_failure_percent=10)
    send_emails([f"e{i}+fail-transient-2@example.com" for i in range(4)], campaign)
    assert failure_alerts_run().paused == []
