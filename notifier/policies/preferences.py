"""Preference and consent policies: may this category go to this user on this channel?

Defaults live here; the database stores only a user's overrides. Transactional messages and
anything critical cannot be switched off. Marketing needs recorded consent on the channels in
NOTIFIER_CONSENT_CHANNELS; the newest consent record for the channel (or for "all") holds.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime

from notifier.models.preferences import ALL_CHANNELS
from notifier.models.types import Kind, Priority
from notifier.models.users import MarketingFrequency
from notifier.status import Reason

# What a user gets before touching the preference centre: everything, on every channel.
DEFAULT_ENABLED = True


@dataclass(frozen=True, slots=True)
class Preferences:
    """A user's overrides: (category, channel) -> enabled. Category is a kind or a type key."""

    overrides: Mapping[tuple[str, str], bool] = field(default_factory=dict)
    marketing_frequency: str = MarketingFrequency.AS_SENT


@dataclass(frozen=True, slots=True)
class ConsentRecord:
    granted: bool
    at: datetime


@dataclass(frozen=True, slots=True)
class ConsentState:
    """The newest consent record per channel key (a channel, or "all")."""

    latest: Mapping[str, ConsentRecord] = field(default_factory=dict)

    def granted(self, channel: str) -> bool:
        candidates = [r for key in (channel, ALL_CHANNELS) if (r := self.latest.get(key))]
        if not candidates:
            return False
        return max(candidates, key=lambda r: r.at).granted


def can_switch_off(kind: str, priority: str) -> bool:
    """Transactional and critical service messages are always delivered where they are routed.
    Marketing can always be switched off: a campaign's priority never overrides a user's "no"."""
    if kind == Kind.MARKETING:
        return True
    return kind != Kind.TRANSACTIONAL and priority != Priority.CRITICAL


def channel_enabled(prefs: Preferences, *, kind: str, type_key: str, channel: str) -> bool:
    """Most specific wins: type on channel, type on all, kind on channel, kind on all."""
    for key in (
        (type_key, channel),
        (type_key, ALL_CHANNELS),
        (kind, channel),
        (kind, ALL_CHANNELS),
    ):
        if key in prefs.overrides:
            return prefs.overrides[key]
    return DEFAULT_ENABLED


def preference_reason(
    prefs: Preferences, *, kind: str, type_key: str, priority: str, channel: str
) -> Reason | None:
    """Why the user's choices rule this channel out, or None when they allow it."""
    if not can_switch_off(kind, priority):
        return None
    if kind == Kind.MARKETING and prefs.marketing_frequency == MarketingFrequency.OFF:
        return Reason.MARKETING_OFF
    if not channel_enabled(prefs, kind=kind, type_key=type_key, channel=channel):
        return Reason.OPTED_OUT
    return None


def consent_reason(
    consent: ConsentState, *, kind: str, channel: str, consent_channels: frozenset[str]
) -> Reason | None:
    """Marketing on a channel that needs consent goes out only with consent on record."""
    if kind != Kind.MARKETING or channel not in consent_channels:
        return None
    return None if consent.granted(channel) else Reason.NO_CONSENT


def snooze_reason(
    snoozed: Mapping[str, datetime | None],
    *,
    kind: str,
    type_key: str,
    priority: str,
    channel: str,
    now: datetime,
) -> Reason | None:
    """Why a snooze rules this channel out: the person muted the type (until a time, or until
    they unmute it; `snoozed` maps type keys to that time or None), on every channel but the
    inbox, which keeps the message for when they look. What cannot be switched off cannot be
    snoozed either."""
    if type_key not in snoozed or channel == "inapp" or not can_switch_off(kind, priority):
        return None
    until = snoozed[type_key]
    return Reason.SNOOZED if until is None or until > now else None


def topic_snooze_reason(
    snoozed_topics: Mapping[int, datetime | None],
    *,
    topic_id: int | None,
    kind: str,
    priority: str,
    channel: str,
    now: datetime,
) -> Reason | None:
    """Why a topic snooze rules this channel out: the message was handed out by a send to a
    topic the person muted (`snoozed_topics` maps topic ids to the snooze's end, or None until
    they unmute it). The same rule as a type's snooze: the inbox keeps it, and what cannot be
    switched off goes out anyway."""
    if topic_id is None or topic_id not in snoozed_topics:
        return None
    if channel == "inapp" or not can_switch_off(kind, priority):
        return None
    until = snoozed_topics[topic_id]
    return Reason.TOPIC_SNOOZED if until is None or until > now else None
