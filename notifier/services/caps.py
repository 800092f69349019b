"""Taking a frequency-cap slot, atomically across workers.

One upsert per window: `INSERT ... ON CONFLICT DO UPDATE SET count = count + 1 WHERE count < cap
RETURNING count`. The row lock makes two workers routing for one user take turns, so they cannot
both pass the last slot; and the counter lives in the route's transaction, so a route that rolls
back gives its slot back.
"""

from __future__ import annotations

from datetime import date

from django.db import connection, transaction

from notifier.models import CapPeriod, FrequencyCounter
from notifier.policies.caps import Caps, Windows


class _Full(Exception):
    def __init__(self, period: CapPeriod) -> None:
        self.period = period


def _take(*, user_id: int, period: CapPeriod, window_start: date, cap: int) -> None:
    if cap <= 0:
        raise _Full(period)
    table = connection.ops.quote_name(FrequencyCounter._meta.db_table)
    with connection.cursor() as cursor:
        cursor.execute(
            f"INSERT INTO {table} (user_id, period, window_start, count) VALUES (%s, %s, %s, 1) "
            f"ON CONFLICT (user_id, period, window_start) DO UPDATE "
            f"SET count = {table}.count + 1 WHERE {table}.count < %s RETURNING count",
            [user_id, str(period), window_start, cap],
        )
        if cursor.fetchone() is None:
            raise _Full(period)


def cap_take(*, user_id: int, windows: Windows, caps: Caps) -> CapPeriod | None:
    """Take one slot in the user's week and day; returns the full period, or None when taken.

    The week is tried first: when both are full the message must wait for the next week, and
    naming the day would only see it held again tomorrow.
    """
    try:
        with transaction.atomic():  # a savepoint: a full day gives the week slot back
            _take(user_id=user_id, period=CapPeriod.WEEK, window_start=windows.week, cap=caps.week)
            _take(user_id=user_id, period=CapPeriod.DAY, window_start=windows.day, cap=caps.day)
    except _Full as full:
        return full.period
    return None
