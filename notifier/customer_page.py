"""What the customer page shows above the delivery history, read for one person: contact
points (masked for staff without `notifier.view_contact_details`), time zone and locale with
their local time now, consent per channel with its history, preferences, frequency caps used
this week, push devices, suppressions, their dates (date series) with what became of each
step, and support's fixes and notes. Plus the fix forms.

Reads only; the fixes themselves are `notifier.services.support`.
"""

from __future__ import annotations

import uuid
import zoneinfo
from dataclasses import dataclass, field
from datetime import datetime
from itertools import groupby
from typing import Any

from django import forms
from django.conf import settings
from django.utils import timezone

from channels.base import Channel
from notifier.masking import mask_email, mask_in_text, mask_phone
from notifier.models import (
    ALL_CHANNELS,
    CapPeriod,
    Consent,
    Delivery,
    Device,
    FrequencyCounter,
    Kind,
    Preference,
    Recipient,
    RecipientDate,
    SupportAction,
    SuppressedAddress,
    normalize_email,
)
from notifier.models.users import display_name
from notifier.policies.caps import caps_for, windows_at
from notifier.policies.digests import Cadence
from notifier.policies.preferences import Preferences, can_switch_off, channel_enabled
from notifier.services.cadences import WEEKDAYS, CadenceState, digest_cadences_of
from notifier.services.date_series import recipient_dates_of, steps_archived
from notifier.services.support import MAX_WHY
from notifier.status import Reason

# --- Reads ----------------------------------------------------------------------------------


@dataclass(frozen=True)
class Masker:
    """Shows a person's details in full, or masked for staff who may not see them."""

    full: bool
    emails: tuple[str, ...] = ()
    phones: tuple[str, ...] = ()
    names: tuple[str, ...] = ()

    @classmethod
    def for_person(cls, *, full: bool, user: Any, profile: Recipient) -> Masker:
        emails = {profile.email, str(getattr(user, "email", "") or "")}
        names = {
            display_name(user),
            str(getattr(user, "username", "") or ""),
            # Copy greets by either alone: "Hi {{ user.first_name }}".
            str(getattr(user, "first_name", "") or ""),
            str(getattr(user, "last_name", "") or ""),
        }
        return cls(
            full=full,
            emails=tuple(e for e in emails if e),
            phones=(profile.phone,) if profile.phone else (),
            names=tuple(n for n in names if n),
        )

    def email(self, value: str) -> str:
        return value if self.full else mask_email(value)

    def phone(self, value: str) -> str:
        return value if self.full else mask_phone(value)

    def text(self, value: str) -> str:
        if self.full or not value:
            return value
        return mask_in_text(value, emails=self.emails, phones=self.phones, names=self.names)


def zone_of(name: str) -> zoneinfo.ZoneInfo | None:
    try:
        return zoneinfo.ZoneInfo(name)
    except (zoneinfo.ZoneInfoNotFoundError, ValueError):
        return None


@dataclass(frozen=True)
class ConsentChannel:
    channel: str
    granted: bool | None  # None: never asked
    since: datetime | None
    history: list[Consent]


def consent_by_channel(user_id: Any) -> list[ConsentChannel]:
    """Per consent channel ("all" first): the state now and every record, newest first."""
    rows = list(Consent.objects.filter(user_id=user_id).order_by("-at", "-id"))
    channels = [ALL_CHANNELS, *settings.NOTIFIER_CONSENT_CHANNELS]
    channels += sorted({r.channel for r in rows} - set(channels))
    result = []
    for channel in channels:
        history = [r for r in rows if r.channel == channel]
        newest = history[0] if history else None
        result.append(
            ConsentChannel(
                channel=channel,
                granted=newest.granted if newest else None,
                since=newest.at if newest else None,
                history=history,
            )
        )
    return result


@dataclass(frozen=True)
class PreferenceRow:
    kind: str
    label: str
    locked: bool  # cannot be switched off (transactional)
    cells: list[tuple[str, bool]]  # (channel, enabled)


