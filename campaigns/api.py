"""The door for product code: `track_conversion()` counts a success (an order) for the funnel.

    from campaigns.api import track_conversion
    track_conversion(user, "purchase", value=Decimal("199.00"), reference=f"order:{order.pk}")

Bad input raises a `ConversionError` subclass whose message says what to fix, and writes
nothing. The conversion is written in the caller's transaction. With a `reference` (the
product's own id) the conversion counts once: calling again returns the first record unchanged.

Attribution, in this order (the first rule that finds something decides):

1. the user's campaign message most recently CLICKED within its campaign's attribution window
   before the conversion (clicked_at <= occurred_at <= clicked_at + attribution_hours);
2. else the one most recently OPENED or READ within its window (by opened_at);
3. else the one most recently SENT within its window (by sent_at; still sent, delivered,
   opened, read or clicked, so not one that bounced afterwards);
4. else, for a user held out of a campaign as its control group (`Holdout`), the campaign
   most recently started whose window, counted from its start (campaign.started_at), holds the
   conversion; `campaign` is set and `message` stays empty, so the funnel can compare the
   control group's conversions with the recipients';
5. else nothing: campaign and message stay empty.

Each campaign's own `attribution_hours` is its window. A marketer's test sends never count.
Deliveries on several channels of one message all count for that message; the newest
timestamp among them decides.
"""

from __future__ import annotations

import math
from datetime import datetime, timedelta
from decimal import ROUND_HALF_UP, Decimal, InvalidOperation

from django.contrib.auth import get_user_model
from django.utils import timezone

from campaigns.models import Conversion
from campaigns.services.tracking import conversion_record
from notifier.models import User
from notifier.user_keys import UserKey, user_key, user_key_kind

__all__ = [
    "ConversionError",
    "InvalidConversionName",
    "InvalidConversionTime",
    "InvalidConversionUser",
    "InvalidConversionValue",
    "InvalidReference",
    "track_conversion",
]

MAX_NAME_LENGTH = 100  # Conversion.name
MAX_REFERENCE_LENGTH = 200  # Conversion.reference
MAX_VALUE = Decimal("9999999999.99")  # Conversion.value: 12 digits, 2 after the point
CENT = Decimal("0.01")
# A conversion happened already; allow for clocks between hosts that disagree a little.
MAX_CLOCK_SKEW = timedelta(minutes=5)


class ConversionError(ValueError):
    """Bad input to `track_conversion()`; nothing was written."""


class InvalidConversionUser(ConversionError):
    """The user is missing, unsaved or deleted."""


class InvalidConversionName(ConversionError):
    pass


class InvalidConversionValue(ConversionError):
    """Not a number, negative, not finite, or too large."""


class InvalidConversionTime(ConversionError):
    """Not a timezone-aware datetime, or in the future."""


class InvalidReference(ConversionError):
    pass


# --- check_*: validation at the edge --------------------------------------------------------


def check_user(user: object) -> UserKey:
    if user is None:
        raise InvalidConversionUser("user is required: the User (or user id) who converted")
    if isinstance(user, get_user_model()):
        if user.pk is None:
            raise InvalidConversionUser("the user is not saved yet; save it before tracking it")
        user_id = user.pk
    elif (key := user_key(user)) is not None:
        user_id = key
    else:
        raise InvalidConversionUser(
            f"user must be a User or a user id ({user_key_kind()}), got {type(user).__name__}"
        )
    if not get_user_model()._default_manager.filter(pk=user_id).exists():
        raise InvalidConversionUser(f"no user with id {user_id}; it may have been deleted")
    return user_id


def check_name(name: object) -> str:
    if not isinstance(name, str) or not name.strip() or len(name) > MAX_NAME_LENGTH:
        raise InvalidConversionName(
            f"name must say what happened, such as 'purchase', in at most {MAX_NAME_LENGTH} "
            f"characters; got {name!r}"
        )
    return name


def check_value(value: object) -> Decimal:
    """A non-negative amount, rounded half up to cents."""
    if isinstance(value, bool) or not isinstance(value, (int, float, Decimal, str)):
        raise InvalidConversionValue(
            f"value must be a number such as Decimal('199.00'), got {type(value).__name__}"
        )
    if isinstance(value, float) and not math.isfinite(value):
        raise InvalidConversionValue(f"value must be a finite number, got {value}")
    try:
        amount = Decimal(str(value).strip()) if not isinstance(value, Decimal) else value
    except InvalidOperation:
        raise InvalidConversionValue(f"value must be a number, got {value!r}") from None
    if not amount.is_finite():
        raise InvalidConversionValue(f"value must be a finite number, got {value}")
    if amount < 0:
        raise InvalidConversionValue(f"value cannot be negative, got {value}; record refunds apart")
    amount = amount.quantize(CENT, rounding=ROUND_HALF_UP)
    if amount > MAX_VALUE:
        raise InvalidConversionValue(f"value {value} is too large; the most is {MAX_VALUE}")
    return amount


def check_reference(reference: object) -> str:
    if not isinstance(reference, str):
        raise InvalidReference(
            f"reference must be a string such as 'order:A1001', got {type(reference).__name__}"
        )
    if len(reference) > MAX_REFERENCE_LENGTH:
        raise InvalidReference(
            f"reference is {len(reference)} characters; keep it to {MAX_REFERENCE_LENGTH}"
        )
    return reference


def check_occurred_at(occurred_at: object, *, now: datetime) -> datetime:
    if occurred_at is None:
        return now
    if not isinstance(occurred_at, datetime) or timezone.is_naive(occurred_at):
        raise InvalidConversionTime(
            f"occurred_at must be a timezone-aware datetime, got {occurred_at!r}"
        )
    if occurred_at > now + MAX_CLOCK_SKEW:
        raise InvalidConversionTime(
            f"occurred_at {occurred_at.isoformat()} is in the future; pass when it happened"
        )
    return occurred_at


# --- The API --------------------------------------------------------------------------------


def track_conversion(
    user: User | int,
    name: str = "purchase",
    *,
    value: int | float | Decimal | str = 0,
    reference: str = "",
    occurred_at: datetime | None = None,
) -> Conversion:
    """Record a conversion and attribute it to a campaign message (see the module docstring).

    Returns the Conversion; with a reference already recorded for this user and name, the
    existing one, unchanged.
    """
    checked_name = check_name(name)
    amount = check_value(value)
    checked_reference = check_reference(reference)
    when = check_occurred_at(occurred_at, now=timezone.now())
    user_id = check_user(user)
    return conversion_record(
        user_id=user_id,
        name=checked_name,
        value=amount,
        reference=checked_reference,
        occurred_at=when,
    )
