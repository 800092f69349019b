"""Copy tools for people, not JSON, and the 3-2-1 plan that fits the dates: variables as rows,
per-channel parts, dates and money per reader, the live preview of unsaved copy, test sends to a
seed list marked [Test], past steps offered to be dropped, one page for every step's copy."""

from __future__ import annotations

import re
from datetime import UTC, date, datetime, time, timedelta

import pytest
import time_machine
from django.urls import reverse

from campaigns.models import (
    Campaign,
    CampaignKind,
    CampaignStatus,
    CampaignStep,
    Segment,
    VariantTemplate,
)
from campaigns.policies import StepPlan, Timing, step_reading
from campaigns.rendering import marked_as_test, sms_length
from campaigns.services.stats import CAMPAIGN_SCOPE, stats_rollup
from channels.base import Content
from notifier.models import Delivery, InboxItem, Message, recipient_for
from notifier.services.deliveries import deliveries_deliver
from notifier.services.pipeline import messages_prepare
from tests.campaigns.test_campaign_admin import (
    EVENT,
    FANS,
    NOW,
    create_data,
    flash,
    make_campaign,
    notice_variant,
    post_data,
    url,
)
from tests.factories import UserFactory, staff_member

pytestmark = pytest.mark.django_db


@pytest.fixture
def marketer(roles):
    return staff_member("Marketer", "marketer")


@pytest.fixture
def support(roles):
    return staff_member("Support", "support")


@pytest.fixture(autouse=True)
def _frozen_clock():
    with time_machine.travel(NOW, tick=False):
        yield


def rows(**variables: str) -> dict[str, str]:
    data = {}
    for index, (name, value) in enumerate(variables.items()):
        data[f"variables-{index}-name"] = name
        data[f"variables-{index}-value"] = value
    return data


def without_json_variables(data: dict) -> dict:
    data = dict(data)
    data.pop("variables", None)
    return data


# --- Variables as rows -----------------------------------------------------------------------


def test_variables_are_rows_of_a_name_and_a_value(client, marketer):
    segment = Segment.objects.create(name="Fans")
    client.force_login(marketer)
    page = client.get(url("campaign_add"))
    html = page.content.decode()
    assert 'name="variables-0-name"' in html and 'name="variables-1-value"' in html
    assert "<textarea" not in html.split('id="variables-rows"')[1].split("</table>")[0]

    data = without_json_variables(create_data(segment))
    data.update(rows(headline="50% off", coupon_code="D11", **{"": ""}))
    response = client.post(url("campaign_add"), data)
    assert response.status_code == 302
    campaign = Campaign.objects.get()
    assert campaign.variables == {"headline": "50% off", "coupon_code": "D11"}


@pytest.mark.parametrize(
    ("posted", "complaint"),
    [
        ({"coupon code": "x"}, "cannot be a template name"),
        ({"2fast": "x"}, "cannot be a template name"),
        ({"user": "x"}, "already given to every template"),
        ({"event_at": "x"}, "already given to every template"),
        ({"": "a value"}, "has a value but no name"),
        ({"x": "\x00"}, "NUL"),
    ],
)
def test_a_variable_row_it_cannot_take_is_an_error_in_words(client, marketer, posted, complaint):
    segment = Segment.objects.create(name="Fans")
    client.force_login(marketer)
    data = without_json_variables(create_data(segment))
    data.update(rows(**posted))
    response = client.post(url("campaign_add"), data)
    assert response.status_code == 200
    errors = " ".join(response.context["adminform"].form.errors["variables"])
    assert complaint in errors
    assert not Campaign.objects.exists()


def test_the_same_name_twice_is_refused(client, marketer):
    segment = Segment.objects.create(name="Fans")
    client.force_login(marketer)
    data = without_json_variables(create_data(segment))
    data.update({"variables-0-name": "a", "variables-0-value": "1"})
    data.update({"variables-1-name": "a", "variables-1-value": "2"})
    response = client.post(url("campaign_add"), data)
    assert "“a” is there twice" in " ".join(response.context["adminform"].form.errors["variables"])


