"""What providers told us: each processed webhook event once, and the addresses not to send to.

`ProviderEvent` makes every webhook idempotent: its (provider, event id) is unique, so a
replayed or re-delivered event is refused by the index and changes nothing. One that names a
send whose provider id is not recorded yet waits as `unknown`, with what it asks, until it is.
`SuppressedAddress` is the suppression list: an email address that bounced hard or complained
is never sent to again (routing suppresses the delivery with a reason) until an admin removes
the row.
"""

from __future__ import annotations

from django.db import models


def normalize_email(address: str) -> str:
    """The form suppression rows are stored and looked up in: trimmed and lower-cased.

    The local part is case-sensitive by the RFCs, but no mailbox provider treats it so, and
    ESPs keep their own suppression lists case-insensitively too.
    """
    return address.strip().lower()


class SuppressionReason(models.TextChoices):
    BOUNCED = "bounced", "Hard bounce"
    COMPLAINED = "complained", "Spam complaint"
    INVALID = "invalid", "Invalid address (the provider refused it)"


class SuppressedAddress(models.Model):
    """An address on one channel that must not be sent to; one row per (channel, address)."""

    channel = models.CharField(max_length=10, default="email")
    address = models.CharField(max_length=254, help_text="Normalised: trimmed, lower case")
    reason = models.CharField(max_length=20, choices=SuppressionReason.choices)
    source = models.CharField(max_length=60, help_text="Who said so, e.g. mailgun")
    detail = models.TextField(blank=True, default="", help_text="The provider's own words")
    delivery = models.ForeignKey(
        "notifier.Delivery",
        null=True,
        blank=True,
        on_delete=models.SET_NULL,
        related_name="+",
        help_text="The delivery whose bounce or complaint put it here",
    )
    at = models.DateTimeField()

    class Meta:
        verbose_name_plural = "suppressed addresses"
        constraints = [
            models.UniqueConstraint(
                fields=["channel", "address"], name="suppressed_address_channel_address"
            )
        ]

    def __str__(self) -> str:
        return f"{self.address} ({self.channel}): {self.get_reason_display()}"


class EventOutcome(models.TextChoices):
    MOVED = "moved", "Moved the delivery's status"
    RECORDED = "recorded", "Recorded; the status was already further along"
    IGNORED = "ignored", "Nothing to do for this event type"
    UNKNOWN = "unknown", "No delivery with that provider message id (yet)"
    CONSENT = "consent", "Changed the user's consent"
    NO_USER = "no_user", "No user with that phone number"


class ProviderEvent(models.Model):
    """One webhook event from a provider, processed once."""

    provider = models.CharField(max_length=40, help_text="Who sent it, e.g. mailgun, twilio")
    event_id = models.CharField(max_length=255, help_text="Unique per provider")
    event_type = models.CharField(max_length=40)
    provider_message_id = models.CharField(max_length=255, blank=True, default="")
    delivery_provider = models.CharField(
        max_length=40,
        blank=True,
        default="",
        help_text="The provider of the send it names (a delivery's provider), e.g. django, twilio",
    )
    # What the event asks of its delivery, kept while that delivery is unknown: an event can
    # arrive before the send's provider id is recorded (notifier.services.callbacks).
    action = models.JSONField(default=dict, blank=True)
    delivery = models.ForeignKey(
        "notifier.Delivery",
        null=True,
        blank=True,
        on_delete=models.SET_NULL,
        related_name="+",
        db_index=False,
    )
    outcome = models.CharField(max_length=12, choices=EventOutcome.choices)
    occurred_at = models.DateTimeField(null=True, blank=True)
    received_at = models.DateTimeField()
    detail = models.JSONField(default=dict, blank=True)

    class Meta:
        constraints = [
            models.UniqueConstraint(fields=["provider", "event_id"], name="provider_event_once")
        ]
        indexes = [
            models.Index(fields=["received_at"], name="provider_event_received_idx"),
            # Early events waiting for their send's provider id: few rows, looked up per batch.
            models.Index(
                fields=["delivery_provider", "provider_message_id"],
                name="provider_event_waiting_idx",
                condition=models.Q(outcome="unknown"),
            ),
        ]

    def __str__(self) -> str:
        return f"{self.provider} {self.event_type} {self.event_id}"
