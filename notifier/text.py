"""Text from outside, checked at the edges: what PostgreSQL cannot store (NUL in text and JSON,
lone surrogates that UTF-8 refuses), and numbers typed as text (ids in forms and query strings).
Checked at the door (notify(), the JSON endpoints, webhooks, the admin) so the database never
has to."""

from __future__ import annotations

import math
import re
from typing import Any

MAX_ID = 2**63 - 1  # PostgreSQL's bigint: a larger number is not an id that is missing, it is no id
# [0-9], not \d: \d also matches other scripts' digits ("٣", U+0663), which int() reads as 3.
_ID_DIGITS = re.compile(r"[0-9]{1,19}")


def text_problem(value: str) -> str | None:
    """Why `value` cannot be stored, in words; None when it can."""
    if "\x00" in value:
        return "contains a NUL character (\\u0000)"
    if any("\ud800" <= ch <= "\udfff" for ch in value):
        return "contains an unpaired surrogate (half of a \\ud83d\\ude00 pair)"
    return None


def json_value_problem(value: Any, *, max_depth: int | None = None) -> str | None:
    """Why a parsed JSON value cannot be taken, as words that follow "the body": a string or key
    with a `text_problem`, a number that is not finite (1e400 parses as infinity), or nesting
    deeper than `max_depth`. Walked without recursion: the value may nest as deep as the parser
    allowed."""
    stack: list[tuple[Any, int]] = [(value, 1)]
    while stack:
        item, depth = stack.pop()
        if isinstance(item, dict | list):
            if max_depth is not None and depth > max_depth:
                return f"nests deeper than {max_depth} levels"
            children = [*item.keys(), *item.values()] if isinstance(item, dict) else item
            stack.extend((child, depth + 1) for child in children)
        elif isinstance(item, str) and (problem := text_problem(item)):
            return f"has a string that {problem}"
        elif isinstance(item, float) and not math.isfinite(item):
            return "has a number that is not finite (NaN or infinity)"
    return None


def parse_id(text: str) -> int | None:
    """`text` as a database id: 1 to 19 ASCII digits naming 1 .. 2**63-1; None for anything else.

    One parser for every id typed as text. `str.isdigit()` and `isdecimal()` let through "²"
    (int() raises), other scripts' digits (int() reads "٣" as 3) and 5,000-digit numbers (int()
    raises past 4,300 digits); a number past bigint makes PostgreSQL raise.
    """
    if not _ID_DIGITS.fullmatch(text):
        return None
    number = int(text)
    return number if 0 < number <= MAX_ID else None
