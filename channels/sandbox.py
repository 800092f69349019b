"""Sandbox providers: record every send in the SandboxSend ledger instead of calling anyone.

They are the default when a channel has no credentials, and what tests and benchmarks count.
Behaviour is steered like a provider's test mode, by magic recipients, or at random by settings:

- a recipient containing ``fail-permanent`` is refused for good (push: token unregistered);
- ``fail-transient-N`` fails with a temporary error on attempts 1..N, then succeeds;
- ``fail-always`` fails with a temporary error on every attempt;
- SANDBOX_TRANSIENT_FAILURE_RATE / SANDBOX_PERMANENT_FAILURE_RATE fail that share at random;
- SANDBOX_LATENCY_MS sleeps that long per message, like a provider's round trip.
"""

from __future__ import annotations

import random
import re
import time
from collections.abc import Sequence
from datetime import datetime
from typing import ClassVar

from django.conf import settings
from django.utils import timezone

from channels.base import Channel, ErrorCode, Outcome, Outgoing, SendResult
from channels.models import SandboxOutage, SandboxSend
from notifier.db import copy_rows

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
    if roll < settings.SANDBOX_PERMANENT_FAILURE_RATE:
        return SendResult.permanent(provider, ErrorCode.REJECTED, "sandbox: random rejection")
    if roll < settings.SANDBOX_PERMANENT_FAILURE_RATE + settings.SANDBOX_TRANSIENT_FAILURE_RATE:
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
        now = timezone.now()
        latency_s = settings.SANDBOX_LATENCY_MS / 1000.0
        down = SandboxOutage.objects.filter(channel=self.channel, until__gt=now).exists()
        results: list[SendResult] = []
        for outgoing in outgoings:
            if latency_s:
                time.sleep(latency_s)
            results.append(
                SendResult.transient(
                    self.name, ErrorCode.PROVIDER_UNAVAILABLE, "sandbox: 503 (outage)"
                )
                if down
                else _decide(outgoing, self.name)
            )
        results = self._accept(outgoings, results, now)
        # Failed attempts are on the ledger too, so tests can count attempts per delivery.
        copy_rows(
            SandboxSend,
            LEDGER_COLUMNS,
            [
                self._row(o, r, now)
                for o, r in zip(outgoings, results, strict=True)
                if r.outcome is not Outcome.SENT
            ],
        )
        return results

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
        self, outgoings: Sequence[Outgoing], results: list[SendResult], now: datetime
    ) -> list[SendResult]:
        """Record accepted sends. A delivery (the idempotency key) the sandbox accepted before
        gets the original answer back and is logged as replayed, like an idempotent provider
        API answering a worker that crashed after sending. The check is deliberately not a
        unique constraint: two sends of one delivery at the same moment, which only a broken
        claim could cause, land as two sends, so tests can see them."""
        sent = [
            (o, r) for o, r in zip(outgoings, results, strict=True) if r.outcome is Outcome.SENT
        ]
        if not sent:
            return results
        earlier = dict(
            SandboxSend.objects.filter(
                delivery_id__in=[o.delivery_id for o, _ in sent],
                outcome=Outcome.SENT,
            ).values_list("delivery_id", "provider_message_id")
        )
        copy_rows(
            SandboxSend,
            LEDGER_COLUMNS,
            [
                self._row(o, SendResult.sent(self.name, earlier[o.delivery_id]), now, REPLAYED)
                if o.delivery_id in earlier
                else self._row(o, r, now)
                for o, r in sent
            ],
        )
        return [
            SendResult.sent(self.name, earlier[o.delivery_id], replayed=True)
            if r.outcome is Outcome.SENT and o.delivery_id in earlier
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