def preference_grid(
    user_id: Any, marketing_frequency: str
) -> tuple[list[PreferenceRow], list[Preference]]:
    """Kinds x channels as the user's choices leave them, and their per-type overrides."""
    rows = list(Preference.objects.filter(user_id=user_id).order_by("category", "channel"))
    prefs = Preferences(
        overrides={(r.category, r.channel): r.enabled for r in rows},
        marketing_frequency=marketing_frequency,
    )
    grid = [
        PreferenceRow(
            kind=kind.value,
            label=str(kind.label),
            locked=not can_switch_off(kind.value, "normal"),
            cells=[
                (c.value, channel_enabled(prefs, kind=kind.value, type_key="", channel=c.value))
                for c in Channel
            ],
        )
        for kind in Kind
    ]
    kinds = {k.value for k in Kind}
    return grid, [r for r in rows if r.category not in kinds]


@dataclass(frozen=True)
class CapUse:
    period: str
    used: int
    limit: int
    window_start: Any


def caps_used(
    user_id: Any, *, frequency: str, tz: zoneinfo.ZoneInfo | None, now: datetime
) -> list[CapUse]:
    """Marketing messages counted against the caps in the person's current day and week."""
    windows = windows_at(now, tz or zoneinfo.ZoneInfo("UTC"))
    caps = caps_for(
        frequency=frequency,
        base_day=settings.NOTIFIER_MARKETING_CAP_DAY,
        base_week=settings.NOTIFIER_MARKETING_CAP_WEEK,
        irrelevant=0,
    )
    counts = dict(
        FrequencyCounter.objects.filter(
            user_id=user_id,
            window_start__in=[windows.day, windows.week],
        ).values_list("period", "count")
    )
    return [
        CapUse("this week", counts.get(CapPeriod.WEEK, 0), caps.week, windows.week),
        CapUse("today", counts.get(CapPeriod.DAY, 0), caps.day, windows.day),
    ]


def suppressions_of(profile: Recipient) -> list[SuppressedAddress]:
    addresses = [a for a in (normalize_email(profile.email), profile.phone) if a]
    return list(SuppressedAddress.objects.filter(address__in=addresses).order_by("-at"))


@dataclass(frozen=True)
class DateStepRow:
    step: int
    at: datetime
    message_id: int | None
    outcome: str  # what became of it, in words


@dataclass(frozen=True)
class DateRow:
    date: RecipientDate
    steps: list[DateStepRow]


def _reason_words(reason: str) -> str:
    return str(Reason(reason).label) if reason in Reason.values else reason


def dates_of(user_id: Any) -> list[DateRow]:
    """The person's dates, soonest first, each step of its latest version with what became of
    it (per channel, with the reason): two queries for the lot."""
    dates = recipient_dates_of(user_id=user_id)
    ids = [step["message"] for date in dates for step in date.plan if step.get("message")]
    rows = (
        Delivery.objects.filter(message_id__in=ids)
        .order_by("message_id", "channel")
        .values_list("message_id", "channel", "status", "reason")
    )
    archived = steps_archived(dates)
    outcomes = {
        message_id: "; ".join(
            f"{channel} {status}" + (f" ({_reason_words(reason)})" if reason else "")
            for _, channel, status, reason in group
        )
        for message_id, group in groupby(rows, key=lambda row: row[0])
    }
    return [
        DateRow(
            date,
            [
                DateStepRow(
                    step["step"],
                    datetime.fromisoformat(step["at"]),
                    step.get("message"),
                    "Not sent: its time had gone when the date was set"
                    if step.get("skipped")
                    else "archived by retention (its record is in the archive)"
                    if step.get("message") in archived
                    else outcomes.get(step.get("message") or 0, "not routed yet"),
                )
                for step in date.plan
            ],
        )
        for date in dates
    ]


