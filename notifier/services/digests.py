"""Digests: "Ana and 4 others commented" instead of five messages.

A type with a digest window collects its messages per person and digest key (the caller's
`digest_key`, e.g. "post:42"; without one, the type itself) into an open `Digest`, and sends
them as one message when the window ends. PostgreSQL is the record of all of it, so a worker
killed, a task run twice or two beat processes at once cost nothing:

- **Collecting** happens when a message is prepared, in the prepare run's transaction: the
  person's open digest for the key is locked (made when there is none: one open per person,
  type and key, by a partial unique index), the message is attached to it and counted, and it
  counts as routed, with no delivery of its own. With `digest_first_now`, a message that finds
  no open digest goes out at once as usual and opens one for the rest of the window.
- **Flushing** (beat, every 15 s: `digests_flush_due`) takes the open digests whose window has
  ended, skipping those another run holds, and for each, in one transaction: reads what it
  collected, writes the one message that carries it (its context is the newest message's,
  plus `digest`: the count and the items, newest last), and closes it. A flush that dies
  rolls back whole and the next tick does it again; the message is keyed by the digest
  (`digest:<id>`), so it can be written once only.
- **A message arriving during a flush** waits for the digest's row lock; when the flush
  commits, the digest is no longer open, and the message opens the next one. Never lost,
  never in two.

- **Each person's cadence**: a type with `digest_cadence` takes the window from the person's
  choice (`DigestCadence`: immediately, hourly, daily or weekly at their local time; for the
  type, or else for all such types; none: the type's window). The due time is worked out once,
  when the digest opens (`notifier.policies.digests.digest_due_at`), and stored on it: the
  flush reads the `due_at` index and computes nothing per row. Transactional and critical
  messages are never collected.
- **Folding a throttle's overflow**: a type with `throttle_over = "digest"` collects the
  messages its throttle stops (`digests_fold`, after routing) into the digest of their key
  (the digest key, or else the throttle key), marked `throttled_into_digest` for support.

The digest's message goes through routing like any other (preferences, quiet hours, caps,
escalation); its templates see `digest` (`{% if digest %}{{ digest.count }} new comments`).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from django.db import DatabaseError, connection, transaction
from django.db.models import F
from django.utils import timezone

from notifier.db import any_of, insert_rows, table_name, update_rows
from notifier.local_formats import zone_of
from notifier.models import Digest, DigestCadence, DigestState, Message
from notifier.models.recipients import recipient_for
from notifier.policies.digests import Cadence, CadenceChoice, collectable, digest_due_at
from notifier.selectors import TypeInfo, type_info_get
from notifier.services.messages import NewMessage, messages_create

log = logging.getLogger(__name__)
MAX_ITEMS = 50  # the newest this many collected contexts ride in the digest's context
D = DigestState


@dataclass
class FlushReport:
    sent: int = 0  # digests sent as one message each
    empty: int = 0  # closed with nothing collected (their first went out alone)
    digests: int = 0  # digests the run took


def _rule(message: Message) -> TypeInfo | None:
    """The type, when this message is one its type may collect: not a digest's own message,
    not a marketer's test, not one with a cancel key, never a transactional or critical one."""
    if message.digest_id is not None:
        return None
    info = type_info_get(message.type_id)
    if info is None or not info.digests:
        return None
    may = collectable(
        kind=info.kind,
        priority=message.priority,
        is_test=message.is_test,
        has_cancel_key=message.cancel_key is not None,
    )
    return info if may else None


def cadences_of(messages: Sequence[Message]) -> dict[tuple[object, str], CadenceChoice]:
    """The cadences the messages' people chose, by (user id, scope): one query for the batch,
    and none when no message is of a type that honours them."""
    users = {
        m.user_id for m in messages if (info := type_info_get(m.type_id)) and info.digest_cadence
    }
    if not users:
        return {}
    rows = DigestCadence.objects.filter(any_of("user_id", users)).values_list(
        "user_id", "scope", "cadence", "at", "weekday"
    )
    return {
        (user_id, scope): CadenceChoice(Cadence(cadence), at, weekday)
        for user_id, scope, cadence, at, weekday in rows
    }


