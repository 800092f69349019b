"""Reads: notification types (cached per process), inbox pages, a user's delivery history, and
why a message cannot be read."""

from __future__ import annotations

import time
from collections import defaultdict
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from django.contrib.auth import get_user_model
from django.db.models import Count, Prefetch, QuerySet, TextField
from django.db.models.functions import Cast

from channels.base import Channel
from notifier.db import (
    UNREADABLE_ERRORS,
    any_of,
    model_field,
    unreadable_columns,
    unreadable_words,
)
from notifier.models import (
    Consent,
    ConsentPurpose,
    Delivery,
    DeliveryEvent,
    Feedback,
    InboxItem,
    MarketingFrequency,
    Message,
    NotificationType,
    Preference,
    Recipient,
    Snooze,
    ThrottleOver,
    TopicSnooze,
    User,
)
from notifier.policies.digests import collectable
from notifier.policies.preferences import ConsentRecord, ConsentState, Preferences
from notifier.policies.routing import EscalationStep
from notifier.policies.throttle import Throttle
from notifier.queues import Lane, lane_for_kind
from notifier.user_keys import UserKey

TYPE_CACHE_TTL_S = 30.0


@dataclass(frozen=True, slots=True)
class TypeInfo:
    key: str
    kind: str
    priority: str
    channels: tuple[str, ...]
    optional_context: frozenset[str]
    is_active: bool
    throttle: Throttle | None = None
    escalation: tuple[EscalationStep, ...] = ()
    digest_window: timedelta | None = None
    digest_first_now: bool = False
    digest_cadence: bool = False  # each recipient's cadence decides their window
    throttle_folds: bool = False  # over the throttle: into a digest, not dropped

    @property
    def digests(self) -> bool:
        """Whether any of its messages may be collected into a digest."""
        return self.digest_window is not None or self.digest_cadence or self.throttle_folds

    @property
    def lane(self) -> Lane:
        return lane_for_kind(self.kind)

    @classmethod
    def of(cls, row: NotificationType) -> TypeInfo:
        return cls(
            key=row.key,
            kind=row.kind,
            priority=row.priority,
            channels=tuple(row.channels),
            optional_context=frozenset(row.optional_context),
            is_active=row.is_active,
            throttle=Throttle(row.throttle_limit, timedelta(seconds=row.throttle_window_s))
            if row.throttle_limit and row.throttle_window_s
            else None,
            escalation=escalation_steps(row.escalation),
            digest_window=timedelta(seconds=row.digest_window_s) if row.digest_window_s else None,
            digest_first_now=row.digest_first_now,
            digest_cadence=row.digest_cadence,
            throttle_folds=row.throttle_over == ThrottleOver.DIGEST
            and row.throttle_limit is not None,
        )


def escalation_steps(stored: object) -> tuple[EscalationStep, ...]:
    """A type's escalation as stored (checked by the admin and the catalog); a value that is not
    a list of well-formed steps is no escalation (all channels at once, as before)."""
    if not isinstance(stored, list):
        return ()
    try:
        return tuple(
            EscalationStep(
                Channel(step["channel"]),
                timedelta(seconds=int(step["after_s"])),
                bool(step.get("critical_only", False)),
            )
            for step in stored
        )
    except (KeyError, TypeError, ValueError):
        return ()


_type_cache: dict[str, tuple[float, TypeInfo | None]] = {}
# Types that exist are few; keys that do not are whatever callers send. Misses are remembered
# (a caller repeating a typo costs no query) only while the cache is small.
TYPE_CACHE_MAX_MISSES = 1024


def type_info_get(key: str) -> TypeInfo | None:
    """A type by key, cached for TYPE_CACHE_TTL_S so notify() costs no query for it."""
    hit = _type_cache.get(key)
    now = time.monotonic()
    if hit is not None and now - hit[0] < TYPE_CACHE_TTL_S:
        return hit[1]
    row = NotificationType.objects.filter(pk=key).first()
    info = TypeInfo.of(row) if row is not None else None
    if info is not None or len(_type_cache) < TYPE_CACHE_MAX_MISSES:
        _type_cache[key] = (now, info)
    return info


