"""Provider webhooks, after their signature is checked: each event applied once, in one transaction.

Every event is first written as a `ProviderEvent` under its unique (provider, event id): a
replay, or the provider re-sending an event we already took, hits the unique index and changes
nothing (two copies at the same moment: the second waits for the first's commit, then finds
it). The event's effect (a status move through `delivery_status_callback`, a suppressed address,
an unsubscribe, a consent change) is written in the same transaction, so it happens exactly
when its event row does. Events for message ids we do not know are recorded as `unknown` and
change nothing else: yet. An event can come before our worker has recorded the send's provider
id; it keeps what it asks and is applied when the id is (see notifier.services.callbacks).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from typing import Any

from django.db import IntegrityError, transaction
from django.utils import timezone

from channels.base import Channel
from notifier.models import (
    ALL_CHANNELS,
    Consent,
    ConsentPurpose,
    Delivery,
    EventOutcome,
    ProviderEvent,
    Recipient,
)
from notifier.policies.providers import EventAction, Keyword, event_time_problem, sms_keyword
from notifier.services.callbacks import (
    Applied,
    ProviderReport,
    provider_report_apply,
    waiting_action,
)
from notifier.services.preferences import consent_give, consent_withdraw
from notifier.text import json_value_problem, text_problem
from notifier.user_keys import UserKey

log = logging.getLogger(__name__)

SMS_STOP_SOURCE = "sms-stop"
SMS_START_SOURCE = "sms-start"


@dataclass(frozen=True)
class ProviderEventIn:
    """One event as a provider reported it, in plain values."""

    source: str  # who sent the webhook: "mailgun", "twilio"
    event_id: str  # unique per source
    event_type: str  # the provider's own name for it
    delivery_provider: str  # Delivery.provider of the deliveries it can name: "django", "twilio"
    provider_message_id: str
    occurred_at: datetime | None = None
    recipient: str = ""  # the address or number the event is about, when given
    error: str = ""  # the provider's words for a failure
    detail: dict[str, Any] = field(default_factory=dict)


class InvalidProviderEvent(ValueError):
    """An event whose values cannot be stored or are not ones a provider sends (NUL, lone
    surrogates, numbers that are not finite, a time out of range): refused before anything is
    written. The webhook views answer it with a 400 carrying the message."""


def check_provider_event(event: ProviderEventIn, *, now: datetime) -> ProviderEventIn:
    """The event with its time in UTC (PostgreSQL refuses offsets past ±15:59), or
    InvalidProviderEvent naming the field to fix."""
    for name in (
        "source",
        "event_id",
        "event_type",
        "delivery_provider",
        "provider_message_id",
        "recipient",
        "error",
    ):
        if problem := text_problem(getattr(event, name)):
            raise InvalidProviderEvent(f"the event's {name.replace('_', ' ')} {problem}")
    if problem := json_value_problem(event.detail):
        raise InvalidProviderEvent(f"the event's details: the body {problem}")
    if event.occurred_at is None:
        return event
    try:
        occurred_at = event.occurred_at.astimezone(UTC)
    except OverflowError:  # 9999-12-31 at -15:00 is past year 9999 in UTC
        raise InvalidProviderEvent("the event's time is out of range") from None
    if problem := event_time_problem(occurred_at, now=now):
        raise InvalidProviderEvent(f"the event {problem}")
    return replace(event, occurred_at=occurred_at)


@dataclass(frozen=True)
class WebhookResult:
    outcome: EventOutcome | None  # None: a replay, refused
    delivery_id: int | None = None

    @property
    def replayed(self) -> bool:
        return self.outcome is None


def _claim_event(event: ProviderEventIn, now: datetime) -> ProviderEvent | None:
    """Write the event's row, or None when it was already processed (a replay)."""
    try:
        with transaction.atomic():
            return ProviderEvent.objects.create(
                provider=event.source,
                event_id=event.event_id[:255],
                event_type=event.event_type[:40],
                provider_message_id=event.provider_message_id[:255],
                delivery_provider=event.delivery_provider[:40],
                outcome=EventOutcome.IGNORED,
                occurred_at=event.occurred_at,
                received_at=now,
                detail=event.detail,
            )
    except IntegrityError:
        log.info("refused a replayed %s event %s", event.source, event.event_id)
        return None


