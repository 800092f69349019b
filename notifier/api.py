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
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any, TypeVar, cast

from django.contrib.auth import get_user_model
from django.db import DatabaseError
from django.db.models import Model, Value
from django.utils import timezone
from django.utils.functional import LazyObject, empty

from channels.base import Channel
from notifier.errors import (
    ChannelNotAllowed,
    InactiveNotificationType,
    InvalidContext,
    InvalidExpiry,
    InvalidIdempotencyKey,
    InvalidRecipient,
    MissingContextVariable,
    NotifyError,
    RecipientErased,
    UnknownNotificationType,
)
from notifier.ids import MAX_ID
from notifier.models import Message, User
from notifier.rendering import SYSTEM_VARIABLES, variables_used
from notifier.selectors import TypeInfo, type_info_get
from notifier.services.messages import NewMessage, message_create, messages_create
from notifier.text import text_problem
from notifier.user_keys import UserKey, user_key, user_key_kind

MAX_CONTEXT_BYTES = 64 * 1024  # the context as JSON (UTF-8)
MAX_CONTEXT_DEPTH = 32  # dicts and lists, the context itself included
# Integers in a context stay within 64 bits (what Go, Java and PostgreSQL's bigint hold): other
# JSON readers lose or refuse bigger ones, and Python cannot even print one over 4,300 digits.
MIN_CONTEXT_INT, MAX_CONTEXT_INT = -(2**63), 2**63 - 1
MAX_KEY_LENGTH = 255
# No realistic expiry is further off; the bound keeps every stored date far from the calendar's
# end (year 9999 with a negative offset became year 10000 in UTC, which Python cannot read).
MAX_EXPIRY_AHEAD = timedelta(days=3653)  # ten years
MAX_CHANNEL_ENTRIES = 16  # there are four channels: more entries is a caller's bug
CHANNEL_NAMES = frozenset(channel.value for channel in Channel)
UserRef = User | UserKey

__all__ = ["BulkResult", "notify", "notify_many"]

_T = TypeVar("_T")
_EPOCH_UTC = datetime(1970, 1, 1, tzinfo=UTC)
# Naive on purpose, for check_expires_at's arithmetic only: subtracting naive datetimes never
# calls the caller's tzinfo again and cannot overflow at the calendar's ends.
_EPOCH = _EPOCH_UTC.replace(tzinfo=None)


# --- Reading the caller's values without trusting them ---------------------------------------
# A value is read through the exact built-in type it claims to be (int.__index__, str.__str__,
# dict.items): a subclass's own __eq__, __hash__, __str__ or items() never runs, so it cannot
# lie about what is stored or raise something that is not a NotifyError. Whatever the caller's
# own code raises where it must run (a generator, a Mapping, a tzinfo) becomes the typed error.


def _exact_int(value: object) -> int | None:
    """The int `value` holds, or None: never a bool, a float or text (no coercion)."""
    kind = type(value)
    if kind is bool or not issubclass(kind, int):
        return None
    return int.__index__(cast(int, value))


def _exact_str(value: object) -> str | None:
    return str.__str__(cast(str, value)) if issubclass(type(value), str) else None


def _describe(value: object) -> str:
    """A caller's value for an error message, short and safe: its own __repr__ is never called
    (it may raise, hang or be megabytes long), nor is a huge int printed (Python refuses)."""
    if value is None or type(value) is bool:
        return repr(value)
    number = _exact_int(value)
    if number is not None:
        if number.bit_length() > 64:
            return f"<an integer of about {int(number.bit_length() * math.log10(2)) + 1} digits>"
        return repr(number)
    if issubclass(type(value), float):
        return repr(float.__float__(cast(float, value)))
    text = _exact_str(value)
    if text is not None:
        return repr(text[:60]) + (f" (cut, {len(text)} characters)" if len(text) > 60 else "")
    return f"<a value of type {type(value).__qualname__[:60]}>"


