"""What each user chose: per-category channel switches, and the marketing consent log.

Defaults live in code (`notifier.policies.preferences`); a Preference row stores only a user's
override. Consent is append-only: the current state is the newest row per (purpose, channel),
and every row says when, from where and with what wording.
"""

from __future__ import annotations

from django.conf import settings
from django.db import models

ALL_CHANNELS = "all"


class Preference(models.Model):
    """One override: `category` (a kind such as "marketing", or a type key such as
    "promo.flash_sale") on `channel` (a channel, or "all") is switched on or off."""

    user = models.ForeignKey(
        settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="preferences"
    )
    category = models.CharField(max_length=100)
    channel = models.CharField(max_length=10, default=ALL_CHANNELS)
    enabled = models.BooleanField()
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        constraints = [
            models.UniqueConstraint(
                fields=["user", "category", "channel"], name="preference_user_category_channel"
            )
        ]

    def __str__(self) -> str:
        return f"{self.category} on {self.channel}: {'on' if self.enabled else 'off'}"


class DigestCadence(models.Model):
    """How often a person wants their digests (`notifier.policies.digests`): for every type that
    honours it (`scope` empty), or for one type (`scope` is its key), which wins over the first.
    No row: the type's own window. Only types with `digest_cadence` on listen to it."""

    user = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.CASCADE, db_index=False)
    scope = models.CharField(max_length=100, blank=True, default="", help_text="Empty: all types")
    cadence = models.CharField(
        max_length=12,
        choices=[
            ("immediately", "Immediately"),
            ("hourly", "Hourly"),
            ("daily", "Daily"),
            ("weekly", "Weekly"),
        ],
    )
    at = models.TimeField(help_text="Daily and weekly: the local time it comes")
    weekday = models.PositiveSmallIntegerField(default=0, help_text="Weekly: 0 Monday - 6 Sunday")
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        constraints = [
            models.UniqueConstraint(fields=["user", "scope"], name="digest_cadence_user_scope")
        ]

    def __str__(self) -> str:
        return f"{self.scope or 'all'}: {self.cadence}"


class ConsentPurpose(models.TextChoices):
    MARKETING = "marketing", "Marketing messages"


class Consent(models.Model):
    """A consent given or withdrawn. Never updated: the newest row per channel holds."""

    user = models.ForeignKey(
        settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="consents"
    )
    purpose = models.CharField(
        max_length=20, choices=ConsentPurpose.choices, default=ConsentPurpose.MARKETING
    )
    channel = models.CharField(max_length=10, default=ALL_CHANNELS)
    granted = models.BooleanField()
    at = models.DateTimeField()
    source = models.CharField(
        max_length=100, help_text="Where: signup_form, preference_centre, unsubscribe_link, ..."
    )
    wording = models.TextField(blank=True, default="", help_text="The words the user agreed to")
    ip_address = models.GenericIPAddressField(null=True, blank=True)

    class Meta:
        indexes = [
            models.Index(fields=["user", "purpose", "channel", "-at"], name="consent_current_idx")
        ]

    def __str__(self) -> str:
        return f"{self.purpose} on {self.channel}: {'given' if self.granted else 'withdrawn'}"


class CapPeriod(models.TextChoices):
    DAY = "day", "Day"
    WEEK = "week", "Week"


class FrequencyCounter(models.Model):
    """Marketing messages a user was sent in one day or week of their own calendar.

    Taken with one atomic upsert (`notifier.services.caps`), so two workers cannot both take
    the last slot; a PostgreSQL row rather than a Redis key, so a rolled-back route gives its
    slot back.
    """

    # Covered by the (user, period, window_start) constraint.
    user = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.CASCADE, db_index=False)
    period = models.CharField(max_length=4, choices=CapPeriod.choices)
    window_start = models.DateField()
    count = models.PositiveIntegerField(default=0)

    class Meta:
        constraints = [
            models.UniqueConstraint(
                fields=["user", "period", "window_start"], name="frequency_counter_window"
            )
        ]

    def __str__(self) -> str:
        return f"{self.period} from {self.window_start}: {self.count}"


class Snooze(models.Model):
    """A person muted a type for a while (`until`) or until they unmute it (`until` empty):
    meanwhile it reaches them in the inbox only, no email, SMS or push
    (`notifier.policies.preferences.snooze_reason`). One row per person and type."""

    user = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.CASCADE, db_index=False)
    type = models.ForeignKey("notifier.NotificationType", on_delete=models.CASCADE)
    until = models.DateTimeField(null=True, blank=True, help_text="Empty: until they unmute")
    at = models.DateTimeField()

    class Meta:
        constraints = [
            models.UniqueConstraint(fields=["user", "type"], name="snooze_user_type"),
        ]

    def __str__(self) -> str:
        return f"{self.type_id} until {self.until or 'unmuted'}"


class ThrottleSlot(models.Model):
    """A message of a throttled type that routing let through for a user and throttle key:
    the next ones in the type's window count these (`notifier.services.throttles`). Written in
    the routing transaction, so a rolled-back route gives its slot back; rows older than the
    longest window are pruned as they are counted."""

    user = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.CASCADE, db_index=False)
    type_key = models.CharField(max_length=100)
    key = models.CharField(max_length=255, blank=True, default="")
    at = models.DateTimeField()
    message_id = models.BigIntegerField(help_text="The message that took it")

    class Meta:
        indexes = [
            models.Index(fields=["user", "type_key", "key", "at"], name="throttle_slot_idx"),
        ]

    def __str__(self) -> str:
        return f"{self.type_key} [{self.key}] at {self.at:%Y-%m-%d %H:%M}"


class Unsubscribe(models.Model):
    """An unsubscribe, kept for the funnel: which message's link it came through, if any."""

    user = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.CASCADE)
    message = models.ForeignKey(
        "notifier.Message",
        null=True,
        blank=True,
        on_delete=models.SET_NULL,
        related_name="unsubscribes",
    )
    category = models.CharField(max_length=100)
    channel = models.CharField(max_length=10)
    scope = models.CharField(max_length=10, help_text="this, channel or all")
    source = models.CharField(max_length=100)
    at = models.DateTimeField()

    class Meta:
        indexes = [models.Index(fields=["message"], name="unsubscribe_message_idx")]

    def __str__(self) -> str:
        return f"{self.user_id} from {self.category} on {self.channel}"
