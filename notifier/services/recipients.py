"""People addressed by the product's own id (`Recipient.external_id`): create or update their
contact points, time zone, locale, quiet hours and segment attributes in one idempotent call.

A recipient is always a profile of a user of the site's user model (every per-person table is
keyed by it). A recipient linked to a host user (`user=` the user's key) is that user's
profile; an external id the site has never seen gets its user from
`NOTIFIER_RECIPIENT_USER_FACTORY` (the stand-alone site makes one of its own people, with no
password; a host project names its own function, or leaves it unset and links users itself).

Everything is checked before anything is written (`RecipientError`, a message saying what to
fix); the write is one transaction.
"""

from __future__ import annotations

import contextlib
import hashlib
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import datetime, time
from decimal import Decimal, InvalidOperation
from typing import Any

from django.conf import settings
from django.contrib.auth import get_user_model
from django.core.exceptions import ValidationError
from django.core.validators import validate_email
from django.db import IntegrityError, transaction
from django.utils.module_loading import import_string

from notifier.errors import RecipientErased
from notifier.models import MarketingFrequency, Recipient, recipient_for
from notifier.models.users import normalize_phone, validate_time_zone
from notifier.services.erasure import erasure_check
from notifier.user_keys import UserKey, user_key

MAX_EXTERNAL_ID = 255  # Recipient.external_id
MAX_LOCALE = 16  # Recipient.locale
MAX_EMAIL = 254  # Recipient.email (EmailField), as RFC 5321 allows
MAX_TAGS = 100
MAX_TAG_LENGTH = 100
EXTERNAL_ID_RULE = (
    f"external_id must be your own id for the person: 1 to {MAX_EXTERNAL_ID} printable "
    "characters, no slash, without leading or trailing spaces"
)
LOCALE_RE = re.compile(r"^[A-Za-z]{2,3}([-_][A-Za-z0-9]{2,8})*$")

# What `recipient_put` may set, as the profile's field names.
PROFILE_FIELDS = (
    "email",
    "phone",
    "time_zone",
    "locale",
    "quiet_hours_enabled",
    "quiet_hours_start",
    "quiet_hours_end",
    "marketing_frequency",
    "yearly_spend",
    "last_active_at",
    "interest_tags",
    "points_balance",
    "points_expire_at",
)


class RecipientError(ValueError):
    """Bad input for a recipient; the message says what to send instead."""


class UnknownRecipient(RecipientError):
    """No recipient has this external id."""


class RecipientNeedsUser(RecipientError):
    """A new external id on a site that does not make users for them."""


class RecipientConflict(RecipientError):
    """The external id and the user given belong to two different recipients."""


@dataclass(frozen=True, slots=True)
class Saved:
    recipient: Recipient
    created: bool  # a recipient new to this external id
    changed: bool  # anything written at all


# --- check_*: validation at the edge --------------------------------------------------------


def check_external_id(value: object) -> str:
    if (
        not isinstance(value, str)
        or not value.strip()
        or value != value.strip()
        or len(value) > MAX_EXTERNAL_ID
        or any(ord(char) < 32 or ord(char) == 127 or char == "/" for char in value)
    ):
        raise RecipientError(f"{EXTERNAL_ID_RULE}, got {str(value)[:80]!r}")
    return value


def _check_email(value: object) -> str:
    if value is None or value == "":
        return ""
    if not isinstance(value, str):
        raise RecipientError(f"email must be an address or empty, got {value!r}")
    if len(value) > MAX_EMAIL:
        raise RecipientError(
            f"email is {len(value)} characters; an address has at most {MAX_EMAIL}"
        )
    try:
        validate_email(value)
    except ValidationError:
        raise RecipientError(f"{value[:80]!r} is not an email address") from None
    return value


def _check_phone(value: object) -> str:
    if value is None or value == "":
        return ""
    if not isinstance(value, str) or len(value) > 40:
        raise RecipientError(f"phone must be a phone number such as +8613800138000, got {value!r}")
    try:
        return normalize_phone(value)
    except ValidationError:
        raise RecipientError(
            f"{value!r} is not a valid phone number; send it in E.164, e.g. +8613800138000"
        ) from None


def _check_time_zone(value: object) -> str:
    if not isinstance(value, str) or not value:
        raise RecipientError(f"time_zone must be an IANA name such as Asia/Shanghai, got {value!r}")
    try:
        validate_time_zone(value)
    except ValidationError:
        raise RecipientError(
            f"{value[:64]!r} is not an IANA time zone, e.g. Asia/Shanghai"
        ) from None
    return value


