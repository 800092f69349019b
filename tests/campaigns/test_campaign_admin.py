"""The campaign admin: create with the 3-2-1 plan, steps in days and hours, copy checked as it is
saved, the lifecycle buttons, preview and "send test to me"; what Marketers, Marketing leads
and Support each see and may do."""

from __future__ import annotations

import json
import re
import uuid
from datetime import UTC, datetime, timedelta
from html import unescape
from typing import Any

import pytest
import time_machine
from django.contrib.messages import get_messages
from django.db import connection
from django.forms import MultiWidget
from django.test.utils import CaptureQueriesContext
from django.urls import reverse

from campaigns.admin.campaigns import VariableRowsWidget, describe_offset, parse_offset
from campaigns.models import (
    Campaign,
    CampaignStats,
    CampaignStatus,
    CampaignStep,
    Segment,
    StepVariant,
    VariantTemplate,
)
from campaigns.policies import format_offset
from campaigns.rendering import render_variant
from campaigns.services.lifecycle import (
    campaign_approve,
    campaign_create,
    campaign_pause,
    campaign_submit,
)
from channels.base import Channel
from notifier.models import Consent, Delivery, InboxItem, Message, NotificationType
from notifier.services.deliveries import deliveries_deliver
from notifier.services.pipeline import messages_prepare
from notifier.status import DeliveryStatus
from tests.factories import UserFactory, staff_member

pytestmark = pytest.mark.django_db
NOW = datetime(2026, 11, 1, 9, 0, tzinfo=UTC)
EVENT = datetime(2026, 11, 11, 12, 0, tzinfo=UTC)
FANS = "sale-fans"


# --- People --------------------------------------------------------------------------------------


def person(group: str, name: str):
    return staff_member(group, name)


@pytest.fixture
def marketer(roles):
    return person("Marketer", "marketer")


@pytest.fixture
def lead(roles):
    return person("Marketing lead", "lead")


@pytest.fixture
def support(roles):
    return person("Support", "support")


@pytest.fixture(autouse=True)
def _frozen_clock():
    with time_machine.travel(NOW, tick=False):
        yield


# --- Campaigns ------------------------------------------------------------------------------------


def write_copy(variant: StepVariant) -> None:
    VariantTemplate.objects.update_or_create(
        variant=variant,
        channel="inapp",
        locale="",
        defaults={
            "title": "{{ campaign.name }}: {{ headline }}",
            "body": "Hi {{ user.first_name }}, {{ headline }}",
            "link": "https://shop.example.com/sale",
        },
    )
    VariantTemplate.objects.update_or_create(
        variant=variant,
        channel="email",
        locale="",
        defaults={
            "subject": "{{ headline }}",
            "body": "Hi {{ user.first_name }}\n{{ unsubscribe_url }}",
            "html": "<p>Hi <b>{{ user.first_name }}</b> & welcome</p>",
        },
    )


def make_campaign(creator, *, with_copy: bool = True, name: str = "Double 11") -> Campaign:
    segment = Segment.objects.create(name=uuid.uuid4().hex, tags_any=[FANS])
    campaign = campaign_create(
        name=name,
        category=NotificationType.objects.get(pk="promo.flash_sale"),
        created_by=creator,
        segment=segment,
        event_at=EVENT,
        channels=["inapp", "email"],
        variables={"headline": "50% off"},
    )
    if with_copy:
        for step in campaign.steps.all():
            write_copy(step.variants.get())
    return campaign


def scheduled(creator, approver) -> Campaign:
    campaign = make_campaign(creator)
    campaign_submit(campaign=campaign, by=creator)
    campaign_approve(campaign=campaign, by=approver)
    campaign.refresh_from_db()
    return campaign


def status_of(campaign: Campaign) -> str:
    return Campaign.objects.values_list("status", flat=True).get(pk=campaign.pk)


# --- URLs and form data ---------------------------------------------------------------------------


def url(name: str, *args: object) -> str:
    return reverse(f"admin:campaigns_{name}", args=args)


def action_url(campaign: Campaign, action: str) -> str:
    return url("campaign_action", campaign.pk, action)


def notice_variant(campaign: Campaign) -> StepVariant:
    return StepVariant.objects.get(step__campaign=campaign, step__name="Notice")


def flash(response) -> list[str]:
    return [str(message) for message in get_messages(response.wsgi_request)]


def _form_values(form, data: dict[str, Any]) -> None:
    for name, field in form.fields.items():
        bound = form[name]
        value = bound.value()
        key = bound.html_name
        if isinstance(field.widget, VariableRowsWidget):  # the campaign's variables, as rows
            for index, row in enumerate(VariableRowsWidget.rows_of(value)):
                data[f"{key}-{index}-name"] = row.name
                data[f"{key}-{index}-value"] = row.value
                if row.is_json:
                    data[f"{key}-{index}-json"] = "1"
        elif isinstance(field.widget, MultiWidget):
            parts = value if isinstance(value, list) else field.widget.decompress(value)
            for suffix, part in zip(field.widget.widgets_names, parts, strict=True):
                data[key + suffix] = "" if part is None else str(part)
        elif isinstance(value, bool):
            if value:
                data[key] = "on"
        elif isinstance(value, list | tuple):
            data[key] = [str(item) for item in value]
        else:
            data[key] = "" if value is None else str(value)


