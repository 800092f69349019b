"""Releasing held deliveries when their time comes (quiet hours ended, queues drained, new cap
window), each exactly once, highest priority first.

A message is released as a whole: due messages are locked with `skip_locked` at the message
level, so two beat processes running this job at once release disjoint sets of messages, and
never split one message's channels between them (each run would otherwise take a cap slot for
its half). Inside that lock each message's due deliveries move held -> queued together. Before a
message goes out, its channels are checked again (the user may have opted out overnight) and it
is admitted again (still quiet? queues still deep? room under the cap?); it can be held again or
suppressed. The run's cap slots are taken in one decision, highest priority first, and a message
yields to a higher-priority one of the same user that is due later the same day
(`settle_caps`), so the order of the morning's release window does not decide who gets the slot.
"""

from __future__ import annotations

import logging
import time
from collections import defaultdict
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from django.db import transaction
from django.db.models import Exists, Max, Min, OuterRef, Subquery
from django.db.models.functions import Trunc
from django.utils import timezone

from channels.base import Channel
from notifier import dispatch
from notifier.models import Delivery, EventKind, Message, recipients_attach
from notifier.models.series import SERIES_KEY_PREFIX
from notifier.policies.routing import escalation_stops, suppress
from notifier.queues import MAINTENANCE_QUEUE, Lane
from notifier.services.admission import Admission, message_admission, settle_caps
from notifier.services.date_series import series_steps_stopped
from notifier.services.digests import digests_fold
from notifier.services.pipeline import (
    Routed,
    audience_of,
    channel_decision,
    message_type,
    publish_queued,
)
from notifier.services.throttles import throttles_take
from notifier.services.transitions import Event, deliveries_set
from notifier.status import DeliveryStatus, Reason

log = logging.getLogger(__name__)
S = DeliveryStatus
WAKE_TASK = "notifier.release_held_at"
# Where a held delivery goes when its time comes: out, held again, or suppressed.
RELEASE_OUTCOMES = frozenset({S.QUEUED, S.HELD, S.SUPPRESSED})


@dataclass
class ReleaseReport:
    released: int = 0
    held_again: int = 0
    suppressed: int = 0
    messages: int = 0  # messages whose due deliveries the run took

    def add(self, other: ReleaseReport) -> None:
        self.released += other.released
        self.held_again += other.held_again
        self.suppressed += other.suppressed
        self.messages += other.messages


def _due_message_ids(now: datetime, limit: int) -> list[int]:
    """Lock up to `limit` messages with held deliveries that are due, highest priority first;
    messages another run holds are skipped whole."""
    due = Delivery.objects.filter(
        message=OuterRef("pk"), status=S.HELD, next_attempt_at__lte=now
    ).order_by()
    first = due.values("message").annotate(v=Min("priority_rank")).values("v")
    earliest = due.values("message").annotate(v=Min("next_attempt_at")).values("v")
    return list(
        Message.objects.select_for_update(skip_locked=True, of=("self",))
        .filter(Exists(due))
        .annotate(rank=Subquery(first), due_at=Subquery(earliest))
        .order_by("rank", "due_at", "pk")
        .values_list("pk", flat=True)[:limit]
    )


