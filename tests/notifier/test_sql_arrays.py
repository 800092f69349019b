"""Rows as one PostgreSQL array per column: every value comes back out of unnest() as it went in."""

from __future__ import annotations

import datetime as dt
import json

import pytest
from django.db import connection

from notifier.sql_arrays import array_text, column_arrays

pytestmark = [
    pytest.mark.django_db,
    pytest.mark.skipif(connection.vendor != "postgresql", reason="PostgreSQL arrays"),
]


def unnested(kind: str, values: list[object]) -> list[object]:
    with connection.cursor() as cursor:
        cursor.execute(f"SELECT x FROM unnest(%s::{kind}[]) AS x", [array_text(values)])
        return [row[0] for row in cursor.fetchall()]


def test_text_comes_back_as_it_went_in_quotes_backslashes_and_all():
    texts = ["plain", 'a "quote"', "back\\slash", "", "NULL", "new\nline", "{b,r}", " x ", "é中"]
    assert unnested("text", texts) == texts


def test_none_is_null_among_text_and_times():
    assert unnested("text", [None, "a", None, 'b"']) == [None, "a", None, 'b"']
    at = dt.datetime(2026, 12, 6, 15, 4, 5, 123456, tzinfo=dt.UTC)
    cet = dt.timezone(dt.timedelta(hours=1))
    assert unnested("timestamptz", [at, None, at.astimezone(cet)]) == [at, None, at]


def test_json_keeps_its_structure():
    documents = [{"a": 'x"\\y', "n": [1, None, True]}, {}, {"text": "line\nbreak"}]
    with connection.cursor() as cursor:
        cursor.execute("SELECT x::text FROM unnest(%s::jsonb[]) AS x", [array_text(documents)])
        assert [json.loads(row[0]) for row in cursor.fetchall()] == documents


def test_integers_booleans_and_columns_of_rows():
    rows = [(1, True, "a"), (2, False, None)]
    ints, flags, texts = column_arrays(3, rows)
    assert unnested("bigint", [1, 2]) == [1, 2]
    with connection.cursor() as cursor:
        cursor.execute(
            "SELECT * FROM unnest(%s::bigint[], %s::boolean[], %s::text[])", [ints, flags, texts]
        )
        assert cursor.fetchall() == rows
    assert column_arrays(2, []) == ["{}", "{}"]


def test_a_nul_character_is_refused_not_split_into_two_values():
    with pytest.raises(ValueError, match="NUL"):
        array_text(["a\x00b", "c"])
    with pytest.raises(ValueError, match="NUL"):
        array_text(["a\x00b", None])
