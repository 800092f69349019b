"""Notification types: what a message is, how urgent, and which channels it may use."""

from __future__ import annotations

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
    is_active = models.BooleanField(default=True)
    code_defined = models.BooleanField(default=False, editable=False)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        ordering = ["key"]

    def __str__(self) -> str:
        return self.key

    @property
    def is_bulk(self) -> bool:
        return self.kind in (Kind.MARKETING, Kind.SOCIAL)