def _due_at(
    message: Message,
    info: TypeInfo,
    cadences: dict[tuple[object, str], CadenceChoice],
    now: datetime,
    fallback: timedelta | None = None,
) -> datetime | None:
    """When a digest this message opens is due: at the person's cadence when the type honours
    it and they chose one (for this type, or else for all), else at the end of the type's
    window (or `fallback`'s). None: the message is not collected (it goes as it comes)."""
    if info.digest_cadence:
        choice = cadences.get((message.user_id, message.type_id)) or cadences.get(
            (message.user_id, "")
        )
        if choice is not None and choice.cadence == Cadence.IMMEDIATELY:
            return now + fallback if fallback is not None else None
        if choice is not None:
            return digest_due_at(choice, zone_of(recipient_for(message.user).time_zone), now)
    window = info.digest_window or fallback
    return now + window if window is not None else None


def digests_collect(messages: Sequence[Message], now: datetime) -> set[int]:
    """Collect the messages of digest types into their open digests; returns the ids collected
    (they count as routed now, with no delivery: the caller routes the rest). Inside the
    caller's transaction, which holds the messages' locks."""
    cadences = cadences_of(messages)
    wanted: list[tuple[Message, TypeInfo, datetime]] = []
    for message in _lock_order(messages):
        info = _rule(message)
        if info is None or (message.not_before is not None and message.not_before > now):
            continue  # a message scheduled for later goes at its time, alone
        due = _due_at(message, info, cadences, now)
        if due is None:
            continue  # no window for this person: it goes as it comes
        wanted.append((message, info, due))
    if not wanted:
        return set()
    if connection.vendor == "postgresql":
        return _collect_many(wanted, now)
    collected: set[int] = set()
    for message, info, due in wanted:
        digest, opened = _open_digest(message, message.digest_key or "", due, now)
        if opened and info.digest_first_now:
            continue  # the first of its window: routed at once, alone
        _attach(message, digest, now)
        collected.add(message.pk)
    return collected


DigestKey = tuple[object, str, str]  # (user id, type key, digest key)


def _collect_many(wanted: list[tuple[Message, TypeInfo, datetime]], now: datetime) -> set[int]:
    """`digests_collect` for a batch in three statements: every open digest the batch needs is
    opened or locked by one INSERT ... ON CONFLICT DO UPDATE in the one order every run uses
    (`wanted` is in lock order), its count set by one UPDATE and the messages attached by
    another. A digest another run is opening is waited for at the conflict and then taken."""
    first_due: dict[DigestKey, datetime] = {}
    for message, _, due in wanted:
        first_due.setdefault(_key(message), due)
    digests = _open_digests(first_due, now)
    counts: dict[DigestKey, int] = {}
    attach: list[tuple[int, int, datetime, bool]] = []
    for message, info, _ in wanted:
        key = _key(message)
        digest, opened, _ = digests[key]
        if opened and info.digest_first_now and key not in counts:
            counts[key] = 0  # the first of its window: routed at once, alone
            continue
        counts[key] = counts.get(key, 0) + 1
        attach.append((message.pk, digest, now, False))
    update_rows(
        Digest,
        ("count",),
        [(digests[key][0], digests[key][2] + added) for key, added in counts.items() if added],
    )
    update_rows(Message, ("digest", "routed_at", "throttled_into_digest"), attach)
    return {pk for pk, _, _, _ in attach}


def _key(message: Message) -> DigestKey:
    return (message.user_id, message.type_id, message.digest_key or "")


OPEN_DIGESTS = """
INSERT INTO {table} AS d (user_id, type_id, key, state, opened_at, due_at, count)
VALUES {values}
ON CONFLICT (user_id, type_id, key) WHERE state = 'open'
DO UPDATE SET count = d.count
RETURNING d.id, d.user_id, d.type_id, d.key, d.count, (d.xmax = 0) AS opened
"""


