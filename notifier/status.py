"""The delivery state machine: every status, every allowed move, and why a delivery did not go.

Only `notifier.services.transitions` writes a delivery's status or its event rows; it checks
every move against ALLOWED_MOVES here when it is asked to make it (a bulk move by the statuses
it moves from and to), and tests/test_status_writers.py fails if anything else writes either.
Callbacks and tracking only ever move a delivery forward along ENGAGEMENT_RANK, so a late or
duplicated "delivered" never undoes "clicked".
"""

from __future__ import annotations

from django.db import models


class DeliveryStatus(models.TextChoices):
    PENDING = "pending", "Pending"  # written, not yet routed
    HELD = "held", "Held"  # waiting to be released (quiet hours, backpressure, caps)
    QUEUED = "queued", "Queued"  # due at next_attempt_at; a deliver task is on its way
    SENDING = "sending", "Sending"  # claimed by one worker, provider call in progress
    SENT = "sent", "Sent"  # the provider accepted it
    DELIVERED = "delivered", "Delivered"  # the provider confirmed delivery
    OPENED = "opened", "Opened"  # email opened, push opened
    READ = "read", "Read"  # in-app item read
    CLICKED = "clicked", "Clicked"
    FAILED = "failed", "Failed"
    SUPPRESSED = "suppressed", "Suppressed"  # decided not to send; see reason
    CANCELLED = "cancelled", "Cancelled"


S = DeliveryStatus

ALLOWED_MOVES: dict[DeliveryStatus, frozenset[DeliveryStatus]] = {
    # pending -> failed: the template could not be rendered for this user, the message could
    # not be read, or preparing it kept stopping the worker.
    S.PENDING: frozenset({S.HELD, S.QUEUED, S.SUPPRESSED, S.CANCELLED, S.FAILED}),
    S.HELD: frozenset({S.QUEUED, S.SUPPRESSED, S.CANCELLED}),
    S.QUEUED: frozenset({S.SENDING, S.HELD, S.SUPPRESSED, S.CANCELLED, S.FAILED}),
    # sending -> queued: a transient failure scheduled for retry, or an expired claim.
    S.SENDING: frozenset({S.SENT, S.QUEUED, S.FAILED}),
    # sent -> failed: the provider reports a bounce or an undeliverable message afterwards.
    S.SENT: frozenset({S.DELIVERED, S.OPENED, S.READ, S.CLICKED, S.FAILED}),
    S.DELIVERED: frozenset({S.OPENED, S.READ, S.CLICKED}),
    S.OPENED: frozenset({S.READ, S.CLICKED}),
    S.READ: frozenset({S.CLICKED}),
    S.CLICKED: frozenset(),
    S.FAILED: frozenset({S.QUEUED}),  # an operator's "retry now"
    S.SUPPRESSED: frozenset(),
    S.CANCELLED: frozenset(),
}

# Where the sending pipeline is done with a delivery: exactly one of these per (message, channel).
TERMINAL: frozenset[DeliveryStatus] = frozenset(
    {S.SENT, S.DELIVERED, S.OPENED, S.READ, S.CLICKED, S.FAILED, S.SUPPRESSED, S.CANCELLED}
)
NOT_SENT: frozenset[DeliveryStatus] = frozenset({S.FAILED, S.SUPPRESSED, S.CANCELLED, S.HELD})
IN_FLIGHT: frozenset[DeliveryStatus] = frozenset({S.PENDING, S.QUEUED, S.SENDING})

# Provider callbacks and tracking move forward only along this order.
ENGAGEMENT_RANK: dict[DeliveryStatus, int] = {
    S.SENT: 0,
    S.DELIVERED: 1,
    S.OPENED: 2,
    S.READ: 2,
    S.CLICKED: 3,
}


class IllegalMove(ValueError):
    """A status change that the state machine does not allow."""


def can_move(current: DeliveryStatus | str, target: DeliveryStatus | str) -> bool:
    return DeliveryStatus(target) in ALLOWED_MOVES[DeliveryStatus(current)]


def check_move(current: DeliveryStatus | str, target: DeliveryStatus | str) -> None:
    if not can_move(current, target):
        raise IllegalMove(f"a delivery cannot move from {current} to {target}")


def sources_of(target: DeliveryStatus) -> frozenset[DeliveryStatus]:
    """Every status from which `target` may be reached: the WHERE of a compare-and-set."""
    return frozenset(source for source, targets in ALLOWED_MOVES.items() if target in targets)


