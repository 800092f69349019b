"""The public door: `notify()` and `notify_many()`.

Everything is validated before anything is written; bad input raises a `NotifyError` subclass
whose message says what to fix. The message is written in the caller's transaction and handed
to Celery only after that transaction commits; if it rolls back, nothing is sent.

    from notifier.api import notify
    notify(user, "order.shipped", {"order_number": "A1001", ...}, idempotency_key="ship:A1001")
"""

from __future__ import annotations

import json
import math
from collections import Counter
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from django.utils import timezone

from channels.base import Channel
from notifier.errors import (
    ChannelNotAllowed,
    InactiveNotificationType,
    InvalidContext,
    InvalidExpiry,
    InvalidIdempotencyKey,
    InvalidRecipient,
    MissingContextVariable,
    UnknownNotificationType,
)
from notifier.models import Message, User
from notifier.rendering import SYSTEM_VARIABLES, variables_used
from notifier.selectors import TypeInfo, type_info_get
from notifier.services.messages import NewMessage, message_create, messages_create
from notifier.text import text_problem

MAX_CONTEXT_BYTES = 64 * 1024
MAX_KEY_LENGTH = 255
MAX_ID = 2**63 - 1  # PostgreSQL's bigint
UserRef = User | int

__all__ = ["BulkResult", "notify", "notify_many"]


# --- check_*: validation at the edge --------------------------------------------------------


def check_type(type_key: object) -> TypeInfo:
    if not isinstance(type_key, str) or not type_key:
        raise UnknownNotificationType(
            f"type_key must be a notification type key such as 'order.shipped', got {type_key!r}"
        )
    if text_problem(type_key) or len(type_key) > MAX_KEY_LENGTH:
        raise UnknownNotificationType(
            f"no notification type {type_key[:80]!r}: type keys are short plain text such as "
            "'order.shipped'"
        )
    info = type_info_get(type_key)
    if info is None:
        raise UnknownNotificationType(
            f"no notification type {type_key!r}; define it in notifier/catalog.py "
            "(then migrate) or in the admin"
        )
    if not info.is_active:
        raise InactiveNotificationType(
            f"notification type {type_key!r} is switched off; switch it on in the admin"
        )
    return info


def _user_id(user: object) -> int:
    if isinstance(user, User):
        if user.pk is None:
            raise InvalidRecipient("the user is not saved yet; save it before notifying it")
        return int(user.pk)
    if isinstance(user, int) and not isinstance(user, bool):
        if not 0 < user <= MAX_ID:
            raise InvalidRecipient(f"no user with id {user}: user ids run from 1 to {MAX_ID}")
        return user
    raise InvalidRecipient(f"user must be a User or a user id, got {type(user).__name__}")


def check_recipients(users: Sequence[object]) -> list[int]:
    """Every user exists and is active (one query for the lot)."""
    ids = [_user_id(user) for user in users]
    active = dict(User.objects.filter(pk__in=set(ids)).values_list("pk", "is_active"))
    missing = sorted({pk for pk in ids if pk not in active})
    if missing:
        raise InvalidRecipient(f"no user with id {_id_list(missing)}; they may have been deleted")
    inactive = sorted({pk for pk in ids if not active[pk]})
    if inactive:
        raise InvalidRecipient(
            f"user {_id_list(inactive)} {'is' if len(inactive) == 1 else 'are'} inactive; "
            "inactive users are not notified"
        )
    return ids


def _id_list(ids: list[int]) -> str:
    shown = ", ".join(str(pk) for pk in ids[:10])
    return shown + (f" and {len(ids) - 10} more" if len(ids) > 10 else "")


def check_channels(channels: object, info: TypeInfo) -> list[str]:
    if channels is None:
        return list(info.channels)
    if isinstance(channels, str) or not isinstance(channels, Iterable):
        raise ChannelNotAllowed(f"channels must be a list such as ['email'], got {channels!r}")
    chosen: list[str] = []
    for channel in channels:
        if channel not in Channel.__members__.values():
            raise ChannelNotAllowed(
                f"{channel!r} is not a channel; use {', '.join(c.value for c in Channel)}"
            )
        if channel not in info.channels:
            raise ChannelNotAllowed(
                f"notification type {info.key!r} does not use {channel}; it uses "
                f"{', '.join(info.channels)}"
            )
        if str(channel) not in chosen:
            chosen.append(str(channel))
    if not chosen:
        raise ChannelNotAllowed("channels is empty; leave it out to use the type's channels")
    return chosen


def _check_json_value(value: object, path: str) -> None:
    if isinstance(value, str):
        problem = text_problem(value)
        if problem:
            raise InvalidContext(f"{path} {problem}, which cannot be stored; remove it")
        return
    if value is None or isinstance(value, (bool, int)):
        return
    if isinstance(value, float):
        if not math.isfinite(value):
            raise InvalidContext(f"{path} is {value}, which JSON cannot hold; pass a number")
        return
    if isinstance(value, Mapping):
        for key, item in value.items():
            if not isinstance(key, str):
                raise InvalidContext(f"{path} has a non-string key {key!r}; JSON keys are strings")
            problem = text_problem(key)
            if problem:
                raise InvalidContext(f"{path} has a key that {problem}; rename it")
            _check_json_value(item, f"{path}[{key!r}]")
        return
    if isinstance(value, (list, tuple)):
        for index, item in enumerate(value):
            _check_json_value(item, f"{path}[{index}]")
        return
    raise InvalidContext(
        f"{path} is a {type(value).__name__}, which is not JSON; pass a string, number, bool, "
        "list or dict (e.g. a date as .isoformat(), a Decimal as str)"
    )