def _read(values: Iterable[_T], what: str, error: type[NotifyError]) -> Iterator[_T]:
    """Iterate the caller's `values`. What its own code raises (not iterable at all, a generator
    failing half-way, a Mapping whose items() raises) becomes `error` naming `what`, with the
    original as __cause__. Database errors pass: a QuerySet is the caller's own query."""
    try:
        iterator = iter(values)
    except (DatabaseError, MemoryError):
        raise
    except Exception as exc:
        raise error(f"{what} must be a list or another iterable, got {_describe(values)}") from exc
    while True:
        try:
            item = next(iterator)
        except StopIteration:
            return
        except (NotifyError, DatabaseError, MemoryError):
            raise
        except Exception as exc:
            raise error(
                f"reading {what} raised {type(exc).__name__}; pass plain values "
                "(the original error is this one's __cause__)"
            ) from exc
        yield item


# --- check_*: validation at the edge --------------------------------------------------------


def check_type(type_key: object) -> TypeInfo:
    key = _exact_str(type_key)
    if not key:
        raise UnknownNotificationType(
            "type_key must be a notification type key such as 'order.shipped', "
            f"got {_describe(type_key)}"
        )
    if len(key) > MAX_KEY_LENGTH or text_problem(key):
        raise UnknownNotificationType(
            f"no notification type {_describe(key)}: type keys are short plain text such as "
            "'order.shipped'"
        )
    info = type_info_get(key)
    if info is None:
        raise UnknownNotificationType(
            f"no notification type {key!r}; define it in notifier/catalog.py "
            "(then migrate) or in the admin"
        )
    if not info.is_active:
        raise InactiveNotificationType(
            f"notification type {key!r} is switched off; switch it on in the admin"
        )
    return info


def _unwrapped(user: object) -> object:
    """`request.user` is a lazy object around the user: the user it stands for."""
    if issubclass(type(user), LazyObject):
        lazy: Any = user  # Django's own protocol: _setup() fills _wrapped
        if lazy._wrapped is empty:
            lazy._setup()
        return cast(object, lazy._wrapped)
    return user


def _user_id(user: object) -> UserKey:
    """The key of a saved user of the project's user model (AUTH_USER_MODEL), or a key of one
    as it is stored (`notifier.user_keys`). Never coerced: int() would make a pk of 1.5, True
    or "7" the id of user 1 or 7."""
    user = _unwrapped(user)
    if issubclass(type(user), get_user_model()):
        try:
            pk = cast(User, user).pk
        except Exception as exc:
            raise InvalidRecipient(f"reading user.pk raised {type(exc).__name__}") from exc
        if pk is None:
            raise InvalidRecipient("the user is not saved yet; save it before notifying it")
        key = user_key(pk)
        if key is None:
            raise InvalidRecipient(f"user.pk must be {user_key_kind()}, got {_describe(pk)}")
        return key
    key = user_key(user)
    if key is None:
        number = _exact_int(user)
        if number is not None and user_key(1) == 1:
            raise InvalidRecipient(
                f"no user with id {_describe(number)}: user ids run from 1 to {MAX_ID}"
            )
        if issubclass(type(user), Model):
            raise InvalidRecipient(
                f"user must be a {get_user_model()._meta.label} (the project's user model) "
                f"or its key, got a {type(user).__qualname__[:60]}"
            )
        raise InvalidRecipient(
            f"user must be a User or a user id ({user_key_kind()}), got {_describe(user)}"
        )
    return key


def _user_ids(users: object) -> list[UserKey]:
    # Text and bytes are iterable, but their characters and byte values are not users: b"\x07"
    # would notify user 7.
    if issubclass(type(users), (str, bytes, bytearray, memoryview)):
        raise InvalidRecipient(f"users must be a list of users or user ids, got {_describe(users)}")
    return [
        _user_id(user) for user in _read(cast(Iterable[object], users), "users", InvalidRecipient)
    ]


