"""Changing what a user receives: channel switches, marketing frequency, consent, unsubscribe.

Each write validates its input first (`check_*`, raising a `PreferenceError` that says what to
fix) and then runs in one transaction that holds the user's row lock, so two tabs or a tab and
an unsubscribe link saving at once take turns instead of racing on the same rows. Routing
reads the result through `notifier.selectors.preferences_of` / `consent_of`.

A write that changed something tells of it (notifier.events_out.record): a signal after commit
and a webhook event for the endpoints that want it (preferences.changed, consent.changed,
recipient.unsubscribed), written in the same transaction.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from enum import StrEnum

from django.conf import settings
from django.contrib.auth import get_user_model
from django.core.exceptions import ValidationError
from django.core.validators import validate_ipv46_address
from django.db import transaction
from django.utils import timezone

from channels.base import Channel
from notifier.events_out import record
from notifier.models import (
    ALL_CHANNELS,
    Consent,
    ConsentPurpose,
    Kind,
    MarketingFrequency,
    Message,
    NotificationType,
    Preference,
    Priority,
    Recipient,
    Unsubscribe,
    recipient_for,
)
from notifier.policies.preferences import (
    ConsentState,
    Preferences,
    can_switch_off,
    channel_enabled,
)
from notifier.selectors import consent_of, type_info_get
from notifier.user_keys import UserKey

CONCRETE_CHANNELS: tuple[str, ...] = tuple(channel.value for channel in Channel)
MAX_SOURCE_LENGTH = 100  # Consent.source


class PreferenceError(ValueError):
    """Bad input to a preference or consent write; nothing was written."""


class UnknownUser(PreferenceError):
    pass


class UnknownCategory(PreferenceError):
    pass


class UnknownChannel(PreferenceError):
    pass


class CategoryLocked(PreferenceError):
    """Transactional and critical messages cannot be switched off."""


class InvalidFrequency(PreferenceError):
    pass


class InvalidConsent(PreferenceError):
    """Missing wording or source, or an IP address that is not one."""


class InvalidScope(PreferenceError):
    pass


class UnsubscribeScope(StrEnum):
    THIS = "this"  # the linked category, on the linked channel
    CHANNEL = "channel"  # all marketing on the linked channel
    ALL = "all"  # all marketing, everywhere


@dataclass(frozen=True, slots=True)
class Category:
    """A validated category: a kind, or a notification type with its kind and priority."""

    key: str
    kind: str
    priority: str

    @property
    def is_kind(self) -> bool:
        return self.key == self.kind

    @property
    def locked(self) -> bool:
        return not can_switch_off(self.kind, self.priority)


@dataclass(frozen=True, slots=True)
class PreferenceChange:
    category: str
    channel: str
    enabled: bool


# --- check_*: validation at the edge --------------------------------------------------------


def check_category(category: object) -> Category:
    if isinstance(category, str) and category in Kind.values:
        # A whole kind: only transactional is locked; a critical type inside a kind is
        # protected by the routing policy, not by refusing the kind-level switch.
        return Category(key=category, kind=category, priority=Priority.NORMAL)
    info = type_info_get(category) if isinstance(category, str) and category else None
    if info is None:
        raise UnknownCategory(
            f"{category!r} is not a category; use a kind ({', '.join(Kind.values)}) "
            "or a notification type key such as 'promo.flash_sale'"
        )
    return Category(key=info.key, kind=info.kind, priority=info.priority)


def check_channel(channel: object) -> str:
    if not isinstance(channel, str) or channel not in (*CONCRETE_CHANNELS, ALL_CHANNELS):
        raise UnknownChannel(
            f"{channel!r} is not a channel; use {', '.join(CONCRETE_CHANNELS)} or {ALL_CHANNELS}"
        )
    return channel


def check_consent_channel(channel: object) -> str:
    consent_channels = consent_channels_all()
    if not isinstance(channel, str) or channel not in consent_channels:
        raise UnknownChannel(
            f"{channel!r} is not a channel that asks for consent; use {', '.join(consent_channels)}"
        )
    return channel


def check_change(change: PreferenceChange) -> Category:
    category = check_category(change.category)
    check_channel(change.channel)
    if not isinstance(change.enabled, bool):
        raise PreferenceError(f"enabled must be true or false, got {change.enabled!r}")
    if category.locked and not change.enabled:
        what = "transactional" if category.kind == Kind.TRANSACTIONAL else "critical"
        raise CategoryLocked(
            f"{category.key} cannot be switched off: {what} messages are always sent"
        )
    return category


def check_frequency(frequency: object) -> str:
    if not isinstance(frequency, str) or frequency not in MarketingFrequency.values:
        raise InvalidFrequency(
            f"marketing_frequency must be one of {', '.join(MarketingFrequency.values)}, "
            f"got {frequency!r}"
        )
    return frequency


def check_scope(scope: object) -> UnsubscribeScope:
    if not isinstance(scope, str) or scope not in UnsubscribeScope.__members__.values():
        raise InvalidScope(
            f"scope must be one of {', '.join(s.value for s in UnsubscribeScope)}, got {scope!r}"
        )
    return UnsubscribeScope(scope)


def check_source(source: object) -> str:
    if not isinstance(source, str) or not source.strip() or len(source) > MAX_SOURCE_LENGTH:
        raise InvalidConsent(
            f"source must say where the change came from (e.g. 'preference_centre'), "
            f"in at most {MAX_SOURCE_LENGTH} characters"
        )
    return source


def check_message_id(message_id: object) -> int | None:
    if message_id is None:
        return None
    if not isinstance(message_id, int) or isinstance(message_id, bool) or message_id <= 0:
        raise PreferenceError(f"message_id must be a message's id or None, got {message_id!r}")
    return message_id


def check_ip_address(ip_address: object) -> str | None:
    if ip_address is None or ip_address == "":
        return None
    try:
        if not isinstance(ip_address, str):
            raise ValidationError("not a string")
        validate_ipv46_address(ip_address)
    except ValidationError:
        raise InvalidConsent(f"{ip_address!r} is not an IPv4 or IPv6 address") from None
    return ip_address


def consent_channels_all() -> tuple[str, ...]:
    """The channels marketing needs consent on, then "all" (every one of them at once)."""
    return (*settings.NOTIFIER_CONSENT_CHANNELS, ALL_CHANNELS)


# --- Writing, under the user's row lock -----------------------------------------------------


def _lock_user(user_id: UserKey) -> str:
    """Lock the user's row for the transaction; returns their marketing frequency (from their
    recipient profile, created on first use)."""
    user = get_user_model()._default_manager.select_for_update().filter(pk=user_id).first()
    if user is None:
        raise UnknownUser(f"no user {user_id}")
    profile = recipient_for(user)
    if profile.erased_at is not None:  # notifier.services.erasure: no choices recorded again
        raise UnknownUser(f"user {user_id} was erased at their request")
    return profile.marketing_frequency


def _overrides(user_id: UserKey) -> dict[tuple[str, str], bool]:
    rows = Preference.objects.filter(user_id=user_id).values_list("category", "channel", "enabled")
    return {(category, channel): enabled for category, channel, enabled in rows}


def _affected(channel: str) -> tuple[str, ...]:
    return CONCRETE_CHANNELS if channel == ALL_CHANNELS else (channel,)


def _changes_anything(
    category: Category, channel: str, overrides: dict[tuple[str, str], bool]
) -> bool:
    """Whether the row (category, channel) decides anything the rows around it do not."""
    key = (category.key, channel)
    without = {k: v for k, v in overrides.items() if k != key}
    for concrete in _affected(channel):
        decided = [
            channel_enabled(
                Preferences(overrides=rows),
                kind=category.kind,
                type_key=category.key,
                channel=concrete,
            )
            for rows in (overrides, without)
        ]
        if decided[0] != decided[1]:
            return True
    return False


def _write(
    *,
    user_id: UserKey,
    category: Category,
    channel: str,
    enabled: bool,
    overrides: dict[tuple[str, str], bool],
) -> bool:
    """Store the switch as an override row, or drop the row when it is redundant.

    Rows hold only overrides of the code default. An "on" row that decides nothing is dropped,
    so a later broader "off" is not silently undone by it; an "off" row is always kept, so an
    explicit opt-out survives a later broader "on". `overrides` is kept in step. Returns
    whether a row was written or deleted.
    """
    key = (category.key, channel)
    before = overrides.get(key)
    overrides[key] = enabled
    if not enabled or _changes_anything(category, channel, overrides):
        if before == enabled:
            return False
        Preference.objects.update_or_create(
            user_id=user_id,
            category=category.key,
            channel=channel,
            defaults={"enabled": enabled},
        )
        return True
    del overrides[key]
    if before is None:
        return False
    Preference.objects.filter(user_id=user_id, category=category.key, channel=channel).delete()
    return True


def _specificity(category: Category, channel: str) -> int:
    """0 for (kind, all) up to 3 for (type, channel): the reverse of `channel_enabled`'s order."""
    return (0 if category.is_kind else 2) + (0 if channel == ALL_CHANNELS else 1)


