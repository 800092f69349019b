"""The failure-rate job's turn for campaigns (notifier.operations.alerts runs it through the
campaigns hook): a running campaign whose finished sends fail above its own
`pause_failure_percent` (with at least NOTIFIER_CAMPAIGN_PAUSE_MIN_SENDS of them) is paused
through the lifecycle service, with the reason on the campaign for the marketer. A second run
finds it paused and moves on."""

from __future__ import annotations

import logging
from datetime import datetime, timedelta

from django.conf import settings
from django.db.models import Count, Q

from campaigns.models import Campaign, CampaignStatus
from campaigns.services.lifecycle import CampaignError
from campaigns.services.lifecycle import campaign_pause as pause
from notifier.logcontext import bound
from notifier.models import DeliveryEvent, EventKind
from notifier.operations.alerts import alert_to_sentry
from notifier.policies.alerts import Counts, Decision, campaign_pause
from notifier.status import DeliveryStatus as S

# The alert lines keep the alerts job's logger name, so log filters and alert rules find them.
log = logging.getLogger("notifier.operations.alerts")


def campaign_counts(*, since: datetime, campaign_ids: list[int]) -> dict[int, Counts]:
    """campaign id -> its sends that finished (sent or failed for good) since `since`.

    A transient failure that will be retried is not a failed send yet: a campaign is judged
    on outcomes, a provider on attempts."""
    if not campaign_ids:
        return {}
    rows = (
        DeliveryEvent.objects.filter(
            kind=EventKind.ATTEMPT,
            at__gte=since,
            status__in=[S.SENT, S.FAILED],
            delivery__message__campaign_id__in=campaign_ids,
        )
        .values_list("delivery__message__campaign_id")
        .annotate(total=Count("pk"), failed=Count("pk", filter=Q(status=S.FAILED)))
        .order_by()
    )
    return {campaign_id: Counts(total, failed) for campaign_id, total, failed in rows}


def campaign_pauses(*, now: datetime) -> list[int]:
    """Pause the running campaigns whose finished sends fail above their own threshold; the
    ids of those paused."""
    paused: list[int] = []
    window = settings.NOTIFIER_ALERT_WINDOW_S
    running = {
        c.pk: c for c in Campaign.objects.filter(status=CampaignStatus.RUNNING).order_by("pk")
    }
    counts = campaign_counts(since=now - timedelta(seconds=window), campaign_ids=list(running))
    for campaign_id, campaign_counted in sorted(counts.items()):
        campaign = running[campaign_id]
        decision: Decision = campaign_pause(
            campaign.name,
            campaign_counted,
            threshold_percent=campaign.pause_failure_percent,
            min_sample=settings.NOTIFIER_CAMPAIGN_PAUSE_MIN_SENDS,
            window_s=window,
        )
        if not decision.act:
            continue
        with bound(campaign_id=campaign_id):
            try:
                held = pause(campaign=campaign, by=None, reason=decision.reason)
            except CampaignError as error:  # paused, cancelled or finished meanwhile
                log.info("campaign %s not paused: %s", campaign_id, error)
                continue
            message = f"campaign {campaign.name!r} paused: {decision.reason}"
            log.warning(message, extra={"alert": "campaign_paused", "held": held})
            alert_to_sentry(
                message,
                fingerprint=["notifier.alerts", "campaign_paused", str(campaign_id)],
                tags={"campaign_id": str(campaign_id)},
            )
        paused.append(campaign_id)
    return paused