def _check_locale(value: object) -> str:
    if not isinstance(value, str) or len(value) > MAX_LOCALE or not LOCALE_RE.match(value):
        raise RecipientError(f"locale must be a language tag such as en or zh-hans, got {value!r}")
    return value.lower().replace("_", "-")


def _check_time(name: str, value: object) -> time | None:
    if value is None or isinstance(value, time):
        return value
    if isinstance(value, str):
        try:
            return time.fromisoformat(value)
        except ValueError:
            pass
    raise RecipientError(f"{name} must be a local time such as 22:00, or null, got {value!r}")


def _check_datetime(name: str, value: object) -> datetime | None:
    if value is None:
        return None
    if isinstance(value, str):
        with contextlib.suppress(ValueError):
            value = datetime.fromisoformat(value)
    if not isinstance(value, datetime) or value.tzinfo is None:
        raise RecipientError(
            f"{name} must be a date and time with its zone, e.g. 2026-12-24T20:00:00+08:00, "
            f"or null, got {value!r}"
        )
    return value


def _check_count(name: str, value: object) -> int:
    if not isinstance(value, int) or isinstance(value, bool) or not 0 <= value < 2**31:
        raise RecipientError(f"{name} must be a whole number from 0, got {value!r}")
    return value


def _check_spend(value: object) -> Decimal:
    if isinstance(value, bool) or not isinstance(value, int | float | str | Decimal):
        raise RecipientError(f"yearly_spend must be an amount such as 1299.50, got {value!r}")
    try:
        amount = Decimal(str(value))
    except InvalidOperation:
        raise RecipientError(
            f"yearly_spend must be an amount such as 1299.50, got {value!r}"
        ) from None
    if not amount.is_finite() or amount < 0 or amount >= Decimal("1e10"):
        raise RecipientError(f"yearly_spend must be from 0 to 9999999999.99, got {value!r}")
    return amount.quantize(Decimal("0.01"))


def _check_tags(value: object) -> list[str]:
    if (
        not isinstance(value, list)
        or len(value) > MAX_TAGS
        or not all(isinstance(t, str) and 0 < len(t) <= MAX_TAG_LENGTH for t in value)
    ):
        raise RecipientError(
            f"interest_tags must be a list of at most {MAX_TAGS} words such as "
            f'["shoes", "running"], got {str(value)[:80]}'
        )
    return list(dict.fromkeys(value))


def _check_frequency(value: object) -> str:
    if not isinstance(value, str) or value not in MarketingFrequency.values:
        raise RecipientError(
            f"marketing_frequency must be one of {', '.join(MarketingFrequency.values)}, "
            f"got {value!r}"
        )
    return value


def _check_bool(name: str, value: object) -> bool:
    if not isinstance(value, bool):
        raise RecipientError(f"{name} must be true or false, got {value!r}")
    return value


CHECKS: dict[str, Callable[[object], Any]] = {
    "email": _check_email,
    "phone": _check_phone,
    "time_zone": _check_time_zone,
    "locale": _check_locale,
    "quiet_hours_enabled": lambda v: _check_bool("quiet_hours.enabled", v),
    "quiet_hours_start": lambda v: _check_time("quiet_hours.start", v),
    "quiet_hours_end": lambda v: _check_time("quiet_hours.end", v),
    "marketing_frequency": _check_frequency,
    "yearly_spend": _check_spend,
    "last_active_at": lambda v: _check_datetime("last_active_at", v),
    "interest_tags": _check_tags,
    "points_balance": lambda v: _check_count("points_balance", v),
    "points_expire_at": lambda v: _check_datetime("points_expire_at", v),
}


def check_fields(fields: Mapping[str, object]) -> dict[str, Any]:
    """The profile fields to set, each checked and in the form the profile stores."""
    unknown = sorted(set(fields) - set(PROFILE_FIELDS))
    if unknown:
        raise RecipientError(
            f"{unknown[0]!r} is not a recipient field; use {', '.join(PROFILE_FIELDS)}"
        )
    checked = {name: CHECKS[name](value) for name, value in fields.items()}
    bounds = ("quiet_hours_start", "quiet_hours_end")
    given = [checked[name] for name in bounds if name in checked]
    if len(given) == 1 or (len(given) == 2 and (given[0] is None) != (given[1] is None)):
        raise RecipientError("quiet_hours needs both start and end, or neither (the site default)")
    return checked


# --- Reading ---------------------------------------------------------------------------------


