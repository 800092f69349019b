"""SMS channel through Twilio's SDK (Messaging API), with its errors read into typed results."""

from __future__ import annotations

import functools
import threading
from collections.abc import Mapping
from typing import Any, ClassVar
from urllib.parse import urlencode

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
    retry_after_seconds,
)

# Twilio error codes that no retry can fix. https://www.twilio.com/docs/api/errors
INVALID_NUMBER_CODES = frozenset({21211, 21214, 21217, 21401, 21407, 21408, 21421, 21612, 21614})
OPTED_OUT_CODES = frozenset({21610})  # the recipient replied STOP


@functools.cache
def twilio_client(account_sid: str = "", auth_token: str = "") -> Any:
    """One client per account and process (the NOTIFIER_TWILIO_* account when none is named)."""
    from twilio.rest import Client

    return Client(
        account_sid or settings.NOTIFIER_TWILIO_ACCOUNT_SID,
        auth_token or settings.NOTIFIER_TWILIO_AUTH_TOKEN,
        http_client=_retry_after_http_client(),
    )


def _retry_after_http_client() -> Any:
    from twilio.http.http_client import TwilioHttpClient

    class RetryAfterHttpClient(TwilioHttpClient):
        """Twilio's HTTP client, remembering (per thread) the last response's Retry-After:
        Twilio's exceptions do not carry the response headers."""

        def __init__(self) -> None:
            super().__init__(timeout=10)
            self.seen = threading.local()

        def request(self, *args: Any, **kwargs: Any) -> Any:
            self.seen.retry_after = None
            response = super().request(*args, **kwargs)
            self.seen.retry_after = (response.headers or {}).get("Retry-After")
            return response

    return RetryAfterHttpClient()


def _last_retry_after(client: Any) -> float | None:
    """The Retry-After of this thread's last response through the client, in seconds."""
    seen = getattr(getattr(client, "http_client", None), "seen", None)
    return retry_after_seconds(getattr(seen, "retry_after", None))


def classify_twilio_error(
    provider: str, exc: BaseException, *, retry_after_s: float | None = None
) -> SendResult:
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
            return SendResult.transient(provider, code, error, retry_after_s=retry_after_s)
        return SendResult.permanent(provider, ErrorCode.REJECTED, error)
    if isinstance(exc, requests.Timeout):
        return SendResult.transient(provider, ErrorCode.TIMEOUT, str(exc))
    if isinstance(exc, requests.ConnectionError):
        return SendResult.transient(provider, ErrorCode.CONNECTION, str(exc))
    return SendResult.transient(provider, ErrorCode.UNEXPECTED, f"{type(exc).__name__}: {exc}")


def status_callback_url(provider: str = "") -> str:
    """Where Twilio posts this message's status changes (see notifier.webhooks.views); a
    configured instance other than "twilio" is named in the query, so the callback is checked
    with that account's token and finds deliveries sent through it."""
    base = settings.NOTIFIER_TWILIO_WEBHOOK_BASE_URL or settings.NOTIFIER_SITE_URL
    url = f"{base.rstrip('/')}{reverse('notifier:twilio-status')}"
    return f"{url}?{urlencode({'provider': provider})}" if provider else url