def check_recipients(users: Iterable[object]) -> list[UserKey]:
    """Every user exists and is active (one query for the lot)."""
    ids = _user_ids(users)
    model = get_user_model()
    users = model._default_manager.filter(pk__in=set(ids))
    # With whether each was erased (notifier.services.erasure): the profile, joined.
    if any(field.name == "is_active" for field in model._meta.concrete_fields):
        rows = users.values_list("pk", "is_active", "notifier_recipient__erased_at")
    else:  # a user model without the flag: every user it has is active
        rows = users.annotate(active=Value(True)).values_list(
            "pk", "active", "notifier_recipient__erased_at"
        )
    found = list(rows)
    active = {pk: is_active for pk, is_active, _ in found}
    missing = sorted({pk for pk in ids if pk not in active})
    if missing:
        raise InvalidRecipient(f"no user with id {_id_list(missing)}; they may have been deleted")
    erased = sorted(pk for pk, _, erased_at in found if erased_at is not None)
    if erased:
        raise RecipientErased(
            f"user {_id_list(erased)} {'was' if len(erased) == 1 else 'were'} erased at "
            "their request (GDPR/PIPL); erased people are not notified"
        )
    inactive = sorted({pk for pk in ids if not active[pk]})
    if inactive:
        raise InvalidRecipient(
            f"user {_id_list(inactive)} {'is' if len(inactive) == 1 else 'are'} inactive; "
            "inactive users are not notified"
        )
    return ids


def _id_list(ids: list[UserKey]) -> str:
    shown = ", ".join(str(pk) for pk in ids[:10])
    return shown + (f" and {len(ids) - 10} more" if len(ids) > 10 else "")


def check_channels(channels: object, info: TypeInfo) -> list[str]:
    if channels is None:
        return list(info.channels)
    if issubclass(type(channels), (str, bytes, bytearray, memoryview, Mapping)):
        raise ChannelNotAllowed(
            f"channels must be a list such as ['email'], got {_describe(channels)}"
        )
    chosen: list[str] = []
    entries = _read(cast(Iterable[object], channels), "channels", ChannelNotAllowed)
    for count, entry in enumerate(entries):
        if count == MAX_CHANNEL_ENTRIES:
            raise ChannelNotAllowed(
                f"channels has more than {MAX_CHANNEL_ENTRIES} entries; name each channel once"
            )
        channel = _exact_str(entry)
        if channel is None or channel not in CHANNEL_NAMES:
            raise ChannelNotAllowed(
                f"{_describe(entry)} is not a channel; use {', '.join(c.value for c in Channel)}"
            )
        if channel not in info.channels:
            raise ChannelNotAllowed(
                f"notification type {info.key!r} does not use {channel}; it uses "
                f"{', '.join(info.channels)}"
            )
        if channel not in chosen:
            chosen.append(channel)
    if not chosen:
        raise ChannelNotAllowed("channels is empty; leave it out to use the type's channels")
    return chosen


def _entries(value: object) -> Iterator[tuple[object, object]]:
    """(key, value) pairs of a dict or Mapping, (index, item) of a list or tuple. Built-in
    containers are read from their storage, not through a subclass's own methods; any other
    Mapping's items() is the caller's code and runs only when the iterator is advanced."""
    if issubclass(type(value), dict):
        return iter(dict.items(cast(dict[object, object], value)))
    if issubclass(type(value), list):
        return enumerate(list.__iter__(cast(list[object], value)))
    if issubclass(type(value), tuple):
        return enumerate(tuple.__iter__(cast(tuple[object, ...], value)))
    return _mapping_items(cast(Mapping[object, object], value))


def _mapping_items(mapping: Mapping[object, object]) -> Iterator[tuple[object, object]]:
    # Unpacked here, so that an entry which is not a pair fails inside next(), where the
    # caller's code is expected to fail.
    for key, value in mapping.items():  # noqa: UP028
        yield key, value