def test_a_value_that_is_not_text_keeps_its_type_when_the_page_is_saved(client, marketer):
    campaign = make_campaign(marketer)
    Campaign.objects.filter(pk=campaign.pk).update(
        variables={"headline": "50% off", "limit": 3, "tags": ["a", "b"]}
    )
    client.force_login(marketer)
    page = client.get(url("campaign_change", campaign.pk))
    response = client.post(url("campaign_change", campaign.pk), post_data(page))
    assert response.status_code == 302
    campaign.refresh_from_db()
    assert campaign.variables == {"headline": "50% off", "limit": 3, "tags": ["a", "b"]}


def test_a_locked_campaign_shows_its_variables_and_channels_as_text_not_json(client, marketer):
    campaign = make_campaign(marketer)
    Campaign.objects.filter(pk=campaign.pk).update(status=CampaignStatus.SCHEDULED)
    client.force_login(marketer)
    html = client.get(url("campaign_change", campaign.pk)).content.decode()
    assert "<code>headline</code>: 50% off" in html
    assert "In-app, Email" in html
    assert "{&quot;headline&quot;" not in html and '{"headline"' not in html
    assert "[&quot;inapp&quot;" not in html


# --- Per channel only its parts ----------------------------------------------------------------


def variant_page_data(client, variant):
    page = client.get(reverse("admin:campaigns_stepvariant_change", args=[variant.pk]))
    return page, post_data(page)


def copy_prefix_of(page, channel):
    for inline in page.context["inline_admin_formsets"]:
        for form in inline.formset.forms:
            if form.instance.pk and form.instance.channel == channel:
                return form.prefix
    raise AssertionError(channel)


def test_a_part_the_channel_does_not_send_is_ignored_and_stored_empty(client, marketer):
    campaign = make_campaign(marketer)
    variant = notice_variant(campaign)
    client.force_login(marketer)
    page, data = variant_page_data(client, variant)
    inapp = copy_prefix_of(page, "inapp")
    email = copy_prefix_of(page, "email")
    data.update({f"{inapp}-subject": "No subject in-app", f"{email}-link": "https://x.example"})
    response = client.post(reverse("admin:campaigns_stepvariant_change", args=[variant.pk]), data)
    assert response.status_code == 302
    assert VariantTemplate.objects.get(variant=variant, channel="inapp").subject == ""
    assert VariantTemplate.objects.get(variant=variant, channel="email").link == ""
    # The page tells the script which parts each channel sends.
    assert '"sms": ["body"]' in page.content.decode()


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("Sale starts now", "15 characters (GSM-7): 1 message"),
        ("x" * 161, "161 characters (GSM-7): 2 messages"),
        ("€" * 80, "160 characters (GSM-7): 1 message"),  # € takes two in GSM-7
        ("双十一大促开始了", "8 characters (UCS-2): 1 message"),
        ("促" * 71, "71 characters (UCS-2): 2 messages"),
    ],
)
def test_an_sms_counts_its_characters_and_messages(text, expected):
    assert str(sms_length(text)) == expected


# --- Dates and money in campaign copy ---------------------------------------------------------


def test_campaign_copy_writes_the_event_in_the_customers_locale_and_zone(client, marketer):
    campaign = make_campaign(marketer)
    variant = notice_variant(campaign)
    VariantTemplate.objects.filter(variant=variant, channel="inapp").update(
        body="{{ event_at|localdatetime }} · {{ 88|money('CNY') }} · "
        '{{ user.first_name or "there" }}'
    )
    customer = UserFactory(first_name="", interest_tags=[FANS])  # in the segment
    profile = recipient_for(customer)
    profile.locale, profile.time_zone = "zh-hans", "Asia/Shanghai"
    profile.save()
    client.force_login(marketer)
    _, data = variant_page_data(client, variant)
    data["preview_user"] = str(customer.pk)
    response = client.post(
        reverse("admin:campaigns_stepvariant_live_preview", args=[variant.pk]), data
    )
    html = response.content.decode()
    # EVENT is 12:00 UTC on 11 November 2026, a Wednesday: 20:00 in Shanghai.
    assert "11月11日 星期三 20:00 · ¥88.00 · there" in html


