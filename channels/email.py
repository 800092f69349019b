"""Email channel through Django's email backends: SMTP, or any django-anymail ESP backend.

Text and HTML parts come from the type's templates. SMTP and ESP errors are read into
transient (4xx replies, timeouts, dropped connections, 429/5xx) or permanent (5xx replies,
refused recipients, invalid addresses).
"""

from __future__ import annotations

import contextlib
import smtplib
import socket
from collections.abc import Iterable, Iterator, Mapping, Sequence
from typing import Any, ClassVar

import environ
from django.conf import settings
from django.core.mail import EmailMultiAlternatives, get_connection

from channels.base import (
    Channel,
    ConfiguredProvider,
    ErrorCode,
    Outcome,
    Outgoing,
    SendResult,
    asks_to_wait,
    classify_http_status,
    not_sent_after,
    retry_after_seconds,
)


def _smtp_code_result(provider: str, code: int, error: str, permanent: ErrorCode) -> SendResult:
    if 400 <= code < 500:
        return SendResult.transient(provider, ErrorCode.PROVIDER_UNAVAILABLE, error)
    return SendResult.permanent(provider, permanent, error)


def classify_email_error(provider: str, exc: BaseException) -> SendResult:
    """Turn an SMTP or anymail exception into a typed result."""
    if isinstance(exc, smtplib.SMTPRecipientsRefused):
        codes = [code for code, _ in exc.recipients.values()]
        detail = "; ".join(
            f"{addr}: {code} {msg!r}" for addr, (code, msg) in exc.recipients.items()
        )
        if codes and all(400 <= c < 500 for c in codes):
            return SendResult.transient(provider, ErrorCode.PROVIDER_UNAVAILABLE, detail)
        return SendResult.permanent(provider, ErrorCode.INVALID_RECIPIENT, detail)
    if isinstance(exc, smtplib.SMTPResponseException):
        return _smtp_code_result(
            provider, exc.smtp_code, f"{exc.smtp_code} {exc.smtp_error!r}", ErrorCode.REJECTED
        )
    if isinstance(exc, (socket.timeout, TimeoutError)):
        return SendResult.transient(provider, ErrorCode.TIMEOUT, str(exc) or "timed out")
    if isinstance(exc, (smtplib.SMTPServerDisconnected, smtplib.SMTPConnectError, ConnectionError)):
        return SendResult.transient(provider, ErrorCode.CONNECTION, str(exc))
    anymail = _classify_anymail(provider, exc)
    if anymail is not None:
        return anymail
    if isinstance(exc, OSError):
        return SendResult.transient(provider, ErrorCode.CONNECTION, str(exc))
    return SendResult.transient(provider, ErrorCode.UNEXPECTED, f"{type(exc).__name__}: {exc}")


def _classify_anymail(provider: str, exc: BaseException) -> SendResult | None:
    try:
        from anymail.exceptions import (
            AnymailAPIError,
            AnymailInvalidAddress,
            AnymailRecipientsRefused,
        )
    except ImportError:  # pragma: no cover - anymail is a declared dependency
        return None
    if isinstance(exc, (AnymailRecipientsRefused, AnymailInvalidAddress)):
        return SendResult.permanent(provider, ErrorCode.INVALID_RECIPIENT, str(exc))
    if isinstance(exc, AnymailAPIError):
        status: int | None = getattr(exc, "status_code", None)
        if status is None or classify_http_status(status) is Outcome.TRANSIENT:
            code = ErrorCode.RATE_LIMITED if status == 429 else ErrorCode.PROVIDER_UNAVAILABLE
            headers = getattr(getattr(exc, "response", None), "headers", None) or {}
            wait = retry_after_seconds(headers.get("Retry-After")) if status else None
            return SendResult.transient(provider, code, str(exc), retry_after_s=wait)
        return SendResult.permanent(provider, ErrorCode.REJECTED, str(exc))
    return None


def build_email(outgoing: Outgoing, *, from_email: str = "") -> EmailMultiAlternatives:
    content = outgoing.content
    sender = from_email or settings.DEFAULT_FROM_EMAIL
    message = EmailMultiAlternatives(
        subject=content.subject,
        body=content.body,
        from_email=sender,
        to=[outgoing.email],
        headers={
            "Message-ID": message_id(outgoing, sender),
            "X-Notifier-Delivery": str(outgoing.delivery_id),
            **idempotency_headers(outgoing),
            **outgoing.headers,
        },
    )
    # anymail ESPs keep this with the message and return it in their webhooks (SMTP ignores it).
    message.metadata = {"delivery_id": str(outgoing.delivery_id)}  # type: ignore[attr-defined]
    if content.html:
        message.attach_alternative(content.html, "text/html")
    return message


def message_id(outgoing: Outgoing, sender: str) -> str:
    """The same for every attempt of a delivery: a mailbox that drops a second message with a
    Message-ID it holds already (Gmail does) collapses a re-send after a crash."""
    return f"<{outgoing.idempotency_key}@{_domain(sender)}>"


