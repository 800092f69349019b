"""Delivering: claim by compare-and-set, call the provider, record the outcome; recover lost work.

A delivery is claimed by moving it queued -> sending in a locked UPDATE, so two workers running
the same task (a broker re-delivery, a duplicate publish) never both send it. The claim carries
a token and a lease (`claimed_until`) that the sender renews between sends while it lives; the
claims sweep takes back only claims whose lease ran out (their sender died), and a sender hands
the provider a message only while its claim still holds. Each send's outcome is recorded as
soon as the provider answers, before the next message goes out, as the retry policy decides:
sent, queued again with a backoff, or failed with a reason.
"""

from __future__ import annotations

import logging
import random
import time
import uuid
from collections import defaultdict
from collections.abc import Collection, Iterable, Iterator, Sequence
from contextlib import nullcontext
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from functools import partial

from django.conf import settings
from django.db import connection, transaction
from django.db.models import BooleanField, QuerySet
from django.db.models.expressions import RawSQL
from django.utils import timezone

from channels.base import (
    Channel,
    Content,
    ErrorCode,
    Outcome,
    Outgoing,
    Provider,
    PushTarget,
    SendResult,
    send_each,
)
from channels.registry import providers_for
from notifier import dispatch
from notifier.backpressure import lane_queue_depth
from notifier.db import commit_without_waiting, table_name
from notifier.hooks import campaign_send_rates
from notifier.logcontext import bound
from notifier.models import Delivery, Device, EventKind, Message
from notifier.operations.metrics import record_send
from notifier.operations.observability import personal_values, sentry_on
from notifier.policies.failover import counts_against_health, hands_on, pause_for
from notifier.policies.retry import RetryPolicy, Verdict, after_attempt
from notifier.provider_limits import (
    acquire,
    alert_transition,
    breaker_allows,
    breaker_outcomes,
    provider_pause,
    take,
)
from notifier.queues import Lane
from notifier.rates import Rate
from notifier.selectors import type_info_get
from notifier.services.breakers import breaker_waiter_token, breaker_waiters_wake
from notifier.services.callbacks import (
    early_callbacks_apply,
    early_callbacks_reconcile,
    early_callbacks_waiting,
)
from notifier.services.pipeline import deliveries_fall_back, lost_fallbacks_resume
from notifier.services.quarantine import (
    UNROUTED_COLUMNS,
    dead_runs_count,
    unrouted_of,
    unrouted_republish,
)
from notifier.services.transitions import (
    Event,
    deliveries_claim,
    deliveries_log,
    deliveries_move,
    deliveries_set,
)
from notifier.status import DeliveryStatus, Reason
from notifier.user_keys import UserKey

log = logging.getLogger(__name__)
S = DeliveryStatus

# A task may arrive a moment before next_attempt_at (clock skew between hosts).
EARLY_TOLERANCE = timedelta(seconds=2)
# Where an attempt leaves a claimed delivery: sent, queued for a retry, or failed.
ATTEMPT_OUTCOMES = frozenset({S.SENT, S.QUEUED, S.FAILED})


def retry_policy() -> RetryPolicy:
    return RetryPolicy(
        max_attempts=settings.NOTIFIER_MAX_ATTEMPTS,
        base_delay_s=settings.NOTIFIER_RETRY_BASE_S,
        max_delay_s=settings.NOTIFIER_RETRY_MAX_S,
    )


# --- Delivering ----------------------------------------------------------------------------


@dataclass
class DeliverReport:
    claimed: int = 0
    sent: int = 0
    retried: int = 0
    failed: int = 0
    skipped: int = 0  # not claimable: already taken, done, or not yet due
    fallbacks: int = 0
    retries: list[tuple[int, float]] = field(default_factory=list)
    deferred: list[int] = field(default_factory=list)  # rate-limited or circuit open
    deferred_for_s: float = 0.0  # the last wait set
    # Each deferred delivery's own wait: a batch can hold deliveries deferred for different
    # waits (a campaign's send rate, then a provider's limit), each published for when it is due.
    deferred_waits: dict[int, float] = field(default_factory=dict)
    failed_ids: list[int] = field(default_factory=list)


def _claim(delivery_ids: Sequence[int], now: datetime, lease: Lease) -> list[int]:
    """queued -> sending for the due rows among delivery_ids; returns the ids claimed, which
    carry the lease's token and expiry (see `deliveries_claim`)."""
    claimed = deliveries_claim(
        delivery_ids,
        at=now,
        due_by=now + EARLY_TOLERANCE,
        until=now + timedelta(seconds=lease.seconds),
        token=lease.token,
    )
    lease.renewed_at = time.monotonic()
    return claimed


