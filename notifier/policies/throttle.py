"""Per-key throttle: at most `limit` messages of a type per recipient and key in any window.

Pure: which of a batch's messages may go, given how many each (recipient, type, key) already
sent in the window. The slots themselves are rows (notifier.services.throttles).
"""

from __future__ import annotations

from collections.abc import Hashable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import TypeVar

K = TypeVar("K", bound=Hashable)


@dataclass(frozen=True, slots=True)
class Throttle:
    limit: int  # at least 1
    window: timedelta

    def since(self, now: datetime) -> datetime:
        """Slots taken after this moment count against the limit (a sliding window)."""
        return now - self.window


def throttle_admits(
    wanted: Sequence[K], taken: Mapping[K, int], limit: Mapping[K, int]
) -> list[bool]:
    """For each of `wanted` (a throttle key per message, in the order they should win), whether
    it may go: while its key has taken fewer than its limit, counting those admitted before it
    in `wanted`."""
    counts = dict(taken)
    admitted: list[bool] = []
    for key in wanted:
        room = counts.get(key, 0) < limit[key]
        if room:
            counts[key] = counts.get(key, 0) + 1
        admitted.append(room)
    return admitted
