"""Notification types: what a message is, how urgent, and which channels it may use."""

from __future__ import annotations

from django.core.exceptions import ValidationError
from django.core.validators import MaxValueValidator, MinValueValidator
from django.db import models


class Kind(models.TextChoices):
    TRANSACTIONAL = "transactional", "Transactional"  # receipts, security: always wanted
    SERVICE = "service", "Service"  # shipping updates, reminders the user asked for
    MARKETING = "marketing", "Marketing"  # promotions: need consent, respect caps
    SOCIAL = "social", "Social"  # follows, likes, comments


class Priority(models.TextChoices):
    CRITICAL = "critical", "Critical"
    HIGH = "high", "High"
    NORMAL = "normal", "Normal"
    LOW = "low", "Low"


PRIORITY_RANK = {Priority.CRITICAL: 0, Priority.HIGH: 1, Priority.NORMAL: 2, Priority.LOW: 3}


class ThrottleOver(models.TextChoices):
    DROP = "drop", "Dropped (suppressed, reason throttled)"
    DIGEST = "digest", "Folded into a digest for the same key"


class NotificationType(models.Model):
    """Code-defined types are synced from `notifier.catalog` after every migrate."""

    key = models.CharField(max_length=100, primary_key=True, help_text="e.g. order.shipped")
    name = models.CharField(max_length=200)
    description = models.TextField(blank=True, default="")
    kind = models.CharField(max_length=20, choices=Kind.choices)
    priority = models.CharField(max_length=10, choices=Priority.choices, default=Priority.NORMAL)
    channels = models.JSONField(default=list, help_text="Channels used when the caller names none")
    optional_context = models.JSONField(
        default=list, blank=True, help_text="Template variables the caller may leave out"
    )
    # At most throttle_limit messages of this type per recipient and throttle key (the caller's
    # `throttle_key`, e.g. "product:42"; none: the type itself) in any throttle_window_s; the
    # rest are suppressed with the reason `throttled`. Empty: no throttle.
    throttle_limit = models.PositiveIntegerField(
        null=True,
        blank=True,
        validators=[MinValueValidator(1), MaxValueValidator(1000)],
        help_text="At most this many per recipient and throttle key in the window (empty: none)",
    )
    throttle_window_s = models.PositiveIntegerField(
        null=True,
        blank=True,
        validators=[MinValueValidator(1), MaxValueValidator(366 * 86400)],
        help_text="The throttle's window in seconds, e.g. 86400 for a day",
    )
    # A digest: this type's messages to one person under one digest key are collected for
    # digest_window_s and sent as one (with digest_first_now, the first goes at once alone).
    digest_window_s = models.PositiveIntegerField(
        null=True,
        blank=True,
        validators=[MinValueValidator(1), MaxValueValidator(31 * 86400)],
        help_text="Collect this type's messages per person and digest key this long, then "
        "send them as one (empty: no digest)",
    )
    digest_first_now = models.BooleanField(
        default=False, help_text="With a digest: the first of a window goes at once, alone"
    )
    # Each recipient's own cadence (notifier.models.DigestCadence) decides the window of their
    # digest; digest_window_s is then the window of those who chose none (empty: immediately).
    digest_cadence = models.BooleanField(
        default=False,
        help_text="Digest at each recipient's chosen cadence (immediately, hourly, daily, "
        "weekly); the window above is for those who chose none",
    )
    # What becomes of the messages over the throttle's limit: dropped, or collected into the
    # digest for the same recipient and key (the throttle key when there is no digest key).
    throttle_over = models.CharField(
        max_length=8,
        choices=ThrottleOver.choices,
        default=ThrottleOver.DROP,
        help_text="Over the throttle: dropped, or folded into a digest sent when the digest's "
        "window (or else the throttle's) ends",
    )
    # Escalation: [{"channel": "inapp", "after_s": 0}, {"channel": "push", "after_s": 600},
    # {"channel": "sms", "after_s": 3600, "critical_only": true}]: the first step at once, each
    # later one after its wait only if nothing of the message was read, opened or clicked.
    escalation = models.JSONField(
        default=list,
        blank=True,
        help_text='Steps: [{"channel": "inapp", "after_s": 0}, {"channel": "push", '
        '"after_s": 600}, ...]; later steps go only if nothing was read by then',
    )
    is_active = models.BooleanField(default=True)
    code_defined = models.BooleanField(default=False, editable=False)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        ordering = ["key"]

    def __str__(self) -> str:
        return self.key

    def clean(self) -> None:
        if (self.throttle_limit is None) != (self.throttle_window_s is None):
            raise ValidationError(
                "A throttle needs both its limit and its window (or neither, for no throttle)"
            )
        if self.throttle_over == ThrottleOver.DIGEST and self.throttle_limit is None:
            raise ValidationError(
                {"throttle_over": "Folding into a digest needs a throttle (its limit and window)"}
            )
        digests = self.digest_window_s or self.digest_cadence or self.throttle_over == "digest"
        if digests and (self.kind == Kind.TRANSACTIONAL or self.priority == Priority.CRITICAL):
            raise ValidationError(
                "Transactional and critical messages are never digested: leave the digest "
                "window, the cadence and the throttle's folding off"
            )
        problem = escalation_problem(self.escalation, list(self.channels or []))
        if problem:
            raise ValidationError({"escalation": problem})

    @property
    def is_bulk(self) -> bool:
        return self.kind in (Kind.MARKETING, Kind.SOCIAL)


MAX_ESCALATION_WAIT_S = 30 * 86400


def escalation_problem(steps: object, channels: list[str]) -> str:
    """What is wrong with an escalation as stored (a list of steps), or ""."""
    if steps in (None, []):
        return ""
    if not isinstance(steps, list) or len(steps) > 8:
        return 'a list of at most 8 steps, each {"channel": ..., "after_s": ...}'
    seen: set[str] = set()
    last = -1
    for index, step in enumerate(steps, 1):
        if not isinstance(step, dict) or set(step) - {"channel", "after_s", "critical_only"}:
            return f"step {index}: an object with channel, after_s and optional critical_only"
        channel, after = step.get("channel"), step.get("after_s")
        if channel not in channels:
            return f"step {index}: {channel!r} is not one of the type's channels {channels}"
        if channel in seen:
            return f"step {index}: {channel} is in the escalation twice"
        if type(after) is not int or not 0 <= after <= MAX_ESCALATION_WAIT_S:
            return f"step {index}: after_s is whole seconds from 0 to {MAX_ESCALATION_WAIT_S}"
        if index == 1 and after != 0:
            return "step 1 goes at once: its after_s is 0"
        if after < last:
            return f"step {index}: its after_s is before the step before it"
        if type(step.get("critical_only", False)) is not bool:
            return f"step {index}: critical_only is true or false"
        seen.add(channel)
        last = after
    return ""
