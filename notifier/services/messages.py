"""Writing messages: one INSERT per call (or per batch), idempotent by key, published on commit.

These functions trust their input; `notifier.api` validates it first. Each write tells of the
messages it created (notifier.events_out.record: the `message_created` signal after commit, and
message.created webhook events in the same transaction), once per write.
"""

from __future__ import annotations

import functools
from collections import defaultdict
from collections.abc import Callable, Sequence
from contextlib import nullcontext
from dataclasses import dataclass
from datetime import datetime
from functools import cache, partial
from operator import attrgetter
from typing import Any

from django.contrib.auth import get_user_model
from django.db import connection, transaction
from django.db.models import Field, Model, signals
from django.db.models.base import ModelState
from django.utils import timezone

from notifier import dispatch
from notifier.db import (
    any_of,
    copy_rows,
    insert_rows,
    model_field,
    row_preparers,
    table_name,
    with_defaults,
)
from notifier.errors import IdempotencyKeyReused
from notifier.events_out import record
from notifier.models import Message, Recipient
from notifier.queues import Lane
from notifier.user_keys import UserKey

COLUMNS = (
    "user",
    "type",
    "context",
    "channels",
    "lane",
    "idempotency_key",
    "campaign",
    "created_at",
    "priority",
    "expires_at",
    "fallback_chain",
    "step",
    "variant",
    "not_before",
    "is_test",
    "cancel_key",
    "throttle_key",
    "digest_key",
    "digest",
    "topic",
)


@dataclass(frozen=True, slots=True)
class NewMessage:
    user_id: UserKey
    type_key: str
    context: dict[str, Any]
    channels: list[str]
    lane: Lane
    idempotency_key: str | None
    priority: str = "normal"
    expires_at: datetime | None = None
    campaign_id: int | None = None
    step_id: int | None = None
    variant_id: int | None = None
    not_before: datetime | None = None
    is_test: bool = False
    cancel_key: str | None = None
    throttle_key: str | None = None
    digest_key: str | None = None
    digest_id: int | None = None  # a digest's own message: the digest it sends
    topic_id: int | None = None  # handed out by a send to this topic


def _values(row: NewMessage, now: datetime) -> tuple[Any, ...]:
    return (
        row.user_id,
        row.type_key,
        row.context,
        row.channels,
        str(row.lane),
        row.idempotency_key,
        row.campaign_id,
        now,
        row.priority,
        row.expires_at,
        [],
        row.step_id,
        row.variant_id,
        row.not_before,
        row.is_test,
        row.cancel_key,
        row.throttle_key,
        row.digest_key,
        row.digest_id,
        row.topic_id,
    )


def _insert_returning(rows: Sequence[NewMessage], now: datetime) -> dict[int, int]:
    """INSERT ... ON CONFLICT DO NOTHING RETURNING: row index -> new id, for rows inserted.

    A row whose idempotency key exists already (or is being inserted by a concurrent
    transaction, which we then wait for) is skipped, not an error.
    """
    returned = insert_rows(
        Message,
        COLUMNS,
        [_values(row, now) for row in rows],
        returning=("id", "idempotency_key", "user"),
        ignore_conflicts=True,
    )
    # Rows come back in no promised order: match them to input rows by key (or by user for
    # keyless rows, which never conflict and are therefore all returned, in id order).
    by_key = {key: pk for pk, key, _ in returned if key is not None}
    keyless: dict[int, list[int]] = defaultdict(list)
    for pk, key, user_id in sorted(returned):
        if key is None:
            keyless[user_id].append(pk)
    ids: dict[int, int] = {}
    for index, row in enumerate(rows):
        if row.idempotency_key is not None:
            if row.idempotency_key in by_key:
                ids[index] = by_key[row.idempotency_key]
        else:
            ids[index] = keyless[row.user_id].pop(0)
    return ids


def _insert_one_for_active_user(row: NewMessage, now: datetime) -> int | None:
    """One round trip for notify(): insert only if the user exists and is active, and the key
    is free. None means one of those did not hold; the caller finds out which."""
    statement = _insert_one_statement(get_user_model(), connection.vendor)
    values = [*_values(row, now), *(field.get_default() for field in statement.defaulted)]
    params = [prepare(value) for prepare, value in zip(statement.preparers, values, strict=True)]
    user_key = statement.user_key(row.user_id)
    with connection.cursor() as cursor:
        cursor.execute(statement.sql, [*params, user_key, user_key])
        found = cursor.fetchone()
    return int(found[0]) if found else None


