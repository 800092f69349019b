"""Approval covers the audience, through the real admin as a Marketer and a Marketing lead: a
change to a segment, its member list (a CSV import, a member added or removed) or the audience
thresholds sends every approved campaign that uses it back for approval at once, with a message
saying so; each page warns before saving; the lead sees what changed and approves again."""

from __future__ import annotations

import re
from datetime import timedelta
from decimal import Decimal
from html import unescape

import pytest
import time_machine
from django.core.files.uploadedfile import SimpleUploadedFile

from campaigns.models import (
    AudienceThresholds,
    Campaign,
    CampaignStatus,
    Segment,
    SegmentMember,
)
from campaigns.services.lifecycle import campaign_submit
from notifier.models import Message
from tests.campaigns.approvals import (
    NOTICE_AT,
    NOW,
    approved,
    audience,
    beat_at,
    fresh,
    person,
    recipients,
    whales_with_a_list,
)
from tests.campaigns.test_campaign_admin import action_url, flash, post_data, url

pytestmark = pytest.mark.django_db
C = CampaignStatus


@pytest.fixture
def marketer(roles):
    return person("Marketer")


@pytest.fixture
def lead(roles):
    return person("Marketing lead")


@pytest.fixture(autouse=True)
def _before_the_event():
    with time_machine.travel(NOW + timedelta(hours=1), tick=False):
        yield


def page_text(response) -> str:
    return unescape(response.content.decode())


def segment_form(client, segment: Segment, **changes) -> dict:
    """The segment's change form as the browser would post it back, with `changes` (None:
    the box unticked)."""
    data = post_data(client.get(url("segment_change", segment.pk)))
    for name, value in changes.items():
        if value is None:
            data.pop(name, None)
        else:
            data[name] = value
    return data


def approve_as(client, lead, campaign: Campaign):
    """The lead opens the campaign's page and presses Approve (which carries what it showed)."""
    client.force_login(lead)
    page = client.get(url("campaign_change", campaign.pk))
    digest = re.search(r'name="definition" value="([0-9a-f]{64})"', page.content.decode())
    assert digest, "the approve button carries the digest of what the page showed"
    return page, client.post(action_url(campaign, "approve"), {"definition": digest[1]})


# --- The scenario ----------------------------------------------------------------------


def test_unticking_use_member_list_sends_the_campaign_back_and_the_lead_sees_the_change(
    client, marketer, lead, published
):
    segment, users = whales_with_a_list()  # 71 match the rules, 11 on the list
    campaign = approved(marketer, lead, segment)

    client.force_login(marketer)
    response = client.post(
        url("segment_change", segment.pk), segment_form(client, segment, use_member_list=None)
    )
    assert response.status_code == 302
    assert not Segment.objects.get(pk=segment.pk).use_member_list
    assert (
        "Campaign “Double 11” goes back for approval: its segment changed: "
        "Segment “Winter whales”: use member list: yes → no." in flash(response)
    )
    assert fresh(campaign).status == C.AWAITING_APPROVAL

    # Its moment comes while it waits: the 71 receive nothing.
    assert beat_at(NOTICE_AT, published).started == []
    assert not Message.objects.filter(campaign=campaign).exists()

    page, approval = approve_as(client, lead, campaign)
    text = page_text(page)
    assert "Back for approval: its segment changed: Segment “Winter whales”" in text
    assert "What changed since it was last approved" in text
    assert "<li>Segment “Winter whales”: use member list: yes → no</li>" in text
    assert "Audience at approval 11, now 71." in text
    assert flash(approval)[-1].startswith("Approved")
    assert fresh(campaign).status == C.SCHEDULED
    assert fresh(campaign).approved_audience == 71

    beat_at(NOTICE_AT + timedelta(minutes=1), published)
    assert recipients(campaign, "Notice") == {u.pk for u in users}


def test_renaming_a_segment_sends_nothing_back(client, marketer, lead):
    segment, _ = whales_with_a_list()
    campaign = approved(marketer, lead, segment)
    client.force_login(marketer)
    response = client.post(
        url("segment_change", segment.pk),
        segment_form(client, segment, name="Whales of winter", description="VIPs"),
    )
    assert response.status_code == 302
    assert fresh(campaign).status == C.SCHEDULED
    assert not [m for m in flash(response) if "goes back" in m]