def post_data(response, **overrides: Any) -> dict[str, Any]:
    """What the browser would POST back from a change page, unchanged, plus `overrides`."""
    data: dict[str, Any] = {}
    _form_values(response.context["adminform"].form, data)
    for inline in response.context["inline_admin_formsets"]:
        formset = inline.formset
        _form_values(formset.management_form, data)
        for form in formset.forms:
            _form_values(form, data)
    data.update(overrides)
    return data


def step_prefix(response, step_name: str) -> str:
    for inline in response.context["inline_admin_formsets"]:
        for form in inline.formset.forms:
            if form.instance.pk and form.instance.name == step_name:
                return form.prefix
    raise AssertionError(f"no form for step {step_name}")


def copy_prefix(response, channel: str) -> str:
    for inline in response.context["inline_admin_formsets"]:
        for form in inline.formset.forms:
            instance = form.instance
            if (
                instance.pk
                and instance.channel == channel
                and not (instance.locale or instance.persona)
            ):
                return form.prefix
    raise AssertionError(f"no form for {channel} copy")


def field_errors(response, prefix: str, field: str) -> list[str]:
    for inline in response.context["inline_admin_formsets"]:
        for form in inline.formset.forms:
            if form.prefix == prefix:
                return [str(error) for error in form.errors.get(field, [])]
    raise AssertionError(f"no form {prefix}")


# --- Offsets in human units (pure) ----------------------------------------------------------------


@pytest.mark.parametrize(
    ("typed", "minutes"),
    [
        ("-3d", -4320),
        ("-2d", -2880),
        ("-1h", -60),
        ("-2d 12h", -3600),
        ("+30m", 30),
        ("3 days before", -4320),
        ("1 hour after", 60),
        ("- 1 day, 2 hours", -1560),
        ("0", 0),
    ],
)
def test_offsets_are_typed_in_days_hours_and_minutes(typed, minutes):
    assert parse_offset(typed) == minutes


@pytest.mark.parametrize(
    ("typed", "complaint"),
    [
        ("3d", "before or after"),
        ("-3 weeks", "not a unit"),
        ("soon", "not a duration"),
        ("-3d before", "not both"),
        ("-400d", "within a year"),
        # int() refuses over 4,300 digits with ValueError, a 500 in the step's form.
        pytest.param("-" + "9" * 5000 + "d", "within a year", id="5000-digits"),
        ("-٣d", "not a duration"),  # an Arabic-Indic 3: int() reads it, the offset takes 0-9
    ],
)
def test_an_offset_that_cannot_be_read_says_how_to_write_it(typed, complaint):
    from django.core.exceptions import ValidationError

    with pytest.raises(ValidationError, match=complaint):
        parse_offset(typed)


@pytest.mark.parametrize("minutes", [-4320, -2880, -60, -3600, 30, 0, -1561])
def test_a_stored_offset_reads_back_as_it_is_shown(minutes):
    assert parse_offset(format_offset(minutes)) == minutes


def test_offsets_are_described_in_words():
    assert describe_offset(-4320) == "3 days before the event"
    assert describe_offset(-90) == "1 hour 30 minutes before the event"
    assert describe_offset(0) == "at the event"


# --- Creating -------------------------------------------------------------------------------------


def create_data(segment: Segment, **overrides: Any) -> dict[str, Any]:
    data = {
        "name": "Singles' Day",
        "kind": "one_off",
        "category": "promo.flash_sale",
        "segment": str(segment.pk),
        "event_at_0": "2026-11-11",
        "event_at_1": "12:00:00",
        "priority": "low",
        "channels": ["inapp", "email"],
        "variables": json.dumps({"headline": "50% off", "coupon_code": "D11"}),
        "holdout_percent": "10",
        "_save": "Save",
    }
    data.update(overrides)
    return data


def test_creating_a_campaign_in_the_admin_gives_it_the_3_2_1_plan(client, marketer):
    segment = Segment.objects.create(name="Fans", tags_any=[FANS])
    client.force_login(marketer)
    response = client.post(url("campaign_add"), create_data(segment))
    campaign = Campaign.objects.get(name="Singles' Day")
    assert response.status_code == 302
    # Next comes the copy: the page that writes every step's at once.
    assert response["Location"] == url("campaign_write", campaign.pk)
    steps = list(campaign.steps.order_by("offset_minutes"))
    assert [(s.name, s.offset_minutes) for s in steps] == [
        ("Notice", -4320),
        ("Reminder", -2880),
        ("Last call", -60),
    ]
    assert [list(s.variants.values_list("name", flat=True)) for s in steps] == [["A"]] * 3
    assert (campaign.created_by_id, campaign.status, campaign.event_at) == (
        marketer.pk,
        CampaignStatus.DRAFT,
        EVENT,
    )
    assert campaign.variables == {"headline": "50% off", "coupon_code": "D11"}
    assert (campaign.channels, campaign.holdout_percent) == (["inapp", "email"], 10)