def _path(label: str, keys: Sequence[object]) -> str:
    """Where a value is, e.g. context['items'][3]['price'] (the middle of a deep path cut)."""
    shown = [f"[{_describe(key)}]" for key in (keys if len(keys) <= 8 else keys[-4:])]
    return label + ("" if len(keys) <= 8 else f"[...{len(keys) - 4} levels...]") + "".join(shown)


def _too_large(label: str) -> InvalidContext:
    return InvalidContext(
        f"{label} is over {MAX_CONTEXT_BYTES} bytes as JSON; keep it under that "
        "(pass ids, not documents)"
    )


def plain_json_object(value: object, label: str = "context") -> dict[str, Any]:
    """A copy of `value` made only of exact dict, list, str, int, float, bool and None, or an
    InvalidContext that names the offending place (e.g. context['items'][3]['price']).

    Iterative (no depth can exhaust Python's stack) and bounded: nesting stops at
    MAX_CONTEXT_DEPTH, and the JSON size is counted while reading, which stops as soon as it
    is over MAX_CONTEXT_BYTES, so a context of megabytes is refused after reading about the
    limit. Error paths are spelt out only for the error.
    """
    if not issubclass(type(value), Mapping):
        raise InvalidContext(f"{label} must be a dict, got {_describe(value)}")
    root: dict[str, Any] = {}
    # One frame per open dict or list: its entries still to read, its copy, and its key in
    # its parent. `floor` and `ceiling` bound the size of the JSON read so far.
    frames: list[tuple[Iterator[tuple[object, object]], dict[str, Any] | list[Any]]] = [
        (_entries(value), root)
    ]
    keys: list[object] = []
    floor = ceiling = 2
    while frames:
        entries, copy = frames[-1]
        try:
            entry = next(entries, None)
        except Exception as exc:  # a Mapping's own items(): the caller's code
            raise InvalidContext(
                f"reading {_path(label, keys)} raised {type(exc).__name__}; pass plain dicts"
            ) from exc
        if entry is None:
            frames.pop()
            if keys:
                keys.pop()
            continue
        key, item = entry
        if type(copy) is dict:
            name = _exact_str(key)
            if name is None:
                raise InvalidContext(
                    f"{_path(label, keys)} has the key {_describe(key)}; JSON keys are strings"
                )
            floor += len(name) + 3
            ceiling += 6 * len(name) + 6
            if floor > MAX_CONTEXT_BYTES:
                raise _too_large(label)
            problem = text_problem(name)
            if problem:
                raise InvalidContext(f"{_path(label, keys)} has a key that {problem}; rename it")
            if name in copy:
                raise InvalidContext(f"{_path(label, keys)} has the key {name!r} twice")
            key = name
        else:
            ceiling += 2
        kind = type(item)
        plain: Any
        if item is None or kind is bool:
            plain = item
            floor, ceiling = floor + 4, ceiling + 5
        elif issubclass(kind, str):
            plain = str.__str__(cast(str, item))
            floor, ceiling = floor + len(plain) + 2, ceiling + 6 * len(plain) + 2
            if floor > MAX_CONTEXT_BYTES:
                raise _too_large(label)
            problem = text_problem(plain)
            if problem:
                raise InvalidContext(
                    f"{_path(label, [*keys, key])} {problem}, which cannot be stored; remove it"
                )
        elif issubclass(kind, int):
            plain = int.__index__(cast(int, item))
            if not MIN_CONTEXT_INT <= plain <= MAX_CONTEXT_INT:
                raise InvalidContext(
                    f"{_path(label, [*keys, key])} is {_describe(plain)}, outside the 64-bit "
                    "range JSON readers keep exact; pass it as a string"
                )
            floor, ceiling = floor + 1, ceiling + 20
        elif issubclass(kind, float):
            plain = float.__float__(cast(float, item))
            if not math.isfinite(plain):
                raise InvalidContext(
                    f"{_path(label, [*keys, key])} is {plain}, which JSON cannot hold; "
                    "pass a number"
                )
            floor, ceiling = floor + 1, ceiling + 25
        elif issubclass(kind, (dict, list, tuple)) or issubclass(kind, Mapping):
            if len(frames) == MAX_CONTEXT_DEPTH:
                raise InvalidContext(
                    f"{_path(label, [*keys, key])} is nested more than {MAX_CONTEXT_DEPTH} "
                    "levels deep (dicts and lists); keep contexts flatter"
                )
            plain = [] if issubclass(kind, (list, tuple)) else {}
            floor, ceiling = floor + 2, ceiling + 2
            frames.append((_entries(item), plain))
            keys.append(key)
        else:
            raise InvalidContext(
                f"{_path(label, [*keys, key])} is {_describe(item)}, which is not JSON; pass a "
                "string, number, bool, list or dict (e.g. a date as .isoformat(), a Decimal "
                "as str)"
            )
        if floor > MAX_CONTEXT_BYTES:
            raise _too_large(label)
        if type(copy) is dict:
            copy[cast(str, key)] = plain
        else:
            cast(list[Any], copy).append(plain)
    if ceiling > MAX_CONTEXT_BYTES:
        size = len(json.dumps(root, ensure_ascii=False).encode())
        if size > MAX_CONTEXT_BYTES:
            raise InvalidContext(
                f"{label} is {size} bytes as JSON; keep it under {MAX_CONTEXT_BYTES} "
                "(pass ids, not documents)"
            )
    return root