def _open_digests(
    first_due: dict[DigestKey, datetime], now: datetime
) -> dict[DigestKey, tuple[int, bool, int]]:
    """Each key's open digest, locked: (its id, whether this call opened it, its count). A new
    one is due when the first message that opens it says. The no-op update on conflict is what
    locks an open digest (and waits for one another run is opening, then takes it)."""
    keys = list(first_due)
    user_field = Digest._meta.get_field("user")
    values = ", ".join(["(%s, %s, %s, %s, %s, %s, 0)"] * len(keys))
    params: list[Any] = []
    for user_id, type_key, key in keys:
        params += [
            user_field.get_db_prep_value(user_id, connection),
            type_key,
            key,
            D.OPEN,
            now,
            first_due[(user_id, type_key, key)],
        ]
    sql = OPEN_DIGESTS.format(table=table_name(Digest), values=values)
    with connection.cursor() as cursor:
        cursor.execute(sql, params)
        rows = cursor.fetchall()
    by_key = {
        (user_field.to_python(user_id), type_key, key): (pk, bool(opened), count)
        for pk, user_id, type_key, key, count, opened in rows
    }
    missing = set(keys) - set(by_key)
    if missing:  # a key whose user id the database spells differently than the caller
        raise RuntimeError(f"no open digest came back for {sorted(map(str, missing))[:3]}")
    return by_key


def digests_fold(messages: Sequence[Message], now: datetime) -> set[int]:
    """Fold messages their throttle stopped into the open digest for their key (the digest key,
    or else the throttle key), for the types that fold rather than drop; returns the ids folded
    (they count as routed, marked `throttled_into_digest`). A digest they open is due at the
    person's cadence or the type's digest window, or else when the throttle's window ends."""
    folded: set[int] = set()
    cadences = cadences_of(messages)
    for message in _lock_order(messages):
        info = _rule(message)
        if info is None or not info.throttle_folds or info.throttle is None:
            continue
        due = _due_at(message, info, cadences, now, fallback=info.throttle.window)
        assert due is not None  # the throttle's window is the fallback
        key = message.digest_key or message.throttle_key or ""
        digest, _ = _open_digest(message, key, due, now)
        _attach(message, digest, now, throttled=True)
        folded.add(message.pk)
    return folded


def _lock_order(messages: Sequence[Message]) -> list[Message]:
    # Digests are locked in one order by every run (by person, type and key), so two runs
    # touching the same two digests never wait for each other crosswise.
    return sorted(
        messages,
        key=lambda m: (
            str(m.user_id),
            m.type_id,
            m.digest_key or m.throttle_key or "",
            m.created_at,
            m.pk,
        ),
    )


def _attach(message: Message, digest: int, now: datetime, *, throttled: bool = False) -> None:
    Digest.objects.filter(pk=digest).update(count=F("count") + 1)
    Message.objects.filter(pk=message.pk).update(
        digest_id=digest, routed_at=now, throttled_into_digest=throttled
    )


def _open_digest(message: Message, key: str, due: datetime, now: datetime) -> tuple[int, bool]:
    """The person's open digest for the type and `key`, locked: (its id, whether this call
    opened it). Two runs opening one at once meet at the partial unique index; the loser
    waits for the winner's commit and takes its digest. An open digest keeps the due time it
    opened with, even when the person changes their cadence meanwhile."""
    for _ in range(3):
        found = (
            Digest.objects.select_for_update()
            .filter(user_id=message.user_id, type_id=message.type_id, key=key, state=D.OPEN)
            .values_list("pk", flat=True)
            .first()
        )
        if found is not None:
            return found, False
        made = insert_rows(
            Digest,
            ("user", "type", "key", "state", "opened_at", "due_at", "count"),
            [(message.user_id, message.type_id, key, D.OPEN, now, due, 0)],
            returning=("id",),
            ignore_conflicts=True,
        )
        if made:
            return made[0][0], True
    raise RuntimeError(f"no open digest could be made or found for message {message.pk}")