def snoozes_of(*, user_ids: Iterable[UserKey], now: datetime) -> dict[UserKey, dict[str, Any]]:
    """Each user's snoozes still running at `now`: type key -> until (None: until unmuted).
    Users with none are left out."""
    found: dict[UserKey, dict[str, Any]] = defaultdict(dict)
    for user_id, type_key, until in (
        Snooze.objects.filter(any_of("user_id", user_ids))
        .exclude(until__lte=now)
        .values_list("user_id", "type_id", "until")
    ):
        found[user_id][type_key] = until
    return dict(found)


def topic_snoozes_of(
    *, user_ids: Iterable[UserKey], now: datetime
) -> dict[UserKey, dict[int, Any]]:
    """Each user's topic snoozes still running at `now`: topic id -> until (None: until
    unmuted). Users with none are left out."""
    found: dict[UserKey, dict[int, Any]] = defaultdict(dict)
    for user_id, topic_id, until in (
        TopicSnooze.objects.filter(any_of("user_id", user_ids))
        .exclude(until__lte=now)
        .values_list("user_id", "topic_id", "until")
    ):
        found[user_id][topic_id] = until
    return dict(found)


def type_cache_clear() -> None:
    _type_cache.clear()


# --- The inbox ------------------------------------------------------------------------------


def inbox_items(*, user_id: UserKey, archived: bool = False) -> QuerySet[InboxItem]:
    return InboxItem.objects.filter(user_id=user_id, archived_at__isnull=not archived).order_by(
        "-created_at", "-id"
    )


def inbox_page(
    *,
    user_id: UserKey,
    limit: int,
    before: tuple[datetime, int] | None = None,
    unread_only: bool = False,
    archived: bool = False,
) -> tuple[list[InboxItem], tuple[datetime, int] | None]:
    """Newest-first items and the next page's cursor (keyset: stable while items arrive)."""
    qs = inbox_items(user_id=user_id, archived=archived)
    if unread_only:
        qs = qs.filter(read_at__isnull=True)
    if before is not None:
        created, pk = before
        qs = qs.filter(created_at__lt=created) | qs.filter(created_at=created, id__lt=pk)
    items = list(qs[: limit + 1])
    next_cursor = (items[limit - 1].created_at, items[limit - 1].pk) if len(items) > limit else None
    return items[:limit], next_cursor


def inbox_item_topics(*, message_ids: Iterable[int]) -> dict[int, str]:
    """The topic key of each of these messages a topic's send handed out (message id -> key),
    in one query for a page of inbox items."""
    wanted = list(message_ids)
    if not wanted:
        return {}
    return dict(
        Message.objects.filter(pk__in=wanted, topic__isnull=False).values_list("pk", "topic__key")
    )


def message_inbox_group(message: Message) -> tuple[str | None, int]:
    """The inbox group of a message of a type that digests (its digest key, else its throttle
    key when the type folds its throttle's overflow, else "": the type itself) and how many
    messages it stands for (a digest's count, or one); (None, 1) for any other message.

    Only a digest's own message and the messages the digest could have collected are grouped
    (as digests' `_rule` decides, with `collectable`): a campaign's message, a scheduled send,
    a cancel key's, a critical one would replace the person's unread group item, so each has
    an item of its own."""
    info = type_info_get(message.type_id)
    if info is None or not info.digests:
        return None, 1
    if message.digest_id is None and (
        message.campaign_id is not None
        or message.not_before is not None
        or not collectable(
            kind=info.kind,
            priority=message.priority,
            is_test=message.is_test,
            has_cancel_key=message.cancel_key is not None,
        )
    ):
        return None, 1
    key = message.digest_key or (message.throttle_key if info.throttle_folds else None) or ""
    carried = message.context.get("digest") if isinstance(message.context, dict) else None
    count = carried.get("count") if message.digest_id and isinstance(carried, dict) else None
    return key, count if type(count) is int and count > 0 else 1


