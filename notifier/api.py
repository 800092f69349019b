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
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from django.contrib.auth import get_user_model
from django.db import DatabaseError
from django.db.models import Model, Value
from django.utils import timezone
from django.utils.functional import LazyObject, empty

from channels.base import Channel
from notifier.errors import (
    ChannelNotAllowed,
    InactiveNotificationType,
    InvalidCancelKey,
    InvalidContext,
    InvalidDigestKey,
    InvalidExpiry,
    InvalidIdempotencyKey,
    InvalidRecipient,
    InvalidSchedule,
    InvalidSeriesDate,
    InvalidThrottleKey,
    InvalidTopic,
    MissingContextVariable,
    NotifyError,
    RecipientErased,
    UnknownDateSeries,
    UnknownNotificationType,
)
from notifier.ids import MAX_ID
from notifier.models import DateSeries, Message, Recipient, RecipientDate, User
from notifier.models.series import SERIES_KEY_PREFIX
from notifier.rendering import SYSTEM_VARIABLES, variables_used
from notifier.selectors import TypeInfo, type_info_get
from notifier.services import date_series as series_service
from notifier.services import snoozes as snooze_service
from notifier.services import topics as topic_service
from notifier.services.cancellation import CancelReport, messages_cancel
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

__all__ = [
    "BulkResult",
    "CancelReport",
    "date_clear",
    "date_exit",
    "date_set",
    "notify",
    "notify_cancel",
    "notify_many",
    "notify_topic",
    "topic_snooze",
    "topic_subscribe",
    "topic_unsnooze",
    "topic_unsubscribe",
]

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


def _since_epoch(moment: object, name: str, error: type[NotifyError]) -> timedelta:
    """How far the aware datetime `moment` is from the epoch, in UTC: `error` naming `name`
    for anything else.

    The caller's tzinfo is asked for its offset once, and the arithmetic uses datetime's own
    methods, so neither a tzinfo nor a datetime subclass can answer differently twice or raise
    past this point."""
    if not issubclass(type(moment), datetime):
        raise error(f"{name} must be a timezone-aware datetime, got {_describe(moment)}")
    value = cast(datetime, moment)
    try:
        offset = datetime.utcoffset(value)
    except Exception as exc:  # the tzinfo's own code, or datetime refusing what it returned
        raise error(
            f"{name}'s tzinfo raised {type(exc).__name__} when asked for its UTC offset; "
            "use datetime.UTC or a zoneinfo.ZoneInfo"
        ) from exc
    if offset is None:
        raise error(
            f"{name} has no UTC offset (it is naive, or its tzinfo returns None); pass an "
            "aware datetime such as timezone.now() + timedelta(days=1)"
        )
    return timedelta.__sub__(datetime.__sub__(datetime.replace(value, tzinfo=None), _EPOCH), offset)


def _now_since_epoch() -> timedelta:
    return timezone.now().astimezone(UTC).replace(tzinfo=None) - _EPOCH


def check_expires_at(expires_at: object) -> datetime | None:
    """An aware datetime from now to MAX_EXPIRY_AHEAD, returned in UTC.

    In UTC because PostgreSQL refuses offsets past ±15:59 (a DataError that aborts the caller's
    transaction) and Python allows up to ±23:59:59.999999.
    """
    if expires_at is None:
        return None
    since_epoch = _since_epoch(expires_at, "expires_at", InvalidExpiry)
    now = _now_since_epoch()
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


# --- When to send ----------------------------------------------------------------------------

IF_PAST = ("refuse", "send_now")
# A send time this little past is sent at once, not refused: the clocks of the caller's
# service and of this one differ by that much, and "now" has passed by the time it arrives.
PAST_GRACE = timedelta(minutes=1)
# A scheduled time is at most this far from now, either way (a wall-clock time is compared
# before its zone is known: a day more covers every zone's offset).
MAX_SCHEDULE_DISTANCE = MAX_EXPIRY_AHEAD


@dataclass(frozen=True, slots=True)
class SendAt:
    """When a message goes out: a moment (UTC), or a wall-clock time that each recipient's own
    time zone turns into a moment (`local`, naive). `send_late`: a time already past sends at
    once (if_past="send_now") rather than refusing the call."""

    moment: datetime | None = None
    local: datetime | None = None
    send_late: bool = False

    def at(self, time_zone: str) -> datetime:
        """The moment, in UTC, for a recipient in `time_zone` (an IANA name).

        A wall-clock time a daylight-saving change skips (02:30 on the spring-forward night)
        is read with the offset before the change, so it falls the length of the gap later
        (03:30); one that happens twice (the autumn night) is its first occurrence."""
        if self.moment is not None:
            return self.moment
        assert self.local is not None
        return self.local.replace(tzinfo=_zone(time_zone)).astimezone(UTC)