def check_context(
    context: object, info: TypeInfo, channels: Sequence[str], *, label: str = "context"
) -> dict[str, Any]:
    plain = {} if context is None else plain_json_object(context, label)
    reserved = sorted(SYSTEM_VARIABLES & set(plain))
    if reserved:
        raise InvalidContext(
            f"{label} may not set {', '.join(reserved)}: the pipeline provides "
            f"{'it' if len(reserved) == 1 else 'them'}"
        )
    needed: set[str] = set()
    for channel in channels:
        needed |= variables_used(info.key, Channel(channel))
    missing = sorted(needed - set(plain) - info.optional_context)
    if missing:
        raise MissingContextVariable(info.key, missing)
    return plain


def check_contexts(contexts: object, user_ids: Sequence[UserKey]) -> dict[UserKey, dict[str, Any]]:
    """notify_many's per-user overrides: a dict from the id of a user in `users` to a dict."""
    if contexts is None:
        return {}
    if not issubclass(type(contexts), Mapping):
        raise InvalidContext(
            f"contexts must be a dict from user id to a dict, got {_describe(contexts)}"
        )
    wanted = set(user_ids)
    overrides: dict[UserKey, dict[str, Any]] = {}
    for key, value in _read(_entries(contexts), "contexts", InvalidContext):
        user_id = user_key(key)
        if user_id is None:
            raise InvalidContext(
                f"contexts is keyed by user id ({user_key_kind()}, such as user.pk), "
                f"got {_describe(key)}"
            )
        if user_id not in wanted:
            raise InvalidContext(f"contexts names user {_describe(user_id)}, who is not in users")
        if user_id in overrides:
            raise InvalidContext(f"contexts names user {user_id} twice")
        overrides[user_id] = plain_json_object(value, f"contexts[{user_id}]")
    return overrides


