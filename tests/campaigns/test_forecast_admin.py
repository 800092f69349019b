"""The forecast panel on the campaign's page (the approver's screen too), its page of its own, the
send rate field, and the segment page's warning for a value no user has."""

from __future__ import annotations

import uuid
from html import unescape

import pytest
import time_machine
from django.contrib.messages import get_messages

from campaigns.models import Campaign, CampaignStatus, Segment
from campaigns.services.definitions import approval_changes
from campaigns.services.lifecycle import campaign_submit
from notifier.models import Consent, FrequencyCounter
from notifier.status import Reason
from tests.campaigns.test_campaign_admin import (
    FANS,
    NOW,
    make_campaign,
    post_data,
    scheduled,
    url,
)
from tests.factories import UserFactory, staff_member

pytestmark = pytest.mark.django_db


@pytest.fixture
def marketer(roles):
    return staff_member("Marketer", "marketer")


@pytest.fixture
def lead(roles):
    return staff_member("Marketing lead", "lead")


@pytest.fixture(autouse=True)
def _frozen_clock():
    with time_machine.travel(NOW, tick=False):
        yield


def fans(count: int, *, consent: bool = True, **fields) -> None:
    fields.setdefault("time_zone", "UTC")
    for user in UserFactory.create_batch(count, interest_tags=[FANS], **fields):
        if consent:
            Consent.objects.create(
                user=user, channel="all", granted=True, at=NOW, source="test", wording="ok"
            )


def page(client, campaign: Campaign) -> str:
    response = client.get(url("campaign_change", campaign.pk))
    assert response.status_code == 200
    return unescape(response.content.decode())


def panel(client, campaign: Campaign) -> str:
    """The forecast panel the campaign's page fetches once it is shown."""
    forecast = url("campaign_forecast", campaign.pk)
    assert f'data-url="{forecast}?panel=1"' in page(client, campaign)
    response = client.get(forecast, {"panel": "1"})
    assert response.status_code == 200
    return unescape(response.content.decode())


def test_the_campaign_page_shows_the_forecast_per_step_with_reasons(client, marketer):
    fans(3)
    fans(2, consent=False)
    campaign = make_campaign(marketer)
    Campaign.objects.filter(pk=campaign.pk).update(send_rate_per_minute=2)
    client.force_login(marketer)
    content = panel(client, campaign)
    assert 'id="forecast"' in content
    assert "<html" not in content  # the panel alone
    assert "Exact: each of the 5 users" in content
    for step in campaign.steps.all():
        assert f'id="forecast-step-{step.pk}"' in content
    # No consent for email: said in the support timeline's words.
    assert Reason.NO_CONSENT.label in content
    assert 'data-reason="no_consent"' in content
    # 5 in-app + 3 email at 2 a minute.
    assert "about 4 min at 2/min (this campaign's send rate)" in content


def test_the_approver_sees_the_forecast_and_it_counts_the_cap(client, marketer, lead):
    fans(2)
    capped = UserFactory(interest_tags=[FANS], time_zone="UTC")
    Consent.objects.create(user=capped, channel="all", granted=True, at=NOW, source="t", wording="")
    FrequencyCounter.objects.create(user=capped, period="week", window_start="2026-11-02", count=2)
    campaign = make_campaign(marketer)
    campaign_submit(campaign=campaign, by=marketer)
    client.force_login(lead)
    assert 'id="action-approve"' in page(client, campaign)
    content = panel(client, campaign)
    assert 'id="forecast"' in content
    assert Reason.FREQUENCY_CAP.label in content


def test_the_forecast_page_of_its_own(client, marketer, lead):
    fans(1)
    campaign = scheduled(marketer, lead)
    client.force_login(marketer)
    response = client.get(url("campaign_forecast", campaign.pk))
    assert response.status_code == 200
    content = unescape(response.content.decode())
    assert "Forecast: Double 11" in content
    assert "Expected to go out" in content
    assert client.get(url("campaign_forecast", 999_999)).status_code == 404