@dataclass
class Lease:
    """One deliver run's hold on the deliveries it claimed.

    Renewed (one UPDATE of the rows still to send) whenever a fifth of it has passed, before
    a message is handed to the provider; rows the renewal does not find are no longer ours
    (the sender stalled past its lease and the sweep took them back) and are not sent. So a
    message goes out only with at least four fifths of the lease left: longer than one
    provider call (NOTIFIER_CLAIM_LEASE_S is checked against EMAIL_TIMEOUT).
    """

    seconds: float
    token: uuid.UUID = field(default_factory=uuid.uuid4)
    renewed_at: float = 0.0  # time.monotonic() of the last claim or renewal
    lost: set[int] = field(default_factory=set)

    @classmethod
    def new(cls) -> Lease:
        return cls(seconds=float(settings.NOTIFIER_CLAIM_LEASE_S))

    def due(self) -> bool:
        return time.monotonic() - self.renewed_at >= self.seconds / 5

    def renew(self, delivery_ids: Collection[int]) -> set[int]:
        """Extend the lease of those still ours; returns the ids that are not (any more)."""
        ids = [pk for pk in delivery_ids if pk not in self.lost]
        if not ids:
            return set()
        started = time.monotonic()
        until = timezone.now() + timedelta(seconds=self.seconds)
        kept = self._renew(ids, until)
        self.renewed_at = started
        lost = set(ids) - kept
        if lost:
            log.warning(
                "lost the claim on %d deliveries (taken back after the lease ran out): "
                "not sending them",
                len(lost),
            )
            self.lost |= lost
        return lost

    def _renew(self, ids: list[int], until: datetime) -> set[int]:
        with connection.cursor() as cursor:
            table = table_name(Delivery)
            field = Delivery._meta.get_field("claimed_until")
            token = Delivery._meta.get_field("claim_token").get_db_prep_value(
                self.token, connection
            )
            cursor.execute(
                f"UPDATE {table} SET claimed_until = %s WHERE id IN "
                f"({', '.join(['%s'] * len(ids))}) AND status = %s AND claim_token = %s "
                "RETURNING id",
                [field.get_db_prep_value(until, connection), *ids, S.SENDING, token],
            )
            return {row[0] for row in cursor.fetchall()}

    def still_ours(self, pairs: Sequence[tuple[Claimed, Outgoing]]) -> Iterator[Outgoing]:
        """Hand out the outgoings one at a time, each only while its claim holds."""
        pending = [d.pk for d, _ in pairs]
        for index, (delivery, outgoing) in enumerate(pairs):
            if self.due():
                self.renew(pending[index:])
            if delivery.pk in self.lost:
                continue
            yield outgoing


@dataclass(slots=True)
class Claimed:
    """A claimed delivery: what sending needs, and the outcome to record."""

    pk: int
    message_id: int
    user_id: UserKey
    channel: Channel
    content: dict[str, str]
    attempts: int
    type_key: str
    lane: Lane
    email: str
    phone: str
    status: str = S.SENDING
    reason: str = ""
    last_error: str = ""
    provider: str = ""
    provider_message_id: str = ""
    updated_at: datetime | None = None
    claimed_at: datetime | None = None
    next_attempt_at: datetime | None = None
    sent_at: datetime | None = None
    finished_at: datetime | None = None
    claim_token: uuid.UUID | None = None  # the claim this run holds; outcomes are written under it
    campaign_id: int | None = None  # a campaign with a send rate of its own paces it
    is_test: bool = False


CLAIMED_COLUMNS = (
    "pk",
    "message_id",
    "user_id",
    "channel",
    "content",
    "attempts",
    "message__type_id",
    "message__lane",
    "user__notifier_recipient__email",
    "user__notifier_recipient__phone",
    "message__campaign_id",
    "message__is_test",
)


def _load(claimed_ids: list[int]) -> list[Claimed]:
    rows = _claimed_rows(claimed_ids).order_by("pk").values_list(*CLAIMED_COLUMNS)
    claimed = []
    for (
        pk,
        message_id,
        user_id,
        channel,
        content,
        attempts,
        type_key,
        lane,
        email,
        phone,
        campaign_id,
        is_test,
    ) in rows:
        claimed.append(
            Claimed(
                pk=pk,
                message_id=message_id,
                user_id=user_id,
                channel=Channel(channel),
                content=content,
                attempts=attempts,
                type_key=type_key,
                lane=Lane(lane),
                email=email or "",  # no profile: nothing to send to
                phone=phone or "",
                campaign_id=campaign_id,
                is_test=is_test,
            )
        )
    return claimed


def _claimed_rows(claimed_ids: list[int]) -> QuerySet[Delivery]:
    if connection.vendor != "postgresql":
        return Delivery.objects.filter(pk__in=claimed_ids)
    # The ids as one array parameter: `pk__in` would prepare a batch's 500 values one by one.
    return Delivery.objects.filter(
        RawSQL(f"{table_name(Delivery)}.id = ANY(%s)", (claimed_ids,), output_field=BooleanField())
    )


