"""Per-recipient date series: the 3-2-1 rule around each person's own date.

A `RecipientDate` is one person's date in a series (their points expire on 1 June, plan 42
renews on the 9th). Setting it writes the series' steps as scheduled messages (held in
PostgreSQL until their time, released by the release job like any `send_at`), all carrying the
cancel key `series:<date id>:<version>` and each an idempotency key of its own. Every change
happens with the date's row locked, in one transaction:

- a move bumps the version, cancels what has not gone out of the old version's steps (reason
  `series_moved`) and writes the new ones: two moves at once queue on the row lock, and the
  second cancels the first's steps, so exactly the final date's steps remain;
- a removal cancels them (`series_removed`), an exit too (`series_exited`);
- setting the same date and context again changes nothing (a retried call or task).

Calls apply in the order they run, unless they say when their change happened in the caller's
system (`as_of`): then one older than the date's own `as_of` (the newest applied) changes
nothing, so a task redelivered late or an HTTP retry behind a newer call cannot move the date
back. A clear or exit with `as_of` of a date not set yet leaves a tombstone (version 0, never
listed) for the older set still on its way to find.

A step whose time has already gone when the date is set is not sent (more than a minute past:
notifier.policies.series.PAST_GRACE); the date's `plan` records it as skipped. What the person
does stops the rest too: when a step comes up, the release job suppresses it (`series_exited`)
if an earlier step of the same date was clicked (or read, per the series' `exit_on`).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from django.contrib.auth import get_user_model
from django.db import transaction
from django.utils import timezone

from notifier.models import (
    DateSeries,
    DateState,
    Delivery,
    Message,
    Recipient,
    RecipientDate,
)
from notifier.models.series import SERIES_KEY_PREFIX, series_cancel_key
from notifier.policies.series import series_exits, step_times
from notifier.selectors import type_info_get
from notifier.services.cancellation import messages_cancel_because
from notifier.services.messages import NewMessage, messages_create
from notifier.status import DeliveryStatus, Reason
from notifier.user_keys import UserKey

log = logging.getLogger(__name__)

S = DeliveryStatus
SEEN = (S.OPENED, S.READ)
CLICKED = (S.CLICKED,)


@dataclass(frozen=True)
class DateChange:
    """What a call did to a date: the date as it stands afterwards (None: there is none), and
    whether the call was applied (False: its as_of was older than the date's, which stands)."""

    date: RecipientDate | None
    applied: bool

    @property
    def found(self) -> bool:
        """Whether there is such a date (a tombstone is not one: it was never set)."""
        return self.date is not None and self.date.ever_set


def _stale(date: RecipientDate, as_of: datetime | None, action: str) -> bool:
    """Whether the call is older than what the date already holds (then it changes nothing)."""
    if as_of is None or date.as_of is None or as_of >= date.as_of:
        return False
    log.info(
        "date series call ignored as stale: %s of %s %s for %s as of %s, the date is as of %s",
        action,
        date.series_id,
        date.key,
        date.user_id,
        as_of.isoformat(),
        date.as_of.isoformat(),
    )
    return True


def step_context(context: dict[str, Any], at: datetime, step: int) -> dict[str, Any]:
    """What a step's templates see: the date's context, the date (ISO 8601) and the step."""
    return {**context, "series_date": at.isoformat(), "series_step": step}


def recipient_date_set(
    *,
    user_id: UserKey,
    series: DateSeries,
    key: str,
    at: datetime,
    context: dict[str, Any],
    as_of: datetime | None = None,
    now: datetime | None = None,
) -> DateChange:
    """Set (or move) the person's date: its pending steps move with it; not applied when
    `as_of` is older than the date's. Trusts its input (notifier.api.date_set checks it)."""
    now = now or timezone.now()
    with transaction.atomic():
        RecipientDate.objects.get_or_create(
            user_id=user_id,
            series=series,
            key=key,
            defaults={"at": at, "context": context, "created_at": now, "updated_at": now},
        )
        date = RecipientDate.objects.select_for_update().get(
            user_id=user_id, series=series, key=key
        )
        if _stale(date, as_of, "set"):
            return DateChange(date, applied=False)
        if as_of is not None and as_of == date.as_of and date.state != DateState.ACTIVE:
            # A tie: the clear or exit made at the same moment wins (a caller's calls from one
            # transaction share its clock), so a redelivered set cannot bring the date back.
            log.info("date series set ignored: the %s as of %s stands", date.state, as_of)
            return DateChange(date, applied=False)
        if (
            date.version
            and date.state in (DateState.ACTIVE, DateState.EXITED)
            and date.at == at
            and date.context == context
        ):
            # The same call again (a retry, a host re-syncing its dates): nothing moves, and
            # a date the person acted on stays exited. A removed one is set afresh.
            if as_of is not None and as_of != date.as_of:
                date.as_of = as_of
                date.save(update_fields=["as_of"])
            return DateChange(date, applied=True)
        if date.version:
            _cancel_steps(date, Reason.SERIES_MOVED, "its date moved", now)
        date.version += 1
        date.at, date.context = at, context
        date.state, date.state_note = DateState.ACTIVE, ""
        date.plan = _write_steps(date, series, now)
        date.as_of = as_of if as_of is not None else date.as_of
        date.updated_at = now
        date.save()
    return DateChange(date, applied=True)


def _write_steps(date: RecipientDate, series: DateSeries, now: datetime) -> list[dict[str, Any]]:
    info = type_info_get(series.type_id)
    assert info is not None  # the API checked the series' type
    zone = (
        Recipient.objects.filter(user_id=date.user_id).values_list("time_zone", flat=True).first()
    )
    times = step_times(date.at, series.steps, zone or "UTC", now)
    rows = [
        NewMessage(
            user_id=date.user_id,
            type_key=info.key,
            context=step_context(date.context, date.at, step.step),
            channels=[],
            lane=info.lane,
            idempotency_key=f"{date.cancel_key}:{step.step}",
            priority=info.priority,
            not_before=step.at,
            cancel_key=date.cancel_key,
        )
        for step in times
        if not step.past
    ]
    written = iter(messages_create(rows=rows).messages)
    return [
        {"step": step.step, "at": step.at.isoformat(), "skipped": "past"}
        if step.past
        else {"step": step.step, "at": step.at.isoformat(), "message": next(written).pk}
        for step in times
    ]


def _cancel_steps(date: RecipientDate, reason: Reason, why: str, now: datetime) -> int:
    report = messages_cancel_because(
        cancel_key=date.cancel_key,
        reason=reason,
        words=f"not sent: {why} ({date.series_id} {date.key})",
        detail={"action": why, "series": date.series_id, "key": date.key},
        now=now,
    )
    return report.cancelled


def _locked(user_id: UserKey, series_key: str, key: str) -> RecipientDate | None:
    return (
        RecipientDate.objects.select_for_update()
        .filter(user_id=user_id, series_id=series_key, key=key)
        .first()
    )


def recipient_date_clear(
    *,
    user_id: UserKey,
    series_key: str,
    key: str,
    as_of: datetime | None = None,
    now: datetime | None = None,
) -> DateChange:
    """Remove the person's date: what has not gone out of its steps is cancelled. No date:
    not an error (removing twice is the same as once); with `as_of`, a tombstone is left so
    that an older set arriving later is ignored."""
    return _stop(user_id, series_key, key, DateState.REMOVED, "", as_of, now)


def recipient_date_exit(
    *,
    user_id: UserKey,
    series_key: str,
    key: str,
    note: str,
    as_of: datetime | None = None,
    now: datetime | None = None,
) -> DateChange:
    """The person acted (renewed, converted): the rest of the date's steps are cancelled.
    Setting the date again starts its steps afresh (unless that set is older than `as_of`)."""
    return _stop(user_id, series_key, key, DateState.EXITED, note, as_of, now)


def _stop(
    user_id: UserKey,
    series_key: str,
    key: str,
    state: DateState,
    note: str,
    as_of: datetime | None,
    now: datetime | None,
) -> DateChange:
    now = now or timezone.now()
    reason, why = (
        (Reason.SERIES_REMOVED, "its date was removed")
        if state == DateState.REMOVED
        else (Reason.SERIES_EXITED, f"the person acted ({note})" if note else "the person acted")
    )
    with transaction.atomic():
        date = _locked(user_id, series_key, key)
        if date is None:
            if as_of is None or not _may_hold_dates(user_id):
                return DateChange(None, applied=True)
            # Ahead of the date's set (which may be a task still on its way): a tombstone,
            # version 0, for that set to find older than this call.
            tombstone, created = RecipientDate.objects.get_or_create(
                user_id=user_id,
                series_id=series_key,
                key=key,
                defaults={
                    "at": as_of,
                    "context": {},
                    "state": state,
                    "state_note": note,
                    "plan": [],
                    "as_of": as_of,
                    "created_at": now,
                    "updated_at": now,
                },
            )
            if created:
                return DateChange(tombstone, applied=True)
            date = _locked(user_id, series_key, key)  # a set made it meanwhile
            assert date is not None
        if _stale(date, as_of, "clear" if state == DateState.REMOVED else "exit"):
            return DateChange(date, applied=False)
        newer = as_of is not None and as_of != date.as_of
        if date.state == state and not newer:
            return DateChange(date, applied=True)
        if date.state != state:
            if date.ever_set:
                _cancel_steps(date, reason, why, now)
            date.state, date.state_note = state, note
        if as_of is not None:
            date.as_of = as_of
        date.updated_at = now
        date.save(update_fields=["state", "state_note", "as_of", "updated_at"])
    return DateChange(date, applied=True)


def _may_hold_dates(user_id: UserKey) -> bool:
    """Whether a tombstone may be written for this person: they exist and were not erased."""
    return (
        get_user_model().objects.filter(pk=user_id).exists()
        and not Recipient.objects.filter(user_id=user_id, erased_at__isnull=False).exists()
    )


def recipient_dates_of(*, user_id: UserKey) -> list[RecipientDate]:
    """The person's dates, soonest first (support's customer page, the API); never a
    tombstone (a date cleared or exited with as_of before it was ever set)."""
    return list(
        RecipientDate.objects.filter(user_id=user_id, version__gt=0)
        .select_related("series")
        .order_by("at", "pk")
    )


def steps_archived(dates: list[RecipientDate]) -> set[int]:
    """The message ids of these dates' steps that are no longer in the log: retention
    archived them (a step's message is never deleted otherwise). One query."""
    ids = {step["message"] for date in dates for step in date.plan if step.get("message")}
    return ids - set(Message.objects.filter(pk__in=ids).values_list("pk", flat=True))


@dataclass(frozen=True)
class SeriesStop:
    reason: Reason
    note: str


def series_steps_stopped(waiting: dict[int, str]) -> dict[int, SeriesStop]:
    """Of the series steps coming up (message id -> its cancel key), those not to send: their
    date was moved, removed or exited meanwhile, or an earlier step of the same date was
    clicked (or seen, per the series' exit_on). Read by the release job, under its message
    locks; a date found clicked is marked exited if its row is free this instant (skip_locked:
    never waiting on a move that waits on these messages)."""
    parsed: dict[int, tuple[int, int]] = {}
    for message_id, cancel_key in waiting.items():
        date_text, _, version_text = cancel_key.removeprefix(SERIES_KEY_PREFIX).partition(":")
        if date_text.isdigit() and version_text.isdigit():
            parsed[message_id] = (int(date_text), int(version_text))
    if not parsed:
        return {}
    dates = {
        row[0]: row
        for row in RecipientDate.objects.filter(
            pk__in={date_id for date_id, _ in parsed.values()}
        ).values_list("pk", "version", "state", "series__exit_on")
    }
    keys = {series_cancel_key(*pair) for pair in parsed.values()}
    acted: dict[str, set[str]] = {}
    for acted_key, status in (
        Delivery.objects.filter(message__cancel_key__in=keys, status__in=(*SEEN, *CLICKED))
        .values_list("message__cancel_key", "status")
        .distinct()
    ):
        acted.setdefault(acted_key or "", set()).add(status)
    stopped: dict[int, SeriesStop] = {}
    clicked_dates: dict[int, str] = {}
    for message_id, (date_id, version) in parsed.items():
        row = dates.get(date_id)
        if row is None:
            continue  # erased with its person: the erasure deals with their messages
        _, current, state, exit_on = row
        if state == DateState.REMOVED:
            stopped[message_id] = SeriesStop(Reason.SERIES_REMOVED, "its date was removed")
        elif state == DateState.EXITED:
            stopped[message_id] = SeriesStop(Reason.SERIES_EXITED, "the person acted")
        elif current != version:
            stopped[message_id] = SeriesStop(Reason.SERIES_MOVED, "its date moved")
        else:
            statuses = acted.get(series_cancel_key(date_id, version), set())
            clicked = bool(statuses & set(CLICKED))
            if series_exits(exit_on, seen=bool(statuses & set(SEEN)), clicked=clicked):
                note = "clicked an earlier reminder" if clicked else "read an earlier reminder"
                stopped[message_id] = SeriesStop(Reason.SERIES_EXITED, note)
                clicked_dates[date_id] = note
    for date_id, note in clicked_dates.items():
        free = (
            RecipientDate.objects.select_for_update(skip_locked=True)
            .filter(pk=date_id, state=DateState.ACTIVE)
            .values_list("pk", flat=True)
        )
        RecipientDate.objects.filter(pk__in=list(free)).update(
            state=DateState.EXITED, state_note=note, updated_at=timezone.now()
        )
    return stopped
