"""Generate and route: turn messages into one Delivery per channel, then publish the sends.

Both steps run in one task per batch of messages (see README, "Architecture"). The messages are
locked; everything routing needs about their users is loaded in bulk (devices, preferences,
consent, feedback); the routing rule picks the channels; each channel is decided by the pure
route policies; the message as a whole is admitted, held or suppressed (staleness, quiet hours,
backpressure, frequency caps); the channels that will go out are rendered; and deliveries plus
their first event are written in bulk, all in one transaction. An in-app delivery that would go
out at once is delivered there and then: our own database is its provider, so its inbox item
is written in the same transaction and it needs no deliver task (`inapp_sent_now`). Running
it twice is harmless: routed messages are skipped, and locked ones are left to their owner.

One message never takes its batch down: a row Python cannot read, or copy that cannot render
(whatever it raises), fails that message alone with the reason in words (`messages_fail`,
`message_generate`). The task's soft time limit striking mid-render is the exception that does
leave the batch (`RenderTimedOut`): notifier.services.quarantine fails that message and
re-publishes the rest.
"""

from __future__ import annotations

import logging
import time
from collections import Counter, defaultdict
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from datetime import datetime, timedelta
from functools import partial
from typing import Any
from zoneinfo import ZoneInfo

from celery.exceptions import SoftTimeLimitExceeded
from django.conf import settings
from django.db import DatabaseError, IntegrityError, connection, transaction
from django.db.models import Exists, OuterRef
from django.utils import timezone

from channels.base import Channel, Content
from channels.inapp import InAppProvider, InboxEntry
from channels.registry import providers_for
from notifier import dispatch
from notifier.backpressure import bulk_congested
from notifier.db import any_of, next_ids, readable, statistics_refresh, update_rows
from notifier.dispatch import chunks
from notifier.hooks import NO_CAMPAIGNS, CampaignBatch, campaign_batch, campaign_send_rates
from notifier.links import UnsubscribeLinks, preferences_url
from notifier.logcontext import bound
from notifier.models import (
    Delivery,
    DeliveryEvent,
    Device,
    EventKind,
    FrequencyCounter,
    InboxItem,
    Kind,
    Message,
    PrepareRun,
    RoutingRule,
    SuppressedAddress,
    User,
    normalize_email,
)
from notifier.models.recipients import recipient_for, recipients_attach
from notifier.models.types import PRIORITY_RANK, Priority
from notifier.models.users import display_name
from notifier.operations.metrics import record_send
from notifier.policies.preferences import (
    ConsentState,
    Preferences,
    consent_reason,
    preference_reason,
    snooze_reason,
    topic_snooze_reason,
)
from notifier.policies.routing import (
    DEFAULT_RULES,
    SEND,
    Plan,
    Recipient,
    RouteDecision,
    Rule,
    decide_channel,
    match_rule,
    plan_channels,
    suppress,
)
from notifier.provider_limits import State as BreakerState
from notifier.provider_limits import (
    alert_transition,
    breaker_outcomes,
    breaker_state,
    rate_limits,
)
from notifier.queues import Lane
from notifier.rendering import Lazy, RenderError, render, render_failure, template_context
from notifier.selectors import (
    TypeInfo,
    consent_of,
    irrelevant_feedback_counts,
    message_inbox_group,
    message_unreadable_reason,
    preferences_of,
    snoozes_of,
    topic_snoozes_of,
    type_info_get,
)
from notifier.services.admission import Admission, message_admission, settle_caps
from notifier.services.breakers import breaker_waiters_wake
from notifier.services.digests import digests_collect, digests_fold
from notifier.services.messages import (
    NewMessage,
    as_message,
    messages_copy,
    messages_insert_new,
    messages_unwritten,
)
from notifier.services.throttles import throttles_take
from notifier.services.transitions import deliveries_create
from notifier.status import DeliveryStatus, Reason
from notifier.user_keys import UserKey

log = logging.getLogger(__name__)
S = DeliveryStatus


def user_template_values(user: User) -> dict[str, Any]:
    return {
        "first_name": getattr(user, "first_name", ""),  # a host's user model may have none
        "last_name": getattr(user, "last_name", ""),
        "name": display_name(user),
        "locale": recipient_for(user).locale,
        # Read by the localdate/localtime/money filters (notifier.local_formats).
        "time_zone": recipient_for(user).time_zone,
    }


def routing_rules() -> tuple[Rule, ...]:
    """The active rules from the admin; the code defaults while the table is empty."""
    rows = list(
        RoutingRule.objects.filter(is_active=True).values_list(
            "name", "send_all", "fallback_chain", "type_id", "kind", "priority"
        )
    )
    if not rows and not RoutingRule.objects.exists():
        return DEFAULT_RULES
    return tuple(
        Rule(name, tuple(send_all), tuple(chain), type_key or "", kind, priority)
        for name, send_all, chain, type_key, kind, priority in rows
    )