def _outgoing(delivery: Claimed, devices: list[Device]) -> Outgoing:
    info = type_info_get(delivery.type_key)
    content = Content.from_dict(delivery.content)
    return Outgoing(
        delivery_id=delivery.pk,
        message_id=delivery.message_id,
        user_id=delivery.user_id,
        channel=delivery.channel,
        type_key=delivery.type_key,
        content=content,
        attempt=delivery.attempts,
        email=delivery.email,
        phone=delivery.phone,
        devices=tuple(
            PushTarget(
                device_id=d.pk, platform=d.platform, token=d.token, web_push_keys=d.web_push_keys
            )
            for d in devices
        ),
        category=info.kind if info is not None else "",
        headers=content.headers,
    )


def _precheck(outgoing: Outgoing) -> SendResult | None:
    """Contact points can vanish between route and deliver; don't call a provider for nothing."""
    if outgoing.channel is Channel.PUSH and not outgoing.devices:
        return SendResult.permanent(
            "pipeline", ErrorCode.DEVICE_UNREGISTERED, "no active device left"
        )
    if outgoing.channel is Channel.EMAIL and not outgoing.email:
        return SendResult.permanent("pipeline", ErrorCode.INVALID_RECIPIENT, "email removed")
    if outgoing.channel is Channel.SMS and not outgoing.phone:
        return SendResult.permanent("pipeline", ErrorCode.INVALID_RECIPIENT, "phone removed")
    return None


def _call(provider: Provider, outgoings: list[Outgoing]) -> list[SendResult]:
    """Call a provider; an unexpected exception is a transient error, logged."""
    with personal_values(partial(_personal_strings, outgoings)) if sentry_on() else nullcontext():
        try:
            sent = provider.send_many(outgoings)
            if len(sent) != len(outgoings):
                raise RuntimeError(
                    f"{provider.name} returned {len(sent)} results for {len(outgoings)} messages"
                )
        except Exception as exc:
            log.exception("provider %s raised", provider.name)
            error = f"{type(exc).__name__}: {exc}"
            sent = [SendResult.transient(provider.name, ErrorCode.UNEXPECTED, error)] * len(
                outgoings
            )
    return sent


def _personal_strings(outgoings: list[Outgoing]) -> Iterator[str]:
    """What a provider's error may quote back: the recipients and the words sent to them."""
    for outgoing in outgoings:
        yield outgoing.recipient
        content = outgoing.content
        yield from (content.subject, content.title, content.body, content.html, content.link)


def _record_health(key: str, results: list[SendResult]) -> None:
    """Feed the provider's circuit breaker: temporary errors count against it, sends for it;
    recipients' own permanent errors (a bad number) say nothing about the provider. A 429/5xx
    with a Retry-After pauses the provider for every worker (failover)."""
    transient = sum(1 for r in results if counts_against_health(r))
    sent = sum(1 for r in results if r.outcome is Outcome.SENT)
    pause = max(
        (pause_for(r, max_pause_s=settings.NOTIFIER_PROVIDER_MAX_PAUSE_S) for r in results),
        default=0,
    )
    if pause:
        provider_pause(key, pause)
    transition = (
        breaker_outcomes(key, successes=sent, failures=transient) if transient or sent else None
    )
    if transition is not None:
        alert_transition(transition)
        breaker_waiters_wake(transition)


# What recording an attempt writes, the status first.
RECORDED_FIELDS = (
    "status",
    "reason",
    "last_error",
    "provider",
    "provider_message_id",
    "updated_at",
    "claimed_at",
    "next_attempt_at",
    "sent_at",
    "finished_at",
)


def _attempt_detail(result: SendResult, delay_s: float) -> dict[str, object]:
    detail: dict[str, object] = {
        "outcome": str(result.outcome),
        "error_code": str(result.error_code) if result.error_code else None,
        "provider_message_id": result.provider_message_id or None,
        "retry_in_s": round(delay_s, 2) if delay_s else None,
        **result.detail,
    }
    return {k: v for k, v in detail.items() if v is not None}


def _log_attempt(delivery: Claimed, result: SendResult) -> None:
    """One line per attempt, carrying the delivery's ids (sent ones at DEBUG: there are many)."""
    level = {S.SENT: logging.DEBUG, S.QUEUED: logging.INFO}.get(
        DeliveryStatus(delivery.status), logging.WARNING
    )
    if not log.isEnabledFor(level):
        return
    with bound(delivery_id=delivery.pk, message_id=delivery.message_id):
        log.log(
            level,
            "%s via %s attempt %d: %s%s",
            delivery.channel,
            result.provider,
            delivery.attempts,
            delivery.status,
            f" ({delivery.reason}: {result.error})" if delivery.status != S.SENT else "",
        )


def _claim_guard(deliveries: list[Claimed]) -> dict[str, object]:
    """Outcomes are written only while `sending` under this run's claim (when it has one)."""
    token = deliveries[0].claim_token if deliveries else None
    if token is None:
        return {}
    # Raw SQL: the token as this database stores a UUID (SQLite: hex text).
    prepared = Delivery._meta.get_field("claim_token").get_db_prep_value(token, connection)
    return {"claim_token": prepared}


