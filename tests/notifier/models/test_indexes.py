"""The indexes of the tables every recipient writes: few, narrow, and still found by each
query that needs one (issue 15, migration 0033)."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import timedelta
from typing import Any

import pytest
from django.db import IntegrityError, connection
from django.db.migrations.executor import MigrationExecutor
from django.db.models import QuerySet
from django.utils import timezone

from channels.models import SandboxOutage
from notifier import selectors
from notifier.db import any_of
from notifier.models import Delivery, FrequencyCounter, InboxItem, Message

BEFORE = [("notifier", "0032_support_actions")]
TABLES = (
    "notifier_message",
    "notifier_delivery",
    "notifier_inboxitem",
    "notifier_frequencycounter",
)


def _indexes() -> dict[str, str]:
    """Index name -> definition, on the tables the change touched (PostgreSQL)."""
    with connection.cursor() as cursor:
        cursor.execute(
            "SELECT indexname, indexdef FROM pg_indexes WHERE tablename = ANY(%s)", [list(TABLES)]
        )
        return dict(cursor.fetchall())


def _invalid() -> list[str]:
    with connection.cursor() as cursor:
        cursor.execute("SELECT indexrelid::regclass::text FROM pg_index WHERE NOT indisvalid")
        return [name for (name,) in cursor.fetchall()]


def _latest() -> list[tuple[str, str]]:
    executor = MigrationExecutor(connection)
    return executor.loader.graph.leaf_nodes()


NEW = {
    "message_campaign_idx": "WHERE (campaign_id IS NOT NULL)",
    "message_step_idx": "WHERE (step_id IS NOT NULL)",
    "message_variant_idx": "WHERE (variant_id IS NOT NULL)",
    "delivery_fallback_of_idx": "WHERE (fallback_of_id IS NOT NULL)",
    "inbox_user_created_idx": "(user_id, created_at DESC, id DESC)",
    "inbox_irrelevant_idx": "WHERE ((feedback)::text = 'irrelevant'::text)",
}
OLD = (
    "notifier_message_campaign_id_0b1090cb",
    "notifier_message_step_id_c050a5af",
    "notifier_message_variant_id_9e7b21f6",
    "notifier_delivery_fallback_of_id_3ce3ad81",
    "notifier_inboxitem_user_id_13f2acf0",
    "inbox_user_listing_idx",
    "notifier_frequencycounter_user_id_58656952",
)


@pytest.mark.django_db(transaction=True)
def test_the_migration_swaps_the_indexes_both_ways_and_leaves_none_invalid():
    after = _indexes()
    for name, shape in NEW.items():
        assert shape in after[name], after[name]
    assert not set(OLD) & set(after)
    executor = MigrationExecutor(connection)
    try:
        executor.migrate(BEFORE)
        before = _indexes()
        assert set(OLD) <= set(before)
        assert not set(NEW) & set(before)
        assert "WHERE (archived_at IS NULL)" in before["inbox_user_listing_idx"]
    finally:
        executor = MigrationExecutor(connection)
        executor.loader.build_graph()
        executor.migrate(_latest())
    assert _indexes() == after
    assert _invalid() == []


@pytest.mark.django_db(transaction=True)
def test_the_migration_run_again_after_stopping_half_way_keeps_or_rebuilds_what_it_built():
    after = _indexes()
    executor = MigrationExecutor(connection)
    try:
        executor.migrate(BEFORE)
        with connection.cursor() as cursor:
            # Stopped after the first index was built ...
            cursor.execute(
                "CREATE INDEX message_campaign_idx ON notifier_message (campaign_id) "
                "WHERE campaign_id IS NOT NULL"
            )
            # ... and during the second: a CONCURRENTLY build that fails leaves an invalid
            # index behind under its name.
            SandboxOutage.objects.create(channel="sms", until=timezone.now())
            SandboxOutage.objects.create(channel="sms", until=timezone.now())
            with pytest.raises(IntegrityError):
                cursor.execute(
                    "CREATE UNIQUE INDEX CONCURRENTLY message_step_idx "
                    "ON notifier_channels_sandboxoutage (channel)"
                )
        assert _invalid() == ["message_step_idx"]
    finally:
        executor = MigrationExecutor(connection)
        executor.loader.build_graph()
        executor.migrate(_latest())
    assert _indexes() == after
    assert _invalid() == []


def _plan(sql: str, params: Sequence[Any] = ()) -> str:
    """The plan with sequential scans priced out: an index shows up if it can serve."""
    with connection.cursor() as cursor:
        cursor.execute("SET LOCAL enable_seqscan = off")
        cursor.execute("EXPLAIN " + sql, params)
        return "\n".join(row[0] for row in cursor.fetchall())


def _generic_plan(sql: str) -> str:
    """As a foreign-key check runs it: a prepared statement, planned once for any $1."""
    with connection.cursor() as cursor:
        cursor.execute("SET LOCAL enable_seqscan = off")
        cursor.execute("SET LOCAL plan_cache_mode = force_generic_plan")
        cursor.execute(f"PREPARE fk_check(bigint) AS {sql}")
        try:
            cursor.execute("EXPLAIN EXECUTE fk_check(1)")
            return "\n".join(row[0] for row in cursor.fetchall())
        finally:
            cursor.execute("DEALLOCATE fk_check")


def _uses_one_of(plan: str, indexes: Sequence[str]) -> bool:
    return any(index in plan for index in indexes)


def _orm_plan(qs: QuerySet[Any]) -> str:
    sql, params = qs.query.sql_with_params()
    return _plan(sql, params)


@pytest.mark.django_db
def test_lookups_by_campaign_step_or_variant_find_the_partial_indexes():
    assert "message_campaign_idx" in _orm_plan(Message.objects.filter(campaign_id=7))
    assert "message_campaign_idx" in _orm_plan(
        Delivery.objects.filter(message__campaign_id__in=[7, 8], status="queued")
    )
    assert "message_step_idx" in _orm_plan(Message.objects.filter(step_id=7, is_test=False))
    # Django's SET NULL when a campaign, step or variant is deleted, and PostgreSQL's own
    # foreign-key check on each deleted row.
    for column, index in (
        ("campaign_id", "message_campaign_idx"),
        ("step_id", "message_step_idx"),
        ("variant_id", "message_variant_idx"),
    ):
        assert index in _plan(
            f"UPDATE notifier_message SET {column} = NULL WHERE {column} IN (%s, %s)", [7, 8]
        )
        assert index in _generic_plan(
            f"SELECT 1 FROM ONLY notifier_message x WHERE $1 OPERATOR(pg_catalog.=) {column} "
            "FOR KEY SHARE OF x"
        )


@pytest.mark.django_db
def test_lookups_of_fallbacks_find_the_partial_index():
    assert "delivery_fallback_of_idx" in _orm_plan(Delivery.objects.filter(fallback_of__in=[7]))
    # Retention's SET NULL (an array parameter) and the foreign-key check.
    assert "delivery_fallback_of_idx" in _plan(
        "UPDATE notifier_delivery SET fallback_of_id = NULL "
        "WHERE fallback_of_id = ANY(%s) AND NOT (message_id = ANY(%s))",
        [[7, 8], [1]],
    )
    assert "delivery_fallback_of_idx" in _generic_plan(
        "SELECT 1 FROM ONLY notifier_delivery x WHERE $1 OPERATOR(pg_catalog.=) fallback_of_id "
        "FOR KEY SHARE OF x"
    )


@pytest.mark.django_db
def test_inbox_and_cap_lookups_by_user_find_an_index():
    since = timezone.now() - timedelta(days=30)
    assert "inbox_user_created_idx" in _orm_plan(selectors.inbox_items(user_id=7)[:21])
    assert "inbox_user_created_idx" in _orm_plan(
        selectors.inbox_items(user_id=7, archived=True)[:21]
    )
    # Two indexes can serve these, and on a nearly empty table their costs tie: the planner
    # picks either (the whole suite's statistics once made it pick the listing index).
    by_user = ("inbox_user_unread_idx", "inbox_user_created_idx", "inbox_irrelevant_idx")
    assert _uses_one_of(
        _orm_plan(
            InboxItem.objects.filter(user_id=7, read_at__isnull=True, archived_at__isnull=True)
        ),
        by_user,
    )
    assert _uses_one_of(
        _orm_plan(
            InboxItem.objects.filter(
                user_id__in=[7, 8], feedback="irrelevant", feedback_at__gte=since
            )
        ),
        by_user,
    )
    assert "inbox_user_created_idx" in _generic_plan(
        "SELECT 1 FROM ONLY notifier_inboxitem x WHERE $1 OPERATOR(pg_catalog.=) user_id "
        "FOR KEY SHARE OF x"
    )
    assert "frequency_counter_window" in _orm_plan(FrequencyCounter.objects.filter(user_id=7))
    assert "frequency_counter_window" in _generic_plan(
        "SELECT 1 FROM ONLY notifier_frequencycounter x WHERE $1 OPERATOR(pg_catalog.=) user_id "
        "FOR KEY SHARE OF x"
    )


@pytest.mark.django_db
def test_the_series_check_finds_a_batchs_clicks_in_the_partial_index_of_clicked_deliveries():
    """campaigns.series asks, for each fan-out batch, which of its users clicked: the index of
    clicked deliveries answers it without reading every delivery the users ever had."""
    plan = _orm_plan(
        Delivery.objects.filter(any_of("user", [7, 8]), clicked_at__isnull=False)
        .values_list("message_id", flat=True)
        .distinct()
    )
    assert "delivery_clicked_user_idx" in plan