def preference_set(*, user_id: UserKey, category: str, channel: str, enabled: bool) -> bool:
    """Switch a category on or off on a channel ("all" for every channel).

    Returns whether anything was written. Raises CategoryLocked for switching off
    transactional or critical messages.
    """
    return preferences_update(
        user_id=user_id,
        changes=[PreferenceChange(category=category, channel=channel, enabled=enabled)],
        marketing_frequency=None,
    )


def preferences_update(
    *,
    user_id: UserKey,
    changes: Sequence[PreferenceChange],
    marketing_frequency: str | None = None,
) -> bool:
    """Apply several switches and the marketing frequency at once: all of them, or none.

    Returns whether anything was written.
    """
    checked = [(check_change(change), change) for change in changes]
    frequency = None if marketing_frequency is None else check_frequency(marketing_frequency)
    # Broad switches first: whether a narrower "on" row is redundant depends on them.
    checked.sort(key=lambda pair: _specificity(pair[0], pair[1].channel))
    written: list[tuple[str, str, bool]] = []
    new_frequency = None
    with transaction.atomic():
        current_frequency = _lock_user(user_id)
        overrides = _overrides(user_id)
        for category, change in checked:
            if _write(
                user_id=user_id,
                category=category,
                channel=change.channel,
                enabled=change.enabled,
                overrides=overrides,
            ):
                written.append((category.key, change.channel, change.enabled))
        if frequency is not None and frequency != current_frequency:
            Recipient.objects.filter(user_id=user_id).update(marketing_frequency=frequency)
            new_frequency = frequency
        if written or new_frequency is not None:
            record.preferences_changed(
                user_id=user_id, changes=written, marketing_frequency=new_frequency
            )
    return bool(written) or new_frequency is not None