def _record(
    deliveries: list[Claimed],
    results: list[SendResult],
    now: datetime,
    report: DeliverReport,
    rng: random.Random | None = None,
    *,
    callbacks_waiting: bool = True,
    no_wait: bool = False,
) -> None:
    """Write each attempt's outcome as the retry policy decides, in one UPDATE and one INSERT
    (one statement on PostgreSQL). With `callbacks_waiting` False (the caller looked: no
    provider event waits for these sends) the early-callback apply is left out; with
    `no_wait`, a write that is its own transaction commits without waiting for the disk."""
    policy = retry_policy()
    events: list[Event] = []
    dead_devices: set[int] = set()
    for delivery, result in zip(deliveries, results, strict=True):
        decision = after_attempt(result, attempt=delivery.attempts, policy=policy, rng=rng)
        delivery.provider, delivery.updated_at, delivery.claimed_at = result.provider, now, None
        dead_devices.update(result.deactivate_device_ids)
        if decision.verdict is Verdict.SENT:
            delivery.status, delivery.reason, delivery.last_error = S.SENT, "", ""
            delivery.provider_message_id = result.provider_message_id[:255]
            delivery.sent_at = delivery.finished_at = now
            report.sent += 1
        elif decision.verdict is Verdict.RETRY:
            delivery.status, delivery.reason = S.QUEUED, decision.reason or ""
            delivery.last_error = result.error
            delivery.next_attempt_at = now + timedelta(seconds=decision.delay_s)
            report.retried += 1
            report.retries.append((delivery.pk, decision.delay_s))
        else:
            delivery.status, delivery.reason = S.FAILED, decision.reason or ""
            delivery.last_error, delivery.finished_at = result.error, now
            report.failed += 1
            report.failed_ids.append(delivery.pk)
        _log_attempt(delivery, result)
        events.append(
            (
                delivery.pk,
                now,
                EventKind.ATTEMPT,
                delivery.status,
                delivery.reason,
                delivery.attempts,
                result.provider,
                result.error,
                _attempt_detail(result, decision.delay_s),
            )
        )
    # Guarded by status and claim: a row whose lease ran out and was taken back is not
    # overwritten (and a lone one gets no attempt event either: it is someone else's now).
    updated = deliveries_set(
        RECORDED_FIELDS,
        [(d.pk, *(getattr(d, name) for name in RECORDED_FIELDS)) for d in deliveries],
        source=S.SENDING,
        targets=ATTEMPT_OUTCOMES,
        guard=_claim_guard(deliveries),
        events=events,
        no_wait=no_wait,
    )
    # As the events were (see deliveries_set): unless a lone row had been taken back.
    if callbacks_waiting and (updated or len(deliveries) > 1):
        early_callbacks_apply(refs=[(d.provider, d.provider_message_id) for d in deliveries])
    if dead_devices:
        Device.objects.filter(pk__in=dead_devices, active=True).update(
            active=False, deactivated_at=now, deactivation_reason="provider: token unregistered"
        )


def _record_now(
    provider: Provider,
    pairs: list[tuple[Claimed, Outgoing]],
    report: DeliverReport,
    lease: Lease,
    *,
    hand_on: bool = False,
) -> tuple[list[SendResult], list[tuple[Claimed, Outgoing]]]:
    """Send and record; when our own database is the provider, both in one transaction.

    Any other provider's answers are recorded as they come, each before the next message is
    handed over (only a provider answering within NOTIFIER_RECORD_WITHIN_MS has a few of its
    answers written together): a worker killed mid-batch leaves at most the message in flight
    unrecorded, and a message goes out only while this run's claim on it holds. With
    `hand_on`, what the provider refused unsent (429/5xx) is not recorded but returned, for
    the next provider of the chain to take in the same attempt."""
    group, outgoings = [d for d, _ in pairs], [o for _, o in pairs]
    before = (report.sent, report.failed, report.retried)
    started = time.perf_counter()
    if not provider.in_database:
        results, handed_on = _send_each_recorded(provider, pairs, report, lease, hand_on=hand_on)
        took = time.perf_counter() - started
        _count(report, before, channel=str(group[0].channel), provider=provider.name, seconds=took)
        return results, handed_on
    with transaction.atomic():
        results = _call(provider, outgoings)
        took = time.perf_counter() - started
        keep = [not (hand_on and hands_on(r)) for r in results]
        if any(keep):
            _record(
                [d for d, k in zip(group, keep, strict=True) if k],
                [r for r, k in zip(results, keep, strict=True) if k],
                timezone.now(),
                report,
            )
    _count(report, before, channel=str(group[0].channel), provider=provider.name, seconds=took)
    return results, [pair for pair, k in zip(pairs, keep, strict=True) if not k]


