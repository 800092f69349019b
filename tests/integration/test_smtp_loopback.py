"""Email end to end over real SMTP: notify() -> a real worker -> aiosmtpd on 127.0.0.1.

The worker process (on a private Redis, see tests/integration/rig.py) runs with
EMAIL_URL=smtp://127.0.0.1:<port>, so it sends through Django's SMTP backend (the "django"
provider) to an aiosmtpd server in this test process. The test then reads what arrived: the
marketing email's RFC 8058 headers and parts, the transactional one's lack of them, and
finally POSTs the one-click URL the mail carried.
"""

from __future__ import annotations

import re
import threading
from collections.abc import Iterator
from email import message_from_bytes, policy
from email.message import EmailMessage
from typing import Any
from urllib.parse import urlsplit

import pytest
from aiosmtpd.controller import Controller
from django.test import Client

from notifier.api import notify
from notifier.models import Delivery, Preference, Unsubscribe
from notifier.services.preferences import consent_give
from notifier.status import DeliveryStatus
from tests.conftest import wait_until
from tests.factories import UserFactory, order_context
from tests.integration.rig import RedisServer, Rig, free_port

pytestmark = pytest.mark.integration
S = DeliveryStatus

PUBLIC = "https://notify.example.com"
FLASH = {
    "headline": "Everything 20% off",
    "sale_url": "https://shop.example.com/sale",
    "sale_name": "Winter sale",
    "starts_at": "Friday 10:00",
}


class Mailbox:
    """An aiosmtpd handler that keeps every message it accepts."""

    def __init__(self) -> None:
        self.received: list[tuple[list[str], EmailMessage]] = []
        self.lock = threading.Lock()

    async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:
        message = message_from_bytes(envelope.content, policy=policy.default)
        assert isinstance(message, EmailMessage)
        with self.lock:
            self.received.append((list(envelope.rcpt_tos), message))
        return "250 Message accepted for delivery"

    def to(self, address: str) -> list[EmailMessage]:
        with self.lock:
            return [m for rcpt, m in self.received if address in rcpt]


@pytest.fixture
def mailbox() -> Iterator[tuple[Mailbox, int]]:
    box, port = Mailbox(), free_port()
    controller = Controller(box, hostname="127.0.0.1", port=port)
    controller.start()
    try:
        yield box, port
    finally:
        controller.stop()


@pytest.fixture
def smtp_worker(mailbox, monkeypatch, transactional_db) -> Iterator[Mailbox]:
    """A worker that sends email over SMTP to the mailbox, on a private Redis of its own (so
    the session's shared worker, which sends to memory, cannot take these tasks)."""
    box, port = mailbox
    rig = Rig(RedisServer(), monkeypatch)
    try:
        rig.worker(
            EMAIL_URL=f"smtp://127.0.0.1:{port}",
            NOTIFIER_EMAIL_PROVIDERS="django",
            NOTIFIER_SITE_URL=PUBLIC,
            DEFAULT_FROM_EMAIL="Shop <noreply@shop.example.com>",
        )
        yield box
    finally:
        rig.close()


def sent_email_of(message_id: int) -> Delivery | None:
    delivery = Delivery.objects.filter(message_id=message_id, channel="email").first()
    return delivery if delivery is not None and delivery.status == S.SENT else None


def parts(message: EmailMessage) -> dict[str, str]:
    return {
        part.get_content_type(): str(part.get_content())
        for part in message.walk()
        if not part.is_multipart()
    }


def test_marketing_and_transactional_email_over_smtp_then_one_click_unsubscribe(smtp_worker):
    box = smtp_worker
    user = UserFactory(email="mei@example.com", first_name="Mei")
    consent_give(user_id=user.pk, channel="email", source="signup_form", wording="Send me offers")

    promo = notify(user, "promo.flash_sale", FLASH, channels=["email"])
    receipt = notify(user, "order.shipped", order_context(), channels=["email"])

    promo_delivery = wait_until(lambda: sent_email_of(promo.pk), message="the promotion sent")
    receipt_delivery = wait_until(lambda: sent_email_of(receipt.pk), message="the receipt sent")
    wait_until(lambda: len(box.to(user.email)) == 2, message="two emails at the SMTP server")
    by_subject = {str(m["Subject"]): m for m in box.to(user.email)}
    [marketing] = [m for s, m in by_subject.items() if "Winter sale" in s]
    [transactional] = [m for s, m in by_subject.items() if "A1001" in s]

    # The marketing email: RFC 8058 one-click unsubscribe, text and HTML, a Message-ID.
    unsubscribe_header = str(marketing["List-Unsubscribe"]).strip()  # folded: a long URL
    match = re.fullmatch(
        r"<(https://notify\.example\.com/unsubscribe/[^/>]+/one-click/)>", unsubscribe_header
    )
    assert match, unsubscribe_header
    assert str(marketing["List-Unsubscribe-Post"]) == "List-Unsubscribe=One-Click"
    assert marketing.get_content_type() == "multipart/alternative"
    assert set(parts(marketing)) == {"text/plain", "text/html"}
    assert "Everything 20% off" in parts(marketing)["text/plain"]
    assert str(marketing["From"]) == "Shop <noreply@shop.example.com>"
    # The delivery log names the Message-ID the mail carried: what callbacks look up.
    assert str(marketing["Message-ID"]).strip() == promo_delivery.provider_message_id
    assert promo_delivery.provider == "django"

    # The transactional email: no marketing unsubscribe headers.
    assert transactional["List-Unsubscribe"] is None
    assert transactional["List-Unsubscribe-Post"] is None
    assert str(transactional["Message-ID"]).strip() == receipt_delivery.provider_message_id

    # A mail client's one-click POST to the URL in the header unsubscribes, without a login.
    response = Client().post(urlsplit(match.group(1)).path, data={"List-Unsubscribe": "One-Click"})

    assert response.status_code == 200
    assert Preference.objects.filter(
        user=user, category="promo.flash_sale", channel="email", enabled=False
    ).exists()
    unsubscribe = Unsubscribe.objects.get(user=user)
    assert (unsubscribe.source, unsubscribe.message_id) == ("one_click", promo.pk)
