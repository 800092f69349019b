"""The keys of the project's users: whatever AUTH_USER_MODEL's primary key is, read strictly.

Notifier has no user id type of its own. A host's user model may be keyed by integers
(Django's default), by UUIDs or by text, and Notifier's tables point at it with foreign keys
of the same type. Every user id that comes from outside (notify()'s argument, a signed link,
the keys of a bulk call's contexts, a task's arguments) goes through `user_key`, which accepts
exactly what the key column stores and never coerces: with integer keys, "7" and 7.0 and True
are not user 7; with UUID keys, 7 is no user at all.

Anything Notifier keeps in columns of its own type (a campaign walk's cursor, a fan-out batch)
uses the recipient profile's integer id instead (`notifier.Recipient.pk`).
"""

from __future__ import annotations

import uuid
from typing import Any, TypeAlias, cast

from django.contrib.auth import get_user_model
from django.db import models
from django.db.backends.base.base import BaseDatabaseWrapper

from notifier.ids import MAX_ID, parse_id
from notifier.text import text_problem

# int, uuid.UUID or str: which one is a project setting (AUTH_USER_MODEL), known at run time
# only, and the foreign keys that hold it take their type from the same setting; so, to the
# type checker, any value. `user_key` is where a value is checked to be one.
UserKey: TypeAlias = Any


def user_key_field() -> models.Field[Any, Any]:
    """The field holding the user model's key (through multi-table inheritance's parent link
    to the field it points at)."""
    field: Any = get_user_model()._meta.pk
    while field.remote_field is not None and field.primary_key:
        field = field.target_field
    return cast("models.Field[Any, Any]", field)


def _integer_keys(field: models.Field[Any, Any]) -> bool:
    return isinstance(field, (models.IntegerField, models.AutoField))


def user_key(value: object) -> UserKey | None:
    """`value` as a key of the project's users, or None when it cannot be one."""
    field = user_key_field()
    kind = type(value)
    if _integer_keys(field):
        if kind is bool or not issubclass(kind, int):
            return None
        number = int.__index__(cast(int, value))
        return number if 0 < number <= MAX_ID else None
    if isinstance(field, models.UUIDField):
        if issubclass(kind, uuid.UUID):
            return cast(uuid.UUID, value)
        if not issubclass(kind, str) or len(cast(str, value)) > 45:  # "urn:uuid:" + 36
            return None
        try:
            return uuid.UUID(str.__str__(cast(str, value)))
        except ValueError:
            return None
    if issubclass(kind, str):
        text = str.__str__(cast(str, value))
        longest = getattr(field, "max_length", None) or 255
        return text if 0 < len(text) <= longest and not text_problem(text) else None
    return None


def user_key_from_text(text: str) -> UserKey | None:
    """A user key typed by a person (an admin box, a CSV cell): the text as the key (UUIDs,
    text keys), or the integer it spells in ASCII digits (integer keys); None otherwise."""
    key = user_key(text)
    if key is None and (number := parse_id(text)) is not None:
        key = user_key(number)
    return key


def user_key_kind() -> str:
    """What a user key looks like in this project, for error messages."""
    field = user_key_field()
    if _integer_keys(field):
        return f"an integer id from 1 to {MAX_ID}"
    if isinstance(field, models.UUIDField):
        return "a UUID"
    return f"text of up to {getattr(field, 'max_length', None) or 255} characters"


def user_key_json(key: UserKey) -> int | str:
    """The key as JSON carries it (signed links, task arguments): integers stay integers."""
    return key if isinstance(key, int) else str(key)


def user_key_sql_type(connection: BaseDatabaseWrapper) -> str:
    """The column type of a foreign key to the users, for casts in raw SQL."""
    field: Any = user_key_field()  # every concrete field has rel_db_type; the stubs miss it
    return str(field.rel_db_type(connection))
