"""Retention: archive, then delete, delivery-log rows older than NOTIFIER_RETENTION_DAYS.

The unit is a Message with everything hanging from it: its deliveries, their events and the
in-app inbox item. A message goes only when the whole of it is old and finished, so no support
timeline is ever left half there:

- the message was made before the cutoff and has been routed (an unrouted one is work the
  re-queue job still owes), and every one of its deliveries is in a terminal status and last
  changed before the cutoff: nothing pending, held, queued or sending is touched;
- it belongs to no campaign that is still live (running, paused, scheduled...): a live
  campaign's funnel roll-up and a triggered campaign's re-entry window count its messages;
- no Conversion or Unsubscribe points at it: their FKs are SET NULL, and a conversion whose
  message vanished would read as a hold-out conversion in the funnel.

Each batch of NOTIFIER_RETENTION_BATCH messages is one short transaction: the messages are
locked with FOR UPDATE SKIP LOCKED (two runs at once take disjoint batches, and neither waits
on the other), their deliveries are locked and checked again, the batch is written to a gzip
JSON Lines file in NOTIFIER_ARCHIVE_DIR (one line per message, deliveries, events and inbox
item nested) and fsynced, and only then deleted. A failed batch removes its file and rolls
back. A crash between the file's rename and the commit leaves a file whose rows are archived
again by the next run: the archive is at-least-once, keyed by message id, never lossy.

The workflows' own rows (closed digests, finished topic sends, ended snoozes, throttle slots out
of their window) are pruned after the messages by notifier.services.workflow_retention.

Files, not an archive table: the point is to take the bytes out of the primary database (its
indexes, vacuum and backups); gzip makes them about ten times smaller, and they can go to cheap
storage and be read with `zcat | jq`.
"""

from __future__ import annotations

import gzip
import json
import os
import time
import uuid
from collections import defaultdict
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

from django.conf import settings
from django.core.exceptions import ImproperlyConfigured
from django.core.serializers.json import DjangoJSONEncoder
from django.db import connection, transaction
from django.db.models import TextField
from django.db.models.functions import Cast
from django.utils import timezone

from notifier.db import readable, table_name
from notifier.hooks import retention_keeps
from notifier.models import Delivery, DeliveryEvent, Digest, InboxItem, Message
from notifier.models.preferences import Unsubscribe
from notifier.models.series import SERIES_KEY_PREFIX
from notifier.selectors import MESSAGE_CALLER_FIELDS
from notifier.services.workflow_retention import WorkflowPruneReport, workflow_rows_prune
from notifier.status import TERMINAL

# Below this the pipeline's own look-backs (the 30-day feedback penalty, a week's caps) would
# lose rows they read.
MIN_RETENTION_DAYS = 30
ARCHIVE_FORMAT = 1


@dataclass
class RetentionReport:
    cutoff: datetime | None
    dry_run: bool = False
    batches: int = 0
    messages: int = 0
    deliveries: int = 0
    events: int = 0
    inbox_items: int = 0
    files: list[str] = field(default_factory=list)
    # False when the time budget ran out with eligible rows left (the next run goes on).
    finished: bool = True
    # The workflows' rows pruned (or, dry, that would be) after the messages.
    workflows: WorkflowPruneReport = field(default_factory=WorkflowPruneReport)

    def summary(self) -> str:
        pruned = f"{'would prune' if self.dry_run else 'pruned'} {self.workflows.summary()}"
        if self.cutoff is None:
            return f"retention is off (NOTIFIER_RETENTION_DAYS=0); {pruned}"
        verb = "would archive" if self.dry_run else "archived and deleted"
        tail = "" if self.finished else "; time budget spent, the next run continues"
        return (
            f"{verb} {self.messages} messages, {self.deliveries} deliveries, {self.events} "
            f"events, {self.inbox_items} inbox items older than {self.cutoff:%Y-%m-%d %H:%M} "
            f"UTC in {self.batches} batches; {pruned}{tail}"
        )