def record_now(*, waited_s: float, call_s: float, within_s: float) -> bool:
    """Whether to write the answers gathered so far before the next provider call: yes, unless
    waiting one more call as long as the last keeps the oldest of them within `within_s`."""
    return waited_s + call_s >= within_s


def _send_each_recorded(
    provider: Provider,
    pairs: list[tuple[Claimed, Outgoing]],
    report: DeliverReport,
    lease: Lease,
    *,
    hand_on: bool = False,
) -> tuple[list[SendResult], list[tuple[Claimed, Outgoing]]]:
    by_pk = {d.pk: d for d, _ in pairs}
    handed_on: list[tuple[Claimed, Outgoing]] = []
    within_s = settings.NOTIFIER_RECORD_WITHIN_MS / 1000.0
    results: list[SendResult] = []
    unrecorded: list[tuple[Claimed, SendResult]] = []
    # When the oldest unrecorded answer came; when the provider last took a message, until its
    # first answer after that (None: answered); how long that call took.
    first_at = 0.0
    taken_at: float | None = None
    call_s = 0.0

    def flush() -> None:
        if unrecorded:
            _record_sends(unrecorded, report)
            unrecorded.clear()

    def handed_out() -> Iterator[Outgoing]:
        """The outgoings still ours, each handed over only once the answers before it are
        written, unless one more call as quick as the last keeps the oldest unwritten answer
        within the window. Decided when the provider takes its next message, i.e. before its
        next call: a provider with a round trip has each answer written before the next
        message goes out; a batch API's answers (a request's, all in hand) are written
        together, before its next request, or gathered over a few quick requests."""
        nonlocal taken_at
        for outgoing in lease.still_ours(pairs):
            now = time.monotonic()
            if unrecorded and record_now(waited_s=now - first_at, call_s=call_s, within_s=within_s):
                flush()
            taken_at = time.monotonic()
            yield outgoing

    outgoings = [o for _, o in pairs]
    with personal_values(partial(_personal_strings, outgoings)) if sentry_on() else nullcontext():
        try:
            for outgoing, result in send_each(provider, handed_out()):
                answered = time.monotonic()
                if taken_at is not None:  # the first answer of a call: it took this long
                    call_s, taken_at = answered - taken_at, None
                results.append(result)
                if hand_on and hands_on(result):  # refused unsent: the next provider's
                    handed_on.append((by_pk[outgoing.delivery_id], outgoing))
                    continue
                if not unrecorded:
                    first_at = answered
                unrecorded.append((by_pk[outgoing.delivery_id], result))
        except Exception as exc:
            log.exception("provider %s raised", provider.name)
            error = f"{type(exc).__name__}: {exc}"
            failure = SendResult.transient(provider.name, ErrorCode.UNEXPECTED, error)
            # Written already (their status moved), waiting to be, or no longer ours: the
            # rest, the message in flight included, failed for now.
            done = {d.pk for d, _ in unrecorded} | {d.pk for d, _ in handed_on} | lease.lost
            for delivery, _ in pairs:
                if delivery.status == S.SENDING and delivery.pk not in done:
                    results.append(failure)
                    unrecorded.append((delivery, failure))
        flush()
    return results, handed_on


def _record_sends(unrecorded: list[tuple[Claimed, SendResult]], report: DeliverReport) -> None:
    """Write answers a provider gave outside our database, committed at once (without waiting
    for the disk): one statement, unless a provider event waits for these sends (an early
    callback, applied in the same transaction) or a push token is to be deactivated."""
    deliveries, results = [d for d, _ in unrecorded], [r for _, r in unrecorded]
    # Looked for before the write, in one indexed query: usually no event waits.
    waiting = early_callbacks_waiting(
        refs=[(r.provider, r.provider_message_id[:255]) for r in results]
    )
    if not waiting and not any(r.deactivate_device_ids for r in results):
        _record(deliveries, results, timezone.now(), report, callbacks_waiting=False, no_wait=True)
        return
    with transaction.atomic():
        commit_without_waiting()
        _record(deliveries, results, timezone.now(), report, callbacks_waiting=waiting)


def _count(
    report: DeliverReport,
    before: tuple[int, int, int],
    *,
    channel: str,
    provider: str,
    seconds: float | None,
) -> None:
    """Metrics for what one _record wrote (the report's counters moved by that much)."""
    record_send(
        channel=channel,
        provider=provider,
        seconds=seconds,
        sent=report.sent - before[0],
        failed=report.failed - before[1],
        retried=report.retried - before[2],
    )


