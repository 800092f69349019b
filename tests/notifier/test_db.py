"""Bulk SQL helpers on PostgreSQL: `any_of` finds what `__in` finds, and COPY stores every value
exactly as the ORM would (JSON with escapes, text with tabs and newlines, NULLs, defaults)."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest
from django.utils import timezone

from notifier.db import any_of, copy_rows, next_ids
from notifier.models import Message, Preference, Recipient, SuppressedAddress, User
from notifier.queues import Lane
from notifier.services.messages import COPY_COLUMNS, NewMessage, as_message, messages_copy
from tests.factories import UserFactory

pytestmark = pytest.mark.django_db


def test_any_of_finds_what_in_finds():
    users = UserFactory.create_batch(4)
    for user in users[:3]:
        Preference.objects.create(user=user, category="marketing", channel="email", enabled=False)
    wanted = [users[0].pk, users[2].pk, users[3].pk, 10**12]  # one with no rows, one unknown

    def pairs(queryset):
        return sorted(queryset.values_list("user_id", "channel"))

    assert pairs(Preference.objects.filter(any_of("user_id", wanted))) == pairs(
        Preference.objects.filter(user_id__in=wanted)
    )
    assert pairs(Preference.objects.exclude(any_of("user_id", wanted))) == [(users[1].pk, "email")]
    assert not Preference.objects.filter(any_of("user_id", [])).exists()
    # Through a relation, and over text columns.
    profiles = [Recipient.objects.get(user=user).pk for user in users[1:3]]
    found = User.objects.filter(any_of("notifier_recipient__pk", profiles)).order_by("pk")
    assert list(found) == users[1:3]
    SuppressedAddress.objects.create(
        address="gone@example.com", reason="bounce", source="test", at=timezone.now()
    )
    assert list(
        SuppressedAddress.objects.filter(
            any_of("address", {"gone@example.com", "here@example.com"})
        ).values_list("address", flat=True)
    ) == ["gone@example.com"]


AWKWARD = {
    "plain": "Everything must go",
    "escapes": 'a\\b\tc\nd\re "quoted" \\n not a newline',
    "unicode": "Grüße, 你好, \u2028 and 🎉",
    "nested": {"list": [1, 2.5, None, True, False], "empty": {}},
}


def test_copy_stores_values_as_the_orm_does():
    user = UserFactory()
    now = timezone.now()
    expires = datetime(2031, 1, 2, 3, 4, 5, 678901, tzinfo=UTC)
    row = NewMessage(
        user_id=user.pk,
        type_key="order.shipped",
        context=AWKWARD,
        channels=["inapp", "email"],
        lane=Lane.BULK,  # a StrEnum, not a str
        idempotency_key="key\twith\ttabs\\and\nlines",
        expires_at=expires,
        is_test=True,
    )
    [pk] = next_ids(Message, 1)
    copied = as_message(row, pk, now)
    copied.routed_at = now
    messages_copy([copied])
    by_orm = Message.objects.create(
        user_id=user.pk,
        type_id="order.shipped",
        context=AWKWARD,
        channels=["inapp", "email"],
        lane="bulk",
        idempotency_key="another key",
        expires_at=expires,
        is_test=True,
        created_at=now,
        routed_at=now,
    )
    names = [name for name in COPY_COLUMNS if name != "idempotency_key"]
    stored = Message.objects.filter(pk__in=[pk, by_orm.pk]).order_by("pk")
    copied_row, orm_row = (tuple(getattr(m, name) for name in names) for m in stored)
    assert copied_row == orm_row
    read = Message.objects.get(pk=pk)
    assert read.context == AWKWARD
    assert read.idempotency_key == "key\twith\ttabs\\and\nlines"
    assert read.expires_at == expires
    # Columns left out get the model's defaults, as an ORM insert would give them.
    assert (read.fallback_chain, read.prepare_crashes, read.cap_day) == ([], 0, None)


def test_copy_writes_nulls_and_defaults_of_columns_left_out():
    at = datetime(2030, 5, 6, 7, 8, 9, tzinfo=UTC)
    ids = copy_rows(
        SuppressedAddress,
        ("address", "reason", "source", "at"),
        [("a@example.com", "bounce", "te\\st", at), ("b@example.com", "complaint", "", at)],
        with_ids=True,
    )
    rows = list(
        SuppressedAddress.objects.filter(pk__in=ids)
        .order_by("pk")
        .values_list("address", "channel", "reason", "source", "detail", "at")
    )
    assert rows == [
        ("a@example.com", "email", "bounce", "te\\st", "", at),
        ("b@example.com", "email", "complaint", "", "", at),
    ]


def test_copy_writes_each_rows_own_moment_and_empty_json_defaults():
    # The COPY keeps the text of the last moment it wrote (most rows of a batch share one):
    # the same moment again, another one, the first again, a NULL and a moment after it.
    first = datetime(2030, 5, 6, 7, 8, 9, 123456, tzinfo=UTC)
    second = datetime(2031, 1, 2, 3, 4, 5, tzinfo=UTC)
    user = UserFactory()
    moments = [first, first, second, datetime(2030, 5, 6, 7, 8, 9, 123456, tzinfo=UTC), None]
    ids = copy_rows(
        Message,
        ("user", "type", "lane", "idempotency_key", "created_at", "expires_at"),
        [
            (user.pk, "order.shipped", "bulk", f"moment-{i}", first, moment)
            for i, moment in enumerate([*moments, second])
        ],
        with_ids=True,
    )
    stored = list(Message.objects.filter(pk__in=ids).order_by("pk"))
    assert [m.expires_at for m in stored] == [*moments, second]
    assert {m.created_at for m in stored} == {first}
    # A JSON column left out gets its empty default on each row, as the ORM gives it.
    assert [m.context for m in stored] == [{}] * 6 and [m.channels for m in stored] == [[]] * 6


def test_copy_stores_json_orjson_refuses_and_rows_sharing_one_value_as_the_orm_does():
    # orjson writes the JSON text; what it refuses (an integer beyond 64 bits) goes through the
    # standard library. Rows may share one value object (COPY encodes it once), with another
    # between them: each row is stored with its own.
    user = UserFactory()
    now = timezone.now()
    shared = {"code": "SPRING", "n": 1}
    contexts = [
        shared,
        shared,
        {"big": 2**70, "negative": -(2**64)},
        shared,
        {1: "int key", "s": "str key"},
        AWKWARD,
    ]
    ids = copy_rows(
        Message,
        ("user", "type", "lane", "idempotency_key", "created_at", "context"),
        [(user.pk, "order.shipped", "bulk", f"json-{i}", now, c) for i, c in enumerate(contexts)],
        with_ids=True,
    )
    stored = [m.context for m in Message.objects.filter(pk__in=ids).order_by("pk")]
    by_orm = []
    for i, context in enumerate(contexts):
        message = Message.objects.create(
            user_id=user.pk,
            type_id="order.shipped",
            idempotency_key=f"orm-{i}",
            context=context,
            created_at=now,
        )
        by_orm.append(Message.objects.get(pk=message.pk).context)
    assert stored == by_orm
    assert stored[2] == {"big": 2**70, "negative": -(2**64)}
    assert stored[4] == {"1": "int key", "s": "str key"}