@pytest.mark.parametrize(
    ("variables", "complaint"),
    [
        ('{"headline": ', "not valid JSON"),
        ('["50% off"]', "JSON object"),
        ('{"user": "x"}', "already given to every template"),
        ('{"coupon code": "x"}', "cannot be a template name"),
        # Every message of the campaign carries its variables: notify()'s bounds hold here too.
        pytest.param('{"a": ' + "[" * 5000 + "]" * 5000 + "}", "nests deeper", id="5000-deep"),
        pytest.param('{"a": ' + "[" * 33 + "]" * 33 + "}", "nests deeper", id="33-deep"),
        pytest.param('{"a": "' + "x" * 70_000 + '"}', "over 64 KB", id="70-KB"),
        ('{"a": NaN}', "not finite"),
        ('{"a": "\\u0000"}', "NUL"),
    ],
)
def test_variables_must_be_a_json_object_of_usable_names(client, marketer, variables, complaint):
    segment = Segment.objects.create(name="Fans")
    client.force_login(marketer)
    response = client.post(url("campaign_add"), create_data(segment, variables=variables))
    assert response.status_code == 200
    errors = " ".join(response.context["adminform"].form.errors["variables"])
    assert complaint in errors
    assert not Campaign.objects.exists()


def test_a_campaign_needs_a_marketing_category(client, marketer):
    segment = Segment.objects.create(name="Fans")
    client.force_login(marketer)
    response = client.post(url("campaign_add"), create_data(segment, category=""))
    assert response.context["adminform"].form.errors["category"] == ["This field is required."]
    refused = client.post(url("campaign_add"), create_data(segment, category="order.shipped"))
    assert "Select a valid choice" in refused.context["adminform"].form.errors["category"][0]
    assert not Campaign.objects.exists()


def test_channels_outside_the_category_are_refused(client, marketer):
    segment = Segment.objects.create(name="Fans")
    client.force_login(marketer)
    response = client.post(url("campaign_add"), create_data(segment, channels=["sms"]))
    errors = " ".join(response.context["adminform"].form.errors["channels"])
    assert "SMS is not one of them" in errors
    assert not Campaign.objects.exists()


def test_the_add_page_counts_the_chosen_segment_live(client, marketer):
    segment = Segment.objects.create(name="Fans", tags_any=[FANS])
    UserFactory.create_batch(2, interest_tags=[FANS])
    client.force_login(marketer)
    content = client.get(url("campaign_add")).content.decode()
    assert 'id="segment-audience"' in content
    # The page's script asks the segment admin's count endpoint when a segment is chosen.
    base = reverse("admin:campaigns_segment_changelist")
    assert f'var base = "{base}"' in content
    assert client.get(f"{base}{segment.pk}/count/").json()["count_text"] == "2"


def test_the_change_page_shows_the_segments_live_audience(client, marketer):
    campaign = make_campaign(marketer)
    UserFactory.create_batch(3, interest_tags=[FANS])
    UserFactory(interest_tags=["other"])
    client.force_login(marketer)
    content = client.get(url("campaign_change", campaign.pk)).content.decode()
    assert "3 users match the segment right now." in content


# --- Steps ----------------------------------------------------------------------------------------


def test_a_steps_offset_is_edited_in_human_units(client, marketer):
    campaign = make_campaign(marketer)
    client.force_login(marketer)
    page = client.get(url("campaign_change", campaign.pk))
    prefix = step_prefix(page, "Notice")
    # Read as a marketer says it; the short form is taken too.
    assert page.context["inline_admin_formsets"][0].formset.forms[0]["when"].value() == (
        "3 days before"
    )
    response = client.post(
        url("campaign_change", campaign.pk), post_data(page, **{f"{prefix}-when": "-4d 6h"})
    )
    assert response.status_code == 302, response.context and response.context["errors"]
    assert CampaignStep.objects.get(campaign=campaign, name="Notice").offset_minutes == -6120


def test_a_step_offset_that_cannot_be_read_is_an_error_on_its_field(client, marketer):
    campaign = make_campaign(marketer)
    client.force_login(marketer)
    page = client.get(url("campaign_change", campaign.pk))
    prefix = step_prefix(page, "Notice")
    response = client.post(
        url("campaign_change", campaign.pk), post_data(page, **{f"{prefix}-when": "3 days"})
    )
    assert response.status_code == 200
    assert "before or after" in " ".join(field_errors(response, prefix, "when"))
    assert CampaignStep.objects.get(campaign=campaign, name="Notice").offset_minutes == -4320


def test_a_new_step_gets_a_variant_a_and_shows_when_it_goes_out(client, marketer):
    campaign = make_campaign(marketer)
    client.force_login(marketer)
    page = client.get(url("campaign_change", campaign.pk))
    response = client.post(
        url("campaign_change", campaign.pk),
        post_data(
            page,
            **{
                "steps-TOTAL_FORMS": "4",
                "steps-3-name": "Doors open",
                "steps-3-when": "0",
                "steps-3-timing": "offset",
                "steps-3-campaign": str(campaign.pk),
                "_continue": "1",
            },
        ),
    )
    assert response.status_code == 302
    step = CampaignStep.objects.get(campaign=campaign, name="Doors open")
    assert step.offset_minutes == 0
    assert list(step.variants.values_list("name", flat=True)) == ["A"]
    content = client.get(url("campaign_change", campaign.pk)).content.decode()
    assert "Sun 08 Nov 2026, 12:00 UTC" in content  # the Notice: three days before the event
    assert "Wed 11 Nov 2026, 12:00 UTC" in content  # the new step, at the event