def _deliver_channel(
    channel: Channel, pairs: list[tuple[Claimed, Outgoing]], report: DeliverReport, lease: Lease
) -> None:
    """Send one channel's claimed deliveries through its providers, in failover order.

    Each provider takes what its circuit breaker and global rate limit allow; the next provider
    takes over the rest; whatever no provider can take now goes back to the queue, with the
    attempt given back, to be tried after the shortest wait any of them named.
    """
    checked = [(d, o, _precheck(o)) for d, o in pairs]
    prechecked = [(d, o, r) for d, o, r in checked if r is not None]
    if prechecked:
        before = (report.sent, report.failed, report.retried)
        with transaction.atomic():
            _record(
                [d for d, _, _ in prechecked], [r for _, _, r in prechecked], timezone.now(), report
            )
        _count(report, before, channel=str(channel), provider="pipeline", seconds=None)
    remaining = [(d, o) for d, o, r in checked if r is None]
    waits: list[float] = []
    circuit_open = True
    chain = providers_for(channel)
    for position, provider in enumerate(chain, start=1):
        if not remaining:
            break
        key = f"{channel}:{provider.name}"
        waiter = breaker_waiter_token(
            lane=remaining[0][0].lane, channel=channel, delivery_ids=[d.pk for d, _ in remaining]
        )
        permission = breaker_allows(key, waiter=waiter)
        if not permission.allowed:
            waits.append(permission.retry_after_s)
            circuit_open = circuit_open and not permission.paused
            continue
        circuit_open = False
        grant = acquire(key, 1 if permission.probe else len(remaining))
        if grant.granted < len(remaining):
            waits.append(grant.retry_after_s)
        batch, remaining = remaining[: grant.granted], remaining[grant.granted :]
        if batch:
            results, handed_on = _record_now(
                provider, batch, report, lease, hand_on=position < len(chain)
            )
            _record_health(key, results)
            remaining = handed_on + remaining
    if remaining:
        _defer(
            [d for d, _ in remaining],
            min(waits, default=1.0),
            Reason.CIRCUIT_OPEN if circuit_open else "",
            report,
        )


def _defer(deliveries: list[Claimed], wait_s: float, reason: str, report: DeliverReport) -> None:
    """Back to queued without using up an attempt: the provider could not take it yet."""
    now = timezone.now()
    wait_s = max(0.05, min(wait_s, dispatch.MAX_BROKER_COUNTDOWN_S))
    deliveries_set(
        ("status", "reason", "attempts", "claimed_at", "next_attempt_at", "updated_at"),
        [
            (
                d.pk,
                S.QUEUED,
                reason,
                max(0, d.attempts - 1),
                None,
                now + timedelta(seconds=wait_s),
                now,
            )
            for d in deliveries
        ],
        source=S.SENDING,
        targets=[S.QUEUED],
        guard=_claim_guard(deliveries),
    )
    report.deferred += [d.pk for d in deliveries]
    report.deferred_for_s = wait_s
    report.deferred_waits.update((d.pk, wait_s) for d in deliveries)


CAMPAIGN_BUCKET = "campaign:{}"  # a campaign's own send rate, in the providers' buckets


def campaign_rate(per_minute: int) -> Rate:
    """A campaign's send rate as a token bucket: `per_minute` spread over the minute, with
    about a second's worth at once (as provider rates are read)."""
    return Rate(per_minute / 60)


def _campaign_paced(deliveries: list[Claimed], report: DeliverReport) -> list[Claimed]:
    """The deliveries that may go now; those of a campaign whose own send rate has no token
    left for them go back to the queue (`_defer`: no attempt used up, published again after
    the wait), never dropped. One bucket per campaign, shared by every worker (Redis), so a
    campaign's messages go out no faster than its rate whichever workers send them. A test
    send is the marketer's own and never waits."""
    rates = campaign_send_rates(d.campaign_id for d in deliveries if not d.is_test)
    if not rates:
        return deliveries
    by_campaign: dict[int, list[Claimed]] = defaultdict(list)
    for delivery in deliveries:
        if delivery.campaign_id in rates and not delivery.is_test:
            by_campaign[delivery.campaign_id].append(delivery)
    held: set[int] = set()
    for campaign_id, group in by_campaign.items():
        rate = campaign_rate(rates[campaign_id])
        grant = take(CAMPAIGN_BUCKET.format(campaign_id), rate, len(group))
        rest = group[grant.granted :]
        if rest:
            # Come back once about a second's worth of tokens is there again, at a moment of
            # its own, so that the batches of one campaign do not all wake at once.
            wait_s = max(grant.retry_after_s, min(len(rest), rate.burst) / rate.per_second)
            _defer(rest, wait_s * (1 + random.random()), "", report)
            held.update(d.pk for d in rest)
    return [d for d in deliveries if d.pk not in held]


