"""Erasure's two records: what was erased, by whom and why (`ErasureRecord`), and the hashed
identifiers of erased people that keep a re-import from bringing them back (`ErasedIdentifier`).

Neither holds personal data: the record counts rows per table and names the recipient profile
by its id (the profile stays, emptied); the identifiers are keyed HMAC-SHA256 digests of an
email address, a phone number or an external id (notifier.services.erasure), recognisable when
the same value comes in again and unreadable otherwise.
"""

from __future__ import annotations

from django.db import models
from django.db.models import Q


class ErasureRecord(models.Model):
    """One erasure of one recipient: the audit trail, kept when everything else is gone."""

    # NULL once the profile is gone: a host deleting its user after the erasure takes the
    # profile with it, and the record stays (with the user's key).
    recipient = models.ForeignKey(
        "notifier.Recipient",
        null=True,
        blank=True,
        on_delete=models.SET_NULL,
        related_name="erasures",
    )
    # The user's key as text (an integer, a UUID...): whatever the host's user model uses.
    user_key = models.CharField(max_length=64)
    at = models.DateTimeField()
    by = models.CharField(
        max_length=200, help_text="Who asked: a staff member, an API key, a command"
    )
    reason = models.TextField(
        help_text="Why, in the words of whoever erased (no personal data: a ticket number)"
    )
    # {"app_label.Model": {"deleted": n, "anonymised": n}}: what this run changed.
    counts = models.JSONField(default=dict)
    identifiers = models.PositiveSmallIntegerField(
        default=0, help_text="Identifiers put on the suppression list"
    )
    repeat = models.BooleanField(
        default=False, help_text="The recipient had been erased before: this run tidied up"
    )

    class Meta:
        ordering = ["-at", "-id"]
        verbose_name = "erasure"

    def __str__(self) -> str:
        return f"erasure of recipient {self.recipient_id} at {self.at:%Y-%m-%d %H:%M}"


class IdentifierKind(models.TextChoices):
    EMAIL = "email", "Email address"
    PHONE = "phone", "Phone number"
    EXTERNAL_ID = "external_id", "External id"


class ErasedIdentifier(models.Model):
    """An identifier of an erased person, hashed: a re-import or an API call that names it is
    refused until an admin lifts the suppression (the row then stays, lifted, for the record)."""

    kind = models.CharField(max_length=12, choices=IdentifierKind.choices)
    digest = models.CharField(max_length=64, help_text="HMAC-SHA256 of the normalised value")
    erasure = models.ForeignKey(
        ErasureRecord, on_delete=models.PROTECT, related_name="erased_identifiers"
    )
    at = models.DateTimeField()
    lifted_at = models.DateTimeField(null=True, blank=True)
    lifted_by = models.CharField(max_length=200, blank=True, default="")
    lift_reason = models.TextField(blank=True, default="")

    class Meta:
        verbose_name = "erased identifier"
        constraints = [
            # One suppression in force per identifier; lifted ones stay as history.
            models.UniqueConstraint(
                fields=["kind", "digest"],
                condition=Q(lifted_at__isnull=True),
                name="erased_identifier_in_force",
            )
        ]

    def __str__(self) -> str:
        state = "lifted" if self.lifted_at else "in force"
        return f"{self.get_kind_display()} …{self.digest[:10]} ({state})"
