"""API keys: how product services and apps authenticate to the HTTP API (notifier.http_api).

A key is shown once, when an admin creates it: `ntf_<prefix>_<secret>`. Only the prefix (to
find the row, and to tell keys apart in lists and logs) and a SHA-256 of the whole key are
stored; the secret is 32 random bytes, so a plain hash is as good as a slow one and costs
nothing per request. A key carries scopes (what it may do) and may have its own rate limit;
revoking it takes effect at the next request.
"""

from __future__ import annotations

from django.conf import settings
from django.db import models


class ApiScope(models.TextChoices):
    NOTIFY = "notify", "Send notifications"
    RECIPIENTS = "recipients", "Create, update and erase recipients"
    DEVICES = "devices", "Register and unregister devices"
    READ = "read", "Read messages, deliveries, preferences and consent"


class ApiKey(models.Model):
    name = models.CharField(max_length=100, help_text="Who uses it, e.g. 'checkout service'")
    prefix = models.CharField(max_length=16, unique=True, editable=False)
    secret_hash = models.CharField(max_length=64, editable=False)
    scopes = models.JSONField(default=list, help_text="What the key may do")
    rate_limit = models.CharField(
        max_length=20,
        blank=True,
        default="",
        help_text="Requests this key may make, e.g. '50/s' or '3000/m'; empty: "
        "NOTIFIER_API_KEY_RATE_LIMIT",
    )
    created_at = models.DateTimeField(auto_now_add=True)
    created_by = models.ForeignKey(
        settings.AUTH_USER_MODEL,
        null=True,
        blank=True,
        on_delete=models.SET_NULL,
        related_name="+",
    )
    last_used_at = models.DateTimeField(null=True, blank=True, editable=False)
    revoked_at = models.DateTimeField(null=True, blank=True, editable=False)

    class Meta:
        verbose_name = "API key"
        ordering = ["-created_at"]

    def __str__(self) -> str:
        state = " (revoked)" if self.revoked_at else ""
        return f"{self.name} (ntf_{self.prefix}_…){state}"


class RefusedCall(models.Model):
    """A call from another codebase that Notifier refused and could not answer: the Celery task
    `notifier.notify` sent with bad arguments (an HTTP caller gets its 4xx instead). Kept for
    the operator, in the admin, with what to fix; no context values (they may be personal)."""

    at = models.DateTimeField(db_index=True)
    source = models.CharField(max_length=100, help_text="e.g. celery task notifier.notify")
    caller = models.CharField(max_length=255, blank=True, default="", help_text="e.g. the task id")
    error_type = models.CharField(max_length=100)
    message = models.TextField()
    type_key = models.CharField(max_length=100, blank=True, default="")

    class Meta:
        ordering = ["-at"]

    def __str__(self) -> str:
        return f"{self.source}: {self.error_type}"
