"""Issue 14 in Chromium: the progress bar of a step that a real Celery worker is sending moves
without a reload and ends complete; the calendar's month and week views with the warning of two
campaigns competing for the same users; the funnel page fits 1280 px.

The worker is a real `celery worker` process on the test database and the test Redis broker,
with small fan-out batches and a provider round trip, so the send takes several seconds and the
page's polls see it part way.
"""

from __future__ import annotations

import importlib
from collections.abc import Iterator
from datetime import UTC, date, datetime, timedelta

import pytest
from django.apps import apps
from django.urls import reverse
from django.utils import timezone
from playwright.sync_api import expect

from campaigns.models import Campaign, CampaignStatus, CampaignStep, Segment
from campaigns.services import fanout
from campaigns.services.stats import stats_rollup
from notifier.models import NotificationType, User
from notifier.queues import ALL_QUEUES
from tests.campaigns.test_stats_admin import build_campaign
from tests.conftest import WorkerProcess, broker_redis, wait_until
from tests.factories import UserFactory, staff_member
from tests.integration.test_campaign_workers import campaign_due_now, fans

pytestmark = [pytest.mark.browser, pytest.mark.django_db(transaction=True)]
ROLES = importlib.import_module("campaigns.migrations.0003_marketing_roles")
AUDIENCE = 600
WORKER_ENV = {
    # Twelve batches of 50 and a 15 ms provider round trip per email: a send of several
    # seconds, long enough for the page to poll it part way.
    "NOTIFIER_CAMPAIGN_BATCH_USERS": "50",
    "SANDBOX_LATENCY_MS": "15",
    "NOTIFIER_BULK_HIGH_WATER": "100000",
}


@pytest.fixture(scope="module")
def sending_worker(django_db_setup) -> Iterator[WorkerProcess]:
    broker_redis().flushdb()
    worker = WorkerProcess(queues=ALL_QUEUES, extra_env=WORKER_ENV)
    try:
        worker.wait_ready()
        yield worker
    finally:
        worker.stop()
        broker_redis().delete(*ALL_QUEUES)


@pytest.fixture
def marketer() -> User:
    ROLES.create_roles(apps, None)  # a transactional test's flush removed the groups
    return staff_member("Marketer")


def counts(page) -> dict[str, int]:
    return page.evaluate(
        """() => Object.fromEntries([...document.querySelectorAll(
            '#progress-steps .step-progress [data-count]')].map(
            el => [el.dataset.count, parseInt(el.textContent, 10)]))"""
    )


def test_the_progress_bar_moves_while_a_real_worker_sends_and_ends_complete(
    sending_worker, log_in, marketer
):
    users = fans(AUDIENCE)
    step = campaign_due_now(["inapp", "email"])
    Campaign.objects.filter(pk=step.campaign_id).update(approved_audience=len(users))
    page = log_in(marketer)
    # What beat does: the step starts and its walk goes to the worker once this commits.
    assert fanout.steps_start_due().started == [step.pk]
    page.goto(f"/admin/campaigns/campaign/{step.campaign_id}/change/")

    seen: list[int] = []

    def finished() -> bool:
        sent = counts(page).get("sent")
        if sent is not None and (not seen or sent != seen[-1]):
            seen.append(sent)
        return page.get_attribute("#campaign-progress", "data-state") == "complete"

    wait_until(finished, timeout=90, interval=0.2, message="the progress bar to end complete")

    final = counts(page)
    assert final["handed_out"] == final["written"] == AUDIENCE
    assert final["deliveries"] == final["sent"] == 2 * AUDIENCE
    assert final["failed"] == final["held"] == final["in_flight"] == 0
    # It moved without a reload: several different values on the way, only ever up.
    assert seen == sorted(seen), seen
    assert len([n for n in seen if 0 < n < 2 * AUDIENCE]) >= 2, seen
    assert page.get_attribute(".step-progress [data-part=sent]", "style") == "width: 100%;"
    bar = page.locator(".step-progress .bar[role=progressbar]").first
    assert bar.get_attribute("aria-valuenow") == str(AUDIENCE)

    # Beat closes the step and the campaign; the page says so and stops polling.
    fanout.steps_start_due()
    assert CampaignStep.objects.get(pk=step.pk).status == "done"
    page.wait_for_function(
        "document.getElementById('progress-status').textContent.includes('campaign done')",
        timeout=10_000,
    )
    assert "(complete)" in page.inner_text(".step-progress h3")


# --- Calendar ----------------------------------------------------------------------------------


