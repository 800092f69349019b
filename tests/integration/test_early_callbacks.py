"""A bounce that arrives while its batch is still sending: kept, then applied once it can be.

A real worker sends a batch of emails over SMTP to aiosmtpd in this process, which holds its
answer to the first message. While the worker waits for it (so nothing of the batch is recorded
yet), Mailgun's signed bounce for that message is POSTed over HTTP to a real gunicorn. The
webhook cannot find the delivery; once the batch is recorded, the bounce is applied: the
delivery fails and the address is suppressed. Before, it stayed `sent` for good.
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import json
import threading
import time
import uuid
from collections.abc import Iterator
from email import message_from_bytes, policy
from typing import Any

import pytest
from aiosmtpd.controller import Controller

from notifier.api import notify_many
from notifier.models import (
    Delivery,
    EventOutcome,
    ProviderEvent,
    SuppressedAddress,
    User,
)
from notifier.status import IN_FLIGHT, DeliveryStatus, Reason
from tests.conftest import wait_until
from tests.factories import order_context
from tests.gunicorn import GunicornServer
from tests.integration.rig import RedisServer, Rig, free_port

pytestmark = [pytest.mark.integration, pytest.mark.django_db(transaction=True)]
S = DeliveryStatus
SIGNING_KEY = "early-bounce-signing-key"
BATCH = 8


class HeldMailbox:
    """Accepts mail, but holds its answer to the first message until `release()`."""

    def __init__(self) -> None:
        self.first: tuple[str, str] | None = None  # (recipient, Message-ID)
        self.holding = threading.Event()
        self.released = threading.Event()
        self.accepted = 0

    async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:
        if self.first is None:
            message = message_from_bytes(envelope.content, policy=policy.default)
            self.first = (envelope.rcpt_tos[0], str(message["Message-ID"]).strip())
            self.holding.set()
            await asyncio.get_running_loop().run_in_executor(None, self.released.wait, 60)
        self.accepted += 1
        return "250 Message accepted for delivery"

    def release(self) -> None:
        self.released.set()


@pytest.fixture
def mailbox() -> Iterator[tuple[HeldMailbox, int]]:
    box, port = HeldMailbox(), free_port()
    controller = Controller(box, hostname="127.0.0.1", port=port)
    controller.start()
    try:
        yield box, port
    finally:
        box.release()
        controller.stop()


@pytest.fixture
def webhooks() -> Iterator[GunicornServer]:
    server = GunicornServer(
        extra_env={
            "NOTIFIER_EMAIL_WEBHOOK_ESPS": "mailgun",
            "ANYMAIL": f"MAILGUN_WEBHOOK_SIGNING_KEY={SIGNING_KEY}",
        }
    )
    try:
        server.wait_ready()
        yield server
    finally:
        server.stop()


def mailgun_hard_bounce(recipient: str, message_id: str) -> bytes:
    """Mailgun's signed webhook body for a permanent failure (a hard bounce) of that message."""
    timestamp, token = str(int(time.time())), uuid.uuid4().hex
    digest = hmac.new(
        SIGNING_KEY.encode(), f"{timestamp}{token}".encode(), hashlib.sha256
    ).hexdigest()
    event = {
        "event": "failed",
        "severity": "permanent",
        "reason": "bounce",
        "timestamp": time.time(),
        "id": uuid.uuid4().hex[:22],
        "recipient": recipient,
        "log-level": "error",
        "message": {"headers": {"message-id": message_id.strip("<>"), "to": recipient}},
        "delivery-status": {
            "code": 550,
            "message": "5.1.1 The email account that you tried to reach does not exist",
            "description": "",
            "attempt-no": 1,
        },
        "flags": {"is-test-mode": False},
    }
    body = {
        "signature": {"timestamp": timestamp, "token": token, "signature": digest},
        "event-data": event,
    }
    return json.dumps(body).encode()


def test_a_bounce_posted_while_its_batch_is_still_sending_fails_the_delivery(
    mailbox, webhooks, monkeypatch
):
    box, smtp_port = mailbox
    User.objects.bulk_create(
        [
            User(username=f"early-{i}", email=f"early-{i}@example.com", password="!")
            for i in range(BATCH)
        ]
    )
    users = list(User.objects.filter(username__startswith="early-").order_by("pk"))
    rig = Rig(RedisServer(), monkeypatch)
    try:
        rig.worker(
            concurrency=1,
            EMAIL_URL=f"smtp://127.0.0.1:{smtp_port}",
            NOTIFIER_EMAIL_PROVIDERS="django",
            DEFAULT_FROM_EMAIL="Shop <noreply@shop.example.com>",
        )
        ids = notify_many(
            users, "order.shipped", order_context(), channels=["email"], idempotency_key="early"
        ).message_ids

        wait_until(box.holding.is_set, timeout=60, message="the first email at the SMTP server")
        assert box.first is not None
        recipient, message_id = box.first
        bounced = Delivery.objects.get(message_id__in=ids, user__email=recipient)
        assert bounced.status == S.SENDING  # the provider has not even answered yet

        answer = webhooks.request(
            "POST",
            "/webhooks/anymail/mailgun/tracking/",
            mailgun_hard_bounce(recipient, message_id),
            {"Content-Type": "application/json"},
        )
        assert answer.status == 200, answer.text + webhooks.tail()
        event = ProviderEvent.objects.get(provider="mailgun")
        assert (event.outcome, event.provider_message_id) == (EventOutcome.UNKNOWN, message_id)

        box.release()

        def batch_done() -> bool:
            statuses = Delivery.objects.filter(message_id__in=ids).values_list("status", flat=True)
            return len(statuses) == BATCH and not set(statuses) & IN_FLIGHT

        rig.drain(batch_done, timeout=90)
        # The bounce lands with the record, or with the next re-queue run at the latest.
        rig.drain(lambda: Delivery.objects.get(pk=bounced.pk).status != S.SENT, timeout=30)
    finally:
        box.release()
        rig.close()

    bounced.refresh_from_db()
    assert (bounced.status, bounced.reason) == (S.FAILED, Reason.INVALID_RECIPIENT)
    assert bounced.provider_message_id == message_id
    assert "does not exist" in bounced.last_error
    event.refresh_from_db()
    assert (event.outcome, event.delivery_id) == (EventOutcome.MOVED, bounced.pk)
    suppressed = SuppressedAddress.objects.get()
    assert (suppressed.address, suppressed.delivery_id) == (recipient, bounced.pk)
    others = Delivery.objects.filter(message_id__in=ids).exclude(pk=bounced.pk)
    assert set(others.values_list("status", flat=True)) == {S.SENT}
    assert box.accepted == BATCH
