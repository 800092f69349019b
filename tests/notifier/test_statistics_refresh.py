"""`statistics_refresh`: a walk's first batch analyzes the profiles when a bulk change has left
the planner's statistics behind (PostgreSQL's own counters say how many rows changed since
the last analyze), and never waits behind a VACUUM or ANALYZE that holds the table."""

from __future__ import annotations

import threading
import uuid
from collections.abc import Iterator
from contextlib import contextmanager

import pytest
from django.db import connection, connections, transaction

from notifier.db import ANALYZE_LOCK_SPACE, statistics_refresh
from notifier.models import Recipient, recipients_for
from tests.factories import UserFactory

pytestmark = pytest.mark.django_db(transaction=True)


def flushed() -> None:
    """This session's own counts sent to the statistics (they go when it is next idle)."""
    with connection.cursor() as cursor:
        cursor.execute("SELECT pg_stat_force_next_flush()")
        cursor.execute("SELECT 1")


def analyzed() -> None:
    flushed()
    with connection.cursor() as cursor:
        cursor.execute("ANALYZE notifier_recipient")


def changed_since_analyze() -> int:
    """Rows of the profile table changed since its last analyze, as the statistics know it."""
    flushed()
    with connection.cursor() as cursor:
        cursor.execute(
            "SELECT n_mod_since_analyze FROM pg_stat_user_tables "
            "WHERE relid = 'notifier_recipient'::regclass"
        )
        return int(cursor.fetchone()[0])


def tagged_everyone(tag: str) -> None:
    with connection.cursor() as cursor:
        cursor.execute(
            "UPDATE notifier_recipient SET interest_tags = interest_tags || %s::jsonb",
            [f'["{tag}"]'],
        )


@contextmanager
def held_by_another_session(statement: str, params: list[object]) -> Iterator[None]:
    """While the block runs, another session holds what `statement` takes, in a transaction
    left open until the block is over."""
    holding, release = threading.Event(), threading.Event()

    def hold() -> None:
        other = connections.create_connection("default")
        try:
            with other.cursor() as cursor:
                cursor.execute("BEGIN")
                cursor.execute(statement, params)
                holding.set()
                release.wait(timeout=10)
                cursor.execute("ROLLBACK")
        finally:
            other.close()

    holder = threading.Thread(target=hold)
    holder.start()
    try:
        assert holding.wait(timeout=10)
        yield
    finally:
        release.set()
        holder.join(timeout=10)


def test_a_bulk_change_is_analyzed_and_a_quiet_table_is_not():
    users = UserFactory.create_batch(30)
    recipients_for(u.pk for u in users)
    analyzed()
    assert changed_since_analyze() == 0
    assert statistics_refresh(Recipient, minimum=20) == []

    tagged_everyone("fans")  # every profile, at once
    assert changed_since_analyze() >= 30
    assert statistics_refresh(Recipient, minimum=20) == ["notifier_recipient"]
    assert changed_since_analyze() == 0
    # The planner now knows everyone has the tag.
    with connection.cursor() as cursor:
        cursor.execute("EXPLAIN SELECT id FROM notifier_recipient WHERE interest_tags ? 'fans'")
        plan = cursor.fetchone()[0]
    assert "rows=30 " in plan or "rows=30)" in plan, plan


def test_a_few_changes_leave_the_statistics_to_autovacuum():
    users = UserFactory.create_batch(30)
    recipients_for(u.pk for u in users)
    analyzed()
    with connection.cursor() as cursor:
        cursor.execute(
            "UPDATE notifier_recipient SET locale = 'en' WHERE user_id = %s", [users[0].pk]
        )
    assert changed_since_analyze() == 1
    assert statistics_refresh(Recipient, minimum=20) == []
    assert changed_since_analyze() == 1


def test_a_table_held_by_another_analyze_is_left_to_it_without_waiting():
    users = UserFactory.create_batch(30)
    recipients_for(u.pk for u in users)
    tagged_everyone("fans")
    assert changed_since_analyze() >= 30
    # What a VACUUM or ANALYZE of the table holds, while a walk's transaction refreshes.
    with (
        held_by_another_session("LOCK TABLE notifier_recipient IN SHARE UPDATE EXCLUSIVE MODE", []),
        transaction.atomic(),
    ):
        assert statistics_refresh(Recipient, minimum=20) == []
        with connection.cursor() as cursor:  # the transaction goes on, as it was set
            cursor.execute("SHOW lock_timeout")
            assert cursor.fetchone()[0] == "0"
            cursor.execute("SELECT count(*) FROM notifier_recipient")
            assert cursor.fetchone()[0] == 30
    assert changed_since_analyze() >= 30


def test_a_table_another_worker_is_refreshing_is_left_to_it():
    """Two workers finding the same table due: the one holding the refresh's advisory lock
    analyzes it, the other goes on at once."""
    users = UserFactory.create_batch(30)
    recipients_for(u.pk for u in users)
    tagged_everyone("fans")
    # Another worker, inside its refresh of the table.
    with held_by_another_session(
        "SELECT pg_advisory_xact_lock(%s, hashtext('notifier_recipient'))", [ANALYZE_LOCK_SPACE]
    ):
        assert statistics_refresh(Recipient, minimum=20) == []
    assert changed_since_analyze() >= 30
    assert statistics_refresh(Recipient, minimum=20) == ["notifier_recipient"]


def test_a_table_this_role_does_not_own_is_left_alone():
    """ANALYZE of a table the role does not own only warns and leaves the counters as they
    were: looked at before every batch, it would be tried again every time. Such tables are
    left to autovacuum (and their owner)."""
    users = UserFactory.create_batch(30)
    recipients_for(u.pk for u in users)
    tagged_everyone("fans")
    assert changed_since_analyze() >= 30
    role = f"notifier_stats_reader_{uuid.uuid4().hex[:8]}"
    with transaction.atomic(), connection.cursor() as cursor:
        cursor.execute(f"CREATE ROLE {role} NOLOGIN")  # rolled back below
        cursor.execute(f"SET LOCAL ROLE {role}")
        assert statistics_refresh(Recipient, minimum=20) == []
        cursor.execute("RESET ROLE")
        transaction.set_rollback(True)
    assert changed_since_analyze() >= 30
    assert statistics_refresh(Recipient, minimum=20) == ["notifier_recipient"]
