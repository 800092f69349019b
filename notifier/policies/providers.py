"""What a provider's event means for a delivery: pure decisions with the reason in words.

Email events arrive normalised by django-anymail (its `EventType` and `RejectReason` values);
Twilio reports `MessageStatus` and `ErrorCode`; people text keywords such as STOP. Each is
read here into an `EventAction`; `notifier.webhooks.events` carries it out.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from enum import StrEnum

from notifier.models.providers import SuppressionReason
from notifier.status import Reason


class ProviderStatus(StrEnum):
    """Statuses as providers report them, normalised (anymail, Twilio and FCM map onto these)."""

    DELIVERED = "delivered"
    OPENED = "opened"
    CLICKED = "clicked"
    BOUNCED = "bounced"
    REJECTED = "rejected"
    COMPLAINED = "complained"
    DEFERRED = "deferred"  # the provider will keep trying: a note on the timeline
    UNSUBSCRIBED = "unsubscribed"  # the recipient unsubscribed at the provider


P = ProviderStatus


@dataclass(frozen=True, slots=True)
class EventAction:
    """`status`: where the delivery should move (None: leave it); `suppress`: put the address
    on the suppression list; `unsubscribe`: the recipient unsubscribed at the provider."""

    why: str
    status: ProviderStatus | None = None
    failure_reason: Reason | None = None
    suppress: SuppressionReason | None = None
    unsubscribe: bool = False


NOTHING = "nothing to do: the delivery is already sent"

# anymail.signals.EventType values.
_EMAIL_MOVES: dict[str, EventAction] = {
    "delivered": EventAction("the mailbox accepted it", P.DELIVERED),
    "opened": EventAction("opened", P.OPENED),
    "clicked": EventAction("a link was clicked", P.CLICKED),
    "complained": EventAction(
        "spam complaint", P.COMPLAINED, suppress=SuppressionReason.COMPLAINED
    ),
    "deferred": EventAction("deferred: the ESP will keep trying", P.DEFERRED),
    "unsubscribed": EventAction("unsubscribed at the ESP", P.UNSUBSCRIBED, unsubscribe=True),
    "failed": EventAction("the ESP could not send it", P.REJECTED, Reason.PROVIDER_REJECTED),
}
# anymail.signals.RejectReason values that say the address itself is no good.
_REJECTS_SUPPRESSING: dict[str, SuppressionReason] = {
    "bounced": SuppressionReason.BOUNCED,  # the ESP's own list: it bounced before
    "invalid": SuppressionReason.INVALID,
}


HARD_BOUNCE_REASONS = frozenset({"", "bounced", "invalid"})


def email_event_action(
    event_type: str, reject_reason: str | None, *, soft_bounce: bool = False
) -> EventAction:
    """An anymail tracking event, read for one delivery.

    anymail's "bounced" also covers bounces that say nothing against the address (SendGrid's
    "blocked", Postmark's SoftBounce: `soft_bounce`): those fail the delivery but suppress
    nothing; only a hard bounce puts the address on the suppression list.
    """
    if event_type == "bounced":
        if soft_bounce or (reject_reason or "") not in HARD_BOUNCE_REASONS:
            return EventAction(
                f"bounced ({reject_reason or 'soft'}); the address stays",
                P.BOUNCED,
                Reason.UNDELIVERED,
            )
        return EventAction(
            "hard bounce", P.BOUNCED, Reason.INVALID_RECIPIENT, SuppressionReason.BOUNCED
        )
    if event_type == "rejected":
        suppress = _REJECTS_SUPPRESSING.get(reject_reason or "")
        if suppress is not None:
            return EventAction(
                f"rejected by the ESP ({reject_reason})",
                P.REJECTED,
                Reason.INVALID_RECIPIENT,
                suppress,
            )
        return EventAction(
            f"rejected by the ESP ({reject_reason or 'no reason given'})",
            P.REJECTED,
            Reason.PROVIDER_REJECTED,
        )
    return _EMAIL_MOVES.get(event_type, EventAction(f"{event_type}: {NOTHING}"))


# Twilio's MessageStatus values. https://www.twilio.com/docs/messaging/api/message-resource
_TWILIO_IN_PROGRESS = frozenset(
    {"accepted", "scheduled", "queued", "sending", "sent", "receiving", "received", "canceled"}
)


def sms_status_action(message_status: str, error_code: str) -> EventAction:
    """A Twilio status callback, read for one delivery."""
    status = message_status.strip().lower()
    if status == "delivered":
        return EventAction("the handset received it", P.DELIVERED)
    if status == "read":  # WhatsApp and RCS read receipts
        return EventAction("read", P.OPENED)
    if status in ("undelivered", "failed"):
        code = f" (Twilio error {error_code})" if error_code else ""
        reason = Reason.UNDELIVERED if status == "undelivered" else Reason.PROVIDER_REJECTED
        return EventAction(f"{status}{code}", P.REJECTED, reason)
    if status in _TWILIO_IN_PROGRESS:
        return EventAction(f"{status}: {NOTHING}")
    return EventAction(f"unknown status {message_status!r}: left alone")


class Keyword(StrEnum):
    STOP = "stop"
    START = "start"


# The opt-out and opt-in keywords carriers and Twilio's Advanced Opt-Out honour.
STOP_WORDS = frozenset(
    {"STOP", "STOPALL", "UNSUBSCRIBE", "CANCEL", "END", "QUIT", "OPTOUT", "REVOKE"}
)
# Twilio also takes YES as opt-in; here it is not, as a YES usually answers a question.
START_WORDS = frozenset({"START", "UNSTOP"})
_NOT_LETTERS = re.compile(r"[^A-Z]")


def sms_keyword(body: str) -> Keyword | None:
    """STOP or START when the whole message is one of their words, whatever the case, spaces
    or punctuation ("Stop.", " stop all "); None for any other text."""
    word = _NOT_LETTERS.sub("", body.upper())
    if word in STOP_WORDS:
        return Keyword.STOP
    if word in START_WORDS:
        return Keyword.START
    return None


def too_old(signed_at: datetime | None, *, now: datetime, max_age_s: int) -> bool:
    """A signed timestamp older than the allowed age (or from the future beyond the same
    margin): a captured request being replayed, not the provider calling."""
    if signed_at is None or max_age_s <= 0:
        return False
    return abs(now - signed_at) > timedelta(seconds=max_age_s)


# Mailgun signs its timestamp as the whole seconds since 1970 in ASCII digits.
_SIGNED_SECONDS = re.compile(r"[0-9]{1,11}")
# A provider reports when an event happened: before it calls us, and not far ahead of our clock.
EVENT_TIME_BEHIND = timedelta(days=365)
EVENT_TIME_AHEAD = timedelta(days=1)


def signed_timestamp(raw: object) -> datetime | None:
    """A signed Unix time in whole seconds as an aware datetime; None for anything else.

    float() would take "nan" (which compares as neither old nor new, so it passed as fresh),
    "inf" and "1e20" (which no datetime holds), and other scripts' digits.
    """
    if isinstance(raw, int) and not isinstance(raw, bool):
        raw = str(raw)
    if not isinstance(raw, str) or not _SIGNED_SECONDS.fullmatch(raw):
        return None
    return datetime.fromtimestamp(int(raw), tz=UTC)


def event_time_problem(occurred_at: datetime | None, *, now: datetime) -> str | None:
    """Why the time a provider gave for an event is not one a provider reports, in words (more
    than a year before now or a day after it); None when it is plausible or not given."""
    if occurred_at is None:
        return None
    if not now - EVENT_TIME_BEHIND <= occurred_at <= now + EVENT_TIME_AHEAD:
        return (
            f"happened at {occurred_at:%Y-%m-%d %H:%M:%S %z}: more than a year ago or a day "
            "from now"
        )
    return None
