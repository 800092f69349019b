"""Provider status callbacks: move a delivery forward, never back, and never twice.

Webhooks (and tracking) arrive late, out of order and more than once. A status only ever moves
forward along the engagement order (sent -> delivered -> opened/read -> clicked); a duplicate
or an older status changes nothing but can still fill in the time it happened (a "delivered"
that arrives after "clicked" records when it was delivered). A bounce or rejection after
"sent" fails the delivery with its reason. Status follows the provider's word, never a timer.

They also arrive early: a provider can report on a send before our worker has recorded the
send's provider id (Twilio's `undelivered`, a bounce of the first email of a 500-message batch
still going out). Such an event waits as `unknown` with what it asks (its `ProviderEvent`);
`early_callbacks_apply`, called as the sender records provider ids, applies it then, in the
order the events happened, and `early_callbacks_reconcile` (the re-queue job) applies what that
missed. Each waiting event is applied once: it is locked, applied and marked in one transaction.
"""

from __future__ import annotations

import logging
from collections import defaultdict
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from enum import StrEnum
from functools import partial
from typing import Any

from django.db import connection, transaction
from django.db.models import Exists, OuterRef, Q, QuerySet
from django.db.models.functions import Coalesce
from django.utils import timezone

from channels.base import Channel
from notifier.models import (
    Delivery,
    EventKind,
    EventOutcome,
    ProviderEvent,
    SuppressedAddress,
    SuppressionReason,
    normalize_email,
    recipient_for,
)
from notifier.policies.providers import EventAction, ProviderStatus
from notifier.services.preferences import unsubscribe
from notifier.services.transitions import delivery_move, delivery_note
from notifier.status import ENGAGEMENT_RANK, DeliveryStatus, Reason, sources_of

log = logging.getLogger(__name__)
S = DeliveryStatus
# ProviderStatus is defined with the pure event policies (notifier.policies.providers), which
# this module uses; it is still importable from here, where callers have always found it.

# How long an early event waits for its send's provider id to be recorded. A send is recorded
# seconds after the provider took it; a worker that died before recording it sends again,
# under a new provider id, so the event will never match.
EARLY_EVENT_HORIZON = timedelta(days=1)
WAITING_BATCH = 1000  # waiting events applied per run, at most

MOVES: dict[ProviderStatus, DeliveryStatus] = {
    ProviderStatus.DELIVERED: S.DELIVERED,
    ProviderStatus.OPENED: S.OPENED,
    ProviderStatus.CLICKED: S.CLICKED,
    ProviderStatus.BOUNCED: S.FAILED,
    ProviderStatus.REJECTED: S.FAILED,
}
# Statuses that only add a note to the delivery's timeline; they never move it.
NOTES = frozenset({ProviderStatus.COMPLAINED, ProviderStatus.DEFERRED, ProviderStatus.UNSUBSCRIBED})
STAMPS: dict[DeliveryStatus, str] = {
    S.DELIVERED: "delivered_at",
    S.OPENED: "opened_at",
    S.CLICKED: "clicked_at",
}


class Applied(StrEnum):
    MOVED = "moved"  # the status moved forward
    RECORDED = "recorded"  # too late or a duplicate: only a missing timestamp was filled
    UNKNOWN = "unknown"  # no delivery with that provider reference


@dataclass(frozen=True)
class CallbackResult:
    applied: Applied
    delivery_id: int | None = None


def delivery_status_callback(
    *,
    provider: str,
    provider_message_id: str,
    status: ProviderStatus,
    occurred_at: datetime | None = None,
    detail: dict[str, object] | None = None,
    failure_reason: Reason | None = None,
    error: str = "",
) -> CallbackResult:
    """Apply one provider status to the delivery it names (see the module docstring).

    A failure (bounce, rejection) fails a delivery that is still `sent`, with
    `failure_reason` (INVALID_RECIPIENT by default) and `error` (the provider's words).
    """
    occurred_at = occurred_at or timezone.now()
    delivery_id = (
        Delivery.objects.filter(provider=provider, provider_message_id=provider_message_id)
        .values_list("pk", flat=True)
        .first()
    )
    if delivery_id is None:
        return CallbackResult(Applied.UNKNOWN)
    if status in NOTES:  # a spam report, a deferral: recorded for support and stats
        note: dict[str, object] = {"provider_status": str(status)}
        if status is ProviderStatus.COMPLAINED:
            note["complaint"] = True
        delivery_note(
            delivery_id,
            kind=EventKind.CALLBACK,
            at=occurred_at,
            detail={**note, **(detail or {})},
            error=error,
        )
        return CallbackResult(Applied.RECORDED, delivery_id)
    reason = failure_reason or Reason.INVALID_RECIPIENT
    target = MOVES[status]
    with transaction.atomic():
        stamp = STAMPS.get(target)
        if stamp:  # fill the milestone's time even when the status cannot move
            Delivery.objects.filter(pk=delivery_id).update(**{stamp: Coalesce(stamp, occurred_at)})
        moving = partial(
            delivery_move,
            delivery_id,
            target,
            kind=EventKind.CALLBACK,
            at=occurred_at,
            detail={"provider_status": str(status), **(detail or {})},
            stamp=False,  # filled above, keeping an earlier time
            updated_at=timezone.now(),
        )
        if target is S.FAILED:
            moved = moving(
                sources=[S.SENT],
                reason=reason,
                error=error,
                finished_at=occurred_at,
                last_error=error or f"{provider}: {status}",
            )
        else:
            moved = moving(
                sources=[
                    s
                    for s in sources_of(target)
                    if ENGAGEMENT_RANK.get(s, 99) < ENGAGEMENT_RANK[target]
                ]
            )
    return CallbackResult(Applied.MOVED if moved else Applied.RECORDED, delivery_id)