def test_a_bad_date_format_is_refused_when_the_copy_is_saved(client, marketer):
    campaign = make_campaign(marketer)
    variant = notice_variant(campaign)
    client.force_login(marketer)
    page, data = variant_page_data(client, variant)
    inapp = copy_prefix_of(page, "inapp")
    data[f"{inapp}-body"] = '{{ event_at|localdate("%%%") }}'
    response = client.post(reverse("admin:campaigns_stepvariant_change", args=[variant.pk]), data)
    assert response.status_code == 200
    assert "lone % at the end" in response.content.decode()
    data[f"{inapp}-body"] = '{{ event_at|localdate:"%%%" }}'  # Django's way: a syntax error
    response = client.post(reverse("admin:campaigns_stepvariant_change", args=[variant.pk]), data)
    assert response.status_code == 200
    assert "A filter takes its argument in brackets" in response.content.decode()


# --- The live preview ---------------------------------------------------------------------------


def live_preview(client, variant, data):
    return client.post(reverse("admin:campaigns_stepvariant_live_preview", args=[variant.pk]), data)


def test_the_live_preview_renders_the_unsaved_copy(client, marketer):
    campaign = make_campaign(marketer)
    variant = notice_variant(campaign)
    client.force_login(marketer)
    page, data = variant_page_data(client, variant)
    inapp = copy_prefix_of(page, "inapp")
    data[f"{inapp}-title"] = "Not saved yet: {{ headline }}"
    response = live_preview(client, variant, data)
    assert response.status_code == 200
    assert "Not saved yet: 50% off" in response.content.decode()
    assert VariantTemplate.objects.get(variant=variant, channel="inapp").title != (
        "Not saved yet: {{ headline }}"
    )


@pytest.mark.parametrize(
    ("body", "complaint"),
    [
        ("{{ nobody }}", "unknown variable nobody"),
        ("{% if %}", "line 1"),
        ('{{ event_at|localdate("%%%") }}', "lone % at the end"),
        ('{{ headline|money("CNY") }}', "is not one"),
        ("{{ user.__class__ }}", "internal"),
        ("{% for i in range(10**9) %}{{ i }}{% endfor %}", "Cannot render"),
    ],
)
def test_the_live_preview_says_what_is_wrong_inline_never_a_500(client, marketer, body, complaint):
    campaign = make_campaign(marketer)
    variant = notice_variant(campaign)
    client.force_login(marketer)
    page, data = variant_page_data(client, variant)
    data[f"{copy_prefix_of(page, 'inapp')}-body"] = body
    response = live_preview(client, variant, data)
    assert response.status_code == 200
    html = response.content.decode()
    assert "Cannot render" in html and complaint in html


def test_the_live_preview_names_a_customer_it_cannot_find_and_shows_a_sample(client, marketer):
    campaign = make_campaign(marketer)
    variant = notice_variant(campaign)
    client.force_login(marketer)
    _, data = variant_page_data(client, variant)
    data["preview_user"] = "999999"
    response = live_preview(client, variant, data)
    assert response.status_code == 200
    assert "Nobody in this campaign" in response.content.decode()
    assert live_preview(client, variant, {}).status_code == 200  # nothing posted: no 500


def test_support_previews_the_saved_copy_and_cannot_use_get(client, marketer, support):
    campaign = make_campaign(marketer)
    variant = notice_variant(campaign)
    client.force_login(support)
    response = live_preview(client, variant, {"templates-TOTAL_FORMS": "1"})
    assert response.status_code == 200
    assert "Double 11: 50% off" in response.content.decode()
    got = client.get(reverse("admin:campaigns_stepvariant_live_preview", args=[variant.pk]))
    assert got.status_code == 405