@dataclass
class Audience:
    """Everything routing knows about the users of one batch, loaded with a few queries."""

    devices: Counter[int]
    preferences: dict[int, Preferences]
    consent: dict[int, ConsentState]
    irrelevant: dict[tuple[int, str], int]
    rules: tuple[Rule, ...]
    congested: bool
    # The batch's campaigns, through the campaigns hook (nothing when none is a campaign's).
    campaigns: CampaignBatch
    suppressed_emails: frozenset[str] = frozenset()
    # Types each user snoozed, still running: type key -> until (None: until unmuted).
    snoozes: Mapping[UserKey, Mapping[str, datetime | None]] = field(default_factory=dict)
    # Topics each user snoozed, still running: topic id -> until; loaded only for a batch with
    # a topic's messages in it (one query, not one per recipient).
    topic_snoozes: Mapping[UserKey, Mapping[int, datetime | None]] = field(default_factory=dict)
    now: datetime | None = None  # the moment routing decides for


def audience_of(
    messages: Sequence[Message], now: datetime, *, congested: bool | None = None
) -> Audience:
    """What routing needs of these messages' users. `congested` None: ask the bulk queues now
    (a forecast of a send to come passes False: their depth then cannot be known)."""
    user_ids = {m.user_id for m in messages}
    marketing = {m.user_id for m in messages if message_type(m).kind == Kind.MARKETING}
    since = now - timedelta(days=settings.NOTIFIER_FEEDBACK_PENALTY_DAYS)
    return Audience(
        devices=Counter(
            Device.objects.filter(any_of("user_id", user_ids), active=True).values_list(
                "user_id", flat=True
            )
        ),
        preferences=preferences_of(user_ids=user_ids),
        consent=consent_of(user_ids=user_ids),
        irrelevant=irrelevant_feedback_counts(user_ids=marketing, since=since) if marketing else {},
        rules=routing_rules(),
        congested=(
            any(m.lane == Lane.BULK or m.priority == Priority.LOW for m in messages)
            and bulk_congested()
            if congested is None
            else congested
        ),
        campaigns=campaign_batch(messages),
        suppressed_emails=suppressed_emails_of(
            recipient_for(m.user).email for m in messages if _may_email(m)
        ),
        snoozes=snoozes_of(user_ids=user_ids, now=now),
        topic_snoozes=topic_snoozes_of(
            user_ids={m.user_id for m in messages if m.topic_id is not None}, now=now
        )
        if any(m.topic_id is not None for m in messages)
        else {},
        now=now,
    )


def _may_email(message: Message) -> bool:
    """Whether routing could pick email for this message: a caller who named channels (and a
    fallback chain) without email spares the batch its suppression-list query."""
    if not message.channels:
        return True  # the routing rules decide, and they may
    return Channel.EMAIL in message.channels or Channel.EMAIL in (message.fallback_chain or ())


def suppressed_emails_of(addresses: Iterable[str]) -> frozenset[str]:
    """Which of these addresses are on the email suppression list (normalised)."""
    wanted = {normalize_email(a) for a in addresses if a}
    if not wanted:
        return frozenset()
    return frozenset(
        SuppressedAddress.objects.filter(
            any_of("address", wanted), channel=Channel.EMAIL
        ).values_list("address", flat=True)
    )


def message_type(message: Message) -> TypeInfo:
    info = type_info_get(message.type_id)
    if info is None:  # deleted since notify(): PROTECT makes this near impossible
        raise LookupError(f"notification type {message.type_id!r} no longer exists")
    return info


def channel_decision(channel: Channel, message: Message, audience: Audience) -> RouteDecision:
    """Contact point, type, preferences and consent for one channel: send or suppress."""
    info, user = message_type(message), message.user
    profile = recipient_for(user)
    recipient = Recipient(
        is_active=user.is_active,
        email=profile.email,
        phone=profile.phone,
        active_devices=audience.devices[user.pk],
        email_suppressed=channel is Channel.EMAIL
        and bool(profile.email and audience.suppressed_emails)
        and normalize_email(profile.email) in audience.suppressed_emails,
        erased=profile.erased_at is not None,
    )
    decision = decide_channel(
        channel, recipient, type_channels=frozenset(info.channels), type_active=info.is_active
    )
    if not decision.sends or message.is_test:  # a test goes to the marketer, choices aside
        return decision
    reason = preference_reason(
        audience.preferences[user.pk],
        kind=info.kind,
        type_key=info.key,
        priority=message.priority,
        channel=channel,
    ) or consent_reason(
        audience.consent[user.pk],
        kind=info.kind,
        channel=channel,
        consent_channels=frozenset(settings.NOTIFIER_CONSENT_CHANNELS),
    )
    if not reason and user.pk in audience.snoozes:
        reason = snooze_reason(
            audience.snoozes[user.pk],
            kind=info.kind,
            type_key=info.key,
            priority=message.priority,
            channel=channel,
            now=audience.now or timezone.now(),
        )
    if not reason and user.pk in audience.topic_snoozes:
        reason = topic_snooze_reason(
            audience.topic_snoozes[user.pk],
            topic_id=message.topic_id,
            kind=info.kind,
            priority=message.priority,
            channel=channel,
            now=audience.now or timezone.now(),
        )
    return suppress(reason) if reason else SEND


def local_time_text(moment: datetime | None, time_zone: str) -> str:
    if moment is None:
        return ""
    return moment.astimezone(ZoneInfo(time_zone or "UTC")).strftime("%Y-%m-%d %H:%M")


