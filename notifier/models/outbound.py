"""Outbound webhooks: the product's endpoints, the outbox of events for each, and every attempt.

An event for an endpoint is a `WebhookEvent` row, written in the same transaction as the change
it tells of (notifier.events_out.record), so an event exists exactly when its change committed,
whatever happens to the broker. The sender (notifier.events_out.sending) claims rows with a
lease, posts them signed per the Standard Webhooks spec, one event or a batch per request, and
writes a `WebhookAttempt` per request. Rows carry no message content: ids, statuses, reasons.
"""

from __future__ import annotations

from django.db import models
from django.db.models import Q


class WebhookEventType(models.TextChoices):
    MESSAGE_CREATED = "message.created", "message.created: a message was accepted"
    DELIVERY_SENT = "delivery.sent", "delivery.sent: the provider accepted a delivery"
    DELIVERY_DELIVERED = "delivery.delivered", "delivery.delivered: the provider confirmed it"
    DELIVERY_FAILED = "delivery.failed", "delivery.failed: a delivery failed for good"
    DELIVERY_OPENED = "delivery.opened", "delivery.opened"
    DELIVERY_CLICKED = "delivery.clicked", "delivery.clicked"
    DELIVERY_READ = "delivery.read", "delivery.read: an in-app item was read"
    RECIPIENT_UNSUBSCRIBED = "recipient.unsubscribed", "recipient.unsubscribed"
    CONSENT_CHANGED = "consent.changed", "consent.changed: marketing consent given or withdrawn"
    PREFERENCES_CHANGED = "preferences.changed", "preferences.changed"
    # Sent by the admin's "send a test event", to that endpoint alone; never subscribed to.
    TEST = "webhook.test", "webhook.test"


class WebhookEndpoint(models.Model):
    """A URL of the product's that receives the event types it subscribed to."""

    name = models.CharField(max_length=100, help_text="Whose endpoint, e.g. 'CRM sync'")
    url = models.URLField(max_length=500, help_text="http:// or https:// only")
    # Symmetric: the sender needs it to sign, so it is stored as it is (like a provider's key).
    secret = models.CharField(max_length=100, editable=False)
    event_types = models.JSONField(default=list, help_text="The event types to send")
    max_batch = models.PositiveSmallIntegerField(
        default=100,
        help_text="Events per request at most: 1 sends each event alone; more sends a "
        '{"type": "batch"} request whenever several events wait',
    )
    active = models.BooleanField(default=True)
    disabled_at = models.DateTimeField(null=True, blank=True, editable=False)
    disabled_reason = models.CharField(max_length=300, blank=True, default="", editable=False)
    # The current run of failed requests: reset by the first 2xx.
    failing_since = models.DateTimeField(null=True, blank=True, editable=False)
    consecutive_failures = models.PositiveIntegerField(default=0, editable=False)
    created_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        verbose_name = "webhook endpoint"
        ordering = ["name", "pk"]

    def __str__(self) -> str:
        return f"{self.name} ({self.url}){'' if self.active else ' (disabled)'}"


class WebhookEventState(models.TextChoices):
    PENDING = "pending", "Pending"  # waiting for its (next) attempt
    SENT = "sent", "Sent"  # the endpoint answered 2xx
    FAILED = "failed", "Failed"  # retried for NOTIFIER_WEBHOOK_RETRY_FOR_S; given up


class WebhookEvent(models.Model):
    """One event for one endpoint: the outbox row, from its change's commit until answered."""

    endpoint = models.ForeignKey(
        WebhookEndpoint, on_delete=models.CASCADE, related_name="events", db_index=False
    )
    type = models.CharField(max_length=40, choices=WebhookEventType.choices)
    at = models.DateTimeField(help_text="When the change happened")
    data = models.JSONField(default=dict)
    state = models.CharField(
        max_length=10, choices=WebhookEventState.choices, default=WebhookEventState.PENDING
    )
    created_at = models.DateTimeField()
    next_attempt_at = models.DateTimeField()
    attempts = models.PositiveIntegerField(default=0)
    # The request this event goes in, fixed at its first claim: a retry sends the same events
    # under the same webhook-id, so a receiver dedupes by it.
    batch = models.CharField(max_length=40, blank=True, default="")
    claimed_until = models.DateTimeField(null=True, blank=True)
    claim_token = models.UUIDField(null=True, blank=True)
    sent_at = models.DateTimeField(null=True, blank=True)
    last_error = models.CharField(max_length=300, blank=True, default="")

    class Meta:
        verbose_name = "webhook event"
        indexes = [
            # The sender's and the sweep's scan: an endpoint's due events, oldest first.
            models.Index(
                fields=["endpoint", "next_attempt_at", "id"],
                name="webhook_event_due_idx",
                condition=Q(state="pending"),
            ),
            models.Index(fields=["endpoint", "batch"], name="webhook_event_batch_idx"),
        ]

    def __str__(self) -> str:
        return f"{self.type} #{self.pk} → endpoint {self.endpoint_id}: {self.state}"

    @property
    def event_id(self) -> str:
        return f"evt_{self.pk}"


class WebhookAttempt(models.Model):
    """One request to an endpoint (one event, or a batch of them) and what came back."""

    endpoint = models.ForeignKey(
        WebhookEndpoint, on_delete=models.CASCADE, related_name="attempts", db_index=False
    )
    webhook_id = models.CharField(max_length=40, help_text="The webhook-id header")
    events = models.PositiveIntegerField(help_text="How many events the request carried")
    at = models.DateTimeField()
    status_code = models.PositiveSmallIntegerField(null=True, blank=True)
    ok = models.BooleanField(default=False)
    error = models.CharField(max_length=300, blank=True, default="")
    duration_ms = models.PositiveIntegerField(default=0)
    response_body = models.TextField(blank=True, default="", help_text="Truncated")

    class Meta:
        verbose_name = "webhook attempt"
        ordering = ["-at", "-pk"]
        indexes = [models.Index(fields=["endpoint", "-at"], name="webhook_attempt_at_idx")]

    def __str__(self) -> str:
        what = self.status_code or self.error or "no answer"
        return f"{self.webhook_id} → endpoint {self.endpoint_id}: {what}"
