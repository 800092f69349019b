"""The hostile-input corpus thrown at `notify()` and `notify_many()`: every bad value raises a
typed `NotifyError` whose message says what to fix, and no Message or Delivery row is written."""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from datetime import UTC, datetime, timedelta, timezone
from decimal import Decimal
from typing import Any

import pytest
from django.db import transaction

from notifier import dispatch
from notifier.api import MAX_CONTEXT_BYTES, MAX_CONTEXT_DEPTH, notify, notify_many
from notifier.errors import (
    ChannelNotAllowed,
    InvalidContext,
    InvalidExpiry,
    InvalidIdempotencyKey,
    InvalidRecipient,
    NotifyError,
    UnknownNotificationType,
)
from notifier.models import Delivery, Message, User
from tests.factories import UserFactory, order_context
from tests.security.corpus import (
    FAR_OFFSETS,
    HOSTILE_INTEGERS,
    HOSTILE_STRINGS,
    HOSTILE_TZINFOS,
    HOSTILE_VALUES,
    WRONG_TYPES,
    LoudDict,
    LoudInt,
    LoudStr,
    LyingStr,
    RaisingIterable,
    UnhashableStr,
    Unprintable,
    nested,
    raising_generator,
    self_containing,
)

pytestmark = pytest.mark.django_db


@pytest.fixture(autouse=True)
def _no_publish(monkeypatch):
    monkeypatch.setattr(dispatch, "publish_prepare", lambda *args, **kwargs: None)


@pytest.fixture
def user() -> User:
    return UserFactory()


def refused(call: Any, error: type[NotifyError]) -> str:
    """Run `call`, expect `error`, and that nothing was written; returns the message."""
    before = (Message.objects.count(), Delivery.objects.count())
    with pytest.raises(error) as raised:
        call()
    assert (Message.objects.count(), Delivery.objects.count()) == before
    message = str(raised.value)
    assert len(message) > 10, f"{error.__name__} says too little: {message!r}"
    return message


# Values a caller might pass as a user: none of them is a saved, active user.
BAD_USERS: dict[str, Any] = {
    **{k: v for k, v in HOSTILE_VALUES.items() if not isinstance(v, int) or isinstance(v, bool)},
    "zero": 0,
    "negative": -1,
    "past_bigint": 2**63,
    "huge_int": 10**30,
    "unsaved": User(username="nobody"),
    "float_id": 1.0,
}


@pytest.mark.parametrize("name", list(BAD_USERS))
def test_a_bad_user_is_an_invalid_recipient(name):
    refused(lambda: notify(BAD_USERS[name], "order.shipped", order_context()), InvalidRecipient)


def test_an_inactive_user_is_an_invalid_recipient():
    sleeper = UserFactory(is_active=False)
    message = refused(lambda: notify(sleeper, "order.shipped", order_context()), InvalidRecipient)
    assert "inactive" in message


@pytest.mark.parametrize("name", list(HOSTILE_VALUES))
def test_a_bad_type_key_is_an_unknown_type(user, name):
    refused(lambda: notify(user, HOSTILE_VALUES[name], order_context()), UnknownNotificationType)


@pytest.mark.parametrize(
    "name", [k for k, v in HOSTILE_VALUES.items() if v is not None and not isinstance(v, dict)]
)
def test_a_context_that_is_not_a_dict_is_invalid(user, name):
    value = HOSTILE_VALUES[name]
    refused(lambda: notify(user, "order.shipped", value), InvalidContext)


@pytest.mark.parametrize("name", list(HOSTILE_STRINGS))
def test_hostile_text_in_the_context_is_stored_verbatim_or_refused(user, name):
    """Text PostgreSQL cannot store (NUL, unpaired surrogates) and over-size contexts are
    refused; any other text is just text: it is written as given."""
    value = HOSTILE_STRINGS[name]
    context = order_context(carrier=value)
    if "\x00" in value or any("\ud800" <= ch <= "\udfff" for ch in value) or len(value) > 60_000:
        message = refused(lambda: notify(user, "order.shipped", context), InvalidContext)
        assert "context['carrier']" in message or "bytes" in message
    else:
        message_row = notify(user, "order.shipped", context)
        message_row.refresh_from_db()
        assert message_row.context["carrier"] == value


@pytest.mark.parametrize("where", ["key", "nested"])
def test_text_postgresql_cannot_store_is_refused_in_keys_and_nested_values(user, where):
    context: dict[str, Any] = order_context()
    if where == "key":
        context["bad\x00key"] = "x"
    else:
        context["extra"] = {"list": ["fine", "\ud83d"]}
    refused(lambda: notify(user, "order.shipped", context), InvalidContext)


