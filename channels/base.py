"""The small protocol every channel provider implements, and the typed values it exchanges.

A provider gets `Outgoing` values (everything needed to send, no ORM objects) and returns one
`SendResult` per outgoing. Expected failures are results, not exceptions: TRANSIENT ones are
retried with backoff, PERMANENT ones fail the delivery at once with their reason.

The pipeline sends through `send_each`: one result at a time, as each message is sent, so it
records every accepted send before the next one goes out (a crash then re-sends at most the
message in flight), and hands the provider the next outgoing only while its claim holds.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, field
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
    user_id: int
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
    """A way to send over one channel. Registered by name in `channels.registry`."""

    name: ClassVar[str]
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
        caller records it, and may stop handing out outgoings (its claim on them was lost)."""
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


class SingleSendProvider:
    """Base for providers that send one message per request: implement `send`."""

    name: ClassVar[str]
    channel: ClassVar[Channel]
    in_database: ClassVar[bool] = False

    def send(self, outgoing: Outgoing) -> SendResult:
        raise NotImplementedError

    def send_each(self, outgoings: Iterable[Outgoing]) -> Iterator[tuple[Outgoing, SendResult]]:
        for outgoing in outgoings:
            yield outgoing, self.send(outgoing)

    def send_many(self, outgoings: Sequence[Outgoing]) -> list[SendResult]:
        return [result for _, result in self.send_each(outgoings)]


def classify_http_status(status: int) -> Outcome:
    """The usual HTTP reading: 429 and 5xx are worth retrying, other 4xx are not."""
    if status == 429 or status >= 500:
        return Outcome.TRANSIENT
    if 200 <= status < 300:
        return Outcome.SENT
    return Outcome.PERMANENT
