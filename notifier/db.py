"""Bulk SQL the ORM does slowly: multi-row INSERT ... RETURNING and UPDATE ... FROM (VALUES).

Django's bulk_create builds a model instance per row and bulk_update builds a CASE per row and
field; on the delivery hot path both cost more than the database work itself. These helpers
write the same SQL by hand for PostgreSQL and for SQLite (3.33+, the embedded default), with
values prepared by each field, so JSON and datetimes are stored exactly as the ORM would.

Also: reading rows some of which Python cannot represent (`readable`), one at a time only when
a batch fails to load.
"""

from __future__ import annotations

import io
import json
from collections.abc import Callable, Iterable, Sequence
from datetime import datetime
from typing import Any, TypeVar, cast

import orjson
from django.db import OperationalError, connection, models, transaction
from django.db.models import F, Lookup, QuerySet
from django.db.models.lookups import In

# PostgreSQL allows 65535 parameters per statement; SQLite 32766.
MAX_PARAMS = 30000


def table_name(model: type[models.Model]) -> str:
    """The model's table, quoted for raw SQL."""
    return connection.ops.quote_name(model._meta.db_table)


def model_field(model: type[models.Model], name: str) -> models.Field[Any, Any]:
    return cast("models.Field[Any, Any]", model._meta.get_field(name))


def _preparer(field: models.Field[Any, Any]) -> Callable[[Any], Any]:
    if connection.vendor == "postgresql":
        # psycopg2 takes aware datetimes as they are, and JSON as text that the column casts;
        # the ORM's per-value preparation would cost more than the database work.
        if isinstance(field, models.JSONField):
            return lambda value: None if value is None else json_text(value)
        return _identity
    if isinstance(field, (models.JSONField, models.DateTimeField)):
        return lambda value: field.get_db_prep_save(value, connection)
    return _identity


def row_preparers(fields: Sequence[models.Field[Any, Any]]) -> list[Callable[[Any], Any]]:
    """How each field's value goes into hand-written SQL on this database (as the ORM stores
    it, without the ORM's per-value cost where the driver takes the value as it is)."""
    return [_preparer(field) for field in fields]


def _identity(value: Any) -> Any:
    return value


def _column(field: models.Field[Any, Any]) -> str:
    return connection.ops.quote_name(field.get_attname_column()[1])


def with_defaults(
    model: type[models.Model], names: Sequence[str], rows: Sequence[Sequence[Any]]
) -> tuple[list[models.Field[Any, Any]], Sequence[Sequence[Any]]]:
    """The fields for `names`, plus every other field with a default, and rows extended with
    those defaults: columns a caller leaves out get what the ORM would give them, so a field
    added to a model later cannot break a hand-written INSERT that never heard of it."""
    fields = [model_field(model, name) for name in names]
    given = {field.attname for field in fields}
    defaulted = [
        f
        for f in model._meta.concrete_fields
        if f.attname not in given and not f.primary_key and f.has_default()
    ]
    if not defaulted:
        return fields, rows
    return fields + defaulted, [(*row, *(f.get_default() for f in defaulted)) for row in rows]