def _zone(name: str) -> ZoneInfo:
    try:
        return ZoneInfo(name or "UTC")
    except (ValueError, ZoneInfoNotFoundError):  # the profile validates it; an old row may not
        return ZoneInfo("UTC")


def check_send_at(send_at: object, send_at_local: object, if_past: object) -> SendAt | None:
    """What the caller said of when to send, checked: None for "now"."""
    if _exact_str(if_past) not in IF_PAST:
        raise InvalidSchedule(
            f"if_past must be 'refuse' (the default) or 'send_now', got {_describe(if_past)}"
        )
    send_late = _exact_str(if_past) == "send_now"
    if send_at is not None and send_at_local is not None:
        raise InvalidSchedule(
            "give send_at (a moment, with its time zone) or send_at_local (a wall-clock time "
            "in each recipient's own time zone), not both"
        )
    now = _now_since_epoch()
    if send_at is not None:
        since_epoch = _since_epoch(send_at, "send_at", InvalidSchedule)
        if abs(since_epoch - now) > MAX_SCHEDULE_DISTANCE:
            raise InvalidSchedule(
                f"send_at is {abs((since_epoch - now).days)} days away; it may be at most "
                f"{MAX_SCHEDULE_DISTANCE.days} days (ten years) from now"
            )
        return SendAt(moment=_EPOCH_UTC + since_epoch, send_late=send_late)
    if send_at_local is not None:
        if not issubclass(type(send_at_local), datetime):
            raise InvalidSchedule(
                "send_at_local must be a datetime without a time zone (the recipient's own "
                f"wall-clock time), got {_describe(send_at_local)}"
            )
        value = cast(datetime, send_at_local)
        if value.tzinfo is not None:
            raise InvalidSchedule(
                "send_at_local is a wall-clock time in each recipient's own time zone: give it "
                "without a time zone, or give send_at for one moment for everyone"
            )
        # A plain datetime, whatever the caller's subclass says of itself.
        local = datetime.combine(datetime.date(value), datetime.time(value))
        if abs((local - _EPOCH) - now) > MAX_SCHEDULE_DISTANCE - timedelta(days=1):
            raise InvalidSchedule(
                f"send_at_local is {abs(((local - _EPOCH) - now).days)} days away; it may be at "
                f"most {MAX_SCHEDULE_DISTANCE.days - 1} days from now"
            )
        return SendAt(local=local, send_late=send_late)
    return None


def send_times(
    schedule: SendAt, user_ids: Sequence[UserKey], expires_at: datetime | None
) -> dict[UserKey, datetime]:
    """Each user's moment to send (UTC), checked: one in the past is refused unless the call
    said to send it at once, and one at or after the expiry would never go out. A wall-clock
    time reads each user's time zone from their profile (UTC without one)."""
    zones: dict[UserKey, str] = {}
    if schedule.local is not None:
        zones = dict(
            Recipient.objects.filter(user_id__in=list(user_ids)).values_list("user_id", "time_zone")
        )
    moments = {user_id: schedule.at(zones.get(user_id, "UTC")) for user_id in user_ids}
    if not schedule.send_late:
        now = timezone.now()
        past = [user_id for user_id, moment in moments.items() if moment < now - PAST_GRACE]
        if past:
            what = (
                f"send_at {moments[past[0]].isoformat()}"
                if schedule.moment is not None
                else f"send_at_local {schedule.local} in the time zone of user {past[0]}"
                + (f" (and of {len(past) - 1} more)" if len(past) > 1 else "")
            )
            raise InvalidSchedule(
                f"{what} has already passed; send a later time, or pass if_past='send_now' "
                "to send at once"
            )
    if expires_at is not None:
        late = [user_id for user_id, moment in moments.items() if moment >= expires_at]
        if late:
            raise InvalidSchedule(
                f"expires_at {expires_at.isoformat()} is not after the send time "
                f"{moments[late[0]].isoformat()} (user {late[0]}): it would never go out"
            )
    return moments