def _candidates_sql(*, lock: bool) -> str:
    message, delivery = table_name(Message), table_name(Delivery)
    terminal = ", ".join(f"'{status}'" for status in sorted(TERMINAL))
    # What plug-ins keep (campaigns: a live campaign's messages, those a conversion points at).
    kept = "".join(f"\n          AND NOT ({keep})" for keep in retention_keeps())
    # A date series' step stays while a later step of the same date (its cancel key) still
    # waits: that step, when it comes up, reads the earlier steps' clicks to stop itself.
    # (cancel_key is indexed; a series is a few steps.)
    series = f"""
          AND NOT (m.cancel_key LIKE '{SERIES_KEY_PREFIX}%%' AND EXISTS (
              SELECT 1 FROM {message} w WHERE w.cancel_key = m.cancel_key AND w.id <> m.id
                AND (w.routed_at IS NULL OR EXISTS (
                    SELECT 1 FROM {delivery} wd WHERE wd.message_id = w.id
                      AND wd.status NOT IN ({terminal})))))"""
    return f"""
        SELECT m.id FROM {message} m
        WHERE m.id > %(after)s AND m.id < %(boundary)s
          AND m.created_at < %(cutoff)s AND m.routed_at IS NOT NULL{kept}{series}
          AND NOT EXISTS (
              SELECT 1 FROM {delivery} d WHERE d.message_id = m.id
                AND (d.status NOT IN ({terminal}) OR d.updated_at >= %(cutoff)s))
          AND NOT EXISTS (SELECT 1 FROM {table_name(Unsubscribe)} u WHERE u.message_id = m.id)
        ORDER BY m.id
        LIMIT %(limit)s
        {"FOR UPDATE OF m SKIP LOCKED" if lock else ""}
    """


def _boundary_id(cutoff: datetime) -> int:
    """The first message id made at or after the cutoff, found by bisecting the primary key.

    Ids grow with created_at (a few concurrent inserts aside, which simply wait a night), so
    every batch is a range scan of the primary key below this bound: no index on created_at
    that every notify() would pay for, and no scan of the recent rows.
    """
    low, high = 1, (Message.objects.order_by("-id").values_list("id", flat=True).first() or 0) + 1
    while low < high:
        middle = (low + high) // 2
        row = Message.objects.filter(id__gte=middle).order_by("id").values("id", "created_at")
        first = row.first()
        if first is None or first["created_at"] >= cutoff:
            high = middle
        else:
            low = first["id"] + 1
    return low


def _rows(model: Any, **lookup: Any) -> list[dict[str, Any]]:
    return list(model.objects.filter(**lookup).order_by("id").values())


def _message_rows(message_ids: list[int]) -> list[dict[str, Any]]:
    """The messages as dicts. One that Python cannot read (a caller's date past the year 9999,
    JSON nested a thousand deep) is archived with its caller's columns as the text PostgreSQL
    holds, instead of failing the run every night."""
    read, unreadable = readable(Message.objects.filter(id__in=message_ids).order_by("id").values())
    rows: list[dict[str, Any]] = [dict(row) for row in read]
    if not unreadable:
        return rows
    kept = [f.attname for f in Message._meta.concrete_fields if f.name not in MESSAGE_CALLER_FIELDS]
    as_text = {f"raw_{name}": Cast(name, TextField()) for name in MESSAGE_CALLER_FIELDS}
    for row in Message.objects.filter(id__in=unreadable).values(*kept, **as_text):
        rows.append(
            {
                key.removeprefix("raw_") if key in as_text else key: value
                for key, value in row.items()
            }
        )
    return sorted(rows, key=lambda row: row["id"])


def _archive_lines(
    messages: Sequence[dict[str, Any]],
    deliveries: Sequence[dict[str, Any]],
    events: Iterable[dict[str, Any]],
    inbox_items: Iterable[dict[str, Any]],
    archived_at: datetime,
) -> list[str]:
    events_of: dict[int, list[dict[str, Any]]] = defaultdict(list)
    for event in events:
        events_of[event["delivery_id"]].append(event)
    inbox_of = {item["delivery_id"]: item for item in inbox_items}
    deliveries_of: dict[int, list[dict[str, Any]]] = defaultdict(list)
    for delivery in deliveries:
        deliveries_of[delivery["message_id"]].append(
            {
                **delivery,
                "events": events_of.get(delivery["id"], []),
                "inbox_item": inbox_of.get(delivery["id"]),
            }
        )
    return [
        json.dumps(
            {
                "format": ARCHIVE_FORMAT,
                "archived_at": archived_at,
                "message": message,
                "deliveries": deliveries_of.get(message["id"], []),
            },
            cls=DjangoJSONEncoder,
            ensure_ascii=False,
            sort_keys=True,
        )
        for message in messages
    ]


