"""Support's audited fixes on a customer page: who did what to whose record, when and why.

One row per fix (a resend, a corrected contact point, a lifted suppression) or note, written
only by `notifier.services.support`; the customer page shows them as its timeline. A resend's
row carries the form token of the click that asked for it (unique), so a double submit finds
the first row instead of sending again.
"""

from __future__ import annotations

from django.conf import settings
from django.db import models


class SupportActionKind(models.TextChoices):
    NOTE = "note", "Note"
    RESEND = "resend", "Resent a message"
    CONTACT = "contact", "Corrected a contact point"
    UNSUPPRESS = "unsuppress", "Lifted a suppression"
    CANCEL = "cancel", "Cancelled a message before it went out"


class SupportAction(models.Model):
    recipient = models.ForeignKey(
        "notifier.Recipient", on_delete=models.CASCADE, related_name="support_actions"
    )
    kind = models.CharField(max_length=12, choices=SupportActionKind.choices)
    at = models.DateTimeField()
    # The staff member; their name is kept too, so the record outlives their account.
    by = models.ForeignKey(
        settings.AUTH_USER_MODEL,
        null=True,
        blank=True,
        on_delete=models.SET_NULL,
        related_name="+",
        db_index=False,
    )
    by_name = models.CharField(max_length=150)
    why = models.TextField(help_text="Required: a ticket number and what the customer asked")
    # What changed, in plain values: {"field": "email", "from": ..., "to": ...}, the resent
    # message and channels, the suppression lifted.
    detail = models.JSONField(default=dict, blank=True)
    message = models.ForeignKey(
        "notifier.Message",
        null=True,
        blank=True,
        on_delete=models.SET_NULL,
        related_name="+",
        db_index=False,
        help_text="A resend's new message, or the message a cancel stopped",
    )
    token = models.UUIDField(null=True, blank=True, unique=True, help_text="The click's form token")

    class Meta:
        permissions = [
            (
                "fix_recipient",
                "Can make audited fixes on a customer page: resend, correct a contact point, "
                "lift a suppression, add a note",
            )
        ]
        indexes = [models.Index(fields=["recipient", "-at"], name="support_action_recipient_idx")]

    def __str__(self) -> str:
        return f"{self.get_kind_display()} by {self.by_name} at {self.at:%Y-%m-%d %H:%M}"
