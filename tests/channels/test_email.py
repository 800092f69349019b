"""DjangoEmailProvider on Django's locmem backend, and how SMTP/anymail errors are classified."""

from __future__ import annotations

import smtplib
import socket
from collections.abc import Sequence
from typing import Any

import pytest
import requests
from anymail.exceptions import (
    AnymailAPIError,
    AnymailInvalidAddress,
    AnymailRecipientsRefused,
    AnymailRequestsAPIError,
)
from django.core.mail import EmailMessage
from django.core.mail.backends.base import BaseEmailBackend
from django.core.mail.backends.locmem import EmailBackend as LocmemBackend

from channels.base import Channel, Content, ErrorCode, Outcome, Outgoing
from channels.email import DjangoEmailProvider, classify_email_error

CONTENT = Content(
    subject="Your order A1001 shipped",
    body="Hello Ann, your order is on its way.",
    html="<p>Hello Ann, your order is <b>on its way</b>.</p>",
)


def outgoing(
    address: str = "ann@example.com",
    *,
    delivery_id: int = 7,
    content: Content = CONTENT,
    headers: dict[str, str] | None = None,
) -> Outgoing:
    return Outgoing(
        delivery_id=delivery_id,
        message_id=70,
        user_id=3,
        channel=Channel.EMAIL,
        type_key="order.shipped",
        content=content,
        attempt=1,
        email=address,
        headers=headers or {},
    )


@pytest.fixture
def locmem(settings, mailoutbox):
    settings.EMAIL_BACKEND = "django.core.mail.backends.locmem.EmailBackend"
    settings.DEFAULT_FROM_EMAIL = "Notifier <noreply@notify.example.com>"
    return mailoutbox


# --- sending through a Django backend ---------------------------------------------------------


def test_text_and_html_parts_subject_and_recipient(locmem):
    [result] = DjangoEmailProvider().send_many([outgoing()])

    assert result.outcome is Outcome.SENT
    assert result.provider == "django"
    [sent] = locmem
    assert sent.subject == "Your order A1001 shipped"
    assert sent.to == ["ann@example.com"]
    assert sent.from_email == "Notifier <noreply@notify.example.com>"
    assert sent.body == "Hello Ann, your order is on its way."
    assert [(a[0], a[1]) for a in sent.alternatives] == [
        ("<p>Hello Ann, your order is <b>on its way</b>.</p>", "text/html")
    ]
    mime = sent.message()
    assert mime.get_content_type() == "multipart/alternative"
    assert [part.get_content_type() for part in mime.get_payload()] == ["text/plain", "text/html"]
    assert mime["To"] == "ann@example.com"
    assert mime["Subject"] == "Your order A1001 shipped"


def test_a_text_only_message_has_no_html_part(locmem):
    DjangoEmailProvider().send_many([outgoing(content=Content(subject="Hi", body="Plain."))])

    [sent] = locmem
    assert list(sent.alternatives) == []
    assert sent.message().get_content_type() == "text/plain"


def test_message_id_header_is_the_provider_message_id(locmem):
    [result] = DjangoEmailProvider().send_many([outgoing(delivery_id=42)])

    [sent] = locmem
    mime = sent.message()
    assert result.provider_message_id == mime["Message-ID"]
    assert result.provider_message_id.startswith("<")
    assert result.provider_message_id.endswith("@notify.example.com>")
    assert "delivery-42" in result.provider_message_id
    assert mime["X-Notifier-Delivery"] == "42"


def test_each_message_gets_its_own_message_id(locmem):
    results = DjangoEmailProvider().send_many(
        [outgoing("a@example.com", delivery_id=1), outgoing("b@example.com", delivery_id=2)]
    )

    assert [r.outcome for r in results] == [Outcome.SENT, Outcome.SENT]
    assert results[0].provider_message_id != results[1].provider_message_id
    assert [m.to for m in locmem] == [["a@example.com"], ["b@example.com"]]
    assert [m.message()["Message-ID"] for m in locmem] == [r.provider_message_id for r in results]


