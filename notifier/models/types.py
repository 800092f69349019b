"""Notification types: what a message is, how urgent, and which channels it may use."""

from __future__ import annotations

from django.core.exceptions import ValidationError
from django.core.validators import MaxValueValidator, MinValueValidator
from django.db import models


class Kind(models.TextChoices):
    TRANSACTIONAL = "transactional", "Transactional"  # receipts, security: always wanted
    SERVICE = "service", "Service"  # shipping updates, reminders the user asked for
    MARKETING = "marketing", "Marketing"  # promotions: need consent, respect caps
    SOCIAL = "social", "Social"  # follows, likes, comments


class Priority(models.TextChoices):
    CRITICAL = "critical", "Critical"
    HIGH = "high", "High"
    NORMAL = "normal", "Normal"
    LOW = "low", "Low"


PRIORITY_RANK = {Priority.CRITICAL: 0, Priority.HIGH: 1, Priority.NORMAL: 2, Priority.LOW: 3}


class NotificationType(models.Model):
    """Code-defined types are synced from `notifier.catalog` after every migrate."""

    key = models.CharField(max_length=100, primary_key=True, help_text="e.g. order.shipped")
    name = models.CharField(max_length=200)
    description = models.TextField(blank=True, default="")
    kind = models.CharField(max_length=20, choices=Kind.choices)
    priority = models.CharField(max_length=10, choices=Priority.choices, default=Priority.NORMAL)
    channels = models.JSONField(default=list, help_text="Channels used when the caller names none")
    optional_context = models.JSONField(
        default=list, blank=True, help_text="Template variables the caller may leave out"
    )
    # At most throttle_limit messages of this type per recipient and throttle key (the caller's
    # `throttle_key`, e.g. "product:42"; none: the type itself) in any throttle_window_s; the
    # rest are suppressed with the reason `throttled`. Empty: no throttle.
    throttle_limit = models.PositiveIntegerField(
        null=True,
        blank=True,
        validators=[MinValueValidator(1), MaxValueValidator(1000)],
        help_text="At most this many per recipient and throttle key in the window (empty: none)",
    )
    throttle_window_s = models.PositiveIntegerField(
        null=True,
        blank=True,
        validators=[MinValueValidator(1), MaxValueValidator(366 * 86400)],
        help_text="The throttle's window in seconds, e.g. 86400 for a day",
    )
    is_active = models.BooleanField(default=True)
    code_defined = models.BooleanField(default=False, editable=False)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        ordering = ["key"]

    def __str__(self) -> str:
        return self.key

    def clean(self) -> None:
        if (self.throttle_limit is None) != (self.throttle_window_s is None):
            raise ValidationError(
                "A throttle needs both its limit and its window (or neither, for no throttle)"
            )

    @property
    def is_bulk(self) -> bool:
        return self.kind in (Kind.MARKETING, Kind.SOCIAL)
