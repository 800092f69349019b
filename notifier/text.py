"""Text from outside, checked at the edges: what PostgreSQL cannot store (NUL in text and JSON,
lone surrogates that UTF-8 refuses) and JSON values no client of ours sends (ids typed as text
are read by `notifier.ids`). Checked at the door (notify(), the JSON endpoints, webhooks, the
admin) so the database never has to."""

from __future__ import annotations

import json
import math
import re
from typing import Any

# A C-speed scan instead of a Python loop per character: notify() checks every string of a
# context of up to 64 KB.
_SURROGATE = re.compile("[\ud800-\udfff]")


def text_problem(value: str) -> str | None:
    """Why `value` cannot be stored, in words; None when it can."""
    if "\x00" in value:
        return "contains a NUL character (\\u0000)"
    if _SURROGATE.search(value):
        return "contains an unpaired surrogate (half of a \\ud83d\\ude00 pair)"
    return None


def strict_json_loads(data: str | bytes) -> Any:
    """`json.loads` that refuses NaN, Infinity and -Infinity (Python's parser takes them; no
    JSON client of ours sends them). Raises ValueError (a JSONDecodeError, a UnicodeDecodeError)
    or RecursionError on a body it cannot take."""
    return json.loads(data, parse_constant=_not_a_number)


def _not_a_number(name: str) -> object:
    raise ValueError(f"{name} is not a JSON number")


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