def test_every_attempt_of_a_delivery_carries_the_same_message_id(locmem):
    """A re-send after a crash is recognisable: mailboxes that keep one copy per Message-ID
    (Gmail) collapse it, and the ESP's events name the same message."""
    first = DjangoEmailProvider().send_many([outgoing(delivery_id=42)])
    again = DjangoEmailProvider().send_many([outgoing(delivery_id=42)])
    assert first[0].provider_message_id == again[0].provider_message_id
    assert first[0].provider_message_id == "<delivery-42@notify.example.com>"
    assert [m.metadata for m in locmem] == [{"delivery_id": "42"}] * 2  # anymail's metadata


def test_the_configured_idempotency_header_carries_the_delivery_key(locmem, settings):
    DjangoEmailProvider().send_many([outgoing(delivery_id=42)])
    settings.NOTIFIER_EMAIL_IDEMPOTENCY_HEADER = "Resend-Idempotency-Key"
    DjangoEmailProvider().send_many([outgoing(delivery_id=42)])
    assert [m.message()["Resend-Idempotency-Key"] for m in locmem] == [None, "delivery-42"]


def test_the_connection_opens_only_when_a_message_is_handed_over(settings):
    settings.EMAIL_BACKEND = f"{__name__}.UnreachableBackend"
    assert list(DjangoEmailProvider().send_each(iter(()))) == []


def test_extra_headers_from_the_outgoing_pass_through(locmem):
    headers = {
        "List-Unsubscribe": "<https://example.com/unsubscribe/abc>",
        "List-Unsubscribe-Post": "List-Unsubscribe=One-Click",
        "X-Campaign": "spring-sale",
    }

    DjangoEmailProvider().send_many([outgoing(headers=headers)])

    mime = locmem[0].message()
    for name, value in headers.items():
        assert mime[name] == value


def test_an_anymail_message_id_is_preferred_over_the_header(settings):
    settings.EMAIL_BACKEND = "tests.channels.test_email.EspLikeBackend"

    [result] = DjangoEmailProvider().send_many([outgoing()])

    assert result.outcome is Outcome.SENT
    assert result.provider_message_id == "esp-message-1"


# --- backends that fail -----------------------------------------------------------------------


class UnreachableBackend(BaseEmailBackend):
    """A server that refuses the connection."""

    sent: list[EmailMessage] = []

    def open(self) -> bool:
        raise ConnectionRefusedError(111, "Connection refused")

    def send_messages(self, email_messages: Sequence[EmailMessage]) -> int:
        UnreachableBackend.sent.extend(email_messages)
        return len(email_messages)


class TimingOutBackend(UnreachableBackend):
    def open(self) -> bool:
        raise TimeoutError("timed out")


class RefusingBackend(LocmemBackend):
    """Accepts the connection; refuses one recipient with 550 and greylists another with 451."""

    def send_messages(self, messages: Sequence[EmailMessage]) -> int:
        for message in messages:
            if message.to == ["nobody@example.com"]:
                raise smtplib.SMTPRecipientsRefused(
                    {"nobody@example.com": (550, b"5.1.1 no such user")}
                )
            if message.to == ["busy@example.com"]:
                raise smtplib.SMTPRecipientsRefused(
                    {"busy@example.com": (451, b"4.7.1 greylisted, try later")}
                )
        return super().send_messages(messages)


class BrokenCloseBackend(LocmemBackend):
    def close(self) -> None:
        raise smtplib.SMTPServerDisconnected("Connection unexpectedly closed")


class EspLikeBackend(LocmemBackend):
    """Sets anymail_status the way django-anymail's ESP backends do."""

    def send_messages(self, messages: Sequence[Any]) -> int:
        for index, message in enumerate(messages, start=1):
            message.anymail_status = type("Status", (), {"message_id": f"esp-message-{index}"})()
        return super().send_messages(messages)


