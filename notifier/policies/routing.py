"""Route policy: should this message go out on this channel, and if not, why not."""

from __future__ import annotations

from dataclasses import dataclass
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
    if not recipient.is_active:
        return suppress(Reason.USER_INACTIVE)
    if channel is Channel.EMAIL and not recipient.email:
        return suppress(Reason.NO_EMAIL_ADDRESS)
    if channel is Channel.SMS:
        if not recipient.phone:
            return suppress(Reason.NO_PHONE_NUMBER)
        if not phone_is_valid(recipient.phone):
            return suppress(Reason.INVALID_PHONE_NUMBER)
    if channel is Channel.PUSH and recipient.active_devices == 0:
        return suppress(Reason.NO_ACTIVE_DEVICE)
    return SEND