def insert_rows(
    model: type[models.Model],
    names: Sequence[str],
    rows: Sequence[Sequence[Any]],
    *,
    returning: Sequence[str] = (),
    ignore_conflicts: bool = False,
) -> list[tuple[Any, ...]]:
    """INSERT rows (tuples in the order of `names`); returns the `returning` columns per row
    inserted, in no promised order."""
    if not rows:
        return []
    fields, rows = with_defaults(model, names, rows)
    prepare = [_preparer(field) for field in fields]
    table = table_name(model)
    columns = ", ".join(_column(field) for field in fields)
    one_row = "(" + ", ".join(["%s"] * len(fields)) + ")"
    suffix = " ON CONFLICT DO NOTHING" if ignore_conflicts else ""
    if returning:
        suffix += " RETURNING " + ", ".join(_column(model_field(model, n)) for n in returning)
    per_statement = max(1, MAX_PARAMS // len(fields))
    result: list[tuple[Any, ...]] = []
    with connection.cursor() as cursor:
        for start in range(0, len(rows), per_statement):
            chunk = rows[start : start + per_statement]
            params = [
                prep(value) for row in chunk for prep, value in zip(prepare, row, strict=True)
            ]
            values = ", ".join([one_row] * len(chunk))
            cursor.execute(f"INSERT INTO {table} ({columns}) VALUES {values}{suffix}", params)
            if returning:
                result.extend(tuple(row) for row in cursor.fetchall())
    return result


def update_rows(
    model: type[models.Model],
    names: Sequence[str],
    rows: Sequence[Sequence[Any]],
    *,
    where: dict[str, Any] | None = None,
) -> int:
    """UPDATE many rows to their own values in one statement. Each row is (pk, *values in the
    order of `names`). `where` adds equality guards, e.g. {"status": "sending"}: rows that no
    longer match are left alone (a compare-and-set for the whole batch)."""
    return _update_rows(model, names, rows, where=where, returning=False)[0]


def update_rows_returning(
    model: type[models.Model],
    names: Sequence[str],
    rows: Sequence[Sequence[Any]],
    *,
    where: dict[str, Any] | None = None,
) -> list[Any]:
    """`update_rows`, returning the primary keys of the rows it updated."""
    return _update_rows(model, names, rows, where=where, returning=True)[1]


def _update_rows(
    model: type[models.Model],
    names: Sequence[str],
    rows: Sequence[Sequence[Any]],
    *,
    where: dict[str, Any] | None,
    returning: bool,
) -> tuple[int, list[Any]]:
    """How many rows were updated, and their primary keys when `returning`."""
    if not rows:
        return 0, []
    pk = model._meta.pk
    assert pk is not None
    fields = [pk, *(model_field(model, name) for name in names)]
    prepare = [_preparer(field) for field in fields]
    table = table_name(model)
    postgres = connection.vendor == "postgresql"
    if postgres:
        # Cast every value: VALUES columns are otherwise typed from their first literal.
        one_row = "(" + ", ".join(f"%s::{f.db_type(connection)}" for f in fields) + ")"
        aliases = ", ".join(_column(field) for field in fields)
        refs = [f'"v".{_column(field)}' for field in fields]
        source = f'AS "v" ({aliases})'
    else:  # SQLite names VALUES columns column1, column2, ...
        one_row = "(" + ", ".join(["%s"] * len(fields)) + ")"
        refs = [f'"v"."column{i + 1}"' for i in range(len(fields))]
        source = 'AS "v"'
    assignments = ", ".join(
        f"{_column(field)} = {ref}" for field, ref in zip(fields[1:], refs[1:], strict=True)
    )
    guards = "".join(
        f" AND {table}.{_column(model_field(model, name))} = %s" for name in where or {}
    )
    per_statement = max(1, MAX_PARAMS // len(fields))
    suffix = f" RETURNING {table}.{_column(fields[0])}" if returning else ""
    updated, keys = 0, []
    with connection.cursor() as cursor:
        for start in range(0, len(rows), per_statement):
            chunk = rows[start : start + per_statement]
            params = [
                prep(value) for row in chunk for prep, value in zip(prepare, row, strict=True)
            ]
            values = ", ".join([one_row] * len(chunk))
            cursor.execute(
                f"UPDATE {table} SET {assignments} FROM (VALUES {values})"
                f" {source} WHERE {table}.{_column(fields[0])} = {refs[0]}{guards}{suffix}",
                [*params, *(where or {}).values()],
            )
            updated += cursor.rowcount
            if returning:
                keys += [row[0] for row in cursor.fetchall()]
    return updated, keys


class AnyOf(Lookup):
    """`column = ANY(%s)` with the values as one array parameter, cast to the column's type.

    For the batch reads of the fan-out and routing (a thousand user ids): the ORM's `__in`
    prepares and binds each value on its own, which cost more than the query. Used as a filter
    expression (`filter(any_of("user_id", ids))`), never registered on fields (the host's
    models are left alone). Elsewhere than PostgreSQL it is `IN`."""

    lookup_name = "any_of"
    prepare_rhs = False

    def get_db_prep_lookup(self, value: Any, connection: Any) -> tuple[str, list[Any]]:
        return "%s", [value]

    def as_sql(self, compiler: Any, connection: Any) -> tuple[str, list[Any]]:
        if connection.vendor != "postgresql":
            sql, params = In(self.lhs, self.rhs).as_sql(compiler, connection)
            return sql, list(params)
        lhs_sql, lhs_params = self.process_lhs(compiler, connection)
        array_type = self.lhs.output_field.cast_db_type(connection)
        return f"{lhs_sql} = ANY(%s::{array_type}[])", [*lhs_params, self.rhs]


def any_of(name: str, values: Iterable[Any]) -> AnyOf:
    """A filter: the field `name` (lookups through relations allowed) is one of `values`."""
    return AnyOf(F(name), list(values))


def _copy_escaped(text: str) -> str:
    if "\\" in text or "\t" in text or "\n" in text or "\r" in text:
        return (
            text.replace("\\", "\\\\")
            .replace("\t", "\\t")
            .replace("\n", "\\n")
            .replace("\r", "\\r")
        )
    return text


def _copy_text(value: Any) -> str:
    """One value in COPY's text format: NULL as \\N, and backslash, tab and newlines escaped."""
    kind = type(value)  # exact types first: this runs for every value of every fan-out row
    if kind is str:
        return _copy_escaped(value)
    if kind is int:
        return str(value)
    if value is None:
        return "\\N"
    if kind is bool:
        return "t" if value else "f"
    if isinstance(value, (dict, list)):
        value = json_text(value)
    elif isinstance(value, datetime):
        value = value.isoformat()
    return _copy_escaped(str(value))


def json_text(value: Any) -> str:
    """Compact JSON text of a value for a jsonb column (jsonb stores the same value whatever the
    spacing): by orjson, several times faster than the standard library on a fan-out's rows;
    what orjson refuses (an integer beyond 64 bits) by the standard library, which takes it."""
    try:
        return orjson.dumps(value, option=orjson.OPT_NON_STR_KEYS).decode()
    except orjson.JSONEncodeError:
        return json.dumps(value, separators=(",", ":"))


def _copy_json(value: Any) -> str:
    kind = type(value)
    if kind is dict or kind is list:
        # JSON text has no raw tab or newline (both are escaped): only backslashes to double.
        return json_text(value).replace("\\", "\\\\")
    return _copy_text(value)


def _copy_str(value: Any) -> str:
    return _copy_escaped(value) if type(value) is str else _copy_text(value)


def _copy_int(value: Any) -> str:
    return str(value) if type(value) is int else _copy_text(value)


def _copy_datetime(value: Any) -> str:
    # isoformat() never has a character COPY must escape.
    return value.isoformat() if type(value) is datetime else _copy_text(value)


def _keeping_last(encode: Callable[[Any], str]) -> Callable[[Any], str]:
    """`encode` for one COPY's column, keeping the text of the last value it was given: a
    batch's rows mostly share one moment (created, updated, routed...) and often one JSON value
    (the campaign's context, an event's detail). By identity, so a value is never mistaken for
    another that merely compares equal (1 and True, 0.0 and -0.0)."""
    last: list[Any] = [None, "\\N"]  # None at first, written \N

    def keep(value: Any) -> str:
        if value is not last[0]:
            last[0], last[1] = value, encode(value)
        return str(last[1])

    return keep


def _copy_encoder(field: models.Field[Any, Any]) -> Callable[[Any], str]:
    """How a column's values go into COPY's text: the type the column usually holds first
    (one call per value), anything else the general way (`_copy_text`)."""
    if isinstance(field, models.JSONField):
        return _keeping_last(_copy_json)
    if isinstance(field, models.DateTimeField):
        return _keeping_last(_copy_datetime)
    if isinstance(field, models.CharField | models.TextField):
        return _copy_str
    if isinstance(field, models.IntegerField | models.ForeignKey):
        return _copy_int  # a foreign key to a text or UUID key falls through to _copy_text
    return _copy_text


def commit_without_waiting() -> None:
    """Inside a transaction: let its COMMIT return before the WAL reaches the disk.

    For the small writes made once per provider call (a send's record, the sandbox's ledger
    row): the commit is visible to every other session at once, as usual, so a killed worker
    loses nothing; only a crash of PostgreSQL itself can lose the last fraction of a second of
    them (three `wal_writer_delay`s, 0.6 s by default). A disk flush per send would otherwise
    bound a process to a few hundred sends a second. Transaction-scoped: pooler-safe."""
    if connection.vendor == "postgresql":
        with connection.cursor() as cursor:
            cursor.execute(NO_WAIT)


# Prefixed to a statement run on its own (autocommit), it makes that statement's implicit
# transaction commit without waiting, in the same round trip.
NO_WAIT = "SET LOCAL synchronous_commit TO OFF; "


ANALYZE_LOCK_SPACE = 0x414E_4C5A  # "ANLZ": advisory lock keys of statistics_refresh, by table
THROTTLE_LOCK_SPACE = 0x5448_524F  # "THRO": advisory lock keys of a throttle's counting, by key


def advisory_locks_take(space: int, names: Iterable[str]) -> None:
    """Inside a transaction on PostgreSQL: wait for the transaction-level advisory lock of each
    name in `space` (by its hashtext), in sorted order so that two transactions wanting some
    of the same names never deadlock. Released at commit or rollback. Elsewhere nothing: a
    SQLite database has one writer at a time anyway."""
    wanted = sorted(set(names))
    if not wanted or connection.vendor != "postgresql":
        return
    with connection.cursor() as cursor:
        cursor.execute(
            "SELECT count(pg_advisory_xact_lock(%s, hashtext(name))) "
            "FROM (SELECT unnest(%s::text[]) AS name ORDER BY 1) AS names",
            [space, wanted],
        )


def statistics_refresh(
    *tables: type[models.Model], share: float = 0.1, minimum: int = 10_000
) -> list[str]:
    """ANALYZE each model's table now if more of its rows changed since the last analyze than
    autovacuum waits for (`share` of them, and at least `minimum`): before a job whose plans
    depend on how common a value is, right after a bulk change (a million people tagged at
    once) that autovacuum has not caught up with, or while a job grows a table from nearly
    empty (a first campaign's deliveries). Returns the tables analyzed (PostgreSQL only; one
    look at the statistics for all of them).

    Never waits: if another process holds a table for VACUUM or ANALYZE, or another worker is
    refreshing it, it is left to them.
    """
    if connection.vendor != "postgresql" or not tables:
        return []
    names = [table_name(model) for model in tables]
    # Only tables this role may analyze (it owns them): another's ANALYZE of them would only
    # warn and leave the counters as they were, to be tried again before every batch.
    changed_sql = (
        "SELECT s.relname, s.n_mod_since_analyze, s.n_live_tup FROM pg_stat_user_tables s "
        "JOIN pg_class c ON c.oid = s.relid "
        "WHERE s.relid = ANY(%s::regclass[]) AND pg_has_role(c.relowner, 'USAGE')"
    )

    def due_among(candidates: list[str]) -> list[str]:
        cursor.execute(changed_sql, [candidates])
        return [
            name
            for name, changed, live in cursor.fetchall()
            if changed >= max(minimum, share * live)
        ]

    with connection.cursor() as cursor:
        due = due_among(names)
        if not due:
            return []
        cursor.execute("SELECT current_setting('lock_timeout')")
        setting = cursor.fetchone()
        analyzed = []
        for table in sorted(due):
            try:
                with transaction.atomic():  # a savepoint: its rollback undoes the setting too
                    # Two workers finding the same table due: one analyzes, the other goes on.
                    cursor.execute(
                        "SELECT pg_try_advisory_xact_lock(%s, hashtext(%s))",
                        [ANALYZE_LOCK_SPACE, table],
                    )
                    if not cursor.fetchone()[0]:
                        continue
                    # Another worker may have analyzed it since we looked (and let go).
                    cursor.execute("SELECT pg_stat_clear_snapshot()")
                    if not due_among([connection.ops.quote_name(table)]):
                        continue
                    cursor.execute("SELECT set_config('lock_timeout', '100ms', true)")
                    cursor.execute(f"ANALYZE {connection.ops.quote_name(table)}")
                    cursor.execute(
                        "SELECT set_config('lock_timeout', %s, true)",
                        [setting[0] if setting else "0"],
                    )
            except OperationalError:  # a VACUUM or ANALYZE of it is running: it is theirs
                continue
            analyzed.append(table)
    return analyzed


def next_ids(model: type[models.Model], count: int) -> list[int]:
    """Draw `count` ids from the table's sequence (PostgreSQL), for rows written later by COPY:
    rows that point at each other (a message and its deliveries) can be built before either
    is written."""
    with connection.cursor() as cursor:
        cursor.execute(
            "SELECT nextval(pg_get_serial_sequence(%s, 'id')) FROM generate_series(1, %s)",
            [model._meta.db_table, count],
        )
        return [row[0] for row in cursor.fetchall()]


def copy_rows(
    model: type[models.Model],
    names: Sequence[str],
    rows: Sequence[Sequence[Any]],
    *,
    with_ids: bool = False,
    ids: Sequence[int] | None = None,
) -> list[int]:
    """Write rows with PostgreSQL's COPY: several times faster than a multi-row INSERT on the
    fan-out path. No ON CONFLICT: a conflict fails the whole COPY, so use it where none can
    happen or where the caller starts over on IntegrityError. With `with_ids`, ids are drawn
    from the table's sequence first and returned in row order; `ids` gives them instead (see
    `next_ids`). Elsewhere than PostgreSQL, it is insert_rows."""
    if not rows:
        return []
    if connection.vendor != "postgresql":
        if ids is not None:
            names, rows = ("id", *names), [(pk, *row) for pk, row in zip(ids, rows, strict=True)]
        returned = insert_rows(model, names, rows, returning=("id",) if with_ids else ())
        return list(ids) if ids is not None else sorted(row[0] for row in returned)
    fields = [model_field(model, name) for name in names]
    given = {field.attname for field in fields}
    # Columns the caller leaves out get what the ORM would give them (as in `with_defaults`):
    # a constant default is encoded once for every row, a callable one per row.
    defaulted = [
        f
        for f in model._meta.concrete_fields
        if f.attname not in given and not f.primary_key and f.has_default()
    ]
    # `dict` and `list` make a new empty value per row, always written the same way.
    constant = [f for f in defaulted if not callable(f.default) or f.default in (dict, list)]
    per_row = [f for f in defaulted if f not in constant]
    table = model._meta.db_table
    columns = [f.get_attname_column()[1] for f in (*fields, *constant, *per_row)]
    if with_ids and ids is None:
        ids = next_ids(model, len(rows))
    encoders = [_copy_encoder(field) for field in fields]
    tail = "".join("\t" + _copy_encoder(f)(f.get_default()) for f in constant)
    row_defaults = [_copy_encoder(f) for f in per_row]
    lines = [
        "\t".join([encode(value) for encode, value in zip(encoders, row, strict=True)]) + tail
        for row in rows
    ]
    if per_row:
        lines = [
            line
            + "".join(
                "\t" + encode(f.get_default())
                for f, encode in zip(per_row, row_defaults, strict=True)
            )
            for line in lines
        ]
    if ids is not None:
        columns = ["id", *columns]
        lines = [f"{pk}\t{line}" for pk, line in zip(ids, lines, strict=True)]
    lines.append("")
    buffer = io.StringIO("\n".join(lines))
    quoted = ", ".join(connection.ops.quote_name(c) for c in columns)
    # The raw cursor's errors are psycopg2's: wrapped, they are Django's (IntegrityError, ...).
    with connection.cursor() as cursor, connection.wrap_database_errors:
        cursor.cursor.copy_expert(
            f"COPY {connection.ops.quote_name(table)} ({quoted}) FROM STDIN", buffer
        )
    return list(ids or [])


# --- Rows Python cannot read ------------------------------------------------------------------

# What reading a stored value can raise in the driver or the field's decoding, though the
# database holds it fine: psycopg2 turns a timestamp past 9999-12-31 into a datetime (ValueError:
# "year 10000 is out of range"), and Django decodes a JSON column with json.loads
# (RecursionError when it is nested about a thousand deep). Client-side only: the transaction
# is untouched, so the caller may go on reading after one.
UNREADABLE_ERRORS: tuple[type[Exception], ...] = (ValueError, OverflowError, RecursionError)

R = TypeVar("R")


def readable(queryset: QuerySet[Any, R]) -> tuple[list[R], list[Any]]:
    """The rows of `queryset` (instances, or values_list tuples), and the primary keys of those
    that cannot be read.

    One query when every row reads (the hot path). When one does not, the keys are read first
    (always readable) and then the rows one at a time, so a bad row costs only itself. Row
    locks (`select_for_update`) taken by the first query stay held by the transaction.
    """
    try:
        return list(queryset), []
    except UNREADABLE_ERRORS:
        pass
    rows: list[R] = []
    unreadable: list[Any] = []
    for pk in list(queryset.values_list("pk", flat=True)):
        try:
            rows.extend(queryset.filter(pk=pk))
        except UNREADABLE_ERRORS:
            unreadable.append(pk)
    return rows, unreadable


def unreadable_columns(
    model: type[models.Model], pk: Any, names: Sequence[str] | None = None
) -> dict[str, Exception]:
    """Which of a row's fields (all its concrete fields by default) cannot be read, and why:
    each is read alone."""
    fields = names or [f.name for f in model._meta.concrete_fields if not f.primary_key]
    found: dict[str, Exception] = {}
    for name in fields:
        try:
            list(model._default_manager.filter(pk=pk).values_list(name))
        except UNREADABLE_ERRORS as exc:
            found[name] = exc
    return found


def unreadable_words(field: models.Field[Any, Any], error: Exception) -> str:
    """Why a stored value cannot be read, in words for support staff ("is out of range")."""
    if isinstance(error, RecursionError):
        return "is nested too deeply to read"
    if isinstance(field, models.DateField | models.DateTimeField | models.TimeField):
        return "is out of range"
    if isinstance(field, models.JSONField):
        return "is not valid JSON"
    return f"cannot be read ({type(error).__name__})"
