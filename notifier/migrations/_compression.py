"""Shared by migrations: store large values with LZ4 instead of PostgreSQL's default pglz.

A rendered marketing email is tens of KB of HTML per recipient, stored in the delivery's
content (and by the sandbox in its ledger). PostgreSQL compresses such values as it writes
them: pglz is its default, LZ4 (PostgreSQL 14 and later, when built with it) compresses and
reads back several times as fast for about the same size. Setting a column's compression
changes only how values written from then on are stored (no rewrite, a brief lock); old
values stay readable as they are. Where the server has no LZ4, and elsewhere than PostgreSQL,
nothing changes. (Modules starting with "_" are not migrations themselves.)
"""

from typing import Any

from django.db import migrations


def lz4_available(connection: Any) -> bool:
    """Whether this PostgreSQL server can store values with LZ4."""
    if connection.vendor != "postgresql":
        return False
    with connection.cursor() as cursor:
        cursor.execute(
            "SELECT 'lz4' = ANY(enumvals) FROM pg_settings "
            "WHERE name = 'default_toast_compression'"
        )
        row = cursor.fetchone()
    return bool(row and row[0])


# Every column the migrations store with LZ4 (notifier.0044, notifier_channels.0004), for the
# bench's comparison and the tests; each migration keeps its own list, as it was written.
LARGE_VALUE_COLUMNS: list[tuple[str, str, str]] = [
    ("notifier", "delivery", "content"),
    ("notifier", "message", "context"),
    ("notifier", "inboxitem", "body"),
    ("notifier_channels", "sandboxsend", "payload"),
]


def compression_set(
    connection: Any, apps: Any, columns: list[tuple[str, str, str]], method: str
) -> None:
    """Store the (app label, model, field) columns' values written from now on with `method`
    (`lz4`, `pglz` or `default`); `apps`: a migration's historical models, or the live ones."""
    quote = connection.ops.quote_name
    with connection.cursor() as cursor:
        for app_label, model_name, field_name in columns:
            model = apps.get_model(app_label, model_name)
            column = model._meta.get_field(field_name).column
            cursor.execute(
                f"ALTER TABLE {quote(model._meta.db_table)} "
                f"ALTER COLUMN {quote(column)} SET COMPRESSION {method}"
            )


def _set(columns: list[tuple[str, str, str]], method: str) -> Any:
    def run(apps: Any, schema_editor: Any) -> None:
        if lz4_available(schema_editor.connection):
            compression_set(schema_editor.connection, apps, columns, method)

    return run


def lz4_columns(columns: list[tuple[str, str, str]]) -> migrations.RunPython:
    """(app label, model, field) columns stored with LZ4 from now on; reversed, the default."""
    return migrations.RunPython(_set(columns, "lz4"), _set(columns, "default"))
