"""The in-app inbox: one item per in-app delivery, with read, archive and feedback."""

from __future__ import annotations

from django.conf import settings
from django.contrib.postgres.fields import ArrayField
from django.db import models
from django.db.models import Q


class Feedback(models.TextChoices):
    USEFUL = "useful", "👍 Useful"
    MEH = "meh", "😕 Meh"
    IRRELEVANT = "irrelevant", "👎 Irrelevant"


class InboxItem(models.Model):
    user = models.ForeignKey(  # covered by the (user, -created_at, -id) index
        settings.AUTH_USER_MODEL,
        on_delete=models.CASCADE,
        related_name="inbox_items",
        db_index=False,
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
    # A digest's group (its digest key, "" for the type itself; NULL: not a digest type's):
    # while its item is not archived, the group's next in-app message updates it in place.
    group_key = models.CharField(max_length=255, null=True, blank=True)  # noqa: DJ001
    group_count = models.PositiveIntegerField(db_default=1, help_text="Messages it stands for")
    # The in-app deliveries whose content this group item replaced while it was unread: they
    # have no item of their own any more, so reading this one reads them too (escalation,
    # mark all read and a date series' exit_on=seen look at their statuses). NULL: none.
    superseded = ArrayField(models.BigIntegerField(), null=True, blank=True)

    class Meta:
        constraints = [
            # One live item per digest group: two deliveries of one group at once meet here.
            models.UniqueConstraint(
                fields=["user", "type_key", "group_key"],
                condition=Q(group_key__isnull=False, archived_at__isnull=True),
                name="inbox_one_live_group",
            ),
        ]
        indexes = [
            # The inbox pages (current and archived, filtered on archived_at), and every lookup
            # by user: erasure, feedback counts, the foreign-key check when a user goes. One
            # index where a user index and a listing index of unarchived items were two.
            models.Index(fields=["user", "-created_at", "-id"], name="inbox_user_created_idx"),
            models.Index(
                fields=["user"],
                name="inbox_user_unread_idx",
                condition=Q(read_at__isnull=True, archived_at__isnull=True),
            ),
            # Routing's count of 👎 per user and type for each batch of marketing users. Partial:
            # items are written with no feedback, so deliveries never write to it.
            models.Index(
                fields=["user", "feedback_at"],
                name="inbox_irrelevant_idx",
                condition=Q(feedback="irrelevant"),
            ),
        ]

    def __str__(self) -> str:
        return self.title
