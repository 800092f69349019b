"""Releasing held deliveries when their time comes (quiet hours ended, queues drained, new cap
window), each exactly once, highest priority first.

Due rows are locked with `skip_locked`, so two beat processes running this job at once release
disjoint sets; the status moves held -> queued inside that lock. Before a message goes out, its
channels are checked again (the user may have opted out overnight) and it is admitted again
(still quiet? queues still deep? room under the cap?); it can be held again or suppressed.
"""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from django.db import transaction
from django.utils import timezone

from channels.base import Channel
from notifier.db import insert_rows, update_rows
from notifier.models import Delivery, DeliveryEvent, EventKind, Message
from notifier.queues import Lane
from notifier.services.admission import message_admission
from notifier.services.pipeline import (
    Routed,
    audience_of,
    campaign_status_of,
    channel_decision,
    message_type,
    publish_queued,
    series_stopped_of,
)
from notifier.status import DeliveryStatus

S = DeliveryStatus


@dataclass
class ReleaseReport:
    released: int = 0
    held_again: int = 0
    suppressed: int = 0


def held_release(*, now: datetime | None = None, limit: int = 2000) -> ReleaseReport:
    """Release up to `limit` due held deliveries. Safe to run twice at once."""
    now = now or timezone.now()
    report = ReleaseReport()
    with transaction.atomic():
        due = list(
            Delivery.objects.select_for_update(skip_locked=True, of=("self",))
            .filter(status=S.HELD, next_attempt_at__lte=now)
            .order_by("priority_rank", "next_attempt_at", "pk")
            .values_list("pk", "message_id", "channel")[:limit]
        )
        if not due:
            return report
        held: dict[int, list[tuple[int, Channel]]] = defaultdict(list)
        for pk, message_id, channel in due:
            held[message_id].append((pk, Channel(channel)))
        messages = {
            m.pk: m for m in Message.objects.filter(pk__in=list(held)).select_related("user")
        }
        audience = audience_of(list(messages.values()), now)
        moves: list[tuple[Any, ...]] = []
        events: list[tuple[Any, ...]] = []
        released: list[Routed] = []
        ids: dict[tuple[int, str], int] = {}
        # Highest priority first (the order of `due`), so it takes the morning's cap slots.
        for message_id in dict.fromkeys(message_id for _, message_id, _ in due):
            message = messages[message_id]
            deliveries = held[message_id]
            decisions = {
                pk: channel_decision(channel, message, audience) for pk, channel in deliveries
            }
            still_wanted = [pk for pk, decision in decisions.items() if decision.sends]
            admission = (
                message_admission(
                    message=message,
                    user=message.user,
                    kind=message_type(message).kind,
                    now=now,
                    congested=audience.congested,
                    irrelevant=audience.irrelevant.get((message.user_id, message.type_id), 0),
                    campaign_status=campaign_status_of(message, audience),
                    series_stopped=series_stopped_of(message, audience),
                )
                if still_wanted
                else None
            )
            for pk, channel in deliveries:
                decision = decisions[pk]
                if not decision.sends:
                    status, reason, until = S.SUPPRESSED, decision.reason or "", None
                else:
                    assert admission is not None
                    status, reason, until = admission.status, admission.reason, admission.until
                if status == S.QUEUED:
                    report.released += 1
                    released.append(Routed(message_id, message.user_id, channel, S.QUEUED))
                    ids[(message_id, channel)] = pk
                    until, reason = now, ""
                elif status == S.HELD:
                    report.held_again += 1
                else:
                    report.suppressed += 1
                moves.append(
                    (pk, status, reason, until, now, now if status == S.SUPPRESSED else None)
                )
                events.append(
                    (
                        pk,
                        now,
                        EventKind.RELEASED,
                        status,
                        reason,
                        "",
                        "",
                        {"until": until.isoformat()} if status == S.HELD and until else {},
                    )
                )
            if admission is not None and admission.cap is not None:
                Message.objects.filter(pk=message_id).update(
                    cap_day=admission.cap.day, cap_week=admission.cap.week
                )
        update_rows(
            Delivery,
            ("status", "reason", "next_attempt_at", "updated_at", "finished_at"),
            moves,
            where={"status": S.HELD},
        )
        insert_rows(
            DeliveryEvent,
            ("delivery", "at", "kind", "status", "reason", "provider", "error", "detail"),
            events,
        )
        publish_queued(released, ids, {pk: Lane(m.lane) for pk, m in messages.items()})
    return report
