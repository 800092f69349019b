"""Users with their contact points and the profile fields campaigns segment on; push devices."""

from __future__ import annotations

import unicodedata
import zoneinfo
from decimal import Decimal

import phonenumbers
from django.contrib.auth.models import AbstractUser
from django.core.exceptions import ValidationError
from django.db import models
from django.db.models import Q


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


class MarketingFrequency(models.TextChoices):
    AS_SENT = "as_sent", "As they come (within the site's caps)"
    WEEKLY = "weekly", "At most one a week"
    OFF = "off", "None"


class User(AbstractUser):
    phone = models.CharField(
        max_length=20,
        blank=True,
        default="",
        validators=[validate_e164],
        help_text="E.164, e.g. +8613800138000",
    )
    time_zone = models.CharField(
        max_length=64,
        default="UTC",
        validators=[validate_time_zone],
        help_text="IANA name, e.g. Asia/Shanghai; quiet hours follow it",
    )
    locale = models.CharField(max_length=16, default="en", help_text="e.g. en, zh-hans")
    # Quiet hours in the user's own time zone; empty start/end means the site default
    # (NOTIFIER_QUIET_HOURS, 22:00-08:00). Transactional and critical messages bypass them.
    quiet_hours_enabled = models.BooleanField(default=True)
    quiet_hours_start = models.TimeField(null=True, blank=True)
    quiet_hours_end = models.TimeField(null=True, blank=True)
    marketing_frequency = models.CharField(
        max_length=10,
        choices=MarketingFrequency.choices,
        default=MarketingFrequency.AS_SENT,
        help_text="How often the user accepts marketing messages",
    )
    # Profile fields campaigns segment on.
    yearly_spend = models.DecimalField(max_digits=12, decimal_places=2, default=Decimal("0"))
    last_active_at = models.DateTimeField(null=True, blank=True)
    interest_tags = models.JSONField(default=list, blank=True)
    # Loyalty points and when the balance expires (kept in sync by the product): a campaign
    # can wake up users whose points are about to lapse.
    points_balance = models.PositiveIntegerField(default=0)
    points_expire_at = models.DateTimeField(null=True, blank=True)
    # The local hour the user usually reads messages, learned nightly from their reads and
    # opens (campaigns.services.stats); empty until there is history.
    usual_active_hour = models.PositiveSmallIntegerField(null=True, blank=True)

    class Meta:
        # Full email addresses and phone numbers in the admin; without it they are masked.
        permissions = [
            ("view_contact_details", "Can see users' full email addresses and phone numbers")
        ]
        indexes = [
            models.Index(fields=["email"], name="user_email_idx"),
            models.Index(fields=["phone"], name="user_phone_idx"),
            # Segment rules on a million users: each condition can use an index. Interest
            # tags get a GIN index on PostgreSQL (migration 0009).
            models.Index(fields=["yearly_spend"], name="user_spend_idx"),
            models.Index(fields=["last_active_at"], name="user_last_active_idx"),
            models.Index(
                fields=["points_expire_at"],
                name="user_points_expire_idx",
                condition=Q(points_balance__gt=0),
            ),
            models.Index(fields=["locale"], name="user_locale_idx"),
            models.Index(fields=["time_zone"], name="user_time_zone_idx"),
        ]

    def __str__(self) -> str:
        return self.email or self.username


# The shortest numbers in service have 6 or 7 digits; anything shorter is no phone number.
PHONE_MIN_DIGITS = 6
PHONE_PUNCTUATION = frozenset("+-().,/")


def display_name(user: User) -> str:
    """How a customer is named in copy (`{{ user.name }}`) and on staff pages: the full name
    (or the first or last name alone), else the username unless it reads as an email address
    or a phone number (people sign up with either, and staff without
    `notifier.view_contact_details` must not see one through a name), else "" (copy says
    `{{ user.name or "there" }}`)."""
    full_name = user.get_full_name()
    if full_name:
        return full_name
    return "" if username_is_contact(user.username) else user.username


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
    user = models.ForeignKey(User, on_delete=models.CASCADE, related_name="devices")
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