class RenderTimedOut(RenderError):
    """The task's soft time limit struck while one message was rendering.

    Raised out of the batch, whose transaction then rolls back (cap slots included): the
    message fails alone with this as its reason, and the rest of the batch goes on in a fresh
    task with a fresh time budget (notifier.services.quarantine, campaigns' fan-out).
    """

    def __init__(self, *, message_id: int, user_id: UserKey, channel: Channel, seconds: float):
        self.message_id, self.user_id, self.channel, self.seconds = (
            message_id,
            user_id,
            channel,
            seconds,
        )
        super().__init__(
            f"Rendering the {channel} copy was stopped after {seconds:.0f} s, at the task's "
            "time limit: the copy is too slow to send"
        )


def _soft_time_limit_in(error: BaseException) -> bool:
    """Whether Celery's soft time limit is what this error is, or wraps (the template engines
    report whatever a render raised as their own RenderError, `from` the original)."""
    seen: set[int] = set()
    current: BaseException | None = error
    while current is not None and id(current) not in seen:
        if isinstance(current, SoftTimeLimitExceeded):
            return True
        seen.add(id(current))
        current = current.__cause__ or current.__context__
    return False


def message_render_failure(
    error: Exception, message: Message, channel: Channel, started: float
) -> RenderError:
    """What a render that raised means for its message: the soft time limit struck
    (RenderTimedOut, which the caller raises), the template's own complaint, or something
    nobody foresaw in the copy (one that cannot compile, a recursion): the message fails, not
    the batch."""
    if _soft_time_limit_in(error):
        return RenderTimedOut(
            message_id=message.pk,
            user_id=message.user_id,
            channel=channel,
            seconds=time.monotonic() - started,
        )
    if isinstance(error, RenderError):
        return error
    return render_failure(f"the {channel} copy", error)  # in words, cut to a readable length


def message_generate(
    message: Message, channels: Iterable[Channel], campaigns: CampaignBatch = NO_CAMPAIGNS
) -> dict[Channel, Content | RenderError]:
    """Render each channel. Marketing gets its unsubscribe link in the templates and, on email,
    RFC 8058 one-click headers; every message gets a signed link to the preference page.

    A channel that cannot render comes back as its RenderError; raises RenderTimedOut when
    the task's soft time limit strikes mid-render."""
    context = template_context(message.context, user_template_values(message.user))
    context["preferences_url"] = Lazy(partial(preferences_url, user_id=message.user_id))
    profile = recipient_for(message.user)
    # A campaign's message: its campaign and the customer's persona (the campaigns hook).
    extra, personas = campaigns.copy_context(message)
    context["user"].update(extra.pop("user", {}))
    context.update(extra)
    marketing = message_type(message).kind == Kind.MARKETING
    rendered: dict[Channel, Content | RenderError] = {}
    for channel in channels:
        # The message travels in the link, so the funnel can tell which message lost the user.
        unsubscribe = (
            UnsubscribeLinks(message.user_id, message.type_id, channel, message.pk)
            if marketing
            else None
        )
        if unsubscribe is not None:
            context["unsubscribe_url"] = Lazy(unsubscribe.page_url)
        started = time.monotonic()
        try:
            content = (
                campaigns.render(message, channel, context, profile.locale, personas)
                if message.variant_id
                else render(message.type_id, channel, context, profile.locale)
            )
        except DatabaseError:
            raise  # the database, not the copy: the batch's transaction is lost either way
        except Exception as exc:  # one message's copy, whatever it raised, fails that message
            failure = message_render_failure(exc, message, channel, started)
            if isinstance(failure, RenderTimedOut):
                raise failure from exc  # logged where the message is failed
            with bound(message_id=message.pk):
                log.warning("message %s: %s", message.pk, failure)
            rendered[channel] = failure
            continue
        if unsubscribe is not None and channel is Channel.EMAIL:
            content = replace(content, headers=unsubscribe.headers())
        rendered[channel] = campaigns.track(message, channel, content)
    return rendered


@dataclass(frozen=True, slots=True)
class Routed:
    """One delivery row as route decided it, before it is written."""

    message_id: int
    user_id: UserKey
    channel: Channel
    status: DeliveryStatus
    reason: str = ""
    content: dict[str, str] = field(default_factory=dict)
    last_error: str = ""
    next_attempt_at: datetime | None = None
    priority_rank: int = 2
    fallback_of: int | None = None
    provider: str = ""  # a delivery sent as it is routed: the provider that took it