def held_release(*, now: datetime | None = None, limit: int = 2000) -> ReleaseReport:
    """Release the due held deliveries of up to `limit` messages. Safe to run twice at once."""
    now = now or timezone.now()
    report = ReleaseReport()
    with transaction.atomic():
        message_ids = _due_message_ids(now, limit)
        if not message_ids:
            return report
        report.messages = len(message_ids)
        # The message lock keeps other release runs out; the row locks keep out a writer that
        # is changing one of its deliveries right now (a cancel): that one stays for later.
        due = list(
            Delivery.objects.select_for_update(skip_locked=True, of=("self",))
            .filter(message_id__in=message_ids, status=S.HELD, next_attempt_at__lte=now)
            .order_by("priority_rank", "next_attempt_at", "pk")
            .values_list("pk", "message_id", "channel", "reason")
        )
        held: dict[int, list[tuple[int, Channel]]] = defaultdict(list)
        for pk, message_id, channel, _ in due:
            held[message_id].append((pk, Channel(channel)))
        # An escalation's later step whose message was read, opened or clicked meanwhile.
        escalating = {
            pk: message_id for pk, message_id, _, reason in due if reason == ESCALATION_WAIT
        }
        stopped = _escalations_stopped(escalating)
        messages = {
            m.pk: m
            for m in Message.objects.filter(pk__in=list(held)).select_related(
                "user", "user__notifier_recipient"
            )
        }
        recipients_attach(m.user for m in messages.values())
        # A date series' step whose date moved, was removed or exited, or whose earlier step
        # the person clicked: the rest of the series is moot.
        series_stopped = series_steps_stopped(
            {
                m.pk: m.cancel_key
                for m in messages.values()
                if m.cancel_key and m.cancel_key.startswith(SERIES_KEY_PREFIX)
            }
        )
        audience = audience_of(list(messages.values()), now)
        order = list(dict.fromkeys(message_id for _, message_id, _, _ in due))
        decisions = {
            message_id: {
                pk: suppress(series_stopped[message_id].reason)
                if message_id in series_stopped
                else ESCALATION_MOOT
                if pk in stopped
                else channel_decision(channel, messages[message_id], audience)
                for pk, channel in held[message_id]
            }
            for message_id in order
        }
        admitted: dict[int, Admission] = {}
        for message_id in order:
            if not any(decision.sends for decision in decisions[message_id].values()):
                continue
            message = messages[message_id]
            admitted[message_id] = message_admission(
                message=message,
                user=message.user,
                kind=message_type(message).kind,
                now=now,
                congested=audience.congested,
                irrelevant=audience.irrelevant.get((message.user_id, message.type_id), 0),
                campaign=audience.campaigns.facts(message),
                take_cap=False,
            )
        # A scheduled message of a throttled type takes its slot as it goes, before the caps.
        # Over the throttle, a folding type's message joins the digest of its key: its held
        # deliveries, these and any later escalation step, are not sent on their own
        # (suppressed `throttled`, their events marked `folded_into_digest`); a dropping
        # type's is suppressed.
        throttled = throttles_take(
            [messages[i] for i, a in admitted.items() if a.status == S.QUEUED], now
        )
        folded = digests_fold([messages[i] for i in throttled], now)
        for message_id in throttled:
            admitted[message_id] = Admission(S.SUPPRESSED, Reason.THROTTLED)
        # One cap decision for the run: every channel of a message shares its message's slot.
        admitted = dict(zip(admitted, settle_caps(list(admitted.values())), strict=True))
        moves: list[tuple[Any, ...]] = []
        events: list[Event] = []
        released: list[Routed] = []
        ids: dict[tuple[int, str], int] = {}
        for message_id in order:
            message = messages[message_id]
            admission = admitted.get(message_id)
            for pk, channel in held[message_id]:
                decision = decisions[message_id][pk]
                if not decision.sends:
                    status, reason, until = S.SUPPRESSED, decision.reason or "", None
                else:
                    assert admission is not None
                    status, reason, until = admission.status, admission.reason, admission.until
                # An escalation step held again (quiet hours, a cap) stays one: its row keeps
                # `escalation_wait`, so the "seen?" check runs again when it comes up; its
                # event says why it waits longer.
                row_reason = ESCALATION_WAIT if status == S.HELD and pk in escalating else reason
                if status == S.QUEUED:
                    report.released += 1
                    released.append(Routed(message_id, message.user_id, channel, S.QUEUED))
                    ids[(message_id, channel)] = pk
                    until = now
                elif status == S.HELD:
                    report.held_again += 1
                else:
                    report.suppressed += 1
                moves.append(
                    (pk, status, row_reason, until, now, now if status == S.SUPPRESSED else None)
                )
                events.append(
                    (
                        pk,
                        now,
                        EventKind.RELEASED,
                        status,
                        reason,
                        None,
                        "",
                        "",
                        {"until": until.isoformat()}
                        if status == S.HELD and until
                        else FOLDED
                        if message_id in folded and reason == Reason.THROTTLED
                        else {},
                    )
                )
            if admission is not None and admission.cap is not None:
                Message.objects.filter(pk=message_id).update(
                    cap_day=admission.cap.day, cap_week=admission.cap.week
                )
        for pk in _later_steps(folded, {pk for pk, _, _, _ in due}):
            report.suppressed += 1
            moves.append((pk, S.SUPPRESSED, Reason.THROTTLED, None, now, now))
            events.append(
                (pk, now, EventKind.RELEASED, S.SUPPRESSED, Reason.THROTTLED, None, "", "", FOLDED)
            )
        deliveries_set(
            ("status", "reason", "next_attempt_at", "updated_at", "finished_at"),
            moves,
            source=S.HELD,
            targets=RELEASE_OUTCOMES,
            events=events,
        )
        publish_queued(released, ids, {pk: Lane(m.lane) for pk, m in messages.items()})
    return report


