"""Per-recipient date series: reminders around each person's own date (points that expire, a
plan that renews, a booked visit), moving with it (notifier.services.date_series)."""

from __future__ import annotations

import re
from typing import Any

from django.conf import settings
from django.core.exceptions import ValidationError
from django.db import models

MAX_SERIES_STEPS = 10
MAX_STEP_OFFSET_S = 366 * 86400
MAX_DAYS_BEFORE = 366
LOCAL_TIME_RE = re.compile(r"^([01]\d|2[0-3]):[0-5]\d$")
STEP_FORMS = (
    '{"before_s": 259200} (3 days before), {"after_s": 3600} (an hour after) or '
    '{"days_before": 1, "at": "10:00"} (the day before, 10:00 the recipient\'s local time)'
)


class SeriesExit(models.TextChoices):
    """What of the recipient's own stops the rest of a date's steps (besides `date_exit`)."""

    CLICKED = "clicked", "A click on one of its messages"
    SEEN = "seen", "Reading, opening or clicking one of its messages"
    NEVER = "never", "Only the product's own exit call"


class DateSeries(models.Model):
    """A series of steps around a date: code-defined ones are synced from the catalog."""

    key = models.CharField(max_length=100, primary_key=True, help_text="e.g. points.expiring")
    name = models.CharField(max_length=200)
    type = models.ForeignKey(
        "notifier.NotificationType",
        on_delete=models.PROTECT,
        help_text="What each step sends",
    )
    steps = models.JSONField(
        default=list,
        help_text='Steps: [{"before_s": 259200}, {"days_before": 1, "at": "10:00"}, '
        '{"before_s": 3600}] (3 days before, the day before at 10:00 local, an hour before)',
    )
    exit_on = models.CharField(
        max_length=8,
        choices=SeriesExit.choices,
        default=SeriesExit.CLICKED,
        help_text="Besides the product's exit call, what stops the rest of a date's steps",
    )
    is_active = models.BooleanField(default=True)
    code_defined = models.BooleanField(default=False, editable=False)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        ordering = ["key"]
        verbose_name_plural = "date series"

    def __str__(self) -> str:
        return self.key

    def clean(self) -> None:
        problem = series_steps_problem(self.steps)
        if problem:
            raise ValidationError({"steps": problem})


def series_steps_problem(steps: object) -> str:
    """What is wrong with a series' steps as stored (a list of steps), or ""."""
    if not isinstance(steps, list) or not 1 <= len(steps) <= MAX_SERIES_STEPS:
        return f"a list of 1 to {MAX_SERIES_STEPS} steps, each one of {STEP_FORMS}"
    for index, step in enumerate(steps, 1):
        problem = _step_problem(step)
        if problem:
            return f"step {index}: {problem}"
    return ""


def _step_problem(step: Any) -> str:
    if not isinstance(step, dict):
        return f"one of {STEP_FORMS}"
    keys = set(step)
    if keys in ({"before_s"}, {"after_s"}):
        (value,) = step.values()
        if type(value) is not int or not 0 <= value <= MAX_STEP_OFFSET_S:
            return f"{keys.pop()} is whole seconds from 0 to {MAX_STEP_OFFSET_S}"
        return ""
    if keys == {"days_before", "at"}:
        days, at = step["days_before"], step["at"]
        if type(days) is not int or not 0 <= days <= MAX_DAYS_BEFORE:
            return f"days_before is a whole number of days from 0 to {MAX_DAYS_BEFORE}"
        if not isinstance(at, str) or not LOCAL_TIME_RE.match(at):
            return f'at is a local time "HH:MM" (24-hour), got {str(at)[:20]!r}'
        return ""
    return f"one of {STEP_FORMS}"


class DateState(models.TextChoices):
    ACTIVE = "active", "Active: its steps go at their times"
    REMOVED = "removed", "Removed: its pending steps were cancelled"
    EXITED = "exited", "Exited: the person acted; the rest was cancelled"


class RecipientDate(models.Model):
    """One person's date in a series (their points' expiry, their plan's renewal), by a key of
    the product's ("subscription:42"). Each set or move bumps `version`; the steps of a version
    are messages with the cancel key `series:<id>:<version>`, so a move cancels exactly the old
    version's steps. `plan` says what became of each step of the current version.

    Version 0 is a date never set: a clear or exit with `as_of` that came before its set (a
    tombstone, so the older set arriving late is ignored); the lists of dates leave it out."""

    user = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.CASCADE, db_index=False)
    series = models.ForeignKey(DateSeries, on_delete=models.CASCADE, related_name="dates")
    key = models.CharField(max_length=255, help_text='Yours, e.g. "subscription:42"')
    at = models.DateTimeField(help_text="The date itself")
    context = models.JSONField(default=dict, blank=True)
    version = models.PositiveIntegerField(default=0)
    state = models.CharField(max_length=8, choices=DateState.choices, default=DateState.ACTIVE)
    state_note = models.CharField(max_length=255, blank=True, default="")
    # [{"step": 1, "at": "...", "message": 123} | {"step": 2, "at": "...", "skipped": "past"}]
    plan = models.JSONField(default=list, blank=True)
    as_of = models.DateTimeField(
        null=True,
        blank=True,
        help_text="The newest as_of of the calls applied to it (when the change happened in "
        "the caller's system): a call with an older one changes nothing",
    )
    created_at = models.DateTimeField()
    updated_at = models.DateTimeField()

    class Meta:
        constraints = [
            models.UniqueConstraint(fields=["user", "series", "key"], name="recipient_date_once"),
        ]

    def __str__(self) -> str:
        return f"{self.series_id} {self.key} for {self.user_id}"

    @property
    def cancel_key(self) -> str:
        return series_cancel_key(self.pk, self.version)

    @property
    def ever_set(self) -> bool:
        """False for a tombstone: a clear or exit (with as_of) ahead of the date's set."""
        return self.version > 0


SERIES_KEY_PREFIX = "series:"


def series_cancel_key(date_id: int, version: int) -> str:
    """The cancel key of one version's steps; callers' keys may not start with `series:`."""
    return f"{SERIES_KEY_PREFIX}{date_id}:{version}"