class TwilioSmsProvider(SingleSendProvider):
    """Twilio's Messaging API. Options of a configured instance (NOTIFIER_PROVIDER_INSTANCES):
    account_sid, auth_token, and from_number or messaging_service_sid; without options it
    uses the NOTIFIER_TWILIO_* settings."""

    name: str = "twilio"
    channel: ClassVar[Channel] = Channel.SMS
    # The SDK, from the `sms` extra (channels.registry.missing_sdks).
    extra: ClassVar[str] = "sms"

    @classmethod
    def sdk_modules(cls) -> tuple[str, ...]:
        return ("twilio",)

    option_names: ClassVar[frozenset[str]] = frozenset(
        {"account_sid", "auth_token", "from_number", "messaging_service_sid"}
    )

    @classmethod
    def configuration_problems(cls, options: Mapping[str, Any] | None = None) -> list[str]:
        if options is not None:
            return cls._option_problems(options)
        problems = []
        if not (settings.NOTIFIER_TWILIO_ACCOUNT_SID and settings.NOTIFIER_TWILIO_AUTH_TOKEN):
            problems.append("set NOTIFIER_TWILIO_ACCOUNT_SID and NOTIFIER_TWILIO_AUTH_TOKEN")
        if not (
            settings.NOTIFIER_TWILIO_FROM_NUMBER or settings.NOTIFIER_TWILIO_MESSAGING_SERVICE_SID
        ):
            problems.append(
                "set NOTIFIER_TWILIO_FROM_NUMBER or NOTIFIER_TWILIO_MESSAGING_SERVICE_SID"
            )
        return problems

    @classmethod
    def _option_problems(cls, options: Mapping[str, Any]) -> list[str]:
        problems = []
        if not (options.get("account_sid") and options.get("auth_token")):
            problems.append("give it account_sid and auth_token")
        if not (options.get("from_number") or options.get("messaging_service_sid")):
            problems.append("give it from_number or messaging_service_sid")
        return problems

    def account(self) -> tuple[str, str]:
        """(account SID, auth token) of this instance."""
        if self.options:
            return str(self.options["account_sid"]), str(self.options["auth_token"])
        return settings.NOTIFIER_TWILIO_ACCOUNT_SID, settings.NOTIFIER_TWILIO_AUTH_TOKEN

    def _sender(self) -> dict[str, str]:
        if self.options:
            service = str(self.options.get("messaging_service_sid") or "")
            number = str(self.options.get("from_number") or "")
        else:
            service, number = (
                settings.NOTIFIER_TWILIO_MESSAGING_SERVICE_SID,
                settings.NOTIFIER_TWILIO_FROM_NUMBER,
            )
        return {"messaging_service_sid": service} if service else {"from_": number}

    def send(self, outgoing: Outgoing) -> SendResult:
        client = twilio_client(*self.account()) if self.options else twilio_client()
        try:
            message = client.messages.create(
                to=outgoing.phone,
                body=outgoing.content.body,
                status_callback=status_callback_url(
                    "" if self.name == TwilioSmsProvider.name else self.name
                ),
                **self._sender(),
            )
        except Exception as exc:
            return classify_twilio_error(self.name, exc, retry_after_s=_last_retry_after(client))
        return SendResult.sent(self.name, str(message.sid), status=str(message.status))


# --- Plivo: a second SMS provider, through its own SDK ----------------------------------------


def plivo_client(auth_id: str, auth_token: str) -> Any:
    """One client per account, process and thread (requests sessions are not thread-safe to
    share while we read each response's status)."""
    clients: dict[tuple[str, str], Any] = _plivo_clients.__dict__.setdefault("clients", {})
    client = clients.get((auth_id, auth_token))
    if client is None:
        client = clients[(auth_id, auth_token)] = _status_recording_plivo(auth_id, auth_token)
    return client


_plivo_clients = threading.local()


def _status_recording_plivo(auth_id: str, auth_token: str) -> Any:
    import plivo

    class StatusRecordingClient(plivo.RestClient):
        """Plivo's client, keeping the last response's status and Retry-After: the SDK's
        exceptions carry neither (a 429 is a bare PlivoRestError with words)."""

        status: int = 0
        retry_after: str | None = None

        def send_request(self, request: Any, **kwargs: Any) -> Any:
            self.status, self.retry_after = 0, None
            response = super().send_request(request, **kwargs)
            self.status = int(response.status_code)
            self.retry_after = response.headers.get("Retry-After")
            return response

    return StatusRecordingClient(auth_id, auth_token, timeout=10)