ESCALATION_WAIT = str(Reason.ESCALATION_WAIT)
FOLDED: dict[str, Any] = {"folded_into_digest": True}


def _later_steps(message_ids: set[int], taken: set[int]) -> list[int]:
    """The held deliveries of these messages not due yet (an escalation's later steps), locked:
    a message folded into a digest goes with the digest, none of its steps alone."""
    if not message_ids:
        return []
    return list(
        Delivery.objects.select_for_update(of=("self",))
        .filter(message_id__in=message_ids, status=S.HELD)
        .exclude(pk__in=taken)
        .order_by("pk")
        .values_list("pk", flat=True)
    )


ESCALATION_MOOT = suppress(Reason.ESCALATION_STOPPED)
# What says the person has seen a message: its escalation's later steps are then moot.
SEEN = (S.OPENED, S.READ, S.CLICKED)


def _escalations_stopped(waiting: dict[int, int]) -> set[int]:
    """Of the escalation steps waiting (delivery id -> message id), those whose message has a
    delivery the person read, opened or clicked (escalation_stops decides)."""
    if not waiting:
        return set()
    seen = set(
        Delivery.objects.filter(message_id__in=set(waiting.values()), status__in=SEEN)
        .values_list("message_id", flat=True)
        .distinct()
    )
    return {pk for pk, message_id in waiting.items() if escalation_stops(message_id in seen)}


def held_release_due(*, budget_s: float = 10.0, limit: int = 2000) -> ReleaseReport:
    """Release runs of up to `limit` messages one after another, each its own transaction, for
    as long as each finds a full batch and `budget_s` lasts: 100,000 messages scheduled for
    09:00 go out in a few beat ticks, not 2,000 every 15 seconds. What is left waits for the
    next tick; a second beat process's run takes other messages (skip_locked)."""
    report = ReleaseReport()
    started = time.monotonic()
    while True:
        run = held_release(limit=limit)
        report.add(run)
        if run.messages < limit or time.monotonic() - started >= budget_s:
            return report


def held_wakeups(*, since: datetime, within: timedelta, limit: int = 64) -> list[datetime]:
    """When to run the release so that what waits for a time of its own (a scheduled send, an
    escalation's later step) and comes due after `since` and within `within` of it goes at its
    time: for each second in which some comes due, the latest due time in it (a run then finds
    that second's deliveries all due). Soonest first, at most `limit`. Holds that end on a
    schedule of their own (quiet hours spread over the morning, caps, backpressure) are left to
    the beat's ticks."""
    return list(
        Delivery.objects.filter(
            status=S.HELD,
            reason__in=WAKE_REASONS,
            next_attempt_at__gt=since,
            next_attempt_at__lte=since + within,
        )
        .annotate(second=Trunc("next_attempt_at", "second"))
        .values("second")
        .annotate(last=Max("next_attempt_at"))
        .order_by("second")
        .values_list("last", flat=True)[:limit]
    )


def held_wakeups_publish(*, since: datetime, within: timedelta) -> int:
    """Publish a release run (WAKE_TASK) for each of `held_wakeups`, counted down to its time
    (at once for one already due) and expiring `within` later, when the beat's own ticks have
    covered it. Two beat processes publish the same wake-ups: the second run at a time finds
    nothing left (skip_locked, due only). Returns how many it published; a broker that cannot
    take them leaves the rest to the beat's ticks."""
    wakeups = held_wakeups(since=since, within=within)
    published = 0
    for at in wakeups:
        wait = max(0.0, (at - timezone.now()).total_seconds()) + WAKE_MARGIN_S
        try:
            dispatch.publish(
                WAKE_TASK,
                queue=MAINTENANCE_QUEUE,
                countdown=wait,
                expires=wait + within.total_seconds(),
            )
        except Exception:
            log.exception("could not publish a release wake-up; the next beat tick releases")
            break
        published += 1
    return published


WAKE_REASONS = (str(Reason.SCHEDULED), str(Reason.ESCALATION_WAIT))
# A wake-up runs this much after the due time it was set for: a run at exactly that instant
# could read the clock a hair before it.
WAKE_MARGIN_S = 0.02
