"""Deliveries that lost a half-open probe race wait for the probe, not for its lease.

A delivery task that finds its provider half-open with someone else's probe in flight defers
its deliveries and leaves a waiter token at the breaker (`notifier.provider_limits`). The probe's
success hands the tokens back in its CLOSED transition, and `breaker_waiters_wake` brings
those deliveries forward and publishes them now. A failed or dead probe wakes nobody: the
deferred deliveries come back by their own countdown.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence

from django.utils import timezone

from channels.base import Channel
from notifier import dispatch
from notifier.models import Delivery
from notifier.provider_limits import Transition, TransitionKind
from notifier.queues import Lane
from notifier.status import DeliveryStatus, Reason

log = logging.getLogger(__name__)

# Why a deferred delivery is queued: nothing else may be pulled forward by a wake-up.
_DEFERRED_REASONS = (Reason.CIRCUIT_OPEN, "")


def breaker_waiter_token(*, lane: Lane, channel: Channel, delivery_ids: Sequence[int]) -> str:
    """What a loser of the probe race leaves at the breaker: enough to publish it again."""
    return f"{lane}|{channel}|{','.join(str(pk) for pk in delivery_ids)}"


def breaker_waiters_wake(transition: Transition) -> int:
    """Publish now the deferred deliveries of every waiter a closing handed back; returns how
    many deliveries were woken. Safe twice: only queued, deferred rows are pulled forward,
    and the claim lets one task send each."""
    if transition.kind is not TransitionKind.CLOSED or not transition.waiters:
        return 0
    now = timezone.now()
    woken = 0
    for token in transition.waiters:
        try:
            lane_text, channel_text, ids_text = token.split("|", 2)
            lane, channel = Lane(lane_text), Channel(channel_text)
            ids = [int(pk) for pk in ids_text.split(",") if pk]
        except ValueError:
            log.warning("ignoring a malformed breaker waiter token %r", token[:80])
            continue
        due = list(
            Delivery.objects.filter(
                pk__in=ids,
                status=DeliveryStatus.QUEUED,
                reason__in=_DEFERRED_REASONS,
                next_attempt_at__gt=now,
            ).values_list("pk", flat=True)
        )
        if not due:
            continue
        Delivery.objects.filter(
            pk__in=due, status=DeliveryStatus.QUEUED, reason__in=_DEFERRED_REASONS
        ).update(next_attempt_at=now, updated_at=now)
        dispatch.publish_deliver(due, lane, channel)
        woken += len(due)
    if woken:
        log.info("%s closed: %d waiting deliveries published now", transition.key, woken)
    return woken