def _write_archive(directory: Path, name: str, lines: Sequence[str]) -> Path:
    """Write, fsync and rename into place: the file is whole on disk before any row goes."""
    directory.mkdir(parents=True, exist_ok=True)
    final = directory / name
    partial = directory / f".{name}.partial"
    # The archive holds what the messages said to whom: readable by this user only.
    with os.fdopen(os.open(partial, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600), "wb") as raw:
        with gzip.GzipFile(fileobj=raw, mode="wb", filename=name.removesuffix(".gz")) as zipped:
            for line in lines:
                zipped.write(line.encode())
                zipped.write(b"\n")
        raw.flush()
        os.fsync(raw.fileno())
    os.replace(partial, final)
    directory_fd = os.open(directory, os.O_RDONLY)
    try:
        os.fsync(directory_fd)
    finally:
        os.close(directory_fd)
    return final


def _delete(message_ids: list[int], delivery_ids: list[int]) -> None:
    with connection.cursor() as cursor:
        if delivery_ids:
            cursor.execute(
                f"DELETE FROM {table_name(DeliveryEvent)} WHERE delivery_id = ANY(%s)",
                [delivery_ids],
            )
            # Fallbacks stand in for a delivery of the same message, but keep Django's SET NULL
            # for any other row that points here.
            cursor.execute(
                f"UPDATE {table_name(Delivery)} SET fallback_of_id = NULL "
                "WHERE fallback_of_id = ANY(%s) AND NOT (message_id = ANY(%s))",
                [delivery_ids, message_ids],
            )
        cursor.execute(
            f"DELETE FROM {table_name(InboxItem)} WHERE message_id = ANY(%s)", [message_ids]
        )
        # A digest outlives the message it was sent as (Django's SET NULL, done here).
        cursor.execute(
            f"UPDATE {table_name(Digest)} SET message_id = NULL WHERE message_id = ANY(%s)",
            [message_ids],
        )
        cursor.execute(
            f"DELETE FROM {table_name(Delivery)} WHERE message_id = ANY(%s)", [message_ids]
        )
        cursor.execute(f"DELETE FROM {table_name(Message)} WHERE id = ANY(%s)", [message_ids])


def _candidates(
    *, after: int, boundary: int, cutoff: datetime, limit: int, lock: bool
) -> list[int]:
    """The next message ids past `after` that may go (locked, skipping locked ones, if asked)."""
    params: dict[str, Any] = {
        "after": after,
        "boundary": boundary,
        "cutoff": cutoff,
        "limit": limit,
    }
    with connection.cursor() as cursor:
        cursor.execute(_candidates_sql(lock=lock), params)
        return [row[0] for row in cursor.fetchall()]


def _archive_batch(
    *, after: int, boundary: int, cutoff: datetime, limit: int, directory: Path, run: str
) -> tuple[int, dict[str, int], Path | None]:
    """One batch in one transaction. Returns the last id scanned (0: nothing left), the
    counts, and the archive file."""
    counts = {"messages": 0, "deliveries": 0, "events": 0, "inbox_items": 0}
    archive: Path | None = None
    try:
        with transaction.atomic():
            candidate_ids = _candidates(
                after=after, boundary=boundary, cutoff=cutoff, limit=limit, lock=True
            )
            if not candidate_ids:
                return 0, counts, None
            # Lock the deliveries too, and check them again: one may have moved since the
            # scan's snapshot (an operator's "retry now" turns failed back into queued).
            deliveries: list[dict[str, Any]] = [
                dict(row)
                for row in Delivery.objects.select_for_update(of=("self",))
                .filter(message_id__in=candidate_ids)
                .order_by("id")
                .values()
            ]
            kept = {
                d["message_id"]
                for d in deliveries
                if d["status"] not in TERMINAL or d["updated_at"] >= cutoff
            }
            message_ids = [pk for pk in candidate_ids if pk not in kept]
            if message_ids:
                deliveries = [d for d in deliveries if d["message_id"] not in kept]
                delivery_ids = [d["id"] for d in deliveries]
                messages = _message_rows(message_ids)
                events = _rows(DeliveryEvent, delivery_id__in=delivery_ids)
                inbox_items = _rows(InboxItem, message_id__in=message_ids)
                lines = _archive_lines(messages, deliveries, events, inbox_items, timezone.now())
                name = (
                    f"delivery-log-{cutoff:%Y%m%d}-{message_ids[0]}-{message_ids[-1]}-{run}"
                    ".jsonl.gz"
                )
                archive = _write_archive(directory, name, lines)
                _delete(message_ids, delivery_ids)
                counts = {
                    "messages": len(messages),
                    "deliveries": len(deliveries),
                    "events": len(events),
                    "inbox_items": len(inbox_items),
                }
    except BaseException:
        if archive is not None:  # rolled back: the rows are still there, so is their next file
            archive.unlink(missing_ok=True)
        raise
    return candidate_ids[-1], counts, archive


