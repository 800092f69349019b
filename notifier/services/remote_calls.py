"""`notify()` for another Python codebase on the same broker: the Celery task `notifier.notify`
takes its arguments as JSON carries them, checks them as the HTTP API does, and records a
refused call (`RefusedCall`, in the admin) where an operator sees it, since nobody is waiting
for an answer.

    app.send_task("notifier.notify", kwargs={
        "user": 42,                      # a user's key, or "recipient": "<external_id>"
        "type": "order.shipped",
        "context": {"order_number": "A-1001"},
        "idempotency_key": "order-A-1001-shipped",   # optional
        "channels": ["email"],           # optional
        "expires_at": "2026-12-24T20:00:00+08:00",   # optional, ISO 8601 with its zone
        "send_at": "2026-12-24T09:00:00+08:00",      # optional: hold it until then
        # or "send_at_local": "2026-12-24T09:00:00"   # 09:00 in the recipient's own zone
        "if_past": "refuse",             # optional: or "send_now" for a time already past
        "cancel_key": "order-A-1001",    # optional: notifier.cancel takes it back
    }, queue="transactional.prepare")

    app.send_task("notifier.cancel", kwargs={"cancel_key": "order-A-1001"},
                  queue="transactional.prepare")   # optional: "users" or "recipients"

    app.send_task("notifier.date_set", kwargs={   # a person's own date: reminders around it
        "user": 42, "series": "subscription.renewal", "key": "plan:42",
        "at": "2027-06-10T12:00:00+08:00", "context": {"plan": "Pro", "renews_on": "10 June"},
        "as_of": "2026-12-01T09:30:00+00:00",   # optional: when it changed in your system
    }, queue="transactional.prepare")   # notifier.date_clear / notifier.date_exit: the same
                                        # user/recipient, series and key (exit: and a reason)

Without an idempotency key, the task's id is the key: a task the broker delivers twice (a
worker lost mid-task) makes one message.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from datetime import datetime
from typing import Any

from django.utils import timezone

from notifier.api import (
    date_clear_change,
    date_exit_change,
    date_set_change,
    notify,
    notify_cancel,
    same_call,
)
from notifier.errors import (
    IdempotencyKeyReused,
    InvalidExpiry,
    InvalidRecipient,
    InvalidSchedule,
    InvalidSeriesDate,
    NotifyError,
)
from notifier.models import Recipient, RefusedCall
from notifier.services.recipients import RecipientError, check_external_id
from notifier.text import text_problem

log = logging.getLogger(__name__)

SOURCE = "celery task notifier.notify"
CANCEL_SOURCE = "celery task notifier.cancel"
ARGUMENTS = (
    "user",
    "recipient",
    "type",
    "context",
    "idempotency_key",
    "channels",
    "expires_at",
    "send_at",
    "send_at_local",
    "if_past",
    "cancel_key",
    "throttle_key",
    "digest_key",
)
CANCEL_ARGUMENTS = ("cancel_key", "users", "recipients")
DATE_ARGUMENTS = {
    "set": ("user", "recipient", "series", "key", "at", "context", "as_of"),
    "clear": ("user", "recipient", "series", "key", "as_of"),
    "exit": ("user", "recipient", "series", "key", "reason", "as_of"),
}
MAX_MESSAGE = 2000


class InvalidCall(NotifyError):
    """Arguments the task does not take, or a missing one."""


def _user(call: Mapping[str, Any]) -> Any:
    user, recipient = call.get("user"), call.get("recipient")
    if (user is None) == (recipient is None):
        raise InvalidRecipient("send either user (a user's key) or recipient (an external_id)")
    if recipient is None:
        return user
    if not isinstance(recipient, str):
        raise InvalidRecipient(f"recipient must be an external_id (text), got {recipient!r}")
    for user_id in Recipient.objects.filter(external_id=recipient).values_list(
        "user_id", flat=True
    ):
        return user_id
    raise InvalidRecipient(f"no recipient has external_id {recipient[:80]!r}")


def _moment(value: object, name: str, error: type[NotifyError], *, zoned: bool) -> Any:
    """A datetime as JSON carries it (ISO 8601 text), or the value as given for notify() to
    check: with its zone (`zoned`) or without."""
    if value is None or isinstance(value, datetime):
        return value
    if isinstance(value, str):
        try:
            return datetime.fromisoformat(value)
        except ValueError:
            pass
    example = "2026-12-24T20:00:00+08:00" if zoned else "2026-12-24T09:00:00"
    raise error(
        f"{name} must be ISO 8601 text {'with' if zoned else 'without'} its zone, e.g. "
        f"{example}, got {str(value)[:80]!r}"
    )


def _expires_at(value: object) -> datetime | None:
    moment: datetime | None = _moment(value, "expires_at", InvalidExpiry, zoned=True)
    return moment


def notify_call(
    call: Mapping[str, Any], *, caller: str, positional: tuple[Any, ...] = ()
) -> int | None:
    """The message id, or None when the call was refused (and recorded)."""
    type_key = call.get("type")
    try:
        if positional:
            raise InvalidCall(
                f"notifier.notify takes keyword arguments only ({', '.join(ARGUMENTS)}): send "
                "them as kwargs={...}, not args=[...]"
            )
        unknown = sorted(set(call) - set(ARGUMENTS))
        if unknown:
            raise InvalidCall(
                f"notifier.notify takes no argument {unknown[0]!r}; its arguments are "
                f"{', '.join(ARGUMENTS)} (as keyword arguments)"
            )
        if type_key is None:
            raise InvalidCall("type is required: a notification type's key, e.g. order.shipped")
        expires_at = _expires_at(call.get("expires_at"))
        send_at = _moment(call.get("send_at"), "send_at", InvalidSchedule, zoned=True)
        send_at_local = _moment(
            call.get("send_at_local"), "send_at_local", InvalidSchedule, zoned=False
        )
        message = notify(
            _user(call),
            type_key,
            call.get("context"),
            idempotency_key=call.get("idempotency_key") or (f"task:{caller}" if caller else None),
            channels=call.get("channels"),
            expires_at=expires_at,
            send_at=send_at,
            send_at_local=send_at_local,
            if_past=call.get("if_past", "refuse"),
            cancel_key=call.get("cancel_key"),
            throttle_key=call.get("throttle_key"),
            digest_key=call.get("digest_key"),
        )
        if call.get("idempotency_key") and not same_call(
            message,
            context=call.get("context"),
            channels=call.get("channels"),
            expires_at=expires_at,
            send_at=send_at,
            send_at_local=send_at_local,
            cancel_key=call.get("cancel_key"),
            throttle_key=call.get("throttle_key"),
            digest_key=call.get("digest_key"),
        ):
            raise IdempotencyKeyReused(
                f"idempotency_key {call['idempotency_key']!r} was used for another call; "
                "send a new key"
            )
    except NotifyError as exc:
        refusal_record(caller=caller, error=exc, type_key=type_key)
        return None
    return message.pk


def cancel_call(
    call: Mapping[str, Any], *, caller: str, positional: tuple[Any, ...] = ()
) -> dict[str, int] | None:
    """`notify_cancel` from another codebase: what it cancelled, or None when the call was
    refused (and recorded)."""
    try:
        if positional:
            raise InvalidCall(
                "notifier.cancel takes keyword arguments only (cancel_key, and users or "
                "recipients): send them as kwargs={...}"
            )
        unknown = sorted(set(call) - set(CANCEL_ARGUMENTS))
        if unknown:
            raise InvalidCall(
                f"notifier.cancel takes no argument {unknown[0]!r}; its arguments are "
                f"{', '.join(CANCEL_ARGUMENTS)} (as keyword arguments)"
            )
        report = notify_cancel(call.get("cancel_key", ""), users=_cancel_users(call))
    except NotifyError as exc:
        refusal_record(caller=caller, error=exc, type_key=None, source=CANCEL_SOURCE)
        return None
    return {"messages": report.messages, "cancelled": report.cancelled, "too_late": report.too_late}


def date_call(
    call: Mapping[str, Any], *, action: str, caller: str, positional: tuple[Any, ...] = ()
) -> dict[str, Any] | None:
    """`date_set`, `date_clear` or `date_exit` (`action`) from another codebase: the date's
    version (set) or whether there is such a date, and whether the call was `applied` (False:
    its `as_of` was older than the date's, whose state stands); None when refused (and
    recorded)."""
    task, arguments = f"notifier.date_{action}", DATE_ARGUMENTS[action]
    try:
        if positional:
            raise InvalidCall(f"{task} takes keyword arguments only: send them as kwargs={{...}}")
        unknown = sorted(set(call) - set(arguments))
        if unknown:
            raise InvalidCall(
                f"{task} takes no argument {unknown[0]!r}; its arguments are "
                f"{', '.join(arguments)} (as keyword arguments)"
            )
        user, series, key = _user(call), call.get("series", ""), call.get("key", "")
        as_of = _moment(call.get("as_of"), "as_of", InvalidSeriesDate, zoned=True)
        if action == "set":
            at = _moment(call.get("at"), "at", InvalidSeriesDate, zoned=True)
            if at is None:
                raise InvalidCall("at is required: the date, ISO 8601 with its zone")
            change = date_set_change(
                user, series, at, key=key, context=call.get("context"), as_of=as_of
            )
            assert change.date is not None  # a set always leaves its date
            return {"version": change.date.version, "applied": change.applied}
        if action == "clear":
            change = date_clear_change(user, series, key=key, as_of=as_of)
        else:
            reason = call.get("reason") or ""
            change = date_exit_change(user, series, key=key, reason=reason, as_of=as_of)
        return {"found": change.found, "applied": change.applied}
    except NotifyError as exc:
        refusal_record(caller=caller, error=exc, type_key=None, source=f"celery task {task}")
        return None


def _cancel_users(call: Mapping[str, Any]) -> list[Any] | None:
    users, recipients = call.get("users"), call.get("recipients")
    if users is not None and recipients is not None:
        raise InvalidRecipient(
            "send users (the users' keys) or recipients (external_ids), not both"
        )
    if recipients is None:
        return users
    if not isinstance(recipients, list) or not all(
        isinstance(r, str) and not text_problem(r) for r in recipients
    ):
        raise InvalidRecipient("recipients must be a list of external_ids (plain text)")
    for external_id in recipients:
        try:
            check_external_id(external_id)
        except RecipientError as exc:
            raise InvalidRecipient(str(exc)) from exc
    found = dict(
        Recipient.objects.filter(external_id__in=set(recipients)).values_list(
            "external_id", "user_id"
        )
    )
    return [found[r] for r in recipients if r in found]


def refusal_record(
    *, caller: str, error: Exception, type_key: object, source: str = SOURCE
) -> RefusedCall:
    """Keep a refused call for the operator, and log it (without the call's values)."""
    log.warning("refused %s from %s: %s", source, caller or "-", type(error).__name__)
    return RefusedCall.objects.create(
        at=timezone.now(),
        source=source,
        caller=caller[:255],
        error_type=type(error).__name__,
        message=str(error)[:MAX_MESSAGE],
        type_key=type_key[:100] if isinstance(type_key, str) else "",
    )
