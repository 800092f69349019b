"""The in-app inbox: one item per in-app delivery, with read, archive and feedback."""

from __future__ import annotations

from django.conf import settings
from django.db import models
from django.db.models import Q


class Feedback(models.TextChoices):
    USEFUL = "useful", "👍 Useful"
    MEH = "meh", "😕 Meh"
    IRRELEVANT = "irrelevant", "👎 Irrelevant"


class InboxItem(models.Model):
    user = models.ForeignKey(
        settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="inbox_items"
    )
    message = models.ForeignKey("notifier.Message", on_delete=models.CASCADE)
    delivery = models.OneToOneField(
        "notifier.Delivery", on_delete=models.CASCADE, related_name="inbox_item"
    )
    category = models.CharField(max_length=20)
    type_key = models.CharField(max_length=100)
    title = models.CharField(max_length=300)
    body = models.TextField()
    link = models.CharField(max_length=2000, blank=True, default="")
    created_at = models.DateTimeField()
    read_at = models.DateTimeField(null=True, blank=True)
    archived_at = models.DateTimeField(null=True, blank=True)
    feedback = models.CharField(max_length=12, choices=Feedback.choices, blank=True, default="")
    feedback_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        indexes = [
            models.Index(
                fields=["user", "-created_at", "-id"],
                name="inbox_user_listing_idx",
                condition=Q(archived_at__isnull=True),
            ),
            models.Index(
                fields=["user"],
                name="inbox_user_unread_idx",
                condition=Q(read_at__isnull=True, archived_at__isnull=True),
            ),
        ]

    def __str__(self) -> str:
        return self.title
