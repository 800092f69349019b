"""Approval covers the audience: what a lead approved (the segment's rules and list, the audience
thresholds, the campaign's settings, steps and copy) is what goes out. A change made any way
but through the admin (the ORM here) is caught by beat before a step starts, by the walk and by
each batch: nothing goes out, the campaign goes back for approval with the reason, and once a
lead approves the change it carries on."""

from __future__ import annotations

import threading
from datetime import timedelta
from decimal import Decimal

import pytest
import time_machine
from django.db import connection, transaction

from campaigns.models import (
    AudienceThresholds,
    Campaign,
    CampaignKind,
    CampaignStatus,
    CampaignStep,
    Segment,
    SegmentMember,
    StepStatus,
    VariantTemplate,
)
from campaigns.services import fanout
from campaigns.services.definitions import (
    approval_changes,
    campaign_definition,
    definition_digest,
)
from campaigns.services.fanout import steps_start_due, triggers_evaluate
from campaigns.services.lifecycle import (
    CampaignError,
    campaign_approve,
    campaign_create,
    campaign_pause,
    campaign_resume,
    campaign_send_back,
    campaign_submit,
    campaigns_recheck,
)
from campaigns.services.segments import segment_members_add
from notifier.models import Delivery, Message, NotificationType
from notifier.status import DeliveryStatus, Reason
from tests.campaigns.approvals import (
    EVENT,
    FANS,
    NOTICE_AT,
    NOW,
    REMINDER_AT,
    approved,
    audience,
    beat_at,
    fresh,
    person,
    recipients,
    step,
    texts,
    whales_with_a_list,
)

pytestmark = pytest.mark.django_db
C = CampaignStatus


@pytest.fixture
def marketer(roles):
    return person("Marketer")


@pytest.fixture
def lead(roles):
    return person("Marketing lead")


# --- The scenario ----------------------------------------------------------------------


def test_unticking_the_member_list_after_approval_sends_nothing_until_a_lead_approves_again(
    marketer, lead, published
):
    segment, users = whales_with_a_list()
    campaign = approved(marketer, lead, segment)

    segment.use_member_list = False  # the marketer widens the audience to all 71
    segment.save()

    report = beat_at(NOTICE_AT, published)
    assert not Message.objects.filter(campaign=campaign).exists()  # the 71 received nothing
    assert report.started == []
    assert report.sent_back == [campaign.pk]
    campaign = fresh(campaign)
    assert campaign.status == C.AWAITING_APPROVAL
    assert campaign.review_reason == (
        "its segment changed: Segment “Winter whales”: use member list: yes → no"
    )
    assert step(campaign, "Notice").status == StepStatus.PENDING
    # The lead sees what changed since the approval.
    assert texts(campaign) == ["Segment “Winter whales”: use member list: yes → no"]
    approved_before = fresh(campaign)

    with time_machine.travel(NOTICE_AT):
        campaign_approve(campaign=campaign, by=lead)
    campaign = fresh(campaign)
    assert (campaign.status, campaign.review_reason) == (C.SCHEDULED, "")
    assert (campaign.approved_audience, approved_before.approved_audience) == (71, 11)
    beat_at(NOTICE_AT + timedelta(minutes=1), published)
    assert recipients(campaign, "Notice") == {u.pk for u in users}  # the new audience, approved


def test_members_imported_into_an_approved_list_wait_for_approval(marketer, lead, published):
    segment, users = whales_with_a_list(listed=11, others=60)
    campaign = approved(marketer, lead, segment)
    segment_members_add(segment=segment, user_ids=[u.pk for u in users[11:]])  # the CSV import

    report = beat_at(NOTICE_AT, published)
    assert not Message.objects.filter(campaign=campaign).exists()
    assert (report.started, report.sent_back) == ([], [campaign.pk])
    assert texts(campaign) == ["Segment “Winter whales”: member list: 11 → 71 members"]
    assert "its segment's member list changed" in fresh(campaign).review_reason