def routed(
    message: Message,
    channel: Channel,
    decision: RouteDecision,
    admission: Admission | None,
    content: Content | RenderError | None,
    now: datetime,
    fallback_of: int | None = None,
    wait: timedelta | None = None,
) -> Routed:
    row = partial(
        Routed,
        message.pk,
        message.user_id,
        channel,
        priority_rank=PRIORITY_RANK.get(Priority(message.priority), 2),
        fallback_of=fallback_of,
    )
    if not decision.sends:
        return row(S.SUPPRESSED, reason=decision.reason or "")
    assert admission is not None
    if admission.status == S.SUPPRESSED:
        return row(S.SUPPRESSED, reason=admission.reason)
    if isinstance(content, RenderTimedOut):
        return row(S.FAILED, reason=Reason.RENDER_TIMEOUT, last_error=str(content))
    if isinstance(content, RenderError):
        return row(S.FAILED, reason=Reason.RENDER_FAILED, last_error=str(content))
    assert content is not None
    if wait is not None:
        # A later step of an escalation waits its turn after the first step goes: now, or
        # when the message's hold (a send time, quiet hours, a cap) lets it go. It keeps the
        # reason `escalation_wait` while held, which is what the release's "seen?" check
        # looks for.
        start = admission.until if admission.status == S.HELD and admission.until else now
        return row(
            S.HELD,
            reason=Reason.ESCALATION_WAIT,
            content=content.as_dict(),
            next_attempt_at=start + wait,
        )
    if admission.status == S.HELD:
        return row(
            S.HELD,
            reason=admission.reason,
            content=content.as_dict(),
            next_attempt_at=admission.until,
        )
    # A reason on a queued row says why it went out when it otherwise would not have (a marketing
    # lead's quiet-hours override); its routed event keeps it after the send clears the row's.
    return row(S.QUEUED, reason=admission.reason, content=content.as_dict(), next_attempt_at=now)


@dataclass
class RouteOutcome:
    """One message's routing: its channel decisions, what is left of its fallback chain, and
    its admission (None when no channel can reach the user)."""

    message: Message
    decisions: dict[Channel, RouteDecision]
    chain_left: list[str]
    admission: Admission | None
    waits: dict[Channel, timedelta] = field(default_factory=dict)  # escalation's later steps


def _decide_plan(
    plan: Plan, message: Message, audience: Audience
) -> tuple[dict[Channel, RouteDecision], list[str]]:
    """Decide every send-all channel, and the fallback chain up to the first that can send."""
    decisions = {channel: channel_decision(channel, message, audience) for channel in plan.send_all}
    for channel, _ in plan.later:
        decisions[channel] = channel_decision(channel, message, audience)
    for index, channel in enumerate(plan.chain):
        decisions[channel] = channel_decision(channel, message, audience)
        if decisions[channel].sends:
            return decisions, [str(c) for c in plan.chain[index + 1 :]]
    return decisions, []


def message_route(message: Message, audience: Audience, now: datetime) -> RouteOutcome:
    """Decide channels and admission. A cap slot still to take is left pending, so a batch
    can take them together (settle_caps)."""
    info = message_type(message)
    rule = match_rule(audience.rules, type_key=info.key, kind=info.kind, priority=message.priority)
    plan = plan_channels(
        type_channels=info.channels,
        explicit=list(message.channels),
        rule=rule,
        escalation=info.escalation if not message.is_test else (),
        priority=message.priority,
    )
    decisions, chain_left = _decide_plan(plan, message, audience)
    admission = (
        message_admission(
            message=message,
            user=message.user,
            kind=info.kind,
            now=now,
            congested=audience.congested,
            irrelevant=audience.irrelevant.get((message.user_id, info.key), 0),
            campaign=audience.campaigns.facts(message),
            take_cap=False,
        )
        if any(decision.sends for decision in decisions.values())
        else None
    )
    return RouteOutcome(message, decisions, chain_left, admission, dict(plan.later))


def route_many(
    messages: Sequence[Message], audience: Audience, now: datetime
) -> list[RouteOutcome]:
    """Route a batch, taking every cap slot it needs in one go."""
    outcomes = [message_route(message, audience, now) for message in messages]
    # A throttle decides before the caps: a message it stops takes no cap slot.
    throttled = throttles_take(
        [o.message for o in outcomes if o.admission and o.admission.status != S.SUPPRESSED], now
    )
    for outcome in outcomes:
        if outcome.message.pk in throttled:
            outcome.admission = Admission(S.SUPPRESSED, Reason.THROTTLED)
    routed_with = [o for o in outcomes if o.admission is not None]
    settled = settle_caps([o.admission for o in routed_with if o.admission is not None])
    for outcome, admission in zip(routed_with, settled, strict=True):
        outcome.admission = admission
    return outcomes


def outcome_rows(outcome: RouteOutcome, audience: Audience, now: datetime) -> list[Routed]:
    """Render the channels that will go out (now or later) and make the delivery rows."""
    message, admission = outcome.message, outcome.admission
    sendable = [c for c, d in outcome.decisions.items() if d.sends]
    contents = (
        message_generate(message, sendable, audience.campaigns)
        if admission is not None and admission.status != S.SUPPRESSED
        else {}
    )
    return [
        routed(
            message,
            channel,
            decision,
            admission,
            contents.get(channel),
            now,
            wait=outcome.waits.get(channel),
        )
        for channel, decision in outcome.decisions.items()
    ]


COLLECTED = "collected"  # prepare's count of messages collected into a digest

TERMINAL_ON_ROUTE = frozenset({S.SUPPRESSED, S.FAILED, S.CANCELLED, S.SENT})


def inbox_provider_now() -> InAppProvider | None:
    """The in-app provider, when a deliver task would hand it a delivery at once: the channel's
    first provider is our own database's inbox, no rate limit is configured for it and its
    circuit is closed (Redis unreachable: the deliver task would fail open, and so does this).
    None otherwise: in-app deliveries then take the queue."""
    chain = providers_for(Channel.INAPP)
    if not chain or not isinstance(chain[0], InAppProvider) or not chain[0].in_database:
        return None
    key = f"{Channel.INAPP}:{chain[0].name}"
    if key in rate_limits() or breaker_state(key) not in (
        BreakerState.CLOSED,
        BreakerState.UNKNOWN,
    ):
        return None
    return chain[0]