def test_editing_a_campaign_awaiting_approval_sends_it_back_to_draft(client, marketer):
    campaign = make_campaign(marketer)
    campaign_submit(campaign=campaign, by=marketer)
    client.force_login(marketer)
    page = client.get(url("campaign_change", campaign.pk))
    response = client.post(url("campaign_change", campaign.pk), post_data(page, name="Double 11!"))
    assert response.status_code == 302
    assert status_of(campaign) == CampaignStatus.DRAFT
    assert Campaign.objects.get(pk=campaign.pk).name == "Double 11!"


def test_an_approved_campaign_is_locked_for_edits(client, marketer, lead):
    campaign = scheduled(marketer, lead)
    client.force_login(marketer)
    page = client.get(url("campaign_change", campaign.pk))
    content = page.content.decode()
    assert not page.context["inline_admin_formsets"][0].has_change_permission
    assert 'name="_save"' not in content
    assert "Approved campaigns are locked" in content
    variant_page = client.get(url("stepvariant_change", notice_variant(campaign).pk))
    assert variant_page.status_code == 200
    assert 'name="_save"' not in variant_page.content.decode()


def test_removing_a_variable_the_copy_still_uses_is_refused(client, marketer):
    campaign = make_campaign(marketer)
    client.force_login(marketer)
    page = client.get(url("campaign_change", campaign.pk))
    response = client.post(url("campaign_change", campaign.pk), post_data(page, variables="{}"))
    assert response.status_code == 200
    errors = " ".join(response.context["adminform"].form.errors["variables"])
    assert "headline is used by Notice, variant A, In-app title" in errors
    assert Campaign.objects.get(pk=campaign.pk).variables == {"headline": "50% off"}


# --- Copy -----------------------------------------------------------------------------------------


def test_a_template_with_a_syntax_error_is_refused_on_its_field_and_nothing_saved(client, marketer):
    campaign = make_campaign(marketer)
    variant = notice_variant(campaign)
    client.force_login(marketer)
    page = client.get(url("stepvariant_change", variant.pk))
    inapp, email = copy_prefix(page, "inapp"), copy_prefix(page, "email")
    response = client.post(
        url("stepvariant_change", variant.pk),
        post_data(
            page,
            weight="3",
            **{f"{inapp}-body": "Hi {{ user.first_name", f"{email}-subject": "New subject"},
        ),
    )
    assert response.status_code == 200
    errors = field_errors(response, inapp, "body")
    assert errors and errors[0].startswith("Line 1:")
    assert "Variables are written {{ name }}" in errors[0]
    assert VariantTemplate.objects.get(variant=variant, channel="inapp").body == (
        "Hi {{ user.first_name }}, {{ headline }}"
    )
    assert VariantTemplate.objects.get(variant=variant, channel="email").subject == "{{ headline }}"
    assert StepVariant.objects.get(pk=variant.pk).weight == 1


def test_an_unknown_variable_is_refused_saying_what_to_use_instead(client, marketer):
    campaign = make_campaign(marketer)
    variant = notice_variant(campaign)
    client.force_login(marketer)
    page = client.get(url("stepvariant_change", variant.pk))
    email = copy_prefix(page, "email")
    response = client.post(
        url("stepvariant_change", variant.pk),
        post_data(page, **{f"{email}-subject": "Use {{ coupon }} now"}),
    )
    assert response.status_code == 200
    [error] = field_errors(response, email, "subject")
    assert error.startswith("Unknown variable coupon; use one of: ")
    assert "headline" in error and "campaign" in error
    assert "add it to the campaign's variables" in error
    assert VariantTemplate.objects.get(variant=variant, channel="email").subject == "{{ headline }}"


def test_saving_copy_clears_the_render_cache_and_returns_to_the_campaign(client, marketer):
    campaign = make_campaign(marketer)
    variant = notice_variant(campaign)
    context = {"headline": "50% off", "user": {"first_name": "Mei"}, "campaign": {"name": "D"}}
    assert render_variant(variant.pk, Channel.INAPP, context, "en").title == "D: 50% off"
    client.force_login(marketer)
    page = client.get(url("stepvariant_change", variant.pk))
    inapp = copy_prefix(page, "inapp")
    response = client.post(
        url("stepvariant_change", variant.pk),
        post_data(page, **{f"{inapp}-title": "Last chance: {{ headline }}"}),
    )
    assert response.status_code == 302
    assert response["Location"] == url("campaign_change", campaign.pk)
    assert render_variant(variant.pk, Channel.INAPP, context, "en").title == "Last chance: 50% off"


