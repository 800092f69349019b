"""Text at the edges: what cannot be stored (ids typed as text: tests/notifier/test_ids.py)."""

from __future__ import annotations

import json

import pytest

from notifier.text import json_value_problem


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