def deliveries_deliver(*, delivery_ids: Sequence[int]) -> DeliverReport:
    """Claim, send and record a batch of deliveries (normally all of one channel and lane)."""
    report = DeliverReport()
    lease = Lease.new()
    claimed = _claim(delivery_ids, timezone.now(), lease)
    report.claimed, report.skipped = len(claimed), len(delivery_ids) - len(claimed)
    if not claimed:
        return report
    deliveries = _load(claimed)
    for delivery in deliveries:
        delivery.claim_token = lease.token
    sending = _campaign_paced(deliveries, report)
    push_users = [d.user_id for d in deliveries if d.channel is Channel.PUSH]
    devices: dict[int, list[Device]] = defaultdict(list)
    if push_users:
        for device in Device.objects.filter(user_id__in=push_users, active=True).order_by("pk"):
            devices[device.user_id].append(device)

    by_channel: dict[Channel, list[Claimed]] = defaultdict(list)
    for delivery in sending:
        by_channel[delivery.channel].append(delivery)
    for channel, group in by_channel.items():
        _deliver_channel(
            channel, [(d, _outgoing(d, devices[d.user_id])) for d in group], report, lease
        )
    lanes = {d.pk: (d.lane, d.channel) for d in deliveries}
    for delivery_id, delay in report.retries:
        lane, channel = lanes[delivery_id]
        dispatch.publish_deliver([delivery_id], lane, channel, countdown=delay)
    if report.deferred:
        # One task per lane, channel and wait: each deferred delivery comes back when it is
        # due (its next_attempt_at), not before (unclaimable, it would sit until the stuck-work
        # sweep) nor after (for another campaign's or provider's longer wait).
        by_wait: dict[tuple[Lane, Channel, float], list[int]] = defaultdict(list)
        for delivery_id in report.deferred:
            wait_s = report.deferred_waits.get(delivery_id, report.deferred_for_s)
            by_wait[(*lanes[delivery_id], wait_s)].append(delivery_id)
        for (lane, channel, wait_s), ids in by_wait.items():
            dispatch.publish_deliver(ids, lane, channel, countdown=wait_s)
    if report.failed_ids:
        # A channel that cannot reach the user hands over to the next in the message's chain.
        report.fallbacks = len(deliveries_fall_back(failed_ids=report.failed_ids))
    return report


# --- Operators -----------------------------------------------------------------------------


def deliveries_retry_now(*, delivery_ids: Sequence[int], actor: str) -> int:
    """Give failed deliveries a fresh round of attempts, now. Returns how many were retried.

    A compare-and-set from failed: a delivery that is not failed (any more) is left alone, so
    two operators clicking at once retry it once. Earlier attempts stay on the timeline.
    """
    now = timezone.now()
    with transaction.atomic():
        rows = list(
            Delivery.objects.select_for_update(of=("self",))
            .filter(pk__in=delivery_ids, status=S.FAILED)
            .values_list("pk", "channel", "message__lane", "attempts")
        )
        if not rows:
            return 0
        deliveries_move(
            [pk for pk, *_ in rows],
            sources=[S.FAILED],
            to=S.QUEUED,
            kind=EventKind.MANUAL,
            at=now,
            reason="",
            detail={"action": "retry now", "by": actor},
            details={pk: {"previous_attempts": attempts} for pk, _, _, attempts in rows},
            attempts=0,
            next_attempt_at=now,
            finished_at=None,
        )
        _publish_grouped([(pk, channel, lane) for pk, channel, lane, _ in rows])
    return len(rows)


# --- Recovering lost work -------------------------------------------------------------------


@dataclass
class RequeueReport:
    messages: int = 0
    queued: int = 0
    expired_claims: int = 0
    exhausted: int = 0
    set_aside: int = 0  # never routed because their runs kept dying: failed, not re-published
    fallbacks: int = 0  # fallbacks started for failures whose worker died before handing over
    callbacks: int = 0  # provider events that came early, applied now that their send is known


def _publish_grouped(rows: Iterable[tuple[int, str, str]]) -> None:
    groups: dict[tuple[Lane, Channel], list[int]] = defaultdict(list)
    for pk, channel, lane in rows:
        groups[(Lane(lane), Channel(channel))].append(pk)
    for (lane, channel), ids in groups.items():
        transaction.on_commit(partial(dispatch.publish_deliver, ids, lane, channel), robust=True)


def requeue_stuck_work(*, now: datetime | None = None, limit: int = 5000) -> RequeueReport:
    """Publish again what a lost broker message left behind. Safe to run twice at once.

    - messages never routed (their prepare task was lost, or their run died: see
      `unrouted_republish`, which fails one whose runs died too often instead);
    - deliveries queued and overdue (their deliver task was lost);
    - deliveries whose sender died mid-send (its lease ran out): back to queued, or failed
      once the attempts are used up. The claims sweep does this every few seconds too.
    """
    now = now or timezone.now()
    report = RequeueReport()
    stale = now - timedelta(seconds=settings.NOTIFIER_REQUEUE_AFTER_S)

    # Prepare runs that died count against their messages first; then only columns that always
    # read: a row that cannot be read is failed by its own prepare run.
    dead_runs_count(started_before=stale)
    unrouted = unrouted_of(
        Message.objects.filter(routed_at__isnull=True, created_at__lt=stale)
        .order_by("created_at")
        .values_list(*UNROUTED_COLUMNS)[:limit]
    )
    report.messages, report.set_aside = unrouted_republish(unrouted)
    report.expired_claims, report.exhausted = expired_claims_requeue(now=now, limit=limit)
    report.queued = _overdue_republish(
        Delivery.objects.filter(status=S.QUEUED, next_attempt_at__lt=stale), now, limit
    )
    report.fallbacks = lost_fallbacks_resume(now=now, limit=limit)
    report.callbacks = early_callbacks_reconcile(now=now)
    return report


