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
    outcome = models.CharField(max_length=10)
    payload = models.JSONField(default=dict)
    at = models.DateTimeField(auto_now_add=True)

    class Meta:
        verbose_name = "sandbox send"

    def __str__(self) -> str:
        return f"{self.channel} {self.outcome} to {self.recipient}"
