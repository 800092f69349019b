"""The sandbox ledger: every send a sandbox provider made, readable by tests and benchmarks."""

from __future__ import annotations

from django.db import models


class SandboxSend(models.Model):
    channel = models.CharField(max_length=10)
    provider = models.CharField(max_length=40)
    delivery_id = models.BigIntegerField(db_index=True)
    message_id = models.BigIntegerField()
    attempt = models.PositiveIntegerField()
    recipient = models.TextField()
    # sent, transient, permanent, or replayed: a request with an idempotency key the sandbox
    # had already accepted, answered with the original result and not sent again.
    outcome = models.CharField(max_length=10)
    provider_message_id = models.CharField(max_length=100, blank=True, default="")
    payload = models.JSONField(default=dict)
    at = models.DateTimeField(auto_now_add=True)

    class Meta:
        verbose_name = "sandbox send"

    def __str__(self) -> str:
        return f"{self.channel} {self.outcome} to {self.recipient}"


class SandboxOutage(models.Model):
    """While a row's `until` is in the future, the channel's sandbox answers 503 (tests, demos)."""

    channel = models.CharField(max_length=10)
    until = models.DateTimeField()

    def __str__(self) -> str:
        return f"{self.channel} down until {self.until:%H:%M:%S}"