def requeue_expired_claims(*, now: datetime | None = None, limit: int = 1000) -> RequeueReport:
    """The claims sweep, every NOTIFIER_CLAIM_SWEEP_S: take back claims whose sender died (its
    lease ran out) and publish again transactional work whose task died with a worker:
    messages unrouted, and deliveries queued past due, for NOTIFIER_TRANSACTIONAL_REQUEUE_AFTER_S,
    while no task waits in the lane's queues (when some do, the late ones may be among them).
    Each reads a partial index (expired leases; unrouted messages; due deliveries) over a
    window no older than what `requeue_stuck_work` covers, so a run's cost is bounded by the
    work of the last NOTIFIER_REQUEUE_AFTER_S and by `limit`. Dead prepare runs are counted by
    the prepare task itself (and by the minute job), as for any re-published message."""
    now = now or timezone.now()
    report = RequeueReport()
    report.expired_claims, report.exhausted = expired_claims_requeue(now=now, limit=limit)
    if lane_queue_depth(Lane.TRANSACTIONAL):
        # Tasks are waiting in the lane: the late ones may be among them, not lost. Publishing
        # copies would only deepen the backlog; the minute job covers whatever is really lost.
        return report
    stale = now - timedelta(seconds=settings.NOTIFIER_TRANSACTIONAL_REQUEUE_AFTER_S)
    oldest = now - timedelta(seconds=settings.NOTIFIER_REQUEUE_AFTER_S)
    unrouted = unrouted_of(
        Message.objects.filter(
            routed_at__isnull=True,
            lane=Lane.TRANSACTIONAL,
            created_at__lt=stale,
            created_at__gte=oldest,
        )
        .order_by("created_at")
        .values_list(*UNROUTED_COLUMNS)[:limit]
    )
    report.messages, report.set_aside = unrouted_republish(unrouted)
    report.queued = _overdue_republish(
        Delivery.objects.filter(
            status=S.QUEUED,
            next_attempt_at__lt=stale,
            next_attempt_at__gte=oldest,
            message__lane=Lane.TRANSACTIONAL,
        ),
        now,
        limit,
    )
    return report


def expired_claims_requeue(*, now: datetime, limit: int) -> tuple[int, int]:
    """Claims whose lease ran out (their sender stopped renewing it: it died) go back to
    queued, or fail once their attempts are used up. A live sender renews its lease between
    sends, so its claims are never taken. Returns (re-queued, failed)."""
    with transaction.atomic():
        claims = list(
            Delivery.objects.select_for_update(skip_locked=True, of=("self",))
            .filter(status=S.SENDING, claimed_until__lt=now)
            .values_list("pk", "channel", "message__lane", "attempts")[:limit]
        )
        retry = [
            (pk, ch, lane)
            for pk, ch, lane, attempts in claims
            if attempts < settings.NOTIFIER_MAX_ATTEMPTS
        ]
        exhausted = [
            pk for pk, _, _, attempts in claims if attempts >= settings.NOTIFIER_MAX_ATTEMPTS
        ]
        deliveries_move(
            [pk for pk, _, _ in retry],
            sources=[S.SENDING],
            to=S.QUEUED,
            kind=EventKind.REQUEUED,
            at=now,
            reason=Reason.CLAIM_EXPIRED,
            next_attempt_at=now,
            claimed_at=None,
            claimed_until=None,
            claim_token=None,
        )
        deliveries_move(
            exhausted,
            sources=[S.SENDING],
            to=S.FAILED,
            kind=EventKind.REQUEUED,
            at=now,
            reason=Reason.RETRIES_EXHAUSTED,
            last_error="the worker stopped mid-send on every attempt",
            finished_at=now,
            claimed_at=None,
            claimed_until=None,
            claim_token=None,
        )
        _publish_grouped(retry)
    return len(retry), len(exhausted)


def _overdue_republish(overdue_rows: QuerySet[Delivery], now: datetime, limit: int) -> int:
    with transaction.atomic():
        overdue = list(
            overdue_rows.select_for_update(skip_locked=True, of=("self",)).values_list(
                "pk", "channel", "message__lane"
            )[:limit]
        )
        # Restart the clock so the same rows are not published again by the next run.
        Delivery.objects.filter(pk__in=[pk for pk, _, _ in overdue]).update(
            next_attempt_at=now, updated_at=now
        )
        deliveries_log(
            [pk for pk, _, _ in overdue],
            status=S.QUEUED,
            kind=EventKind.REQUEUED,
            at=now,
            detail={"why": "its deliver task was overdue, presumed lost"},
        )
        _publish_grouped(overdue)
    return len(overdue)