# --- Seed list and test sends -------------------------------------------------------------------


def test_the_seed_list_takes_staff_and_refuses_customers_in_the_same_words_as_nobody(
    client, marketer
):
    campaign = make_campaign(marketer)
    colleague = staff_member("Marketer", "colleague")
    recipient_for(colleague).email  # noqa: B018 (made)
    customer = UserFactory(email="customer@example.com")
    client.force_login(marketer)
    page = client.get(url("campaign_change", campaign.pk))
    for entry in [customer.email, "nobody@example.com"]:
        response = client.post(
            url("campaign_change", campaign.pk), post_data(page, seed_list=entry)
        )
        assert response.status_code == 200
        errors = response.context["adminform"].form.errors["seed_list"]
        assert errors == [f"“{entry}”: no staff member has it."]
    response = client.post(
        url("campaign_change", campaign.pk),
        post_data(page, seed_list=f"{colleague.pk}\n{recipient_for(marketer).email}\n"),
    )
    assert response.status_code == 302
    campaign.refresh_from_db()
    assert campaign.seed_list.split() == [str(colleague.pk), recipient_for(marketer).email]


def test_send_test_to_seed_list_marks_it_and_keeps_it_out_of_the_funnel(
    client, marketer, published, django_capture_on_commit_callbacks
):
    campaign = make_campaign(marketer)
    colleague = staff_member("Marketer", "colleague")
    Campaign.objects.filter(pk=campaign.pk).update(seed_list=f"{colleague.pk}\n{marketer.pk}")
    variant = notice_variant(campaign)
    client.force_login(marketer)
    with django_capture_on_commit_callbacks(execute=True):
        response = client.post(
            url("campaign_test", campaign.pk), {"variant": variant.pk, "to": "seeds"}
        )
    assert response.status_code == 302
    assert "sent to 2 seed(s)" in flash(response)[0] and "[Test]" in flash(response)[0]
    sent = list(Message.objects.filter(campaign=campaign).order_by("user_id"))
    assert {m.user_id for m in sent} == {marketer.pk, colleague.pk}
    assert all(m.is_test and m.variant_id == variant.pk for m in sent)
    with django_capture_on_commit_callbacks(execute=True):
        messages_prepare(message_ids=[m.pk for m in sent])
    deliveries_deliver(delivery_ids=published.delivered_ids())
    titles = sorted(InboxItem.objects.filter(message__in=sent).values_list("title", flat=True))
    assert titles == ["[Test] Double 11: 50% off"] * 2
    emails = Delivery.objects.filter(message__in=sent, channel="email")
    assert [d.content["subject"] for d in emails] == ["[Test] 50% off"] * 2
    # Recorded on the campaign's history, and not counted in its funnel.
    from django.contrib.admin.models import LogEntry

    assert LogEntry.objects.filter(
        object_id=str(campaign.pk), change_message__contains="seed list"
    ).exists()
    stats_rollup(campaign_ids=[campaign.pk])
    row = campaign.stats.filter(scope=CAMPAIGN_SCOPE).first()
    assert row is None or row.data["recipients"]["targeted"] == 0


def test_a_test_send_form_submitted_twice_sends_once_and_the_other_button_is_another_click(
    client, marketer, published
):
    """The preview page names each click (a hidden UUID): a double click on "Send test to seed
    list" sends once per seed, and "Send test to me" on the same page is a click of its own."""
    campaign = make_campaign(marketer)
    colleague = staff_member("Marketer", "colleague")
    Campaign.objects.filter(pk=campaign.pk).update(seed_list=f"{colleague.pk}\n{marketer.pk}")
    variant = notice_variant(campaign)
    client.force_login(marketer)
    page = client.get(url("campaign_preview", campaign.pk)).content.decode()
    (click,) = set(re.findall(r'name="click" value="([0-9a-f-]{36})"', page))
    form = {"variant": variant.pk, "click": click}
    for _ in range(2):
        client.post(url("campaign_test", campaign.pk), {**form, "to": "seeds"})
    assert sorted(
        Message.objects.filter(campaign=campaign).values_list("user_id", flat=True)
    ) == sorted([marketer.pk, colleague.pk])
    for _ in range(2):
        client.post(url("campaign_test", campaign.pk), form)
    assert Message.objects.filter(campaign=campaign, user=marketer).count() == 2
    # A post without a click (or with a bad one) is a click of its own each time.
    client.post(url("campaign_test", campaign.pk), {**form, "click": "not-a-uuid"})
    assert Message.objects.filter(campaign=campaign, user=marketer).count() == 3


