"""Text at the edges: what cannot be stored, and ids typed as text."""

from __future__ import annotations

import json

import pytest

from notifier.text import MAX_ID, json_value_problem, parse_id


@pytest.mark.parametrize(("text", "number"), [("1", 1), ("0042", 42), (str(MAX_ID), MAX_ID)])
def test_an_id_is_ascii_digits_within_bigint(text, number):
    assert parse_id(text) == number


@pytest.mark.parametrize(
    "text",
    [
        "",
        "0",
        "-1",
        "+1",
        " 1",
        "1_000",
        "1.0",
        "\u00b2",  # superscript two: isdigit() says yes, int() raises
        "\u0663",  # Arabic-Indic three: isdecimal() says yes, int() reads 3
        "\U0001d7d1",  # mathematical bold three
        str(MAX_ID + 1),
        "1" * 5000,  # int() raises past 4,300 digits
    ],
)
def test_anything_else_is_no_id(text):
    assert parse_id(text) is None


@pytest.mark.parametrize(
    ("value", "words"),
    [
        ({"a": ["ok", "b\x00"]}, "NUL"),
        ({"k\ud800": 1}, "surrogate"),
        ([1, float("inf")], "not finite"),
        (json.loads('{"x": 1e400}'), "not finite"),
        ({"x": float("nan")}, "not finite"),
    ],
)
def test_a_json_value_that_cannot_be_stored_is_named(value, words):
    assert words in (json_value_problem(value) or "")


def test_nesting_is_bounded_when_asked_and_walked_without_recursion():
    deep: object = "x"
    for _ in range(100_000):
        deep = [deep]
    assert json_value_problem(deep) is None
    assert json_value_problem(deep, max_depth=32) == "nests deeper than 32 levels"
    assert json_value_problem({"a": {"b": [1, 2.5, "ok", None, True]}}, max_depth=3) is None