def check_context(context: object, info: TypeInfo, channels: Sequence[str]) -> dict[str, Any]:
    if context is None:
        context = {}
    if not isinstance(context, Mapping):
        raise InvalidContext(f"context must be a dict, got {type(context).__name__}")
    _check_json_value(context, "context")
    reserved = sorted(SYSTEM_VARIABLES & set(context))
    if reserved:
        raise InvalidContext(
            f"context may not set {', '.join(reserved)}: the pipeline provides "
            f"{'it' if len(reserved) == 1 else 'them'}"
        )
    size = len(json.dumps(context, ensure_ascii=False).encode())
    if size > MAX_CONTEXT_BYTES:
        raise InvalidContext(
            f"context is {size} bytes; keep it under {MAX_CONTEXT_BYTES} (pass ids, not documents)"
        )
    needed: set[str] = set()
    for channel in channels:
        needed |= variables_used(info.key, Channel(channel))
    missing = sorted(needed - set(context) - info.optional_context)
    if missing:
        raise MissingContextVariable(info.key, missing)
    return dict(context)


def check_expires_at(expires_at: object) -> datetime | None:
    if expires_at is None:
        return None
    if not isinstance(expires_at, datetime) or timezone.is_naive(expires_at):
        raise InvalidExpiry(f"expires_at must be a timezone-aware datetime, got {expires_at!r}")
    if expires_at <= timezone.now():
        raise InvalidExpiry(f"expires_at {expires_at.isoformat()} is already in the past")
    return expires_at


def check_idempotency_key(key: object) -> str | None:
    if key is None:
        return None
    if not isinstance(key, str) or not key.strip():
        raise InvalidIdempotencyKey(f"idempotency_key must be a non-empty string, got {key!r}")
    if len(key) > MAX_KEY_LENGTH:
        raise InvalidIdempotencyKey(
            f"idempotency_key is {len(key)} characters; keep it to {MAX_KEY_LENGTH}"
        )
    problem = text_problem(key)
    if problem:
        raise InvalidIdempotencyKey(f"idempotency_key {problem}; use plain text")
    return key


# --- The API --------------------------------------------------------------------------------


def notify(
    user: UserRef,
    type_key: str,
    context: Mapping[str, Any] | None = None,
    *,
    idempotency_key: str | None = None,
    channels: Sequence[str] | None = None,
    expires_at: datetime | None = None,
) -> Message:
    """Notify one user. Returns the Message; the same idempotency key returns the same one."""
    info = check_type(type_key)
    user_id = _user_id(user)
    chosen = check_channels(channels, info)
    clean_context = check_context(context, info, chosen)
    key = check_idempotency_key(idempotency_key)
    # Whether the user exists and is active is checked by the INSERT itself (one round trip);
    # check_recipients runs only to name the problem when nothing was written.
    return message_create(
        row=NewMessage(
            user_id=user_id,
            type_key=info.key,
            context=clean_context,
            channels=chosen if channels is not None else [],
            lane=info.lane,
            idempotency_key=key,
            priority=info.priority,
            expires_at=check_expires_at(expires_at),
        ),
        check_recipient=lambda: check_recipients([user_id]),
    )


@dataclass(frozen=True)
class BulkResult:
    message_ids: list[int]
    created: int

    @property
    def existing(self) -> int:
        return len(self.message_ids) - self.created


def notify_many(
    users: Iterable[UserRef],
    type_key: str,
    context: Mapping[str, Any] | None = None,
    *,
    contexts: Mapping[int, Mapping[str, Any]] | None = None,
    idempotency_key: str | None = None,
    channels: Sequence[str] | None = None,
    expires_at: datetime | None = None,
) -> BulkResult:
    """Notify many users with one INSERT per thousand and one task per batch.

    `context` is shared; `contexts` maps a user id to values that override it for that user.
    With `idempotency_key`, each user's key is '<idempotency_key>:<user id>', so calling again
    (a retried job) sends nothing twice. All or nothing: bad input for any user writes nothing.
    """
    info = check_type(type_key)
    user_list = list(users)
    user_ids = check_recipients(user_list)
    if len(set(user_ids)) != len(user_ids):
        twice = sorted(pk for pk, n in Counter(user_ids).items() if n > 1)
        raise InvalidRecipient(f"users lists user {_id_list(twice)} more than once")
    chosen = check_channels(channels, info)
    shared = check_context(context, info, ()) if context is not None else {}
    key = check_idempotency_key(idempotency_key)
    if key is not None:
        check_idempotency_key(f"{key}:{max(user_ids, default=0)}")
    expiry = check_expires_at(expires_at)
    per_user = dict(contexts or {})
    strangers = set(per_user) - set(user_ids)
    if strangers:
        raise InvalidContext(f"contexts names users not in users: {_id_list(sorted(strangers))}")

    rows: list[NewMessage] = []
    checked: dict[int, dict[str, Any]] = {}
    for user_id in user_ids:
        if user_id in per_user:
            if user_id not in checked:
                checked[user_id] = check_context({**shared, **per_user[user_id]}, info, chosen)
            merged = checked[user_id]
        else:
            if -1 not in checked:
                checked[-1] = check_context(shared, info, chosen)
            merged = checked[-1]
        rows.append(
            NewMessage(
                user_id=user_id,
                type_key=info.key,
                context=merged,
                channels=chosen if channels is not None else [],
                lane=info.lane,
                idempotency_key=f"{key}:{user_id}" if key is not None else None,
                priority=info.priority,
                expires_at=expiry,
            )
        )
    written = messages_create(rows=rows)
    return BulkResult(message_ids=[m.pk for m in written.messages], created=written.created)