def _count_eligible(*, boundary: int, cutoff: datetime, limit: int) -> RetentionReport:
    report = RetentionReport(cutoff=cutoff, dry_run=True)
    after = 0
    while True:
        ids = _candidates(after=after, boundary=boundary, cutoff=cutoff, limit=limit, lock=False)
        if not ids:
            return report
        report.batches += 1
        report.messages += len(ids)
        delivery_ids = list(
            Delivery.objects.filter(message_id__in=ids).values_list("id", flat=True)
        )
        report.deliveries += len(delivery_ids)
        report.events += DeliveryEvent.objects.filter(delivery_id__in=delivery_ids).count()
        report.inbox_items += InboxItem.objects.filter(message_id__in=ids).count()
        after = ids[-1]


def retention_run(
    *,
    days: int | None = None,
    batch_size: int | None = None,
    budget_s: float | None = None,
    archive_dir: Path | str | None = None,
    dry_run: bool = False,
    now: datetime | None = None,
) -> RetentionReport:
    """Archive then delete finished delivery-log rows older than `days` (settings by default),
    batch by batch until none is left or `budget_s` is spent. Safe to run twice, and twice at
    once."""
    days = settings.NOTIFIER_RETENTION_DAYS if days is None else days
    limit = batch_size or settings.NOTIFIER_RETENTION_BATCH
    budget = settings.NOTIFIER_RETENTION_BUDGET_S if budget_s is None else budget_s
    now = now or timezone.now()
    if not days:  # the log is kept whole; the workflows' dead state goes all the same
        report = RetentionReport(cutoff=None, dry_run=dry_run)
        report.workflows = workflow_rows_prune(
            now=now, cutoff=None, limit=limit, deadline=time.monotonic() + budget, dry_run=dry_run
        )
        return report
    if days < MIN_RETENTION_DAYS:
        raise ImproperlyConfigured(
            f"NOTIFIER_RETENTION_DAYS={days}: keep at least {MIN_RETENTION_DAYS} days (the "
            "feedback penalty and the caps read that far back), or 0 to keep everything"
        )
    directory = Path(archive_dir or settings.NOTIFIER_ARCHIVE_DIR)
    cutoff = now - timedelta(days=days)
    boundary = _boundary_id(cutoff)
    deadline = time.monotonic() + budget
    if dry_run:
        report = _count_eligible(boundary=boundary, cutoff=cutoff, limit=limit)
        report.workflows = workflow_rows_prune(
            now=now, cutoff=cutoff, limit=limit, deadline=deadline, dry_run=True
        )
        return report

    report = RetentionReport(cutoff=cutoff)
    run = uuid.uuid4().hex[:8]
    after = 0
    while True:
        after, counts, archive = _archive_batch(
            after=after, boundary=boundary, cutoff=cutoff, limit=limit, directory=directory, run=run
        )
        if not after:
            # After the messages: a digest goes once none of its messages is left.
            report.workflows = workflow_rows_prune(
                now=now, cutoff=cutoff, limit=limit, deadline=deadline
            )
            report.finished = report.workflows.finished
            return report
        if archive is not None:
            report.batches += 1
            report.files.append(str(archive))
        report.messages += counts["messages"]
        report.deliveries += counts["deliveries"]
        report.events += counts["events"]
        report.inbox_items += counts["inbox_items"]
        if time.monotonic() >= deadline:  # checked after a batch: every run makes progress
            # The workflows' rows get their one batch each all the same: a long backlog of
            # messages never holds up the dead state behind it.
            report.workflows = workflow_rows_prune(
                now=now, cutoff=cutoff, limit=limit, deadline=deadline
            )
            report.finished = False
            return report
