"""A reusable corpus of hostile input: huge, malformed, odd unicode, wrong types, odd ids.

Import the dictionaries and throw every value at whatever takes input; each entry is named, so
a failure says which value broke what. Lone surrogates cannot travel as UTF-8: they appear as
JSON escapes ("\\ud800") in the bodies, and as Python strings in the values for `notify()`.
"""

from __future__ import annotations

import json
from datetime import datetime, timedelta, timezone, tzinfo
from typing import Any

MEGABYTE = 1_000_000

HOSTILE_STRINGS: dict[str, str] = {
    "empty": "",
    "blank": "   \t ",
    "huge_1mb": "x" * MEGABYTE,
    "huge_cjk": "长" * (MEGABYTE // 3),
    "nul": "before\x00after",
    "control": "\x01\x07\x1b[31mred",
    "lone_surrogate": "\ud800",
    "reversed_surrogates": "\udc00\ud800",
    "rtl_override": "\u202egpj.exe",
    "emoji": "👍🏽🧑‍🚀🏳️‍🌈",
    "combining_marks": "e" + "\u0301" * 500,
    "zero_width": "\u200b\u200d\ufeff",
    "html": "<script>alert(1)</script>",
    "sql": "' OR '1'='1'; DROP TABLE notifier_message; --",
    "template": "{{ 7*7 }}{% debug %}${7*7}",
    "path_traversal": "../../../etc/passwd",
    "crlf": "ok\r\nSet-Cookie: pwned=1",
    "percent": "%00%ff%2e%2e",
    "format": "{0.__class__.__mro__}%s%n",
    "number_text": "1e309",
}

WRONG_TYPES: dict[str, Any] = {
    "list": ["email"],
    "empty_list": [],
    "dict": {"channel": "email"},
    "int": 1,
    "zero": 0,
    "negative": -1,
    "huge_int": 10**30,
    "float": 1.5,
    "true": True,
    "false": False,
    "null": None,
}

HOSTILE_VALUES: dict[str, Any] = {**HOSTILE_STRINGS, **WRONG_TYPES}

# Ids in a URL (<int:...> takes digits only): nothing, past PostgreSQL's bigint, absurd.
HOSTILE_PATH_IDS: dict[str, int] = {
    "zero": 0,
    "bigint_max": 2**63 - 1,
    "past_bigint": 2**63,
    "huge": 10**30,
}

# Bodies that are not the JSON they claim to be, or are JSON of the wrong shape.
MALFORMED_BODIES: dict[str, bytes] = {
    "empty": b"",
    "truncated": b'{"feedback": ',
    "not_json": b"feedback=useful",
    "bad_utf8": b'{"feedback": "\xff\xfe"}',
    "utf16": '{"feedback": "useful"}'.encode("utf-16"),
    "nan": b'{"feedback": NaN}',
    "infinite_number": b'{"feedback": 1e999}',
    "array": b'["useful"]',
    "string": b'"useful"',
    "number": b"42",
    "null": b"null",
    "deep_nesting": b"[" * 100_000 + b"]" * 100_000,
    "deep_object": b'{"a":' * 50_000 + b"1" + b"}" * 50_000,
    "huge_1mb": b'{"feedback": "' + b"x" * MEGABYTE + b'"}',
    "duplicate_keys": b'{"feedback": "useful", "feedback": ["x"]}',
    "lone_surrogate_escape": b'{"feedback": "\\ud800"}',
    "nul_escape": b'{"feedback": "\\u0000"}',
}

# The fields the public JSON and form endpoints read (a superset is harmless).
FIELDS = (
    "feedback",
    "preferences",
    "marketing_frequency",
    "channel",
    "granted",
    "wording",
    "scope",
    "List-Unsubscribe",
    "shown",
    "category",
    "enabled",
)


def json_bodies() -> dict[str, bytes]:
    """Every malformed body, plus each field of FIELDS set to each hostile value, alone and
    inside a preference change."""
    bodies = dict(MALFORMED_BODIES)
    for field in FIELDS:
        for name, value in HOSTILE_VALUES.items():
            bodies[f"{field}={name}"] = json.dumps({field: value}).encode()
    for field in ("category", "channel", "enabled"):
        for name, value in HOSTILE_VALUES.items():
            change = {"category": "marketing", "channel": "email", "enabled": False, field: value}
            bodies[f"preferences[0].{field}={name}"] = json.dumps(
                {"preferences": [change]}
            ).encode()
    for name, value in HOSTILE_VALUES.items():
        bodies[f"preferences={name}"] = json.dumps({"preferences": value}).encode()
    return bodies


def form_bodies() -> dict[str, dict[str, str]]:
    """Each form field set to each hostile string that a form can carry."""
    carried = {k: v for k, v in HOSTILE_STRINGS.items() if "surrogate" not in k}
    return {
        f"{field}={name}": {field: value}
        for field in FIELDS
        for name, value in carried.items()
        if name not in ("huge_cjk",)  # one 1 MB value per field is enough
    }


QUERY_PARAMS = ("limit", "cursor", "unread", "archived", "page", "user", "next", "token")


def query_strings() -> dict[str, dict[str, str]]:
    carried = {k: v for k, v in HOSTILE_STRINGS.items() if "surrogate" not in k and "huge" not in k}
    carried.update(
        {"negative": "-1", "huge_int": str(10**30), "float": "1.5", "list": "[1]", "true": "true"}
    )
    return {
        f"{param}={name}": {param: value}
        for param in QUERY_PARAMS
        for name, value in carried.items()
    }


# --- Python values for notify() and notify_many() that pass a naive isinstance check --------
# Each is a way a caller's object has broken the door: a value stored that a worker cannot
# read back, a database error that aborts the caller's transaction, an exception that is not a
# NotifyError, or an object whose own methods lie. Build fresh ones with the functions below.


class LyingStr(str):
    """Equal to everything, one hash for all: slips past `x in allowed` checks."""

    def __eq__(self, other: object) -> bool:
        return True

    def __ne__(self, other: object) -> bool:
        return False

    def __hash__(self) -> int:
        return 0


class UnhashableStr(str):
    def __hash__(self) -> int:
        raise TypeError("a hostile str that cannot be hashed")


class LoudStr(str):
    """Raises from every way of turning it into text, and from strip() and len()."""

    def __str__(self) -> str:
        raise RuntimeError("__str__ of a hostile str")

    def __repr__(self) -> str:
        raise RuntimeError("__repr__ of a hostile str")

    def __len__(self) -> int:
        raise RuntimeError("__len__ of a hostile str")

    def strip(self, chars: str | None = None) -> str:
        raise RuntimeError("strip of a hostile str")


class LoudInt(int):
    def __str__(self) -> str:
        raise RuntimeError("__str__ of a hostile int")

    __repr__ = __str__

    def __index__(self) -> int:
        return 1

    def __eq__(self, other: object) -> bool:
        return True

    def __hash__(self) -> int:
        raise TypeError("unhashable LoudInt")


class LoudDict(dict):
    """A dict whose own methods raise: what it holds is plain, how it shows it is not."""

    def items(self):  # type: ignore[override]
        raise RuntimeError("items of a hostile dict")

    def keys(self):  # type: ignore[override]
        raise RuntimeError("keys of a hostile dict")

    def __iter__(self):  # type: ignore[override]
        raise RuntimeError("__iter__ of a hostile dict")

    def __getitem__(self, key):  # type: ignore[override]
        raise RuntimeError("__getitem__ of a hostile dict")


class Unprintable:
    """Any object whose repr and str raise (an error message must not call them)."""

    def __repr__(self) -> str:
        raise RuntimeError("__repr__ of a hostile object")

    __str__ = __repr__


class RaisingIterable:
    def __iter__(self):
        raise RuntimeError("__iter__ of a hostile iterable")


def raising_generator(after: list[object]):
    """Yields `after`, then raises, like a caller's lazy query that fails half-way."""
    yield from after
    raise RuntimeError("a hostile generator")


class OffsetTz(tzinfo):
    """A tzinfo whose utcoffset() is whatever it was given: a raising callable, None, more
    than a day, or a non-timedelta."""

    def __init__(self, offset: Any) -> None:
        self.offset = offset

    def utcoffset(self, dt: datetime | None) -> Any:
        return self.offset() if callable(self.offset) else self.offset

    def dst(self, dt: datetime | None) -> timedelta | None:
        return None

    def tzname(self, dt: datetime | None) -> str:
        return "hostile"


def _raise_from_tz() -> timedelta:
    raise RuntimeError("utcoffset of a hostile tzinfo")


# tzinfos whose utcoffset() misbehaves; any datetime made with them is not a usable expiry.
HOSTILE_TZINFOS: dict[str, tzinfo] = {
    "raises": OffsetTz(_raise_from_tz),
    "returns_none": OffsetTz(None),
    "more_than_a_day": OffsetTz(timedelta(hours=25)),
    "not_a_timedelta": OffsetTz(5),
}

# Valid offsets PostgreSQL's timestamptz cannot take (it stops at ±15:59) or spells oddly.
FAR_OFFSETS: dict[str, timezone] = {
    "plus_20h": timezone(timedelta(hours=20)),
    "minus_16h": timezone(-timedelta(hours=16)),
    "plus_23h59": timezone(timedelta(hours=23, minutes=59)),
    "seconds": timezone(timedelta(hours=5, minutes=30, seconds=17)),
    "microseconds": timezone(timedelta(hours=-3, microseconds=1)),
}

# Ids and integers at and past the edges: PostgreSQL's bigint, Python's 4,300-digit str limit.
HOSTILE_INTEGERS: dict[str, int] = {
    "past_bigint": 2**63,
    "below_bigint": -(2**63) - 1,
    "past_uint64": 2**64,
    "4301_digits": 10**4300,
    "huge": 10**20_000,
}


def nested(depth: int, *, kind: str = "dict") -> Any:
    """A value `depth` containers deep (dicts or lists), built without recursion."""
    value: Any = "bottom"
    for _ in range(depth):
        value = {"d": value} if kind == "dict" else [value]
    return value


def self_containing() -> dict[str, Any]:
    loop: dict[str, Any] = {"name": "loop"}
    loop["self"] = loop
    return loop
