"""Push devices an app registers for a person: an FCM registration token (Android, iOS, or the
web through FCM) or a Web Push subscription (its endpoint URL and keys).

A token belongs to one device, and a device to whoever is signed in on it now: registering a
token that is already known moves it to the new person and makes it live again (one row per
token, `device_token_unique`). Unregistering deactivates it with a reason, kept for support's
timeline; tokens a provider reports dead at send time are deactivated by the delivery service.
"""

from __future__ import annotations

import base64
import binascii
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

from django.db import IntegrityError, transaction
from django.utils import timezone

from channels.push import webpush_endpoint_allowed
from notifier.models import Device, Platform, Recipient

MAX_TOKEN = 4096
UNREGISTERED = "unregistered by the app"


class DeviceError(ValueError):
    """Bad input for a device; the message says what to send instead."""


class UnknownDevice(DeviceError):
    pass


@dataclass(frozen=True, slots=True)
class Registered:
    device: Device
    created: bool  # a token never seen before
    moved: bool  # it was another person's


def _check_key(name: str, value: object, size: int) -> str:
    if not isinstance(value, str):
        raise DeviceError(f"keys.{name} must be the subscription's base64url text, got {value!r}")
    try:
        raw = base64.urlsafe_b64decode(value + "=" * (-len(value) % 4))
    except (binascii.Error, ValueError):
        raise DeviceError(f"keys.{name} is not base64url text") from None
    if len(raw) != size:
        raise DeviceError(f"keys.{name} must decode to {size} bytes, not {len(raw)}")
    return value


def check_device(platform: object, token: object, keys: object) -> tuple[str, str, Any]:
    """(platform, token, web_push_keys) as stored, or DeviceError naming what to fix."""
    if not isinstance(platform, str) or platform not in Platform.values:
        raise DeviceError(f"platform must be one of {', '.join(Platform.values)}, got {platform!r}")
    if not isinstance(token, str) or not token or len(token) > MAX_TOKEN:
        raise DeviceError(f"token must be 1 to {MAX_TOKEN} characters")
    if any(char.isspace() or ord(char) < 32 for char in token):
        raise DeviceError("token must not contain spaces or control characters")
    if platform != Platform.WEB:
        if keys is not None:
            raise DeviceError("keys are for Web Push subscriptions (platform web) only")
        return platform, token, None
    parts = urlsplit(token)
    if parts.scheme != "https" or not parts.hostname:
        raise DeviceError(
            "a Web Push token is the subscription's endpoint, an https:// URL "
            "(PushSubscription.endpoint)"
        )
    if not webpush_endpoint_allowed(token):
        raise DeviceError(
            f"{parts.hostname} is not a browser push service this site sends to; the endpoint "
            "comes from PushManager.subscribe (NOTIFIER_WEBPUSH_ENDPOINT_HOSTS lists them)"
        )
    if not isinstance(keys, dict) or set(keys) != {"p256dh", "auth"}:
        raise DeviceError(
            'a Web Push subscription needs keys {"p256dh": "...", "auth": "..."} '
            "(PushSubscription.toJSON().keys)"
        )
    return (
        platform,
        token,
        {
            "p256dh": _check_key("p256dh", keys["p256dh"], 65),
            "auth": _check_key("auth", keys["auth"], 16),
        },
    )


def device_register(
    recipient: Recipient, *, platform: object, token: object, keys: object = None
) -> Registered:
    """Register the token for this person, moving it from whoever had it."""
    platform_, token_, keys_ = check_device(platform, token, keys)
    if recipient.erased_at is not None:  # notifier.services.erasure
        raise DeviceError("this recipient was erased at their request; nothing is sent to them")
    try:
        with transaction.atomic():
            return _register(recipient, platform_, token_, keys_)
    except IntegrityError:  # registered by another call at the same moment: now an update
        with transaction.atomic():
            return _register(recipient, platform_, token_, keys_)


def _register(recipient: Recipient, platform: str, token: str, keys: Any) -> Registered:
    device = Device.objects.select_for_update().filter(token=token).first()
    if device is None:
        device = Device.objects.create(
            user_id=recipient.user_id, platform=platform, token=token, web_push_keys=keys
        )
        return Registered(device=device, created=True, moved=False)
    moved = device.user_id != recipient.user_id
    device.user_id = recipient.user_id
    device.platform = platform
    device.web_push_keys = keys
    device.active = True
    device.deactivated_at = None
    device.deactivation_reason = ""
    device.save()
    return Registered(device=device, created=False, moved=moved)


def device_unregister(recipient: Recipient, *, token: object) -> Device:
    """Stop pushing to this token (the app signed out, or the user turned push off)."""
    if not isinstance(token, str) or not token:
        raise DeviceError("token is required: the FCM token or Web Push endpoint to remove")
    with transaction.atomic():
        device = (
            Device.objects.select_for_update()
            .filter(token=token, user_id=recipient.user_id)
            .first()
        )
        if device is None:
            raise UnknownDevice("this recipient has no device with that token")
        if device.active:
            device.active = False
            device.deactivated_at = timezone.now()
            device.deactivation_reason = UNREGISTERED
            device.save(update_fields=["active", "deactivated_at", "deactivation_reason"])
        return device


def devices_of(recipient: Recipient) -> list[Device]:
    return list(Device.objects.filter(user_id=recipient.user_id).order_by("-active", "-created_at"))
