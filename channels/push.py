"""Push channel: FCM (firebase-admin) for Android and iOS tokens, Web Push (pywebpush) for web.

One delivery goes to every active device of the user: one FCM multicast per delivery (its
user's tokens, at most 500 a call) plus one Web Push request per browser subscription. It
counts as sent when any device accepted it; tokens the services call dead (FCM UNREGISTERED,
Web Push 404/410) are returned for deactivation whatever the overall outcome.
"""

from __future__ import annotations

import functools
import json
from collections.abc import Iterable, Iterator, Sequence
from typing import Any, ClassVar

import requests
from django.conf import settings

from channels.base import (
    Channel,
    ErrorCode,
    Outcome,
    Outgoing,
    PushTarget,
    SendResult,
    classify_http_status,
)

FCM_PLATFORMS = frozenset({"android", "ios"})
FCM_BATCH = 500  # send_each_for_multicast accepts at most 500 tokens per call


@functools.cache
def firebase_app() -> Any:
    import firebase_admin
    from firebase_admin import credentials

    return firebase_admin.initialize_app(
        credentials.Certificate(settings.NOTIFIER_FCM_CREDENTIALS_FILE), name="notifier"
    )


@functools.cache
def _vapid_public_key(private_key: str) -> str:
    import base64
    import os

    from cryptography.hazmat.primitives import serialization
    from py_vapid import Vapid

    vapid = (
        Vapid.from_file(private_key)
        if os.path.isfile(private_key)
        else Vapid.from_string(private_key)
    )
    raw = vapid.public_key.public_bytes(
        serialization.Encoding.X962, serialization.PublicFormat.UncompressedPoint
    )
    return base64.urlsafe_b64encode(raw).rstrip(b"=").decode()


def vapid_public_key() -> str:
    """The application server key a browser subscribes with (`PushManager.subscribe`'s
    `applicationServerKey`): the base64url P-256 public key of NOTIFIER_WEBPUSH_VAPID_PRIVATE_KEY
    (a PEM file's path or the key's base64url text, as pywebpush reads it); "" when Web Push is
    not configured."""
    private_key = settings.NOTIFIER_WEBPUSH_VAPID_PRIVATE_KEY
    return _vapid_public_key(private_key) if private_key else ""


def webpush_endpoint_allowed(endpoint: str) -> bool:
    """Whether a Web Push subscription's endpoint is an https URL on one of the push services
    of NOTIFIER_WEBPUSH_ENDPOINT_HOSTS (never an address of the site's own network)."""
    from urllib.parse import urlsplit

    try:
        parts = urlsplit(endpoint)
        host = (parts.hostname or "").lower().rstrip(".")
    except ValueError:
        return False
    if parts.scheme != "https" or not host or parts.username or parts.password:
        return False
    for pattern in settings.NOTIFIER_WEBPUSH_ENDPOINT_HOSTS:
        pattern = pattern.lower()
        if pattern == "*" or host == pattern:
            return True
        if pattern.startswith("*.") and host.endswith(pattern[1:]):
            return True
    return False


def classify_fcm_error(exc: BaseException) -> tuple[Outcome, ErrorCode, str]:
    from firebase_admin import exceptions, messaging

    text = f"{type(exc).__name__}: {exc}"
    if isinstance(exc, (messaging.UnregisteredError, messaging.SenderIdMismatchError)):
        return Outcome.PERMANENT, ErrorCode.DEVICE_UNREGISTERED, text
    if isinstance(exc, (messaging.QuotaExceededError, exceptions.ResourceExhaustedError)):
        return Outcome.TRANSIENT, ErrorCode.RATE_LIMITED, text
    if isinstance(
        exc,
        (
            exceptions.UnavailableError,
            exceptions.InternalError,
            exceptions.DeadlineExceededError,
            exceptions.UnknownError,
        ),
    ):
        return Outcome.TRANSIENT, ErrorCode.PROVIDER_UNAVAILABLE, text
    if isinstance(exc, exceptions.FirebaseError):
        return Outcome.PERMANENT, ErrorCode.REJECTED, text
    return Outcome.TRANSIENT, ErrorCode.UNEXPECTED, text


