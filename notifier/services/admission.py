"""Admission: may a routed message go out now, wait, or not go at all?

The message-level half of routing, used both when a message is routed and when a held one comes
up for release: staleness, quiet hours in the user's time zone, backpressure on the bulk lane,
and (for marketing) taking a frequency-cap slot. Everything but the cap slot is a pure policy.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, time, timedelta
from zoneinfo import ZoneInfo

from django.conf import settings

from campaigns.models import CampaignStatus
from notifier.backpressure import RETRY_HOLD_S
from notifier.models import Kind, Message, Priority, User
from notifier.policies.caps import Windows, caps_for, next_window_start, windows_at
from notifier.policies.quiet_hours import (
    QuietHours,
    bypasses_quiet_hours,
    parse_window,
    quiet_until,
    spread_offset_s,
)
from notifier.queues import Lane
from notifier.services.caps import CapRequest, caps_take_many
from notifier.status import DeliveryStatus, Reason

S = DeliveryStatus


@dataclass(frozen=True, slots=True)
class Admission:
    status: DeliveryStatus  # QUEUED, HELD or SUPPRESSED
    reason: str = ""
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


def quiet_hours_of(user: User) -> QuietHours:
    default_start, default_end = parse_window(settings.NOTIFIER_QUIET_HOURS)
    start: time = user.quiet_hours_start or default_start
    end: time = user.quiet_hours_end or default_end
    return QuietHours(
        enabled=user.quiet_hours_enabled, start=start, end=end, tz=ZoneInfo(user.time_zone or "UTC")
    )


def expiry_of(message: Message, kind: str) -> datetime | None:
    """Marketing goes stale after NOTIFIER_MARKETING_TTL_H unless the caller said otherwise."""
    if message.expires_at is not None:
        return message.expires_at
    if kind == Kind.MARKETING:
        return message.created_at + timedelta(hours=settings.NOTIFIER_MARKETING_TTL_H)
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
    campaign_status: str | None = None,
    series_stopped: bool = False,
    take_cap: bool = True,
) -> Admission:
    """Decide for the whole message (all its sendable channels move together).

    Takes a frequency-cap slot when a marketing message is admitted; call it inside the
    transaction that writes the outcome, so that a rollback gives the slot back.
    """
    if message.is_test:  # a marketer's "send test to me": now, past holds and caps
        return QUEUE
    if campaign_status == CampaignStatus.CANCELLED:
        return Admission(S.SUPPRESSED, Reason.CANCELLED)
    if series_stopped:  # the customer converted or clicked: the rest of the series is moot
        return Admission(S.SUPPRESSED, Reason.SERIES_STOPPED)
    if campaign_status == CampaignStatus.PAUSED:  # no time: resuming the campaign releases it
        return Admission(S.HELD, Reason.CAMPAIGN_PAUSED)
    expiry = expiry_of(message, kind)
    if expiry is not None and now >= expiry:
        return Admission(S.SUPPRESSED, Reason.STALE)
    if message.not_before is not None and now < message.not_before:
        return _hold(Reason.SCHEDULED, message.not_before, expiry)
    quiet = quiet_hours_of(user)
    if not bypasses_quiet_hours(kind=kind, priority=message.priority):
        night_ends = quiet_until(now, quiet)
        if night_ends is not None:
            spread = spread_offset_s(message.pk, settings.NOTIFIER_QUIET_RELEASE_WINDOW_S)
            return _hold(Reason.QUIET_HOURS, night_ends + timedelta(seconds=spread), expiry)
    if congested and (message.lane == Lane.BULK or message.priority == Priority.LOW):
        return _hold(Reason.BACKPRESSURE, now + timedelta(seconds=RETRY_HOLD_S), expiry)
    if kind == Kind.MARKETING:
        caps = caps_for(
            frequency=user.marketing_frequency,
            base_day=settings.NOTIFIER_MARKETING_CAP_DAY,
            base_week=settings.NOTIFIER_MARKETING_CAP_WEEK,
            irrelevant=irrelevant,
        )
        if caps.week == 0:  # feedback or frequency left no room at all: nothing to wait for
            return Admission(S.SUPPRESSED, Reason.FREQUENCY_CAP)
        windows = windows_at(now, quiet.tz)
        if (message.cap_day, message.cap_week) == (windows.day, windows.week):
            return Admission(S.QUEUED, cap=windows)  # held after taking its slot: keeps it
        pending = PendingCap(CapRequest(user.pk, windows, caps), now, quiet.tz, expiry)
        if not take_cap:
            return Admission(S.QUEUED, pending=pending)
        return settle_caps([Admission(S.QUEUED, pending=pending)])[0]
    return QUEUE


def settle_caps(admissions: Sequence[Admission]) -> list[Admission]:
    """Take the cap slots the admissions still need, all at once: each becomes queued (with
    its slot), or held until the next window, or suppressed when it would be stale by then."""
    waiting = [(index, a.pending) for index, a in enumerate(admissions) if a.pending]
    if not waiting:
        return list(admissions)
    results = caps_take_many([pending.request for _, pending in waiting])
    settled = list(admissions)
    for (index, pending), full in zip(waiting, results, strict=True):
        settled[index] = (
            Admission(S.QUEUED, cap=pending.request.windows)
            if full is None
            else _hold(
                Reason.FREQUENCY_CAP,
                next_window_start(pending.now, pending.tz, full),
                pending.expiry,
            )
        )
    return settled
