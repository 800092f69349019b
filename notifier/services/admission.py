"""Admission: may a routed message go out now, wait, or not go at all?

The message-level half of routing, used both when a message is routed and when a held one comes
up for release: staleness, quiet hours in the user's time zone, backpressure on the bulk lane,
and (for marketing) taking a frequency-cap slot. Everything but the cap slot is a pure policy.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, time, timedelta
from functools import lru_cache
from typing import Any
from zoneinfo import ZoneInfo

from django.conf import settings

from notifier.backpressure import RETRY_HOLD_S
from notifier.hooks import NO_CAMPAIGN, CampaignFacts
from notifier.models import CapPeriod, Kind, Message, Priority, User
from notifier.models.recipients import recipient_for
from notifier.models.types import PRIORITY_RANK
from notifier.policies.caps import (
    Windows,
    caps_for,
    next_window_start,
    outranked_until,
    windows_at,
)
from notifier.policies.quiet_hours import (
    QuietHours,
    bypasses_quiet_hours,
    parse_window,
    quiet_until,
    spread_offset_s,
)
from notifier.queues import Lane
from notifier.services.caps import CapRequest, caps_rivals, caps_room, caps_take_many
from notifier.status import DeliveryStatus, Reason

S = DeliveryStatus


@dataclass(frozen=True, slots=True)
class Admission:
    status: DeliveryStatus  # QUEUED, HELD or SUPPRESSED
    reason: str = ""  # when QUEUED: why it goes out where it otherwise would not (or "")
    until: datetime | None = None  # when HELD: when to look again
    cap: Windows | None = None  # when a marketing message took a cap slot: its windows
    pending: PendingCap | None = None  # a cap slot still to take (see settle_caps)

    @property
    def queued(self) -> bool:
        return self.status == S.QUEUED


@dataclass(frozen=True, slots=True)
class PendingCap:
    request: CapRequest
    now: datetime
    tz: ZoneInfo
    expiry: datetime | None


QUEUE = Admission(S.QUEUED)


# Pure functions of a few values that a batch's users share (the setting, their time zones at
# the batch's one `now`): computed once per distinct value, not once per message.
_parse_window = lru_cache(maxsize=8)(parse_window)
_windows_at = lru_cache(maxsize=1024)(windows_at)
_next_window_start = lru_cache(maxsize=1024)(next_window_start)
_zone = lru_cache(maxsize=1024)(ZoneInfo)


def quiet_hours_of(user: Any) -> QuietHours:
    """The user's quiet hours, from their recipient profile (any user model)."""
    profile = recipient_for(user)
    default_start, default_end = _parse_window(settings.NOTIFIER_QUIET_HOURS)
    start: time = profile.quiet_hours_start or default_start
    end: time = profile.quiet_hours_end or default_end
    return QuietHours(
        enabled=profile.quiet_hours_enabled,
        start=start,
        end=end,
        tz=_zone(profile.time_zone or "UTC"),
    )


def expiry_of(message: Message, kind: str) -> datetime | None:
    """Marketing goes stale NOTIFIER_MARKETING_TTL_H after it was meant to go out (written,
    or its send time when it was scheduled) unless the caller said otherwise."""
    if message.expires_at is not None:
        return message.expires_at
    if kind == Kind.MARKETING:
        start = max(message.created_at, message.not_before or message.created_at)
        return start + timedelta(hours=settings.NOTIFIER_MARKETING_TTL_H)
    return None


def _hold(reason: Reason, until: datetime, expiry: datetime | None) -> Admission:
    if expiry is not None and until >= expiry:
        return Admission(S.SUPPRESSED, Reason.STALE)
    return Admission(S.HELD, reason, until)


