"""Rates written as text ("10/s", "600/m", "30/h"): one grammar and one error for every limit.

    rate   = amount "/" period        spaces allowed around each part
    amount = digits [ "." digits ]    ASCII digits, above zero and finite; whole where a caller
                                      asks for it
    period = "s" | "m" | "h"

Provider limits (NOTIFIER_RATE_LIMITS, `notifier.provider_limits`) read "600/m" as ten a second
with about a second's worth of burst; request limits (NOTIFIER_PUBLIC_RATE_LIMITS,
`notifier.request_limits`) read "30/m" as a bucket of 30 refilled over the minute. Both parse
the text here and build a `Rate`, the token bucket's speed and size.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass

PERIODS_S = {"s": 1, "m": 60, "h": 3600}
_RATE_FORM = re.compile(r"\s*(?P<amount>[0-9]+(?:\.[0-9]+)?)\s*/\s*(?P<period>[smh])\s*")


class InvalidRate(ValueError):
    """A rate that does not follow the grammar; the message quotes it and shows the form."""


@dataclass(frozen=True, slots=True)
class RateText:
    """A parsed rate string: `amount` per `period` ("s", "m" or "h")."""

    amount: float
    period: str

    @property
    def per_second(self) -> float:
        return self.amount / PERIODS_S[self.period]


def parse_rate_text(text: str, *, whole: bool = False) -> RateText:
    """'600/m' -> RateText(600, "m"); InvalidRate naming the accepted form otherwise. With
    `whole`, the amount must be a whole number (it is also a bucket's size in tokens)."""
    number = "whole number" if whole else "number"
    form = f"use <{number}>/<s|m|h> with a {number} above zero, e.g. '10/s', '600/m' or '30/h'"
    if not isinstance(text, str):
        raise InvalidRate(f"invalid rate {text!r}: {form}")
    match = _RATE_FORM.fullmatch(text)
    if match is None:
        raise InvalidRate(f"invalid rate {text!r}: {form}")
    amount = float(match["amount"])
    if not (0 < amount < math.inf) or (whole and "." in match["amount"]):
        raise InvalidRate(f"invalid rate {text!r}: {form}")
    return RateText(amount, match["period"])


@dataclass(frozen=True, slots=True)
class Rate:
    """`per_second` tokens a second, at most `burst` at once (0: about one second's worth)."""

    per_second: float
    burst: int = 0

    def __post_init__(self) -> None:
        if not (math.isfinite(self.per_second) and self.per_second > 0):
            raise InvalidRate(f"a rate must be a positive number per second, not {self.per_second}")
        if self.burst < 0:
            raise InvalidRate(f"a burst must be at least 1 token, not {self.burst}")
        if self.burst == 0:
            object.__setattr__(self, "burst", max(1, math.ceil(self.per_second)))
