"""The small protocol every channel provider implements, and the typed values it exchanges.

A provider gets `Outgoing` values (everything needed to send, no ORM objects) and returns one
`SendResult` per outgoing. Expected failures are results, not exceptions: TRANSIENT ones are
retried with backoff, PERMANENT ones fail the delivery at once with their reason.

The pipeline sends through `send_each`: one result at a time, as each message is sent, so it
records every accepted send before the next one goes out (a crash then re-sends at most the
message in flight), and hands the provider the next outgoing only while its claim holds.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from email.utils import parsedate_to_datetime
from enum import StrEnum
from typing import Any, ClassVar, Protocol, runtime_checkable


class Channel(StrEnum):
    INAPP = "inapp"
    EMAIL = "email"
    SMS = "sms"
    PUSH = "push"


class Outcome(StrEnum):
    SENT = "sent"  # the provider accepted the message
    TRANSIENT = "transient"  # timeouts, 5xx, 429: worth retrying
    PERMANENT = "permanent"  # invalid number, unregistered token: retrying cannot help


class ErrorCode(StrEnum):
    """Machine-readable failure codes; the pipeline maps them to delivery reasons."""

    TIMEOUT = "timeout"
    CONNECTION = "connection"
    RATE_LIMITED = "rate_limited"
    PROVIDER_UNAVAILABLE = "provider_unavailable"
    INVALID_RECIPIENT = "invalid_recipient"
    DEVICE_UNREGISTERED = "device_unregistered"
    REJECTED = "rejected"
    NOT_CONFIGURED = "not_configured"
    UNEXPECTED = "unexpected"


@dataclass(frozen=True, slots=True)
class PushTarget:
    device_id: int
    platform: str  # "android", "ios" or "web"
    token: str  # FCM registration token, or the Web Push endpoint
    web_push_keys: dict[str, str] | None = None  # {"p256dh": ..., "auth": ...} for web


@dataclass(frozen=True, slots=True)
class Content:
    """What generate rendered for one channel. Unused parts stay empty."""

    subject: str = ""
    title: str = ""
    body: str = ""
    html: str = ""
    link: str = ""
    headers: dict[str, str] = field(default_factory=dict)  # e.g. List-Unsubscribe on email
    # The original URLs behind tracked links, in order: a click token names its index here.
    links: tuple[str, ...] = ()

    def as_dict(self) -> dict[str, Any]:
        parts: dict[str, Any] = {
            name: value
            for name in ("subject", "title", "body", "html", "link")
            if (value := getattr(self, name))
        }
        if self.headers:
            parts["headers"] = dict(self.headers)
        if self.links:
            parts["links"] = list(self.links)
        return parts

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Content:
        parts = {k: str(data.get(k, "")) for k in ("subject", "title", "body", "html", "link")}
        return cls(
            **parts,
            headers=dict(data.get("headers") or {}),
            links=tuple(str(url) for url in data.get("links") or ()),
        )


@dataclass(frozen=True, slots=True)
class Outgoing:
    """One delivery ready to go out: plain values only, so providers never touch the ORM."""

    delivery_id: int
    message_id: int
    user_id: Any  # the project's user key: int, UUID or text (notifier.user_keys)
    channel: Channel
    type_key: str
    content: Content
    attempt: int  # 1 for the first attempt
    email: str = ""
    phone: str = ""
    devices: tuple[PushTarget, ...] = ()
    category: str = ""  # the notification kind, shown as the inbox category
    headers: dict[str, str] = field(default_factory=dict)

    @property
    def idempotency_key(self) -> str:
        """Stable per delivery: providers that support idempotent requests receive it."""
        return f"delivery-{self.delivery_id}"

    @property
    def recipient(self) -> str:
        if self.channel is Channel.EMAIL:
            return self.email
        if self.channel is Channel.SMS:
            return self.phone
        if self.channel is Channel.PUSH:
            return ",".join(device.token for device in self.devices)
        return f"user:{self.user_id}"


@dataclass(frozen=True, slots=True)
class SendResult:
    outcome: Outcome
    provider: str
    provider_message_id: str = ""
    error_code: ErrorCode | None = None
    error: str = ""
    retry_after_s: float | None = None  # a provider's Retry-After, when it gave one
    deactivate_device_ids: tuple[int, ...] = ()  # push tokens the provider says are dead
    detail: dict[str, Any] = field(default_factory=dict)

    @classmethod
    def sent(cls, provider: str, provider_message_id: str = "", **detail: Any) -> SendResult:
        return cls(Outcome.SENT, provider, provider_message_id=provider_message_id, detail=detail)

    @classmethod
    def transient(
        cls, provider: str, code: ErrorCode, error: str, *, retry_after_s: float | None = None
    ) -> SendResult:
        return cls(
            Outcome.TRANSIENT, provider, error_code=code, error=error, retry_after_s=retry_after_s
        )

    @classmethod
    def permanent(
        cls, provider: str, code: ErrorCode, error: str, *, deactivate: Sequence[int] = ()
    ) -> SendResult:
        return cls(
            Outcome.PERMANENT,
            provider,
            error_code=code,
            error=error,
            deactivate_device_ids=tuple(deactivate),
        )


@runtime_checkable
class Provider(Protocol):
    """A way to send over one channel. Registered by name in `channels.registry`.

    `name` is the configured name of this instance ("twilio", or "twilio_backup" for a second
    account): the key of its rate limit and circuit breaker, and what Delivery.provider says.
    """

    name: str
    channel: ClassVar[Channel]
    # True when send() writes only to our own database: the pipeline then records the outcome
    # in the same transaction, so a crash can neither lose nor double the send.
    in_database: ClassVar[bool]

    def send_many(self, outgoings: Sequence[Outgoing]) -> list[SendResult]:
        """Send each outgoing; return one result per outgoing, in order. Never raise for an
        expected failure; an exception is treated as a transient unexpected error."""
        ...


@runtime_checkable
class StreamingProvider(Provider, Protocol):
    """A provider that answers message by message (every one that is not in our database)."""

    def send_each(self, outgoings: Iterable[Outgoing]) -> Iterator[tuple[Outgoing, SendResult]]:
        """Send the outgoings one by one, yielding each with its result as soon as it is known.
        Take the next outgoing from `outgoings` only after the previous result was taken: the
        caller records it, and may stop handing out outgoings (its claim on them was lost).
        A provider that sends several messages in one request (a batch API) takes that
        request's outgoings together, only after every result of the request before."""
        ...