def inapp_sent_now(
    rows: list[Routed], messages: Mapping[int, Message], now: datetime
) -> list[Routed]:
    """The rows, each in-app delivery that would go out at once marked sent: its inbox item is
    written with it, in the routing transaction (`inbox_items_write`), and no deliver task is
    needed.

    At once: routed queued and due (not held, not deferred), of no campaign with a send rate
    of its own (a marketer's test send never waits for one), while `inbox_provider_now`. The
    rest take the queue as before.
    """
    due = [
        i
        for i, r in enumerate(rows)
        if r.channel is Channel.INAPP
        and r.status == S.QUEUED
        and (r.next_attempt_at is None or r.next_attempt_at <= now)
    ]
    if not due:
        return rows
    provider = inbox_provider_now()
    if provider is None:
        return rows
    paced = campaign_send_rates(
        messages[rows[i].message_id].campaign_id
        for i in due
        if not messages[rows[i].message_id].is_test
    )
    marked = list(rows)
    for i in due:
        message = messages[rows[i].message_id]
        if message.campaign_id in paced and not message.is_test:
            continue
        marked[i] = replace(rows[i], status=S.SENT, provider=provider.name, next_attempt_at=None)
    return marked


def inbox_items_write(
    rows: Iterable[Routed],
    ids: Mapping[tuple[int, str], int],
    messages: Mapping[int, Message],
    now: datetime,
) -> None:
    """Write the inbox items of the in-app deliveries written sent (`inapp_sent_now`), and after
    commit count them as the deliver task counts its sends: metrics, the provider's breaker."""
    entries = [
        InboxEntry(
            r.user_id,
            r.message_id,
            ids[(r.message_id, r.channel)],
            message_type(messages[r.message_id]).kind,
            messages[r.message_id].type_id,
            r.content.get("title", ""),
            r.content.get("body", ""),
            r.content.get("link", ""),
            *message_inbox_group(messages[r.message_id]),
        )
        for r in rows
        if r.status == S.SENT and (r.message_id, r.channel) in ids
    ]
    if not entries:
        return
    started = time.perf_counter()
    InAppProvider.inbox_write(entries, at=now, new_deliveries=True)
    took = time.perf_counter() - started
    provider = next(r.provider for r in rows if r.status == S.SENT)
    transaction.on_commit(
        partial(_inbox_sends_count, provider=provider, sent=len(entries), seconds=took),
        robust=True,
    )


def _inbox_sends_count(*, provider: str, sent: int, seconds: float) -> None:
    """What a deliver task records of a provider call that sent: the send metrics, and the
    successes its circuit breaker weighs failures against."""
    record_send(
        channel=str(Channel.INAPP),
        provider=provider,
        seconds=seconds,
        sent=sent,
        failed=0,
        retried=0,
    )
    transition = breaker_outcomes(f"{Channel.INAPP}:{provider}", successes=sent, failures=0)
    if transition is not None:
        alert_transition(transition)
        breaker_waiters_wake(transition)


def write_routed(
    rows: list[Routed],
    now: datetime,
    kind: EventKind = EventKind.ROUTED,
    *,
    may_exist: bool = False,
    detail: Mapping[str, Any] | None = None,
) -> dict[tuple[int, str], int]:
    """Insert deliveries and their first event; returns (message id, channel) -> delivery id.

    Routing holds the lock on its unrouted messages, so none of their deliveries can exist yet.
    A fallback (`may_exist`) can meet one that does (a fallback that ran twice): that one is
    left as it is, so each is written once (see `deliveries_create`). A row routed sent
    (`inapp_sent_now`) is written with its attempt; its inbox item is the caller's to write,
    in the same transaction (`inbox_items_write`).
    """
    values = [
        (
            r.message_id,
            r.user_id,
            str(r.channel),
            str(r.status),
            r.reason,
            r.content,
            r.last_error,
            1 if r.status == S.SENT else 0,
            r.provider,
            "",
            now,
            now,
            r.next_attempt_at,
            now if r.status in TERMINAL_ON_ROUTE else None,
            r.priority_rank,
            r.fallback_of,
            now if r.status == S.SENT else None,
        )
        for r in rows
    ]
    details: list[dict[str, Any]] = [
        {"until": r.next_attempt_at.isoformat()}
        if r.status == S.HELD and r.next_attempt_at
        else {"fallback_of": r.fallback_of}
        if r.fallback_of
        else dict(detail or {})
        for r in rows
    ]
    return deliveries_create(values, details, at=now, kind=kind, may_exist=may_exist)


def publish_queued(
    rows: Iterable[Routed], ids: dict[tuple[int, str], int], lanes: dict[int, Lane]
) -> None:
    """After commit, one deliver task per (lane, channel) for the rows that are queued."""
    to_send: dict[tuple[Lane, Channel], list[int]] = defaultdict(list)
    for r in rows:
        if r.status == S.QUEUED and (r.message_id, r.channel) in ids:
            to_send[(lanes[r.message_id], r.channel)].append(ids[(r.message_id, r.channel)])
    for (lane, channel), delivery_ids in to_send.items():
        transaction.on_commit(
            partial(dispatch.publish_deliver, delivery_ids, lane, channel), robust=True
        )


