"""Fewer and narrower indexes on the tables every recipient writes (issue 15).

Built and dropped without locking writers out: on PostgreSQL each index is created with
CREATE INDEX CONCURRENTLY before the one it replaces is dropped with DROP INDEX CONCURRENTLY, so
the migration is not atomic (neither may run in a transaction). Each statement waits for the
transactions already running on its table, not for new ones. Run again after it stopped half
way, it keeps what it built and rebuilds an index left invalid. Elsewhere (SQLite) the plain
statements run.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import django.db.models.deletion
from django.conf import settings
from django.db import migrations, models
from django.db.backends.base.schema import BaseDatabaseSchemaEditor
from django.db.migrations.state import ProjectState


def _postgresql(schema_editor: BaseDatabaseSchemaEditor) -> bool:
    return schema_editor.connection.vendor == "postgresql"


def _valid(schema_editor: BaseDatabaseSchemaEditor, name: str) -> bool | None:
    """Whether the index is there and valid; False for one a CONCURRENTLY build left invalid
    (cancelled, a deadlock, a lost connection), None for none."""
    with schema_editor.connection.cursor() as cursor:
        cursor.execute(
            "SELECT i.indisvalid FROM pg_class c JOIN pg_index i ON i.indexrelid = c.oid "
            "WHERE c.relname = %s AND pg_table_is_visible(c.oid)",
            [name],
        )
        row = cursor.fetchone()
    return None if row is None else bool(row[0])


def _create(
    schema_editor: BaseDatabaseSchemaEditor, model: type[models.Model], index: models.Index
) -> None:
    """CREATE INDEX CONCURRENTLY, safe to run again after a migration that stopped half way
    (not atomic, it is not recorded as applied): a valid index is kept, an invalid one rebuilt."""
    if not _postgresql(schema_editor):
        schema_editor.add_index(model, index)
        return
    valid = _valid(schema_editor, index.name)
    if valid is False:
        schema_editor.execute(
            f"DROP INDEX CONCURRENTLY IF EXISTS {schema_editor.quote_name(index.name)}"
        )
    if not valid:
        schema_editor.add_index(model, index, concurrently=True)  # type: ignore[call-arg]


def _drop(
    schema_editor: BaseDatabaseSchemaEditor, model: type[models.Model], index: models.Index
) -> None:
    """DROP INDEX CONCURRENTLY IF EXISTS (plain DROP INDEX IF EXISTS elsewhere)."""
    if _postgresql(schema_editor):
        schema_editor.remove_index(model, index, concurrently=True)  # type: ignore[call-arg]
    else:
        schema_editor.remove_index(model, index)


class AddIndexLive(migrations.AddIndex):
    """An index built without blocking writes (CONCURRENTLY on PostgreSQL)."""

    def database_forwards(
        self,
        app_label: str,
        schema_editor: BaseDatabaseSchemaEditor,
        from_state: ProjectState,
        to_state: ProjectState,
    ) -> None:
        model = to_state.apps.get_model(app_label, self.model_name)
        if self.allow_migrate_model(schema_editor.connection.alias, model):
            _create(schema_editor, model, self.index)

    def database_backwards(
        self,
        app_label: str,
        schema_editor: BaseDatabaseSchemaEditor,
        from_state: ProjectState,
        to_state: ProjectState,
    ) -> None:
        model = from_state.apps.get_model(app_label, self.model_name)
        if self.allow_migrate_model(schema_editor.connection.alias, model):
            _drop(schema_editor, model, self.index)


class RemoveIndexLive(migrations.RemoveIndex):
    """An index dropped without blocking reads or writes (CONCURRENTLY on PostgreSQL)."""

    def database_forwards(
        self,
        app_label: str,
        schema_editor: BaseDatabaseSchemaEditor,
        from_state: ProjectState,
        to_state: ProjectState,
    ) -> None:
        model = from_state.apps.get_model(app_label, self.model_name)
        if self.allow_migrate_model(schema_editor.connection.alias, model):
            index = from_state.models[app_label, self.model_name_lower].get_index_by_name(
                self.name
            )
            _drop(schema_editor, model, index)

    def database_backwards(
        self,
        app_label: str,
        schema_editor: BaseDatabaseSchemaEditor,
        from_state: ProjectState,
        to_state: ProjectState,
    ) -> None:
        model = to_state.apps.get_model(app_label, self.model_name)
        if self.allow_migrate_model(schema_editor.connection.alias, model):
            index = to_state.models[app_label, self.model_name_lower].get_index_by_name(self.name)
            _create(schema_editor, model, index)


class DropForeignKeyIndex(migrations.AlterField):
    """A foreign key's own index dropped (db_index=False), CONCURRENTLY on PostgreSQL.

    Django's AlterField would drop it inside a transaction, holding an ACCESS EXCLUSIVE lock on
    the table meanwhile; the constraint itself stays as it is. The index is named as Django named
    it when it made it (a digest of table and column: the same in every deployment); backwards,
    it is built again under that name."""

    def __init__(self, *, index_name: str, **kwargs: Any) -> None:
        self.index_name = index_name
        super().__init__(**kwargs)

    def deconstruct(self) -> tuple[str, Sequence[Any], dict[str, Any]]:
        name, args, kwargs = super().deconstruct()
        return name, args, {**kwargs, "index_name": self.index_name}

    def _index(self) -> models.Index:
        return models.Index(fields=[self.name], name=self.index_name)

    def database_forwards(
        self,
        app_label: str,
        schema_editor: BaseDatabaseSchemaEditor,
        from_state: ProjectState,
        to_state: ProjectState,
    ) -> None:
        model = from_state.apps.get_model(app_label, self.model_name)
        if self.allow_migrate_model(schema_editor.connection.alias, model):
            _drop(schema_editor, model, self._index())

    def database_backwards(
        self,
        app_label: str,
        schema_editor: BaseDatabaseSchemaEditor,
        from_state: ProjectState,
        to_state: ProjectState,
    ) -> None:
        model = to_state.apps.get_model(app_label, self.model_name)
        if self.allow_migrate_model(schema_editor.connection.alias, model):
            _create(schema_editor, model, self._index())


class Migration(migrations.Migration):
    atomic = False  # CREATE/DROP INDEX CONCURRENTLY may not run in a transaction

    dependencies = [
        ("campaigns", "0017_campaign_seed_list"),
        ("notifier", "0032_support_actions"),
    ]

    # Each new index is built before the one it replaces goes, so no query is ever without one.
    operations = [
        AddIndexLive(
            model_name="message",
            index=models.Index(
                condition=models.Q(("campaign__isnull", False)),
                fields=["campaign"],
                name="message_campaign_idx",
            ),
        ),
        DropForeignKeyIndex(
            index_name="notifier_message_campaign_id_0b1090cb",
            model_name="message",
            name="campaign",
            field=models.ForeignKey(
                blank=True,
                db_index=False,
                null=True,
                on_delete=django.db.models.deletion.SET_NULL,
                related_name="messages",
                to="campaigns.campaign",
            ),
        ),
        AddIndexLive(
            model_name="message",
            index=models.Index(
                condition=models.Q(("step__isnull", False)),
                fields=["step"],
                name="message_step_idx",
            ),
        ),
        DropForeignKeyIndex(
            index_name="notifier_message_step_id_c050a5af",
            model_name="message",
            name="step",
            field=models.ForeignKey(
                blank=True,
                db_index=False,
                null=True,
                on_delete=django.db.models.deletion.SET_NULL,
                related_name="messages",
                to="campaigns.campaignstep",
            ),
        ),
        AddIndexLive(
            model_name="message",
            index=models.Index(
                condition=models.Q(("variant__isnull", False)),
                fields=["variant"],
                name="message_variant_idx",
            ),
        ),
        DropForeignKeyIndex(
            index_name="notifier_message_variant_id_9e7b21f6",
            model_name="message",
            name="variant",
            field=models.ForeignKey(
                blank=True,
                db_index=False,
                null=True,
                on_delete=django.db.models.deletion.SET_NULL,
                related_name="messages",
                to="campaigns.stepvariant",
            ),
        ),
        AddIndexLive(
            model_name="delivery",
            index=models.Index(
                condition=models.Q(("fallback_of__isnull", False)),
                fields=["fallback_of"],
                name="delivery_fallback_of_idx",
            ),
        ),
        DropForeignKeyIndex(
            index_name="notifier_delivery_fallback_of_id_3ce3ad81",
            model_name="delivery",
            name="fallback_of",
            field=models.ForeignKey(
                blank=True,
                db_index=False,
                help_text="The delivery on another channel this one stands in for",
                null=True,
                on_delete=django.db.models.deletion.SET_NULL,
                related_name="fallbacks",
                to="notifier.delivery",
            ),
        ),
        AddIndexLive(
            model_name="inboxitem",
            index=models.Index(fields=["user", "-created_at", "-id"], name="inbox_user_created_idx"),
        ),
        AddIndexLive(
            model_name="inboxitem",
            index=models.Index(
                condition=models.Q(("feedback", "irrelevant")),
                fields=["user", "feedback_at"],
                name="inbox_irrelevant_idx",
            ),
        ),
        RemoveIndexLive(model_name="inboxitem", name="inbox_user_listing_idx"),
        DropForeignKeyIndex(
            index_name="notifier_inboxitem_user_id_13f2acf0",
            model_name="inboxitem",
            name="user",
            field=models.ForeignKey(
                db_index=False,
                on_delete=django.db.models.deletion.CASCADE,
                related_name="inbox_items",
                to=settings.AUTH_USER_MODEL,
            ),
        ),
        DropForeignKeyIndex(
            index_name="notifier_frequencycounter_user_id_58656952",
            model_name="frequencycounter",
            name="user",
            field=models.ForeignKey(
                db_index=False,
                on_delete=django.db.models.deletion.CASCADE,
                to=settings.AUTH_USER_MODEL,
            ),
        ),
    ]