def test_a_new_variant_starts_with_an_empty_form_per_missing_channel(client, marketer):
    campaign = make_campaign(marketer, with_copy=False)
    variant = notice_variant(campaign)
    client.force_login(marketer)
    page = client.get(url("stepvariant_change", variant.pk))
    forms = page.context["inline_admin_formsets"][0].formset.forms
    assert [form["channel"].value() for form in forms] == ["inapp", "email"]
    data = post_data(
        page,
        **{
            f"{forms[0].prefix}-title": "{{ headline }}",
            f"{forms[0].prefix}-body": "Hi {{ user.first_name }}",
        },
    )
    response = client.post(url("stepvariant_change", variant.pk), data)
    assert response.status_code == 302
    assert list(variant.templates.values_list("channel", "title")) == [("inapp", "{{ headline }}")]


def test_copying_a_variant_makes_variant_b_with_the_same_copy(client, marketer):
    campaign = make_campaign(marketer)
    variant = notice_variant(campaign)
    client.force_login(marketer)
    response = client.post(url("stepvariant_copy", variant.pk))
    copy = StepVariant.objects.get(step=variant.step, name="B")
    assert response["Location"] == url("stepvariant_change", copy.pk)
    assert sorted(copy.templates.values_list("channel", "subject")) == [
        ("email", "{{ headline }}"),
        ("inapp", ""),
    ]


# --- Lifecycle buttons ----------------------------------------------------------------------------


def test_the_draft_checklist_shows_what_is_missing(client, marketer):
    campaign = make_campaign(marketer, with_copy=False)
    client.force_login(marketer)
    content = unescape(client.get(url("campaign_change", campaign.pk)).content.decode())
    assert "Before it can be submitted" in content
    assert "Step 'Notice', variant A: write the inapp copy" in content


def test_submitting_a_campaign_with_problems_shows_them_and_keeps_it_a_draft(client, marketer):
    campaign = make_campaign(marketer, with_copy=False)
    client.force_login(marketer)
    response = client.post(action_url(campaign, "submit"))
    assert response["Location"] == url("campaign_change", campaign.pk)
    [message] = flash(response)
    assert message.startswith("Before submitting: ")
    assert "step 'Notice', variant A: write the inapp copy" in message
    assert status_of(campaign) == CampaignStatus.DRAFT


def test_submitting_a_complete_campaign_awaits_approval(client, marketer):
    campaign = make_campaign(marketer)
    client.force_login(marketer)
    response = client.post(action_url(campaign, "submit"))
    assert "Submitted for approval" in flash(response)[0]
    assert status_of(campaign) == CampaignStatus.AWAITING_APPROVAL


def test_approval_is_refused_to_its_creator_and_accepted_from_another_lead(client, lead):
    campaign = make_campaign(lead)
    campaign_submit(campaign=campaign, by=lead)
    client.force_login(lead)
    page = client.get(url("campaign_change", campaign.pk)).content.decode()
    assert 'id="action-approve"' in page
    refused = client.post(action_url(campaign, "approve"))
    assert flash(refused) == ["A campaign must be approved by someone other than who prepared it"]
    assert status_of(campaign) == CampaignStatus.AWAITING_APPROVAL

    client.force_login(person("Marketing lead", "second-lead"))
    blind = client.post(action_url(campaign, "approve"))  # not from the page: no digest
    assert (
        flash(blind)[-1] == "Approve from the campaign's page, which shows what you are approving"
    )
    assert status_of(campaign) == CampaignStatus.AWAITING_APPROVAL
    page = client.get(url("campaign_change", campaign.pk)).content.decode()
    digest = re.search(r'name="definition" value="([0-9a-f]{64})"', page)[1]
    accepted = client.post(action_url(campaign, "approve"), {"definition": digest})
    assert flash(accepted)[-1].startswith("Approved")
    assert status_of(campaign) == CampaignStatus.SCHEDULED


def test_a_marketer_sees_no_approve_button_and_cannot_approve(client, marketer):
    campaign = make_campaign(person("Marketer", "author"))
    campaign_submit(campaign=campaign, by=campaign.created_by)
    client.force_login(marketer)
    page = client.get(url("campaign_change", campaign.pk)).content.decode()
    assert 'id="action-send_back"' in page
    assert 'id="action-approve"' not in page
    response = client.post(action_url(campaign, "approve"))
    assert "needs the 'approve campaign' permission" in flash(response)[0]
    assert status_of(campaign) == CampaignStatus.AWAITING_APPROVAL


def test_pause_resume_and_cancel_move_the_status(client, marketer, lead):
    campaign = scheduled(marketer, lead)
    client.force_login(marketer)
    client.post(action_url(campaign, "pause"))
    assert status_of(campaign) == CampaignStatus.PAUSED
    page = client.get(url("campaign_change", campaign.pk)).content.decode()
    assert 'id="action-resume"' in page and 'id="action-pause"' not in page
    client.post(action_url(campaign, "resume"))
    assert status_of(campaign) == CampaignStatus.SCHEDULED

    confirm = client.get(url("campaign_cancel", campaign.pk))
    assert confirm.status_code == 200
    assert "Notice, Reminder, Last call" in confirm.content.decode()
    assert status_of(campaign) == CampaignStatus.SCHEDULED  # asking changes nothing
    client.post(url("campaign_cancel", campaign.pk), {"confirm": "yes"})
    assert status_of(campaign) == CampaignStatus.CANCELLED
    assert set(campaign.steps.values_list("status", flat=True)) == {"cancelled"}