@dataclass(frozen=True)
class _InsertOne:
    sql: str
    defaulted: tuple[Field[Any, Any], ...]  # columns COLUMNS leaves to their defaults
    preparers: tuple[Callable[[Any], Any], ...]  # per column, as the ORM would store it
    user_key: Callable[[UserKey], Any]


@functools.cache
def _insert_one_statement(model: type[Model], vendor: str) -> _InsertOne:
    """notify()'s INSERT, written once per process (and user model, and database vendor): it
    costs more to build than PostgreSQL takes to run it."""
    fields, _ = with_defaults(Message, COLUMNS, [])
    defaulted = fields[len(COLUMNS) :]
    qn = connection.ops.quote_name
    # The project's user model (AUTH_USER_MODEL), whatever its table and key are called; one
    # without an is_active field has every user active.
    key = qn(model._meta.pk.get_attname_column()[1])
    active = (
        f" AND {qn('is_active')}"
        if any(f.name == "is_active" for f in model._meta.concrete_fields)
        else ""
    )
    # An erased person (notifier.services.erasure) is refused too: one more lookup on the
    # profiles' unique user index.
    sql = (
        f"INSERT INTO {table_name(Message)} "
        f"({', '.join(qn(f.get_attname_column()[1]) for f in fields)}) "
        f"SELECT {', '.join(['%s'] * len(fields))} WHERE EXISTS "
        f"(SELECT 1 FROM {table_name(model)} WHERE {key} = %s{active}) "
        f"AND NOT EXISTS (SELECT 1 FROM {table_name(Recipient)} "
        f"WHERE user_id = %s AND erased_at IS NOT NULL) "
        f"ON CONFLICT DO NOTHING RETURNING id"
    )
    pk = model._meta.pk
    return _InsertOne(
        sql=sql,
        defaulted=tuple(defaulted),
        preparers=tuple(row_preparers(fields)),
        user_key=lambda user_id: pk.get_db_prep_value(user_id, connection),
    )


def as_message(row: NewMessage, pk: int, now: datetime) -> Message:
    """The Message a row becomes under id `pk`, in memory."""
    values = {
        "id": pk,
        "user_id": row.user_id,
        "type_id": row.type_key,
        "context": row.context,
        "channels": row.channels,
        "lane": str(row.lane),
        "priority": row.priority,
        "expires_at": row.expires_at,
        "step_id": row.step_id,
        "variant_id": row.variant_id,
        "not_before": row.not_before,
        "is_test": row.is_test,
        "cancel_key": row.cancel_key,
        "throttle_key": row.throttle_key,
        "digest_key": row.digest_key,
        "digest_id": row.digest_id,
        "topic_id": row.topic_id,
        "idempotency_key": row.idempotency_key,
        "campaign_id": row.campaign_id,
        "created_at": now,
    }
    if signals.pre_init.has_listeners(Message) or signals.post_init.has_listeners(Message):
        message = Message(**values)  # whoever listens hears it, as ever
    else:
        # What Model.__init__ leaves, for a fraction of its cost (a batch builds thousands):
        # the given values, and each other field's default, fresh per message.
        message = Message.__new__(Message)
        message._state = ModelState()
        message.__dict__.update(values)
        for attname, default in _message_defaults():
            message.__dict__[attname] = default()
    message._state.adding = False
    message._state.db = "default"
    return message


@cache
def _message_defaults() -> tuple[tuple[str, Callable[[], Any]], ...]:
    """(attname, default) of the Message fields `as_message` is not given."""
    given = {
        "id", "user_id", "type_id", "context", "channels", "lane", "priority", "expires_at",
        "step_id", "variant_id", "not_before", "is_test", "cancel_key", "throttle_key",
        "digest_key", "digest_id", "topic_id", "idempotency_key",
        "campaign_id", "created_at",
    }  # fmt: skip
    return tuple(
        (field.attname, field.get_default)
        for field in Message._meta.concrete_fields
        if field.attname not in given
    )


def _existing_by_key(rows: Sequence[NewMessage]) -> dict[str, Message]:
    keys = [row.idempotency_key for row in rows if row.idempotency_key is not None]
    found = Message.objects.filter(idempotency_key__in=keys)
    existing = {m.idempotency_key: m for m in found if m.idempotency_key is not None}
    for row in rows:
        message = existing.get(row.idempotency_key or "")
        if message is not None and (message.user_id, message.type_id) != (
            row.user_id,
            row.type_key,
        ):
            raise IdempotencyKeyReused(
                f"idempotency key {row.idempotency_key!r} already belongs to message "
                f"#{message.pk} ({message.type_id} for user {message.user_id}); "
                f"use a key unique to this notification, e.g. '{row.type_key}:<your id>'"
            )
    return existing


