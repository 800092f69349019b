"""The campaign calendar (issue 14): steps at the time they go out in the marketer's zone, local-
time steps as a span over the audience's zones, and the days two campaigns compete for the
same users' caps, with how many users they share (a set query on the two audiences)."""

from __future__ import annotations

from datetime import UTC, date, datetime, time, timedelta
from zoneinfo import ZoneInfo

import pytest
from django.urls import reverse

from campaigns.admin.live import period
from campaigns.models import Campaign, CampaignStatus, CampaignStep, Segment, StepTiming
from campaigns.policies import StepPlan, Timing
from campaigns.services.calendar import campaign_calendar, shared_audience, step_span
from notifier.models import NotificationType
from tests.factories import UserFactory, staff_member

pytestmark = pytest.mark.django_db
EVENT = datetime(2026, 12, 12, 12, 0, tzinfo=UTC)
CALENDAR = "admin:campaigns_campaign_calendar"


# --- Pure ------------------------------------------------------------------------------------


def test_a_step_at_an_offset_goes_out_at_one_moment():
    assert step_span(EVENT, StepPlan(-2 * 24 * 60), ["Asia/Shanghai"]) == (
        EVENT - timedelta(days=2),
        None,
    )


def test_a_local_time_step_spans_its_audiences_zones_from_east_to_west():
    plan = StepPlan(-2 * 24 * 60, Timing.LOCAL_TIME, time(10, 0))

    first, last = step_span(EVENT, plan, ["America/Los_Angeles", "Asia/Shanghai", "Nowhere/Zone"])

    # The 10th at 10:00 in Shanghai (02:00 UTC) to the 10th at 10:00 in Los Angeles (18:00 UTC).
    assert first == datetime(2026, 12, 10, 2, 0, tzinfo=UTC)
    assert last == datetime(2026, 12, 10, 18, 0, tzinfo=UTC)


def test_a_month_is_drawn_in_whole_weeks_from_monday_and_a_week_from_its_monday():
    first, after, previous, following = period("month", date(2026, 12, 17))
    assert (first, after) == (date(2026, 11, 30), date(2027, 1, 4))
    assert (previous, following) == (date(2026, 11, 1), date(2027, 1, 1))
    first, after, previous, following = period("week", date(2026, 12, 17))
    assert (first, after) == (date(2026, 12, 14), date(2026, 12, 21))
    assert (previous, following) == (date(2026, 12, 7), date(2026, 12, 21))


# --- On the database -------------------------------------------------------------------------


def campaign(name: str, segment: Segment, *, status=CampaignStatus.SCHEDULED, **step) -> Campaign:
    made = Campaign.objects.create(
        name=name,
        status=status,
        segment=segment,
        event_at=EVENT,
        category=NotificationType.objects.get(pk="promo.flash_sale"),
    )
    CampaignStep.objects.create(
        campaign=made,
        name=step.pop("step_name", "Reminder"),
        offset_minutes=step.pop("offset_minutes", -2 * 24 * 60),
        **step,
    )
    return made


@pytest.fixture
def competing():
    """Two scheduled campaigns on 10 December whose segments share 3 users, a third that day
    with an audience of its own, and a draft on the same segment as the first."""
    for tags, count in ((["sale", "vip"], 3), (["sale"], 2), (["vip"], 4), (["books"], 2)):
        UserFactory.create_batch(count, interest_tags=tags)
    sale = Segment.objects.create(name="Sale fans", tags_any=["sale"])
    vip = Segment.objects.create(name="VIPs", tags_any=["vip"])
    books = Segment.objects.create(name="Readers", tags_any=["books"])
    return {
        "winter": campaign("Winter sale", sale),
        "vip": campaign("VIP night", vip, offset_minutes=-2 * 24 * 60 + 9 * 60),
        "books": campaign("Book week", books),
        "draft": campaign("Draft idea", sale, status=CampaignStatus.DRAFT),
    }


def test_overlapping_audiences_are_counted_with_one_set_query(competing):
    winter, vip = competing["winter"], competing["vip"]

    assert shared_audience(winter.segment, vip.segment) == 3
    assert shared_audience(winter.segment, winter.segment) == 5
    assert shared_audience(winter.segment, competing["books"].segment) == 0


def test_the_calendar_warns_where_two_live_campaigns_share_users_on_one_day(competing):
    start = datetime(2026, 12, 7, tzinfo=UTC)

    data = campaign_calendar(start=start, end=start + timedelta(days=7), tz=ZoneInfo("UTC"))

    assert [(s.campaign_name, s.starts.hour) for s in data.by_day[date(2026, 12, 10)]] == [
        ("Book week", 12),
        ("Draft idea", 12),
        ("Winter sale", 12),
        ("VIP night", 21),
    ]
    (competition,) = data.competitions  # Book week shares nobody; a draft takes no slot
    assert competition.day == date(2026, 12, 10)
    assert {competition.first, competition.second} == {"Winter sale", "VIP night"}
    assert competition.shared_users == 3
    assert competition.same_category is True
    assert "3 users are in both audiences" in competition.sentence