# --- A provider's report about one send, with its side effects --------------------------------


@dataclass(frozen=True)
class ProviderReport:
    """What a provider reported about one of our sends, in plain values."""

    provider: str  # Delivery.provider of the send it names: "django", "twilio"
    provider_message_id: str
    action: EventAction
    source: str  # who reported it: "mailgun", "twilio"
    event_id: str
    occurred_at: datetime
    recipient: str = ""  # the address or number the event is about, when given
    error: str = ""  # the provider's own words for a failure
    detail: dict[str, Any] = field(default_factory=dict)


def provider_report_apply(report: ProviderReport) -> CallbackResult:
    """Apply a report whose action moves or notes the delivery: the status (see
    `delivery_status_callback`), then the address suppressed or the recipient unsubscribed as
    the action says. UNKNOWN, with nothing written, when no delivery has that provider id."""
    action = report.action
    assert action.status is not None
    applied = delivery_status_callback(
        provider=report.provider,
        provider_message_id=report.provider_message_id,
        status=action.status,
        occurred_at=report.occurred_at,
        detail={
            "source": report.source,
            "event_id": report.event_id,
            "why": action.why,
            **report.detail,
        },
        failure_reason=action.failure_reason,
        error=f"{report.source}: {action.why}" + (f": {report.error}" if report.error else ""),
    )
    if applied.applied is Applied.UNKNOWN or applied.delivery_id is None:
        return CallbackResult(Applied.UNKNOWN)
    delivery = Delivery.objects.select_related("user", "message").get(pk=applied.delivery_id)
    if action.suppress is not None:
        address_suppress(
            channel=Channel(delivery.channel),
            address=report.recipient or _address_of(delivery),
            reason=action.suppress,
            source=report.source,
            detail=report.error or action.why,
            delivery_id=delivery.pk,
            at=report.occurred_at,
        )
    if action.unsubscribe:
        unsubscribe(
            user_id=delivery.user_id,
            category=delivery.message.type_id,
            channel=delivery.channel,
            scope="channel",
            source=f"{report.source}-unsubscribe",
            message_id=delivery.message_id,
        )
    return applied


def _address_of(delivery: Delivery) -> str:
    profile = recipient_for(delivery.user)
    return profile.phone if delivery.channel == Channel.SMS else profile.email


def address_suppress(
    *,
    channel: Channel,
    address: str,
    reason: SuppressionReason,
    source: str,
    detail: str = "",
    delivery_id: int | None = None,
    at: datetime | None = None,
) -> bool:
    """Put an address on the suppression list; False when it was there already."""
    normalized = normalize_email(address) if channel is Channel.EMAIL else address.strip()
    if not normalized:
        return False
    _, created = SuppressedAddress.objects.get_or_create(
        channel=channel,
        address=normalized,
        defaults={
            "reason": reason,
            "source": source[:60],
            "detail": detail,
            "delivery_id": delivery_id,
            "at": at or timezone.now(),
        },
    )
    return created


# --- Early events: kept until their send's provider id is recorded ---------------------------


def waiting_action(report: ProviderReport) -> dict[str, Any]:
    """What an early event keeps on its ProviderEvent (`action`), to be applied later."""
    action = report.action
    return {
        "why": action.why,
        "status": action.status,
        "failure_reason": action.failure_reason,
        "suppress": action.suppress,
        "unsubscribe": action.unsubscribe,
        "recipient": report.recipient,
        "error": report.error,
    }


def _report_of(event: ProviderEvent) -> ProviderReport | None:
    """The report a waiting event keeps; None for one that keeps none (stored before this)."""
    kept = event.action
    if not event.delivery_provider or not isinstance(kept, dict) or not kept.get("status"):
        return None
    return ProviderReport(
        provider=event.delivery_provider,
        provider_message_id=event.provider_message_id,
        action=EventAction(
            why=str(kept.get("why", "")),
            status=ProviderStatus(kept["status"]),
            failure_reason=Reason(kept["failure_reason"]) if kept.get("failure_reason") else None,
            suppress=SuppressionReason(kept["suppress"]) if kept.get("suppress") else None,
            unsubscribe=bool(kept.get("unsubscribe")),
        ),
        source=event.provider,
        event_id=event.event_id,
        occurred_at=event.occurred_at or event.received_at,
        recipient=str(kept.get("recipient", "")),
        error=str(kept.get("error", "")),
        detail=event.detail if isinstance(event.detail, dict) else {},
    )