def test_an_empty_seed_list_sends_nothing_and_says_so(client, marketer, published):
    campaign = make_campaign(marketer)
    client.force_login(marketer)
    response = client.post(
        url("campaign_test", campaign.pk), {"variant": notice_variant(campaign).pk, "to": "seeds"}
    )
    assert "seed list is empty" in flash(response)[0]
    assert not Message.objects.exists()


def test_a_test_is_marked_on_its_subject_or_title_or_an_sms_body():
    assert marked_as_test(Content(subject="Sale", body="b")).subject == "[Test] Sale"
    assert marked_as_test(Content(title="Sale", body="b")) == Content(title="[Test] Sale", body="b")
    assert marked_as_test(Content(body="Sale")).body == "[Test] Sale"
    twice = marked_as_test(marked_as_test(Content(subject="Sale", body="b")))
    assert twice.subject == "[Test] Sale"


# --- The plan that fits the dates --------------------------------------------------------------


@pytest.mark.parametrize(
    ("offset", "timing", "local", "expected"),
    [
        (-4320, Timing.OFFSET, None, "3 days before"),
        (-60, Timing.OFFSET, None, "1 hour before"),
        (-3600, Timing.OFFSET, None, "2 days 12 hours before"),
        (0, Timing.OFFSET, None, "at the event"),
        (-1440, Timing.LOCAL_TIME, time(20, 0), "at 20:00 the day before"),
        (-2880, Timing.LOCAL_TIME, time(9, 30), "at 09:30 2 days before"),
        (0, Timing.LOCAL_TIME, time(10, 0), "at 10:00 on the event's day"),
        (1440, Timing.ACTIVE_HOUR, None, "at each customer's usual hour, the day after"),
    ],
)
def test_a_step_reads_as_a_marketer_says_it(offset, timing, local, expected):
    assert step_reading(StepPlan(offset, timing, local)) == expected


def test_a_step_already_past_is_offered_to_be_dropped_in_one_click(client, marketer):
    campaign = make_campaign(marketer)
    # The event is two days away: the notice (3 days before) would have gone out yesterday.
    Campaign.objects.filter(pk=campaign.pk).update(event_at=NOW + timedelta(days=2))
    client.force_login(marketer)
    html = client.get(url("campaign_change", campaign.pk)).content.decode()
    assert "Step “Notice” (3 days before) would have gone out on" in html
    assert "already past" in html and 'value="Drop it"' in html
    assert "Reminder” (2 days before) would" not in html
    notice = CampaignStep.objects.get(campaign=campaign, name="Notice")
    reminder = CampaignStep.objects.get(campaign=campaign, name="Reminder")

    refused = client.post(url("campaign_drop_step", campaign.pk, reminder.pk))
    assert "cannot be dropped" in flash(refused)[0]
    response = client.post(url("campaign_drop_step", campaign.pk, notice.pk))
    assert response["Location"] == url("campaign_change", campaign.pk)
    assert "Dropped step “Notice” (3 days before)." in flash(response)
    assert list(campaign.steps.values_list("name", flat=True).order_by("offset_minutes")) == [
        "Reminder",
        "Last call",
    ]
    assert client.get(url("campaign_drop_step", campaign.pk, reminder.pk)).status_code == 405


