"""Retention of the workflows' own rows: closed digests, finished topic sends, ended snoozes and
throttle slots out of their window, pruned by the nightly retention job in bounded batches.

Two kinds of row, two rules:

- **Records** (a digest that was sent or closed empty, a topic send that handed everyone out)
  go once they are older than NOTIFIER_RETENTION_DAYS, like the delivery log, and never while
  retention is off. A closed digest goes only once no message points at it any more (neither
  the messages it collected nor its own: the support timeline reads "collected into digest
  #12" through `Message.digest`), so it leaves after its messages, never before: deleting it
  earlier would have PostgreSQL set their `digest` to NULL and the timeline lose the link.
  An open digest, or a topic send still walking, is never touched.
- **Dead state** (a snooze whose end has passed, a throttle slot older than its type's window,
  or of a type that no longer throttles) is read by nothing: routing ignores it already. It
  goes every night, whatever the retention setting; a running snooze, one until unmuted, and a
  slot inside its window stay.

Each batch is one short transaction that takes its rows `FOR UPDATE SKIP LOCKED` and checks the
rule again under the lock (PostgreSQL re-reads a row changed meanwhile): a person snoozing again
at that moment, or a flush, is neither waited for nor undone.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from django.db import connection, transaction

from notifier.db import table_name
from notifier.models import (
    Digest,
    DigestState,
    Message,
    NotificationType,
    Snooze,
    ThrottleSlot,
    TopicSend,
    TopicSendStatus,
    TopicSnooze,
)

KINDS = ("digests", "topic_sends", "snoozes", "topic_snoozes", "throttle_slots")


@dataclass
class WorkflowPruneReport:
    counts: dict[str, int] = field(default_factory=lambda: dict.fromkeys(KINDS, 0))
    finished: bool = True

    def summary(self) -> str:
        return ", ".join(f"{count} {kind.replace('_', ' ')}" for kind, count in self.counts.items())


@dataclass(frozen=True)
class _Rule:
    table: str
    where: str  # on alias r; %(now)s, %(cutoff)s
    record: bool  # kept while retention is off
    join: str = ""


def _rule(kind: str) -> _Rule:
    if kind == "digests":
        closed = ", ".join(f"'{state}'" for state in (DigestState.SENT, DigestState.EMPTY))
        return _Rule(
            table_name(Digest),
            f"""r.state IN ({closed}) AND r.flushed_at < %(cutoff)s
                AND NOT EXISTS (SELECT 1 FROM {table_name(Message)} m WHERE m.digest_id = r.id)""",
            record=True,
        )
    if kind == "topic_sends":
        return _Rule(
            table_name(TopicSend),
            f"r.status = '{TopicSendStatus.DONE}' AND r.updated_at < %(cutoff)s",
            record=True,
        )
    if kind in ("snoozes", "topic_snoozes"):
        model = Snooze if kind == "snoozes" else TopicSnooze
        return _Rule(table_name(model), "r.until IS NOT NULL AND r.until <= %(now)s", record=False)
    # A slot counts only inside its type's window: older, or of a type without a throttle now
    # (or gone), routing never reads it again.
    return _Rule(
        table_name(ThrottleSlot),
        """k.throttle_window_s IS NULL
           OR r.at <= %(now)s - make_interval(secs => k.throttle_window_s)""",
        record=False,
        join=f"LEFT JOIN {table_name(NotificationType)} k ON k.key = r.type_key",
    )


def _select(rule: _Rule) -> str:
    return f"SELECT r.id FROM {rule.table} r {rule.join} WHERE r.id > %(after)s AND ({rule.where})"


def _prune_batch(rule: _Rule, params: dict[str, Any], limit: int) -> list[int]:
    with transaction.atomic(), connection.cursor() as cursor:
        cursor.execute(
            f"""DELETE FROM {rule.table} WHERE id IN (
                    {_select(rule)} ORDER BY r.id LIMIT %(limit)s FOR UPDATE OF r SKIP LOCKED)
                RETURNING id""",
            {**params, "limit": limit},
        )
        return sorted(row[0] for row in cursor.fetchall())


def _count(rule: _Rule, params: dict[str, Any]) -> int:
    with connection.cursor() as cursor:
        cursor.execute(f"SELECT count(*) FROM ({_select(rule)}) c", params)
        row = cursor.fetchone()
        return int(row[0]) if row else 0


def workflow_rows_prune(
    *,
    now: datetime,
    cutoff: datetime | None,
    limit: int,
    deadline: float,
    dry_run: bool = False,
) -> WorkflowPruneReport:
    """Prune (or, dry, count) what may go of each kind, a batch of `limit` per transaction,
    until none is left or `deadline` (time.monotonic) passes; every kind gets at least one
    batch a run. `cutoff` None (retention off): records stay, dead state goes."""
    report = WorkflowPruneReport()
    for kind in KINDS:
        rule = _rule(kind)
        if rule.record and cutoff is None:
            continue
        params: dict[str, Any] = {"now": now, "cutoff": cutoff or now, "after": 0}
        if dry_run:
            report.counts[kind] = _count(rule, params)
            continue
        while True:
            pruned = _prune_batch(rule, params, limit)
            report.counts[kind] += len(pruned)
            if len(pruned) < limit:
                break
            params["after"] = pruned[-1]
            if time.monotonic() >= deadline:
                report.finished = False
                break
    return report
