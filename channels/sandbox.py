"""Sandbox providers: record every send in the SandboxSend ledger instead of calling anyone.

They are the default when a channel has no credentials, and what tests and benchmarks count.
Behaviour is steered like a provider's test mode, by magic recipients, or at random by settings:

- a recipient containing ``fail-permanent`` is refused for good (push: token unregistered);
- ``fail-transient-N`` fails with a temporary error on attempts 1..N, then succeeds;
- ``fail-always`` fails with a temporary error on every attempt;
- NOTIFIER_SANDBOX_TRANSIENT_FAILURE_RATE / _PERMANENT_FAILURE_RATE fail that share at random;
- NOTIFIER_SANDBOX_LATENCY_MS sleeps that long per message, like a provider's round trip.

Every call is on the ledger the moment it is answered (committed on its own, outside any
transaction of the caller's), as a real provider would have it: a worker killed in the
middle of a batch leaves the sends made so far, and tests count double sends from it.
"""

from __future__ import annotations

import random
import re
import time
from collections.abc import Iterable, Iterator, Sequence
from datetime import datetime
from typing import ClassVar

from django.conf import settings
from django.db import connection
from django.utils import timezone

from channels.base import Channel, ErrorCode, Outcome, Outgoing, SendResult
from channels.models import SandboxOutage, SandboxSend
from notifier.db import NO_WAIT, insert_rows, model_field, table_name

REPLAYED = "replayed"
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
        down: bool | None = None
        for outgoing in outgoings:
            if down is None:  # asked once per batch, when its first message comes
                down = SandboxOutage.objects.filter(
                    channel=self.channel, until__gt=timezone.now()
                ).exists()
            if latency_s:
                time.sleep(latency_s)
            result = (
                SendResult.transient(
                    self.name, ErrorCode.PROVIDER_UNAVAILABLE, "sandbox: 503 (outage)"
                )
                if down
                else _decide(outgoing, self.name)
            )
            # Failed attempts are on the ledger too, so tests can count attempts per delivery.
            yield outgoing, self._accept(outgoing, result, timezone.now())

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

    def _accept(self, outgoing: Outgoing, result: SendResult, now: datetime) -> SendResult:
        """Put the call on the ledger. A delivery (the idempotency key) the sandbox accepted
        before gets the original answer back and is logged as replayed, like an idempotent
        provider API answering a worker that crashed after sending (a provider without a key,
        SMTP, Twilio or FCM, would have sent it again: tests count replays as doubles for
        those). The check is deliberately not a unique constraint: two sends of one delivery
        at the same moment, which only a broken claim could cause, land as two sends."""
        row = self._row(outgoing, result, now)
        if connection.vendor != "postgresql":
            insert_rows(SandboxSend, LEDGER_COLUMNS, [row])  # no replays where not PostgreSQL
            return result
        fields = [model_field(SandboxSend, name) for name in LEDGER_COLUMNS]
        values = [f.get_db_prep_save(v, connection) for f, v in zip(fields, row, strict=True)]
        at = {name: index for index, name in enumerate(LEDGER_COLUMNS)}
        table = table_name(SandboxSend)
        # One round trip, committed (without waiting for the disk) before the call returns,
        # whatever happens to the caller next. Any earlier acceptance will do: no ORDER BY,
        # which on a long ledger would walk the primary key.
        with connection.cursor() as cursor:
            cursor.execute(
                f"{NO_WAIT}WITH earlier AS (SELECT provider_message_id FROM {table} "
                "WHERE delivery_id = %s AND outcome = %s LIMIT 1) "
                f"INSERT INTO {table} ({', '.join(f.column for f in fields)}) "
                "SELECT %s, %s, %s, %s, %s, %s, "
                "CASE WHEN %s = %s AND EXISTS (SELECT 1 FROM earlier) THEN %s ELSE %s END, "
                "CASE WHEN %s = %s THEN COALESCE((SELECT provider_message_id FROM earlier), %s) "
                "ELSE %s END, %s, %s RETURNING outcome, provider_message_id",
                [
                    outgoing.delivery_id,
                    Outcome.SENT.value,
                    *values[: at["outcome"]],
                    values[at["outcome"]],
                    Outcome.SENT.value,
                    REPLAYED,
                    values[at["outcome"]],
                    values[at["outcome"]],
                    Outcome.SENT.value,
                    values[at["provider_message_id"]],
                    values[at["provider_message_id"]],
                    values[at["payload"]],
                    values[at["at"]],
                ],
            )
            outcome, provider_message_id = cursor.fetchone()
        if outcome == REPLAYED:
            return SendResult.sent(self.name, provider_message_id, replayed=True)
        return result


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
