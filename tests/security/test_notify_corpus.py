"""The hostile-input corpus thrown at `notify()` and `notify_many()`: every bad value raises a
typed `NotifyError` whose message says what to fix, and no Message or Delivery row is written."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import pytest

from notifier import dispatch
from notifier.api import notify, notify_many
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
from tests.security.corpus import HOSTILE_STRINGS, HOSTILE_VALUES, WRONG_TYPES

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
