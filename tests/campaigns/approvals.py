"""What the approval tests share: the issue's segment (71 customers match its rules, 11 are on its
list), a campaign approved by a Marketing lead, and beat at a moment with the workers after it."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import time_machine

from campaigns.models import (
    Campaign,
    CampaignKind,
    CampaignStep,
    Segment,
    VariantTemplate,
)
from campaigns.services import fanout
from campaigns.services.definitions import approval_changes
from campaigns.services.fanout import steps_start_due
from campaigns.services.lifecycle import campaign_approve, campaign_create, campaign_submit
from campaigns.services.segments import segment_members_add
from notifier.models import Consent, Message, NotificationType, User
from tests.factories import UserFactory, staff_member

NOW = datetime(2026, 11, 1, 9, 0, tzinfo=UTC)
EVENT = datetime(2026, 11, 11, 12, 0, tzinfo=UTC)
NOTICE_AT = EVENT - timedelta(days=3)
REMINDER_AT = EVENT - timedelta(days=2)
FANS = "winter-fans"


def audience(count: int, **fields) -> list[User]:
    # In UTC unless a test says otherwise: the steps start at 11:00-12:00 UTC (EVENT and the
    # days before it), in the day of users there, whatever the hour the tests are run at.
    fields.setdefault("time_zone", "UTC")
    users = UserFactory.create_batch(count, interest_tags=[FANS], **fields)
    Consent.objects.bulk_create(
        [
            Consent(user=u, channel="all", granted=True, at=NOW, source="test", wording="offers")
            for u in users
        ]
    )
    return users


def person(group: str) -> User:
    return staff_member(group)


def whales_with_a_list(listed: int = 11, others: int = 60) -> tuple[Segment, list[User]]:
    """The issue's segment: 71 customers match its rules, 11 of them are on its list."""
    users = audience(listed + others)
    segment = Segment.objects.create(name="Winter whales", tags_any=[FANS], use_member_list=True)
    segment_members_add(segment=segment, user_ids=[u.pk for u in users[:listed]])
    return segment, users


def approved(
    marketer, lead, segment: Segment, *, kind: str = CampaignKind.ONE_OFF, name: str = "Double 11"
) -> Campaign:
    with time_machine.travel(NOW):
        campaign = campaign_create(
            name=name,
            category=NotificationType.objects.get(pk="promo.flash_sale"),
            created_by=marketer,
            segment=segment,
            event_at=EVENT if kind == CampaignKind.ONE_OFF else None,
            kind=kind,
            channels=["inapp", "email"],
            variables={"headline": "50% off"},
        )
        for variant in [v for s in campaign.steps.all() for v in s.variants.all()]:
            VariantTemplate.objects.create(
                variant=variant,
                channel="inapp",
                title="{{ headline }}",
                body="Hi {{ user.first_name }}",
                link="https://shop.example.com/sale",
            )
            VariantTemplate.objects.create(
                variant=variant,
                channel="email",
                subject="{{ campaign.name }}: {{ headline }}",
                body="Hi {{ user.first_name }}\n{{ unsubscribe_url }}",
            )
        campaign_submit(campaign=campaign, by=marketer)
        campaign_approve(campaign=campaign, by=lead)
    campaign.refresh_from_db()
    return campaign


def fresh(campaign: Campaign) -> Campaign:
    return Campaign.objects.get(pk=campaign.pk)


def step(campaign: Campaign, name: str) -> CampaignStep:
    return CampaignStep.objects.get(campaign=campaign, name=name)


def recipients(campaign: Campaign, name: str) -> set[int]:
    return set(Message.objects.filter(step=step(campaign, name)).values_list("user_id", flat=True))


def texts(campaign: Campaign) -> list[str]:
    return [change.text for change in approval_changes(fresh(campaign))]


def beat_at(at: datetime, published) -> fanout.StartReport:
    """Beat at `at`, then the workers: every step that started is walked and written."""
    with time_machine.travel(at):
        report = steps_start_due()
        for step_id in report.started:
            published.run_walk(step_id)
    return report