def test_members_swapped_on_the_list_are_a_change_even_at_the_same_count(marketer, lead, published):
    segment, users = whales_with_a_list(listed=11, others=60)
    campaign = approved(marketer, lead, segment)
    SegmentMember.objects.filter(segment=segment, user=users[0]).update(user=users[-1])

    report = beat_at(NOTICE_AT, published)
    assert not Message.objects.filter(campaign=campaign).exists()
    assert report.sent_back == [campaign.pk]
    assert texts(campaign) == ["Segment “Winter whales”: member list: other members (still 11)"]


def test_lowering_the_whale_line_sends_back_campaigns_whose_segment_follows_it(
    marketer, lead, published
):
    audience(5, yearly_spend=Decimal("6000"))
    audience(20, yearly_spend=Decimal("4000"))
    whales = approved(marketer, lead, Segment.objects.create(name="Whales", spend_tiers=["whale"]))
    fans = approved(marketer, lead, Segment.objects.create(name="Fans", tags_any=[FANS]))

    thresholds = AudienceThresholds.current()
    thresholds.whale_min_spend = Decimal("3000")  # 20 more customers become whales
    thresholds.save()

    report = beat_at(NOTICE_AT, published)
    assert not Message.objects.filter(campaign=whales).exists()
    assert report.sent_back == [whales.pk]
    assert fresh(whales).status == C.AWAITING_APPROVAL
    assert texts(whales) == ["Audience thresholds: whale line (yearly spend): 5000.00 → 3000.00"]
    assert fresh(whales).approved_audience == 5  # what the lead approved; 25 now
    # A segment without tier or activity rules does not follow the thresholds.
    assert fresh(fans).status == C.RUNNING
    assert len(recipients(fans, "Notice")) == 25


def test_copy_changed_through_the_orm_does_not_start_and_the_lead_sees_the_new_words(
    marketer, lead, published
):
    audience(3)
    campaign = approved(marketer, lead, Segment.objects.create(name="Fans", tags_any=[FANS]))
    VariantTemplate.objects.filter(
        variant__step__campaign=campaign, variant__step__name="Reminder", channel="email"
    ).update(subject="Last chance: {{ headline }} (really)")

    # The Notice's copy did not change, but it is the same campaign: nothing starts.
    report = beat_at(NOTICE_AT, published)
    assert not Message.objects.filter(campaign=campaign).exists()
    assert report.sent_back == [campaign.pk]
    assert texts(campaign) == [
        "Step “Reminder” variant A email subject: “{{ campaign.name }}: {{ headline }}” → "
        "“Last chance: {{ headline }} (really)”"
    ]
    assert fresh(campaign).review_reason.startswith("its copy changed: Step “Reminder”")


def test_a_batch_handed_out_before_the_copy_changed_writes_nothing(marketer, lead, published):
    audience(4)
    campaign = approved(marketer, lead, Segment.objects.create(name="Fans", tags_any=[FANS]))
    notice = step(campaign, "Notice")
    with time_machine.travel(NOTICE_AT):
        assert steps_start_due().started == [notice.pk]
        assert published.walk(notice.pk) is fanout.Walk.DONE
        [(_, recipient_ids)] = published.batches
        VariantTemplate.objects.filter(variant__step=notice, channel="inapp").update(
            title="{{ headline }}, now 90% off"
        )
        report = fanout.step_fanout_batch(step_id=notice.pk, recipient_ids=recipient_ids)
    assert report.messages == 0
    assert not Message.objects.filter(campaign=campaign).exists()
    assert fresh(campaign).status == C.AWAITING_APPROVAL
    assert CampaignStep.objects.get(pk=notice.pk).batches_done == 0  # it did not count


