"""Properties of the door over any input (Hypothesis), on the real PostgreSQL test database.

Whatever `notify()` and `notify_many()` are given, they either return a Message / BulkResult
whose rows read back as they were written (no poison that a worker cannot load), or raise a
`NotifyError`; the caller's transaction stays usable either way; and a raise leaves no row
written, not even one rolled back later (PostgreSQL's own count of tuples written in the
transaction says so, for every table).

Examples are derandomized (the same ones every run, so `make test` is never flaky) and bounded;
to explore further, raise PROPERTY_EXAMPLES and drop derandomize locally.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime, timedelta, timezone, tzinfo
from typing import Any

import pytest
from django.db import connection, transaction
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from notifier import dispatch
from notifier.api import (
    MAX_CONTEXT_DEPTH,
    MAX_EXPIRY_AHEAD,
    BulkResult,
    notify,
    notify_many,
)
from notifier.db import table_name
from notifier.errors import NotifyError
from notifier.models import Delivery, DeliveryEvent, InboxItem, Message, User
from tests.factories import UserFactory, order_context
from tests.security.corpus import (
    HOSTILE_INTEGERS,
    HOSTILE_TZINFOS,
    LoudDict,
    LoudInt,
    LoudStr,
    LyingStr,
    OffsetTz,
    RaisingIterable,
    Unprintable,
    nested,
    raising_generator,
    self_containing,
)

pytestmark = pytest.mark.django_db

PROPERTY_EXAMPLES = 200
PROPERTIES = settings(
    max_examples=PROPERTY_EXAMPLES,
    deadline=None,
    derandomize=True,
    database=None,  # nothing written to .hypothesis/: derandomized runs replay themselves
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)


# --- Strategies -------------------------------------------------------------------------------

# Any character, lone surrogates and NUL included (Hypothesis leaves surrogates out by default).
ANY_CHARACTER = st.one_of(st.characters(), st.characters(categories=["Cs"]), st.just("\x00"))
ANY_TEXT = st.one_of(st.text(max_size=12), st.text(ANY_CHARACTER, max_size=12))

# Built by functions, not listed: Hypothesis prints what it samples, and these refuse to print;
# and it finds a sampled value again by equality, which a LyingStr would derail.
HOSTILE_OBJECTS = st.one_of(
    st.sampled_from(
        [
            RaisingIterable(),
            object(),
            b"bytes",
            bytearray(b"x"),
            {"a", "b"},
            frozenset(),
            Ellipsis,
            NotImplemented,
            type,
            self_containing(),
            *HOSTILE_TZINFOS.values(),
        ]
    ),
    st.builds(Unprintable),
    st.builds(LoudStr, st.sampled_from(["order.shipped", "email", "k"])),
    st.builds(LoudInt, st.integers(min_value=-2, max_value=2**63)),
    st.sampled_from(sorted(HOSTILE_INTEGERS)).map(lambda name: HOSTILE_INTEGERS[name]),
)
LEAVES = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(),  # unbounded: past 64 bits too
    st.integers(min_value=2**63 - 2, max_value=2**64),
    st.floats(),  # NaN and infinities included
    ANY_TEXT,
    st.text(max_size=3).map(lambda text: text * 3000),  # big strings add up to the size limit
    st.datetimes(),
    st.decimals(),
    st.binary(max_size=8),
    HOSTILE_OBJECTS,
    st.integers(min_value=MAX_CONTEXT_DEPTH - 3, max_value=MAX_CONTEXT_DEPTH + 3).map(nested),
    st.integers(min_value=900, max_value=1200).map(lambda depth: nested(depth, kind="list")),
)
KEYS = st.one_of(
    ANY_TEXT,
    st.sampled_from(["user", "site_url", "carrier", "k" * 300]),
    st.integers(),
    st.text(max_size=5).map(LyingStr),
)
VALUES = st.recursive(
    LEAVES,
    lambda children: st.one_of(
        st.lists(children, max_size=4),
        st.tuples(children, children),
        st.dictionaries(KEYS, children, max_size=4),
        st.dictionaries(st.text(max_size=5), children, max_size=3).map(LoudDict),
    ),
    max_leaves=12,
)
# Each argument has a strategy of values a careful caller passes (VALID_*) and one of anything
# at all (ANY_*). A call spoils a random subset of its arguments, often none or one, so that
# accepted calls happen as well as refused ones, and a refusal is not always the first check's.

PLAIN_TEXT = st.text(st.characters(exclude_characters="\x00"), max_size=12)
PLAIN_VALUES = st.recursive(
    st.one_of(
        st.none(),
        st.booleans(),
        st.integers(min_value=-(2**63), max_value=2**63 - 1),
        st.floats(allow_nan=False, allow_infinity=False),
        PLAIN_TEXT,
    ),
    lambda children: st.one_of(
        st.lists(children, max_size=3), st.dictionaries(PLAIN_TEXT, children, max_size=3)
    ),
    max_leaves=8,
)
PLAIN_EXTRAS = st.dictionaries(PLAIN_TEXT, PLAIN_VALUES, max_size=2)
VALID_CONTEXTS = st.dictionaries(PLAIN_TEXT, PLAIN_VALUES, max_size=3).map(
    lambda extra: order_context() | extra
)
ANY_CONTEXTS = st.one_of(
    st.none(),
    st.dictionaries(KEYS, VALUES, max_size=3).map(lambda extra: order_context() | extra),
    st.dictionaries(st.text(max_size=5), VALUES, max_size=3).map(
        lambda extra: LoudDict(order_context(), **extra)
    ),
    VALUES,
)

CHANNEL_NAMES = st.sampled_from(["inapp", "email", "sms", "push", "fax", "", "EMAIL"])
VALID_CHANNELS = st.one_of(
    st.none(), st.lists(st.sampled_from(["inapp", "email", "sms", "push"]), min_size=1)
)
ANY_CHANNELS = st.one_of(
    st.lists(st.one_of(CHANNEL_NAMES, CHANNEL_NAMES.map(LyingStr), LEAVES), max_size=4),
    st.lists(CHANNEL_NAMES, max_size=4).map(set),
    st.lists(CHANNEL_NAMES, max_size=4).map(iter),
    st.lists(CHANNEL_NAMES, max_size=2).map(raising_generator),
    st.lists(CHANNEL_NAMES, min_size=15, max_size=40),
    LEAVES,
)

# Offsets up to ±23:59 (Python's limit; PostgreSQL stops at ±15:59), to the microsecond.
OFFSETS = st.timedeltas(
    min_value=-timedelta(hours=23, minutes=59), max_value=timedelta(hours=23, minutes=59)
)
TZINFOS: st.SearchStrategy[tzinfo | None] = st.one_of(
    st.just(UTC),
    OFFSETS.map(timezone),
    # A tzinfo class of the caller's: any offset (a day or more is refused by datetime
    # itself), None, a number, or an exception.
    st.one_of(st.timedeltas(), st.none(), st.integers(), st.just(lambda: 1 / 0)).map(OffsetTz),
    st.sampled_from(list(HOSTILE_TZINFOS.values())),
    st.none(),  # naive
)


def ahead(delta: timedelta, tz: tzinfo) -> datetime:
    return (datetime.now(UTC) + delta).astimezone(tz)


VALID_EXPIRIES = st.one_of(
    st.none(),
    st.builds(
        ahead,
        st.timedeltas(min_value=timedelta(minutes=5), max_value=MAX_EXPIRY_AHEAD / 2),
        OFFSETS.map(timezone),
    ),
)
ANY_EXPIRIES = st.one_of(
    # Around now and around the horizon, in any offset.
    st.builds(
        ahead,
        st.timedeltas(min_value=-timedelta(days=2), max_value=MAX_EXPIRY_AHEAD * 1.1),
        OFFSETS.map(timezone),
    ),
    # Anywhere in the calendar, to its very ends, with any tzinfo.
    st.builds(lambda naive, tz: naive.replace(tzinfo=tz), st.datetimes(), TZINFOS),
    st.builds(
        lambda edge, tz: edge.replace(tzinfo=tz),
        st.sampled_from([datetime.max.replace(tzinfo=UTC), datetime.min.replace(tzinfo=UTC)]),
        TZINFOS,
    ),
    LEAVES,
)

VALID_KEYS = st.one_of(st.none(), PLAIN_TEXT.filter(str.strip))
ANY_KEYS = st.one_of(
    st.text(max_size=20), st.text(ANY_CHARACTER, min_size=250, max_size=260), LEAVES
)
VALID_TYPE_KEYS = st.just("order.shipped")
ANY_TYPE_KEYS = st.one_of(
    st.sampled_from(["payment.succeeded", "order.lost", "", "order.shipped\x00"]),
    st.just("order.shipped").map(LyingStr),
    ANY_TEXT,
    LEAVES,
)


def any_user(active: list[User], inactive: User) -> st.SearchStrategy[Any]:
    """Anything as a user, including User instances whose pk is anything."""
    return st.one_of(
        st.sampled_from([user.pk for user in active]).map(LoudInt),
        st.just(inactive),
        st.builds(lambda pk: User(pk=pk), LEAVES),
        LEAVES,
    )


def valid_user(active: list[User]) -> st.SearchStrategy[Any]:
    return st.one_of(st.sampled_from(active), st.sampled_from([user.pk for user in active]))


@st.composite
def notify_arguments(draw: st.DrawFn, active: list[User], inactive: User) -> dict[str, Any]:
    spoilt = draw(
        st.sets(
            st.sampled_from(
                ["user", "type_key", "context", "channels", "idempotency_key", "expires_at"]
            )
        )
    )

    def pick(name: str, valid: st.SearchStrategy[Any], anything: st.SearchStrategy[Any]) -> Any:
        return draw(anything if name in spoilt else valid)

    return {
        "user": pick("user", valid_user(active), any_user(active, inactive)),
        "type_key": pick("type_key", VALID_TYPE_KEYS, ANY_TYPE_KEYS),
        "context": pick("context", VALID_CONTEXTS, ANY_CONTEXTS),
        "channels": pick("channels", VALID_CHANNELS, ANY_CHANNELS),
        "idempotency_key": pick("idempotency_key", VALID_KEYS, ANY_KEYS),
        "expires_at": pick("expires_at", VALID_EXPIRIES, ANY_EXPIRIES),
    }


@st.composite
def notify_many_arguments(draw: st.DrawFn, active: list[User], inactive: User) -> dict[str, Any]:
    arguments = draw(notify_arguments(active, inactive))
    del arguments["user"]
    spoilt = draw(st.sets(st.sampled_from(["users", "contexts"])))
    ids = [user.pk for user in active]
    if "users" in spoilt:
        refs = st.one_of(valid_user(active), any_user(active, inactive))
        arguments["users"] = draw(
            st.one_of(
                st.lists(refs, max_size=4),
                st.lists(refs, max_size=4).map(tuple),
                st.lists(refs, max_size=4).map(iter),
                st.lists(refs, max_size=2).map(raising_generator),
                LEAVES,
            )
        )
    else:
        arguments["users"] = draw(st.lists(valid_user(active), max_size=3, unique_by=_user_pk))
    if "contexts" in spoilt:
        arguments["contexts"] = draw(
            st.one_of(
                st.dictionaries(st.sampled_from(ids), ANY_CONTEXTS, max_size=3),
                st.dictionaries(st.one_of(st.sampled_from(ids), KEYS), VALID_CONTEXTS, max_size=3),
                LEAVES,
            )
        )
    else:
        arguments["contexts"] = draw(
            st.one_of(st.none(), st.dictionaries(st.sampled_from(ids), PLAIN_EXTRAS, max_size=3))
        )
    return arguments


def _user_pk(user: Any) -> int:
    return user.pk if isinstance(user, User) else user


# --- The property -----------------------------------------------------------------------------


@pytest.fixture(autouse=True)
def _no_publish(monkeypatch):
    monkeypatch.setattr(dispatch, "publish_prepare", lambda *args, **kwargs: None)


def written() -> tuple[int, ...]:
    """Rows in the tables notify() writes or could set off, and every tuple this transaction
    has written to any table (inserted, updated or deleted, even if rolled back since)."""
    tables = [table_name(model) for model in (Message, Delivery, DeliveryEvent, InboxItem)]
    counts = ", ".join(f"(SELECT count(*) FROM {table})" for table in tables)
    with connection.cursor() as cursor:
        cursor.execute(
            f"SELECT {counts}, (SELECT coalesce(sum(n_tup_ins + n_tup_upd + n_tup_del), 0) "
            "FROM pg_stat_xact_user_tables)"
        )
        return tuple(cursor.fetchone())


def read_back(message_ids: list[int]) -> None:
    """What was written loads again, as any worker will load it: no year 10000, no JSON
    nested past the bound, only plain JSON values, only real channel names."""
    for message in Message.objects.filter(pk__in=message_ids):
        assert message.expires_at is None or (
            message.expires_at - datetime.now(UTC) <= MAX_EXPIRY_AHEAD
        )
        assert set(message.channels) <= {"inapp", "email", "sms", "push"}
        assert type(message.context) is dict


def either_written_or_refused(call: Callable[[], Any], outcomes: dict[str, int]) -> None:
    before = written()
    with transaction.atomic():  # the caller's transaction
        refusal: NotifyError | None = None
        try:
            result = call()
        except NotifyError as error:
            refusal = error
        if refusal is not None:
            assert str(refusal), f"{type(refusal).__name__} must say what to fix"
            after = written()  # a query: fails if the transaction was left aborted
            assert after == before, "a refused call wrote something"
            outcomes["refused"] += 1
        else:
            assert isinstance(result, Message | BulkResult)
            ids = [result.pk] if isinstance(result, Message) else result.message_ids
            read_back(ids)
            outcomes["written"] += 1
        # Every example starts from the same tables (and idempotency keys are free again).
        transaction.set_rollback(True)


def test_notify_writes_a_message_or_raises_a_notify_error():
    active, inactive = UserFactory.create_batch(3), UserFactory(is_active=False)
    outcomes = {"written": 0, "refused": 0}

    @PROPERTIES
    @given(arguments=notify_arguments(active, inactive))
    def any_call(arguments: dict[str, Any]) -> None:
        either_written_or_refused(lambda: notify(**arguments), outcomes)

    any_call()
    # Both sides must be reached, or the property says little.
    assert outcomes["written"] >= PROPERTY_EXAMPLES // 10, outcomes
    assert outcomes["refused"] >= PROPERTY_EXAMPLES // 2, outcomes


def test_notify_many_writes_messages_or_raises_a_notify_error():
    active, inactive = UserFactory.create_batch(3), UserFactory(is_active=False)
    outcomes = {"written": 0, "refused": 0}

    @PROPERTIES
    @given(arguments=notify_many_arguments(active, inactive))
    def any_call(arguments: dict[str, Any]) -> None:
        either_written_or_refused(lambda: notify_many(**arguments), outcomes)

    any_call()
    assert outcomes["written"] >= PROPERTY_EXAMPLES // 10, outcomes
    assert outcomes["refused"] >= PROPERTY_EXAMPLES // 2, outcomes