def inbox_groups(types: Mapping[int, str]) -> dict[int, tuple[str | None, int]]:
    """`message_inbox_group` of the messages (id -> type key) whose types digest; one query,
    none when no type does."""
    ids = [pk for pk, key in types.items() if (info := type_info_get(key)) and info.digests]
    if not ids:
        return {}
    fields = (
        *("id", "type_id", "digest_id", "digest_key", "throttle_key", "is_test", "context"),
        *("campaign_id", "not_before", "cancel_key", "priority"),
    )
    return {m.pk: message_inbox_group(m) for m in Message.objects.filter(pk__in=ids).only(*fields)}


def inbox_unread_count(*, user_id: UserKey) -> int:
    return InboxItem.objects.filter(
        user_id=user_id, read_at__isnull=True, archived_at__isnull=True
    ).count()


def inbox_unread_counts(*, user_ids: Iterable[UserKey]) -> dict[UserKey, int]:
    """Many users' badges in one grouped query (the live streams of a burst); 0 for none."""
    users = list(user_ids)
    counted = (
        InboxItem.objects.filter(user_id__in=users, read_at__isnull=True, archived_at__isnull=True)
        .values("user_id")
        .annotate(unread=Count("id"))
        .order_by()
    )
    found = {row["user_id"]: row["unread"] for row in counted}
    return {user_id: found.get(user_id, 0) for user_id in users}


# --- Support: a user's whole history --------------------------------------------------------


def user_history(*, user_id: UserKey) -> QuerySet[Message]:
    """Every message to a user, newest first, with deliveries and their events prefetched.

    The columns a caller filled are left out (MESSAGE_CALLER_FIELDS), so one that cannot be
    read never takes the page down; the channels asked for and the send time come as text
    (`channels_text`, `not_before_text`)."""
    events = DeliveryEvent.objects.order_by("at", "id")
    deliveries = Delivery.objects.order_by("channel").prefetch_related(
        Prefetch("events", queryset=events)
    )
    return (
        Message.objects.filter(user_id=user_id)
        .defer(*MESSAGE_CALLER_FIELDS)
        .annotate(
            channels_text=Cast("channels", output_field=TextField()),
            not_before_text=Cast("not_before", output_field=TextField()),
        )
        .select_related("type", "campaign", "digest", "topic")
        .prefetch_related(Prefetch("deliveries", queryset=deliveries))
        .order_by("-created_at", "-id")
    )


# --- Messages that cannot be read -----------------------------------------------------------

# The columns of a message that its caller fills: the only ones that can hold what Python cannot
# read (a date past the year 9999, JSON nested a thousand deep). Pages that list messages leave
# them out, and a message's own page reads them one at a time.
MESSAGE_CALLER_FIELDS = ("context", "channels", "fallback_chain", "expires_at", "not_before")
MESSAGE_FIELD_WORDS = {
    "context": "context",
    "channels": "list of channels",
    "fallback_chain": "list of fallback channels",
    "expires_at": "expiry date",
    "not_before": "send-after time",
    "created_at": "creation time",
    "routed_at": "routing time",
}


def _unreadable_phrases(
    model: type[Message] | type[User] | type[Recipient], pk: int, owner: str
) -> list[str]:
    words = MESSAGE_FIELD_WORDS if model is Message else {}
    phrases = []
    for name, error in unreadable_columns(model, pk).items():
        field = model_field(model, name)
        label = words.get(name) or str(field.verbose_name)
        phrases.append(f"{owner} {label} {unreadable_words(field, error)}")
    return phrases


UNREADABLE = "This message could not be read: "


