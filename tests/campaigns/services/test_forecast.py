"""The reach forecast says, per step, channel and reason, what the fan-out then does."""

from __future__ import annotations

import uuid
from collections import Counter
from datetime import UTC, date, datetime, timedelta

import pytest
import time_machine
from django.utils import timezone

from campaigns.models import Campaign, CampaignStep, Holdout, Segment, StepVariant, VariantTemplate
from campaigns.services import fanout
from campaigns.services.fanout import steps_start_due
from campaigns.services.forecast import (
    FORECAST_SAMPLE,
    Forecast,
    StepForecast,
    campaign_forecast,
    reason_label,
    spread_sample,
)
from campaigns.services.lifecycle import campaign_approve, campaign_create, campaign_submit
from notifier.models import (
    Consent,
    Delivery,
    FrequencyCounter,
    NotificationType,
    Preference,
    SuppressedAddress,
    User,
)
from notifier.status import DeliveryStatus, Reason
from tests.factories import UserFactory

pytestmark = pytest.mark.django_db
S = DeliveryStatus
NOW = datetime(2026, 11, 1, 9, 0, tzinfo=UTC)
EVENT = datetime(2026, 11, 11, 12, 0, tzinfo=UTC)  # a Wednesday; the notice is on Sunday 8th
TAG = "forecast-fans"


def person(*, consent: bool = True, **fields) -> User:
    fields.setdefault("time_zone", "UTC")
    user = UserFactory(interest_tags=[TAG], **fields)
    if consent:
        Consent.objects.create(
            user=user, channel="all", granted=True, at=timezone.now(), source="test", wording="ok"
        )
    return user


def write_copy(variant: StepVariant) -> None:
    for channel in ("inapp", "email"):
        VariantTemplate.objects.update_or_create(
            variant=variant,
            channel=channel,
            locale="",
            defaults={
                "subject": "Sale",
                "title": "Sale",
                "body": "Hi {{ unsubscribe_url }}",
                "link": "https://shop.example.com/sale",
            },
        )


def make_campaign(
    creator, *, plan=None, holdout: int = 0, tags=(TAG,), send_rate: int | None = None
) -> Campaign:
    campaign = campaign_create(
        name="Double 11",
        category=NotificationType.objects.get(pk="promo.flash_sale"),
        created_by=creator,
        segment=Segment.objects.create(name=uuid.uuid4().hex, tags_any=list(tags)),
        event_at=EVENT,
        channels=["inapp", "email"],
        holdout_percent=holdout,
        **({"plan": plan} if plan else {}),
    )
    for step in campaign.steps.all():
        for variant in step.variants.all():
            write_copy(variant)
    if send_rate is not None:
        Campaign.objects.filter(pk=campaign.pk).update(send_rate_per_minute=send_rate)
        campaign.refresh_from_db()
    return campaign


def the_people() -> dict[str, User]:
    """One user per reason not to send, and two who get it."""
    people = {
        "plain": person(),
        "plain2": person(),
        "no_consent": person(consent=False),
        "opted_out": person(),
        "marketing_off": person(marketing_frequency="off"),
        "no_email": person(email=""),
        "bounced": person(),
        # 12:00 UTC on the 8th is 01:00 on the 9th in Auckland (UTC+13): their night.
        "night_owl": person(time_zone="Pacific/Auckland"),
        "capped": person(),
    }
    Preference.objects.create(
        user=people["opted_out"], category="marketing", channel="email", enabled=False
    )
    SuppressedAddress.objects.create(
        channel="email",
        address=people["bounced"].email,
        reason="bounced",
        source="test",
        at=timezone.now(),
    )
    # Two marketing messages this week already (the week's cap is 2): the notice waits for
    # Monday, before the event, so it is deferred, not stale.
    FrequencyCounter.objects.create(
        user=people["capped"], period="week", window_start=date(2026, 11, 2), count=2
    )
    return people


def approved(marketer, lead, **kwargs) -> Campaign:
    with time_machine.travel(NOW):
        campaign = make_campaign(marketer, **kwargs)
        campaign_submit(campaign=campaign, by=marketer)
        campaign_approve(campaign=campaign, by=lead)
    campaign.refresh_from_db()
    return campaign


def run_step(campaign: Campaign, name: str, published) -> CampaignStep:
    step = campaign.steps.get(name=name)
    with time_machine.travel(campaign.event_at + timedelta(minutes=step.offset_minutes)):
        assert step.pk in steps_start_due().started
        published.run_walk(step.pk)
    return step


def forecast_counts(step: StepForecast) -> Counter[tuple[str, str]]:
    """(what, channel) -> count: a reason, "quiet_hours" or "out"."""
    counts: Counter[tuple[str, str]] = Counter()
    for row in step.rows:
        for channel, n in row.counts.items():
            if n:
                counts[(row.reason, channel)] += n
    for channel, n in step.quiet.items():
        if n:
            counts[(Reason.QUIET_HOURS, channel)] += n
    for channel, n in step.going_out.items():
        if n:
            counts[("out", channel)] += n
    return counts


def actual_counts(step: CampaignStep) -> Counter[tuple[str, str]]:
    counts: Counter[tuple[str, str]] = Counter()
    for status, reason, channel in Delivery.objects.filter(message__step=step).values_list(
        "status", "reason", "channel"
    ):
        # going out: queued, or in-app sent as it was routed
        counts[("out" if status in (S.QUEUED, S.SENT) else reason, channel)] += 1
    return counts