class Reason(models.TextChoices):
    """Why a delivery is not (yet) sent, or why it failed. Labels are read by support staff."""

    CHANNEL_NOT_ALLOWED = "channel_not_allowed", "The notification type no longer uses this channel"
    TYPE_INACTIVE = "type_inactive", "The notification type was switched off"
    USER_INACTIVE = "user_inactive", "The user's account is inactive"
    RECIPIENT_ERASED = "recipient_erased", "The person's data was erased at their request"
    NO_EMAIL_ADDRESS = "no_email_address", "No email address on file"
    NO_PHONE_NUMBER = "no_phone_number", "No phone number on file"
    INVALID_PHONE_NUMBER = "invalid_phone_number", "The phone number on file is not valid"
    NO_ACTIVE_DEVICE = "no_active_device", "No active push device"
    OPTED_OUT = "opted_out", "The user switched this category off for this channel"
    NO_CONSENT = "no_consent", "No marketing consent on record for this channel"
    MARKETING_OFF = "marketing_off", "The user chose to receive no marketing"
    QUIET_HOURS = "quiet_hours", "Held for the user's quiet hours; released in their morning"
    QUIET_HOURS_ALLOWED = (
        "quiet_hours_allowed",
        "Sent in the user's quiet hours: a marketing lead allowed it for this campaign",
    )
    FREQUENCY_CAP = "frequency_cap", "Over the user's marketing cap; deferred to the next window"
    OUTRANKED = "outranked", "A higher-priority message took the user's cap slot; deferred"
    STALE = "stale", "Would have gone out too late to be useful"
    BACKPRESSURE = "backpressure", "Held while the bulk queues were too deep; released later"
    SCHEDULED = "scheduled", "Scheduled: held until its send time"
    CAMPAIGN_PAUSED = "campaign_paused", "Held while its campaign is paused"
    MISSED = "missed", "Its moment passed (campaign paused or late); not sent late"
    EVENT_MOVED = "event_moved", "Its campaign's event moved and this step no longer fits"
    SERIES_STOPPED = (
        "series_stopped",
        "The customer converted or clicked; the rest of the campaign's series is not sent",
    )
    CIRCUIT_OPEN = "circuit_open", "The provider is failing; waiting for it to recover"
    RENDER_FAILED = "render_failed", "The template could not be rendered"
    RENDER_TIMEOUT = "render_timeout", "Rendering took too long and was stopped"
    UNREADABLE = "unreadable", "The message could not be read from the database"
    PREPARE_CRASHED = (
        "prepare_crashed",
        "Preparing it stopped the worker again and again; set aside",
    )
    INVALID_RECIPIENT = "invalid_recipient", "The provider rejected the address or number"
    ADDRESS_SUPPRESSED = (
        "address_suppressed",
        "The address bounced or complained; suppressed",
    )
    UNDELIVERED = "undelivered", "The provider could not deliver it to the handset or mailbox"
    DEVICE_UNREGISTERED = "device_unregistered", "The push token is no longer registered"
    PROVIDER_REJECTED = "provider_rejected", "The provider refused the message"
    PROVIDER_NOT_CONFIGURED = "provider_not_configured", "No provider is configured for this"
    RETRIES_EXHAUSTED = "retries_exhausted", "Every retry failed with a temporary error"
    RETRY_SCHEDULED = "retry_scheduled", "A temporary error; a retry is scheduled"
    CLAIM_EXPIRED = "claim_expired", "A worker stopped mid-send; the delivery was re-queued"
    CANCELLED = "cancelled", "Cancelled"
    SENDER_CANCELLED = (
        "sender_cancelled",
        "The sender cancelled it (its cancel key) before it went out",
    )
    SNOOZED = (
        "snoozed",
        "The person snoozed this kind of message: it reached their inbox only",
    )
    TOPIC_SNOOZED = (
        "topic_snoozed",
        "The person snoozed the topic it was sent to: it reached their inbox only",
    )
    ESCALATION_WAIT = (
        "escalation_wait",
        "Waiting: it goes only if the first channel's message is not read by then",
    )
    ESCALATION_STOPPED = (
        "escalation_stopped",
        "Not needed: the person read, opened or clicked the message before this step",
    )
    THROTTLED = (
        "throttled",
        "Its type allows only so many per key in a while, and they went out already",
    )
    SERIES_MOVED = (
        "series_moved",
        "Its date moved: this reminder was replaced by those of the new date",
    )
    SERIES_REMOVED = (
        "series_removed",
        "Its date was removed: the reminders still to come were cancelled",
    )
    SERIES_EXITED = (
        "series_exited",
        "The person acted (renewed, converted or clicked): the rest of the reminders stop",
    )
    SUPPORT_CANCELLED = (
        "support_cancelled",
        "Support cancelled it before it went out (see the support log)",
    )
