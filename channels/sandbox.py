"""Sandbox providers: record every send in the SandboxSend ledger instead of calling anyone.

They are the default when a channel has no credentials, and what tests and benchmarks count.
Behaviour is steered like a provider's test mode, by magic recipients, or at random by settings:

- a recipient containing ``fail-permanent`` is refused for good (push: token unregistered);
- ``fail-transient-N`` fails with a temporary error on attempts 1..N, then succeeds;
- ``fail-always`` fails with a temporary error on every attempt;
- NOTIFIER_SANDBOX_TRANSIENT_FAILURE_RATE / _PERMANENT_FAILURE_RATE fail that share at random;
- NOTIFIER_SANDBOX_LATENCY_MS sleeps that long per message, like a provider's round trip.

A sandbox with a latency takes one message per request, as SMTP, Twilio or FCM (per device)
do. An instant one (SANDBOX_LATENCY_MS=0, the default: demos and benchmarks) takes up to
SANDBOX_BATCH messages per request, the way a provider's batch API does, and answers them
one by one once the whole request is accepted.

Every request is on the ledger before any of its answers is returned (committed on its own,
outside any transaction of the caller's, in one write for the request), as a real provider
would have it: the provider's side is never behind the pipeline's record, and a worker killed
in the middle of a batch leaves the sends made so far, from which tests count double sends.
"""

from __future__ import annotations

import random
import re
import time
from collections.abc import Iterable, Iterator, Sequence
from datetime import datetime
from itertools import islice
from typing import ClassVar

from django.conf import settings
from django.db import connection
from django.utils import timezone

from channels.base import Channel, ErrorCode, Outcome, Outgoing, SendResult
from channels.models import SandboxOutage, SandboxSend
from notifier.db import NO_WAIT, insert_rows, model_field, table_name
from notifier.sql_arrays import column_arrays, unnest_of

REPLAYED = "replayed"
SENT = Outcome.SENT.value
LEDGER_COLUMNS = (
    "channel",
    "provider",
    "delivery_id",
    "message_id",
    "attempt",
    "recipient",
    "outcome",
    "provider_message_id",
    "payload",
    "at",
)

TRANSIENT_N = re.compile(r"fail-transient-(\d+)")


def _decide(outgoing: Outgoing, provider: str) -> SendResult:
    recipient = outgoing.recipient
    if "fail-permanent" in recipient:
        if outgoing.channel is Channel.PUSH:
            return SendResult.permanent(
                provider,
                ErrorCode.DEVICE_UNREGISTERED,
                "sandbox: token not registered",
                deactivate=[d.device_id for d in outgoing.devices],
            )
        return SendResult.permanent(
            provider, ErrorCode.INVALID_RECIPIENT, f"sandbox: {recipient} does not exist"
        )
    if "fail-always" in recipient:
        return SendResult.transient(provider, ErrorCode.PROVIDER_UNAVAILABLE, "sandbox: 503")
    match = TRANSIENT_N.search(recipient)
    if match and outgoing.attempt <= int(match.group(1)):
        return SendResult.transient(
            provider, ErrorCode.TIMEOUT, f"sandbox: timed out (attempt {outgoing.attempt})"
        )
    roll = random.random()
    if roll < settings.NOTIFIER_SANDBOX_PERMANENT_FAILURE_RATE:
        return SendResult.permanent(provider, ErrorCode.REJECTED, "sandbox: random rejection")
    if (
        roll
        < settings.NOTIFIER_SANDBOX_PERMANENT_FAILURE_RATE
        + settings.NOTIFIER_SANDBOX_TRANSIENT_FAILURE_RATE
    ):
        return SendResult.transient(provider, ErrorCode.PROVIDER_UNAVAILABLE, "sandbox: random 503")
    return SendResult.sent(provider, f"sandbox-{outgoing.delivery_id}-{outgoing.attempt}")


