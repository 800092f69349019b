"""A batch whose run died is not run whole again, and a message that keeps killing its worker
is failed alone, with its reason.

Every prepare run is recorded before its work starts: one small row (PrepareRun), committed,
which the run's own transaction deletes first thing. A run that dies (killed, out of memory,
over the hard time limit, an error) never commits, so its row stays, and no live transaction
holds it: that is how a dead run is told from one at work. A run first counts the dead runs
among its messages (`dead_runs_count`): each adds one to the crash count of its messages still
unrouted. If it found any, a message whose runs died NOTIFIER_PREPARE_MAX_CRASHES times is
failed with that reason, and the others that died before go on one per task, where a poison
message takes down only itself; the rest route together. When the soft time limit strikes
mid-render (`RenderTimedOut`), the time spent was the whole run's: in a run of one message that
message is failed with the reason, in a run of several nobody is, and each goes on in a task
of its own, with a whole time limit, where only a message slow on its own is blamed.

The hot path pays three small statements per batch (look for dead runs, record the run, delete
the record in the run's transaction), not a new version of every message row. The re-queue job
counts the dead runs it finds and never re-publishes a message past the limit
(`unrouted_republish`); the campaign fan-out hands a batch that died to this pipeline one
message at a time (`messages_prepare_one_by_one`).
"""

from __future__ import annotations

import json
import logging
from collections import Counter, defaultdict
from collections.abc import Collection, Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from functools import partial

from django.conf import settings
from django.db import OperationalError, connection, transaction
from django.db.models import F
from django.utils import timezone
from psycopg2.errors import DeadlockDetected

from notifier import dispatch
from notifier.db import table_name
from notifier.models import Message, PrepareRun
from notifier.queues import Lane
from notifier.services.messages import NewMessage, messages_insert_new
from notifier.services.pipeline import (
    Failure,
    RenderTimedOut,
    messages_fail,
    messages_prepare,
    prepare_statistics_refresh,
)
from notifier.status import DeliveryStatus, Reason

log = logging.getLogger(__name__)
S = DeliveryStatus


@dataclass(frozen=True, slots=True)
class Unrouted:
    """A message a run or the re-queue job is about to hand on."""

    pk: int
    lane: Lane
    crashes: int  # prepare runs that died with it in them
    is_test: bool = False  # a marketer's test send: prepared on its own queue (notifier.queues)


def crashed_failure(crashes: int) -> Failure:
    return Failure(
        Reason.PREPARE_CRASHED,
        f"Preparing this message stopped its worker {crashes} times (killed, out of memory or "
        "over the time limit), so it was set aside; the rest of its batch went on without it",
    )


def _unheld_runs() -> list[tuple[int, list[int]]]:
    """Recorded runs that no live run holds: runs that died (or, for an instant, one between
    recording itself and opening its transaction). One process only elsewhere than
    PostgreSQL: every run recorded is then over."""
    lock = " FOR UPDATE SKIP LOCKED" if connection.vendor == "postgresql" else ""
    with connection.cursor() as cursor:
        cursor.execute(f"SELECT id, message_ids FROM {table_name(PrepareRun)}{lock}")
        rows = cursor.fetchall()
    return [(pk, json.loads(ids) if isinstance(ids, str) else ids) for pk, ids in rows]


def dead_runs_count(
    *, among: Collection[int] | None = None, started_before: datetime | None = None
) -> int:
    """Count the dead runs that had any of `among` in them (every dead run, when None) and
    started before `started_before` (when given): each adds one crash to each of its messages
    still unrouted, and its record goes. Returns how many dead runs were counted."""
    wanted = set(among) if among is not None else None
    dead = [pk for pk, ids in _unheld_runs() if wanted is None or not wanted.isdisjoint(ids)]
    if not dead:
        return 0
    with transaction.atomic():
        runs = PrepareRun.objects.select_for_update(skip_locked=True).filter(pk__in=dead)
        if started_before is not None:
            runs = runs.filter(started_at__lt=started_before)
        counted = list(runs.values_list("pk", "message_ids"))
        crashes: Counter[int] = Counter(pk for _, ids in counted for pk in ids)
        by_count: dict[int, list[int]] = defaultdict(list)
        for pk, count in crashes.items():
            by_count[count].append(pk)
        for count, ids in by_count.items():
            Message.objects.filter(pk__in=ids, routed_at__isnull=True).update(
                prepare_crashes=F("prepare_crashes") + count
            )
        PrepareRun.objects.filter(pk__in=[pk for pk, _ in counted]).delete()
    if counted:
        log.warning(
            "counted %d prepare runs that died, over %d messages", len(counted), len(crashes)
        )
    return len(counted)


def _publish_alone(messages: Iterable[Unrouted]) -> int:
    count = 0
    for message in messages:
        dispatch.publish_prepare_of([message.pk], message.lane, test_sends=message.is_test)
        count += 1
    return count


def _publish_together(messages: Iterable[Unrouted]) -> int:
    by_queue: dict[tuple[Lane, bool], list[int]] = defaultdict(list)
    for message in messages:
        by_queue[(message.lane, message.is_test)].append(message.pk)
    for (lane, is_test), ids in by_queue.items():
        dispatch.publish_prepare_of(ids, lane, test_sends=is_test)
    return sum(len(ids) for ids in by_queue.values())


