"""A batch whose run died is not run whole again, and a message that keeps killing its worker
is failed alone, with its reason.

Every prepare run first counts an attempt on its unrouted messages in PostgreSQL, committed
before the work starts (one UPDATE per batch, `prepare_attempts_start`). A message that is
still unrouted after a run started on it is one whose run died: the process was killed, ran
out of memory, passed the hard time limit, or raised. So a run that finds earlier attempts on
its messages does not repeat the batch: a message whose runs died NOTIFIER_PREPARE_MAX_CRASHES
times is failed with that reason, and the others go on one per task, where a poison message
can take down only itself; the messages that never died still route together. When the soft
time limit strikes mid-render, the message being rendered fails alone and the rest of the batch
goes on in a fresh task (`RenderTimedOut`).

The re-queue job and the campaign fan-out follow the same rule (`unrouted_republish`,
`messages_prepare_one_by_one`).
"""

from __future__ import annotations

import logging
from collections import Counter, defaultdict
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from functools import partial

from django.conf import settings
from django.db import connection, transaction

from notifier import dispatch
from notifier.db import table_name
from notifier.models import Message
from notifier.queues import Lane
from notifier.services.messages import NewMessage, messages_insert_new
from notifier.services.pipeline import Failure, RenderTimedOut, messages_fail, messages_prepare
from notifier.status import DeliveryStatus, Reason

log = logging.getLogger(__name__)
S = DeliveryStatus


@dataclass(frozen=True, slots=True)
class Started:
    """A message a prepare run has counted itself on."""

    pk: int
    lane: Lane
    attempts: int  # prepare runs started on it, this one included

    @property
    def crashes(self) -> int:
        """Runs before this one that started on the message and never routed it."""
        return self.attempts - 1


def crashed_failure(crashes: int) -> Failure:
    return Failure(
        Reason.PREPARE_CRASHED,
        f"Preparing this message stopped its worker {crashes} times (killed, out of memory or "
        "over the time limit), so it was set aside; the rest of its batch went on without it",
    )


def _ids_sql(ids: Sequence[int]) -> str:
    return ", ".join(["%s"] * len(ids))


def prepare_attempts_start(message_ids: Sequence[int]) -> list[Started]:
    """Count an attempt on each unrouted message of the batch that no other run holds.

    The prepare task runs in autocommit, so the count is committed before the work starts and
    survives a run that dies. Messages another run holds (locked) are neither counted nor
    returned: that run owns them."""
    if not message_ids:
        return []
    table = table_name(Message)
    lock = " FOR UPDATE SKIP LOCKED" if connection.vendor == "postgresql" else ""
    with connection.cursor() as cursor:
        cursor.execute(
            f"UPDATE {table} SET prepare_attempts = prepare_attempts + 1 WHERE id IN "
            f"(SELECT id FROM {table} WHERE id IN ({_ids_sql(message_ids)}) "
            f"AND routed_at IS NULL{lock}) RETURNING id, lane, prepare_attempts",
            list(message_ids),
        )
        rows = cursor.fetchall()
    return [Started(pk, Lane(lane), attempts) for pk, lane, attempts in sorted(rows)]


def prepare_attempts_undo(message_ids: Sequence[int]) -> None:
    """Take back the attempt a run counted on messages it hands on without working on them:
    they did not die, and the run that takes them over counts its own."""
    if not message_ids:
        return
    with connection.cursor() as cursor:
        cursor.execute(
            f"UPDATE {table_name(Message)} SET prepare_attempts = prepare_attempts - 1 "
            f"WHERE id IN ({_ids_sql(message_ids)}) AND prepare_attempts > 0",
            list(message_ids),
        )


def _publish_alone(messages: Iterable[Started]) -> int:
    count = 0
    for message in messages:
        dispatch.publish_prepare([message.pk], message.lane)
        count += 1
    return count