# Grown by every message routed in bulk, and read by the next batch's plans (the claim's
# joins, the idempotency and cap look-ups, a series' clicks).
BULK_WRITTEN = (Message, Delivery, DeliveryEvent, InboxItem, FrequencyCounter)
BULK_STATISTICS_MINIMUM = 10_000  # rows changed before a table is worth analyzing mid-run
REFRESH_FROM_BATCH = 100  # a bulk prepare batch this large looks at the statistics first


def bulk_statistics_refresh() -> list[str]:
    """Analyze the tables a fan-out grows once it has changed more of them than they held at
    the last analyze (and at least 10,000 rows): called before each batch a walk hands out,
    and before a bulk-lane prepare batch of a `notify_many` (`prepare_statistics_refresh`).

    A table analyzed nearly empty (a new install, or one a retention run emptied) keeps telling
    the planner it is empty while a campaign writes a hundred thousand rows into it: the
    deliver step's claim then joined its messages by scanning them all, 20 to 40 ms a batch
    instead of 2. Autovacuum would analyze it, but only on its next round (a minute by
    default) and not at all where it is turned off. Once a table is large its statistics stay
    close for the rest of the run, so this seldom runs more than a few times a campaign."""
    return statistics_refresh(*BULK_WRITTEN, share=1.0, minimum=BULK_STATISTICS_MINIMUM)


def prepare_statistics_refresh(message_ids: Sequence[int]) -> list[str]:
    """Before a prepare batch: `bulk_statistics_refresh` for a bulk-lane batch of at least
    REFRESH_FROM_BATCH messages (a `notify_many` to many people). A batch holds one lane; the
    transactional lane never pays for an ANALYZE, nor does one message alone."""
    if len(message_ids) < REFRESH_FROM_BATCH:
        return []
    lane = Message.objects.filter(pk=message_ids[0]).values_list("lane", flat=True).first()
    return bulk_statistics_refresh() if lane == Lane.BULK else []


def messages_prepare(*, message_ids: Sequence[int], run_id: int | None = None) -> Counter[str]:
    """Generate and route a batch of messages. Returns counts of the statuses written.

    A message whose row cannot be read (a date Python cannot represent, JSON nested too deep)
    is failed with the reason in words; the rest of the batch routes. Raises RenderTimedOut
    (nothing written) when the task's soft time limit strikes mid-render. `run_id` is this
    run's PrepareRun, deleted in the same transaction: it stays only if the run dies."""
    now = timezone.now()
    written: Counter[str] = Counter()
    with transaction.atomic():
        if run_id is not None:
            PrepareRun.objects.filter(pk=run_id).delete()
        messages, unreadable = readable(
            Message.objects.select_for_update(skip_locked=True, of=("self",))
            .filter(pk__in=message_ids, routed_at__isnull=True)
            .select_related("user", "user__notifier_recipient")
            .order_by("pk")
        )
        recipients_attach(m.user for m in messages)
        if unreadable:
            written[str(S.FAILED)] += messages_fail(
                failures={
                    pk: Failure(Reason.UNREADABLE, message_unreadable_reason(pk))
                    for pk in unreadable
                },
                now=now,
            )
        # A digest type's messages are collected into their digest, not routed one by one.
        collected = digests_collect(messages, now)
        if collected:
            written[COLLECTED] += len(collected)
            messages = [m for m in messages if m.pk not in collected]
        if not messages:
            return written
        audience = audience_of(messages, now)
        rows: list[Routed] = []
        updates: list[tuple[Any, ...]] = []
        outcomes = route_many(messages, audience, now)
        # What a folding type's throttle stopped goes into the digest of its key instead.
        # Lock order, known and accepted: this run locked digest rows in `digests_collect`, the
        # throttles' advisory locks in `route_many`, and now digest rows again. Each step takes
        # its locks in one sorted order, but two runs whose batches meet on the same person's
        # digests and throttle keys across these steps can wait for each other crosswise.
        # PostgreSQL then aborts one (deadlock_detected, after deadlock_timeout): its whole
        # transaction rolls back, nothing half-written, and the prepare task's service runs it
        # once more at once, not counted as a crash (quarantine, `_prepare_again_after_a_
        # deadlock`). Rare: it needs one person's collect and fold of one type in two runs.
        folded = digests_fold(
            [o.message for o in outcomes if o.admission and o.admission.reason == Reason.THROTTLED],
            now,
        )
        if folded:
            written[COLLECTED] += len(folded)
            outcomes = [o for o in outcomes if o.message.pk not in folded]
            messages = [m for m in messages if m.pk not in folded]
        for outcome in outcomes:
            rows += outcome_rows(outcome, audience, now)
            cap = outcome.admission.cap if outcome.admission else None
            updates.append(
                (
                    outcome.message.pk,
                    now,
                    outcome.chain_left,
                    cap.day if cap else None,
                    cap.week if cap else None,
                )
            )
        by_id = {m.pk: m for m in messages}
        rows = inapp_sent_now(rows, by_id, now)
        ids = write_routed(rows, now)
        inbox_items_write(rows, ids, by_id, now)
        update_rows(Message, ("routed_at", "fallback_chain", "cap_day", "cap_week"), updates)
        publish_queued(rows, ids, {m.pk: Lane(m.lane) for m in messages})
        written.update(str(r.status) for r in rows)
    return written


