"""Every installed model with a field that may hold a person's data is declared to erasure:
either as a personal table (its rows deleted, or each such field emptied or kept with a reason)
or as holding nothing personal. A model added later without a declaration fails here."""

from __future__ import annotations

from collections.abc import Iterable, Mapping

from django.apps import apps
from django.conf import settings
from django.db import models

from notifier.services.erasure import NOT_PERSONAL, PersonalTable, personal_tables

# Short codes (a channel, a status, a provider's name) are not where people are written.
LONG_TEXT = 100


def may_hold_personal_data(field: models.Field) -> bool:
    """A link to the user, free text, JSON, an address: anything a person could be in."""
    if field.many_to_one or field.one_to_one:
        related = field.related_model
        return related is not None and related._meta.label == settings.AUTH_USER_MODEL
    if isinstance(field, (models.TextField, models.JSONField, models.GenericIPAddressField)):
        return True
    if isinstance(field, (models.EmailField, models.URLField)):
        return True
    return isinstance(field, models.CharField) and (field.max_length or 0) >= LONG_TEXT


def personal_fields(model: type[models.Model]) -> list[str]:
    return [f.name for f in model._meta.concrete_fields if may_hold_personal_data(f)]


def undeclared(
    installed: Iterable[type[models.Model]],
    tables: Iterable[PersonalTable],
    not_personal: Mapping[str, str],
) -> list[str]:
    """What erasure does not cover: models with such fields declared nowhere, and fields of
    kept tables neither emptied nor kept with a reason."""
    declared = {table.model: table for table in tables}
    problems = []
    for model in installed:
        if model._meta.proxy:
            continue  # the same rows as its concrete model
        label, fields = model._meta.label, personal_fields(model)
        if not fields or label in not_personal:
            continue
        table = declared.get(label)
        if table is None:
            problems.append(f"{label} ({', '.join(fields)}) is declared nowhere")
        elif not table.delete and "*" not in table.keep:
            missing = [f for f in fields if f not in table.blank and f not in table.keep]
            if missing:
                problems.append(f"{label}: say what erasure does with {', '.join(missing)}")
    return problems


def test_every_model_that_may_hold_personal_data_is_covered():
    problems = undeclared(apps.get_models(), personal_tables(), NOT_PERSONAL)
    assert not problems, (
        "declare these in notifier.services.erasure (PERSONAL_TABLES or NOT_PERSONAL; an "
        "app's own tables through personal_tables_register):\n" + "\n".join(problems)
    )


def test_every_declaration_names_a_real_model_and_fields():
    installed = {m._meta.label: m for m in apps.get_models(include_auto_created=True)}
    for table in personal_tables():
        model = installed[table.model]
        names = {f.name for f in model._meta.concrete_fields}
        for name in [*table.blank, *table.keep]:
            assert name == "*" or name in names, f"{table.model} has no field {name}"
        assert table.delete or table.blank or table.keep, table.model
    assert set(NOT_PERSONAL) <= set(installed)
    both = set(NOT_PERSONAL) & {table.model for table in personal_tables()}
    assert not both, f"declared personal and not personal: {both}"


def test_the_check_finds_a_model_left_out_and_a_field_left_undeclared():
    """The check itself works: it fails for a table dropped from the registry, for a kept table
    with a field nobody decided on, and for a new model with a user link."""
    tables = [t for t in personal_tables() if t.model != "notifier.Device"]
    assert undeclared(apps.get_models(), tables, NOT_PERSONAL) == [
        "notifier.Device (user, token, web_push_keys, deactivation_reason) is declared nowhere"
    ]
    tables = [
        PersonalTable(t.model, t.rows, blank={"context": {}})
        if t.model == "notifier.Message"
        else t
        for t in personal_tables()
    ]
    assert undeclared(apps.get_models(), tables, NOT_PERSONAL) == [
        "notifier.Message: say what erasure does with user, channels, fallback_chain, "
        "digest_key, throttle_key, cancel_key, idempotency_key"
    ]

    class Note(models.Model):
        author = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.CASCADE)
        text = models.CharField(max_length=20)

        class Meta:
            app_label = "notifier"

        def __str__(self) -> str:
            return self.text

    try:
        assert undeclared([Note], personal_tables(), NOT_PERSONAL) == [
            "notifier.Note (author) is declared nowhere"
        ]
    finally:
        apps.all_models["notifier"].pop("note", None)
        apps.clear_cache()