@dataclass(frozen=True)
class Written:
    messages: list[Message]  # one per input row, in order
    created: int  # how many of them are new; the rest existed under their idempotency key


def _publisher(ids: list[int], lane: Lane, *, tests: bool) -> Callable[[], None]:
    """What publishes new messages after commit: marketers' test sends go to their own queue."""
    return partial(dispatch.publish_prepare_of, ids, lane, test_sends=tests)


def messages_create(*, rows: Sequence[NewMessage]) -> Written:
    """Write messages (existing keys give back their message) and publish new ones on commit."""
    if not rows:
        return Written([], 0)
    now = timezone.now()
    created: dict[int, Message] = {}
    with transaction.atomic():
        for start in range(0, len(rows), 1000):
            batch = rows[start : start + 1000]
            for index, pk in _insert_returning(batch, now).items():
                created[start + index] = as_message(batch[index], pk, now)
        leftovers = [row for index, row in enumerate(rows) if index not in created]
        existing = _existing_by_key(leftovers) if leftovers else {}
        by_lane: dict[tuple[Lane, bool], list[int]] = defaultdict(list)
        for index, message in sorted(created.items()):
            by_lane[(rows[index].lane, rows[index].is_test)].append(message.pk)
        for (lane, tests), ids in by_lane.items():
            transaction.on_commit(_publisher(ids, lane, tests=tests), robust=True)
        record.messages_created([created[index].pk for index in sorted(created)])
    messages = [
        created[index] if index in created else existing[row.idempotency_key or ""]
        for index, row in enumerate(rows)
    ]
    return Written(messages, len(created))


def messages_insert_new(*, rows: Sequence[NewMessage]) -> list[int]:
    """Insert messages whose idempotency key is new; returns their ids and publishes nothing.

    For campaign fan-out, which routes the batch in the same task and re-walks an audience
    after a pause or a lost batch: users who already have their message are skipped cheaply.
    """
    now = timezone.now()
    new_ids: list[int] = []
    for start in range(0, len(rows), 1000):
        new_ids += _insert_returning(rows[start : start + 1000], now).values()
    record.messages_created(new_ids)
    return new_ids


def message_create(*, row: NewMessage, check_recipient: Callable[[], object]) -> Message:
    """The single-message path of notify(): one INSERT, one publish after commit.

    `check_recipient` raises the typed error for a missing or inactive user; it runs only when
    the INSERT wrote nothing, to tell that case from an existing idempotency key.
    """
    now = timezone.now()
    # With an endpoint to tell, the message and its event commit together (in autocommit too).
    with transaction.atomic(savepoint=False) if record.messages_wanted() else nullcontext():
        pk = _insert_one_for_active_user(row, now)
        if pk is not None:
            record.messages_created([pk])
    if pk is None:
        check_recipient()
        return _existing_by_key([row])[row.idempotency_key or ""]
    message = as_message(row, pk, now)
    transaction.on_commit(_publisher([message.pk], row.lane, tests=row.is_test), robust=True)
    return message


def messages_unwritten(rows: Sequence[NewMessage]) -> list[NewMessage]:
    """The rows whose idempotency key no message has yet (keyless rows are always new)."""
    keys = [row.idempotency_key for row in rows if row.idempotency_key is not None]
    taken = set(
        Message.objects.filter(any_of("idempotency_key", keys)).values_list(
            "idempotency_key", flat=True
        )
    )
    return [row for row in rows if row.idempotency_key is None or row.idempotency_key not in taken]


# The fan-out's messages (campaigns) carry no cancel, throttle or digest key, nor a topic: a
# campaign is cancelled as a whole, a throttled type counts its messages under the type
# itself, a campaign's messages are not digested, and a campaign is no topic's send.
NOT_COPIED = ("cancel_key", "throttle_key", "digest_key", "digest", "topic")
COPY_COLUMNS = (
    *(c for c in COLUMNS if c not in NOT_COPIED),
    "routed_at",
    "cap_day",
    "cap_week",
)


def messages_copy(messages: Sequence[Message]) -> None:
    """COPY messages built in memory (ids drawn already, routing fields set) in one go. An
    idempotency key taken meanwhile fails it whole, with IntegrityError."""
    values = attrgetter(*(model_field(Message, name).attname for name in COPY_COLUMNS))
    copy_rows(
        Message,
        COPY_COLUMNS,
        [values(message) for message in messages],
        ids=[message.pk for message in messages],
    )
    record.messages_created([message.pk for message in messages])