@pytest.mark.parametrize(
    "value",
    [float("nan"), float("inf"), datetime.now(UTC), {1: "int key"}, object(), b"bytes", {"x"}],
    ids=["nan", "inf", "datetime", "int_key", "object", "bytes", "set"],
)
def test_values_json_cannot_hold_are_refused(user, value):
    refused(
        lambda: notify(user, "order.shipped", order_context() | {"extra": value}), InvalidContext
    )


@pytest.mark.parametrize(
    "name", [k for k, v in HOSTILE_VALUES.items() if v is not None and v != ["email"]]
)
def test_bad_channels_are_refused(user, name):
    value = HOSTILE_VALUES[name]
    for candidate in (value, [value]):
        refused(
            lambda c=candidate: notify(user, "order.shipped", order_context(), channels=c),
            ChannelNotAllowed,
        )


@pytest.mark.parametrize("name", [k for k in HOSTILE_VALUES if k != "null"])
def test_bad_idempotency_keys_are_refused(user, name):
    value = HOSTILE_VALUES[name]
    storable = isinstance(value, str) and "\x00" not in value
    storable = storable and not any("\ud800" <= ch <= "\udfff" for ch in value)
    if storable and value.strip() and len(value) <= 255:
        notify(user, "order.shipped", order_context(), idempotency_key=value)
        assert Message.objects.filter(idempotency_key=value).count() == 1
        return
    refused(
        lambda: notify(user, "order.shipped", order_context(), idempotency_key=value),
        InvalidIdempotencyKey,
    )


@pytest.mark.parametrize("name", [k for k in WRONG_TYPES if k != "null"] + ["nul", "empty"])
def test_bad_expiry_is_refused(user, name):
    value = HOSTILE_VALUES[name]
    refused(lambda: notify(user, "order.shipped", order_context(), expires_at=value), InvalidExpiry)


def test_notify_many_writes_nothing_when_one_user_is_bad(user):
    bad = [user, 10**30]
    refused(lambda: notify_many(bad, "order.shipped", order_context()), InvalidRecipient)
    refused(
        lambda: notify_many(
            [user], "order.shipped", order_context(), contexts={user.pk: {"carrier": "\x00"}}
        ),
        InvalidContext,
    )


# --- Poison that passed the door: values stored that a worker cannot read back, database errors
# that abort the caller's transaction, exceptions that are not NotifyError, objects that lie.


def refused_in_transaction(call: Any, error: type[NotifyError]) -> str:
    """`refused()` inside the caller's own transaction, which must still work afterwards (a
    DataError from PostgreSQL would leave it aborted, failing the next query)."""
    with transaction.atomic():
        message = refused(call, error)
        assert User.objects.filter(pk__gt=0).exists()
    return message


def in_the_future(**delta: float) -> datetime:
    return datetime.now(UTC) + timedelta(**delta)


@pytest.mark.parametrize(
    "expires_at",
    [
        # Stored as year 10000, which Python cannot read back: every worker read crashed.
        datetime(9999, 12, 31, 23, 0, tzinfo=timezone(-timedelta(hours=5))),
        datetime.max.replace(tzinfo=UTC),
        in_the_future(days=11 * 366),
    ],
    ids=["year_10000_in_utc", "datetime_max", "eleven_years_ahead"],
)
def test_an_expiry_past_the_horizon_is_refused(user, expires_at):
    message = refused_in_transaction(
        lambda: notify(user, "order.shipped", order_context(), expires_at=expires_at),
        InvalidExpiry,
    )
    assert "years" in message


@pytest.mark.parametrize("name", list(FAR_OFFSETS))
def test_any_offset_python_allows_is_stored_as_the_same_instant(user, name):
    """PostgreSQL refuses offsets past ±15:59 (a DataError that aborted the caller's
    transaction): the door converts to UTC, so the instant is kept and the offset is moot."""
    expires_at = in_the_future(days=2).astimezone(FAR_OFFSETS[name])
    with transaction.atomic():
        message = notify(user, "order.shipped", order_context(), expires_at=expires_at)
        message.refresh_from_db()
    assert message.expires_at == expires_at
    assert message.expires_at.utcoffset() == timedelta(0)


@pytest.mark.parametrize("name", list(HOSTILE_TZINFOS))
def test_an_expiry_whose_tzinfo_misbehaves_is_refused(user, name):
    expires_at = datetime(2030, 1, 1, 12, 0, tzinfo=HOSTILE_TZINFOS[name])
    message = refused_in_transaction(
        lambda: notify(user, "order.shipped", order_context(), expires_at=expires_at),
        InvalidExpiry,
    )
    assert "utc" in message.casefold()