def test_the_steps_read_in_words_with_short_timing_choices(client, marketer):
    campaign = make_campaign(marketer)
    client.force_login(marketer)
    html = client.get(url("campaign_change", campaign.pk)).content.decode()
    assert 'value="3 days before"' in html and 'value="1 hour before"' in html
    assert "That day, at a local time" in html
    assert "On the offset&#x27;s day" not in html


def test_re_entry_shows_only_on_triggered_campaigns_and_series_stop_only_on_one_offs(
    client, marketer
):
    one_off = make_campaign(marketer)
    triggered = make_campaign(marketer, name="Welcome")
    Campaign.objects.filter(pk=triggered.pk).update(kind=CampaignKind.TRIGGERED)
    client.force_login(marketer)
    fields = client.get(url("campaign_change", one_off.pk)).context["adminform"].form.fields
    assert "stop_series_on" in fields and "reentry_days" not in fields
    fields = client.get(url("campaign_change", triggered.pk)).context["adminform"].form.fields
    assert "reentry_days" in fields and "stop_series_on" not in fields


# --- Fewer clicks: every step's copy on one page, and save-and-submit -------------------------


def write_data(page, **parts: str) -> dict[str, str]:
    data = {"csrfmiddlewaretoken": "x"}
    for step in page.context["steps"]:
        for _, boxes in step.variants:
            for _, form in boxes:
                for field in form:
                    data[field.html_name] = parts.get(field.name, "")
    return data


def test_every_steps_copy_is_written_on_one_page_and_submitted_in_one_click(client, marketer):
    campaign = make_campaign(marketer, with_copy=False)
    client.force_login(marketer)
    page = client.get(url("campaign_write", campaign.pk))
    assert page.status_code == 200
    assert [step.step.name for step in page.context["steps"]] == ["Notice", "Reminder", "Last call"]
    boxes = page.context["steps"][0].variants[0][1]
    assert [(label, list(form.fields)) for label, form in boxes] == [
        ("In-app", ["title", "body", "link"]),
        ("Email", ["subject", "body", "html"]),
    ]
    data = write_data(
        page, title="{{ headline }}", subject="{{ headline }}", body="Hi {{ user.first_name }}"
    )
    response = client.post(url("campaign_write", campaign.pk), {**data, "_submit": "1"})
    assert response["Location"] == url("campaign_change", campaign.pk)
    campaign.refresh_from_db()
    assert campaign.status == CampaignStatus.AWAITING_APPROVAL, flash(response)
    assert VariantTemplate.objects.filter(variant__step__campaign=campaign).count() == 6


def test_copy_with_a_mistake_saves_nothing_and_says_where(client, marketer):
    campaign = make_campaign(marketer, with_copy=False)
    client.force_login(marketer)
    page = client.get(url("campaign_write", campaign.pk))
    data = write_data(page, title="{{ nobody }}", subject="x", body="y")
    response = client.post(url("campaign_write", campaign.pk), {**data, "_submit": "1"})
    assert response.status_code == 200
    assert "Unknown variable nobody" in response.content.decode()
    assert not VariantTemplate.objects.filter(variant__step__campaign=campaign).exists()
    assert Campaign.objects.get(pk=campaign.pk).status == CampaignStatus.DRAFT


def test_submitting_with_copy_missing_saves_it_and_says_what_is_missing(client, marketer):
    campaign = make_campaign(marketer, with_copy=False)
    client.force_login(marketer)
    page = client.get(url("campaign_write", campaign.pk))
    response = client.post(
        url("campaign_write", campaign.pk), {**write_data(page, title="t"), "_submit": "1"}
    )
    assert "Not submitted" in flash(response)[0]
    assert Campaign.objects.get(pk=campaign.pk).status == CampaignStatus.DRAFT


def test_save_and_submit_on_the_campaign_page(client, marketer):
    campaign = make_campaign(marketer)
    client.force_login(marketer)
    page = client.get(url("campaign_change", campaign.pk))
    assert 'name="_saveandsubmit"' in page.content.decode()
    response = client.post(url("campaign_change", campaign.pk), post_data(page, _saveandsubmit="1"))
    assert response["Location"] == url("campaign_change", campaign.pk)
    assert Campaign.objects.get(pk=campaign.pk).status == CampaignStatus.AWAITING_APPROVAL