def _publish_together(messages: Iterable[Started]) -> int:
    by_lane: dict[Lane, list[int]] = defaultdict(list)
    for message in messages:
        by_lane[message.lane].append(message.pk)
    for lane, ids in by_lane.items():
        dispatch.publish_prepare(ids, lane)
    return sum(len(ids) for ids in by_lane.values())


def messages_prepare_guarded(*, message_ids: Sequence[int]) -> Counter[str]:
    """The prepare task's service: count the attempt, then route the batch, or split it and set
    aside what keeps killing its worker. Returns counts of the statuses written (and of the
    messages handed on: `isolated`, `republished`)."""
    written: Counter[str] = Counter()
    started = prepare_attempts_start(message_ids)
    limit = settings.NOTIFIER_PREPARE_MAX_CRASHES
    crashed = {m.pk: crashed_failure(m.crashes) for m in started if m.crashes >= limit}
    if crashed:
        written[str(S.FAILED)] += messages_fail(failures=crashed)
    alive = [m for m in started if m.crashes < limit]
    suspects = [m for m in alive if m.crashes]
    if suspects and len(alive) > 1:
        # A run with these in it died: one task each, so that if one of them is the cause, it
        # takes down nobody else next time. The others route together here.
        prepare_attempts_undo([m.pk for m in suspects])
        written["isolated"] = _publish_alone(suspects)
        alive = [m for m in alive if not m.crashes]
    if not alive:
        return written
    try:
        written.update(messages_prepare(message_ids=[m.pk for m in alive]))
    except RenderTimedOut as cut:  # the batch's transaction rolled back: nothing was written
        written[str(S.FAILED)] += messages_fail(
            failures={cut.message_id: Failure(Reason.RENDER_TIMEOUT, str(cut))}
        )
        rest = [m for m in alive if m.pk != cut.message_id]
        prepare_attempts_undo([m.pk for m in rest])
        written["republished"] = _publish_together(rest)
    return written


def unrouted_republish(rows: Sequence[tuple[int, str, int]]) -> tuple[int, int]:
    """The re-queue job's half for messages never routed, as (id, lane, prepare attempts).

    Never routed yet counted is a message whose runs died (the job passes over those a live run
    holds): at NOTIFIER_PREPARE_MAX_CRASHES it is failed, not published again; below, it goes
    alone in its own task, so it cannot block messages that merely lost their task, which go
    in batches as before. Returns (published, failed)."""
    limit = settings.NOTIFIER_PREPARE_MAX_CRASHES
    crashed = {pk: crashed_failure(attempts) for pk, _, attempts in rows if attempts >= limit}
    failed = messages_fail(failures=crashed) if crashed else 0
    alive = [Started(pk, Lane(lane), attempts) for pk, lane, attempts in rows if pk not in crashed]
    published = _publish_alone(m for m in alive if m.attempts)
    published += _publish_together(m for m in alive if not m.attempts)
    return published, failed


def messages_prepare_one_by_one(
    *, rows: Sequence[NewMessage], failures: Mapping[str, Failure] | None = None
) -> list[int]:
    """Write new messages unrouted and publish one prepare task for each, after commit.

    For a batch of new messages that could not be routed together (a campaign fan-out batch
    whose run died, or ran out of time): each message is then prepared in its own task, where a
    poison one takes down only itself and is set aside by the rules above. Rows whose key
    another message has are skipped; rows named in `failures` (by idempotency key) are failed
    at once with their reason instead. Returns the new messages' ids."""
    failures = failures or {}
    with transaction.atomic():
        ids = messages_insert_new(rows=rows)
        written = list(
            Message.objects.filter(pk__in=ids).values_list("pk", "idempotency_key", "lane")
        )
        failed = {pk: failures[key] for pk, key, _ in written if key and key in failures}
        if failed:
            messages_fail(failures=failed)
        for pk, _, lane in written:
            if pk not in failed:
                transaction.on_commit(
                    partial(dispatch.publish_prepare, [pk], Lane(lane)), robust=True
                )
    return ids