class _SandboxProvider:
    name: str = "sandbox"
    channel: ClassVar[Channel]
    in_database: ClassVar[bool] = False

    @classmethod
    def configuration_problems(cls) -> list[str]:
        return []

    def send_many(self, outgoings: Sequence[Outgoing]) -> list[SendResult]:
        return [result for _, result in self.send_each(outgoings)]

    def send_each(self, outgoings: Iterable[Outgoing]) -> Iterator[tuple[Outgoing, SendResult]]:
        latency_s = settings.NOTIFIER_SANDBOX_LATENCY_MS / 1000.0
        # A request's messages are taken from `outgoings` only once every answer of the one
        # before was taken (the caller records them, and hands out only what it still holds).
        per_request = 1 if latency_s else max(1, settings.NOTIFIER_SANDBOX_BATCH)
        pending = iter(outgoings)
        down: bool | None = None
        while request := list(islice(pending, per_request)):
            if down is None:  # asked once per batch, when its first message comes
                down = SandboxOutage.objects.filter(
                    channel=self.channel, until__gt=timezone.now()
                ).exists()
            if latency_s:
                time.sleep(latency_s)
            results = [
                SendResult.transient(
                    self.name, ErrorCode.PROVIDER_UNAVAILABLE, "sandbox: 503 (outage)"
                )
                if down
                else _decide(outgoing, self.name)
                for outgoing in request
            ]
            # Failed attempts are on the ledger too, so tests can count attempts per delivery.
            yield from zip(request, self._accept(request, results, timezone.now()), strict=True)

    def _row(
        self, o: Outgoing, r: SendResult, now: datetime, outcome: str = ""
    ) -> tuple[object, ...]:
        return (
            o.channel.value,
            self.name,
            o.delivery_id,
            o.message_id,
            o.attempt,
            o.recipient,
            outcome or r.outcome.value,
            r.provider_message_id,
            {"content": o.content.as_dict(), "headers": o.headers},
            now,
        )

    def _accept(
        self, outgoings: list[Outgoing], results: list[SendResult], now: datetime
    ) -> list[SendResult]:
        """Put one request's calls on the ledger, in one statement. A delivery (the
        idempotency key) the sandbox accepted before gets the original answer back and is
        logged as replayed, like an idempotent provider API answering a worker that crashed
        after sending (a provider without a key, SMTP, Twilio or FCM, would have sent it
        again: tests count replays as doubles for those). The check is deliberately not a
        unique constraint: two sends of one delivery at the same moment, which only a broken
        claim could cause, land as two sends."""
        rows = [self._row(o, r, now) for o, r in zip(outgoings, results, strict=True)]
        if connection.vendor != "postgresql":
            insert_rows(SandboxSend, LEDGER_COLUMNS, rows)  # no replays where not PostgreSQL
            return results
        fields = [model_field(SandboxSend, name) for name in LEDGER_COLUMNS]
        names = [connection.ops.quote_name(f.column) for f in fields]
        given = {f.column: f"v.{name}" for f, name in zip(fields, names, strict=True)}
        given["outcome"] = (
            f"CASE WHEN v.outcome = '{SENT}' AND e.provider_message_id IS NOT NULL "
            f"THEN '{REPLAYED}' ELSE v.outcome END"
        )
        given["provider_message_id"] = "COALESCE(e.provider_message_id, v.provider_message_id)"
        table = table_name(SandboxSend)
        # One round trip (an array per column), committed (without waiting for the disk) before
        # any answer is returned, whatever happens to the caller next. Any earlier acceptance
        # will do: no ORDER BY, which on a long ledger would walk the primary key.
        with connection.cursor() as cursor:
            cursor.execute(
                f"{NO_WAIT}INSERT INTO {table} ({', '.join(names)}) "
                f"SELECT {', '.join(given.values())} "
                f"FROM {unnest_of(fields)} AS v ({', '.join(names)}) "
                f"LEFT JOIN LATERAL (SELECT provider_message_id FROM {table} earlier "
                f"WHERE earlier.delivery_id = v.delivery_id AND earlier.outcome = '{SENT}' "
                f"LIMIT 1) e ON v.outcome = '{SENT}' "
                "RETURNING delivery_id, outcome, provider_message_id",
                column_arrays(len(fields), rows),
            )
            replayed = {
                delivery_id: provider_message_id
                for delivery_id, outcome, provider_message_id in cursor.fetchall()
                if outcome == REPLAYED
            }
        return [
            SendResult.sent(self.name, replayed[o.delivery_id], replayed=True)
            if o.delivery_id in replayed
            else r
            for o, r in zip(outgoings, results, strict=True)
        ]


class SandboxEmailProvider(_SandboxProvider):
    channel = Channel.EMAIL


class SandboxSmsProvider(_SandboxProvider):
    channel = Channel.SMS


class SandboxPushProvider(_SandboxProvider):
    channel = Channel.PUSH


def ledger_sends(channel: Channel | None = None) -> list[SandboxSend]:
    """Successful sandbox sends (what a real provider would have delivered)."""
    qs = SandboxSend.objects.filter(outcome=Outcome.SENT)
    if channel is not None:
        qs = qs.filter(channel=channel)
    return list(qs.order_by("id"))
