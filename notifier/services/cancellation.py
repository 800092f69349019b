"""Cancelling by key: a sender takes back what it sent with a `cancel_key` before it goes out.

A message sent with `send_at` waits in PostgreSQL (held, reason `scheduled`) until the release
job hands it to the deliver step; one sent now waits for no more than its queue. Either way,
until a provider has it, the sender may change its mind ("the order was cancelled: do not send
the shipping reminder"). `messages_cancel` does that for every message carrying the key (or the
given users' ones):

- each message is locked first, waiting for whoever holds it (a prepare run routing it, the
  release job releasing it), so it sees the message as they left it;
- a message not routed yet is routed straight to `cancelled`: one cancelled delivery per
  channel routing would have tried first, so the support timeline says what happened;
- a routed one has its deliveries that are still pending, held or queued moved to `cancelled`
  (compare-and-set, as every status move: a deliver task claiming one at this instant either
  got it first, and it goes out, or finds it cancelled and sends nothing), and its fallback
  chain emptied, so no later failure hands it to another channel;
- what is sending or sent is left as it is and counted as too late.

Every cancelled delivery carries the reason `sender_cancelled` and, in its event, the key.
Support cancels one message the same way from the customer page (`message_cancel`, reason
`support_cancelled`).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime

from django.db import transaction
from django.db.models import QuerySet
from django.utils import timezone

from notifier.db import any_of
from notifier.models import Delivery, EventKind, Message
from notifier.services.pipeline import Failure, messages_close
from notifier.services.throttles import throttle_slots_release
from notifier.services.transitions import deliveries_move
from notifier.status import DeliveryStatus, Reason
from notifier.user_keys import UserKey

S = DeliveryStatus
NOT_OUT = (S.PENDING, S.HELD, S.QUEUED)  # what a cancel still stops
TOO_LATE = (S.SENDING, S.SENT, S.DELIVERED, S.OPENED, S.READ, S.CLICKED)
WORDS = "cancelled by its sender (cancel key {key!r}) before it went out"


@dataclass(frozen=True)
class CancelReport:
    """What a cancel found: the messages carrying the key, the deliveries it cancelled, and
    those that had gone out already (or were being handed to their provider)."""

    messages: int
    cancelled: int
    too_late: int


def messages_cancel(
    *, cancel_key: str, user_ids: Sequence[UserKey] | None = None, now: datetime | None = None
) -> CancelReport:
    """Cancel what has not gone out of the messages sent with `cancel_key` (of `user_ids`
    only, when given). Safe to run twice, or at once with the release job or a deliver task."""
    keyed = Message.objects.filter(cancel_key=cancel_key)
    if user_ids is not None:
        keyed = keyed.filter(any_of("user_id", user_ids))
    return _cancel(
        keyed,
        reason=Reason.SENDER_CANCELLED,
        words=WORDS.format(key=cancel_key),
        detail={"action": "cancelled by the sender", "cancel_key": cancel_key},
        now=now,
    )


def messages_cancel_because(
    *, cancel_key: str, reason: Reason, words: str, detail: dict[str, str], now: datetime
) -> CancelReport:
    """Cancel what has not gone out of the messages carrying `cancel_key`, for Notifier's own
    reason (a date series' step whose date moved, was removed or exited)."""
    return _cancel(
        Message.objects.filter(cancel_key=cancel_key),
        reason=reason,
        words=words,
        detail=detail,
        now=now,
    )


def message_cancel(*, message_id: int, by: str, now: datetime | None = None) -> CancelReport:
    """Cancel what has not gone out of one message: support's fix, from the customer page
    (`notifier.services.support.support_cancel` records who and why)."""
    return _cancel(
        Message.objects.filter(pk=message_id),
        reason=Reason.SUPPORT_CANCELLED,
        words=f"cancelled by support ({by}) before it went out",
        detail={"action": "cancelled by support", "by": by},
        now=now,
    )


def _cancel(
    messages: QuerySet[Message],
    *,
    reason: Reason,
    words: str,
    detail: dict[str, str],
    now: datetime | None,
) -> CancelReport:
    now = now or timezone.now()
    with transaction.atomic():
        rows = list(
            messages.select_for_update(of=("self",)).order_by("pk").values_list("pk", "routed_at")
        )
        if not rows:
            return CancelReport(0, 0, 0)
        ids = [pk for pk, _ in rows]
        unrouted = [pk for pk, routed_at in rows if routed_at is None]
        cancelled = 0
        if unrouted:
            messages_close(
                closures=dict.fromkeys(unrouted, Failure(reason, words)),
                status=S.CANCELLED,
                now=now,
                detail=detail,
            )
            cancelled = Delivery.objects.filter(
                any_of("message_id", unrouted), status=S.CANCELLED
            ).count()
        waiting = list(
            Delivery.objects.filter(any_of("message_id", ids), status__in=NOT_OUT).values_list(
                "pk", flat=True
            )
        )
        cancelled += len(
            deliveries_move(
                waiting,
                sources=NOT_OUT,
                to=S.CANCELLED,
                kind=EventKind.CANCELLED,
                at=now,
                reason=reason,
                detail=detail,
                finished_at=now,
                next_attempt_at=None,
            )
        )
        Message.objects.filter(any_of("pk", ids)).exclude(fallback_chain=[]).update(
            fallback_chain=[]
        )
        gone = set(
            Delivery.objects.filter(any_of("message_id", ids), status__in=TOO_LATE).values_list(
                "message_id", flat=True
            )
        )
        too_late = Delivery.objects.filter(any_of("message_id", ids), status__in=TOO_LATE).count()
        # What goes out of none of its channels gives its throttle slot back.
        throttle_slots_release([pk for pk in ids if pk not in gone])
    return CancelReport(messages=len(rows), cancelled=cancelled, too_late=too_late)
