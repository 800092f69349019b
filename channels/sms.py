"""SMS channel through Twilio's SDK (Messaging API), with its errors read into typed results."""

from __future__ import annotations

import functools
from typing import Any, ClassVar

import requests
from django.conf import settings
from django.urls import reverse

from channels.base import (
    Channel,
    ErrorCode,
    Outcome,
    Outgoing,
    SendResult,
    SingleSendProvider,
    classify_http_status,
)

# Twilio error codes that no retry can fix. https://www.twilio.com/docs/api/errors
INVALID_NUMBER_CODES = frozenset({21211, 21214, 21217, 21401, 21407, 21408, 21421, 21612, 21614})
OPTED_OUT_CODES = frozenset({21610})  # the recipient replied STOP


@functools.cache
def twilio_client() -> Any:
    from twilio.http.http_client import TwilioHttpClient
    from twilio.rest import Client

    return Client(
        settings.TWILIO_ACCOUNT_SID,
        settings.TWILIO_AUTH_TOKEN,
        http_client=TwilioHttpClient(timeout=10),
    )


def classify_twilio_error(provider: str, exc: BaseException) -> SendResult:
    from twilio.base.exceptions import TwilioRestException, TwilioServiceException

    # Twilio raises the classic TwilioRestException, or for newer APIs an RFC 9457 problem
    # (TwilioServiceException); both carry the HTTP status and Twilio's error code.
    if isinstance(exc, (TwilioRestException, TwilioServiceException)):
        words = exc.msg if isinstance(exc, TwilioRestException) else (exc.detail or exc.title)
        error = f"twilio {exc.status} code {exc.code}: {words}"
        if exc.code in INVALID_NUMBER_CODES:
            return SendResult.permanent(provider, ErrorCode.INVALID_RECIPIENT, error)
        if exc.code in OPTED_OUT_CODES:
            return SendResult.permanent(provider, ErrorCode.REJECTED, error)
        if classify_http_status(exc.status) is Outcome.TRANSIENT:
            code = ErrorCode.RATE_LIMITED if exc.status == 429 else ErrorCode.PROVIDER_UNAVAILABLE
            return SendResult.transient(provider, code, error)
        return SendResult.permanent(provider, ErrorCode.REJECTED, error)
    if isinstance(exc, requests.Timeout):
        return SendResult.transient(provider, ErrorCode.TIMEOUT, str(exc))
    if isinstance(exc, requests.ConnectionError):
        return SendResult.transient(provider, ErrorCode.CONNECTION, str(exc))
    return SendResult.transient(provider, ErrorCode.UNEXPECTED, f"{type(exc).__name__}: {exc}")


def status_callback_url() -> str:
    """Where Twilio posts this message's status changes (see notifier.views.webhooks)."""
    base = settings.TWILIO_WEBHOOK_BASE_URL or settings.NOTIFIER_SITE_URL
    return f"{base.rstrip('/')}{reverse('twilio-status')}"


class TwilioSmsProvider(SingleSendProvider):
    name: ClassVar[str] = "twilio"
    channel: ClassVar[Channel] = Channel.SMS

    @classmethod
    def configuration_problems(cls) -> list[str]:
        problems = []
        if not (settings.TWILIO_ACCOUNT_SID and settings.TWILIO_AUTH_TOKEN):
            problems.append("set TWILIO_ACCOUNT_SID and TWILIO_AUTH_TOKEN")
        if not (settings.TWILIO_FROM_NUMBER or settings.TWILIO_MESSAGING_SERVICE_SID):
            problems.append("set TWILIO_FROM_NUMBER or TWILIO_MESSAGING_SERVICE_SID")
        return problems

    def send(self, outgoing: Outgoing) -> SendResult:
        sender: dict[str, str] = (
            {"messaging_service_sid": settings.TWILIO_MESSAGING_SERVICE_SID}
            if settings.TWILIO_MESSAGING_SERVICE_SID
            else {"from_": settings.TWILIO_FROM_NUMBER}
        )
        try:
            message = twilio_client().messages.create(
                to=outgoing.phone,
                body=outgoing.content.body,
                status_callback=status_callback_url(),
                **sender,
            )
        except Exception as exc:
            return classify_twilio_error(self.name, exc)
        return SendResult.sent(self.name, str(message.sid), status=str(message.status))
