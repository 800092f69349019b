"""Topics: people follow an object (a product, a card, a game); notifying the topic notifies
each of them (notifier.services.topics)."""

from __future__ import annotations

from django.conf import settings
from django.db import models


class Topic(models.Model):
    key = models.CharField(max_length=255, unique=True, help_text='Yours, e.g. "product:42"')
    name = models.CharField(max_length=200, blank=True, default="")
    created_at = models.DateTimeField()

    class Meta:
        permissions = [("notify_topic", "Can notify a topic's followers from the admin")]

    def __str__(self) -> str:
        return self.key


class TopicSubscription(models.Model):
    """One person following a topic. A topic's send pages through these by id."""

    topic = models.ForeignKey(Topic, on_delete=models.CASCADE, related_name="subscriptions")
    user = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.CASCADE, db_index=False)
    at = models.DateTimeField()

    class Meta:
        constraints = [
            models.UniqueConstraint(fields=["topic", "user"], name="topic_subscription_once"),
        ]
        indexes = [models.Index(fields=["user"], name="topic_subscription_user_idx")]

    def __str__(self) -> str:
        return f"{self.user_id} follows {self.topic_id}"


class TopicSnooze(models.Model):
    """A person muted a topic they follow for a while (`until`) or until they unmute it
    (`until` empty): messages its sends hand out reach them in the inbox only
    (`notifier.policies.preferences.snooze_reason`). One row per person and topic."""

    user = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.CASCADE, db_index=False)
    topic = models.ForeignKey(Topic, on_delete=models.CASCADE, related_name="snoozes")
    until = models.DateTimeField(null=True, blank=True, help_text="Empty: until they unmute")
    at = models.DateTimeField()

    class Meta:
        constraints = [
            models.UniqueConstraint(fields=["user", "topic"], name="topic_snooze_user_topic"),
        ]

    def __str__(self) -> str:
        return f"{self.topic_id} until {self.until or 'unmuted'}"


class TopicSendStatus(models.TextChoices):
    WALKING = "walking", "Handing out"
    DONE = "done", "Done"


class TopicSend(models.Model):
    """One notification to a topic: its subscribers are handed out a thousand at a time
    (`cursor`: the last subscription handed out), each batch written in the transaction that
    moves the cursor, so a walk that dies resumes where it was and nobody gets it twice."""

    topic = models.ForeignKey(Topic, on_delete=models.CASCADE, related_name="sends")
    type = models.ForeignKey("notifier.NotificationType", on_delete=models.PROTECT)
    context = models.JSONField(default=dict, blank=True)
    channels = models.JSONField(default=list, blank=True)
    exclude = models.JSONField(default=list, blank=True, help_text="User keys left out")
    idempotency_key = models.CharField(max_length=255, null=True, blank=True, unique=True)
    status = models.CharField(
        max_length=8, choices=TopicSendStatus.choices, default=TopicSendStatus.WALKING
    )
    cursor = models.BigIntegerField(default=0)
    sent = models.PositiveIntegerField(default=0, help_text="Messages written so far")
    created_at = models.DateTimeField()
    updated_at = models.DateTimeField()

    def __str__(self) -> str:
        return f"{self.type_id} to {self.topic_id} ({self.status}, {self.sent})"
