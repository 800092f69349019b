"""Taking throttle slots: a type with a throttle lets at most `limit` messages per recipient and
throttle key through in any window of its length (notifier.policies.throttle decides).

Called by routing for a batch, in its transaction: each (recipient, type, key) the batch touches
is locked first (a PostgreSQL advisory lock, so two prepare runs with messages of the same key
count one after the other and never both take the last slot), the slots in the window are
counted, the batch's messages are admitted in priority order, and a slot row is written for
each one admitted. A route that rolls back gives its slots back with it.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime

from django.db.models import Q

from notifier.db import THROTTLE_LOCK_SPACE, advisory_locks_take, any_of, insert_rows
from notifier.models import Message, ThrottleSlot
from notifier.models.types import PRIORITY_RANK, Priority
from notifier.policies.throttle import Throttle, throttle_admits
from notifier.selectors import type_info_get

SlotKey = tuple[object, str, str]  # (user id, type key, throttle key)


def _slot_key(message: Message) -> SlotKey:
    return (message.user_id, message.type_id, message.throttle_key or "")


def throttles_take(messages: Sequence[Message], now: datetime) -> set[int]:
    """Take a slot for each of `messages` whose type has a throttle, where one is free; returns
    the ids of those that found none (to be suppressed, reason `throttled`). Messages of types
    without a throttle, marketers' test sends, messages scheduled for later (they take theirs
    when released) and those holding a slot already take nothing."""
    throttles: dict[str, Throttle] = {}
    bound: list[Message] = []
    for message in messages:
        info = type_info_get(message.type_id)
        if info is None or info.throttle is None or message.is_test:
            continue
        if message.digest_id is not None:
            continue  # a digest's own message: one a window already, what it carries counted
        if message.not_before is not None and message.not_before > now:
            continue  # scheduled: it takes its slot when it goes (the release)
        throttles[message.type_id] = info.throttle
        bound.append(message)
    if bound:
        # A message holds one slot at most: one that took it when routed and was held (quiet
        # hours) keeps it when released.
        holding = set(
            ThrottleSlot.objects.filter(message_id__in=[m.pk for m in bound]).values_list(
                "message_id", flat=True
            )
        )
        bound = [m for m in bound if m.pk not in holding]
    if not bound:
        return set()
    keys = {_slot_key(m) for m in bound}
    advisory_locks_take(THROTTLE_LOCK_SPACE, (f"{u}\x1f{t}\x1f{k}" for u, t, k in keys))
    taken = _taken(keys, throttles, now)
    bound.sort(key=lambda m: (PRIORITY_RANK.get(Priority(m.priority), 2), m.pk))
    admitted = throttle_admits(
        [_slot_key(m) for m in bound],
        taken,
        {key: throttles[key[1]].limit for key in keys},
    )
    insert_rows(
        ThrottleSlot,
        ("user", "type_key", "key", "at", "message_id"),
        [
            (m.user_id, m.type_id, m.throttle_key or "", now, m.pk)
            for m, ok in zip(bound, admitted, strict=True)
            if ok
        ],
    )
    return {m.pk for m, ok in zip(bound, admitted, strict=True) if not ok}


def _taken(keys: set[SlotKey], throttles: dict[str, Throttle], now: datetime) -> dict[SlotKey, int]:
    """Slots each key took in its type's window; older ones of these keys are pruned."""
    rows = ThrottleSlot.objects.filter(
        any_of("user_id", {user_id for user_id, _, _ in keys}),
        type_key__in=list(throttles),
        key__in=list({key for _, _, key in keys}),
    )
    expired = Q()
    for type_key, throttle in throttles.items():
        expired |= Q(type_key=type_key, at__lte=throttle.since(now))
    rows.filter(expired).delete()
    counts: dict[SlotKey, int] = {}
    for user_id, type_key, key in rows.values_list("user_id", "type_key", "key"):
        if (user_id, type_key, key) in keys:
            counts[(user_id, type_key, key)] = counts.get((user_id, type_key, key), 0) + 1
    return counts


def throttle_slots_release(message_ids: Sequence[int]) -> int:
    """Give back the slots of messages that will not go out after all (cancelled)."""
    deleted, _ = ThrottleSlot.objects.filter(message_id__in=list(message_ids)).delete()
    return deleted
