"""A person's digest cadence: how often their digests come (immediately, hourly, daily or weekly
at their local time), for all the types that honour it or for one of them.

Global with per-type overrides, like the channel switches: most people think "one summary a
day, at nine" once, for everything that can wait, and a few want one type (comments on their
own posts) sooner. A row stores only a choice made (`DigestCadence`); no row means the type's
own window. Only types with `digest_cadence` on listen (notifier.services.digests), and never
for a transactional or critical message. A change applies to the next digest that opens: an
open one keeps the due time it opened with.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import time

from django.db import transaction

from notifier.models import DigestCadence, NotificationType
from notifier.policies.digests import DEFAULT_AT, DEFAULT_WEEKDAY, Cadence, never_digested
from notifier.selectors import type_info_get
from notifier.services.preferences import PreferenceError
from notifier.text import text_problem
from notifier.user_keys import UserKey

ALL_TYPES = ""  # the scope of a choice for every type that honours it
WEEKDAYS = ("monday", "tuesday", "wednesday", "thursday", "friday", "saturday", "sunday")


class CadenceError(PreferenceError):
    """A cadence that cannot be saved as given; the message says what to fix (a preference
    error: the preference centre's API answers 400 and the service API 422, like the rest)."""


@dataclass(frozen=True, slots=True)
class CadenceState:
    scope: str  # "" for all types, else a type key
    cadence: Cadence
    at: time
    weekday: int  # 0 Monday .. 6 Sunday

    def as_json(self) -> dict[str, object]:
        return {
            "type": self.scope or None,
            "cadence": str(self.cadence),
            "at": self.at.strftime("%H:%M"),
            "weekday": WEEKDAYS[self.weekday],
        }


# --- check_*: validation at the edge --------------------------------------------------------


def check_scope(scope: object) -> str:
    """ "" (or None) for all types, or the key of a type that honours the person's cadence."""
    if scope in (None, ALL_TYPES):
        return ALL_TYPES
    key = _scope_key(scope)
    info = type_info_get(key)
    if info is None:
        raise CadenceError(f"there is no notification type {key!r}")
    if not info.digest_cadence or never_digested(kind=info.kind, priority=info.priority):
        raise CadenceError(f"{info.key} does not come as a digest: it has no cadence to choose")
    return info.key


TYPE_KEY_LENGTH = 100  # NotificationType.key's max_length


def _scope_key(scope: object) -> str:
    """A type key as given: refused, not cut, when longer than a key can be (cut, a longer
    string starting with a real key would be taken for it)."""
    if not isinstance(scope, str) or text_problem(scope):
        raise CadenceError("type must be a notification type's key, or empty for all types")
    if len(scope) > TYPE_KEY_LENGTH:
        raise CadenceError(f"a type's key is at most {TYPE_KEY_LENGTH} characters")
    return scope


def check_cadence(cadence: object) -> Cadence:
    if isinstance(cadence, str) and cadence in Cadence.__members__.values():
        return Cadence(cadence)
    raise CadenceError(f"cadence is one of {', '.join(Cadence)}; got {str(cadence)[:40]!r}")


def check_at(at: object) -> time:
    """A local time of day as "HH:MM" (a `time` passes as it is)."""
    if isinstance(at, time):
        return at.replace(second=0, microsecond=0, tzinfo=None)
    if at in (None, ""):
        return DEFAULT_AT
    if isinstance(at, str) and len(at) == 5 and at[2] == ":":
        try:
            return time.fromisoformat(at)
        except ValueError:
            pass
    raise CadenceError(f'at is a local time of day such as "09:00"; got {str(at)[:40]!r}')


def check_weekday(weekday: object) -> int:
    """A weekday by name ("monday") or number (0 Monday .. 6 Sunday)."""
    if weekday in (None, ""):
        return DEFAULT_WEEKDAY
    if isinstance(weekday, str) and weekday.lower() in WEEKDAYS:
        return WEEKDAYS.index(weekday.lower())
    # A form's number: only these seven strings ("²".isdigit() is true, and int() refuses it).
    if isinstance(weekday, str) and len(weekday) == 1 and weekday in "0123456":
        return int(weekday)
    if type(weekday) is int and 0 <= weekday <= 6:
        return weekday
    raise CadenceError(f"weekday is one of {', '.join(WEEKDAYS)}; got {str(weekday)[:40]!r}")


# --- Writing and reading --------------------------------------------------------------------


def digest_cadence_set(
    *, user_id: UserKey, scope: object, cadence: object, at: object = None, weekday: object = None
) -> CadenceState:
    """Choose a cadence for all types that honour it (`scope` empty) or for one of them."""
    state = CadenceState(
        check_scope(scope), check_cadence(cadence), check_at(at), check_weekday(weekday)
    )
    with transaction.atomic():
        DigestCadence.objects.update_or_create(
            user_id=user_id,
            scope=state.scope,
            defaults={"cadence": state.cadence, "at": state.at, "weekday": state.weekday},
        )
    return state


def digest_cadence_clear(*, user_id: UserKey, scope: object) -> bool:
    """Forget a choice (back to the all-types one, or the type's own window); whether there
    was one. `scope` may name a type that no longer honours cadences, to clear what is left."""
    key = ALL_TYPES if scope in (None, ALL_TYPES) else _scope_key(scope)
    deleted, _ = DigestCadence.objects.filter(user_id=user_id, scope=key).delete()
    return bool(deleted)


def digest_cadences_json(*, user_id: UserKey) -> dict[str, object]:
    """What the APIs answer: the person's choices and what they may choose."""
    return {
        "cadences": [state.as_json() for state in digest_cadences_of(user_id=user_id)],
        "types": cadence_types(),
        "choices": [str(c) for c in Cadence],
    }


def digest_cadences_of(*, user_id: UserKey) -> list[CadenceState]:
    """The person's choices, the all-types one first."""
    rows = DigestCadence.objects.filter(user_id=user_id).values_list(
        "scope", "cadence", "at", "weekday"
    )
    return sorted(
        (
            CadenceState(scope, Cadence(cadence), at, weekday)
            for scope, cadence, at, weekday in rows
        ),
        key=lambda state: (state.scope != ALL_TYPES, state.scope),
    )


def cadence_types() -> list[str]:
    """The keys of the active types a person may choose a cadence for."""

    keys = NotificationType.objects.filter(digest_cadence=True, is_active=True).values_list(
        "key", flat=True
    )
    return [
        key
        for key in keys
        if (info := type_info_get(key)) is not None
        and not never_digested(kind=info.kind, priority=info.priority)
    ]
