"""Triggered campaigns send to users who *enter* the segment: a transition, not membership."""

from __future__ import annotations

from datetime import timedelta

import pytest
import time_machine
from django.db import connection
from django.test.utils import CaptureQueriesContext

from campaigns.models import CampaignKind, TriggerEntry
from campaigns.services.fanout import triggers_evaluate
from campaigns.services.lifecycle import campaign_approve, campaign_submit
from campaigns.services.triggers import trigger_entries_update
from notifier.models import Message, recipient_update
from tests.campaigns.services.test_campaign_flow import (
    FANS,
    NOW,
    audience,
    make_campaign,
)

pytestmark = pytest.mark.django_db


def triggered(marketer, lead, *, reentry_days: int = 30):
    with time_machine.travel(NOW):
        campaign = make_campaign(marketer, kind=CampaignKind.TRIGGERED, event_at=None)
        campaign.reentry_days = reentry_days
        campaign.save()
        campaign_submit(campaign=campaign, by=marketer)
        campaign_approve(campaign=campaign, by=lead)
    return campaign


def evaluate(published, day: float) -> None:
    """Beat's evaluation on `day` after NOW, its walk and batches run to the end."""
    with time_machine.travel(NOW + timedelta(days=day)):
        for step_id in triggers_evaluate():
            published.run_walk(step_id)


def received(campaign, user) -> int:
    return Message.objects.filter(campaign=campaign, user=user, is_test=False).count()


def set_in_segment(user, inside: bool) -> None:
    recipient_update(user, interest_tags=[FANS] if inside else [])


def test_a_user_who_stays_in_the_segment_for_months_gets_it_once(marketer, lead, published):
    stayer = audience(1)[0]
    campaign = triggered(marketer, lead, reentry_days=30)
    evaluate(published, 0)
    assert received(campaign, stayer) == 1
    # Every evaluation for four months (beat runs it every 5 minutes; a few are enough).
    for day in (0.01, 3, 29, 31, 45, 61, 90, 120):
        evaluate(published, day)
    assert received(campaign, stayer) == 1
    entry = TriggerEntry.objects.get(campaign=campaign, user=stayer)
    assert (entry.in_segment, entry.due) == (True, False)


def test_a_user_who_enters_later_gets_it_when_entering_and_only_then(marketer, lead, published):
    campaign = triggered(marketer, lead)
    newcomer = audience(1)[0]
    set_in_segment(newcomer, False)
    evaluate(published, 0)
    assert received(campaign, newcomer) == 0
    set_in_segment(newcomer, True)
    evaluate(published, 40)
    assert received(campaign, newcomer) == 1
    evaluate(published, 80)
    evaluate(published, 200)
    assert received(campaign, newcomer) == 1


def test_leaving_and_reentering_sends_again_only_outside_the_reentry_days(
    marketer, lead, published
):
    user = audience(1)[0]
    campaign = triggered(marketer, lead, reentry_days=30)
    evaluate(published, 0)
    assert received(campaign, user) == 1
    set_in_segment(user, False)
    evaluate(published, 10)  # left
    set_in_segment(user, True)
    evaluate(published, 12)  # back within 30 days of the last message: nothing
    assert received(campaign, user) == 1
    entry = TriggerEntry.objects.get(campaign=campaign, user=user)
    assert (entry.in_segment, entry.due) == (True, False)
    evaluate(published, 50)  # still in, 50 days on: staying is not entering
    assert received(campaign, user) == 1
    set_in_segment(user, False)
    evaluate(published, 60)
    set_in_segment(user, True)
    evaluate(published, 70)  # a new entry, 70 days after the last message
    assert received(campaign, user) == 2
    evaluate(published, 71)
    evaluate(published, 100)
    assert received(campaign, user) == 2


def test_an_entry_not_yet_walked_is_kept_for_the_next_evaluation(marketer, lead, published):
    """The next evaluation starts a new walk round; a user who entered and was not handed out
    yet is still due then, and gets the message once."""
    user = audience(1)[0]
    campaign = triggered(marketer, lead)
    with time_machine.travel(NOW):
        triggers_evaluate()  # its walk is lost
    evaluate(published, 0.01)
    evaluate(published, 0.02)
    assert received(campaign, user) == 1


def test_evaluating_entries_takes_the_same_queries_for_any_segment_size(marketer, lead, published):
    campaign = triggered(marketer, lead)
    audience(3)

    def queries() -> int:
        with time_machine.travel(NOW), CaptureQueriesContext(connection) as captured:
            trigger_entries_update(campaign=campaign)
        return len(captured.captured_queries)

    queries()  # the first reads (and makes) the audience thresholds once
    few = queries()
    audience(60)
    assert queries() == few
    assert TriggerEntry.objects.filter(campaign=campaign, in_segment=True).count() == 63