def test_once_a_lead_approves_changed_copy_the_next_batch_renders_it(
    marketer, lead, published, monkeypatch, django_capture_on_commit_callbacks
):
    """A worker caches compiled copy for half a minute; the batches after an approval of a
    change render the copy approved, not the one cached before it."""
    audience(4)
    campaign = approved(marketer, lead, Segment.objects.create(name="Fans", tags_any=[FANS]))
    notice = step(campaign, "Notice")
    monkeypatch.setattr(fanout, "BATCH_USERS", 2)
    with time_machine.travel(NOTICE_AT):
        steps_start_due()
        published.walk(notice.pk)
        first, second = published.batches
        fanout.step_fanout_batch(step_id=notice.pk, recipient_ids=first[1])  # compiles, caches
        VariantTemplate.objects.filter(variant__step=notice, channel="inapp").update(
            title="{{ headline }}, now 90% off"
        )
        assert fanout.step_fanout_batch(step_id=notice.pk, recipient_ids=second[1]).messages == 0
        with django_capture_on_commit_callbacks(execute=True):
            campaign_approve(campaign=campaign, by=lead)
        published.batches.clear()
        published.run_walk(notice.pk)
    titles = dict(
        Delivery.objects.filter(message__step=notice, channel="inapp").values_list(
            "message__user_id", "content__title"
        )
    )
    assert [titles[pk] for pk in first[1]] == ["50% off"] * 2  # sent before: stays
    assert [titles[pk] for pk in second[1]] == ["50% off, now 90% off"] * 2


def test_a_running_campaign_keeps_what_it_sent_and_its_next_step_waits_for_approval(
    marketer, lead, published
):
    segment, users = whales_with_a_list()
    campaign = approved(marketer, lead, segment)
    beat_at(NOTICE_AT, published)
    listed = {u.pk for u in users[:11]}
    assert recipients(campaign, "Notice") == listed
    assert fresh(campaign).status == C.RUNNING

    Segment.objects.filter(pk=segment.pk).update(use_member_list=False)
    report = beat_at(REMINDER_AT, published)
    assert recipients(campaign, "Reminder") == set()
    assert (report.started, report.sent_back) == ([], [campaign.pk])
    assert fresh(campaign).status == C.AWAITING_APPROVAL
    assert fresh(campaign).status_before_review == C.RUNNING
    assert recipients(campaign, "Notice") == listed  # what was sent stays
    notice_deliveries = Delivery.objects.filter(message__step=step(campaign, "Notice"))
    assert set(notice_deliveries.values_list("status", flat=True)) == {
        DeliveryStatus.QUEUED,  # email
        DeliveryStatus.SENT,  # in-app, written as it was routed
    }
    with pytest.raises(CampaignError, match="has started"):
        campaign_send_back(campaign=campaign, by=marketer)

    with time_machine.travel(REMINDER_AT):
        campaign_approve(campaign=campaign, by=lead)
    assert fresh(campaign).status == C.RUNNING  # back where it was
    beat_at(REMINDER_AT + timedelta(minutes=1), published)
    assert recipients(campaign, "Reminder") == {u.pk for u in users}


def test_a_walk_under_way_stops_when_the_segment_changes_and_goes_on_once_approved(
    marketer, lead, published, monkeypatch, django_capture_on_commit_callbacks
):
    segment, _ = whales_with_a_list()
    campaign = approved(marketer, lead, segment)
    notice = step(campaign, "Notice")
    monkeypatch.setattr(fanout, "BATCH_USERS", 5)
    with time_machine.travel(NOTICE_AT):
        steps_start_due()
        assert published.walk(notice.pk, batches=1) is fanout.Walk.CONTINUE
        assert len(published.batches) == 1
        Segment.objects.filter(pk=segment.pk).update(tags_any=["someone-else"])
        assert published.walk(notice.pk) is fanout.Walk.STOPPED
        assert len(published.batches) == 1  # nothing more handed out
        assert fresh(campaign).status == C.AWAITING_APPROVAL
        assert texts(campaign) == [
            f"Segment “Winter whales”: interest tags (any): {FANS} → someone-else"
        ]
        published.walks.clear()
        with django_capture_on_commit_callbacks(execute=True):
            campaign_approve(campaign=campaign, by=lead)
        # Approval returns it to running and starts its walk again, as a new round.
        assert fresh(campaign).status == C.RUNNING
        assert published.walks == [notice.pk]