def message_admission(
    *,
    message: Message,
    user: User,
    kind: str,
    now: datetime,
    congested: bool,
    irrelevant: int,
    campaign: CampaignFacts = NO_CAMPAIGN,
    take_cap: bool = True,
) -> Admission:
    """Decide for the whole message (all its sendable channels move together).

    `campaign`: what the campaigns hook knows of the message's campaign: cancelled, paused, the
    customer's series stopped, and a marketing lead's permission to send in quiet hours
    (without it marketing is held at night whatever its priority).

    Takes a frequency-cap slot when a marketing message is admitted; call it inside the
    transaction that writes the outcome, so that a rollback gives the slot back.
    """
    if message.is_test:  # a marketer's "send test to me": now, past holds and caps
        return QUEUE
    if campaign.cancelled:
        return Admission(S.SUPPRESSED, Reason.CANCELLED)
    if campaign.series_stopped:  # the customer converted or clicked: the rest of the series is moot
        return Admission(S.SUPPRESSED, Reason.SERIES_STOPPED)
    if campaign.paused:  # no time: resuming the campaign releases it
        return Admission(S.HELD, Reason.CAMPAIGN_PAUSED)
    expiry = expiry_of(message, kind)
    if expiry is not None and now >= expiry:
        return Admission(S.SUPPRESSED, Reason.STALE)
    if message.not_before is not None and now < message.not_before:
        return _hold(Reason.SCHEDULED, message.not_before, expiry)
    quiet = quiet_hours_of(user)
    night_ends = quiet_until(now, quiet)
    overridden = ""  # a marketing message sent in quiet hours says who allowed it, and why
    if night_ends is not None:
        if not bypasses_quiet_hours(
            kind=kind, priority=message.priority, marketing_allowed=campaign.quiet_hours_allowed
        ):
            spread = spread_offset_s(message.pk, settings.NOTIFIER_QUIET_RELEASE_WINDOW_S)
            return _hold(Reason.QUIET_HOURS, night_ends + timedelta(seconds=spread), expiry)
        if kind == Kind.MARKETING:
            overridden = Reason.QUIET_HOURS_ALLOWED
    if congested and (message.lane == Lane.BULK or message.priority == Priority.LOW):
        return _hold(Reason.BACKPRESSURE, now + timedelta(seconds=RETRY_HOLD_S), expiry)
    if kind == Kind.MARKETING:
        caps = caps_for(
            frequency=recipient_for(user).marketing_frequency,
            base_day=settings.NOTIFIER_MARKETING_CAP_DAY,
            base_week=settings.NOTIFIER_MARKETING_CAP_WEEK,
            irrelevant=irrelevant,
        )
        if caps.week == 0:  # feedback or frequency left no room at all: nothing to wait for
            return Admission(S.SUPPRESSED, Reason.FREQUENCY_CAP)
        windows = _windows_at(now, quiet.tz)
        if (message.cap_day, message.cap_week) == (windows.day, windows.week):
            # Held after taking its slot: keeps it.
            return Admission(S.QUEUED, overridden, cap=windows)
        request = CapRequest(
            user.pk,
            windows,
            caps,
            message_id=message.pk,
            rank=PRIORITY_RANK.get(Priority(message.priority), 2),
            day_ends=_next_window_start(now, quiet.tz, CapPeriod.DAY),
        )
        pending = PendingCap(request, now, quiet.tz, expiry)
        if not take_cap:
            return Admission(S.QUEUED, overridden, pending=pending)
        return settle_caps([Admission(S.QUEUED, overridden, pending=pending)])[0]
    return Admission(S.QUEUED, overridden) if overridden else QUEUE


def settle_caps(admissions: Sequence[Admission]) -> list[Admission]:
    """Take the cap slots the admissions still need, all at once and highest priority first:
    each becomes queued (with its slot), or held until the next window, or suppressed when it
    would be stale by then.

    When several compete for the slots left, the higher priority wins, also against messages
    outside this decision: one whose user has held higher-priority marketing due later the same
    day, enough to fill what is left, yields (`outranked`) and looks again when the first of
    them is due. Messages not yet written cannot be waited for.
    """
    waiting = sorted(
        ((index, a, a.pending) for index, a in enumerate(admissions) if a.pending),
        key=lambda item: (item[2].request.rank, item[0]),
    )
    if not waiting:
        return list(admissions)
    requests = [pending.request for _, _, pending in waiting]
    rooms, rivals = caps_room(requests), caps_rivals(requests)
    settled = list(admissions)
    ahead: dict[int, int] = {}
    taking: list[tuple[int, Admission, PendingCap]] = []
    for (index, admission, pending), room, user_rivals in zip(waiting, rooms, rivals, strict=True):
        user = pending.request.user_id
        until = outranked_until(
            room=room, ahead=ahead.get(user, 0), rivals=user_rivals, now=pending.now
        )
        if until is not None:
            settled[index] = _hold(Reason.OUTRANKED, until, pending.expiry)
            continue
        ahead[user] = ahead.get(user, 0) + 1
        taking.append((index, admission, pending))
    results = caps_take_many([pending.request for _, _, pending in taking])
    for (index, admission, pending), full in zip(taking, results, strict=True):
        settled[index] = (
            Admission(admission.status, admission.reason, admission.until, pending.request.windows)
            if full is None
            else _hold(
                Reason.FREQUENCY_CAP,
                next_window_start(pending.now, pending.tz, full),
                pending.expiry,
            )
        )
    return settled