def test_an_automatic_pause_shows_its_reason_and_the_threshold_stays_editable(
    client, marketer, lead
):
    campaign = scheduled(marketer, lead)
    campaign_pause(campaign=campaign, by=None, reason="40 of its last 100 sends failed (40%)")
    client.force_login(marketer)
    change = url("campaign_change", campaign.pk)
    response = client.get(change)
    assert (
        "Paused automatically: 40 of its last 100 sends failed (40%)" in response.content.decode()
    )
    # Locked for copy changes, but the failure threshold can still be moved.
    client.post(change, post_data(response, pause_failure_percent="35"))
    campaign.refresh_from_db()
    assert campaign.pause_failure_percent == 35
    client.post(action_url(campaign, "resume"))
    assert 'id="pause-reason"' not in client.get(change).content.decode()


def test_a_refused_move_shows_the_services_message(client, marketer, lead):
    campaign = scheduled(marketer, lead)
    client.force_login(marketer)
    client.post(action_url(campaign, "pause"))
    response = client.post(action_url(campaign, "pause"))
    assert flash(response)[-1] == "A paused campaign cannot become paused"


def test_lifecycle_actions_take_post_only(client, marketer):
    campaign = make_campaign(marketer)
    client.force_login(marketer)
    assert client.get(action_url(campaign, "submit")).status_code == 405
    assert status_of(campaign) == CampaignStatus.DRAFT


def test_moving_the_event_moves_the_campaign(client, marketer, lead):
    campaign = scheduled(marketer, lead)
    client.force_login(marketer)
    page = client.get(url("campaign_change", campaign.pk)).content.decode()
    assert 'id="move-event"' in page
    response = client.post(url("campaign_move", campaign.pk), {"event_at": "2026-11-12T20:00"})
    assert Campaign.objects.get(pk=campaign.pk).event_at == datetime(2026, 11, 12, 20, tzinfo=UTC)
    assert "The event is now Thu 12 Nov 2026, 20:00 UTC" in flash(response)[0]
    assert status_of(campaign) == CampaignStatus.SCHEDULED


def test_moving_the_event_into_the_past_is_refused(client, marketer, lead):
    campaign = scheduled(marketer, lead)
    client.force_login(marketer)
    response = client.post(url("campaign_move", campaign.pk), {"event_at": "2026-10-01T20:00"})
    assert flash(response) == ["The new event time is in the past"]
    assert Campaign.objects.get(pk=campaign.pk).event_at == EVENT


# --- Preview and test sends -----------------------------------------------------------------------


def test_the_preview_renders_every_step_variant_and_channel_for_a_sample_user(client, marketer):
    campaign = make_campaign(marketer)
    fan = UserFactory(first_name="Mei", interest_tags=[FANS], email="mei.lin@example.com")
    client.force_login(marketer)
    response = client.get(url("campaign_preview", campaign.pk))
    assert response.status_code == 200
    content = response.content.decode()
    assert f"user #{fan.pk}</strong>, Mei" in content
    assert "m******@example.com" in content and "mei.lin@example.com" not in content
    assert content.count("Double 11: 50% off") == 3  # in-app title of each step
    assert content.count('class="part-body">Hi Mei, 50% off<') == 3
    # The HTML email sits in a sandboxed iframe, escaped into srcdoc.
    assert (
        'sandbox="" referrerpolicy="no-referrer"' in content
        and 'srcdoc="&lt;p&gt;Hi &lt;b&gt;Mei&lt;/b&gt; &amp; welcome&lt;/p&gt;"' in content
    )
    assert content.count('id="send-test-') == 3


def test_the_preview_escapes_copy_and_shows_render_errors(client, marketer):
    campaign = make_campaign(marketer)
    VariantTemplate.objects.filter(variant=notice_variant(campaign), channel="inapp").update(
        title="<script>alert(1)</script>"
    )
    VariantTemplate.objects.filter(variant=notice_variant(campaign), channel="email").delete()
    client.force_login(marketer)
    content = client.get(url("campaign_preview", campaign.pk)).content.decode()
    assert "<script>alert(1)</script>" not in content
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in content
    assert f"Cannot render: variant {notice_variant(campaign).pk} has no email copy" in content


def test_the_preview_is_for_a_customer_chosen_by_id_and_by_email_for_support(
    client, marketer, support
):
    campaign = make_campaign(marketer)
    chosen = UserFactory(first_name="Zhang", email="Zhang@Example.com", interest_tags=[FANS])
    client.force_login(marketer)
    by_id = client.get(url("campaign_preview", campaign.pk), {"user": str(chosen.pk)})
    assert f"user #{chosen.pk}</strong>, Zhang" in by_id.content.decode()
    assert "Hi Zhang, 50% off" in by_id.content.decode()
    assert "Another user (id):" in by_id.content.decode()
    missing = client.get(url("campaign_preview", campaign.pk), {"user": str(chosen.pk + 999)})
    assert "Nobody in this campaign&#x27;s segment has that id" in missing.content.decode()
    # A marketer's box takes no email: none is looked up, so none can tell who is a customer.
    by_email = client.get(url("campaign_preview", campaign.pk), {"user": "zhang@example.com"})
    assert "Give a customer&#x27;s id (a number)" in by_email.content.decode()
    assert "Shown for a sample user of the segment" in by_email.content.decode()

    client.force_login(support)
    by_email = client.get(url("campaign_preview", campaign.pk), {"user": "zhang@example.com"})
    assert f"user #{chosen.pk}</strong>, Zhang" in by_email.content.decode()
    assert "Another user (id or email):" in by_email.content.decode()