UNROUTED_COLUMNS = ("pk", "lane", "prepare_crashes", "is_test")  # all read whatever the row holds


def unrouted_of(rows: Iterable[tuple[int, str, int, bool]]) -> list[Unrouted]:
    return [Unrouted(pk, Lane(lane), crashes, is_test) for pk, lane, crashes, is_test in rows]


def _unrouted(message_ids: Sequence[int]) -> list[Unrouted]:
    rows = Message.objects.filter(pk__in=list(message_ids), routed_at__isnull=True).order_by("pk")
    return unrouted_of(rows.values_list(*UNROUTED_COLUMNS))


def messages_prepare_guarded(*, message_ids: Sequence[int]) -> Counter[str]:
    """The prepare task's service: route the batch, unless runs of it died before; then set
    aside what keeps killing its worker and split the rest. Returns counts of the statuses
    written (and of the messages handed on: `isolated`, `republished`)."""
    written: Counter[str] = Counter()
    batch = list(message_ids)
    if dead_runs_count(among=batch):
        limit = settings.NOTIFIER_PREPARE_MAX_CRASHES
        messages = _unrouted(batch)
        crashed = {m.pk: crashed_failure(m.crashes) for m in messages if m.crashes >= limit}
        if crashed:
            written[str(S.FAILED)] += messages_fail(failures=crashed)
        alive = [m for m in messages if m.crashes < limit]
        if len(alive) > 1 and any(m.crashes for m in alive):
            # They died together: one task each, so that whichever of them is the cause takes
            # down nobody else next time. Those that never died route together here.
            written["isolated"] = _publish_alone(m for m in alive if m.crashes)
            alive = [m for m in alive if not m.crashes]
        batch = [m.pk for m in alive]
        if not batch:
            return written
    prepare_statistics_refresh(batch)  # a bulk batch of many: the statistics kept up
    # Committed before the work: if this run dies, the record stays and says so.
    run = PrepareRun.objects.create(message_ids=batch, started_at=timezone.now())
    try:
        written.update(_prepare_again_after_a_deadlock(batch, run.pk))
    except RenderTimedOut as cut:  # rolled back, record included: nothing was written
        PrepareRun.objects.filter(pk=run.pk).delete()  # over, and not dead
        if len(batch) == 1:  # alone in its task: the time it took was its own
            written[str(S.FAILED)] += messages_fail(
                failures={cut.message_id: Failure(Reason.RENDER_TIMEOUT, str(cut))}
            )
        else:
            # The limit is the run's: every message before this one spent it, and the one
            # being rendered when it struck may be innocent. Nobody is failed; each goes on in
            # a task of its own, with a whole limit, where one too slow alone is failed.
            log.warning(
                "the soft time limit struck a run of %d messages; each goes on alone", len(batch)
            )
            written["republished"] = _publish_alone(_unrouted(batch))
    return written


def _prepare_again_after_a_deadlock(batch: list[int], run_id: int) -> Counter[str]:
    """`messages_prepare`, run once more at once when PostgreSQL aborted it to break a deadlock
    (the known lock-order window of collect, throttles and fold: notifier.services.pipeline).
    Rolled back whole, its run record back in place: not a crash of its messages, and the
    other run holds the locks now. A second abort goes the way of any error."""
    try:
        return messages_prepare(message_ids=batch, run_id=run_id)
    except OperationalError as exc:
        if not isinstance(exc.__cause__, DeadlockDetected):
            raise
        log.info("a prepare run of %d messages broke a deadlock; run again", len(batch))
        return messages_prepare(message_ids=batch, run_id=run_id)


def unrouted_republish(rows: Sequence[Unrouted]) -> tuple[int, int]:
    """The re-queue job's half for messages never routed; count the dead runs first
    (`dead_runs_count`).

    A message whose runs died NOTIFIER_PREPARE_MAX_CRASHES times is failed, not published
    again (unless a live run holds it); one that died fewer times goes alone in its own task,
    so it cannot take down messages that merely lost their task, which go in batches as
    before. Returns (published, failed)."""
    limit = settings.NOTIFIER_PREPARE_MAX_CRASHES
    crashed = {m.pk: crashed_failure(m.crashes) for m in rows if m.crashes >= limit}
    failed = messages_fail(failures=crashed) if crashed else 0
    alive = [m for m in rows if m.pk not in crashed]
    published = _publish_alone(m for m in alive if m.crashes)
    published += _publish_together(m for m in alive if not m.crashes)
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
            Message.objects.filter(pk__in=ids).values_list(
                "pk", "idempotency_key", "lane", "is_test"
            )
        )
        failed = {pk: failures[key] for pk, key, _, _ in written if key and key in failures}
        if failed:
            messages_fail(failures=failed)
        for pk, _, lane, is_test in written:
            if pk not in failed:
                transaction.on_commit(
                    partial(dispatch.publish_prepare_of, [pk], Lane(lane), test_sends=is_test),
                    robust=True,
                )
    return ids
