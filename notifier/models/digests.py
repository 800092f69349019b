"""Digests: messages of one type for one person, grouped by a key, collected over a window and
sent as one message (notifier.services.digests)."""

from __future__ import annotations

from django.conf import settings
from django.db import models
from django.db.models import Q


class DigestState(models.TextChoices):
    OPEN = "open", "Collecting"
    SENT = "sent", "Sent as one message"
    EMPTY = "empty", "Closed with nothing to send"  # its first went out at once, alone


class Digest(models.Model):
    """One window of one person's messages of a type under a digest key ("post:42"). While
    open, each new such message is collected into it; once `due_at` comes, the flush closes
    it and writes one message that carries them all (`message`). At most one is open per
    person, type and key: the next message after a flush opens the next one."""

    user = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.CASCADE, db_index=False)
    type = models.ForeignKey("notifier.NotificationType", on_delete=models.CASCADE)
    key = models.CharField(max_length=255, blank=True, default="")
    state = models.CharField(max_length=8, choices=DigestState.choices, default=DigestState.OPEN)
    opened_at = models.DateTimeField()
    due_at = models.DateTimeField()
    count = models.PositiveIntegerField(default=0, help_text="Messages collected into it")
    flushed_at = models.DateTimeField(null=True, blank=True)
    message = models.ForeignKey(
        "notifier.Message",
        null=True,
        blank=True,
        on_delete=models.SET_NULL,
        related_name="+",
        db_index=False,
        help_text="The one message it was sent as",
    )

    class Meta:
        constraints = [
            models.UniqueConstraint(
                fields=["user", "type", "key"],
                condition=Q(state="open"),
                name="digest_one_open",
            )
        ]
        indexes = [
            models.Index(fields=["due_at"], name="digest_due_idx", condition=Q(state="open")),
            # Retention's SET NULL when it deletes a digest's own message.
            models.Index(
                fields=["message"], name="digest_message_idx", condition=Q(message__isnull=False)
            ),
        ]

    def __str__(self) -> str:
        return f"{self.type_id} [{self.key}]: {self.count} ({self.state})"