@pytest.mark.parametrize(
    "typed",
    ["9" * 5000, "٣", "²", "-1", "0", str(2**63)],
    ids=["5000-digits", "arabic-indic", "superscript", "negative", "zero", "over-bigint"],
)
def test_an_id_that_is_no_id_gets_an_answer_not_a_500(client, marketer, support, typed):
    """The preview's user box, send test's variant and the change pages' object ids: digits of
    other scripts, and numbers int() refuses (over 4,300 digits) or bigint cannot hold."""
    campaign = make_campaign(marketer)
    for person in (marketer, support):
        client.force_login(person)
        preview = client.get(url("campaign_preview", campaign.pk), {"user": typed})
        assert preview.status_code == 200
        assert "errorlist" in preview.content.decode()
    client.force_login(marketer)
    sent = client.post(url("campaign_test", campaign.pk), {"variant": typed, "user": typed})
    assert sent.status_code == 404
    for page in ("campaign_change", "stepvariant_change"):
        response = client.post(url(page, typed), {})
        assert response.status_code in (302, 404), page
    assert not Message.objects.exists()


def test_a_marketer_cannot_preview_a_customer_outside_the_segment_but_support_can(
    client, marketer, support
):
    campaign = make_campaign(marketer)
    outsider = UserFactory(first_name="Wei", email="wei@example.com", interest_tags=["golf"])
    client.force_login(marketer)
    for query in (str(outsider.pk), str(outsider.pk + 999)):
        page = client.get(url("campaign_preview", campaign.pk), {"user": query}).content.decode()
        # The same words as for nobody at all: the box is no lookup of who has an account.
        assert "Nobody in this campaign&#x27;s segment has that id" in page
        # (CSRF tokens are random letters: one may spell the name.)
        shown = re.sub(r'name="csrfmiddlewaretoken" value="[^"]*"', "", page)
        assert "Wei" not in shown and "wei@example.com" not in shown
    mine = client.get(url("campaign_preview", campaign.pk), {"user": str(marketer.pk)})
    assert f"user #{marketer.pk}</strong>" in mine.content.decode()

    client.force_login(support)
    page = client.get(url("campaign_preview", campaign.pk), {"user": str(outsider.pk)})
    assert f"user #{outsider.pk}</strong>, Wei" in page.content.decode()


def test_send_test_reaches_the_marketers_inbox_without_marketing_consent(
    client, marketer, published, django_capture_on_commit_callbacks
):
    campaign = make_campaign(marketer)
    variant = notice_variant(campaign)
    assert not Consent.objects.filter(user=marketer).exists()
    client.force_login(marketer)
    with django_capture_on_commit_callbacks(execute=True):
        response = client.post(url("campaign_test", campaign.pk), {"variant": variant.pk})
    message = Message.objects.get(user=marketer)
    assert response["Location"] == url("campaign_preview", campaign.pk) + f"#variant-{variant.pk}"
    assert f"sent to you (message #{message.pk})" in flash(response)[0]
    assert message.is_test
    assert (message.campaign_id, message.step_id, message.variant_id) == (
        campaign.pk,
        variant.step_id,
        variant.pk,
    )
    assert published.test_sends == [[message.pk]]
    with django_capture_on_commit_callbacks(execute=True):
        messages_prepare(message_ids=[message.pk])
    deliveries_deliver(delivery_ids=published.delivered_ids())
    item = InboxItem.objects.get(user=marketer)
    assert (item.message_id, item.title, item.body) == (
        message.pk,
        "[Test] Double 11: 50% off",  # a test says so (campaigns.rendering.marked_as_test)
        f"Hi {marketer.first_name}, 50% off",
    )
    email = Delivery.objects.get(message=message, channel="email")
    assert email.status == DeliveryStatus.SENT  # email needs consent, a test does not


def test_send_test_of_a_variant_of_another_campaign_is_not_found(client, marketer):
    campaign, other = make_campaign(marketer), make_campaign(marketer)
    client.force_login(marketer)
    response = client.post(url("campaign_test", campaign.pk), {"variant": notice_variant(other).pk})
    assert response.status_code == 404
    assert not Message.objects.exists()


# --- Who sees what --------------------------------------------------------------------------------


def pages(campaign: Campaign) -> list[str]:
    return [
        url("campaign_changelist"),
        url("campaign_change", campaign.pk),
        url("stepvariant_change", notice_variant(campaign).pk),
        url("campaign_preview", campaign.pk),
        url("campaign_stats", campaign.pk),
        url("campaign_forecast", campaign.pk),
    ]