@dataclass(frozen=True, slots=True)
class Failure:
    """Why a message could not be prepared: a reason code and the words support staff read."""

    reason: Reason
    error: str


def messages_fail(*, failures: Mapping[int, Failure], now: datetime | None = None) -> int:
    """Fail messages that cannot be prepared, with their reasons. Returns how many it failed.

    Reads only what always reads (ids, type, priority) and, where they read, the channels the
    caller asked for. Each channel routing would try first gets a failed delivery carrying the
    reason and the words, on the support timeline, and the message counts as routed, so no run
    and no re-queue picks it up again. Messages another run holds or has routed are left to it.
    """
    return messages_close(closures=failures, status=S.FAILED, now=now)


def messages_close(
    *,
    closures: Mapping[int, Failure],
    status: DeliveryStatus,
    now: datetime | None = None,
    detail: Mapping[str, Any] | None = None,
) -> int:
    """Route unrouted messages straight to `status` (failed, or cancelled by their sender),
    each with its reason and words, as `messages_fail` describes; `detail` goes on each
    delivery's first event. Returns how many messages it closed."""
    now = now or timezone.now()
    with transaction.atomic():
        rows = list(
            Message.objects.select_for_update(skip_locked=True, of=("self",))
            .filter(pk__in=list(closures), routed_at__isnull=True)
            .values_list("pk", "user_id", "type_id", "priority")
            .order_by("pk")
        )
        if not rows:
            return 0
        asked = _channels_asked([pk for pk, *_ in rows])
        rules = routing_rules()
        closed: list[Routed] = []
        for pk, user_id, type_key, priority in rows:
            closure = closures[pk]
            if status == S.FAILED:
                with bound(message_id=pk):
                    log.warning("message %s failed: %s", pk, closure.error)
            closed += [
                Routed(
                    pk,
                    user_id,
                    channel,
                    status,
                    reason=closure.reason,
                    last_error=closure.error,
                    priority_rank=_rank(priority),
                )
                for channel in _first_channels(type_key, priority, asked.get(pk, []), rules)
            ]
        write_routed(closed, now, detail=detail)
        Message.objects.filter(pk__in=[pk for pk, *_ in rows]).update(
            routed_at=now, fallback_chain=[]
        )
    return len(rows)


def _rank(priority: str) -> int:
    return PRIORITY_RANK[Priority(priority)] if priority in Priority.values else 2


def _channels_asked(message_ids: list[int]) -> dict[int, list[str]]:
    """The channels each message's caller named, where that column reads (valid names only)."""
    pairs, _ = readable(Message.objects.filter(pk__in=message_ids).values_list("pk", "channels"))
    names = set(Channel)
    return {
        pk: [c for c in channels if c in names] if isinstance(channels, list) else []
        for pk, channels in pairs
    }


def _first_channels(
    type_key: str, priority: str, asked: list[str], rules: tuple[Rule, ...]
) -> list[Channel]:
    """The channels routing would try first: every send-all channel and the head of the chain."""
    info = type_info_get(type_key)
    if info is None:
        return []
    rule = match_rule(rules, type_key=info.key, kind=info.kind, priority=priority)
    plan = plan_channels(
        type_channels=info.channels,
        explicit=asked,
        rule=rule,
        escalation=info.escalation,
        priority=priority,
    )
    return list(dict.fromkeys([*plan.send_all, *plan.chain[:1]]))


def messages_write_routed(
    *, rows: Sequence[NewMessage], users: Mapping[int, User], attempts: int = 3
) -> list[int]:
    """Write new messages already generated and routed, with their deliveries, in one
    transaction; returns the new messages' ids. The campaign fan-out's path.

    A message and its deliveries appear together or not at all, so no message is left for a
    second pass to route, and every row goes in by COPY with ids drawn beforehand. Rows whose
    idempotency key is taken are skipped, so a batch that runs again writes nothing twice; two
    runs at once meet at the unique key, and the one that loses starts over and skips what the
    other wrote. Elsewhere than PostgreSQL: insert, then prepare, as notify_many does.
    """
    if connection.vendor != "postgresql":
        new_ids = messages_insert_new(rows=rows)
        for batch in chunks(new_ids, settings.NOTIFIER_BATCH_SIZE):
            messages_prepare(message_ids=batch)
        return new_ids
    for attempt in range(1, attempts + 1):
        try:
            return _write_routed_once(rows, users)
        except IntegrityError:
            if attempt == attempts:
                raise
            log.info("another run wrote some of these %d messages; starting over", len(rows))
    return []