def check_expires_at(expires_at: object) -> datetime | None:
    """An aware datetime from now to MAX_EXPIRY_AHEAD, returned in UTC.

    In UTC because PostgreSQL refuses offsets past ±15:59 (a DataError that aborts the caller's
    transaction) and Python allows up to ±23:59:59.999999. The caller's tzinfo is asked for its
    offset once, and the arithmetic uses datetime's own methods, so neither a tzinfo nor a
    datetime subclass can answer differently twice or raise past this point.
    """
    if expires_at is None:
        return None
    if not issubclass(type(expires_at), datetime):
        raise InvalidExpiry(
            f"expires_at must be a timezone-aware datetime, got {_describe(expires_at)}"
        )
    moment = cast(datetime, expires_at)
    try:
        offset = datetime.utcoffset(moment)
    except Exception as exc:  # the tzinfo's own code, or datetime refusing what it returned
        raise InvalidExpiry(
            f"expires_at's tzinfo raised {type(exc).__name__} when asked for its UTC offset; "
            "use datetime.UTC or a zoneinfo.ZoneInfo"
        ) from exc
    if offset is None:
        raise InvalidExpiry(
            "expires_at has no UTC offset (it is naive, or its tzinfo returns None); pass an "
            "aware datetime such as timezone.now() + timedelta(days=1)"
        )
    since_epoch = timedelta.__sub__(
        datetime.__sub__(datetime.replace(moment, tzinfo=None), _EPOCH), offset
    )
    now = timezone.now().astimezone(UTC).replace(tzinfo=None) - _EPOCH
    if since_epoch <= now:
        raise InvalidExpiry(
            f"expires_at {(_EPOCH + since_epoch).isoformat()} UTC is already in the past"
        )
    if since_epoch - now > MAX_EXPIRY_AHEAD:
        raise InvalidExpiry(
            f"expires_at is {(since_epoch - now).days} days ahead; it may be at most "
            f"{MAX_EXPIRY_AHEAD.days} days (ten years) ahead: leave it out for no expiry"
        )
    return _EPOCH_UTC + since_epoch


def check_idempotency_key(key: object) -> str | None:
    if key is None:
        return None
    text = _exact_str(key)
    if text is None or not text.strip():
        raise InvalidIdempotencyKey(
            f"idempotency_key must be a non-empty string, got {_describe(key)}"
        )
    if len(text) > MAX_KEY_LENGTH:
        raise InvalidIdempotencyKey(
            f"idempotency_key is {len(text)} characters; keep it to {MAX_KEY_LENGTH}"
        )
    problem = text_problem(text)
    if problem:
        raise InvalidIdempotencyKey(f"idempotency_key {problem}; use plain text")
    return text


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


def same_call(
    message: Message,
    *,
    context: Mapping[str, Any] | None,
    channels: Sequence[str] | None,
    expires_at: datetime | None,
) -> bool:
    """Whether a repeated call with the message's idempotency key asked for the same thing:
    the same context (as JSON holds it), channels and expiry. Callers that keep the request
    (the HTTP API, the Celery task) refuse the same key with another body."""
    plain = json.loads(json.dumps(dict(context or {}), default=str))
    return bool(
        message.context == plain
        and (channels is None or message.channels == list(channels))
        and message.expires_at == expires_at
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
    contexts: Mapping[Any, Mapping[str, Any]] | None = None,
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
    user_ids = _user_ids(users)
    if len(set(user_ids)) != len(user_ids):
        twice = sorted(pk for pk, n in Counter(user_ids).items() if n > 1)
        raise InvalidRecipient(f"users lists user {_id_list(twice)} more than once")
    user_ids = check_recipients(user_ids)
    chosen = check_channels(channels, info)
    shared = check_context(context, info, ())
    key = check_idempotency_key(idempotency_key)
    if key is not None:
        check_idempotency_key(f"{key}:{max((str(pk) for pk in user_ids), key=len, default='')}")
    expiry = check_expires_at(expires_at)
    overrides = check_contexts(contexts, user_ids)

    rows: list[NewMessage] = []
    everyones_context: dict[str, Any] | None = None
    for user_id in user_ids:
        if user_id in overrides:
            merged = check_context(
                {**shared, **overrides[user_id]}, info, chosen, label=f"context for user {user_id}"
            )
        else:
            if everyones_context is None:
                everyones_context = check_context(shared, info, chosen)
            merged = everyones_context
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