def test_days_are_the_marketers_days(competing):
    """VIP night at 21:00 UTC is already the 11th in Shanghai: no longer the same day."""
    tz = ZoneInfo("Asia/Shanghai")
    start = datetime(2026, 12, 7, tzinfo=tz)

    data = campaign_calendar(start=start, end=start + timedelta(days=7), tz=tz)

    assert [s.campaign_name for s in data.by_day[date(2026, 12, 11)]] == ["VIP night"]
    assert data.competitions == []


def test_a_local_time_step_shows_its_span_over_the_segments_zones(competing):
    zoned = Segment.objects.create(
        name="Two cities", time_zones=["Asia/Shanghai", "America/Los_Angeles"]
    )
    campaign(
        "Morning note",
        zoned,
        step_name="At ten",
        timing=StepTiming.LOCAL_TIME,
        local_time=time(10, 0),
    )
    start = datetime(2026, 12, 7, tzinfo=UTC)

    data = campaign_calendar(start=start, end=start + timedelta(days=7), tz=ZoneInfo("UTC"))

    (step,) = [s for s in data.steps if s.campaign_name == "Morning note"]
    assert (step.starts, step.ends) == (
        datetime(2026, 12, 10, 2, 0, tzinfo=UTC),
        datetime(2026, 12, 10, 18, 0, tzinfo=UTC),
    )


# --- The page --------------------------------------------------------------------------------


def calendar_page(client, **params):
    return client.get(reverse(CALENDAR), params)


def test_month_and_week_views_show_the_steps_and_the_warning(client, competing, roles):
    client.force_login(staff_member("Marketer"))

    month = calendar_page(client, view="month", date="2026-12-01", tz="UTC")
    week = calendar_page(client, view="week", date="2026-12-10", tz="UTC")

    assert month.status_code == week.status_code == 200
    for response in (month, week):
        html = response.content.decode()
        assert 'data-date="2026-12-10" class=" competing"' in html
        assert "⚠ 3 users shared by" in html
        assert "Winter sale</a>: Reminder" in html
        assert "Book week" in html
    month_html, week_html = month.content.decode(), week.content.decode()
    # 12:00 UTC is 20:00 in Shanghai: times are drawn in the marketer's zone.
    assert '<span class="time">12:00</span>' in month_html
    shanghai = calendar_page(client, view="week", date="2026-12-10", tz="Asia/Shanghai")
    assert '<span class="time">20:00</span>' in shanghai.content.decode()
    assert '<span class="time">12:00</span>' not in shanghai.content.decode()
    assert 'id="period-heading">December 2026<' in month_html
    assert "?view=month&amp;date=2026-11-01" in month_html  # previous month, a plain link
    assert 'id="period-heading">Week of 07 Dec 2026 to 13 Dec 2026<' in week_html
    assert "?view=week&amp;date=2026-12-14" in week_html
    assert 'data-date="2026-12-31"' not in week_html


def test_the_zone_picked_is_remembered_then_the_profiles_then_the_sites(
    client, competing, roles, settings
):
    marketer = staff_member("Marketer")
    marketer.notifier_recipient.time_zone = "Europe/Berlin"
    marketer.notifier_recipient.save(update_fields=["time_zone"])
    client.force_login(marketer)

    html = calendar_page(client).content.decode()
    assert 'id="time-zone">Europe/Berlin<' in html and "your profile" in html

    calendar_page(client, tz="Asia/Shanghai")
    html = calendar_page(client, view="week", date="2026-12-10").content.decode()
    assert 'id="time-zone">Asia/Shanghai<' in html and "picked on this page" in html

    marketer.notifier_recipient.delete()
    client.logout()
    client.force_login(marketer)
    settings.TIME_ZONE = "America/New_York"
    html = calendar_page(client).content.decode()
    assert 'id="time-zone">America/New_York<' in html and "(the site&#x27;s time zone)" in html


@pytest.mark.parametrize(
    ("params", "says"),
    [
        ({"date": "2026-13-01"}, "date: Enter a valid date."),
        ({"tz": "Mars/Olympus"}, "'Mars/Olympus' is not a time zone"),
        ({"view": "year"}, "view: Select a valid choice."),
        # The ends of the calendar: a month or week drawn around them would overflow.
        ({"date": "9999-12-31"}, "date: A day between 1970 and 2999"),
        ({"date": "0001-01-01", "view": "week"}, "date: A day between 1970 and 2999"),
    ],
)
def test_a_bad_address_is_a_400_saying_what_is_wrong(client, roles, params, says):
    client.force_login(staff_member("Marketer"))

    response = calendar_page(client, **params)

    assert response.status_code == 400
    assert says in response.content.decode()


def test_every_campaign_reader_opens_it_and_the_list_links_to_it(client, roles):
    for group in ("Marketer", "Marketing lead", "Support"):
        client.force_login(staff_member(group))
        assert calendar_page(client).status_code == 200
    changelist = client.get(reverse("admin:campaigns_campaign_changelist")).content.decode()
    assert f'href="{reverse(CALENDAR)}" id="calendar-link"' in changelist
    client.force_login(staff_member())
    assert calendar_page(client).status_code == 403
