"""User keys are read strictly, as the project's user model stores them: integers (this site),
UUIDs or text (a host's), never coerced from another type."""

from __future__ import annotations

import uuid

import pytest
from django.db import connection, models

from notifier import user_keys
from notifier.ids import MAX_ID
from notifier.user_keys import user_key, user_key_json, user_key_kind, user_key_sql_type

KEY = uuid.UUID("5f0c6f5e-8d0e-4b7e-9a53-2b1f2f7f3c11")


@pytest.fixture
def keyed_by(monkeypatch):
    def use(field: models.Field) -> None:
        monkeypatch.setattr(user_keys, "user_key_field", lambda: field)

    return use


@pytest.mark.parametrize("value", [1, 42, MAX_ID])
def test_integer_keys_take_integers(value):
    assert user_key(value) == value
    assert user_key_json(value) == value


@pytest.mark.parametrize("value", ["7", 7.0, True, 0, -1, MAX_ID + 1, None, b"7", KEY])
def test_integer_keys_refuse_anything_else(value):
    assert user_key(value) is None


def test_integer_keys_are_described_and_cast_as_the_column_is():
    assert user_key_kind() == f"an integer id from 1 to {MAX_ID}"
    assert user_key_sql_type(connection) in ("integer", "bigint")


def test_uuid_keys_take_uuids_and_their_text(keyed_by):
    keyed_by(models.UUIDField(primary_key=True))
    assert user_key(KEY) == KEY
    assert user_key(str(KEY)) == KEY
    assert user_key(str(KEY).upper()) == KEY
    assert user_key_json(KEY) == str(KEY)
    assert user_key_kind() == "a UUID"
    assert user_key_sql_type(connection) == "uuid"


@pytest.mark.parametrize("value", [7, True, "7", "not-a-uuid", "x" * 100, None, KEY.bytes])
def test_uuid_keys_refuse_anything_else(keyed_by, value):
    keyed_by(models.UUIDField(primary_key=True))
    assert user_key(value) is None


def test_text_keys_take_text_within_the_column(keyed_by):
    keyed_by(models.CharField(primary_key=True, max_length=12))
    assert user_key("cust-0042") == "cust-0042"
    for bad in ("", "x" * 13, "nul\x00", 42, None):
        assert user_key(bad) is None
    assert user_key_kind() == "text of up to 12 characters"