def idempotency_headers(outgoing: Outgoing) -> dict[str, str]:
    """The delivery's key in the header an ESP dedupes on, when one is configured
    (NOTIFIER_EMAIL_IDEMPOTENCY_HEADER: Brevo's `idempotencyKey`, Resend's SMTP
    `Resend-Idempotency-Key`); plain SMTP and most ESPs have none."""
    header = settings.NOTIFIER_EMAIL_IDEMPOTENCY_HEADER
    return {header: outgoing.idempotency_key} if header else {}


def _domain(sender: str) -> str:
    return sender.rsplit("@", 1)[-1].rstrip(">") if "@" in sender else "localhost"


def _is_smtp(backend: str) -> bool:
    return backend.endswith("smtp.EmailBackend")


class DjangoEmailProvider(ConfiguredProvider):
    """Email through a Django email backend. Without options: EMAIL_BACKEND and its settings
    (EMAIL_URL, ANYMAIL). A configured instance (NOTIFIER_PROVIDER_INSTANCES) has its own:
    `email_url` (an SMTP server, smtp://user:password@host:587), or `backend` (a dotted path,
    e.g. anymail.backends.mailgun.EmailBackend) with `backend_options` (its settings as
    keyword arguments, e.g. {"api_key": "..."}); and optionally `from_email`."""

    name: str = "django"
    channel: ClassVar[Channel] = Channel.EMAIL
    in_database: ClassVar[bool] = False
    option_names: ClassVar[frozenset[str]] = frozenset(
        {"email_url", "backend", "backend_options", "from_email"}
    )

    @classmethod
    def configuration_problems(cls, options: Mapping[str, Any] | None = None) -> list[str]:
        if options is not None:
            backend = str(options.get("backend") or "")
            if options.get("email_url"):
                return ["give it email_url or backend, not both"] if backend else []
            if not backend:
                return ["give it email_url (an SMTP server) or backend (e.g. an anymail ESP)"]
            if backend.startswith("anymail.") and not options.get("backend_options"):
                return ["give it backend_options with the ESP's settings, e.g. api_key"]
            return []
        backend = settings.EMAIL_BACKEND
        if _is_smtp(backend) and not settings.EMAIL_HOST:
            return ["set EMAIL_URL (e.g. smtp://user:password@mail.example.com:587)"]
        if backend.startswith("anymail.") and not settings.ANYMAIL:
            return ["set ANYMAIL (e.g. ANYMAIL=MAILGUN_API_KEY=...) for the anymail backend"]
        return []

    def connection(self) -> Any:
        """A new connection of this instance's backend (not yet opened)."""
        if not self.options:
            return get_connection(fail_silently=False)
        if url := self.options.get("email_url"):
            parsed = environ.Env.email_url_config(str(url))
            smtp = {
                "host": parsed.get("EMAIL_HOST"),
                "port": parsed.get("EMAIL_PORT"),
                "username": parsed.get("EMAIL_HOST_USER"),
                "password": parsed.get("EMAIL_HOST_PASSWORD"),
                "use_tls": parsed.get("EMAIL_USE_TLS", False),
                "use_ssl": parsed.get("EMAIL_USE_SSL", False),
                "timeout": settings.EMAIL_TIMEOUT,
            }
            return get_connection(parsed["EMAIL_BACKEND"], fail_silently=False, **smtp)
        extra = dict(self.options.get("backend_options") or {})
        return get_connection(str(self.options["backend"]), fail_silently=False, **extra)

    def send_many(self, outgoings: Sequence[Outgoing]) -> list[SendResult]:
        return [result for _, result in self.send_each(outgoings)]

    def send_each(self, outgoings: Iterable[Outgoing]) -> Iterator[tuple[Outgoing, SendResult]]:
        """One connection for the batch, opened when the first message is handed over. After
        a refusal that asks us to wait, the rest is not sent (each gets that refusal)."""
        from_email = str(self.options.get("from_email") or "")
        connection: Any = None
        failure: SendResult | None = None
        refusal: SendResult | None = None
        try:
            for outgoing in outgoings:
                if refusal is not None:
                    yield outgoing, not_sent_after(refusal)
                    continue
                if connection is None and failure is None:
                    connection = self.connection()
                    try:
                        connection.open()
                    except Exception as exc:  # server unreachable: each message fails for now
                        failure = classify_email_error(self.name, exc)
                if failure is not None:
                    yield outgoing, failure
                    continue
                email = build_email(outgoing, from_email=from_email)
                email.connection = connection
                try:
                    email.send()
                except Exception as exc:
                    result = classify_email_error(self.name, exc)
                    if asks_to_wait(result):
                        refusal = result
                    yield outgoing, result
                    continue
                yield outgoing, SendResult.sent(self.name, _provider_id(email))
        finally:
            if connection is not None and failure is None:
                with contextlib.suppress(Exception):  # a broken connection may not close
                    connection.close()


def _provider_id(email: EmailMultiAlternatives) -> str:
    status = getattr(email, "anymail_status", None)
    if status is not None and status.message_id:
        return str(status.message_id)
    return str(email.extra_headers.get("Message-ID", ""))