def test_the_segment_page_warns_before_saving_and_every_campaign_using_it_goes_back(
    client, marketer, lead
):
    segment, _ = whales_with_a_list()
    first = approved(marketer, lead, segment)
    second = approved(marketer, lead, segment, name="VIP night")
    draft = approved(marketer, lead, segment, name="Just a draft")
    Campaign.objects.filter(pk=draft.pk).update(status=C.DRAFT)

    client.force_login(marketer)
    page = page_text(client.get(url("segment_change", segment.pk)))
    warning = re.search(r'id="approval-warning">(.*?)</p>', page, re.S)[1]
    assert " ".join(re.sub(r"<[^>]+>", "", warning).split()) == (
        "Saving sends 2 approved campaigns back for approval: Double 11 (scheduled), "
        "VIP night (scheduled). Its rules and “Use member list” decide who receives them; its "
        "name and description do not."
    )

    response = client.post(
        url("segment_change", segment.pk), segment_form(client, segment, tags_any="")
    )
    assert sorted(m for m in flash(response) if "goes back for approval" in m) == [
        "Campaign “Double 11” goes back for approval: its segment changed: "
        "Segment “Winter whales”: interest tags (any): winter-fans → any.",
        "Campaign “VIP night” goes back for approval: its segment changed: "
        "Segment “Winter whales”: interest tags (any): winter-fans → any.",
    ]
    assert (fresh(first).status, fresh(second).status, fresh(draft).status) == (
        C.AWAITING_APPROVAL,
        C.AWAITING_APPROVAL,
        C.DRAFT,
    )


# --- The member list -----------------------------------------------------------------------------


def test_a_csv_import_into_an_approved_campaigns_list_sends_it_back(client, marketer, lead):
    segment, users = whales_with_a_list(listed=11, others=60)
    campaign = approved(marketer, lead, segment)
    client.force_login(marketer)
    csv = "user_id\n" + "".join(f"{u.pk}\n" for u in users[11:])
    preview = client.post(
        url("segment_import", segment.pk),
        {"file": SimpleUploadedFile("more.csv", csv.encode(), content_type="text/csv")},
    )
    warning = re.search(r'id="approval-warning">(.*?)</p>', page_text(preview), re.S)[1]
    assert " ".join(re.sub(r"<[^>]+>", "", warning).split()) == (
        "Saving sends 1 approved campaign back for approval: Double 11 (scheduled). The segment "
        "uses its member list: adding members changes who they reach."
    )
    assert fresh(campaign).status == C.SCHEDULED  # a preview changes nothing

    token = re.search(r'name="token" value="([^"]+)"', preview.content.decode())[1]
    response = client.post(url("segment_import", segment.pk), {"token": token})
    assert SegmentMember.objects.filter(segment=segment).count() == 71
    assert (
        "Campaign “Double 11” goes back for approval: its segment's member list changed: "
        "Segment “Winter whales”: member list: 11 → 71 members." in flash(response)
    )
    assert fresh(campaign).status == C.AWAITING_APPROVAL


def test_a_member_added_or_removed_in_the_admin_sends_the_campaign_back(client, marketer, lead):
    segment, users = whales_with_a_list(listed=11, others=60)
    campaign = approved(marketer, lead, segment)
    client.force_login(marketer)
    added = client.post(
        url("segmentmember_add"), {"user": users[40].pk, "segment": segment.pk, "_save": "Save"}
    )
    assert added.status_code == 302
    assert any(m.endswith("member list: 11 → 12 members.") for m in flash(added))
    assert fresh(campaign).status == C.AWAITING_APPROVAL

    client.force_login(lead)
    approve_as(client, lead, campaign)
    assert fresh(campaign).status == C.SCHEDULED

    client.force_login(marketer)
    member = SegmentMember.objects.get(segment=segment, user=users[0])
    removed = client.post(url("segmentmember_delete", member.pk), {"post": "yes"})
    assert removed.status_code == 302
    assert any(m.endswith("member list: 12 → 11 members.") for m in flash(removed))
    assert fresh(campaign).status == C.AWAITING_APPROVAL


def test_members_removed_in_bulk_send_the_campaign_back(client, marketer, lead):
    segment, _ = whales_with_a_list()
    campaign = approved(marketer, lead, segment)
    client.force_login(marketer)
    ids = list(SegmentMember.objects.filter(segment=segment).values_list("pk", flat=True)[:3])
    response = client.post(
        url("segmentmember_changelist"),
        {"action": "delete_selected", "_selected_action": ids, "post": "yes"},
    )
    assert response.status_code == 302
    assert any("member list: 11 → 8 members." in m for m in flash(response))
    assert fresh(campaign).status == C.AWAITING_APPROVAL