# --- Consent --------------------------------------------------------------------------------


def _consent_state(user_id: UserKey) -> ConsentState:
    return consent_of(user_ids=[user_id])[user_id]


def _withdrawn_already(state: ConsentState, channel: str) -> bool:
    if channel == ALL_CHANNELS:
        return not any(state.granted(c) for c in settings.NOTIFIER_CONSENT_CHANNELS)
    return not state.granted(channel)


def _consent_append(
    *, user_id: UserKey, channel: str, granted: bool, source: str, wording: str, ip: str | None
) -> Consent:
    consent = Consent.objects.create(
        user_id=user_id,
        purpose=ConsentPurpose.MARKETING,
        channel=channel,
        granted=granted,
        at=timezone.now(),
        source=source,
        wording=wording,
        ip_address=ip,
    )
    record.consent_changed(consent)
    return consent


def consent_give(
    *,
    user_id: UserKey,
    channel: str,
    source: str,
    wording: str,
    ip_address: str | None = None,
) -> Consent:
    """Record marketing consent on a channel ("all" for every consent channel).

    Always appended, even when consent is already on record: each agreement to a wording is
    evidence in its own right.
    """
    check_consent_channel(channel)
    check_source(source)
    if not isinstance(wording, str) or not wording.strip():
        raise InvalidConsent("wording is required: the exact words the user agreed to")
    ip = check_ip_address(ip_address)
    with transaction.atomic():
        _lock_user(user_id)
        return _consent_append(
            user_id=user_id, channel=channel, granted=True, source=source, wording=wording, ip=ip
        )


def consent_withdraw(
    *, user_id: UserKey, channel: str, source: str, ip_address: str | None = None
) -> Consent | None:
    """Record that marketing consent on a channel ("all": every channel) is withdrawn.

    Returns the new record, or None when there was no consent in force to withdraw.
    """
    check_consent_channel(channel)
    check_source(source)
    ip = check_ip_address(ip_address)
    with transaction.atomic():
        _lock_user(user_id)
        return _consent_withdraw(user_id=user_id, channel=channel, source=source, ip=ip)


def _consent_withdraw(
    *, user_id: UserKey, channel: str, source: str, ip: str | None
) -> Consent | None:
    if _withdrawn_already(_consent_state(user_id), channel):
        return None
    return _consent_append(
        user_id=user_id, channel=channel, granted=False, source=source, wording="", ip=ip
    )