@pytest.mark.parametrize(
    "context",
    [
        order_context() | {"extra": nested(MAX_CONTEXT_DEPTH)},  # 33 levels with the top
        order_context() | {"extra": nested(960)},  # stored, then each worker read crashed
        order_context() | {"extra": nested(983, kind="list")},
        order_context() | {"extra": nested(100_000)},  # RecursionError in notify() itself
        order_context() | {"extra": self_containing()},
    ],
    ids=["33_levels", "960_dicts", "983_lists", "100000_dicts", "self_containing"],
)
def test_deep_nesting_is_refused_with_the_bound(user, context):
    message = refused_in_transaction(lambda: notify(user, "order.shipped", context), InvalidContext)
    assert str(MAX_CONTEXT_DEPTH) in message


def test_nesting_up_to_the_bound_is_stored(user):
    context = order_context() | {"extra": nested(MAX_CONTEXT_DEPTH - 1)}
    message = notify(user, "order.shipped", context)
    message.refresh_from_db()
    assert message.context == context


@pytest.mark.parametrize("name", list(HOSTILE_INTEGERS))
def test_an_integer_outside_64_bits_in_the_context_is_refused(user, name):
    number = HOSTILE_INTEGERS[name]
    context = order_context() | {"extra": {"count": [number]}}
    message = refused_in_transaction(lambda: notify(user, "order.shipped", context), InvalidContext)
    assert "context['extra']['count'][0]" in message
    assert "string" in message


class CountingMapping(Mapping[str, str]):
    """A 4.5 MB context that counts how many of its entries were read."""

    def __init__(self, entries: int) -> None:
        self.entries = entries
        self.read = 0

    def __getitem__(self, key: str) -> str:
        return "x" * 40

    def __len__(self) -> int:
        return self.entries

    def __iter__(self) -> Iterator[str]:
        for index in range(self.entries):
            self.read += 1
            yield f"key{index:06d}"

    def items(self) -> Any:
        return ((key, self[key]) for key in self)


def test_a_huge_context_is_refused_after_reading_no_more_than_the_limit(user):
    """Refusing 4.5 MB took 3 s: every entry's error path was spelt out before the size was
    measured. The size is now counted as the context is read, and reading stops at the limit."""
    huge = CountingMapping(100_000)
    message = refused(lambda: notify(user, "order.shipped", huge), InvalidContext)
    assert str(MAX_CONTEXT_BYTES) in message
    # Each entry is at least 51 bytes of JSON: the limit is passed within the first 1,300.
    assert huge.read <= MAX_CONTEXT_BYTES // 50


def test_a_dict_subclass_is_stored_as_the_plain_values_it_holds(user):
    """Its own methods (items, keys, __iter__, __getitem__) raise; str and int subclasses lie
    about equality and hashing: what is stored is exact built-in types, with the same text."""
    inner = LoudDict(count=LoudInt(7), label=LoudStr("seven"))
    context = LoudDict(order_context(), extra=inner, tags=[LyingStr("a"), LoudStr("b")])
    message = notify(user, "order.shipped", context)
    message.refresh_from_db()
    assert message.context == order_context() | {
        "extra": {"count": 7, "label": "seven"},
        "tags": ["a", "b"],
    }
    assert type(notify(user, "order.shipped", context).context["tags"][0]) is str


def test_a_user_instance_with_a_pk_that_is_not_an_integer_is_refused():
    """int(pk) coerced: User(pk=1.5) and User(pk="<id>") notified that user, pk="abc" raised
    ValueError, and a pk past bigint a DataError."""
    target = UserFactory()
    for pk in (target.pk + 0.5, str(target.pk), True, "abc", Decimal(target.pk), LoudInt(5)):
        refused_in_transaction(
            lambda pk=pk: notify(User(pk=pk), "order.shipped", order_context()),
            InvalidRecipient,
        )
    for pk in HOSTILE_INTEGERS.values():
        refused_in_transaction(
            lambda pk=pk: notify(User(pk=pk), "order.shipped", order_context()),
            InvalidRecipient,
        )
    assert not Message.objects.filter(user=target).exists()


@pytest.mark.parametrize("name", list(HOSTILE_INTEGERS))
def test_an_id_past_bigint_is_refused_without_printing_it(user, name):
    # f"no user with id {user}" raised ValueError for ids over 4,300 digits.
    refused_in_transaction(
        lambda: notify(HOSTILE_INTEGERS[name], "order.shipped", order_context()),
        InvalidRecipient,
    )


def test_an_int_subclass_id_is_read_as_the_integer_it_holds(user):
    # LoudInt's __index__ says 1 and its __str__ raises (psycopg2 used it): its value counts.
    message = notify(LoudInt(user.pk), "order.shipped", order_context())
    assert type(message.user_id) is int
    assert message.user_id == user.pk


def unused_small_id() -> int:
    taken = set(User.objects.filter(pk__lt=256).values_list("pk", flat=True))
    return min(set(range(1, 256)) - taken)