@pytest.mark.parametrize("role", ["Marketer", "Marketing lead", "Support"])
def test_the_pages_open_for_every_marketing_role_and_support(client, marketer, role):
    campaign = make_campaign(marketer)
    client.force_login(person(role, "viewer"))
    for page in pages(campaign):
        response = client.get(page)
        assert response.status_code == 200, page
        assert "Double 11" in response.content.decode(), page


def test_support_sees_no_buttons(client, marketer, lead, support):
    draft, live = make_campaign(marketer), scheduled(marketer, lead)
    client.force_login(support)
    for campaign in (draft, live):
        content = client.get(url("campaign_change", campaign.pk)).content.decode()
        assert 'id="action-' not in content
        assert 'id="move-event"' not in content
        assert 'name="_save"' not in content
        preview = client.get(url("campaign_preview", campaign.pk)).content.decode()
        assert "Send test to me" not in preview
        variant = client.get(url("stepvariant_change", notice_variant(campaign).pk))
        assert 'id="copy-variant"' not in variant.content.decode()
        assert 'name="_save"' not in variant.content.decode()


def test_support_gets_403_on_every_post(client, marketer, lead, support):
    draft, live = make_campaign(marketer), scheduled(marketer, lead)
    client.force_login(support)
    variant = notice_variant(draft)
    posts = [
        (url("campaign_add"), create_data(draft.segment)),
        (url("campaign_change", draft.pk), {"name": "Hacked"}),
        (url("campaign_delete", draft.pk), {"post": "yes"}),
        (action_url(draft, "submit"), {}),
        (action_url(live, "pause"), {}),
        (action_url(live, "send_back"), {}),
        (url("campaign_cancel", live.pk), {"confirm": "yes"}),
        (url("campaign_move", live.pk), {"event_at": "2026-11-12T20:00"}),
        (url("campaign_test", draft.pk), {"variant": variant.pk}),
        (url("stepvariant_change", variant.pk), {"weight": "5"}),
        (url("stepvariant_copy", variant.pk), {}),
        (url("stepvariant_delete", variant.pk), {"post": "yes"}),
        (url("campaign_stats", draft.pk), {}),
    ]
    for target, data in posts:
        assert client.post(target, data).status_code == 403, target
    assert (status_of(draft), status_of(live)) == (CampaignStatus.DRAFT, CampaignStatus.SCHEDULED)
    assert Campaign.objects.get(pk=draft.pk).name == "Double 11"
    assert StepVariant.objects.filter(step__campaign=draft).count() == 3
    assert not Message.objects.exists()


# --- The list -------------------------------------------------------------------------------------


def test_the_list_shows_the_next_step_audience_and_funnel(client, marketer, lead):
    campaign = scheduled(marketer, lead)
    CampaignStats.objects.create(
        campaign=campaign,
        scope="campaign",
        data={"recipients": {"targeted": 1234}},
        computed_at=NOW,
    )
    client.force_login(marketer)
    content = client.get(url("campaign_changelist")).content.decode()
    assert "Notice: Sun 08 Nov 2026, 12:00 UTC" in content
    assert "1,234 targeted" in content
    assert reverse("admin:campaigns_campaign_stats", args=[campaign.pk]) in content


def test_the_list_filters_by_status_and_kind(client, marketer, lead):
    make_campaign(marketer, name="Still a draft")
    scheduled(marketer, lead)
    client.force_login(marketer)
    response = client.get(url("campaign_changelist"), {"status__exact": "draft", "kind": "one_off"})
    names = [c.name for c in response.context["cl"].result_list]
    assert names == ["Still a draft"]


def test_the_list_page_takes_the_same_queries_for_few_or_many_campaigns(client, marketer):
    client.force_login(marketer)

    def queries() -> int:
        with CaptureQueriesContext(connection) as captured:
            assert client.get(url("campaign_changelist")).status_code == 200
        return len(captured)

    for _ in range(2):
        make_campaign(marketer)
    few = queries()
    for _ in range(8):
        campaign = make_campaign(marketer)
        CampaignStats.objects.create(
            campaign=campaign,
            scope="campaign",
            data={"recipients": {"targeted": 5}},
            computed_at=NOW,
        )
    assert queries() == few
    assert few <= 8


def test_next_step_when_moves_with_the_event(client, marketer, lead):
    campaign = scheduled(marketer, lead)
    Campaign.objects.filter(pk=campaign.pk).update(event_at=EVENT + timedelta(days=1))
    client.force_login(marketer)
    content = client.get(url("campaign_changelist")).content.decode()
    assert "Notice: Mon 09 Nov 2026, 12:00 UTC" in content


def test_segment_emails_are_masked_on_the_preview_for_support(client, marketer, support):
    campaign = make_campaign(marketer)
    UserFactory(first_name="Mei", interest_tags=[FANS], email="mei.lin@example.com")
    client.force_login(support)
    content = client.get(url("campaign_preview", campaign.pk)).content.decode()
    assert "mei.lin@example.com" not in content
    assert re.search(r"m\*+@example\.com", content)