def test_a_paused_campaign_that_changed_returns_paused_once_approved(marketer, lead, published):
    segment, _ = whales_with_a_list()
    campaign = approved(marketer, lead, segment)
    with time_machine.travel(NOW):
        campaign_pause(campaign=campaign, by=marketer)
    Segment.objects.filter(pk=segment.pk).update(use_member_list=False)
    [sent] = campaigns_recheck(campaigns=Campaign.objects.filter(segment=segment))
    assert sent.campaign.pk == campaign.pk
    assert (fresh(campaign).status, fresh(campaign).status_before_review) == (
        C.AWAITING_APPROVAL,
        C.PAUSED,
    )
    with time_machine.travel(NOW):
        campaign_approve(campaign=campaign, by=lead)
        assert fresh(campaign).status == C.PAUSED  # the marketer resumes when ready
        campaign_resume(campaign=campaign, by=marketer)
    assert fresh(campaign).status == C.SCHEDULED


def test_a_step_whose_moment_passes_while_awaiting_approval_is_skipped_with_the_reason(
    marketer, lead, published
):
    segment, _ = whales_with_a_list()
    campaign = approved(marketer, lead, segment)
    Segment.objects.filter(pk=segment.pk).update(use_member_list=False)
    beat_at(NOTICE_AT, published)
    report = beat_at(NOTICE_AT + timedelta(hours=1), published)
    notice = step(campaign, "Notice")
    assert report.skipped == [notice.pk]
    assert notice.skip_reason == (
        "missed by 60 min: the campaign was waiting for a lead to approve a change; not sent late"
    )
    with time_machine.travel(NOTICE_AT + timedelta(hours=1)):
        campaign_approve(campaign=campaign, by=lead)  # the skipped step does not block it
    assert fresh(campaign).status == C.SCHEDULED


def test_a_running_campaign_whose_last_step_passed_while_awaiting_approval_is_done_once_approved(
    marketer, lead, published
):
    segment, _ = whales_with_a_list()
    campaign = approved(marketer, lead, segment)
    beat_at(NOTICE_AT, published)
    beat_at(REMINDER_AT, published)
    last_call = EVENT - timedelta(hours=1)
    beat_at(last_call - timedelta(minutes=1), published)  # closes the Reminder
    Segment.objects.filter(pk=segment.pk).update(use_member_list=False)
    assert beat_at(last_call, published).sent_back == [campaign.pk]
    beat_at(last_call + timedelta(minutes=30), published)  # the Last call is skipped
    assert step(campaign, "Last call").status == StepStatus.SKIPPED
    with time_machine.travel(last_call + timedelta(minutes=31)):
        campaign_approve(campaign=campaign, by=lead)
    assert fresh(campaign).status == C.DONE


@pytest.mark.django_db(transaction=True)
def test_beat_does_not_start_a_step_while_an_admin_save_holds_its_campaign(
    marketer, lead, published
):
    """An admin save of a segment re-checks its campaigns holding their rows, and commits the
    change with the send-back: beat must not check the old definition and start the step in
    between. It passes over the step while the row is held, and finds it sent back after."""
    segment, _ = whales_with_a_list()
    campaign = approved(marketer, lead, segment)
    holding, release = threading.Event(), threading.Event()

    def admin_save() -> None:
        try:
            with transaction.atomic():
                Segment.objects.filter(pk=segment.pk).update(use_member_list=False)
                campaigns_recheck(campaigns=Campaign.objects.filter(pk=campaign.pk))
                holding.set()
                release.wait(timeout=10)
        finally:
            connection.close()

    saver = threading.Thread(target=admin_save)
    saver.start()
    try:
        assert holding.wait(timeout=10)
        assert beat_at(NOTICE_AT, published).started == []
    finally:
        release.set()
        saver.join(timeout=10)
    assert fresh(campaign).status == C.AWAITING_APPROVAL
    assert beat_at(NOTICE_AT, published).started == []
    assert not Message.objects.filter(campaign=campaign).exists()


# --- Triggered campaigns -------------------------------------------------------------------------


