"""Provider status callbacks: move a delivery forward, never back, and never twice.

Webhooks (and tracking) arrive late, out of order and more than once. A status only ever moves
forward along the engagement order (sent -> delivered -> opened/read -> clicked); a duplicate
or an older status changes nothing but can still fill in the time it happened (a "delivered"
that arrives after "clicked" records when it was delivered). A bounce or rejection after
"sent" fails the delivery with its reason. Status follows the provider's word, never a timer.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from enum import StrEnum

from django.db import transaction
from django.db.models import Q
from django.db.models.functions import Coalesce
from django.utils import timezone

from notifier.models import Delivery, DeliveryEvent, EventKind
from notifier.status import ENGAGEMENT_RANK, DeliveryStatus, Reason, sources_of

S = DeliveryStatus


class ProviderStatus(StrEnum):
    """Statuses as providers report them, normalised (anymail, Twilio and FCM map onto these)."""

    DELIVERED = "delivered"
    OPENED = "opened"
    CLICKED = "clicked"
    BOUNCED = "bounced"
    REJECTED = "rejected"
    COMPLAINED = "complained"
    DEFERRED = "deferred"  # the provider will keep trying: a note on the timeline
    UNSUBSCRIBED = "unsubscribed"  # the recipient unsubscribed at the provider


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
        _event(
            delivery_id,
            occurred_at,
            Delivery.objects.get(pk=delivery_id).status,
            "",
            {**note, **(detail or {})},
            error=error,
        )
        return CallbackResult(Applied.RECORDED, delivery_id)
    reason = failure_reason or Reason.INVALID_RECIPIENT
    target = MOVES[status]
    with transaction.atomic():
        stamp = STAMPS.get(target)
        if stamp:  # fill the milestone's time even when the status cannot move
            Delivery.objects.filter(pk=delivery_id).update(**{stamp: Coalesce(stamp, occurred_at)})
        if target is S.FAILED:
            moved = Delivery.objects.filter(pk=delivery_id, status=S.SENT).update(
                status=S.FAILED,
                reason=reason,
                finished_at=occurred_at,
                last_error=error or f"{provider}: {status}",
                updated_at=timezone.now(),
            )
        else:
            below = [
                s
                for s in sources_of(target)
                if ENGAGEMENT_RANK.get(s, 99) < ENGAGEMENT_RANK[target]
            ]
            moved = Delivery.objects.filter(Q(pk=delivery_id) & Q(status__in=below)).update(
                status=target, updated_at=timezone.now()
            )
        if moved:
            _event(
                delivery_id,
                occurred_at,
                target,
                reason if target is S.FAILED else "",
                {"provider_status": str(status), **(detail or {})},
                error=error if target is S.FAILED else "",
            )
    return CallbackResult(Applied.MOVED if moved else Applied.RECORDED, delivery_id)


def _event(
    delivery_id: int,
    at: datetime,
    status: str,
    reason: str,
    detail: dict[str, object],
    *,
    error: str = "",
) -> None:
    DeliveryEvent.objects.create(
        delivery_id=delivery_id,
        at=at,
        kind=EventKind.CALLBACK,
        status=status,
        reason=reason,
        error=error,
        detail=detail,
    )