def _check_key(key: object, name: str, error: type[NotifyError]) -> str | None:
    """A caller's key (cancel, throttle): None, or plain non-empty text of at most 255."""
    if key is None:
        return None
    text = _exact_str(key)
    if text is None or not text.strip():
        raise error(f"{name} must be a non-empty string, got {_describe(key)}")
    if len(text) > MAX_KEY_LENGTH:
        raise error(f"{name} is {len(text)} characters; keep it to {MAX_KEY_LENGTH}")
    problem = text_problem(text)
    if problem:
        raise error(f"{name} {problem}; use plain text")
    return text


def check_cancel_key(key: object) -> str | None:
    text = _check_key(key, "cancel_key", InvalidCancelKey)
    if text is not None and text.startswith(SERIES_KEY_PREFIX):
        raise InvalidCancelKey(
            f"cancel_key may not start with {SERIES_KEY_PREFIX}: Notifier names a date series' "
            "steps so (date_clear or date_exit cancels them); use another prefix"
        )
    return text


def check_throttle_key(key: object) -> str | None:
    return _check_key(key, "throttle_key", InvalidThrottleKey)


def check_digest_key(key: object) -> str | None:
    return _check_key(key, "digest_key", InvalidDigestKey)


# Keys Notifier gives its own messages (a digest's, a topic send's): a caller's key may not
# start so, or it could take the place of one (notify_many appends ":<user>" to its key).
RESERVED_KEY_PREFIXES = ("digest:", "topic:", SERIES_KEY_PREFIX)


def check_idempotency_key(key: object) -> str | None:
    text = _check_key(key, "idempotency_key", InvalidIdempotencyKey)
    if text is not None and text.startswith(RESERVED_KEY_PREFIXES):
        raise InvalidIdempotencyKey(
            f"idempotency_key may not start with {', '.join(RESERVED_KEY_PREFIXES)}: Notifier "
            "keys its own messages so; use another prefix"
        )
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
    send_at: datetime | None = None,
    send_at_local: datetime | None = None,
    if_past: str = "refuse",
    cancel_key: str | None = None,
    throttle_key: str | None = None,
    digest_key: str | None = None,
) -> Message:
    """Notify one user. Returns the Message; the same idempotency key returns the same one.

    `send_at` (aware) or `send_at_local` (naive: the user's own wall-clock time) holds it until
    then; a time already past is refused unless `if_past="send_now"`. `cancel_key` names it for
    `notify_cancel` until it has gone out. `throttle_key` is what its type's throttle (if it
    has one) counts it under, e.g. "product:42"; without one, the type itself. `digest_key` is
    what its type's digest (if it has one) groups it under, e.g. "post:42"."""
    info = check_type(type_key)
    user_id = _user_id(user)
    chosen = check_channels(channels, info)
    clean_context = check_context(context, info, chosen)
    key = check_idempotency_key(idempotency_key)
    expiry = check_expires_at(expires_at)
    schedule = check_send_at(send_at, send_at_local, if_past)
    cancel = check_cancel_key(cancel_key)
    throttle = check_throttle_key(throttle_key)
    digest = check_digest_key(digest_key)
    not_before = None
    if schedule is not None:
        try:
            not_before = send_times(schedule, [user_id], expiry)[user_id]
        except InvalidSchedule:
            # A retry of a call that was made in time: the message it made answers it.
            existing = _keyed(key, user_id, info.key)
            if existing is None:
                raise
            return existing
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
            expires_at=expiry,
            not_before=not_before,
            cancel_key=cancel,
            throttle_key=throttle,
            digest_key=digest,
        ),
        check_recipient=lambda: check_recipients([user_id]),
    )


def _keyed(key: str | None, user_id: UserKey, type_key: str) -> Message | None:
    """The message an idempotency key already made for this user and type, if any."""
    if key is None:
        return None
    return Message.objects.filter(idempotency_key=key, user_id=user_id, type_id=type_key).first()