def test_a_running_campaign_page_has_no_forecast_panel(client, marketer, lead):
    campaign = scheduled(marketer, lead)
    Campaign.objects.filter(pk=campaign.pk).update(status=CampaignStatus.RUNNING)
    client.force_login(marketer)
    assert 'id="forecast-slot"' not in page(client, campaign)


def test_a_mistyped_tag_is_warned_about_on_the_campaign_page(client, marketer):
    fans(1)
    campaign = make_campaign(marketer)
    Segment.objects.filter(pk=campaign.segment_id).update(tags_any=["sale-fnas"])
    client.force_login(marketer)
    content = panel(client, campaign)
    assert "No user has the tag “sale-fnas”" in content
    assert "Did you mean “sale-fans”?" in content


# --- The send rate ----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("typed", "error"),
    [
        ("0", "At least 1 message a minute"),
        ("60001", "At most 60,000 a minute"),
        ("-5", "greater than or equal to 0"),
        ("fast", "Enter a whole number."),
    ],
)
def test_a_send_rate_out_of_range_is_a_form_error(client, marketer, typed, error):
    campaign = make_campaign(marketer)
    client.force_login(marketer)
    change = url("campaign_change", campaign.pk)
    response = client.post(change, post_data(client.get(change), send_rate_per_minute=typed))
    assert response.status_code == 200
    assert error in " ".join(response.context["adminform"].form.errors["send_rate_per_minute"])
    assert Campaign.objects.get(pk=campaign.pk).send_rate_per_minute is None


def test_a_send_rate_is_saved_and_empty_means_none(client, marketer):
    campaign = make_campaign(marketer)
    client.force_login(marketer)
    change = url("campaign_change", campaign.pk)
    response = client.post(change, post_data(client.get(change), send_rate_per_minute="500"))
    assert response.status_code == 302
    assert Campaign.objects.get(pk=campaign.pk).send_rate_per_minute == 500
    client.post(change, post_data(client.get(change), send_rate_per_minute=""))
    assert Campaign.objects.get(pk=campaign.pk).send_rate_per_minute is None


def test_approval_covers_the_send_rate(marketer, lead):
    campaign = scheduled(marketer, lead)
    assert approval_changes(campaign) == []
    Campaign.objects.filter(pk=campaign.pk).update(send_rate_per_minute=500)
    campaign.refresh_from_db()
    assert [c.text for c in approval_changes(campaign)] == [
        "Send rate: no limit of its own → 500 a minute"
    ]


# --- The segment page -------------------------------------------------------------------------


def test_the_segment_page_warns_of_a_tag_and_a_zone_nobody_has(client, marketer):
    UserFactory(interest_tags=["sale-fans"], time_zone="Asia/Shanghai")
    segment = Segment.objects.create(
        name=uuid.uuid4().hex, tags_any=["sale-fnas"], time_zones=["Asia/Shangai"]
    )
    client.force_login(marketer)
    content = unescape(client.get(url("segment_change", segment.pk)).content.decode())
    assert (
        "No user has the tag “sale-fnas”: this rule matches nobody. Did you mean “sale-fans”?"
        in (content)
    )
    assert "No user has the time zone “Asia/Shangai”" in content
    assert "Did you mean “Asia/Shanghai”?" in content
    counted = client.get(url("segment_count", segment.pk)).json()
    assert len(counted["warnings"]) == 2


def test_saving_a_segment_with_an_unknown_tag_warns_but_saves(client, marketer):
    UserFactory(interest_tags=["sale-fans"])
    client.force_login(marketer)
    response = client.post(
        url("segment_add"), {"name": "Typo", "tags_any": "sale-fnas"}, follow=True
    )
    assert response.status_code == 200
    assert Segment.objects.filter(name="Typo", tags_any=["sale-fnas"]).exists()
    flashed = [str(m) for m in get_messages(response.wsgi_request)]
    assert any("“sale-fnas”" in m and "sale-fans" in m for m in flashed), flashed