def _apply_waiting(events: QuerySet[ProviderEvent], limit: int) -> int:
    """Apply the waiting events among `events` whose delivery is known now, oldest event first
    (as they would have been applied had they come on time). Events another run holds are
    skipped: that run applies them. Returns how many were applied."""
    applied = 0
    with transaction.atomic():
        waiting = list(
            events.filter(outcome=EventOutcome.UNKNOWN)
            .select_for_update(skip_locked=True)
            .order_by(Coalesce("occurred_at", "received_at"), "pk")[:limit]
        )
        for event in waiting:
            report = _report_of(event)
            if report is None:
                continue
            result = provider_report_apply(report)
            if result.applied is Applied.UNKNOWN:
                continue  # still not recorded (a send taken over by another worker)
            outcome = (
                EventOutcome.MOVED if result.applied is Applied.MOVED else EventOutcome.RECORDED
            )
            ProviderEvent.objects.filter(pk=event.pk).update(
                outcome=outcome, delivery_id=result.delivery_id
            )
            applied += 1
    return applied


def early_callbacks_apply(*, refs: Iterable[tuple[str, str]]) -> int:
    """Apply the events that came before these sends' provider ids were recorded: `refs` are
    the (provider, provider message id) pairs just written, in the sender's transaction.

    Never raises into the sender: its sends must be recorded whatever happens here; an event
    left waiting is applied by `early_callbacks_reconcile`."""
    named = _named(refs)
    if named is None:
        return 0
    try:
        with transaction.atomic():  # a savepoint: a failure here leaves the sender's writes
            return _apply_waiting(ProviderEvent.objects.filter(named), limit=WAITING_BATCH)
    except Exception:
        log.exception("early provider events could not be applied now; the re-queue job will")
        return 0


def early_callbacks_waiting(*, refs: Iterable[tuple[str, str]]) -> bool:
    """Whether any event waits for one of these (provider, provider message id) sends: the
    sender asks once per write, before its transaction, and calls `early_callbacks_apply`
    in it only when one does (the usual answer is no, and the savepoints that guard the
    apply cost a round trip each). An event stored after this look is applied by
    `early_callbacks_reconcile`, as one stored while the sender commits always was. On an
    error, True: the apply decides, guarded as ever."""
    by_provider = _by_provider(refs)
    if not by_provider:
        return False
    try:
        if connection.vendor != "postgresql":
            return ProviderEvent.objects.filter(_named(refs), outcome=EventOutcome.UNKNOWN).exists()
        # Each provider's ids as one array (a batch names hundreds): the partial index of
        # waiting events answers it.
        table = connection.ops.quote_name(ProviderEvent._meta.db_table)
        with connection.cursor() as cursor:
            cursor.execute(
                "SELECT EXISTS (SELECT 1 FROM {table} WHERE outcome = %s AND ({named}))".format(
                    table=table,
                    named=" OR ".join(
                        ["(delivery_provider = %s AND provider_message_id = ANY(%s))"]
                        * len(by_provider)
                    ),
                ),
                [
                    EventOutcome.UNKNOWN.value,
                    *(v for provider, ids in by_provider.items() for v in (provider, ids)),
                ],
            )
            return bool(cursor.fetchone()[0])
    except Exception:
        log.exception("could not look for early provider events; applying as usual")
        return True


def _by_provider(refs: Iterable[tuple[str, str]]) -> dict[str, list[str]]:
    by_provider: dict[str, list[str]] = defaultdict(list)
    for provider, provider_message_id in refs:
        if provider_message_id:
            by_provider[provider].append(provider_message_id)
    return by_provider


def _named(refs: Iterable[tuple[str, str]]) -> Q | None:
    by_provider = _by_provider(refs)
    if not by_provider:
        return None
    named = Q()
    for provider, ids in by_provider.items():
        named |= Q(delivery_provider=provider, provider_message_id__in=ids)
    return named


def early_callbacks_reconcile(*, now: datetime | None = None, limit: int = WAITING_BATCH) -> int:
    """Apply the waiting events whose send is recorded now but which `early_callbacks_apply`
    did not see (their webhook committed while the sender was recording). The re-queue job
    runs it. Returns how many it applied."""
    now = now or timezone.now()
    recorded = Delivery.objects.filter(
        provider=OuterRef("delivery_provider"), provider_message_id=OuterRef("provider_message_id")
    )
    return _apply_waiting(
        ProviderEvent.objects.filter(received_at__gte=now - EARLY_EVENT_HORIZON)
        .exclude(delivery_provider="")
        .filter(Exists(recorded)),
        limit=limit,
    )
