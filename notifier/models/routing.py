"""Routing rules as data: which channels a message uses, by type, kind and priority."""

from __future__ import annotations

from django.db import models

from notifier.models.types import Kind, Priority


class RoutingRule(models.Model):
    """When the caller names no channels, the most specific matching rule decides.

    `send_all` channels go out at once; `fallback_chain` channels are tried in order, the next
    one only when the previous is suppressed (no device, opted out, ...) or fails for good. Only
    channels the type uses are ever sent. A blank kind, type or priority matches any.
    """

    name = models.CharField(max_length=100)
    type = models.ForeignKey(
        "notifier.NotificationType", null=True, blank=True, on_delete=models.CASCADE
    )
    kind = models.CharField(max_length=20, choices=Kind.choices, blank=True, default="")
    priority = models.CharField(max_length=10, choices=Priority.choices, blank=True, default="")
    send_all = models.JSONField(default=list, blank=True)
    fallback_chain = models.JSONField(default=list, blank=True)
    is_active = models.BooleanField(default=True)

    class Meta:
        ordering = ["name"]

    def __str__(self) -> str:
        return self.name