def digests_flush(*, now: datetime | None = None, limit: int = 500) -> FlushReport:
    """Send the open digests whose window has ended (up to `limit`), each as one message, in
    one transaction. Safe to run twice at once: another run's digests are skipped."""
    now = now or timezone.now()
    report = FlushReport()
    with transaction.atomic():
        due = list(
            Digest.objects.select_for_update(skip_locked=True)
            .filter(state=D.OPEN, due_at__lte=now)
            .order_by("due_at", "pk")[:limit]
        )
        report.digests = len(due)
        if not due:
            return report
        # All together first: one read of what they collected, one insert of their messages
        # and one publish per thousand (a digest at a time cost three statements, a savepoint
        # and a publish each: a third of the flush).
        try:
            with transaction.atomic():
                report.sent, report.empty = _flush_many(due, now)
            return report
        except DatabaseError:
            raise  # the database, not a digest: the run's transaction is lost anyway
        except Exception:
            log.exception("a flush of %s digests failed; each is tried alone", len(due))
        for digest in due:
            try:
                with transaction.atomic():  # one digest that cannot be sent holds up no other
                    sent, empty = _flush_many([digest], now)
                report.sent, report.empty = report.sent + sent, report.empty + empty
            except DatabaseError:
                raise
            except Exception:
                log.exception("digest %s could not be sent; the next flush tries again", digest.pk)
    return report


Item = tuple[dict[str, object], datetime, object, int | None]  # context, at, channels, topic


def _flush_many(due: Sequence[Digest], now: datetime) -> tuple[int, int]:
    """Close these locked digests: each that collected something as one message, the others
    empty. (sent, empty)."""
    items: dict[int, list[Item]] = {digest.pk: [] for digest in due}
    collected = (
        Message.objects.filter(digest_id__in=list(items))
        .order_by("digest_id", "created_at", "pk")
        .values_list("digest_id", "context", "created_at", "channels", "topic_id")
    )
    for digest_id, values, at, channels, topic_id in collected:
        items[digest_id].append((values, at, channels, topic_id))
    sending = [digest for digest in due if items[digest.pk]]
    written = messages_create(rows=[_digest_row(d, items[d.pk]) for d in sending])
    for digest, message in zip(sending, written.messages, strict=True):
        digest.message = message
    update_rows(
        Digest,
        ("state", "count", "flushed_at", "message"),
        [
            (
                digest.pk,
                D.SENT if items[digest.pk] else D.EMPTY,
                len(items[digest.pk]),
                now,
                digest.message.pk if digest.message is not None else None,
            )
            for digest in due
        ],
    )
    return len(sending), len(due) - len(sending)


def _digest_row(digest: Digest, items: list[Item]) -> NewMessage:
    info = type_info_get(digest.type_id)
    assert info is not None  # the digest's type: deleting it deletes its digests
    newest = dict(items[-1][0]) if isinstance(items[-1][0], dict) else {}
    context = {
        **newest,
        "digest": {
            "count": len(items),
            "key": digest.key,
            "messages": [
                {**(values if isinstance(values, dict) else {}), "at": at.isoformat()}
                for values, at, _, _ in items[-MAX_ITEMS:]
            ],
            "since": digest.opened_at.isoformat(),
        },
    }
    return NewMessage(
        user_id=digest.user_id,
        type_key=digest.type_id,
        context=context,
        # The channels the newest caller named (none: the type's routing decides).
        channels=list(channels) if isinstance(channels := items[-1][2], list) else [],
        lane=info.lane,
        idempotency_key=f"digest:{digest.pk}",
        priority=info.priority,
        digest_key=digest.key or None,
        digest_id=digest.pk,
        # The one topic its items were all sent to (a topic snooze applies to the digest as to
        # them); items of several topics, or sent directly, make a digest of no topic.
        topic_id=topics.pop() if len(topics := {item[3] for item in items}) == 1 else None,
    )


def digests_flush_due(*, budget_s: float = 10.0, limit: int = 500) -> FlushReport:
    """Flush runs one after another while each finds a full batch and `budget_s` lasts (the
    beat task): a burst of windows ending together goes out in one tick."""
    report = FlushReport()
    started = time.monotonic()
    while True:
        run = digests_flush(limit=limit)
        report.sent += run.sent
        report.empty += run.empty
        report.digests += run.digests
        if run.digests < limit or time.monotonic() - started >= budget_s:
            return report
