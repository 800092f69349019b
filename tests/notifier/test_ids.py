"""Ids typed by people: ASCII digits within bigint, read without ever calling int() on junk."""

from __future__ import annotations

import pytest

from notifier.ids import MAX_ID, parse_id


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("1", 1),
        ("0042", 42),
        (str(MAX_ID), MAX_ID),
        (str(MAX_ID + 1), None),  # bigint cannot hold it: the query would fail, not miss
        ("0", None),
        ("", None),
        ("-1", None),
        ("+1", None),
        (" 1", None),  # callers strip what people type
        ("1.0", None),
        ("1e3", None),
        ("²", None),  # a digit to str.isdigit(), not to int()
        ("٣", None),  # a decimal to str.isdecimal() and int(), but not an id anyone typed
        ("\uff11\uff12", None),  # fullwidth 12
        ("\U0001d7d1", None),  # mathematical bold three
        ("1_000", None),
        ("9" * 5000, None),  # int() raises ValueError over 4,300 digits
    ],
)
def test_parse_id(text, expected):
    assert parse_id(text) == expected
