"""Campaigns, plugged into the delivery core (notifier.hooks): what routing and rendering need of
a campaign message, what retention must keep, the failing-campaign pauses of the alerts job, and
the tracking routes. Registered by CampaignsConfig.ready()."""

from __future__ import annotations

from collections.abc import Collection, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from django.conf import settings
from django.urls import path
from django.utils import timezone

from campaigns import views
from campaigns.models import AudienceThresholds, Campaign, CampaignStatus, Conversion
from campaigns.personas import user_persona
from campaigns.rendering import Reused, marked_as_test, render_variant
from campaigns.series import series_stopped
from campaigns.services.alerts import campaign_pauses
from campaigns.tracking import track_content
from channels.base import Channel, Content
from notifier.db import table_name
from notifier.hooks import NO_CAMPAIGN, CampaignFacts
from notifier.models import Message, recipient_for
from notifier.services.pipeline import local_time_text

# A message of a campaign in one of these no longer counts for its funnel or re-entry window.
FINISHED = (CampaignStatus.DONE, CampaignStatus.CANCELLED)


@dataclass(frozen=True, slots=True)
class CampaignContext:
    name: str
    status: str
    event_at: datetime | None
    quiet_hours_allowed: bool = False  # a marketing lead let it send in quiet hours
    # What the copy's personas are derived with (campaigns.personas): the audience thresholds
    # (read once per batch) and the "points expiring" window in days.
    thresholds: AudienceThresholds = field(default_factory=AudienceThresholds)
    points_days: int = 30


def campaigns_of(campaign_ids: Sequence[int]) -> dict[int, CampaignContext]:
    """The batch's campaigns, with what their copy's personas need: two queries a batch."""
    ids = set(campaign_ids)
    if not ids:
        return {}
    thresholds = AudienceThresholds.objects.filter(pk=1).first() or AudienceThresholds()
    rows = Campaign.objects.filter(pk__in=ids).values_list(
        "pk",
        "name",
        "status",
        "event_at",
        "quiet_hours_allowed",
        "segment__points_expiring_within_days",
    )
    return {
        pk: CampaignContext(
            name,
            status,
            event_at,
            quiet_hours_allowed,
            thresholds,
            settings.NOTIFIER_POINTS_EXPIRING_DAYS if points_days is None else points_days,
        )
        for pk, name, status, event_at, quiet_hours_allowed, points_days in rows
    }


class Batch:
    """One batch's campaigns and stopped series, loaded with a few queries."""

    def __init__(self, messages: Sequence[Message]) -> None:
        self.campaigns = campaigns_of([m.campaign_id for m in messages if m.campaign_id])
        # (campaign id, user id) of customers who converted or clicked: their series stopped.
        self.stopped = series_stopped(
            (m.campaign_id, m.user_id) for m in messages if m.campaign_id and not m.is_test
        )
        # The event's local time, once per campaign and time zone, not per recipient.
        self._event_texts: dict[tuple[int, str], str] = {}
        # Parts of the copy that read nothing of the customer, rendered once a batch.
        self._reused: Reused = {}

    def campaign(self, message: Message) -> CampaignContext | None:
        return self.campaigns.get(message.campaign_id or 0)

    def facts(self, message: Message) -> CampaignFacts:
        campaign = self.campaign(message)
        if campaign is None:
            return NO_CAMPAIGN
        return CampaignFacts(
            cancelled=campaign.status == CampaignStatus.CANCELLED,
            paused=campaign.status == CampaignStatus.PAUSED,
            quiet_hours_allowed=campaign.quiet_hours_allowed,
            series_stopped=(message.campaign_id, message.user_id) in self.stopped,
        )

    def copy_context(self, message: Message) -> tuple[dict[str, Any], tuple[str, ...]]:
        campaign = self.campaign(message)
        if campaign is None:
            return {}, ()
        # The segment attributes, from the user row the batch already loaded.
        persona = user_persona(
            message.user,
            thresholds=campaign.thresholds,
            points_days=campaign.points_days,
            now=timezone.now(),
        )
        event_at = self._event_text(message.campaign_id or 0, campaign, message)
        extra = {
            "campaign": {"name": campaign.name, "event_at": event_at},
            "event_at": event_at,  # {{ event_at|localdatetime }}: notifier.local_formats
            "user": persona.template_values(),
        }
        return extra, persona.copy_keys()

    def _event_text(self, campaign_id: int, campaign: CampaignContext, message: Message) -> str:
        time_zone = recipient_for(message.user).time_zone
        key = (campaign_id, time_zone)
        text = self._event_texts.get(key)
        if text is None:
            text = self._event_texts[key] = local_time_text(campaign.event_at, time_zone)
        return text

    def render(
        self,
        message: Message,
        channel: Channel,
        context: Mapping[str, Any],
        locale: str,
        personas: tuple[str, ...],
    ) -> Content:
        assert message.variant_id is not None
        content = render_variant(
            message.variant_id,
            channel,
            context,
            locale,
            personas=personas,
            fresh=message.is_test,
            reused=None if message.is_test else self._reused,
        )
        return marked_as_test(content) if message.is_test else content

    def track(self, message: Message, channel: Channel, content: Content) -> Content:
        if self.campaign(message) is None:
            return content
        # Clicks and opens of campaign messages feed the funnel.
        return track_content(content, message_id=message.pk, channel=channel)


class CampaignsPlugin:
    def batch(self, messages: Sequence[Message]) -> Batch:
        return Batch(messages)

    def send_rates(self, campaign_ids: Collection[int]) -> dict[int, int]:
        rows = Campaign.objects.filter(
            pk__in=list(campaign_ids), send_rate_per_minute__isnull=False
        ).values_list("pk", "send_rate_per_minute")
        return {pk: rate for pk, rate in rows if rate}

    def retention_keeps(self) -> list[str]:
        finished = ", ".join(f"'{status}'" for status in FINISHED)
        return [
            # A live campaign's funnel roll-up and a triggered campaign's re-entry window
            # count its messages.
            f"""m.campaign_id IS NOT NULL AND NOT EXISTS (
                SELECT 1 FROM {table_name(Campaign)} c
                WHERE c.id = m.campaign_id AND c.status IN ({finished}))""",
            # A conversion whose message vanished would read as a hold-out conversion.
            f"EXISTS (SELECT 1 FROM {table_name(Conversion)} v WHERE v.message_id = m.id)",
        ]

    def failure_alerts(self, now: datetime) -> list[int]:
        return campaign_pauses(now=now)

    def urls(self) -> list[Any]:
        return [
            # One name for both forms: a message's links (one token, the link's index after
            # it) and links sent before (a token per link); reverse() picks by its kwargs.
            path("t/c/<str:token>/<int:index>/", views.track_click, name="track-click"),
            path("t/c/<str:token>/", views.track_click, name="track-click"),
            path("t/o/<str:token>.gif", views.track_open, name="track-open"),
        ]