def _finish(row: ProviderEvent, outcome: EventOutcome, delivery_id: int | None) -> WebhookResult:
    ProviderEvent.objects.filter(pk=row.pk).update(outcome=outcome, delivery_id=delivery_id)
    return WebhookResult(outcome, delivery_id)


def provider_event_apply(event: ProviderEventIn, action: EventAction) -> WebhookResult:
    """Apply a delivery's status event (email tracking, SMS status) once; InvalidProviderEvent,
    with nothing written, for values that cannot be stored."""
    now = timezone.now()
    event = check_provider_event(event, now=now)
    with transaction.atomic():
        row = _claim_event(event, now)
        if row is None:
            return WebhookResult(None)
        if action.status is None:
            delivery_id = (
                Delivery.objects.filter(
                    provider=event.delivery_provider,
                    provider_message_id=event.provider_message_id,
                )
                .values_list("pk", flat=True)
                .first()
            )
            return _finish(row, EventOutcome.IGNORED, delivery_id)
        report = ProviderReport(
            provider=event.delivery_provider,
            provider_message_id=event.provider_message_id,
            action=action,
            source=event.source,
            event_id=event.event_id,
            occurred_at=event.occurred_at or now,
            recipient=event.recipient,
            error=event.error,
            detail=event.detail,
        )
        applied = provider_report_apply(report)
        if applied.applied is Applied.UNKNOWN or applied.delivery_id is None:
            # Perhaps early: the send's provider id is not recorded yet. Kept with what it
            # asks, and applied once it is (notifier.services.callbacks).
            ProviderEvent.objects.filter(pk=row.pk).update(action=waiting_action(report))
            return _finish(row, EventOutcome.UNKNOWN, None)
        outcome = EventOutcome.MOVED if applied.applied is Applied.MOVED else EventOutcome.RECORDED
        return _finish(row, outcome, applied.delivery_id)


# --- Inbound SMS: STOP and START -----------------------------------------------------------


def sms_inbound_apply(*, source: str, event_id: str, phone: str, body: str) -> WebhookResult:
    """A text from a user: STOP-style keywords withdraw SMS marketing consent; START restores
    it when a STOP took it away. Any other text is recorded as ignored (its words are not kept).

    `phone` must already be in E.164 (the view normalises it). InvalidProviderEvent, with
    nothing written, for text that cannot be stored.
    """
    for name, value in (("message id", event_id), ("sender", phone), ("text", body)):
        if problem := text_problem(value):
            raise InvalidProviderEvent(f"the {name} {problem}")
    keyword = sms_keyword(body)
    now = timezone.now()
    event = ProviderEventIn(
        source=source,
        event_id=event_id,
        event_type=f"inbound:{keyword or 'other'}",
        delivery_provider="",
        provider_message_id="",
        occurred_at=now,
        detail={"from": phone},
    )
    with transaction.atomic():
        row = _claim_event(event, now)
        if row is None:
            return WebhookResult(None)
        if keyword is None:
            return _finish(row, EventOutcome.IGNORED, None)
        if not phone:
            return _finish(row, EventOutcome.NO_USER, None)
        user_ids = list(Recipient.objects.filter(phone=phone).values_list("user_id", flat=True))
        if not user_ids:
            return _finish(row, EventOutcome.NO_USER, None)
        for user_id in user_ids:
            if keyword is Keyword.STOP:
                consent_withdraw(user_id=user_id, channel=Channel.SMS, source=SMS_STOP_SOURCE)
            elif _stopped_by_sms(user_id):
                consent_give(
                    user_id=user_id,
                    channel=Channel.SMS,
                    source=SMS_START_SOURCE,
                    wording=f"Replied {body.strip()[:40]!r} by SMS from {phone}",
                )
        return _finish(row, EventOutcome.CONSENT, None)


def _stopped_by_sms(user_id: UserKey) -> bool:
    """Whether the SMS consent now in force is a withdrawal that a STOP text made.

    START restores what STOP took away, and nothing more: consent never given, or withdrawn
    in the preference centre, is not granted by a text.
    """
    latest = (
        Consent.objects.filter(
            user_id=user_id,
            purpose=ConsentPurpose.MARKETING,
            channel__in=[Channel.SMS, ALL_CHANNELS],
        )
        .order_by("-at", "-id")
        .values_list("granted", "source")
        .first()
    )
    return latest is not None and not latest[0] and latest[1] == SMS_STOP_SOURCE