def test_a_backend_that_cannot_connect_fails_every_message_transiently(settings):
    settings.EMAIL_BACKEND = "tests.channels.test_email.UnreachableBackend"
    UnreachableBackend.sent = []

    results = DjangoEmailProvider().send_many(
        [outgoing("a@example.com"), outgoing("b@example.com"), outgoing("c@example.com")]
    )

    assert len(results) == 3
    assert {r.outcome for r in results} == {Outcome.TRANSIENT}
    assert {r.error_code for r in results} == {ErrorCode.CONNECTION}
    assert "Connection refused" in results[0].error
    assert UnreachableBackend.sent == []


def test_a_connection_timeout_fails_every_message_as_a_timeout(settings):
    settings.EMAIL_BACKEND = "tests.channels.test_email.TimingOutBackend"

    results = DjangoEmailProvider().send_many([outgoing("a@example.com"), outgoing()])

    assert [(r.outcome, r.error_code) for r in results] == [
        (Outcome.TRANSIENT, ErrorCode.TIMEOUT),
        (Outcome.TRANSIENT, ErrorCode.TIMEOUT),
    ]


def test_a_refused_recipient_fails_alone_and_the_rest_are_sent(settings, mailoutbox):
    settings.EMAIL_BACKEND = "tests.channels.test_email.RefusingBackend"

    results = DjangoEmailProvider().send_many(
        [
            outgoing("ann@example.com", delivery_id=1),
            outgoing("nobody@example.com", delivery_id=2),
            outgoing("busy@example.com", delivery_id=3),
            outgoing("bob@example.com", delivery_id=4),
        ]
    )

    assert [(r.outcome, r.error_code) for r in results] == [
        (Outcome.SENT, None),
        (Outcome.PERMANENT, ErrorCode.INVALID_RECIPIENT),
        (Outcome.TRANSIENT, ErrorCode.PROVIDER_UNAVAILABLE),
        (Outcome.SENT, None),
    ]
    assert "nobody@example.com" in results[1].error
    assert [m.to for m in mailoutbox] == [["ann@example.com"], ["bob@example.com"]]


def test_a_failing_close_does_not_lose_the_results(settings, mailoutbox):
    settings.EMAIL_BACKEND = "tests.channels.test_email.BrokenCloseBackend"

    results = DjangoEmailProvider().send_many([outgoing()])

    assert [r.outcome for r in results] == [Outcome.SENT]
    assert len(mailoutbox) == 1


# --- classify_email_error ---------------------------------------------------------------------


def http_response(status: int, reason: str = "") -> requests.Response:
    response = requests.Response()
    response.status_code = status
    response.reason = reason
    response._content = b'{"message": "from the ESP"}'
    return response


def api_error(status: int) -> AnymailAPIError:
    return AnymailAPIError(
        "ESP refused the send",
        status_code=status,
        response=http_response(status, "Reason"),
        esp_name="Mailgun",
    )


