"""Text that cannot be stored: PostgreSQL refuses NUL in text and JSON, UTF-8 refuses lone
surrogates. Checked at the edges (notify(), the JSON endpoints) so the database never has to."""

from __future__ import annotations

import re

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
