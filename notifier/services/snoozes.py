"""Snoozing: a person mutes one kind of message, or a topic they follow, for a day, a week, or
until they unmute it.

While it runs, that type reaches them in the inbox only: email, SMS and push are suppressed
with the reason `snoozed` (notifier.policies.preferences.snooze_reason, decided when a message
is routed and again when a held one is released). Transactional and critical types cannot be
snoozed, as they cannot be switched off. One snooze per person and type: snoozing again
replaces it (a week, then a day, is a day from now).

A topic snooze (`topic_snooze_set`) does the same for the messages a send to that topic hands
out (they carry their topic), whatever their type, with the reason `topic_snoozed`; what cannot
be switched off still goes everywhere. Only a topic the person follows can be snoozed.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta

from django.db import transaction
from django.utils import timezone

from notifier.models import NotificationType, Snooze, Topic, TopicSnooze, TopicSubscription
from notifier.policies.preferences import can_switch_off
from notifier.selectors import type_info_get
from notifier.text import text_problem
from notifier.user_keys import UserKey

LENGTHS: dict[str, timedelta | None] = {
    "day": timedelta(days=1),
    "week": timedelta(days=7),
    "until_unmuted": None,
}


class SnoozeError(ValueError):
    """A snooze that cannot be made as asked; the message says why."""


class UnknownSnoozeType(SnoozeError):
    pass


class UnknownSnoozeTopic(SnoozeError):
    """A topic that does not exist, or that the person does not follow."""


@dataclass(frozen=True)
class SnoozeState:
    type_key: str
    until: datetime | None  # None: until unmuted


def snooze_set(*, user_id: UserKey, type_key: object, length: object) -> SnoozeState:
    """Mute `type_key` for the person for `length` ("day", "week" or "until_unmuted")."""
    span = _length(length)
    kind = _type(type_key)
    if not can_switch_off(kind.kind, kind.priority):
        raise SnoozeError(
            f"{kind.key} cannot be snoozed: transactional and critical messages always go out"
        )
    now = timezone.now()
    until = now + span if span is not None else None
    with transaction.atomic():
        Snooze.objects.update_or_create(
            user_id=user_id, type_id=kind.key, defaults={"until": until, "at": now}
        )
    return SnoozeState(kind.key, until)


def snoozable(type_key: str) -> bool:
    """Whether a type may be snoozed (cached with the type: no query per inbox item)."""
    info = type_info_get(type_key)
    return info is not None and can_switch_off(info.kind, info.priority)


def snooze_lift(*, user_id: UserKey, type_key: object) -> bool:
    """Unmute; whether a snooze was running (lifting none is not an error)."""
    kind = _type(type_key)
    deleted, _ = Snooze.objects.filter(user_id=user_id, type_id=kind.key).delete()
    return bool(deleted)


def snoozes_list(*, user_id: UserKey) -> list[SnoozeState]:
    """The person's snoozes still running, soonest to end first (until unmuted last)."""
    now = timezone.now()
    rows = (
        Snooze.objects.filter(user_id=user_id)
        .exclude(until__lte=now)
        .values_list("type_id", "until")
    )
    return sorted(
        (SnoozeState(type_key, until) for type_key, until in rows),
        key=lambda s: (s.until is None, s.until or now, s.type_key),
    )


@dataclass(frozen=True)
class TopicSnoozeState:
    topic_key: str
    until: datetime | None  # None: until unmuted


def topic_snooze_set(*, user_id: UserKey, topic_key: object, length: object) -> TopicSnoozeState:
    """Mute the topic `topic_key`, which the person follows, for `length` ("day", "week" or
    "until_unmuted"); snoozing again replaces it."""
    span = _length(length)
    topic = _topic(topic_key)
    now = timezone.now()
    until = now + span if span is not None else None
    with transaction.atomic():
        # The subscription locked: an unfollow at the same moment (which deletes it, then the
        # snoozes) either goes first, and this finds none, or waits and deletes this snooze.
        following = (
            TopicSubscription.objects.select_for_update()
            .filter(topic=topic, user_id=user_id)
            .exists()
        )
        if not following:
            raise UnknownSnoozeTopic(
                f"{topic.key} cannot be snoozed: it is not a topic they follow"
            )
        TopicSnooze.objects.update_or_create(
            user_id=user_id, topic=topic, defaults={"until": until, "at": now}
        )
    return TopicSnoozeState(topic.key, until)


def topic_snooze_lift(*, user_id: UserKey, topic_key: object) -> bool:
    """Unmute a topic; whether a snooze was running (lifting none, or one of a topic that is
    gone, is not an error)."""
    key = _topic_key(topic_key)
    deleted, _ = TopicSnooze.objects.filter(user_id=user_id, topic__key=key).delete()
    return bool(deleted)


def topic_snoozes_list(*, user_id: UserKey) -> list[TopicSnoozeState]:
    """The person's topic snoozes still running, soonest to end first (until unmuted last)."""
    now = timezone.now()
    rows = (
        TopicSnooze.objects.filter(user_id=user_id)
        .exclude(until__lte=now)
        .values_list("topic__key", "until")
    )
    return sorted(
        (TopicSnoozeState(topic_key, until) for topic_key, until in rows),
        key=lambda s: (s.until is None, s.until or now, s.topic_key),
    )


def _length(length: object) -> timedelta | None:
    if not isinstance(length, str) or length not in LENGTHS:
        raise SnoozeError(f"snooze for one of: {', '.join(LENGTHS)}; got {str(length)[:40]!r}")
    return LENGTHS[length]


def _topic_key(topic_key: object) -> str:
    if not isinstance(topic_key, str) or not topic_key or text_problem(topic_key):
        raise UnknownSnoozeTopic('topic must be the key of a topic they follow, e.g. "card:42"')
    return topic_key[:255]


def _topic(topic_key: object) -> Topic:
    key = _topic_key(topic_key)
    topic = Topic.objects.filter(key=key).first()
    if topic is None:
        raise UnknownSnoozeTopic(f"there is no topic {key!r}")
    return topic


def _type(type_key: object) -> NotificationType:
    if not isinstance(type_key, str) or not type_key or text_problem(type_key):
        raise UnknownSnoozeType("type must be a notification type's key, e.g. promo.flash_sale")
    kind = NotificationType.objects.filter(pk=type_key[:100]).first()
    if kind is None:
        raise UnknownSnoozeType(f"there is no notification type {type_key[:100]!r}")
    return kind