@pytest.mark.parametrize(
    ("exc", "outcome", "code"),
    [
        pytest.param(
            smtplib.SMTPRecipientsRefused({"x@example.com": (550, b"5.1.1 unknown user")}),
            Outcome.PERMANENT,
            ErrorCode.INVALID_RECIPIENT,
            id="recipients-refused-5xx",
        ),
        pytest.param(
            smtplib.SMTPRecipientsRefused({"x@example.com": (452, b"4.2.2 mailbox full")}),
            Outcome.TRANSIENT,
            ErrorCode.PROVIDER_UNAVAILABLE,
            id="recipients-refused-4xx",
        ),
        pytest.param(
            smtplib.SMTPRecipientsRefused(
                {"x@example.com": (451, b"try later"), "y@example.com": (550, b"unknown")}
            ),
            Outcome.PERMANENT,
            ErrorCode.INVALID_RECIPIENT,
            id="recipients-refused-mixed",
        ),
        pytest.param(
            smtplib.SMTPResponseException(421, b"4.7.0 too many connections"),
            Outcome.TRANSIENT,
            ErrorCode.PROVIDER_UNAVAILABLE,
            id="smtp-421",
        ),
        pytest.param(
            smtplib.SMTPDataError(451, b"4.3.0 local error"),
            Outcome.TRANSIENT,
            ErrorCode.PROVIDER_UNAVAILABLE,
            id="smtp-data-451",
        ),
        pytest.param(
            smtplib.SMTPResponseException(554, b"5.7.1 message rejected as spam"),
            Outcome.PERMANENT,
            ErrorCode.REJECTED,
            id="smtp-554",
        ),
        pytest.param(
            smtplib.SMTPSenderRefused(553, b"5.7.1 sender not allowed", "noreply@x"),
            Outcome.PERMANENT,
            ErrorCode.REJECTED,
            id="smtp-sender-refused-553",
        ),
        pytest.param(
            smtplib.SMTPServerDisconnected("Connection unexpectedly closed"),
            Outcome.TRANSIENT,
            ErrorCode.CONNECTION,
            id="server-disconnected",
        ),
        pytest.param(
            socket.timeout("timed out"),  # noqa: UP041  (what smtplib raises)
            Outcome.TRANSIENT,
            ErrorCode.TIMEOUT,
            id="socket-timeout",
        ),
        pytest.param(
            ConnectionRefusedError(111, "Connection refused"),
            Outcome.TRANSIENT,
            ErrorCode.CONNECTION,
            id="connection-refused",
        ),
        pytest.param(
            socket.gaierror(-2, "Name or service not known"),
            Outcome.TRANSIENT,
            ErrorCode.CONNECTION,
            id="dns-failure",
        ),
        pytest.param(
            AnymailRecipientsRefused(),
            Outcome.PERMANENT,
            ErrorCode.INVALID_RECIPIENT,
            id="anymail-recipients-refused",
        ),
        pytest.param(
            AnymailInvalidAddress("Invalid email address 'not-an-email'"),
            Outcome.PERMANENT,
            ErrorCode.INVALID_RECIPIENT,
            id="anymail-invalid-address",
        ),
        pytest.param(api_error(429), Outcome.TRANSIENT, ErrorCode.RATE_LIMITED, id="anymail-429"),
        pytest.param(
            api_error(503), Outcome.TRANSIENT, ErrorCode.PROVIDER_UNAVAILABLE, id="anymail-503"
        ),
        pytest.param(api_error(400), Outcome.PERMANENT, ErrorCode.REJECTED, id="anymail-400"),
        pytest.param(
            AnymailRequestsAPIError("ESP error", response=http_response(429, "Too Many")),
            Outcome.TRANSIENT,
            ErrorCode.RATE_LIMITED,
            id="anymail-requests-429",
        ),
        pytest.param(
            AnymailRequestsAPIError("ESP error", response=http_response(401, "Unauth")),
            Outcome.PERMANENT,
            ErrorCode.REJECTED,
            id="anymail-requests-401",
        ),
        pytest.param(
            AnymailAPIError("ESP unreachable"),
            Outcome.TRANSIENT,
            ErrorCode.PROVIDER_UNAVAILABLE,
            id="anymail-no-status",
        ),
        pytest.param(
            ValueError("something odd"), Outcome.TRANSIENT, ErrorCode.UNEXPECTED, id="unexpected"
        ),
    ],
)
def test_classify_email_error(exc, outcome, code):
    result = classify_email_error("django", exc)

    assert result.outcome is outcome
    assert result.error_code is code
    assert result.provider == "django"
    assert result.error


def test_refused_recipients_are_named_in_the_error():
    exc = smtplib.SMTPRecipientsRefused({"x@example.com": (550, b"5.1.1 unknown user")})

    result = classify_email_error("django", exc)

    assert "x@example.com" in result.error
    assert "550" in result.error