def planned(name: str, segment: Segment, at: datetime) -> Campaign:
    made = Campaign.objects.create(
        name=name,
        status=CampaignStatus.SCHEDULED,
        segment=segment,
        event_at=at + timedelta(days=2),
        category=NotificationType.objects.get(pk="promo.flash_sale"),
    )
    CampaignStep.objects.create(campaign=made, name="Reminder", offset_minutes=-2 * 24 * 60)
    return made


def test_the_calendar_in_month_and_week_shows_where_campaigns_compete(log_in, marketer):
    for tags, count in ((["sale", "vip"], 4), (["sale"], 2), (["vip"], 3)):
        UserFactory.create_batch(count, interest_tags=tags)
    day = timezone.now().astimezone(UTC).replace(hour=10, minute=0, second=0, microsecond=0)
    day += timedelta(days=3)
    planned("Winter sale", Segment.objects.create(name="Sale", tags_any=["sale"]), day)
    planned("VIP night", Segment.objects.create(name="VIP", tags_any=["vip"]), day)
    page = log_in(marketer)

    page.goto(reverse("admin:campaigns_campaign_changelist"))
    page.click("#calendar-link")
    page.select_option("#calendar-tz", "UTC")
    page.click("#campaign-calendar form.zone input[type=submit]")
    expect(page.locator("#time-zone")).to_have_text("UTC")
    # The page's own "today" leads, not the test's: a midnight passing between the two (three
    # days on may be next month's, or next year's) cannot send it a month too far.
    month = f"{day:%B %Y}"
    if page.inner_text("#period-heading") != month:
        page.click("#next-period")
    expect(page.locator("#period-heading")).to_have_text(month)

    cell = page.locator(f'td[data-date="{day:%Y-%m-%d}"]')
    assert page.get_attribute("#campaign-calendar", "data-view") == "month"
    assert "competing" in (cell.get_attribute("class") or "")
    assert "4 users shared by" in cell.inner_text()
    assert "Winter sale" in cell.inner_text() and "VIP night" in cell.inner_text()
    warning = page.inner_text("#competitions")
    assert "4 users are in both audiences" in warning
    fits(page)

    page.goto(reverse("admin:campaigns_campaign_calendar"))  # this month again, UTC kept
    page.click("#view-week")
    assert page.get_attribute("#campaign-calendar", "data-view") == "week"
    first = monday(day.date())
    week = f"Week of {first:%d %b %Y} to {first + timedelta(days=6):%d %b %Y}"
    if page.inner_text("#period-heading") != week:  # three days on: this week or the next
        page.click("#next-period")
    expect(page.locator("#period-heading")).to_have_text(week)
    assert page.locator("#calendar-grid tbody td").count() == 7
    assert "4 users shared by" in page.locator(f'td[data-date="{day:%Y-%m-%d}"]').inner_text()
    fits(page)
    page.click("#next-period")
    page.click("#previous-period")
    expect(page.locator("#period-heading")).to_have_text(week)
    expect(page.locator(f'td[data-date="{day:%Y-%m-%d}"] li')).to_have_count(2)
    assert page.inner_text("#time-zone") == "UTC"


def monday(of: date) -> date:
    return of - timedelta(days=of.weekday())


# --- Funnel width ------------------------------------------------------------------------------


def fits(page) -> None:
    """No sideways scroll, and no table wider than the box it sits in."""
    sizes = page.evaluate(
        """() => ({
            scroll: document.scrollingElement.scrollWidth,
            window: window.innerWidth,
            tables: [...document.querySelectorAll('#content table')].filter(
                t => t.offsetParent !== null && t.scrollWidth > t.parentElement.clientWidth + 1
            ).map(t => (t.closest('[id]') || t).id + ': ' + t.scrollWidth + ' > '
                + t.parentElement.clientWidth),
        })"""
    )
    assert sizes["scroll"] <= sizes["window"], sizes
    assert not sizes["tables"], sizes


def test_the_funnel_page_fits_1280_pixels(log_in, marketer):
    campaign = build_campaign(
        per_variant={
            name: [("email", "clicked", ""), ("sms", "suppressed", "no_phone_number")] * 3
            for name in ("A long variant name for the spring", "B", "C")
        }
    )
    stats_rollup(campaign_ids=[campaign.pk])
    page = log_in(marketer)

    page.goto(reverse("admin:campaigns_campaign_stats", args=[campaign.pk]))

    assert page.viewport_size == {"width": 1280, "height": 900}
    assert page.is_visible("#funnel-table")
    assert page.is_visible("#nav-sidebar")  # the admin's sidebar takes its share of the width
    fits(page)
    assert "Too few people held out to tell" in page.inner_text("#holdout") or (
        "No one was held out" in page.inner_text("#holdout")
    )
    assert "push" in page.inner_text("#delivered-note")