def recipient_get(external_id: object) -> Recipient:
    """The recipient with this external id, or UnknownRecipient."""
    found = Recipient.objects.filter(external_id=check_external_id(external_id)).first()
    if found is None:
        raise UnknownRecipient(
            f"no recipient has external_id {str(external_id)[:80]!r}; create them with "
            "PUT /recipients/{external_id}"
        )
    return found


# --- Writing ----------------------------------------------------------------------------------


def _linked(external_id: str, user: UserKey) -> Recipient:
    """The profile of the user with this key, given this external id (locked for the call)."""
    model = get_user_model()
    owner = model._default_manager.filter(pk=user).first()
    if owner is None:
        raise RecipientError(f"no user has the key {user!r}")
    profile = recipient_for(owner)
    profile = Recipient.objects.select_for_update().get(pk=profile.pk)
    if profile.external_id not in (None, external_id):
        raise RecipientConflict(
            f"user {user!r} is already the recipient {profile.external_id!r}; one person has "
            "one external_id"
        )
    return profile


def _made(external_id: str) -> Recipient:
    """A new person for this external id, from NOTIFIER_RECIPIENT_USER_FACTORY."""
    path = settings.NOTIFIER_RECIPIENT_USER_FACTORY
    if not path:
        raise RecipientNeedsUser(
            f"no recipient has external_id {external_id[:80]!r}, and this site keeps people in "
            "its own user model: send `user` with the key of your product's user to link them "
            "(or set NOTIFIER_RECIPIENT_USER_FACTORY)"
        )
    factory: Callable[[str], Any] = import_string(path)
    owner = factory(external_id)
    profile = recipient_for(owner)
    return Recipient.objects.select_for_update().get(pk=profile.pk)


def recipient_put(
    external_id: object, fields: Mapping[str, object], *, user: object = None
) -> Saved:
    """Create or update the recipient `external_id`: the fields given are set, the others
    kept. Calling it again with the same input writes nothing. With `user`, the recipient is
    that user's profile (linked now if it was not)."""
    external = check_external_id(external_id)
    checked = check_fields(fields)
    link = None
    if user is not None:
        link = user_key(user)
        if link is None:
            raise RecipientError(f"user must be the key (pk) of one of your users, got {user!r}")
    try:
        with transaction.atomic():
            return _put(external, checked, link)
    except IntegrityError:
        # Two calls made the same new recipient at once: the loser's transaction is gone;
        # the winner's row is there now, so this one is an update.
        with transaction.atomic():
            return _put(external, checked, link)


def _put(external: str, checked: dict[str, Any], link: UserKey | None) -> Saved:
    profile = Recipient.objects.select_for_update().filter(external_id=external).first()
    created = profile is None
    if profile is not None and link is not None and profile.user_id != link:
        raise RecipientConflict(
            f"external_id {external[:80]!r} is another user's recipient; one person has one "
            "external_id"
        )
    if profile is None:
        # A new external id: not one of an erased person's (notifier.services.erasure), nor
        # the address or number sent with it, unless an admin lifted the suppression.
        erasure_check(
            external_id=external,
            email=checked.get("email") or None,
            phone=checked.get("phone") or None,
        )
        profile = _linked(external, link) if link is not None else _made(external)
        created = profile.external_id is None
    if profile.erased_at is not None:
        raise RecipientErased(
            f"user {profile.user_id!r} was erased at their request; erased people are not "
            "taken in again"
        )
    changed = {name: value for name, value in checked.items() if getattr(profile, name) != value}
    erasure_check(email=changed.get("email") or None, phone=changed.get("phone") or None)
    if profile.external_id != external:
        profile.external_id = external
        changed["external_id"] = external
    if changed:
        for name, value in changed.items():
            setattr(profile, name, value)
        try:  # the model's own checks, after ours: what one of ours missed is still a 4xx
            profile.full_clean(validate_unique=False, validate_constraints=False)
        except ValidationError as exc:
            raise RecipientError("; ".join(exc.messages)) from None
        profile.save(update_fields=[*changed, "updated_at"])
    return Saved(recipient=profile, created=created, changed=bool(changed))


def standalone_user(external_id: str) -> Any:
    """NOTIFIER_RECIPIENT_USER_FACTORY of the stand-alone site: one of its own people, who
    cannot log in (no password), named after the external id."""
    model = get_user_model()
    username = f"ext:{external_id}"
    if len(username) > 150:
        username = "ext:" + hashlib.sha256(external_id.encode()).hexdigest()
    user = model(username=username)
    user.set_unusable_password()
    user.save()
    return user