@pytest.mark.parametrize(
    "users",
    [
        5,
        None,
        object(),
        Unprintable(),
        RaisingIterable(),
        "user",
        LoudStr("user"),
    ],
    ids=["int", "none", "object", "unprintable", "raising_iterable", "str", "loud_str"],
)
def test_users_that_are_not_a_collection_of_users_are_refused(user, users):
    refused_in_transaction(
        lambda: notify_many(users, "order.shipped", order_context()), InvalidRecipient
    )


def test_users_as_bytes_are_refused_not_read_as_ids():
    # Iterating b"\x07" gives 7: bytes notified the users whose ids were its byte values.
    victim = UserFactory(pk=unused_small_id())
    refused_in_transaction(
        lambda: notify_many(bytes([victim.pk]), "order.shipped", order_context()),
        InvalidRecipient,
    )


def test_a_users_generator_that_raises_half_way_is_refused(user):
    refused_in_transaction(
        lambda: notify_many(raising_generator([user]), "order.shipped", order_context()),
        InvalidRecipient,
    )


@pytest.mark.parametrize(
    "contexts",
    [[1, 2], "contexts", 5, Unprintable(), {"5": {}, 6: {}}, {LyingStr("1"): {}}],
    ids=["list", "str", "int", "unprintable", "mixed_keys", "str_key"],
)
def test_contexts_that_are_not_a_dict_of_user_ids_are_refused(user, contexts):
    refused_in_transaction(
        lambda: notify_many([user], "order.shipped", order_context(), contexts=contexts),
        InvalidContext,
    )


@pytest.mark.parametrize(
    "value",
    [[1, 2], "carrier", None, 7, Unprintable(), {"extra": nested(100_000)}],
    ids=["list", "str", "none", "int", "unprintable", "deep"],
)
def test_a_per_user_context_that_is_not_a_plain_dict_is_refused(user, value):
    refused_in_transaction(
        lambda: notify_many([user], "order.shipped", order_context(), contexts={user.pk: value}),
        InvalidContext,
    )


@pytest.mark.parametrize(
    ("channels", "stored"),
    [
        ([LyingStr("fax")], None),  # equal to every channel: it was stored as "fax"
        ([Unprintable()], None),
        (Unprintable(), None),
        (RaisingIterable(), None),
        (raising_generator(["email"]), None),
        (["email"] * 1000, None),
        ({"email", "inapp"}, ["email", "inapp"]),
        ((c for c in ["email", "email"]), ["email"]),
        ([LyingStr("email")], ["email"]),
    ],
    ids=[
        "lying_str",
        "unprintable_item",
        "unprintable",
        "raising_iterable",
        "raising_generator",
        "a_thousand_entries",
        "set",
        "generator_with_duplicates",
        "lying_str_of_a_real_channel",
    ],
)
def test_channels_are_read_as_exact_channel_names(user, channels, stored):
    call = lambda: notify(user, "order.shipped", order_context(), channels=channels)  # noqa: E731
    if stored is None:
        refused_in_transaction(call, ChannelNotAllowed)
        return
    message = call()
    message.refresh_from_db()
    assert sorted(message.channels) == stored
    assert all(type(channel) is str for channel in message.channels)


@pytest.mark.parametrize(
    "type_key",
    [LoudStr("order.shipped"), UnhashableStr("order.shipped"), Unprintable(), 10**5000],
    ids=["loud_str", "unhashable_str", "unprintable", "huge_int"],
)
def test_a_type_key_is_read_as_the_exact_text_it_holds(user, type_key):
    if isinstance(type_key, str):
        message = notify(user, type_key, order_context())
        assert type(message.type_id) is str
        assert message.type_id == "order.shipped"
    else:
        refused_in_transaction(
            lambda: notify(user, type_key, order_context()), UnknownNotificationType
        )


@pytest.mark.parametrize(
    "key",
    [LoudStr("k-1"), Unprintable(), 10**5000, b"k-1"],
    ids=["loud_str", "unprintable", "huge_int", "bytes"],
)
def test_an_idempotency_key_is_read_as_the_exact_text_it_holds(user, key):
    if isinstance(key, str):
        message = notify(user, "order.shipped", order_context(), idempotency_key=key)
        assert Message.objects.get(pk=message.pk).idempotency_key == "k-1"
    else:
        refused_in_transaction(
            lambda: notify(user, "order.shipped", order_context(), idempotency_key=key),
            InvalidIdempotencyKey,
        )


@pytest.mark.parametrize(
    "expires_at",
    [Unprintable(), 10**5000, LoudStr("2030-01-01")],
    ids=["unprintable", "huge_int", "loud_str"],
)
def test_an_expiry_that_is_not_a_datetime_is_refused_without_printing_it(user, expires_at):
    refused_in_transaction(
        lambda: notify(user, "order.shipped", order_context(), expires_at=expires_at),
        InvalidExpiry,
    )