def classify_plivo_error(provider: str, exc: BaseException, client: Any) -> SendResult:
    import plivo.exceptions as errors

    status = int(getattr(client, "status", 0) or 0)
    if isinstance(exc, requests.Timeout):
        return SendResult.transient(provider, ErrorCode.TIMEOUT, str(exc))
    if isinstance(exc, requests.ConnectionError):
        return SendResult.transient(provider, ErrorCode.CONNECTION, str(exc))
    error = f"plivo {status or '?'}: {exc}"
    if status == 429 or status >= 500:
        code = ErrorCode.RATE_LIMITED if status == 429 else ErrorCode.PROVIDER_UNAVAILABLE
        wait = retry_after_seconds(getattr(client, "retry_after", None))
        return SendResult.transient(provider, code, error, retry_after_s=wait)
    if isinstance(exc, errors.ValidationError):
        return SendResult.permanent(provider, ErrorCode.INVALID_RECIPIENT, error)
    if isinstance(exc, errors.PlivoRestError):
        return SendResult.permanent(provider, ErrorCode.REJECTED, error)
    return SendResult.transient(provider, ErrorCode.UNEXPECTED, f"{type(exc).__name__}: {exc}")


class PlivoSmsProvider(SingleSendProvider):
    """Plivo's Message API through its SDK. Settings NOTIFIER_PLIVO_AUTH_ID, _AUTH_TOKEN and
    _FROM_NUMBER (or _POWERPACK_UUID); a configured instance's options: auth_id,
    auth_token, from_number or powerpack_uuid. Plivo takes no idempotency key, and its delivery
    reports have no webhook here yet: a Plivo send stays `sent`."""

    name: str = "plivo"
    channel: ClassVar[Channel] = Channel.SMS
    # The SDK, from the `sms` extra (channels.registry.missing_sdks).
    extra: ClassVar[str] = "sms"

    @classmethod
    def sdk_modules(cls) -> tuple[str, ...]:
        return ("plivo",)

    option_names: ClassVar[frozenset[str]] = frozenset(
        {"auth_id", "auth_token", "from_number", "powerpack_uuid"}
    )

    @classmethod
    def configuration_problems(cls, options: Mapping[str, Any] | None = None) -> list[str]:
        values = cls._values(options)
        problems = []
        if not (values["auth_id"] and values["auth_token"]):
            problems.append(
                "set NOTIFIER_PLIVO_AUTH_ID and NOTIFIER_PLIVO_AUTH_TOKEN"
                if options is None
                else "give it auth_id and auth_token"
            )
        if not (values["from_number"] or values["powerpack_uuid"]):
            problems.append(
                "set NOTIFIER_PLIVO_FROM_NUMBER or NOTIFIER_PLIVO_POWERPACK_UUID"
                if options is None
                else "give it from_number or powerpack_uuid"
            )
        return problems

    @staticmethod
    def _values(options: Mapping[str, Any] | None) -> dict[str, str]:
        if options is not None:
            return {name: str(options.get(name) or "") for name in PlivoSmsProvider.option_names}
        return {
            "auth_id": settings.NOTIFIER_PLIVO_AUTH_ID,
            "auth_token": settings.NOTIFIER_PLIVO_AUTH_TOKEN,
            "from_number": settings.NOTIFIER_PLIVO_FROM_NUMBER,
            "powerpack_uuid": settings.NOTIFIER_PLIVO_POWERPACK_UUID,
        }

    def send(self, outgoing: Outgoing) -> SendResult:
        values = self._values(self.options or None)
        client = plivo_client(values["auth_id"], values["auth_token"])
        sender = (
            {"powerpack_uuid": values["powerpack_uuid"]}
            if values["powerpack_uuid"]
            else {"src": values["from_number"]}
        )
        try:
            response = client.messages.create(
                dst=outgoing.phone, text=outgoing.content.body, **sender
            )
        except Exception as exc:
            return classify_plivo_error(self.name, exc, client)
        uuids = getattr(response, "message_uuid", None) or [""]
        return SendResult.sent(self.name, str(uuids[0]))
