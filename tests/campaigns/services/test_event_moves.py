"""Moving a campaign's event moves every message not yet sent, or cancels it with the reason."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from zoneinfo import ZoneInfo

import pytest
import time_machine

from campaigns.models import StepStatus
from campaigns.services.fanout import steps_start_due
from campaigns.services.lifecycle import campaign_move_event
from notifier.models import Delivery, DeliveryEvent, Message
from notifier.services.release import held_release
from notifier.status import DeliveryStatus, Reason
from tests.campaigns.services.test_campaign_flow import (
    EVENT,
    audience,
    scheduled,
    start_step,
    step_start,
)

pytestmark = pytest.mark.django_db
S = DeliveryStatus
SHANGHAI, NEW_YORK = ZoneInfo("Asia/Shanghai"), ZoneInfo("America/New_York")


def reminder_fanned_out(marketer, lead, published):
    """The Reminder (2 days before, 10:00 in each user's zone) fanned out 26 hours ahead."""
    shanghai = audience(1, time_zone="Asia/Shanghai")[0]
    new_york = audience(1, time_zone="America/New_York")[0]
    campaign = scheduled(marketer, lead, at_ten_local=("Reminder",))
    reminder = campaign.steps.get(name="Reminder")
    fanned = step_start(campaign, reminder) - timedelta(hours=26)
    start_step(campaign, "Reminder", published, at=fanned)
    return campaign, reminder, fanned, shanghai, new_york


def deliveries(step, user):
    return Delivery.objects.filter(message__step=step, message__user=user)


def test_moving_the_event_later_moves_held_local_time_messages_and_their_expiry(
    marketer, lead, published
):
    campaign, reminder, fanned, shanghai, new_york = reminder_fanned_out(marketer, lead, published)
    later = EVENT + timedelta(days=2)
    with time_machine.travel(fanned + timedelta(hours=1)):
        report = campaign_move_event(campaign=campaign, event_at=later, by=marketer)
    assert report.cancelled == 0
    for user, tz in ((shanghai, SHANGHAI), (new_york, NEW_YORK)):
        message = Message.objects.get(step=reminder, user=user)
        assert message.not_before == datetime(2026, 11, 11, 10, tzinfo=tz)
        assert message.expires_at == later
        for delivery in deliveries(reminder, user):
            assert (delivery.status, delivery.reason) == (S.HELD, Reason.SCHEDULED)
            assert delivery.next_attempt_at == message.not_before
            moved = delivery.events.get(kind="manual")
            assert moved.detail["action"] == "event moved"
    # At the old time (10:00 on the 9th in New York) nothing goes out; at the new one it does.
    with time_machine.travel(datetime(2026, 11, 9, 15, 1, tzinfo=UTC)):
        held_release()
    assert set(deliveries(reminder, new_york).values_list("status", flat=True)) == {S.HELD}
    with time_machine.travel(datetime(2026, 11, 11, 15, 1, tzinfo=UTC)):
        held_release()
    assert set(deliveries(reminder, new_york).values_list("status", flat=True)) == {S.QUEUED}


def test_moving_the_event_earlier_cancels_what_no_longer_fits_with_the_reason(
    marketer, lead, published
):
    campaign, reminder, fanned, shanghai, new_york = reminder_fanned_out(marketer, lead, published)
    earlier = EVENT - timedelta(days=1)  # the Reminder's day becomes the 8th
    with time_machine.travel(fanned):  # 10:00 UTC on the 8th: 18:00 in Shanghai, 05:00 in NY
        report = campaign_move_event(campaign=campaign, event_at=earlier, by=marketer)
    # Shanghai's 10:00 on the 8th has passed: cancelled, not sent late.
    gone = deliveries(reminder, shanghai)
    assert set(gone.values_list("status", "reason")) == {(S.CANCELLED, Reason.EVENT_MOVED)}
    assert report.cancelled == gone.count()
    event = DeliveryEvent.objects.get(delivery=gone.first(), reason=Reason.EVENT_MOVED)
    assert "already passed" in event.detail["why"]
    # New York's 10:00 on the 8th is still ahead: it moves there, expiring at the new event.
    message = Message.objects.get(step=reminder, user=new_york)
    assert message.not_before == datetime(2026, 11, 8, 15, tzinfo=UTC)
    assert message.expires_at == earlier
    assert set(deliveries(reminder, new_york).values_list("next_attempt_at", flat=True)) == {
        datetime(2026, 11, 8, 15, tzinfo=UTC)
    }


def test_a_message_whose_step_time_falls_after_the_new_event_is_cancelled(
    marketer, lead, published
):
    shanghai = audience(1, time_zone="Asia/Shanghai")[0]
    campaign = scheduled(marketer, lead, at_ten_local=("Last call",))
    last_call = campaign.steps.get(name="Last call")
    fanned = step_start(campaign, last_call) - timedelta(hours=26)
    start_step(campaign, "Last call", published, at=fanned)
    assert set(deliveries(last_call, shanghai).values_list("status", flat=True)) == {S.HELD}
    # 10:00 in Shanghai on the 11th is 02:00 UTC: after an event moved to 01:00 UTC.
    with time_machine.travel(fanned):
        campaign_move_event(
            campaign=campaign, event_at=datetime(2026, 11, 11, 1, tzinfo=UTC), by=marketer
        )
    gone = deliveries(last_call, shanghai)
    assert set(gone.values_list("status", "reason")) == {(S.CANCELLED, Reason.EVENT_MOVED)}
    event = DeliveryEvent.objects.get(delivery=gone.first(), reason=Reason.EVENT_MOVED)
    assert "at or after the event" in event.detail["why"]


def test_a_pending_step_whose_moment_the_move_put_in_the_past_is_skipped_with_the_reason(
    marketer, lead, published
):
    campaign = scheduled(marketer, lead)
    notice, reminder = campaign.steps.get(name="Notice"), campaign.steps.get(name="Reminder")
    with time_machine.travel(datetime(2026, 11, 1, 9, tzinfo=UTC)):
        report = campaign_move_event(
            campaign=campaign, event_at=datetime(2026, 11, 3, 12, tzinfo=UTC), by=marketer
        )
    notice.refresh_from_db()
    reminder.refresh_from_db()
    assert report.skipped_steps == [notice.pk]
    assert notice.status == StepStatus.SKIPPED
    assert notice.skip_reason.startswith("the event moved to 2026-11-03 12:00")
    assert reminder.status == StepStatus.PENDING
    with time_machine.travel(datetime(2026, 11, 1, 12, tzinfo=UTC)):
        assert steps_start_due().started == [reminder.pk]


def test_a_message_held_for_quiet_hours_moves_to_the_steps_new_moment(marketer, lead, published):
    sleeper = audience(1, time_zone="America/New_York", quiet_hours_enabled=True)[0]
    campaign = scheduled(marketer, lead)
    notice = start_step(campaign, "Notice", published)  # 12:00 UTC on the 8th: 07:00 in NY
    assert set(deliveries(notice, sleeper).values_list("reason", flat=True)) == {Reason.QUIET_HOURS}
    later = EVENT + timedelta(days=2)
    with time_machine.travel(step_start(campaign, notice) + timedelta(minutes=5)):
        campaign_move_event(campaign=campaign, event_at=later, by=marketer)
    new_moment = later - timedelta(days=3)
    message = Message.objects.get(step=notice, user=sleeper)
    assert (message.not_before, message.expires_at) == (new_moment, later)
    # Her morning comes and goes: nothing. The step's new moment is 07:00 in New York, still
    # her night: it goes out in that morning instead (released within the spread window).
    with time_machine.travel(datetime(2026, 11, 8, 16, 0, tzinfo=UTC)):
        held_release()
    assert set(deliveries(notice, sleeper).values_list("status", flat=True)) == {S.HELD}
    with time_machine.travel(new_moment + timedelta(minutes=1)):
        held_release()
    assert set(deliveries(notice, sleeper).values_list("reason", flat=True)) == {Reason.QUIET_HOURS}
    with time_machine.travel(new_moment + timedelta(hours=4)):
        held_release()
    assert set(deliveries(notice, sleeper).values_list("status", flat=True)) == {S.QUEUED}
