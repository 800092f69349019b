"""Taking a frequency-cap slot, atomically across workers.

One upsert per window: `INSERT ... ON CONFLICT DO UPDATE SET count = count + 1 WHERE count < cap
RETURNING count`. The row lock makes two workers routing for one user take turns, so they cannot
both pass the last slot; and the counter lives in the route's transaction, so a route that rolls
back gives its slot back.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import date, datetime

from django.db import connection, transaction

from notifier.db import any_of, table_name
from notifier.models import CapPeriod, Delivery, FrequencyCounter, Kind
from notifier.policies.caps import Caps, Windows
from notifier.status import DeliveryStatus
from notifier.user_keys import UserKey, user_key_sql_type


class _Full(Exception):
    def __init__(self, period: CapPeriod) -> None:
        self.period = period


def _take(*, user_id: UserKey, period: CapPeriod, window_start: date, cap: int) -> None:
    if cap <= 0:
        raise _Full(period)
    table = table_name(FrequencyCounter)
    with connection.cursor() as cursor:
        cursor.execute(
            f"INSERT INTO {table} (user_id, period, window_start, count) VALUES (%s, %s, %s, 1) "
            f"ON CONFLICT (user_id, period, window_start) DO UPDATE "
            f"SET count = {table}.count + 1 WHERE {table}.count < %s RETURNING count",
            [user_id, str(period), window_start, cap],
        )
        if cursor.fetchone() is None:
            raise _Full(period)


def cap_take(*, user_id: UserKey, windows: Windows, caps: Caps) -> CapPeriod | None:
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


@dataclass(frozen=True, slots=True)
class CapRequest:
    user_id: UserKey
    windows: Windows
    caps: Caps
    message_id: int = 0  # who asks: its own held deliveries are not its rivals
    rank: int = 2  # its priority (PRIORITY_RANK: lower goes first)
    day_ends: datetime | None = None  # when the user's day window ends (aware)


def caps_room(requests: Sequence[CapRequest]) -> list[int]:
    """Slots left for each request's user in its day and week (the smaller), read without a
    lock: it only decides whether to yield to a higher priority; the take itself is atomic."""
    if not requests:
        return []
    rows = FrequencyCounter.objects.filter(
        any_of("user_id", {r.user_id for r in requests}),
        any_of("window_start", {w for r in requests for w in (r.windows.day, r.windows.week)}),
    ).values_list("user_id", "period", "window_start", "count")
    counts = {(user_id, period, window): count for user_id, period, window, count in rows}
    return [
        min(
            r.caps.day - counts.get((r.user_id, CapPeriod.DAY, r.windows.day), 0),
            r.caps.week - counts.get((r.user_id, CapPeriod.WEEK, r.windows.week), 0),
        )
        for r in requests
    ]


def caps_rivals(requests: Sequence[CapRequest]) -> list[list[datetime]]:
    """For each request, when its rivals come due: held marketing messages of the same user,
    outside these requests, of higher priority, due before the request's day ends, that have not
    taken a slot in its day yet (those of another day or without a time compete for nothing)."""
    if not requests:
        return []
    ends = [r.day_ends for r in requests if r.day_ends is not None]
    if not ends:
        return [[] for _ in requests]
    rows = (
        Delivery.objects.filter(
            any_of("user_id", {r.user_id for r in requests}),
            status=DeliveryStatus.HELD,
            next_attempt_at__lt=max(ends),
            priority_rank__lt=max(r.rank for r in requests),
            message__type__kind=Kind.MARKETING,
            message__is_test=False,
        )
        .exclude(any_of("message_id", [r.message_id for r in requests]))
        .values_list(
            "user_id", "message_id", "priority_rank", "next_attempt_at", "message__cap_day"
        )
    )
    held: dict[int, dict[int, tuple[int, datetime, date | None]]] = defaultdict(dict)
    for user_id, message_id, rank, due, cap_day in rows:
        if due is None:  # held without a time (a paused campaign): competes for nothing
            continue
        known = held[user_id].get(message_id)
        if known is None or due < known[1]:
            held[user_id][message_id] = (rank, due, cap_day)
    return [
        sorted(
            due
            for rank, due, cap_day in held.get(r.user_id, {}).values()
            if r.day_ends is not None
            and rank < r.rank
            and due < r.day_ends
            and cap_day != r.windows.day
        )
        for r in requests
    ]


def caps_take_many(requests: Sequence[CapRequest]) -> list[CapPeriod | None]:
    """Take a slot for each request at once: one result per request, None when taken.

    The same guarantee as `cap_take`, in a few statements per batch instead of a savepoint and
    two upserts per message: counter rows are created if missing, then locked in user order
    (so two batches sharing users cannot deadlock) and incremented where under the cap. A user
    who got the week's slot but not the day's gives the week's back. A user twice in one batch
    goes the one-at-a-time way, as does SQLite.
    """
    if connection.vendor != "postgresql" or len({r.user_id for r in requests}) < len(requests):
        return [cap_take(user_id=r.user_id, windows=r.windows, caps=r.caps) for r in requests]
    results: list[CapPeriod | None] = [None] * len(requests)
    trying: list[int] = []
    for index, request in enumerate(requests):
        if request.caps.week <= 0:
            results[index] = CapPeriod.WEEK
        elif request.caps.day <= 0:
            results[index] = CapPeriod.DAY
        else:
            trying.append(index)
    with transaction.atomic():
        got_week = _take_many(
            CapPeriod.WEEK,
            [
                (requests[i].user_id, requests[i].windows.week, requests[i].caps.week)
                for i in trying
            ],
        )
        for index in trying:
            if requests[index].user_id not in got_week:
                results[index] = CapPeriod.WEEK
        day_try = [i for i in trying if requests[i].user_id in got_week]
        got_day = _take_many(
            CapPeriod.DAY,
            [(requests[i].user_id, requests[i].windows.day, requests[i].caps.day) for i in day_try],
        )
        give_back = [i for i in day_try if requests[i].user_id not in got_day]
        for index in give_back:
            results[index] = CapPeriod.DAY
        _give_back(
            CapPeriod.WEEK, [(requests[i].user_id, requests[i].windows.week) for i in give_back]
        )
    return results


def _take_many(period: CapPeriod, items: list[tuple[int, date, int]]) -> set[int]:
    """Users (of `items`: user, window start, cap) who got a slot in `period`.

    One upsert per distinct cap: a missing counter is created at 1, an existing one goes up
    by one where it is under the cap. Rows are taken in user order, so two batches sharing
    users lock them in the same order and cannot deadlock."""
    by_cap: dict[int, list[tuple[int, date]]] = defaultdict(list)
    for user, window, cap in sorted(items):
        by_cap[cap].append((user, window))
    table = table_name(FrequencyCounter)
    got: set[int] = set()
    key_type = user_key_sql_type(connection)
    with connection.cursor() as cursor:
        for cap, keys in by_cap.items():
            # The keys as two array parameters (unnest keeps them paired, in order).
            cursor.execute(
                f"INSERT INTO {table} AS c (user_id, period, window_start, count) "
                f"SELECT v.user_id, %s, v.window_start, 1 "
                f"FROM unnest(%s::{key_type}[], %s::date[]) AS v (user_id, window_start) "
                f"ORDER BY v.user_id "
                f"ON CONFLICT (user_id, period, window_start) "
                f"DO UPDATE SET count = c.count + 1 WHERE c.count < %s RETURNING c.user_id",
                [str(period), [user for user, _ in keys], [window for _, window in keys], cap],
            )
            got.update(row[0] for row in cursor.fetchall())
    return got


def _give_back(period: CapPeriod, items: list[tuple[int, date]]) -> None:
    if not items:
        return
    table = table_name(FrequencyCounter)
    key_type = user_key_sql_type(connection)
    items = sorted(items)
    with connection.cursor() as cursor:
        cursor.execute(
            f"UPDATE {table} SET count = count - 1 WHERE period = %s AND count > 0 "
            f"AND (user_id, window_start) IN "
            f"(SELECT * FROM unnest(%s::{key_type}[], %s::date[]))",
            [str(period), [user for user, _ in items], [window for _, window in items]],
        )
