"""What PostgreSQL's planner and statistics say of a table, for tests of the statistics refresh."""

from __future__ import annotations

from django.db import connection


def planner_rows_and_changes(table: str) -> tuple[float, int]:
    """(rows the planner thinks the table has, rows changed since its last analyze), with this
    session's own counts sent to the statistics first."""
    with connection.cursor() as cursor:
        cursor.execute("SELECT pg_stat_force_next_flush()")
        cursor.execute(
            "SELECT c.reltuples, s.n_mod_since_analyze FROM pg_class c "
            "JOIN pg_stat_user_tables s ON s.relid = c.oid WHERE c.oid = %s::regclass",
            [table],
        )
        reltuples, changed = cursor.fetchone()
    return float(reltuples), int(changed)
