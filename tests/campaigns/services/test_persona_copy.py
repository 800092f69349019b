"""Persona copy (issue 11, item 14): campaign copy sees the customer's segment attributes, a
variant's copy can be written per spend tier or activity state and is chosen per customer at
render time (after the locale, before the copy for everyone), copy is checked against what
`user` holds, approval covers persona copy and the thresholds it follows, and the preview
shows each persona's copy."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from decimal import Decimal

import pytest
import time_machine

from campaigns.models import (
    AudienceThresholds,
    Campaign,
    CampaignStatus,
    SpendTier,
    VariantTemplate,
)
from campaigns.personas import persona_of, persona_problem
from campaigns.rendering import (
    SPEND_TIERS,
    allowed_variables,
    copy_key,
    copy_problems,
    template_problems,
)
from campaigns.services.definitions import approval_changes
from campaigns.services.lifecycle import (
    campaign_approve,
    campaign_submit,
    campaigns_recheck,
    variant_copy,
    variant_problems,
)
from campaigns.services.previews import variant_preview
from channels.base import Channel, Content
from notifier.models import Delivery
from tests.campaigns.services.test_campaign_flow import NOW, audience, make_campaign, start_step
from tests.campaigns.test_campaign_admin import field_errors, person, post_data, url
from tests.campaigns.test_copy_checks import add_copy_form

pytestmark = pytest.mark.django_db

LINK = "https://shop.example.com/sale"
THRESHOLDS = AudienceThresholds(
    whale_min_spend=Decimal("5000"),
    dolphin_min_spend=Decimal("500"),
    active_within_days=30,
    dormant_within_days=90,
)
AT = datetime(2026, 11, 8, 12, 0, tzinfo=UTC)


@pytest.fixture
def marketer(roles):
    return person("Marketer", "marketer")


@pytest.fixture
def lead(roles):
    return person("Marketing lead", "lead")


def persona(**fields):
    values = {
        "yearly_spend": Decimal("0"),
        "last_active_at": None,
        "interest_tags": [],
        "points_balance": 0,
        "points_expire_at": None,
        "time_zone": "UTC",
        "thresholds": THRESHOLDS,
        "points_days": 30,
        "now": AT,
    }
    return persona_of(**{**values, **fields})


# --- Pure: personas and which copy ------------------------------------------------------------


@pytest.mark.parametrize(
    ("spend", "tier"),
    [("5000.01", "whale"), ("5000", "dolphin"), ("500", "dolphin"), ("499.99", "small_fish")],
)
def test_the_spend_tier_uses_the_segments_edges(spend, tier):
    assert persona(yearly_spend=Decimal(spend)).spend_tier == tier


@pytest.mark.parametrize(
    ("days_ago", "state"), [(1, "active"), (30, "active"), (31, "dormant"), (91, "churned")]
)
def test_activity_uses_the_segments_edges(days_ago, state):
    assert persona(last_active_at=AT - timedelta(days=days_ago)).activity == state
    assert persona(last_active_at=None).activity == "churned"


def test_points_expiring_counts_a_live_balance_within_the_window_in_the_users_day():
    soon = datetime(2026, 11, 19, 20, 0, tzinfo=UTC)  # 20 Nov, 04:00 in Shanghai
    shanghai = persona(
        points_balance=1200, points_expire_at=soon, time_zone="Asia/Shanghai", points_days=30
    )
    assert (shanghai.points, shanghai.points_expiring, shanghai.points_expire_on) == (
        1200,
        1200,
        "2026-11-20",
    )
    later = persona(points_balance=1200, points_expire_at=soon, points_days=7)
    assert (later.points, later.points_expiring, later.points_expire_on) == (
        1200,
        0,
        "2026-11-19",
    )
    lapsed = persona(points_balance=1200, points_expire_at=AT - timedelta(hours=1))
    assert (lapsed.points_expiring, lapsed.points_expire_on) == (0, "")


def test_interests_are_strings_whatever_the_product_stored():
    assert persona(interest_tags=["games", 3, "films"]).interests == ("games", "films")
    assert persona(interest_tags={"games": 1}).interests == ("games",)
    assert persona(interest_tags="games").interests == ()


def test_the_spend_tiers_copy_knows_are_the_models():
    assert frozenset(SpendTier.values) == SPEND_TIERS


def test_the_locale_comes_first_then_the_persona_then_everyone():
    written = {
        ("email", "", ""),
        ("email", "", "whale"),
        ("email", "zh-hans", ""),
        ("inapp", "", "dormant"),
    }
    whale = ("whale", "active")
    assert copy_key(written, "email", "en", whale) == ("email", "", "whale")
    assert copy_key(written, "email", "en", ("dolphin", "active")) == ("email", "", "")
    # A Chinese whale reads Chinese: the persona never takes a customer out of their language.
    assert copy_key(written, "email", "zh-hans-cn", whale) == ("email", "zh-hans", "")
    assert copy_key(written, "inapp", "en", ("whale", "dormant")) == ("inapp", "", "dormant")
    assert copy_key(written, "inapp", "en", whale) is None


def test_one_variant_uses_spend_tiers_or_activity_states_not_both():
    assert persona_problem({"", "whale", "dolphin"}) is None
    assert persona_problem({"", "dormant"}) is None
    assert "choose one of the two" in (persona_problem({"whale", "dormant"}) or "")
    assert "no persona 'vip'" in (persona_problem({"vip"}) or "")


# --- Copy checks --------------------------------------------------------------------------------


def test_copy_may_read_the_segment_attributes_and_nothing_else_of_user():
    allowed = allowed_variables({"headline": ""})
    readable = (
        "{{ user.spend_tier }} {{ user.activity }} {{ user.interests|join(', ') }} "
        "{{ user.points }} {{ user.points_expiring }} {{ user.points_expire_on }}"
    )
    assert template_problems(readable, allowed=allowed) == []
    for name in ("email", "phone", "username", "yearly_spend", "tier"):
        [problem] = template_problems(f"{{{{ user.{name} }}}}", allowed=allowed)
        assert problem.startswith(f"line 1: user has no '{name}'; it has activity, first_name")
    [problem] = template_problems("{{ user['email'] }}", allowed=allowed)
    assert "user has no 'email'" in problem


def test_persona_copy_needs_every_part_and_one_kind_of_persona(marketer):
    with time_machine.travel(NOW):
        campaign = make_campaign(marketer)
    variant = campaign.steps.get(name="Notice").variants.get()
    VariantTemplate.objects.create(variant=variant, channel="email", persona="whale", body="x")
    VariantTemplate.objects.create(
        variant=variant, channel="inapp", persona="whale", title="t", body="{{ user.bogus }}"
    )
    channels = [Channel.INAPP, Channel.EMAIL]
    allowed = allowed_variables(campaign.variables)
    problems = variant_problems(variant_copy(variant), channels, allowed, campaign.variables)
    assert "email (spend tier whale): the subject is empty" in problems
    assert any(
        p.startswith("inapp (spend tier whale) body: line 1: user has no 'bogus'") for p in problems
    )
    VariantTemplate.objects.create(
        variant=variant, channel="inapp", persona="dormant", title="t", body="b"
    )
    problems = variant_problems(variant_copy(variant), channels, allowed, campaign.variables)
    assert any("choose one of the two" in p for p in problems)


def test_persona_copy_is_tried_as_that_persona(marketer):
    """Copy whose cost depends on the tier is tried with the tier it is written for."""
    heavy = (
        "{% if user.spend_tier == 'whale' %}{% for i in range(3000) %}{% for j in range(3) %}"
        "{{ j }}{% endfor %}{% endfor %}{% endif %}"
    )
    allowed = allowed_variables({})
    assert template_problems(heavy, allowed=allowed) == []
    found = copy_problems({"body": heavy}, allowed=allowed, persona="whale")
    assert "more than 5,000 steps" in found["body"][0]


# --- Rendering in the pipeline -------------------------------------------------------------------


def test_each_persona_gets_its_own_copy_and_the_others_fall_back(marketer, lead, published):
    whale = audience(
        1,
        yearly_spend=Decimal("8000"),
        last_active_at=NOW,
        points_balance=1200,
        points_expire_at=datetime(2026, 11, 19, 20, 0, tzinfo=UTC),
        time_zone="Asia/Shanghai",
    )[0]
    fish = audience(1, yearly_spend=Decimal("120"), last_active_at=NOW - timedelta(days=60))[0]
    chinese_whale = audience(1, yearly_spend=Decimal("9000"), locale="zh-hans")[0]
    with time_machine.travel(NOW):
        campaign = make_campaign(marketer)
        variant = campaign.steps.get(name="Notice").variants.get()
        VariantTemplate.objects.create(
            variant=variant,
            channel="inapp",
            persona="whale",
            title="VIP {{ headline }}",
            body="{{ user.points_expiring }} points expire on {{ user.points_expire_on }}",
            link=LINK,
        )
        VariantTemplate.objects.create(
            variant=variant, channel="inapp", locale="zh-hans", title="{{ headline }}!", body="你好"
        )
        VariantTemplate.objects.filter(variant=variant, channel="email", persona="").update(
            body="{{ user.spend_tier }}/{{ user.activity }}/{{ user.interests|join(',') }}/"
            "{{ user.points }}\n{{ unsubscribe_url }}"
        )
        campaign_submit(campaign=campaign, by=marketer)
        campaign_approve(campaign=campaign, by=lead)
    start_step(campaign, "Notice", published)

    def content(user, channel):
        return Delivery.objects.get(
            message__campaign=campaign, message__user=user, channel=channel
        ).content

    assert content(whale, "inapp")["title"] == "VIP 50% off"
    assert content(whale, "inapp")["body"] == "1200 points expire on 2026-11-20"
    assert content(fish, "inapp")["title"] == "Double 11: 50% off"  # the copy for everyone
    assert content(chinese_whale, "inapp")["title"] == "50% off!"  # the locale first
    # No whale email: the whale gets everyone's email, which reads the segment attributes.
    assert content(whale, "email")["body"].startswith("whale/active/sale-fans/1200\n")
    assert content(fish, "email")["body"].startswith("small_fish/dormant/sale-fans/0\n")


def test_the_tiers_follow_the_thresholds_at_send_time(marketer, lead, published):
    dolphin = audience(1, yearly_spend=Decimal("3000"))[0]
    with time_machine.travel(NOW):
        campaign = make_campaign(marketer)
        variant = campaign.steps.get(name="Notice").variants.get()
        VariantTemplate.objects.create(
            variant=variant, channel="inapp", persona="whale", title="VIP", body="b", link=LINK
        )
        campaign_submit(campaign=campaign, by=marketer)
        AudienceThresholds.objects.update_or_create(pk=1, defaults={"whale_min_spend": 2000})
        campaign_approve(campaign=campaign, by=lead)
    start_step(campaign, "Notice", published)
    inapp = Delivery.objects.get(message__campaign=campaign, message__user=dolphin, channel="inapp")
    assert inapp.content["title"] == "VIP"


# --- Approval ------------------------------------------------------------------------------------


def approved(marketer, lead, **persona_copy) -> Campaign:
    with time_machine.travel(NOW):
        campaign = make_campaign(marketer)
        variant = campaign.steps.get(name="Notice").variants.get()
        for persona_key, title in persona_copy.items():
            VariantTemplate.objects.create(
                variant=variant, channel="inapp", persona=persona_key, title=title, body="b"
            )
        campaign_submit(campaign=campaign, by=marketer)
        campaign_approve(campaign=campaign, by=lead)
    campaign.refresh_from_db()
    assert campaign.status == CampaignStatus.SCHEDULED
    return campaign


def test_persona_copy_changed_after_approval_sends_the_campaign_back(marketer, lead):
    campaign = approved(marketer, lead)
    variant = campaign.steps.get(name="Notice").variants.get()
    VariantTemplate.objects.create(
        variant=variant, channel="inapp", persona="whale", title="VIP only", body="b"
    )
    texts = [change.text for change in approval_changes(Campaign.objects.get(pk=campaign.pk))]
    assert texts == [
        "Step “Notice” variant A inapp (for spend tier whale) title: (empty) → “VIP only”",
        "Step “Notice” variant A inapp (for spend tier whale) body: (empty) → “b”",
    ]
    [sent] = campaigns_recheck()
    assert sent.campaign.pk == campaign.pk
    assert Campaign.objects.get(pk=campaign.pk).status == CampaignStatus.AWAITING_APPROVAL
    assert "its copy changed" in Campaign.objects.get(pk=campaign.pk).review_reason


def test_the_thresholds_persona_copy_follows_are_covered_by_its_approval(marketer, lead):
    """The segment has no tier rule, but the copy is written per tier: a new whale line changes
    who reads which copy, so the campaign goes back for approval."""
    campaign = approved(marketer, lead, whale="VIP")
    untouched = approved(marketer, lead)
    AudienceThresholds.objects.update_or_create(pk=1, defaults={"whale_min_spend": 2000})
    sent = campaigns_recheck()
    assert [s.campaign.pk for s in sent] == [campaign.pk]
    assert "the audience thresholds changed" in Campaign.objects.get(pk=campaign.pk).review_reason
    assert Campaign.objects.get(pk=untouched.pk).status == CampaignStatus.SCHEDULED


# --- Preview -------------------------------------------------------------------------------------


def test_the_preview_shows_the_users_persona_copy_and_each_personas(marketer):
    with time_machine.travel(NOW):
        campaign = make_campaign(marketer)
    variant = campaign.steps.get(name="Notice").variants.get()
    VariantTemplate.objects.create(
        variant=variant,
        channel="inapp",
        persona="whale",
        title="VIP {{ user.spend_tier }}",
        body="b",
    )
    fish = audience(1, yearly_spend=Decimal("10"), first_name="Mei")[0]
    whale = audience(1, yearly_spend=Decimal("9000"), first_name="Li")[0]
    own = variant_preview(variant=variant, user=fish, channel=Channel.INAPP)
    assert isinstance(own, Content) and own.title == "Double 11: 50% off"
    as_whale = variant_preview(variant=variant, user=fish, channel=Channel.INAPP, persona="whale")
    assert isinstance(as_whale, Content) and as_whale.title == "VIP whale"
    theirs = variant_preview(variant=variant, user=whale, channel=Channel.INAPP)
    assert isinstance(theirs, Content) and theirs.title == "VIP whale"


def test_the_preview_page_has_a_section_per_persona(client, marketer):
    with time_machine.travel(NOW):
        campaign = make_campaign(marketer)
    variant = campaign.steps.get(name="Notice").variants.get()
    for key, title in {"whale": "For whales", "small_fish": "For small fish"}.items():
        VariantTemplate.objects.create(
            variant=variant, channel="inapp", persona=key, title=title, body="b"
        )
    sample = audience(1, yearly_spend=Decimal("900"), first_name="Mei")[0]
    client.force_login(marketer)
    page = client.get(url("campaign_preview", campaign.pk), {"user": str(sample.pk)})
    page = page.content.decode()
    assert "spend tier dolphin · activity churned · 0 points" in page
    whale = page.index(f'id="variant-{variant.pk}-persona-whale"')
    fish = page.index(f'id="variant-{variant.pk}-persona-small_fish"')
    assert "Copy for spend tier whale" in page[whale:fish]
    assert 'class="part-title">For whales<' in page[whale:fish]
    assert 'class="part-title">For small fish<' in page[fish:]
    # The dolphin shown gets the copy for everyone.
    assert page.count('class="part-title">Double 11: 50% off<') == 3


# --- The admin's copy form -------------------------------------------------------------------


def test_a_marketer_writes_copy_for_a_persona_on_the_variant_page(client, marketer):
    with time_machine.travel(NOW):
        campaign = make_campaign(marketer)
    variant = campaign.steps.get(name="Notice").variants.get()
    client.force_login(marketer)
    page = client.get(url("stepvariant_change", variant.pk))
    assert 'name="templates-0-persona"' in page.content.decode()

    data = post_data(page)
    spying = add_copy_form(
        page, data, channel="inapp", persona="whale", title="VIP", body="{{ user.email }}"
    )
    response = client.post(url("stepvariant_change", variant.pk), data)
    assert field_errors(response, spying, "body")[0].startswith("Line 1: user has no 'email'")

    data = post_data(page)
    add_copy_form(page, data, channel="inapp", persona="whale", title="VIP", body="Hi")
    mixed = add_copy_form(page, data, channel="inapp", persona="dormant", title="Back?", body="Hi")
    response = client.post(url("stepvariant_change", variant.pk), data)
    assert field_errors(response, mixed, "persona") == [
        "Its copy is written per spend tier and per activity state: choose one of the two for "
        "this variant (another variant or step can use the other)."
    ]
    assert not VariantTemplate.objects.filter(variant=variant).exclude(persona="").exists()

    data = post_data(page)
    add_copy_form(
        page, data, channel="inapp", persona="whale", title="VIP", body="{{ user.points }}"
    )
    response = client.post(url("stepvariant_change", variant.pk), data)
    assert response.status_code == 302
    saved = VariantTemplate.objects.get(variant=variant, persona="whale")
    assert (saved.channel, saved.locale, saved.body) == ("inapp", "", "{{ user.points }}")