# --- Unsubscribe ----------------------------------------------------------------------------


def _types_with_rows(kind: str, overrides: Iterable[tuple[str, str]]) -> list[Category]:
    """The types of `kind` that have override rows: the only ones a kind-level switch can miss."""
    keys = {category for category, _ in overrides if category not in Kind.values}
    rows = NotificationType.objects.filter(key__in=keys, kind=kind).values_list("key", "priority")
    return [Category(key=key, kind=kind, priority=priority) for key, priority in rows]


def _switch_off(
    *, user_id: UserKey, category: Category, channel: str, overrides: dict[tuple[str, str], bool]
) -> bool:
    """Switch a category off on a channel. For a kind, also switch off its types that a
    narrower "on" row would keep sending: an unsubscribe means stop, whatever the grid said."""
    changed = _write(
        user_id=user_id, category=category, channel=channel, enabled=False, overrides=overrides
    )
    if not category.is_kind:
        return changed
    for type_category in _types_with_rows(category.kind, overrides):
        if type_category.locked:
            continue
        for concrete in _affected(channel):
            prefs = Preferences(overrides=overrides)
            if channel_enabled(
                prefs, kind=type_category.kind, type_key=type_category.key, channel=concrete
            ):
                changed |= _write(
                    user_id=user_id,
                    category=type_category,
                    channel=concrete,
                    enabled=False,
                    overrides=overrides,
                )
    return changed


def unsubscribe(
    *,
    user_id: UserKey,
    category: str,
    channel: str,
    scope: str,
    source: str,
    ip_address: str | None = None,
    message_id: int | None = None,
) -> bool:
    """Stop what an unsubscribe link was for, as widely as the user chose.

    "this": the category on that channel (only the switch; consent stays as it was).
    "channel": all marketing on that channel, and marketing consent on it withdrawn.
    "all": marketing frequency off, and marketing consent withdrawn on "all".
    Idempotent: a second call writes nothing. Returns whether anything was written.

    Each call that changes something is logged as an `Unsubscribe`, counted against
    `message_id` (the message whose link was used) when that is one of the user's messages.
    """
    linked = check_category(category)
    check_channel(channel)
    chosen = check_scope(scope)
    check_source(source)
    ip = check_ip_address(ip_address)
    checked_message_id = check_message_id(message_id)
    if chosen is UnsubscribeScope.THIS and linked.locked:
        raise CategoryLocked(f"{linked.key} cannot be switched off: it is always sent")
    with transaction.atomic():
        changed = _unsubscribe(
            user_id=user_id, linked=linked, channel=channel, scope=chosen, source=source, ip=ip
        )
        if changed:
            # A message deleted since (or someone else's) leaves the unsubscribe unattributed.
            if (
                checked_message_id is not None
                and not Message.objects.filter(pk=checked_message_id, user_id=user_id).exists()
            ):
                checked_message_id = None
            record.recipient_unsubscribed(
                Unsubscribe.objects.create(
                    user_id=user_id,
                    message_id=checked_message_id,
                    category=linked.key,
                    channel=channel,
                    scope=chosen,
                    source=source,
                    at=timezone.now(),
                )
            )
    return changed


def _unsubscribe(
    *,
    user_id: UserKey,
    linked: Category,
    channel: str,
    scope: UnsubscribeScope,
    source: str,
    ip: str | None,
) -> bool:
    """The switches and consent an unsubscribe changes; the caller holds the transaction."""
    frequency = _lock_user(user_id)
    overrides = _overrides(user_id)
    if scope is UnsubscribeScope.THIS:
        return _switch_off(user_id=user_id, category=linked, channel=channel, overrides=overrides)
    if scope is UnsubscribeScope.CHANNEL:
        marketing = Category(key=Kind.MARKETING, kind=Kind.MARKETING, priority=Priority.NORMAL)
        changed = _switch_off(
            user_id=user_id, category=marketing, channel=channel, overrides=overrides
        )
        consent_channel = channel if channel in consent_channels_all() else None
    else:
        changed = frequency != MarketingFrequency.OFF
        if changed:
            Recipient.objects.filter(user_id=user_id).update(
                marketing_frequency=MarketingFrequency.OFF
            )
        consent_channel = ALL_CHANNELS
    if consent_channel is not None:  # in-app marketing needs no consent, so none to withdraw
        withdrawn = _consent_withdraw(
            user_id=user_id, channel=consent_channel, source=source, ip=ip
        )
        changed |= withdrawn is not None
    return changed