def test_a_new_segment_leads_straight_to_a_new_campaign_for_it(client, marketer):
    client.force_login(marketer)
    response = client.post(
        reverse("admin:campaigns_segment_add"), {"name": "Card fans", "_campaign": "1"}
    )
    segment = Segment.objects.get(name="Card fans")
    assert response["Location"] == url("campaign_add") + f"?segment={segment.pk}"
    page = client.get(response["Location"])
    assert page.context["adminform"].form.initial["segment"] == str(segment.pk)


def test_an_event_time_in_the_new_campaigns_address_is_read_or_left_out(client, marketer):
    """?event_at= in the address (as ?segment= is): a time it reads fills the box, anything
    else leaves it empty; never a 500 from the split date/time widget given text."""
    client.force_login(marketer)
    for value in ["garbage", "\x00", "2026-13-45 99:00", "9" * 300]:
        page = client.get(url("campaign_add"), {"event_at": value})
        assert page.status_code == 200, value
        assert "event_at" not in page.context["adminform"].form.initial
    page = client.get(url("campaign_add"), {"event_at": "2026-12-07 20:00"})
    assert page.status_code == 200
    initial = page.context["adminform"].form.initial["event_at"]
    assert (initial.date(), initial.hour, initial.minute) == (date(2026, 12, 7), 20, 0)


def test_support_cannot_write_copy_or_drop_steps(client, marketer, support):
    campaign = make_campaign(marketer)
    step = campaign.steps.first()
    client.force_login(support)
    assert client.get(url("campaign_write", campaign.pk)).status_code == 403
    assert client.post(url("campaign_drop_step", campaign.pk, step.pk)).status_code == 403
    assert CampaignStep.objects.filter(pk=step.pk).exists()


def test_event_time_is_the_same_instant_everywhere():
    assert datetime(2026, 11, 11, 12, 0, tzinfo=UTC) == EVENT


def test_the_live_preview_says_a_channel_has_no_copy_yet(client, marketer):
    campaign = make_campaign(marketer, with_copy=False)
    variant = notice_variant(campaign)
    client.force_login(marketer)
    _, data = variant_page_data(client, variant)  # two empty forms, one per channel
    html = live_preview(client, variant, data).content.decode()
    assert html.count("Cannot render: no copy for this channel yet") == 2


def test_a_seed_list_naming_customers_is_shown_masked_to_a_marketer_and_kept(
    client, marketer, published
):
    """Someone who may see contact details (an Admin) put customers on the seed list: a marketer
    sees it masked and read-only (not the addresses as typed), their save keeps it as it is, and
    a test to it is refused in words that do not quote the addresses either."""
    campaign = make_campaign(marketer)
    customer = UserFactory(email="customer.one@example.com", phone="+8613800138000")
    typed = f"{customer.email}\n+8613800138000\n{customer.pk}"
    Campaign.objects.filter(pk=campaign.pk).update(seed_list=typed)
    client.force_login(marketer)
    page = client.get(url("campaign_change", campaign.pk))
    html = page.content.decode()
    for secret in ("customer.one@example.com", "+8613800138000", "13800138000"):
        assert secret not in html, secret
    assert "c***********@example.com" in html and "+86*******8000" in html
    response = client.post(
        url("campaign_change", campaign.pk), post_data(page, seed_list="", name="Renamed")
    )
    assert response.status_code == 302
    campaign.refresh_from_db()
    assert (campaign.name, campaign.seed_list) == ("Renamed", typed)
    response = client.post(
        url("campaign_test", campaign.pk), {"variant": notice_variant(campaign).pk, "to": "seeds"}
    )
    said = " ".join(flash(response))
    assert "no staff member has it" in said
    for secret in ("customer.one@example.com", "+8613800138000", "13800138000"):
        assert secret not in said, secret
    assert not Message.objects.exists()