def same_call(
    message: Message,
    *,
    context: Mapping[str, Any] | None,
    channels: Sequence[str] | None,
    expires_at: datetime | None,
    send_at: datetime | None = None,
    send_at_local: datetime | None = None,
    cancel_key: str | None = None,
    throttle_key: str | None = None,
    digest_key: str | None = None,
) -> bool:
    """Whether a repeated call with the message's idempotency key asked for the same thing:
    the same context (as JSON holds it), channels, expiry, send time and cancel key. Callers
    that keep the request (the HTTP API, the Celery task) refuse the same key with another
    body."""
    plain = json.loads(json.dumps(dict(context or {}), default=str))
    if send_at_local is not None:
        zone = (
            Recipient.objects.filter(user_id=message.user_id)
            .values_list("time_zone", flat=True)
            .first()
        )
        not_before: datetime | None = SendAt(local=send_at_local).at(zone or "UTC")
    else:
        not_before = send_at
    return bool(
        message.context == plain
        and (channels is None or message.channels == list(channels))
        and message.expires_at == expires_at
        and message.not_before == not_before
        and message.cancel_key == cancel_key
        and message.throttle_key == throttle_key
        and message.digest_key == digest_key
    )


def notify_cancel(cancel_key: str, *, users: Iterable[UserRef] | None = None) -> CancelReport:
    """Take back what was sent with `cancel_key` and has not gone out yet: scheduled, held or
    queued deliveries are cancelled, with the reason on each one's timeline. Only those users'
    messages when `users` is given. What has gone out (or is being handed to its provider this
    instant) stays as it is, counted in the report's `too_late`. Safe to call again: a second
    call cancels nothing more."""
    key = check_cancel_key(cancel_key)
    if key is None:
        raise InvalidCancelKey("cancel_key is required: the key the messages were sent with")
    user_ids = None if users is None else _user_ids(users)
    return messages_cancel(cancel_key=key, user_ids=user_ids)


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
    send_at: datetime | None = None,
    send_at_local: datetime | None = None,
    if_past: str = "refuse",
    cancel_key: str | None = None,
    throttle_key: str | None = None,
    digest_key: str | None = None,
) -> BulkResult:
    """Notify many users with one INSERT per thousand and one task per batch.

    `context` is shared; `contexts` maps a user id to values that override it for that user.
    With `idempotency_key`, each user's key is '<idempotency_key>:<user id>', so calling again
    (a retried job) sends nothing twice. All or nothing: bad input for any user writes nothing.
    `send_at_local` is each user's own wall-clock time (see `notify`); with the default
    if_past="refuse", a time already past for any of them refuses the call.
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
    schedule = check_send_at(send_at, send_at_local, if_past)
    cancel = check_cancel_key(cancel_key)
    throttle = check_throttle_key(throttle_key)
    digest = check_digest_key(digest_key)
    overrides = check_contexts(contexts, user_ids)
    send_times_of = _bulk_send_times(schedule, user_ids, expiry, key, info.key)

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
                not_before=send_times_of.get(user_id),
                cancel_key=cancel,
                throttle_key=throttle,
                digest_key=digest,
            )
        )
    written = messages_create(rows=rows)
    return BulkResult(message_ids=[m.pk for m in written.messages], created=written.created)


def _bulk_send_times(
    schedule: SendAt | None,
    user_ids: Sequence[UserKey],
    expiry: datetime | None,
    key: str | None,
    type_key: str,
) -> dict[UserKey, datetime]:
    """notify_many's send times. Users whose keyed message exists already (a retried call)
    are left out of the check: their message stands as it was made."""
    if schedule is None:
        return {}
    try:
        return send_times(schedule, user_ids, expiry)
    except InvalidSchedule:
        if key is None:
            raise
        made = set(
            Message.objects.filter(
                idempotency_key__in=[f"{key}:{user_id}" for user_id in user_ids], type_id=type_key
            ).values_list("user_id", flat=True)
        )
        if not made:
            raise
        return send_times(schedule, [u for u in user_ids if u not in made], expiry)


# --- Topics -----------------------------------------------------------------------------------


def check_topic(key: object) -> str:
    text = _check_key(key, "topic", InvalidTopic)
    if text is None:
        raise InvalidTopic('topic is required: your key for the object, e.g. "product:42"')
    return text


def topic_subscribe(topic: str, users: Iterable[UserRef]) -> int:
    """These users follow `topic` (your key for an object, e.g. "product:42"); returns how many
    did not already. Inactive or unknown users are refused, as by notify_many."""
    key = check_topic(topic)
    user_ids = check_recipients(_user_ids(users))
    return topic_service.topic_subscribe(topic_key=key, user_ids=user_ids)


def topic_unsubscribe(topic: str, users: Iterable[UserRef]) -> int:
    key = check_topic(topic)
    return topic_service.topic_unsubscribe(topic_key=key, user_ids=_user_ids(users))


def notify_topic(
    topic: str,
    type_key: str,
    context: Mapping[str, Any] | None = None,
    *,
    idempotency_key: str | None = None,
    channels: Sequence[str] | None = None,
    exclude: Iterable[UserRef] = (),
) -> Any:
    """Notify everyone following `topic` (but `exclude`, e.g. the one who acted) with the same
    context. Returns the TopicSend at once; its subscribers are handed out in batches of a
    thousand by a worker (see notifier.services.topics). The same idempotency key gives back
    the first call's send."""
    key = check_topic(topic)
    info = check_type(type_key)
    chosen = check_channels(channels, info)
    clean_context = check_context(context, info, chosen)
    idempotency = check_idempotency_key(idempotency_key)
    return topic_service.topic_send_start(
        topic_key=key,
        info=info,
        context=clean_context,
        channels=chosen if channels is not None else [],
        exclude=_user_ids(exclude),
        idempotency_key=idempotency,
    )


