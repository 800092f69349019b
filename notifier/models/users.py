"""Users with their contact points and the profile fields campaigns segment on; push devices."""

from __future__ import annotations

import unicodedata
import zoneinfo
from typing import Any

import phonenumbers
from django.conf import settings
from django.contrib.auth.models import AbstractUser
from django.core.exceptions import ValidationError
from django.db import models


def validate_e164(value: str) -> None:
    """A phone number must be stored in E.164 (+8613800138000) and be a valid number."""
    if not value:
        return
    try:
        parsed = phonenumbers.parse(value, None)
    except phonenumbers.NumberParseException as exc:
        raise ValidationError(
            f"{value!r} is not a phone number in E.164 form, e.g. +8613800138000"
        ) from exc
    if not phonenumbers.is_valid_number(parsed):
        raise ValidationError(f"{value!r} is not a valid phone number")
    if phonenumbers.format_number(parsed, phonenumbers.PhoneNumberFormat.E164) != value:
        raise ValidationError(f"write {value!r} in E.164 form, e.g. +8613800138000")


def validate_time_zone(value: str) -> None:
    try:
        zoneinfo.ZoneInfo(value)
    except (zoneinfo.ZoneInfoNotFoundError, ValueError) as exc:
        raise ValidationError(f"{value!r} is not an IANA time zone, e.g. Asia/Shanghai") from exc


def normalize_phone(value: str, default_region: str | None = None) -> str:
    """Parse a phone number as people type it and return it in E.164, or raise ValidationError."""
    try:
        parsed = phonenumbers.parse(value, default_region)
    except phonenumbers.NumberParseException as exc:
        raise ValidationError(f"{value!r} is not a phone number") from exc
    if not phonenumbers.is_valid_number(parsed):
        raise ValidationError(f"{value!r} is not a valid phone number")
    return phonenumbers.format_number(parsed, phonenumbers.PhoneNumberFormat.E164)


def phone_from_text(text: str, default_region: str = "") -> str | None:
    """A phone number however people type it ("138-0013-8000", "0086 138 0013 8000",
    "+86 138 0013 8000", "13800138000" in the default region) in E.164, or None when the text
    does not read as a valid number."""
    text = unicodedata.normalize("NFKC", text).strip()
    if not username_is_contact(text) or "@" in text:
        return None
    if not default_region and text.startswith("00"):
        text = "+" + text[2:]  # the international prefix most of the world dials
    try:
        return normalize_phone(text, default_region or None)
    except ValidationError:
        return None


class MarketingFrequency(models.TextChoices):
    AS_SENT = "as_sent", "As they come (within the site's caps)"
    WEEKLY = "weekly", "At most one a week"
    OFF = "off", "None"


class User(AbstractUser):
    """The stand-alone site's people. A host project keeps its own user model
    (`AUTH_USER_MODEL`): this one is then swapped out (no table), and everything Notifier needs
    to know about a person lives in `notifier.Recipient`, linked one-to-one to whichever user
    model the site uses."""

    class Meta(AbstractUser.Meta):  # type: ignore[name-defined]
        swappable = "AUTH_USER_MODEL"

    def __str__(self) -> str:
        return self.email or self.username


# The shortest numbers in service have 6 or 7 digits; anything shorter is no phone number.
PHONE_MIN_DIGITS = 6
PHONE_PUNCTUATION = frozenset("+-().,/")


def display_name(user: Any) -> str:
    """How a customer is named in copy (`{{ user.name }}`) and on staff pages: the full name
    (or the first or last name alone), else the username unless it reads as an email address
    or a phone number (people sign up with either, and staff without
    `notifier.view_contact_details` must not see one through a name), else "" (copy says
    `{{ user.name or "there" }}`)."""
    get_full_name = getattr(user, "get_full_name", None)
    full_name = get_full_name() if callable(get_full_name) else ""
    if full_name:
        return str(full_name)
    # A host's user model without a username (or full name) is named as it names itself.
    username = getattr(user, "username", None)
    name = str(username) if isinstance(username, str) else str(user)
    return "" if username_is_contact(name) else name


def username_is_contact(username: str) -> bool:
    """Whether a username reads as an email address or a phone number ("+86 138-0013-8000")."""
    # NFKC, as Django's login form does: a fullwidth at sign (U+FF20) or digit reads the same.
    text = unicodedata.normalize("NFKC", username)
    if "@" in text:
        return True
    digits = sum(char.isdigit() for char in text)
    return digits >= PHONE_MIN_DIGITS and all(
        char.isdigit() or char in PHONE_PUNCTUATION or char.isspace() for char in text
    )


class Platform(models.TextChoices):
    ANDROID = "android", "Android (FCM)"
    IOS = "ios", "iOS (FCM)"
    WEB = "web", "Web Push"


class Device(models.Model):
    user = models.ForeignKey(
        settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="devices"
    )
    platform = models.CharField(max_length=10, choices=Platform.choices)
    # An FCM registration token, or a Web Push subscription endpoint.
    token = models.TextField()
    web_push_keys = models.JSONField(
        null=True, blank=True, help_text='Web Push only: {"p256dh": "...", "auth": "..."}'
    )
    active = models.BooleanField(default=True)
    created_at = models.DateTimeField(auto_now_add=True)
    deactivated_at = models.DateTimeField(null=True, blank=True)
    deactivation_reason = models.CharField(max_length=200, blank=True, default="")

    class Meta:
        constraints = [models.UniqueConstraint(fields=["token"], name="device_token_unique")]
        indexes = [models.Index(fields=["user", "active"], name="device_user_active_idx")]

    def __str__(self) -> str:
        return f"{self.get_platform_display()} …{self.token[-8:]}"