def send_each(
    provider: Provider, outgoings: Iterable[Outgoing]
) -> Iterator[tuple[Outgoing, SendResult]]:
    """Results one by one through whichever way the provider offers; a provider with only
    `send_many` is called with one outgoing at a time."""
    if isinstance(provider, StreamingProvider):
        yield from provider.send_each(outgoings)
        return
    for outgoing in outgoings:
        (result,) = provider.send_many([outgoing])
        yield outgoing, result


class ConfiguredProvider:
    """Base for provider classes of which several instances may be configured, each with its
    own name and options (credentials): `NOTIFIER_PROVIDER_INSTANCES` in `channels.registry`.
    Without options an instance reads the usual settings (TWILIO_*, EMAIL_*)."""

    name: str
    channel: ClassVar[Channel]
    in_database: ClassVar[bool] = False
    # The option names an instance may be given; anything else is a configuration error.
    option_names: ClassVar[frozenset[str]] = frozenset()

    def __init__(self, *, name: str = "", options: Mapping[str, Any] | None = None) -> None:
        if name:
            self.name = name
        self.options: dict[str, Any] = dict(options or {})

    @classmethod
    def configuration_problems(cls, options: Mapping[str, Any] | None = None) -> list[str]:
        return []


class SingleSendProvider(ConfiguredProvider):
    """Base for providers that send one message per request: implement `send`.

    After a result that asks us to wait (a 429, or a refusal with a Retry-After) the rest of
    the batch is not sent: each gets the same refusal, so the pipeline hands it to the next
    provider or defers it, instead of calling a provider that just said "not now" again.
    """

    def send(self, outgoing: Outgoing) -> SendResult:
        raise NotImplementedError

    def send_each(self, outgoings: Iterable[Outgoing]) -> Iterator[tuple[Outgoing, SendResult]]:
        refusal: SendResult | None = None
        for outgoing in outgoings:
            if refusal is not None:
                yield outgoing, not_sent_after(refusal)
                continue
            result = self.send(outgoing)
            if asks_to_wait(result):
                refusal = result
            yield outgoing, result

    def send_many(self, outgoings: Sequence[Outgoing]) -> list[SendResult]:
        return [result for _, result in self.send_each(outgoings)]


def asks_to_wait(result: SendResult) -> bool:
    """The provider refused the message unsent and asked for time: a 429, or a 5xx or SMTP
    4xx with a Retry-After."""
    if result.outcome is not Outcome.TRANSIENT:
        return False
    if result.error_code is ErrorCode.RATE_LIMITED:
        return True
    return result.error_code is ErrorCode.PROVIDER_UNAVAILABLE and result.retry_after_s is not None


def _with_the_rest_not_sent(results: list[SendResult], total: int) -> list[SendResult]:
    left = total - len(results)
    return results + [not_sent_after(results[-1])] * left if left else results


def not_sent_after(refusal: SendResult) -> SendResult:
    """The result of a message not sent because the provider had just asked us to wait: never
    attempted, so it says nothing about the provider's health (`attempted` is False)."""
    assert refusal.error_code is not None
    return SendResult(
        Outcome.TRANSIENT,
        refusal.provider,
        error_code=refusal.error_code,
        error=f"not sent: {refusal.provider} had just asked to wait ({refusal.error})",
        retry_after_s=refusal.retry_after_s,
        detail={NOT_ATTEMPTED: True},
    )


# SendResult.detail key of a result for a message the provider was never asked to send.
NOT_ATTEMPTED = "not_attempted"


def retry_after_seconds(value: str | None, *, now: datetime | None = None) -> float | None:
    """An HTTP Retry-After header (delta-seconds or an HTTP-date) in seconds; None when absent
    or unreadable."""
    if not value:
        return None
    value = value.strip()
    if value.isdigit():
        return float(value)
    try:
        when = parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    if when.tzinfo is None:
        return None
    return max(0.0, (when - (now or datetime.now(UTC))).total_seconds())


def classify_http_status(status: int) -> Outcome:
    """The usual HTTP reading: 429 and 5xx are worth retrying, other 4xx are not."""
    if status == 429 or status >= 500:
        return Outcome.TRANSIENT
    if 200 <= status < 300:
        return Outcome.SENT
    return Outcome.PERMANENT