def topic_snooze(topic: str, user: UserRef, *, length: str = "week") -> Any:
    """Mute `topic`, which `user` follows, for a "day", a "week" or "until_unmuted": what its
    sends hand out then reaches them in the inbox only (transactional and critical types go
    everywhere still). Again replaces it. SnoozeError says what to fix."""
    key = check_topic(topic)
    return snooze_service.topic_snooze_set(user_id=_user_id(user), topic_key=key, length=length)


def topic_unsnooze(topic: str, user: UserRef) -> bool:
    """Unmute `topic` for `user`; whether a snooze was running."""
    key = check_topic(topic)
    return snooze_service.topic_snooze_lift(user_id=_user_id(user), topic_key=key)


# --- Per-recipient date series ----------------------------------------------------------------

SERIES_VARIABLES = frozenset({"series_date", "series_step"})


def check_series(series_key: object, *, to_set: bool = True) -> DateSeries:
    """The series by its key; one to set a date in is on, and so is its type (a date of a
    series switched off may still be removed or exited)."""
    key = _exact_str(series_key)
    series = (
        DateSeries.objects.filter(pk=key).first()
        if key and len(key) <= MAX_KEY_LENGTH and not text_problem(key)
        else None
    )
    if series is None:
        raise UnknownDateSeries(
            f"no date series {_describe(series_key)}; declare it in a catalog's SERIES "
            "(then migrate) or in the admin"
        )
    if to_set and not series.is_active:
        raise UnknownDateSeries(f"date series {key!r} is switched off; switch it on in the admin")
    return series


def _date_key(key: object) -> str:
    text = _check_key(key, "key", InvalidSeriesDate)
    if text is None:
        raise InvalidSeriesDate(
            'key is required: your name for the dated thing, e.g. "subscription:42"'
        )
    if "/" in text:
        # The HTTP API names a date in its path (/dates/<series>/<key>): a key with "/" could be
        # set from Python or a task but never reached over HTTP.
        raise InvalidSeriesDate(
            f'key may not contain "/" (got {text[:60]!r}); use ":" instead, e.g. "plan:42"'
        )
    return text


# How far ahead of this server's clock an as_of may be: the caller's clock is a little off,
# never a day. Further back than any date can be (ten years) is refused too.
MAX_AS_OF_AHEAD = timedelta(days=1)
AS_OF_WORDS = (
    "when the change happened in your system (an aware datetime, e.g. the updated_at of the "
    "row the date comes from)"
)


def _as_of(as_of: object) -> datetime | None:
    """The caller's as_of checked: None, or an aware datetime at most a day ahead, in UTC."""
    if as_of is None:
        return None
    since_epoch = _since_epoch(as_of, "as_of", InvalidSeriesDate)
    now = _now_since_epoch()
    if since_epoch - now > MAX_AS_OF_AHEAD:
        # Said as a length, not a date: one near year 9999 may not be a date in UTC.
        raise InvalidSeriesDate(
            f"as_of is {since_epoch - now} ahead of this server's clock, and at most a day is "
            f"allowed (for clocks that differ); send {AS_OF_WORDS}, or leave it out"
        )
    if now - since_epoch > MAX_SCHEDULE_DISTANCE:
        raise InvalidSeriesDate(
            f"as_of is more than {MAX_SCHEDULE_DISTANCE.days} days (ten years) ago; send "
            f"{AS_OF_WORDS}, or leave it out"
        )
    return _EPOCH_UTC + since_epoch