@dataclass
class Overview:
    profile: Recipient
    email: str
    phone: str
    local_now: datetime | None
    consent: list[ConsentChannel]
    preference_grid: list[PreferenceRow]
    type_overrides: list[Preference]
    caps: list[CapUse]
    active_devices: list[Device]
    inactive_devices: list[Device]
    suppressions: list[SuppressedAddress]
    actions: list[SupportAction] = field(default_factory=list)
    dates: list[DateRow] = field(default_factory=list)
    # How often their digests come, in words: "all: daily at 09:00", "social.new_comment: ...".
    digest_cadences: list[str] = field(default_factory=list)


def customer_overview(*, user: Any, profile: Recipient, masker: Masker) -> Overview:
    tz = zone_of(profile.time_zone)
    now = timezone.now()
    grid, overrides = preference_grid(user.pk, profile.marketing_frequency)
    devices = list(Device.objects.filter(user_id=user.pk).order_by("-active", "-created_at"))
    suppressions = suppressions_of(profile)
    for row in suppressions:
        row.shown_address = (  # type: ignore[attr-defined]
            masker.email(row.address) if "@" in row.address else masker.phone(row.address)
        )
    actions = list(profile.support_actions.order_by("-at", "-id")) if profile.pk else []
    for action in actions:
        action.shown_detail = {  # type: ignore[attr-defined]
            k: masker.text(str(v)) for k, v in sorted(action.detail.items())
        }
        action.shown_why = masker.text(action.why)  # type: ignore[attr-defined]
    return Overview(
        profile=profile,
        email=masker.email(profile.email),
        phone=masker.phone(profile.phone),
        local_now=now.astimezone(tz) if tz else None,
        consent=consent_by_channel(user.pk),
        preference_grid=grid,
        type_overrides=overrides,
        caps=caps_used(user.pk, frequency=profile.marketing_frequency, tz=tz, now=now),
        active_devices=[d for d in devices if d.active],
        inactive_devices=[d for d in devices if not d.active],
        suppressions=suppressions,
        actions=actions,
        dates=dates_of(user.pk),
        digest_cadences=[_cadence_words(c) for c in digest_cadences_of(user_id=user.pk)],
    )


def _cadence_words(state: CadenceState) -> str:
    scope = state.scope or "all types"
    if state.cadence == Cadence.DAILY:
        return f"{scope}: daily at {state.at:%H:%M} their time"
    if state.cadence == Cadence.WEEKLY:
        return f"{scope}: weekly, {WEEKDAYS[state.weekday]} at {state.at:%H:%M} their time"
    return f"{scope}: {state.cadence}"


# --- The fix forms --------------------------------------------------------------------------


def why_field(label: str = "Why") -> forms.CharField:
    return forms.CharField(
        label=label,
        max_length=MAX_WHY,
        widget=forms.Textarea(attrs={"rows": 2, "cols": 50}),
        help_text="Required, kept on the timeline: a ticket number and what the customer asked",
    )


class FixForm(forms.Form):
    fix = forms.CharField(widget=forms.HiddenInput)
    token = forms.UUIDField(widget=forms.HiddenInput)

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        if not self.is_bound:
            self.initial.setdefault("token", uuid.uuid4())


class NoteForm(FixForm):
    why = why_field("Note")


class ContactForm(FixForm):
    field = forms.ChoiceField(choices=[("email", "Email"), ("phone", "Phone")])
    value = forms.CharField(label="Correct value", max_length=254)
    why = why_field()


class LiftForm(FixForm):
    suppression = forms.IntegerField(widget=forms.HiddenInput)
    why = why_field()


class ResendForm(FixForm):
    message = forms.IntegerField(widget=forms.HiddenInput)
    channels = forms.MultipleChoiceField(
        choices=[(c.value, c.value) for c in Channel], widget=forms.CheckboxSelectMultiple
    )
    why = why_field()


class CancelForm(FixForm):
    message = forms.IntegerField(widget=forms.HiddenInput)
    why = why_field()


FIX_FORMS: dict[str, type[FixForm]] = {
    "note": NoteForm,
    "contact": ContactForm,
    "lift": LiftForm,
    "resend": ResendForm,
    "cancel": CancelForm,
}