def message_unreadable_reason(message_id: int) -> str:
    """Why a message cannot be read, in words for support staff: "This message could not be
    read: its expiry date is out of range". Reads each column alone, then the recipient's."""
    phrases = _unreadable_phrases(Message, message_id, "its")
    if phrases:
        return UNREADABLE + "; ".join(phrases)
    user_id = Message.objects.filter(pk=message_id).values_list("user_id", flat=True).first()
    return recipient_unreadable_reason(user_id) if user_id is not None else UNREADABLE.rstrip(": ")


def recipient_unreadable_reason(user_id: UserKey) -> str:
    """Why a message to this user cannot be prepared when the user's own row cannot be read."""
    user_model = get_user_model()
    phrases = _unreadable_phrases(user_model, user_id, "its recipient's")
    profile_id = Recipient.objects.filter(user_id=user_id).values_list("pk", flat=True).first()
    if profile_id is not None:
        phrases += _unreadable_phrases(Recipient, profile_id, "its recipient's")
    return UNREADABLE + ("; ".join(phrases) or "its recipient's record cannot be read")


def message_read_caller_fields(message: Message) -> dict[str, str]:
    """Read a message's deferred caller fields one at a time. Those that cannot be read are set
    to None and come back as {field name: why, in words}."""
    problems: dict[str, str] = {}
    deferred = message.get_deferred_fields()
    for name in MESSAGE_CALLER_FIELDS:
        if name not in deferred:
            continue
        try:
            message.refresh_from_db(fields=[name])
        except UNREADABLE_ERRORS as error:
            setattr(message, name, None)
            field = model_field(Message, name)
            problems[name] = f"The {MESSAGE_FIELD_WORDS[name]} {unreadable_words(field, error)}"
    return problems


# --- What users chose, in bulk for a routing batch ------------------------------------------


def preferences_of(*, user_ids: Iterable[UserKey]) -> dict[int, Preferences]:
    """Each user's overrides and marketing frequency (users without rows get the defaults)."""
    ids = list(user_ids)
    overrides: dict[int, dict[tuple[str, str], bool]] = defaultdict(dict)
    for user_id, category, channel, enabled in Preference.objects.filter(
        any_of("user_id", ids)
    ).values_list("user_id", "category", "channel", "enabled"):
        overrides[user_id][(category, channel)] = enabled
    frequency = dict(
        Recipient.objects.filter(any_of("user_id", ids)).values_list(
            "user_id", "marketing_frequency"
        )
    )
    return {
        user_id: Preferences(
            overrides=overrides.get(user_id, {}),
            marketing_frequency=frequency.get(user_id, MarketingFrequency.AS_SENT),
        )
        for user_id in ids
    }


def consent_of(
    *, user_ids: Iterable[UserKey], purpose: str = ConsentPurpose.MARKETING
) -> dict[int, ConsentState]:
    """The newest consent record per channel for each user."""
    ids = list(user_ids)
    latest: dict[int, dict[str, ConsentRecord]] = defaultdict(dict)
    rows = (
        Consent.objects.filter(any_of("user_id", ids), purpose=purpose)
        .order_by("user_id", "channel", "at", "id")
        .values_list("user_id", "channel", "granted", "at")
    )
    for user_id, channel, granted, at in rows:
        latest[user_id][channel] = ConsentRecord(granted=granted, at=at)  # newest last wins
    return {user_id: ConsentState(latest=latest.get(user_id, {})) for user_id in ids}


def irrelevant_feedback_counts(
    *, user_ids: Iterable[UserKey], since: datetime
) -> dict[tuple[int, str], int]:
    """(user id, type key) -> how many 👎 "irrelevant" the user gave that type since `since`."""
    rows = (
        InboxItem.objects.filter(
            any_of("user_id", user_ids), feedback=Feedback.IRRELEVANT, feedback_at__gte=since
        )
        .values_list("user_id", "type_key")
        .annotate(n=Count("id"))
    )
    return {(user_id, type_key): n for user_id, type_key, n in rows}