def test_users_entering_a_triggered_segment_are_data_but_editing_its_rules_is_a_change(
    marketer, lead, published
):
    first = audience(1)[0]
    segment = Segment.objects.create(name="Fans", tags_any=[FANS])
    campaign = approved(marketer, lead, segment, kind=CampaignKind.TRIGGERED)
    with time_machine.travel(NOW):
        published.run_walk(triggers_evaluate()[0])
    newcomer = audience(1)[0]  # entered the segment: no new approval needed
    with time_machine.travel(NOW + timedelta(minutes=5)):
        published.run_walk(triggers_evaluate()[0])
    assert set(Message.objects.filter(campaign=campaign).values_list("user_id", flat=True)) == {
        first.pk,
        newcomer.pk,
    }

    Segment.objects.filter(pk=segment.pk).update(tags_any=[])  # everyone, now
    audience(1)
    with time_machine.travel(NOW + timedelta(minutes=10)):
        assert triggers_evaluate() == []
    assert fresh(campaign).status == C.AWAITING_APPROVAL
    assert Message.objects.filter(campaign=campaign).count() == 2


# --- Approval itself -----------------------------------------------------------------------------


def test_moving_the_event_needs_no_new_approval(marketer, lead, published):
    audience(2)
    campaign = approved(marketer, lead, Segment.objects.create(name="Fans", tags_any=[FANS]))
    Campaign.objects.filter(pk=campaign.pk).update(event_at=EVENT + timedelta(days=1))
    assert approval_changes(fresh(campaign)) == []
    report = beat_at(NOTICE_AT + timedelta(days=1), published)
    assert report.sent_back == []
    assert len(recipients(campaign, "Notice")) == 2


def test_a_campaign_approved_before_approvals_were_recorded_asks_again(marketer, lead, published):
    audience(2)
    campaign = approved(marketer, lead, Segment.objects.create(name="Fans", tags_any=[FANS]))
    Campaign.objects.filter(pk=campaign.pk).update(approved_definition=None)  # as migrated
    assert beat_at(NOTICE_AT, published).sent_back == [campaign.pk]
    assert fresh(campaign).review_reason.startswith(
        "it was approved before approvals covered its audience"
    )
    assert not Message.objects.filter(campaign=campaign).exists()


def test_approval_refuses_a_definition_that_changed_while_the_lead_was_looking(marketer, lead):
    segment, _ = whales_with_a_list()
    with time_machine.travel(NOW):
        campaign = campaign_create(
            name="Double 11",
            category=NotificationType.objects.get(pk="promo.flash_sale"),
            created_by=marketer,
            segment=segment,
            event_at=EVENT,
            channels=["inapp"],
        )
        for variant in [v for s in campaign.steps.all() for v in s.variants.all()]:
            VariantTemplate.objects.create(
                variant=variant, channel="inapp", title="Hi", body="Hi", link="https://x.example"
            )
        campaign_submit(campaign=campaign, by=marketer)
        seen = definition_digest(campaign_definition(campaign.pk))
        Segment.objects.filter(pk=segment.pk).update(use_member_list=False)
        with pytest.raises(CampaignError, match="changed while you were reviewing it"):
            campaign_approve(campaign=campaign, by=lead, seen=seen)
        assert fresh(campaign).status == C.AWAITING_APPROVAL
        campaign_approve(
            campaign=campaign, by=lead, seen=definition_digest(campaign_definition(campaign.pk))
        )
    assert fresh(campaign).approved_definition["segment"]["use_member_list"] is False


def test_a_delivery_held_by_the_pause_stays_held_while_awaiting_approval(marketer, lead, published):
    segment, _ = whales_with_a_list()
    campaign = approved(marketer, lead, segment)
    beat_at(NOTICE_AT, published)
    with time_machine.travel(NOTICE_AT):
        held = campaign_pause(campaign=campaign, by=marketer)
    SegmentMember.objects.filter(segment=segment).delete()
    assert campaigns_recheck()[0].campaign.pk == campaign.pk
    assert held > 0
    # in-app went out as it was routed; the rest waits
    waiting = Delivery.objects.filter(message__campaign=campaign).exclude(channel="inapp")
    assert set(waiting.values_list("reason", flat=True)) == {Reason.CAMPAIGN_PAUSED}
    assert not waiting.filter(next_attempt_at__isnull=False).exists()
