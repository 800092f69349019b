"""The marketer's admin in a real browser: what only JavaScript and the rendered page can show.

The live count on the segment page is counted from the form as it is edited (before saving);
the campaign page lays out the 3-2-1 plan a marketer edits; Support sees the same campaign with
nothing to press; the funnel page draws its charts.
"""

from __future__ import annotations

import importlib
from datetime import timedelta
from decimal import Decimal

import pytest
from django.apps import apps
from django.utils import timezone

from campaigns.models import Activity, Segment
from campaigns.services.lifecycle import campaign_create
from campaigns.services.segments import segment_users
from notifier.models import NotificationType, User
from tests.factories import UserFactory, staff_member

pytestmark = [pytest.mark.browser, pytest.mark.django_db(transaction=True)]
ROLES = importlib.import_module("campaigns.migrations.0003_marketing_roles")


@pytest.fixture
def people() -> dict[str, User]:
    """A Marketer and a Support agent, in the groups the migration makes (a transactional
    test's flush removed them, so they are made again)."""
    ROLES.create_roles(apps, None)
    found = {}
    for group in ["Marketer", "Support"]:
        found[group] = staff_member(group)
    return found


def customers() -> None:
    """Whales: three active, two churned; and a small fish who is active."""
    now = timezone.now()
    for days in [1, 5, 20, 200, 400]:
        UserFactory(yearly_spend=Decimal("9000"), last_active_at=now - timedelta(days=days))
    UserFactory(yearly_spend=Decimal("10"), last_active_at=now - timedelta(days=1))


def test_the_live_count_follows_the_form_before_it_is_saved(log_in, people):
    customers()
    segment = Segment.objects.create(
        name="Active whales", spend_tiers=["whale"], activity=[Activity.ACTIVE]
    )
    page = log_in(people["Marketer"])
    page.goto(f"/admin/campaigns/segment/{segment.pk}/change/")
    assert page.inner_text("#audience-count") == "3"

    page.check("input[name=activity][value=churned]")
    page.click("#audience-refresh")

    page.wait_for_function(
        "document.getElementById('audience-note').textContent.includes('not saved yet')"
    )
    assert page.inner_text("#audience-count") == "5"
    # Counted from the form only: the saved rule is unchanged until Save.
    segment.refresh_from_db()
    assert segment.activity == [Activity.ACTIVE]
    assert segment_users(segment).count() == 3

    page.click("input[name=_continue]")
    page.wait_for_selector(".messagelist .success")
    segment.refresh_from_db()
    assert sorted(segment.activity) == sorted([Activity.ACTIVE, Activity.CHURNED])
    assert page.inner_text("#audience-count") == "5"


def test_a_bad_rule_in_the_form_is_named_by_the_live_count(log_in, people):
    segment = Segment.objects.create(name="Anyone in a zone")
    page = log_in(people["Marketer"])
    page.goto(f"/admin/campaigns/segment/{segment.pk}/change/")

    page.fill("input[name=time_zones]", "Mars/Olympus_Mons")
    page.click("#audience-refresh")

    page.wait_for_function("document.getElementById('audience-count').textContent === '?'")
    assert "Mars/Olympus_Mons" in page.inner_text("#audience-note")


def campaign_for(marketer: User):
    return campaign_create(
        name="Winter card fair",
        category=NotificationType.objects.get(pk="promo.flash_sale"),
        created_by=marketer,
        segment=Segment.objects.create(name="Fans", tags_any=["cards"]),
        event_at=timezone.now() + timedelta(days=10),
        channels=["inapp", "email"],
        variables={"headline": "25% off"},
    )


def test_the_campaign_page_shows_the_3_2_1_plan_in_days_and_hours(log_in, people):
    campaign = campaign_for(people["Marketer"])
    page = log_in(people["Marketer"])
    page.goto(f"/admin/campaigns/campaign/{campaign.pk}/change/")

    whens = page.locator("#steps-group tr.has_original input[name$='-when']")
    assert [whens.nth(i).input_value() for i in range(whens.count())] == [
        "3 days before",
        "2 days before",
        "1 hour before",
    ]
    assert page.locator("#action-submit").is_visible()
    assert page.locator("input[name=_save]").is_visible()


def test_support_sees_a_campaign_with_nothing_to_press(log_in, people):
    campaign = campaign_for(people["Marketer"])
    page = log_in(people["Support"])
    page.goto(f"/admin/campaigns/campaign/{campaign.pk}/change/")

    assert "Winter card fair" in page.inner_text("#content")
    # (The header's log-out button is the only form button on the page.)
    assert page.locator("#content input[type=submit], #content button[type=submit]").count() == 0
    assert page.locator("#action-submit, #action-approve, #action-pause").count() == 0
    assert page.locator("#steps-group input[name$='-when']").count() == 0
