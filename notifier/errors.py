"""The typed errors `notify()` raises for bad input; each message says what to fix."""

from __future__ import annotations


class NotifyError(Exception):
    """Base of the errors `notify()` and `notify_many()` raise for bad input; nothing is written.

    These are the only exceptions bad input raises, whatever the arguments are (wrong types,
    objects whose own methods raise or lie, generators that fail half-way): what the caller's
    own code raised is kept as the error's __cause__. The caller's transaction stays usable.
    """


class UnknownNotificationType(NotifyError):
    pass


class InactiveNotificationType(NotifyError):
    pass


class InvalidRecipient(NotifyError):
    """The user is missing, unsaved, deleted or inactive, or is not a User or an integer id."""


class RecipientErased(InvalidRecipient):
    """The person's data was erased at their request (notifier.services.erasure): nothing is
    sent to them, and their identifiers are not taken in again until an admin lifts the
    suppression."""


class InvalidContext(NotifyError):
    """The context is not a JSON object of plain JSON values, or is too large (64 KB as JSON),
    too deep (32 levels of dicts and lists), or holds an integer outside 64 bits."""


class MissingContextVariable(InvalidContext):
    def __init__(self, type_key: str, missing: list[str]) -> None:
        self.type_key = type_key
        self.missing = missing
        names = ", ".join(missing)
        super().__init__(
            f"context for {type_key!r} is missing {names}: its templates use "
            f"{'it' if len(missing) == 1 else 'them'}; pass "
            f"{'it' if len(missing) == 1 else 'them'} in context"
        )


class ChannelNotAllowed(NotifyError):
    pass


class InvalidExpiry(NotifyError):
    """expires_at is not an aware datetime, is past, or is more than ten years ahead."""


class InvalidSchedule(NotifyError):
    """send_at or send_at_local is not a datetime of the kind it must be, both are given, the
    time has passed (unless if_past="send_now"), it is more than ten years away, or the message
    would expire before it goes out."""


class InvalidIdempotencyKey(NotifyError):
    pass


class InvalidCancelKey(NotifyError):
    """cancel_key is not a non-empty text of at most 255 characters."""


class InvalidThrottleKey(NotifyError):
    """throttle_key is not a non-empty text of at most 255 characters."""


class InvalidDigestKey(NotifyError):
    """digest_key is not a non-empty text of at most 255 characters."""


class IdempotencyKeyReused(NotifyError):
    """The key already belongs to a message for another user or type."""


class InvalidTopic(NotifyError):
    """A topic key that is not a non-empty text of at most 255 characters."""


class UnknownDateSeries(NotifyError):
    """No date series by that key, or it is switched off (or its type is)."""


class InvalidSeriesDate(NotifyError):
    """A date series call's date, key or as_of is not what it must be: an aware datetime within
    ten years, a non-empty plain text key of at most 255 characters, an aware as_of at most a
    day ahead."""