def classify_webpush_error(exc: BaseException) -> tuple[Outcome, ErrorCode, str]:
    from pywebpush import WebPushException

    if isinstance(exc, WebPushException):
        if exc.response is None:
            # Raised before any request: the subscription's keys are unusable. Network errors
            # arrive as requests exceptions instead, below.
            return Outcome.PERMANENT, ErrorCode.REJECTED, f"web push: {exc.message}"
        status = exc.response.status_code
        text = f"web push {status}: {exc.message}"
        if status in (404, 410):
            return Outcome.PERMANENT, ErrorCode.DEVICE_UNREGISTERED, text
        if classify_http_status(status) is Outcome.TRANSIENT:
            code = ErrorCode.RATE_LIMITED if status == 429 else ErrorCode.PROVIDER_UNAVAILABLE
            return Outcome.TRANSIENT, code, text
        return Outcome.PERMANENT, ErrorCode.REJECTED, text
    if isinstance(exc, requests.Timeout):
        return Outcome.TRANSIENT, ErrorCode.TIMEOUT, str(exc)
    if isinstance(exc, requests.ConnectionError):
        return Outcome.TRANSIENT, ErrorCode.CONNECTION, str(exc)
    return Outcome.TRANSIENT, ErrorCode.UNEXPECTED, f"{type(exc).__name__}: {exc}"


DeviceOutcome = tuple[
    PushTarget, Outcome, ErrorCode | None, str, str
]  # target, outcome, code, error, id