def step_of(forecast: Forecast, name: str) -> StepForecast:
    return next(s for s in forecast.steps if s.name == name)


def test_each_reason_is_counted_as_the_fan_out_then_records_it(marketer, lead, published):
    people = the_people()
    campaign = approved(marketer, lead)
    with time_machine.travel(NOW):
        forecast = campaign_forecast(campaign=campaign)
    assert forecast.exact and forecast.audience == len(people)
    notice = step_of(forecast, "Notice")
    expected = Counter(
        {
            # plain, plain2, and those whom only email cannot reach: in-app needs no consent
            ("out", "inapp"): 6,
            ("out", "email"): 2,
            (Reason.NO_CONSENT, "email"): 1,
            (Reason.OPTED_OUT, "email"): 1,
            (Reason.MARKETING_OFF, "inapp"): 1,
            (Reason.MARKETING_OFF, "email"): 1,
            (Reason.NO_EMAIL_ADDRESS, "email"): 1,
            (Reason.ADDRESS_SUPPRESSED, "email"): 1,
            (Reason.QUIET_HOURS, "inapp"): 1,
            (Reason.QUIET_HOURS, "email"): 1,
            (Reason.FREQUENCY_CAP, "inapp"): 1,
            (Reason.FREQUENCY_CAP, "email"): 1,
        }
    )
    assert forecast_counts(notice) == expected
    # When the night owl gets it: at the end of their night, on their own clock.
    assert [(r.local_time, r.users) for r in notice.releases] == [("08:00", 1)]
    # The reasons read as the support timeline reads them.
    labels = {row.reason: row.label for row in notice.rows}
    assert labels[Reason.NO_CONSENT] == Reason.NO_CONSENT.label
    assert reason_label(Reason.FREQUENCY_CAP) == Reason.FREQUENCY_CAP.label

    step = run_step(campaign, "Notice", published)
    assert actual_counts(step) == forecast_counts(notice)


def test_the_campaigns_own_earlier_step_fills_the_day_cap(marketer, lead, published):
    """Two steps on one day, a day cap of one: the second is deferred past the event (stale)
    for everyone who got the first; the forecast says so before either is sent."""
    person(), person()
    campaign = approved(marketer, lead, plan=[("Morning", -180), ("Noon", -60)])
    with time_machine.travel(NOW):
        forecast = campaign_forecast(campaign=campaign)
    noon = step_of(forecast, "Noon")
    assert noon.total_out == 0
    assert {(row.reason, c): n for row in noon.rows for c, n in row.counts.items()} == {
        (Reason.STALE, "inapp"): 2,
        (Reason.STALE, "email"): 2,
    }
    run_step(campaign, "Morning", published)
    step = run_step(campaign, "Noon", published)
    assert actual_counts(step) == forecast_counts(noon)


def test_the_hold_out_is_the_one_the_fan_out_keeps(marketer, lead, published):
    for _ in range(30):
        person()
    campaign = approved(marketer, lead, holdout=30)
    with time_machine.travel(NOW):
        notice = step_of(campaign_forecast(campaign=campaign), "Notice")
    run_step(campaign, "Notice", published)
    held_out = Holdout.objects.filter(campaign=campaign).count()
    assert 0 < held_out < 30
    assert (notice.in_segment, notice.held_out, notice.after_holdout) == (
        30,
        held_out,
        30 - held_out,
    )


def test_a_large_audience_is_estimated_from_an_even_sample(marketer, lead):
    assert spread_sample(list(range(10)), 20) == list(range(10))
    assert spread_sample(list(range(100)), 4) == [0, 25, 50, 75]
    for _ in range(12):
        person()
    campaign = approved(marketer, lead)
    with time_machine.travel(NOW):
        forecast = campaign_forecast(campaign=campaign, sample=4)
    assert not forecast.exact
    assert (forecast.audience, forecast.routed) == (12, 4)
    notice = step_of(forecast, "Notice")
    assert notice.going_out == {"inapp": 12, "email": 12}  # 4 routed, scaled by 3
    assert FORECAST_SAMPLE >= 1000


def test_the_time_to_send_follows_the_campaigns_rate(marketer, lead):
    for _ in range(3):
        person()
    campaign = approved(marketer, lead, send_rate=2)
    with time_machine.travel(NOW):
        notice = step_of(campaign_forecast(campaign=campaign), "Notice")
    assert notice.send_time is not None
    assert notice.send_time.messages == 6  # 3 users x 2 channels
    assert notice.send_time.text == "about 3 min at 2/min (this campaign's send rate)"


def test_no_rate_no_time(marketer, lead, settings):
    settings.NOTIFIER_RATE_LIMITS = {}
    person()
    campaign = approved(marketer, lead)
    with time_machine.travel(NOW):
        notice = step_of(campaign_forecast(campaign=campaign), "Notice")
    assert notice.send_time is None


def test_a_mistyped_tag_is_named_with_a_suggestion(marketer):
    person()
    campaign = make_campaign(marketer, tags=("forecast-fnas",))
    forecast = campaign_forecast(campaign=campaign)
    assert forecast.audience == 0
    assert [w.text for w in forecast.warnings] == [
        "No user has the tag “forecast-fnas”: this rule matches nobody. "
        "Did you mean “forecast-fans”?"
    ]


def test_the_fan_out_module_is_what_the_forecast_routes_with():
    # The forecast builds each step's messages with the fan-out's own function.
    from campaigns.services import forecast

    assert forecast.recipients is fanout.recipients
