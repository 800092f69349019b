"""Rows as one PostgreSQL array per column, for `unnest(%s::type[], ...)` in hand-written SQL.

A VALUES list of typed literals makes PostgreSQL parse and plan every value, and the driver
quote each one (a 500-row batch of ten columns: 5,000 of each, milliseconds per statement on
both sides); one array text per column is one parameter, read by the array's input function.
Used where a batch is written on every send (the send records, the sandbox ledger).
PostgreSQL only.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from typing import Any

from django.db import connection, models

from notifier.db import json_text

# Between elements while a column is escaped as one string: text PostgreSQL can hold never
# contains it.
_NUL = "\x00"


def unnest_of(fields: Sequence[models.Field[Any, Any]]) -> str:
    """`unnest(%s::type[], ...)`: one array parameter per field, in order."""
    return "unnest(" + ", ".join(f"%s::{f.db_type(connection)}[]" for f in fields) + ")"


def column_arrays(width: int, rows: Sequence[Sequence[Any]]) -> list[str]:
    """Each of the `width` columns of `rows` as the text of a PostgreSQL array."""
    if not rows:
        return ["{}"] * width
    return [array_text(column) for column in zip(*rows, strict=True)]


def array_text(values: Sequence[Any]) -> str:
    """One column's values as an array literal. The usual columns (all text, all integers,
    all JSON) are escaped in one pass; a mixed one value by value, each distinct value once
    (a batch repeats most of its values: a status, a time)."""
    if all(type(value) is int for value in values):
        return "{" + ",".join(map(str, values)) + "}"
    if all(type(value) is str for value in values):
        return _quoted(values)
    if all(isinstance(value, (dict, list)) for value in values):
        return _quoted([json_text(value) for value in values])
    try:
        written = {value: _element(value) for value in set(values)}
    except TypeError:  # JSON among other values: unhashable
        return "{" + ",".join([_element(value) for value in values]) + "}"
    return "{" + ",".join([written[value] for value in values]) + "}"


def _quoted(texts: Sequence[str]) -> str:
    joined = _NUL.join(texts)
    if joined.count(_NUL) != len(texts) - 1:
        raise ValueError("PostgreSQL text cannot contain NUL (0x00) characters")
    escaped = joined.replace("\\", "\\\\").replace('"', '\\"')
    return '{"' + escaped.replace(_NUL, '","') + '"}'


def _element(value: Any) -> str:
    """NULL bare, anything else quoted: JSON as its text, datetimes in ISO 8601 with their
    offset, booleans as t/f."""
    if value is None:
        return "NULL"
    if value is True or value is False:
        return "t" if value else "f"
    if isinstance(value, (dict, list)):
        text = json_text(value)
    elif isinstance(value, datetime):
        text = value.isoformat()
    else:
        text = str(value)
    if _NUL in text:
        raise ValueError("PostgreSQL text cannot contain NUL (0x00) characters")
    return '"' + text.replace("\\", "\\\\").replace('"', '\\"') + '"'
