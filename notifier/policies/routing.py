"""Route policy: should this message go out on this channel, and if not, why not."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import timedelta
from enum import StrEnum

import phonenumbers

from channels.base import Channel
from notifier.status import Reason


class Action(StrEnum):
    SEND = "send"
    SUPPRESS = "suppress"


@dataclass(frozen=True, slots=True)
class Recipient:
    """What routing needs to know about the user, as plain values."""

    is_active: bool
    email: str
    phone: str
    active_devices: int
    email_suppressed: bool = False  # on the suppression list (hard bounce, complaint)
    erased: bool = False  # the person's data was erased at their request


@dataclass(frozen=True, slots=True)
class RouteDecision:
    action: Action
    reason: Reason | None = None

    @property
    def sends(self) -> bool:
        return self.action is Action.SEND


SEND = RouteDecision(Action.SEND)


def suppress(reason: Reason) -> RouteDecision:
    return RouteDecision(Action.SUPPRESS, reason)


def phone_is_valid(phone: str) -> bool:
    try:
        return phonenumbers.is_valid_number(phonenumbers.parse(phone, None))
    except phonenumbers.NumberParseException:
        return False


def decide_channel(
    channel: Channel,
    recipient: Recipient,
    *,
    type_channels: frozenset[str],
    type_active: bool,
) -> RouteDecision:
    """The first reason not to send wins; otherwise send."""
    if not type_active:
        return suppress(Reason.TYPE_INACTIVE)
    if channel not in type_channels:
        return suppress(Reason.CHANNEL_NOT_ALLOWED)
    if recipient.erased:
        return suppress(Reason.RECIPIENT_ERASED)
    if not recipient.is_active:
        return suppress(Reason.USER_INACTIVE)
    if channel is Channel.EMAIL:
        if not recipient.email:
            return suppress(Reason.NO_EMAIL_ADDRESS)
        if recipient.email_suppressed:
            return suppress(Reason.ADDRESS_SUPPRESSED)
    if channel is Channel.SMS:
        if not recipient.phone:
            return suppress(Reason.NO_PHONE_NUMBER)
        if not phone_is_valid(recipient.phone):
            return suppress(Reason.INVALID_PHONE_NUMBER)
    if channel is Channel.PUSH and recipient.active_devices == 0:
        return suppress(Reason.NO_ACTIVE_DEVICE)
    return SEND


# --- Which channels: routing rules ---------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Rule:
    """A routing rule's plain values (see notifier.models.RoutingRule)."""

    name: str
    send_all: tuple[str, ...]
    fallback_chain: tuple[str, ...] = ()
    type_key: str = ""
    kind: str = ""
    priority: str = ""

    def specificity(self, *, type_key: str, kind: str, priority: str) -> int | None:
        """How specifically the rule matches (type > kind > priority), or None if it does not."""
        score = 0
        for wanted, actual, weight in (
            (self.type_key, type_key, 4),
            (self.kind, kind, 2),
            (self.priority, priority, 1),
        ):
            if wanted:
                if wanted != actual:
                    return None
                score += weight
        return score


# Used while the RoutingRule table is empty; the same rules are seeded into it by a migration.
# Fallback chains are ordered by cost: push and in-app are free, email nearly, SMS is not.
DEFAULT_RULES: tuple[Rule, ...] = (
    Rule("Critical: every channel at once", ("sms", "push", "inapp", "email"), priority="critical"),
    Rule("High: every channel at once", ("sms", "push", "inapp", "email"), priority="high"),
    Rule(
        "Normal: in-app, then the cheapest channel that reaches them",
        ("inapp",),
        ("push", "email", "sms"),
        priority="normal",
    ),
    Rule("Low: email and in-app only", ("email", "inapp"), priority="low"),
)


@dataclass(frozen=True, slots=True)
class EscalationStep:
    """One step of a type's escalation: this channel, this long after the message was routed,
    if by then nothing of the message was read, opened or clicked (`critical_only`: for
    critical messages only)."""

    channel: Channel
    after: timedelta
    critical_only: bool = False


@dataclass(frozen=True, slots=True)
class Plan:
    send_all: tuple[Channel, ...]  # all of these at once
    chain: tuple[Channel, ...] = ()  # the first that can reach the user, then the next on failure
    # Escalation: each channel held this long, sent only if nothing was read by then.
    later: tuple[tuple[Channel, timedelta], ...] = ()


def escalation_plan(
    steps: tuple[EscalationStep, ...], *, type_channels: tuple[str, ...], priority: str
) -> Plan | None:
    """The plan of a type that escalates: its first step now, each later one held for its wait
    (those for critical messages only left out for the rest, and channels the type no longer
    uses). None when nothing of it is left."""
    usable = [
        step
        for step in steps
        if str(step.channel) in type_channels and (not step.critical_only or priority == "critical")
    ]
    if not usable:
        return None
    first, *rest = usable
    return Plan(
        send_all=(first.channel,),
        later=tuple((step.channel, step.after - first.after) for step in rest),
    )


def escalation_stops(engaged: bool) -> bool:
    """Whether the steps still waiting are moot: something of the message was read, opened or
    clicked (the person has seen it)."""
    return engaged


def match_rule(rules: tuple[Rule, ...], *, type_key: str, kind: str, priority: str) -> Rule | None:
    scored = [
        (score, rule)
        for rule in rules
        if (score := rule.specificity(type_key=type_key, kind=kind, priority=priority)) is not None
    ]
    return max(scored, key=lambda pair: pair[0])[1] if scored else None


def plan_channels(
    *,
    type_channels: tuple[str, ...],
    explicit: list[str],
    rule: Rule | None,
    escalation: tuple[EscalationStep, ...] = (),
    priority: str = "normal",
) -> Plan:
    """The caller's channels win; else the type's escalation; else the rule's, restricted to
    channels the type uses; with no rule (or nothing left of it), every channel of the type at
    once."""
    if explicit:
        return Plan(send_all=tuple(Channel(c) for c in explicit))
    if escalation:
        plan = escalation_plan(escalation, type_channels=type_channels, priority=priority)
        if plan is not None:
            return plan
    if rule is not None:
        send_all = tuple(Channel(c) for c in rule.send_all if c in type_channels)
        chain = tuple(
            Channel(c) for c in rule.fallback_chain if c in type_channels and c not in send_all
        )
        if send_all or chain:
            return Plan(send_all=send_all, chain=chain)
    return Plan(send_all=tuple(Channel(c) for c in type_channels))