def _write_routed_once(rows: Sequence[NewMessage], users: Mapping[int, User]) -> list[int]:
    now = timezone.now()
    with transaction.atomic():
        fresh = messages_unwritten(rows)
        if not fresh:
            return []
        ids = next_ids(Message, len(fresh))
        messages = [as_message(row, pk, now) for row, pk in zip(fresh, ids, strict=True)]
        for message in messages:
            # `message.user = ...` without the descriptor's checks: the user is the one the
            # message was built for (same key), loaded by the caller.
            message._state.fields_cache["user"] = users[message.user_id]
        # Not held for a deep bulk lane: the walk that handed this batch out checks the lane's
        # depth before each batch and waits while it is deep, so the fan-out paces itself.
        # Holding would only hand the batch's recipients to the release job, a few thousand
        # every 15 s (a million-user run stalled on it).
        audience = audience_of(messages, now, congested=False)
        routed_rows: list[Routed] = []
        for outcome in route_many(messages, audience, now):
            routed_rows += outcome_rows(outcome, audience, now)
            cap = outcome.admission.cap if outcome.admission else None
            message = outcome.message
            message.routed_at, message.fallback_chain = now, outcome.chain_left
            message.cap_day, message.cap_week = (cap.day, cap.week) if cap else (None, None)
        messages_copy(messages)
        by_id = {m.pk: m for m in messages}
        routed_rows = inapp_sent_now(routed_rows, by_id, now)
        delivery_ids = write_routed(routed_rows, now)
        inbox_items_write(routed_rows, delivery_ids, by_id, now)
        publish_queued(routed_rows, delivery_ids, {m.pk: Lane(m.lane) for m in messages})
    return ids


def deliveries_fall_back(*, failed_ids: Sequence[int]) -> list[int]:
    """For deliveries that failed for good, try the next channel of their message's chain.

    The message was admitted when it was routed (quiet hours, caps), so the fallback goes out
    at once; it still respects the channel's contact point, preferences and consent, and moves
    along the chain past channels that cannot reach the user. Returns new delivery ids.
    """
    now = timezone.now()
    with transaction.atomic():
        failed = dict(
            Delivery.objects.filter(pk__in=failed_ids, status=S.FAILED).values_list(
                "message_id", "pk"
            )
        )
        messages = list(
            Message.objects.select_for_update(of=("self",))
            .filter(pk__in=list(failed))
            .exclude(fallback_chain=[])
            .select_related("user", "user__notifier_recipient")
            .order_by("pk")
        )
        recipients_attach(m.user for m in messages)
        # Read under the messages' locks: a failure another run (the sender, the re-queue job)
        # already handed over is not handed over again, further down the chain.
        handed_over = set(
            Delivery.objects.filter(fallback_of__in=list(failed.values())).values_list(
                "fallback_of_id", flat=True
            )
        )
        messages = [m for m in messages if failed[m.pk] not in handed_over]
        if not messages:
            return []
        audience = audience_of(messages, now)
        rows: list[Routed] = []
        updates: list[tuple[Any, ...]] = []
        for message in messages:
            chain = [Channel(c) for c in message.fallback_chain]
            decisions, chain_left = _decide_plan(
                Plan(send_all=(), chain=tuple(chain)), message, audience
            )
            sendable = [c for c, d in decisions.items() if d.sends]
            contents: dict[Channel, Content | RenderError]
            try:
                contents = message_generate(message, sendable, audience.campaigns)
            except RenderTimedOut as exc:  # this fallback fails; the others still go out
                contents = dict.fromkeys(sendable, exc)
            rows += [
                routed(
                    message,
                    c,
                    d,
                    Admission(S.QUEUED),
                    contents.get(c),
                    now,
                    fallback_of=failed[message.pk],
                )
                for c, d in decisions.items()
            ]
            updates.append((message.pk, chain_left))
        by_id = {m.pk: m for m in messages}
        rows = inapp_sent_now(rows, by_id, now)
        ids = write_routed(rows, now, kind=EventKind.FALLBACK, may_exist=True)
        inbox_items_write(rows, ids, by_id, now)
        update_rows(Message, ("fallback_chain",), updates)
        publish_queued(rows, ids, {m.pk: Lane(m.lane) for m in messages})
    return [
        ids[(r.message_id, r.channel)]
        for r in rows
        if r.status in (S.QUEUED, S.SENT) and (r.message_id, r.channel) in ids
    ]


# A sender hands its failures over a moment after recording them; the re-queue job leaves them
# to it that long. Failures older than the horizon are not handed over late.
FALLBACK_GRACE = timedelta(seconds=10)
FALLBACK_HORIZON = timedelta(days=1)


def lost_fallbacks_resume(*, now: datetime, limit: int = 500) -> int:
    """Hand over the failures whose fallback never started: the worker died between recording
    `failed` and starting the next channel. Returns how many fallback deliveries it queued.

    Only deliveries that failed for good at delivery time (claimed, never accepted), whose
    message still has channels to try, not expired, and no fallback yet; `deliveries_fall_back`
    checks the last again under the message's lock, so a race with the sender is harmless.
    """
    failed_ids = list(
        Delivery.objects.filter(
            status=S.FAILED,
            attempts__gt=0,
            sent_at__isnull=True,
            finished_at__lt=now - FALLBACK_GRACE,
            finished_at__gte=now - FALLBACK_HORIZON,
        )
        .exclude(message__fallback_chain=[])
        .exclude(message__expires_at__lt=now)
        .exclude(Exists(Delivery.objects.filter(fallback_of=OuterRef("pk"))))
        .order_by("finished_at")
        .values_list("pk", flat=True)[:limit]
    )
    if not failed_ids:
        return 0
    log.warning("%d failed deliveries had no fallback yet; handing them over", len(failed_ids))
    return len(deliveries_fall_back(failed_ids=failed_ids))
