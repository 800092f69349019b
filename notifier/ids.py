"""Row ids typed by people (admin boxes, CSV cells, URL parts), read strictly before int()."""

from __future__ import annotations

MAX_ID = 2**63 - 1  # PostgreSQL's bigint: a larger id is an error in the query, not a miss
_MAX_DIGITS = len(str(MAX_ID))


def parse_id(text: str) -> int | None:
    """The positive id `text` spells in ASCII digits, or None when it spells none.

    Checked before int() sees it: `str.isdecimal()` accepts other scripts' digits ("٣"), and
    int() raises ValueError on strings of over 4,300 digits, so neither may meet raw input.
    """
    if not (0 < len(text) <= _MAX_DIGITS and text.isascii() and text.isdigit()):
        return None
    value = int(text)
    return value if 0 < value <= MAX_ID else None