def date_set(
    user: UserRef,
    series_key: str,
    at: datetime,
    *,
    key: str,
    context: Mapping[str, Any] | None = None,
    as_of: datetime | None = None,
) -> RecipientDate:
    """Set the user's date in a series (or move it): its steps are scheduled around `at`, and
    the steps still pending of a date set before under the same key are cancelled (reason
    `series_moved`). A step already past is not sent (the date's `plan` says so). Setting the
    same date and context again changes nothing. `context` is what the steps' templates see,
    with `series_date` (the date, ISO 8601) and `series_step` (1, 2, ...).

    `as_of`: when the change happened in your system. A call older than the date's last
    applied one (a task redelivered late) changes nothing and returns the date as it stands;
    without it, calls apply in the order they run."""
    change = date_set_change(user, series_key, at, key=key, context=context, as_of=as_of)
    assert change.date is not None  # a set always leaves its date
    return change.date


def date_set_change(
    user: UserRef,
    series_key: str,
    at: datetime,
    *,
    key: str,
    context: Mapping[str, Any] | None = None,
    as_of: datetime | None = None,
) -> series_service.DateChange:
    """`date_set`, and whether it was applied (False: `as_of` was older than the date's), for
    the doors that report it (the Celery task)."""
    series = check_series(series_key)
    user_id = _user_id(user)
    date_key = _date_key(key)
    since_epoch = _since_epoch(at, "at", InvalidSeriesDate)
    if abs(since_epoch - _now_since_epoch()) > MAX_SCHEDULE_DISTANCE:
        raise InvalidSeriesDate(
            f"at is more than {MAX_SCHEDULE_DISTANCE.days} days (ten years) from now"
        )
    moment = _EPOCH_UTC + since_epoch
    checked_as_of = _as_of(as_of)
    info = check_type(series.type_id)
    plain = {} if context is None else plain_json_object(context)
    taken = sorted(SERIES_VARIABLES & set(plain))
    if taken:
        raise InvalidContext(f"context may not set {', '.join(taken)}: the series provides them")
    check_context(
        series_service.step_context(plain, moment, 1), info, info.channels, label="context"
    )
    check_recipients([user_id])
    return series_service.recipient_date_set(
        user_id=user_id,
        series=series,
        key=date_key,
        at=moment,
        context=plain,
        as_of=checked_as_of,
    )


def date_clear(user: UserRef, series_key: str, *, key: str, as_of: datetime | None = None) -> bool:
    """Remove the user's date: what has not gone out of its steps is cancelled (reason
    `series_removed`). Whether there was such a date (removing twice is no error).

    `as_of`: when the removal happened in your system. Older than the date's last applied call:
    nothing changes. With it, removing a date not set yet leaves a mark (still "no such date")
    so that its set, if older and arriving later, is ignored."""
    return date_clear_change(user, series_key, key=key, as_of=as_of).found


def date_clear_change(
    user: UserRef, series_key: str, *, key: str, as_of: datetime | None = None
) -> series_service.DateChange:
    """`date_clear`, and whether it was applied (False: `as_of` was older than the date's)."""
    series = check_series(series_key, to_set=False)
    user_id, date_key, checked_as_of = _user_id(user), _date_key(key), _as_of(as_of)
    return series_service.recipient_date_clear(
        user_id=user_id, series_key=series.key, key=date_key, as_of=checked_as_of
    )


def date_exit(
    user: UserRef,
    series_key: str,
    *,
    key: str,
    reason: str = "",
    as_of: datetime | None = None,
) -> bool:
    """The user acted (renewed, converted): the rest of the date's steps are cancelled (reason
    `series_exited`, with yours on the support timeline). Whether there was such a date.

    `as_of`: when they acted, in your system; as `date_clear`'s (a set older than the exit,
    arriving after it, is ignored, even when the exit came first)."""
    return date_exit_change(user, series_key, key=key, reason=reason, as_of=as_of).found


def date_exit_change(
    user: UserRef,
    series_key: str,
    *,
    key: str,
    reason: str = "",
    as_of: datetime | None = None,
) -> series_service.DateChange:
    """`date_exit`, and whether it was applied (False: `as_of` was older than the date's)."""
    series = check_series(series_key, to_set=False)
    note = _check_key(reason, "reason", InvalidSeriesDate) if reason else ""
    user_id, date_key, checked_as_of = _user_id(user), _date_key(key), _as_of(as_of)
    return series_service.recipient_date_exit(
        user_id=user_id, series_key=series.key, key=date_key, note=note or "", as_of=checked_as_of
    )
