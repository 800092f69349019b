"""The one writer of delivery statuses and of the delivery log (`DeliveryEvent` rows).

A status written past the state machine, or a log row without the move it records, is how a
support timeline comes to lie; so every write of `Delivery.status` and every event row goes
through here, and tests/test_status_writers.py fails if any other module writes either.

Each function checks its moves against `ALLOWED_MOVES` (notifier.status) when it is called: a
bulk move declares the statuses it moves from and to, checked once for the call, never per
row. Its UPDATE is guarded by those from-statuses (a compare-and-set: a row that moved meanwhile
is left alone), and its event rows go in within the same transaction. A waiting delivery (held
or queued) may also be held or queued again with a new time or reason (`STAYS`): a re-hold or
a deferral, which the state machine does not list as a move.

The hot paths (routing a fan-out, recording sends) cost here what they cost when each wrote its
own rows: one statement for the deliveries and one for their events, COPY where there are many,
never a query per row.

Each write also tells the world (notifier.events_out.record): one `deliveries_changed` signal
for its batch after commit, and the outbox rows of the webhook endpoints that want its new
statuses, in one more statement in the same transaction; nothing at all when nobody listens.
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Collection, Iterable, Mapping, Sequence
from contextlib import nullcontext
from datetime import datetime
from itertools import pairwise
from typing import Any

from django.db import connection, transaction
from django.utils import timezone

from notifier.db import (
    NO_WAIT,
    copy_rows,
    insert_rows,
    model_field,
    table_name,
    update_rows,
    update_rows_returning,
    with_defaults,
)
from notifier.events_out import record
from notifier.events_out.signals import DeliveryChange
from notifier.models import Delivery, DeliveryEvent, EventKind
from notifier.sql_arrays import array_text, column_arrays, unnest_of
from notifier.status import (
    ENGAGEMENT_RANK,
    DeliveryStatus,
    IllegalMove,
    check_move,
    sources_of,
)

S = DeliveryStatus

# Waiting statuses a delivery may be written to again: held anew (a new time, a new reason),
# or queued again with a later time (a provider that could not take it yet).
STAYS: frozenset[DeliveryStatus] = frozenset({S.HELD, S.QUEUED})

# An event row, in this order: (delivery id, at, kind, status, reason, attempt, provider, error,
# detail). Plain tuples: a fan-out writes a hundred thousand of them.
EVENT_COLUMNS = (
    "delivery",
    "at",
    "kind",
    "status",
    "reason",
    "attempt",
    "provider",
    "error",
    "detail",
)
Event = tuple[int, datetime, str, str, str, int | None, str, str, dict[str, Any]]

# A new delivery, in this order (see `deliveries_create`).
DELIVERY_COLUMNS = (
    "message",
    "user",
    "channel",
    "status",
    "reason",
    "content",
    "last_error",
    "attempts",
    "provider",
    "provider_message_id",
    "created_at",
    "updated_at",
    "next_attempt_at",
    "finished_at",
    "priority_rank",
    "fallback_of",
    "sent_at",
)
_MESSAGE, _CHANNEL, _STATUS, _REASON, _LAST_ERROR, _ATTEMPTS, _PROVIDER = (
    DELIVERY_COLUMNS.index(c)
    for c in ("message", "channel", "status", "reason", "last_error", "attempts", "provider")
)

# A delivery our own database delivers as it is routed (the in-app inbox, written in the
# routing transaction) is written sent at once: routed (queued), claimed and sent in one go.
SENT_ON_ROUTE = (S.PENDING, S.QUEUED, S.SENDING, S.SENT)

# The milestone a move stamps with its time.
STAMPS: dict[DeliveryStatus, str] = {
    S.SENT: "sent_at",
    S.DELIVERED: "delivered_at",
    S.OPENED: "opened_at",
    S.READ: "opened_at",
    S.CLICKED: "clicked_at",
}


def moves_check(
    sources: Iterable[DeliveryStatus | str], targets: Iterable[DeliveryStatus | str]
) -> None:
    """Raise IllegalMove unless every source may move to every target (or stay, see STAYS)."""
    wanted = [DeliveryStatus(t) for t in targets]
    for source in sources:
        for target in wanted:
            if not (source == target and target in STAYS):
                check_move(source, target)


def _events_write(events: Sequence[Event]) -> None:
    """COPY pays off for many rows; one row (a send recorded as it happens) is an INSERT."""
    if len(events) > 1:
        copy_rows(DeliveryEvent, EVENT_COLUMNS, events)
    elif events:
        insert_rows(DeliveryEvent, EVENT_COLUMNS, events)


# --- New deliveries ---------------------------------------------------------------------------


def deliveries_create(
    rows: Sequence[Sequence[Any]],
    details: Sequence[dict[str, Any]],
    *,
    at: datetime,
    kind: EventKind,
    may_exist: bool = False,
) -> dict[tuple[int, str], int]:
    """Insert deliveries (rows in DELIVERY_COLUMNS order) each with its first event (`details`,
    row by row); returns (message id, channel) -> delivery id.

    A new delivery is written in the status routing decided for it, a move from `pending`. By
    COPY, when none of them can exist yet (the caller holds its messages' locks); with
    `may_exist` (a fallback that may run twice) by INSERT ... ON CONFLICT DO NOTHING, and
    a delivery that was there already gets no second first event.

    A row in status `sent` was delivered in the caller's transaction (SENT_ON_ROUTE: the in-app
    inbox item written with it). Its row carries the attempt (attempts, provider, sent_at,
    finished_at) and the reason routing gave it; it is written with the reason cleared, as a
    recorded send leaves it, and gets one event: its attempt, `sent`, carrying routing's reason
    and, in its detail, the routing event it stands for (`on_route`). Routed, claimed and sent
    at the same instant, a `queued` event before it would say nothing the attempt does not, and
    a fan-out writes a hundred thousand of them.
    """
    statuses = {row[_STATUS] for row in rows}
    if S.SENT in statuses:
        for source, target in pairwise(SENT_ON_ROUTE):
            check_move(source, target)
    moves_check([S.PENDING], statuses - {S.SENT})
    written = [_as_written(row) for row in rows]
    if may_exist:
        returned = insert_rows(
            Delivery,
            DELIVERY_COLUMNS,
            written,
            returning=("id", "message", "channel"),
            ignore_conflicts=True,
        )
        ids = {(message_id, channel): pk for pk, message_id, channel in returned}
    else:
        new_ids = copy_rows(Delivery, DELIVERY_COLUMNS, written, with_ids=True)
        ids = {(row[_MESSAGE], row[_CHANNEL]): pk for row, pk in zip(rows, new_ids, strict=True)}
    events: list[Event] = []
    for row, detail in zip(rows, details, strict=True):
        pk = ids.get((row[_MESSAGE], row[_CHANNEL]))
        if pk is None:
            continue
        if row[_STATUS] == S.SENT:
            events.append(
                (
                    pk,
                    at,
                    EventKind.ATTEMPT,
                    S.SENT,
                    row[_REASON],
                    row[_ATTEMPTS],
                    row[_PROVIDER],
                    "",
                    _sent_on_route_detail(kind, detail),
                )
            )
        else:
            events.append(
                (pk, at, kind, row[_STATUS], row[_REASON], None, "", row[_LAST_ERROR], detail)
            )
    copy_rows(DeliveryEvent, EVENT_COLUMNS, events)
    record.deliveries_changed(
        statuses,
        lambda: [
            DeliveryChange(ids[key], row[_STATUS], written_row[_REASON], at)
            for row, written_row in zip(rows, written, strict=True)
            if (key := (row[_MESSAGE], row[_CHANNEL])) in ids
        ],
    )
    return ids


# The detail of a routed delivery's one event when it was sent as it was routed: one dict per
# routing event kind, shared by every row of a batch (COPY encodes a shared value once).
_SENT_ON_ROUTE: dict[str, dict[str, Any]] = {}


def _sent_on_route_detail(kind: EventKind, detail: dict[str, Any]) -> dict[str, Any]:
    """The attempt's outcome, the routing event it stands for, and that event's own detail."""
    if detail:
        return {"outcome": "sent", "on_route": str(kind), **detail}
    if kind not in _SENT_ON_ROUTE:
        _SENT_ON_ROUTE[kind] = {"outcome": "sent", "on_route": str(kind)}
    return _SENT_ON_ROUTE[kind]


def _as_written(row: Sequence[Any]) -> Sequence[Any]:
    """A row as its delivery is written: a sent one without routing's reason (kept on its
    first event), as recording a send leaves it."""
    if row[_STATUS] != S.SENT or not row[_REASON]:
        return row
    return (*row[:_REASON], "", *row[_REASON + 1 :])


# --- Claiming and recording sends -------------------------------------------------------------


def deliveries_claim(
    delivery_ids: Sequence[int],
    *,
    at: datetime,
    due_by: datetime,
    until: datetime,
    token: uuid.UUID,
) -> list[int]:
    """queued -> sending for those of delivery_ids due by `due_by`, each with an attempt more,
    the claim `token` and its lease `until`; returns the ids claimed. No event: the attempt's
    outcome is the event (`deliveries_set`).

    A compare-and-set in one statement: when two workers run the same task, the second waits
    for the first's row lock, re-reads the status, finds 'sending', and claims nothing.
    """
    check_move(S.QUEUED, S.SENDING)
    if not delivery_ids:
        return []
    table = table_name(Delivery)
    field = Delivery._meta.get_field("claimed_at")
    stamp = field.get_db_prep_value(at, connection)
    due = field.get_db_prep_value(due_by, connection)
    lease = field.get_db_prep_value(until, connection)
    prepared = Delivery._meta.get_field("claim_token").get_db_prep_value(token, connection)
    id_params: list[Any]
    if connection.vendor == "postgresql":  # the ids as one array: no list of 500 to prepare
        ids, id_params = "= ANY(%s)", [list(delivery_ids)]
    else:
        ids, id_params = f"IN ({', '.join(['%s'] * len(delivery_ids))})", list(delivery_ids)
    with connection.cursor() as cursor:
        cursor.execute(
            f"UPDATE {table} SET status = %s, attempts = attempts + 1, claimed_at = %s, "
            f"claimed_until = %s, claim_token = %s, "
            f"updated_at = %s WHERE id {ids} AND status = %s "
            f"AND (next_attempt_at IS NULL OR next_attempt_at <= %s) RETURNING id",
            [S.SENDING, stamp, lease, prepared, stamp, *id_params, S.QUEUED, due],
        )
        claimed = [row[0] for row in cursor.fetchall()]
    record.deliveries_changed(
        [S.SENDING], lambda: [DeliveryChange(pk, S.SENDING, "", at) for pk in claimed]
    )
    return claimed


# --- One delivery (callbacks, tracking, the inbox) --------------------------------------------


def delivery_move(
    delivery_id: int,
    to: DeliveryStatus,
    *,
    kind: EventKind,
    reason: str = "",
    error: str = "",
    detail: dict[str, object] | None = None,
    at: datetime | None = None,
    sources: Collection[DeliveryStatus] | None = None,
    stamp: bool = True,
    **fields: object,
) -> bool:
    """Move one delivery to `to` if it is in one of `sources` (by default, any status the state
    machine allows to move there), with its event; `fields` are written with it.

    A compare-and-set: returns False (and writes nothing) when the delivery is not in such a
    status, e.g. a duplicate callback or an out-of-order one. With `stamp`, the milestone of
    `to` (sent_at, opened_at, ...) is set to `at` unless `fields` names it.
    """
    if sources is None:
        sources = sources_of(to)
    else:
        moves_check(sources, [to])
    at = at or timezone.now()
    updates: dict[str, object] = {"status": to, "updated_at": at, **fields}
    if reason or to in (S.FAILED, S.SUPPRESSED, S.CANCELLED):
        updates["reason"] = reason
    milestone = STAMPS.get(to) if stamp else None
    if milestone:
        updates.setdefault(milestone, at)
    with transaction.atomic(savepoint=False):
        moved = Delivery.objects.filter(pk=delivery_id, status__in=sources).update(**updates)
        if moved:
            DeliveryEvent.objects.create(
                delivery_id=delivery_id,
                at=at,
                kind=kind,
                status=to,
                reason=reason,
                error=error,
                detail=detail or {},
            )
            record.deliveries_changed(
                [to], lambda: [DeliveryChange(delivery_id, to, str(updates.get("reason", "")), at)]
            )
    return bool(moved)


def delivery_advance(
    delivery_id: int,
    to: DeliveryStatus,
    *,
    kind: EventKind,
    at: datetime | None = None,
    detail: dict[str, object] | None = None,
) -> bool:
    """Move forward along the engagement order only: a late 'delivered' never undoes 'clicked'."""
    if to not in ENGAGEMENT_RANK:
        raise ValueError(f"{to} is not an engagement status")
    return delivery_move(delivery_id, to, kind=kind, at=at, detail=detail)


def delivery_note(
    delivery_id: int,
    *,
    kind: EventKind,
    at: datetime,
    detail: dict[str, object],
    error: str = "",
) -> None:
    """Log something about a delivery that does not move it (a complaint, a user's feedback),
    under the status it has now."""
    status = Delivery.objects.values_list("status", flat=True).get(pk=delivery_id)
    DeliveryEvent.objects.create(
        delivery_id=delivery_id, at=at, kind=kind, status=status, error=error, detail=detail
    )


# --- Many deliveries --------------------------------------------------------------------------


def deliveries_move(
    delivery_ids: Collection[int],
    *,
    sources: Collection[DeliveryStatus],
    to: DeliveryStatus,
    kind: EventKind,
    at: datetime,
    reason: str | None = None,
    detail: Mapping[str, object] | None = None,
    details: Mapping[int, Mapping[str, object]] | None = None,
    **fields: object,
) -> list[int]:
    """Move those of `delivery_ids` still in one of `sources` to `to`, with `fields` (and
    `reason`, unless None: the column is left as it is), and log each move with the same
    reason and `detail`, plus the delivery's own `details`; returns the ids moved.

    One UPDATE and one INSERT. When the UPDATE moves fewer rows than asked (another writer got
    to some first), one more query finds which, so none of those gets an event.
    """
    moves_check(sources, [to])
    if not delivery_ids:
        return []
    with transaction.atomic(savepoint=False):
        updates: dict[str, object] = {"status": to, "updated_at": at, **fields}
        if reason is not None:
            updates["reason"] = reason
        moved = Delivery.objects.filter(pk__in=delivery_ids, status__in=sources).update(**updates)
        ids = list(delivery_ids)
        if moved < len(ids):
            ids = list(
                Delivery.objects.filter(pk__in=ids, status=to, updated_at=at).values_list(
                    "pk", flat=True
                )
            )
        common = dict(detail or {})
        _events_write(
            [
                (pk, at, kind, to, reason or "", None, "", "", {**common, **details.get(pk, {})})
                if details
                else (pk, at, kind, to, reason or "", None, "", "", common)
                for pk in ids
            ]
        )
        record.deliveries_changed(
            [to], lambda: [DeliveryChange(pk, to, reason or "", at) for pk in ids]
        )
    return ids


def deliveries_log(
    delivery_ids: Iterable[int],
    *,
    status: DeliveryStatus,
    kind: EventKind,
    at: datetime,
    reason: str = "",
    detail: dict[str, object] | None = None,
) -> None:
    """Log a step that left these deliveries in `status` (a lost task published again)."""
    _events_write(
        [(pk, at, kind, status, reason, None, "", "", detail or {}) for pk in delivery_ids]
    )


def deliveries_set(
    names: Sequence[str],
    rows: Sequence[Sequence[Any]],
    *,
    source: DeliveryStatus,
    targets: Collection[DeliveryStatus],
    guard: Mapping[str, object] | None = None,
    events: Sequence[Event] = (),
    no_wait: bool = False,
) -> int:
    """Write each delivery its own values (rows of (pk, *values in the order of `names`), the
    status among them) where it is still in `source` (and matches `guard`), with `events`;
    returns how many rows the UPDATE matched.

    Every row's status must be one of `targets`. The events are written when the UPDATE
    matched a row, and always for a batch: a batch's events are not narrowed to the rows
    that moved (a lone row that had moved on, e.g. a claim taken back, gets none).

    On PostgreSQL the rows and their events are one statement (`_set_logged`); with
    `no_wait`, when the call is its own transaction (not inside the caller's), its commit
    does not wait for the disk (see `notifier.db.commit_without_waiting`): a send recorded
    as it happens costs one round trip.
    """
    moves_check([source], targets)
    column = names.index("status") + 1
    if not {row[column] for row in rows} <= set(targets):
        raise IllegalMove(f"a row moves from {source} to a status outside {sorted(targets)}")
    where = {"status": source, **(guard or {})}
    wanted = record.deliveries_wanted(targets)
    if events and connection.vendor == "postgresql":
        no_wait = no_wait and not connection.in_atomic_block
        with transaction.atomic(savepoint=False) if wanted else nullcontext():
            moved = _set_logged(names, rows, where=where, events=events, no_wait=no_wait)
            if wanted:
                record.deliveries_changed(targets, lambda: _set_changes(names, rows, moved))
        return len(moved)
    if wanted:
        # Someone wants to know: which rows moved, so only those are told of.
        with transaction.atomic(savepoint=False):
            moved = update_rows_returning(Delivery, names, rows, where=where)
            if moved or len(rows) > 1:
                _events_write(events)
            record.deliveries_changed(targets, lambda: _set_changes(names, rows, moved))
        return len(moved)
    # Without events it is one statement (or a few, for many rows): no transaction of its own.
    with transaction.atomic(savepoint=False) if events else nullcontext():
        updated = update_rows(Delivery, names, rows, where=where)
        if updated or len(rows) > 1:
            _events_write(events)
    return updated


def _set_logged(
    names: Sequence[str],
    rows: Sequence[Sequence[Any]],
    *,
    where: Mapping[str, object],
    events: Sequence[Event],
    no_wait: bool,
) -> list[int]:
    """`deliveries_set`'s UPDATE and the INSERT of its events as one statement (PostgreSQL):
    one round trip, and one transaction of its own when the caller has none. Each column's
    values go as one array (`unnest`), so what PostgreSQL parses and plans does not grow with
    the rows, as a VALUES list of typed literals does. Returns the ids the UPDATE moved."""
    pk = Delivery._meta.pk
    assert pk is not None
    fields = [pk, *(model_field(Delivery, name) for name in names)]
    # The guards (the status the rows must still be in, a claim's token) travel as columns of
    # `v`, each row with the same value, not as constants: a constant such as a claim's token
    # looks like one row in the statistics, and the planner then drove the join from the
    # deliveries in that status, scanning all of `v` again for each (a batch of 500 cost 500
    # times 500 rows). Compared with `v`'s columns, the rows are found by key.
    guard_fields = [model_field(Delivery, name) for name in where]
    guard_columns = [f"guard_{index}" for index in range(len(guard_fields))]
    event_fields, event_rows = with_defaults(DeliveryEvent, EVENT_COLUMNS, events)
    quote = connection.ops.quote_name
    columns = ", ".join([*(quote(f.column) for f in fields), *guard_columns])
    event_columns = ", ".join(quote(f.column) for f in event_fields)
    assignments = ", ".join(f"{quote(f.column)} = v.{quote(f.column)}" for f in fields[1:])
    guards = "".join(
        f" AND d.{quote(field.column)} = v.{column}"
        for field, column in zip(guard_fields, guard_columns, strict=True)
    )
    sql = (
        f"{NO_WAIT if no_wait else ''}"
        f"WITH moved AS (UPDATE {table_name(Delivery)} AS d SET {assignments} "
        f"FROM {unnest_of([*fields, *guard_fields])} AS v ({columns}) "
        f"WHERE d.{quote(pk.column)} = v.{quote(pk.column)}{guards} RETURNING d.id), "
        f"logged AS (INSERT INTO {table_name(DeliveryEvent)} ({event_columns}) "
        f"SELECT * FROM {unnest_of(event_fields)} AS e ({event_columns}) "
        "WHERE %s OR EXISTS (SELECT 1 FROM moved)) "
        "SELECT id FROM moved"
    )
    params: list[Any] = [
        *column_arrays(len(fields), rows),
        *(array_text([value] * len(rows)) for value in where.values()),
        *column_arrays(len(event_fields), event_rows),
        len(rows) > 1,
    ]
    with connection.cursor() as cursor:
        cursor.execute(sql, params)
        return [row[0] for row in cursor.fetchall()]


def _set_changes(
    names: Sequence[str], rows: Sequence[Sequence[Any]], moved: Collection[int]
) -> list[DeliveryChange]:
    """The changes `deliveries_set` made to the rows in `moved`."""
    status, reason, updated_at = (
        names.index(name) + 1 if name in names else None
        for name in ("status", "reason", "updated_at")
    )
    assert status is not None
    now = timezone.now()
    wanted = set(moved)
    return [
        DeliveryChange(
            row[0],
            row[status],
            row[reason] if reason is not None else "",
            row[updated_at] if updated_at is not None else now,
        )
        for row in rows
        if row[0] in wanted
    ]


def deliveries_move_joined(
    *,
    ctes: str,
    params: Sequence[Any],
    source: str,
    sources: Collection[DeliveryStatus],
    to: DeliveryStatus,
    reason: str,
    kind: EventKind,
    at: datetime,
    detail: Mapping[str, object],
    where: str = "",
    where_params: Sequence[Any] = (),
    also_set: str = "",
    also_set_params: Sequence[Any] = (),
    returning: str = "",
    event_detail: str = "",
    event_detail_params: Sequence[Any] = (),
) -> int:
    """Move, in one statement with their events, the deliveries in one of `sources` of the
    messages a query names (PostgreSQL): a campaign's millions of messages in a few statements.

    `ctes` are the WITH queries (with `params`); `source` is the one whose `id` is a message id,
    joined as `{source}` to the deliveries `d`. `where` adds conditions on both, `also_set`
    more columns (", col = expr"), `returning` more columns for `event_detail`: jsonb pairs
    added to `detail` in each event. Returns how many deliveries moved.
    """
    moves_check(sources, [to])
    delivery, events = table_name(Delivery), table_name(DeliveryEvent)
    sql = f"""
        WITH {ctes},
        moved AS (
            UPDATE {delivery} AS d
            SET status = %s, reason = %s, updated_at = %s{also_set}
            FROM {source}
            WHERE d.message_id = {source}.id AND d.status = ANY(%s){where}
            RETURNING d.id{returning}
        )
        INSERT INTO {events} (delivery_id, at, kind, status, reason, provider, error, detail)
        SELECT id, %s, %s, %s, %s, '', '', %s::jsonb || jsonb_build_object({event_detail})
        FROM moved
    """
    told = record.deliveries_wanted([to])
    if told:
        sql += " RETURNING delivery_id"
    with transaction.atomic(savepoint=False), connection.cursor() as cursor:
        cursor.execute(
            sql,
            [
                *params,
                to,
                reason,
                at,
                *also_set_params,
                [str(s) for s in sources],
                *where_params,
                at,
                kind,
                to,
                reason,
                json.dumps(detail),
                *event_detail_params,
            ],
        )
        count = cursor.rowcount
        if told:
            moved_ids = [row[0] for row in cursor.fetchall()]
            record.deliveries_changed(
                [to], lambda: [DeliveryChange(pk, to, reason, at) for pk in moved_ids]
            )
        return count