class FcmWebPushProvider:
    name: str = "push"
    channel: ClassVar[Channel] = Channel.PUSH
    in_database: ClassVar[bool] = False
    # The SDKs, from the `push` extra (channels.registry.missing_sdks): each one only when its
    # half is configured.
    extra: ClassVar[str] = "push"

    @classmethod
    def sdk_modules(cls) -> tuple[str, ...]:
        return tuple(
            module
            for module, configured in (
                ("firebase_admin", settings.NOTIFIER_FCM_CREDENTIALS_FILE),
                ("pywebpush", settings.NOTIFIER_WEBPUSH_VAPID_PRIVATE_KEY),
            )
            if configured
        )

    @classmethod
    def configuration_problems(cls) -> list[str]:
        problems = []
        if not (
            settings.NOTIFIER_FCM_CREDENTIALS_FILE or settings.NOTIFIER_WEBPUSH_VAPID_PRIVATE_KEY
        ):
            problems.append(
                "set NOTIFIER_FCM_CREDENTIALS_FILE (a service-account JSON) and/or "
                "NOTIFIER_WEBPUSH_VAPID_PRIVATE_KEY with NOTIFIER_WEBPUSH_VAPID_SUBJECT"
            )
        if (
            settings.NOTIFIER_WEBPUSH_VAPID_PRIVATE_KEY
            and not settings.NOTIFIER_WEBPUSH_VAPID_SUBJECT
        ):
            problems.append("set NOTIFIER_WEBPUSH_VAPID_SUBJECT (mailto: or https: contact)")
        return problems

    def send_many(self, outgoings: Sequence[Outgoing]) -> list[SendResult]:
        return [result for _, result in self.send_each(outgoings)]

    def send_each(self, outgoings: Iterable[Outgoing]) -> Iterator[tuple[Outgoing, SendResult]]:
        """Delivery by delivery: FCM's batched call is per message (one multicast to the
        user's tokens), so each delivery's result is known, and recorded, before the next."""
        for outgoing in outgoings:
            by_device: dict[int, DeviceOutcome] = {}
            fcm_devices = [d for d in outgoing.devices if d.platform in FCM_PLATFORMS]
            for start in range(0, len(fcm_devices), FCM_BATCH):
                chunk = fcm_devices[start : start + FCM_BATCH]
                for device, result in zip(chunk, self._send_fcm(outgoing, chunk), strict=True):
                    by_device[device.device_id] = result
            for device in outgoing.devices:
                if device.platform not in FCM_PLATFORMS:
                    by_device[device.device_id] = self._send_web(outgoing, device)
            yield outgoing, self._combine([by_device[d.device_id] for d in outgoing.devices])

    def _send_fcm(self, outgoing: Outgoing, devices: Sequence[PushTarget]) -> list[DeviceOutcome]:
        """One multicast message: this outgoing to up to 500 of its user's FCM tokens."""
        if not settings.NOTIFIER_FCM_CREDENTIALS_FILE:
            return [
                (
                    d,
                    Outcome.PERMANENT,
                    ErrorCode.NOT_CONFIGURED,
                    "FCM is not configured (NOTIFIER_FCM_CREDENTIALS_FILE)",
                    "",
                )
                for d in devices
            ]
        from firebase_admin import messaging

        multicast = messaging.MulticastMessage(
            tokens=[device.token for device in devices],
            notification=messaging.Notification(
                title=outgoing.content.title, body=outgoing.content.body
            ),
            data={"delivery_id": str(outgoing.delivery_id), "link": outgoing.content.link},
        )
        try:
            response = messaging.send_each_for_multicast(multicast, app=firebase_app())
        except Exception as exc:  # the whole call failed (auth, network)
            outcome, code, text = classify_fcm_error(exc)
            return [(d, outcome, code, text, "") for d in devices]
        results: list[DeviceOutcome] = []
        # Responses come in the order of the tokens.
        for device, item in zip(devices, response.responses, strict=True):
            if item.success:
                results.append((device, Outcome.SENT, None, "", str(item.message_id)))
            else:
                outcome, code, text = classify_fcm_error(item.exception)
                results.append((device, outcome, code, text, ""))
        return results

    def _send_web(self, outgoing: Outgoing, device: PushTarget) -> DeviceOutcome:
        if not settings.NOTIFIER_WEBPUSH_VAPID_PRIVATE_KEY:
            return (
                device,
                Outcome.PERMANENT,
                ErrorCode.NOT_CONFIGURED,
                "Web Push is not configured (NOTIFIER_WEBPUSH_VAPID_PRIVATE_KEY)",
                "",
            )
        if not webpush_endpoint_allowed(device.token):
            return (
                device,
                Outcome.PERMANENT,
                ErrorCode.DEVICE_UNREGISTERED,  # never tried again: the device is deactivated
                "the subscription's endpoint is not on a known push service "
                "(NOTIFIER_WEBPUSH_ENDPOINT_HOSTS)",
                "",
            )
        from pywebpush import webpush

        payload = json.dumps(
            {
                "title": outgoing.content.title,
                "body": outgoing.content.body,
                "link": outgoing.content.link,
                "delivery_id": outgoing.delivery_id,
            }
        )
        try:
            response = webpush(
                subscription_info={"endpoint": device.token, "keys": device.web_push_keys or {}},
                data=payload,
                vapid_private_key=settings.NOTIFIER_WEBPUSH_VAPID_PRIVATE_KEY,
                vapid_claims={"sub": settings.NOTIFIER_WEBPUSH_VAPID_SUBJECT},
                timeout=10,
            )
        except Exception as exc:
            outcome, code, text = classify_webpush_error(exc)
            return (device, outcome, code, text, "")
        location = getattr(response, "headers", {}).get("Location", "") if response else ""
        return (device, Outcome.SENT, None, "", str(location))

    def _combine(self, outcomes: list[DeviceOutcome]) -> SendResult:
        dead = [
            d.device_id for d, _, code, _, _ in outcomes if code is ErrorCode.DEVICE_UNREGISTERED
        ]
        detail = {
            "devices": [
                {"device_id": d.device_id, "platform": d.platform, "outcome": str(o), "error": err}
                for d, o, _, err, _ in outcomes
            ]
        }
        sent = [pid or f"device-{d.device_id}" for d, o, _, _, pid in outcomes if o is Outcome.SENT]
        if sent:
            return SendResult(
                Outcome.SENT,
                self.name,
                provider_message_id=sent[0],
                deactivate_device_ids=tuple(dead),
                detail=detail,
            )
        errors = "; ".join(err for _, _, _, err, _ in outcomes)
        transient = [code for _, o, code, _, _ in outcomes if o is Outcome.TRANSIENT]
        if transient:
            return SendResult(
                Outcome.TRANSIENT,
                self.name,
                error_code=transient[0],
                error=errors,
                deactivate_device_ids=tuple(dead),
                detail=detail,
            )
        # Every device failed for good: DEVICE_UNREGISTERED only when all are dead, otherwise
        # why a live one failed (REJECTED, or NOT_CONFIGURED so the pipeline can say so).
        live = [code for _, _, code, _, _ in outcomes if code is not ErrorCode.DEVICE_UNREGISTERED]
        code = (live[0] or ErrorCode.REJECTED) if live else ErrorCode.DEVICE_UNREGISTERED
        return SendResult(
            Outcome.PERMANENT,
            self.name,
            error_code=code,
            error=errors,
            deactivate_device_ids=tuple(dead),
            detail=detail,
        )