# --- Thresholds ----------------------------------------------------------------------------------


def test_changed_thresholds_send_back_the_campaigns_whose_segments_follow_them(
    client, marketer, lead
):
    audience(3, yearly_spend=Decimal("6000"))
    whale_segment = Segment.objects.create(name="Whales", spend_tiers=["whale"])
    whales = approved(marketer, lead, whale_segment, name="Whale sale")
    fans = approved(marketer, lead, Segment.objects.create(name="Tagged", tags_any=["x"]))
    thresholds = AudienceThresholds.current()
    client.force_login(marketer)
    page = client.get(url("audiencethresholds_change", thresholds.pk))
    warning = re.search(r'id="approval-warning">(.*?)</p>', page_text(page), re.S)[1]
    assert " ".join(re.sub(r"<[^>]+>", "", warning).split()) == (
        "Saving sends 1 approved campaign back for approval: Whale sale (scheduled). Their "
        "segments' spend tier or activity rules, or their copy per spend tier or activity, "
        "follow these edges."
    )

    data = post_data(page, whale_min_spend="3000")
    response = client.post(url("audiencethresholds_change", thresholds.pk), data)
    assert response.status_code == 302
    assert (
        "Campaign “Whale sale” goes back for approval: the audience thresholds changed: "
        "Audience thresholds: whale line (yearly spend): 5000.00 → 3000.00." in flash(response)
    )
    assert (fresh(whales).status, fresh(fans).status) == (C.AWAITING_APPROVAL, C.SCHEDULED)


# --- Approving again -----------------------------------------------------------------------------


def test_approval_refuses_what_changed_after_the_lead_opened_the_page(client, marketer, lead):
    segment, _ = whales_with_a_list()
    campaign = approved(marketer, lead, segment)
    Campaign.objects.filter(pk=campaign.pk).update(status=C.DRAFT)
    campaign_submit(campaign=fresh(campaign), by=marketer)
    client.force_login(lead)
    page = client.get(url("campaign_change", campaign.pk)).content.decode()
    digest = re.search(r'name="definition" value="([0-9a-f]{64})"', page)[1]
    Segment.objects.filter(pk=segment.pk).update(use_member_list=False)  # meanwhile
    response = client.post(action_url(campaign, "approve"), {"definition": digest})
    assert flash(response)[-1] == (
        "It changed while you were reviewing it: reload the page to see what changed, then approve"
    )
    assert fresh(campaign).status == C.AWAITING_APPROVAL


def test_a_started_campaign_back_for_approval_is_locked_and_cannot_become_a_draft(
    client, marketer, lead, published
):
    segment, _ = whales_with_a_list()
    campaign = approved(marketer, lead, segment)
    beat_at(NOTICE_AT, published)
    Segment.objects.filter(pk=segment.pk).update(use_member_list=False)
    beat_at(NOTICE_AT + timedelta(days=1), published)  # the Reminder: back for approval
    assert (fresh(campaign).status, fresh(campaign).status_before_review) == (
        C.AWAITING_APPROVAL,
        C.RUNNING,
    )
    client.force_login(marketer)
    page = client.get(url("campaign_change", campaign.pk))
    assert 'name="_save"' not in page.content.decode()
    assert not page.context["inline_admin_formsets"][0].has_change_permission
    assert 'id="action-send_back"' not in page.content.decode()
    response = client.post(action_url(campaign, "send_back"))
    assert flash(response)[-1].startswith("It has started, so it cannot become a draft again")
    assert fresh(campaign).status == C.AWAITING_APPROVAL
    # Its safety setting still changes, and it stays waiting for the lead.
    saved = client.post(
        url("campaign_change", campaign.pk), post_data(page, pause_failure_percent="35")
    )
    assert saved.status_code == 302
    assert (fresh(campaign).status, fresh(campaign).pause_failure_percent) == (
        C.AWAITING_APPROVAL,
        35,
    )


def test_a_live_campaign_changed_outside_the_admin_shows_it_before_beat_catches_it(
    client, marketer, lead
):
    segment, _ = whales_with_a_list()
    campaign = approved(marketer, lead, segment)
    Segment.objects.filter(pk=segment.pk).update(use_member_list=False)
    client.force_login(marketer)
    text = page_text(client.get(url("campaign_change", campaign.pk)))
    assert "Changed since approval, outside the admin: its next step will not start" in text
    assert "<li>Segment “Winter whales”: use member list: yes → no</li>" in text
