"""The failure-rate job: alert on failing providers, pause failing campaigns.

Every minute (beat, maintenance queue) it counts the delivery attempt events of the last
NOTIFIER_ALERT_WINDOW_S seconds, once grouped by provider and once by running campaign, and
asks the pure policies in `notifier.policies.alerts`:

- a provider above NOTIFIER_ALERT_FAILURE_RATE (with at least NOTIFIER_ALERT_MIN_ATTEMPTS
  attempts) gets a warning log line and a Sentry event, then nothing more for
  NOTIFIER_ALERT_COOLDOWN_S: the cooldown is a Redis key taken with SET NX, so two runs at once
  (or two beats) alert once;
- a running campaign whose finished sends fail above its own `pause_failure_percent` (with at
  least NOTIFIER_CAMPAIGN_PAUSE_MIN_SENDS of them) is paused through the lifecycle service,
  with the reason on the campaign for the marketer. A second run finds it paused and moves on.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from datetime import datetime, timedelta

from django.conf import settings
from django.db.models import Count, Q
from django.utils import timezone

from notifier.cooldowns import cooldown_take
from notifier.hooks import campaign_failure_alerts
from notifier.models import DeliveryEvent, EventKind
from notifier.operations.observability import sentry_on
from notifier.policies.alerts import Counts, provider_alert
from notifier.status import DeliveryStatus

log = logging.getLogger(__name__)
S = DeliveryStatus

# Attempts recorded without calling a provider (a contact point removed since routing).
NOT_A_PROVIDER = ("", "pipeline")


@dataclass
class AlertsReport:
    alerted: list[str] = field(default_factory=list)
    cooling_down: list[str] = field(default_factory=list)
    paused: list[int] = field(default_factory=list)


# --- Counting -----------------------------------------------------------------------------------


def provider_counts(*, since: datetime) -> dict[str, Counts]:
    """ "channel:provider" -> attempts and failures (anything but sent) since `since`."""
    rows = (
        DeliveryEvent.objects.filter(kind=EventKind.ATTEMPT, at__gte=since)
        .exclude(provider__in=NOT_A_PROVIDER)
        .values_list("delivery__channel", "provider")
        .annotate(total=Count("pk"), failed=Count("pk", filter=~Q(status=S.SENT)))
        .order_by()
    )
    return {
        f"{channel}:{provider}": Counts(total, failed) for channel, provider, total, failed in rows
    }


# --- Acting -------------------------------------------------------------------------------------


def alert_to_sentry(message: str, *, fingerprint: list[str], tags: dict[str, str]) -> None:
    """A warning event in Sentry (when Sentry is on), grouped by `fingerprint`."""
    if not sentry_on():
        return
    import sentry_sdk

    sentry_sdk.capture_message(message, level="warning", fingerprint=fingerprint, tags=tags)


def provider_alerts(*, now: datetime, report: AlertsReport) -> None:
    window = settings.NOTIFIER_ALERT_WINDOW_S
    for key, counts in sorted(provider_counts(since=now - timedelta(seconds=window)).items()):
        decision = provider_alert(
            key,
            counts,
            threshold=settings.NOTIFIER_ALERT_FAILURE_RATE,
            min_attempts=settings.NOTIFIER_ALERT_MIN_ATTEMPTS,
            window_s=window,
        )
        if not decision.act:
            continue
        if not cooldown_take(f"provider:{key}", settings.NOTIFIER_ALERT_COOLDOWN_S):
            report.cooling_down.append(key)
            continue
        message = f"provider failure rate: {decision.reason}"
        log.warning(message, extra={"alert": "provider_failure_rate", "provider_key": key})
        alert_to_sentry(
            message,
            fingerprint=["notifier.alerts", "provider_failure_rate", key],
            tags={"provider_key": key},
        )
        report.alerted.append(key)


def failure_alerts_run(*, now: datetime | None = None) -> AlertsReport:
    """The job: provider alerts, then campaign pauses (campaigns' hook). Safe to run twice
    at once."""
    now = now or timezone.now()
    report = AlertsReport()
    provider_alerts(now=now, report=report)
    report.paused.extend(campaign_failure_alerts(now))
    return report
