"""The reach forecast in a real browser: a marketer opens a campaign and reads, per step, who is
not reached and why (in the support timeline's words) and how long the send takes; the segment
page names a tag nobody has while the rules are still being typed."""

from __future__ import annotations

import importlib
from datetime import UTC, datetime, timedelta

import pytest
from django.apps import apps
from django.utils import timezone

from campaigns.models import Campaign, Segment, VariantTemplate
from campaigns.services.lifecycle import campaign_create
from notifier.models import Consent, NotificationType, User
from notifier.status import Reason
from tests.factories import UserFactory, staff_member

pytestmark = [pytest.mark.browser, pytest.mark.django_db(transaction=True)]
ROLES = importlib.import_module("campaigns.migrations.0003_marketing_roles")
TAG = "winter-sale"


@pytest.fixture
def marketer() -> User:
    ROLES.create_roles(apps, None)
    return staff_member("Marketer")


def campaign_for_fans() -> Campaign:
    """Three fans with marketing consent and one without, a rate of 2 a minute."""
    for consent in (True, True, True, False):
        user = UserFactory(interest_tags=[TAG], time_zone="UTC")
        if consent:
            Consent.objects.create(
                user=user, channel="all", granted=True, at=timezone.now(), source="t", wording=""
            )
    noon = datetime.now(UTC).replace(hour=12, minute=0, second=0, microsecond=0)
    campaign = campaign_create(
        name="Winter sale",
        category=NotificationType.objects.get(pk="promo.flash_sale"),
        created_by=None,
        segment=Segment.objects.create(name="Winter fans", tags_any=[TAG]),
        event_at=noon + timedelta(days=10),
        channels=["inapp", "email"],
    )
    for step in campaign.steps.all():
        VariantTemplate.objects.create(
            variant=step.variants.get(), channel="inapp", title="Sale", body="Sale"
        )
    Campaign.objects.filter(pk=campaign.pk).update(send_rate_per_minute=2)
    return campaign


def test_the_marketer_reads_the_forecast_of_each_step(log_in, marketer):
    campaign = campaign_for_fans()
    notice, reminder = campaign.steps.order_by("offset_minutes")[:2]
    page = log_in(marketer)
    page.goto(f"/admin/campaigns/campaign/{campaign.pk}/change/")

    # Fetched once the page is shown.
    panel = page.locator("#forecast")
    panel.wait_for()
    assert "Exact" in page.inner_text("#forecast-basis")
    first = page.locator(f"#forecast-step-{notice.pk}")
    # The first step is open; its table names the reason as support staff read it.
    no_consent = first.locator("tr[data-reason=no_consent]")
    assert no_consent.is_visible()
    assert Reason.NO_CONSENT.label in no_consent.inner_text()
    assert no_consent.locator("td").all_inner_texts() == ["0", "1"]  # in-app, email
    assert first.locator("tr.out td").all_inner_texts() == ["4", "3"]
    # 7 messages at 2 a minute.
    assert "about 4 min at 2/min" in first.locator(".forecast-send-time").inner_text()

    # The next step is folded until asked for.
    second = page.locator(f"#forecast-step-{reminder.pk}")
    assert not second.locator("table").is_visible()
    second.locator("summary").click()
    assert second.locator("tr.out").is_visible()

    # The forecast fits a 1280 px page (the steps' inline table, further down, is not ours).
    box = panel.bounding_box()
    assert box is not None and box["x"] + box["width"] <= 1280
    assert page.evaluate(
        "[...document.querySelectorAll('#forecast table')]"
        ".every(t => t.getBoundingClientRect().right <= 1280)"
    )


def test_the_segment_page_names_a_tag_nobody_has_before_saving(log_in, marketer):
    UserFactory(interest_tags=[TAG])
    segment = Segment.objects.create(name="Fans", tags_any=[TAG])
    page = log_in(marketer)
    page.goto(f"/admin/campaigns/segment/{segment.pk}/change/")
    assert page.locator("#segment-warnings li").count() == 0

    page.fill("input[name=tags_any]", "wintr-sale")
    page.click("#audience-refresh")
    page.wait_for_selector("#segment-warnings li")
    assert page.inner_text("#segment-warnings") == (
        "No user has the tag “wintr-sale”: this rule matches nobody. Did you mean “winter-sale”?"
    )
