"""Notification types defined in code, synced into the database after every migrate.

Adopting teams add their types here (or in their own module listed in NOTIFIER_CATALOGS) with
templates under templates/notifications/<key>/. Operators may switch a type off in the admin;
everything else about a code-defined type comes from here.
"""

from __future__ import annotations

import importlib
import re
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import timedelta
from typing import Any

from django.conf import settings
from django.utils.functional import Promise
from django.utils.translation import gettext_lazy as _

from channels.base import Channel
from notifier.models.types import Kind, Priority

TYPE_KEY_RE = re.compile(r"^[a-z0-9_]+(\.[a-z0-9_]+)+$")


@dataclass(frozen=True)
class TypeSpec:
    key: str
    name: str
    kind: Kind
    priority: Priority
    channels: tuple[Channel, ...]
    description: str = ""
    optional_context: tuple[str, ...] = field(default_factory=tuple)
    # What the customer reads on the preference centre, the inbox and the unsubscribe page,
    # in their language (gettext_lazy): `name` and `description` are for the team and admin.
    customer_name: str | Promise = ""
    customer_description: str | Promise = ""
    # The preference centre's section (notifier.pages.words.TOPICS); "" for its kind's first.
    topic: str = ""
    # At most `throttle_limit` per recipient and throttle key in any `throttle_window` (e.g.
    # one "price dropped" per product a day); the rest are suppressed, reason `throttled`.
    throttle_limit: int | None = None
    throttle_window: timedelta | None = None
    # In-app now, push after 10 minutes if unread, ...: ((Channel.INAPP, timedelta(0)),
    # (Channel.PUSH, timedelta(minutes=10)), (Channel.SMS, timedelta(hours=1), True)), the
    # third element (optional) for critical messages only.
    escalation: tuple[tuple[Any, ...], ...] = ()
    # Collect this type's messages per person and digest key (the caller's `digest_key`) for
    # this long and send them as one; `digest_first_now`: the first of a window goes at once.
    digest_window: timedelta | None = None
    digest_first_now: bool = False
    # `digest_cadence`: each recipient's chosen cadence decides their window (the one above
    # is for those who chose none); `throttle_over`: "digest" folds what is over the throttle
    # into the digest of its key instead of dropping it.
    digest_cadence: bool = False
    throttle_over: str = "drop"

    def __post_init__(self) -> None:
        if not TYPE_KEY_RE.match(self.key):
            raise ValueError(f"type key {self.key!r} must look like 'order.shipped'")
        if not self.channels:
            raise ValueError(f"type {self.key!r} needs at least one channel")
        if (self.throttle_limit is None) != (self.throttle_window is None):
            raise ValueError(f"type {self.key!r}: a throttle needs its limit and its window")
        if self.throttle_limit is not None and self.throttle_limit < 1:
            raise ValueError(f"type {self.key!r}: a throttle's limit is at least 1")
        if self.throttle_window is not None and self.throttle_window.total_seconds() < 1:
            raise ValueError(f"type {self.key!r}: a throttle's window is at least a second")
        if self.throttle_over not in ("drop", "digest"):
            raise ValueError(f"type {self.key!r}: throttle_over is 'drop' or 'digest'")
        if self.throttle_over == "digest" and self.throttle_limit is None:
            raise ValueError(f"type {self.key!r}: folding into a digest needs a throttle")
        digests = self.digest_window or self.digest_cadence or self.throttle_over == "digest"
        if digests and (self.kind == Kind.TRANSACTIONAL or self.priority == Priority.CRITICAL):
            raise ValueError(f"type {self.key!r}: transactional and critical are never digested")
        from notifier.models.types import escalation_problem

        problem = escalation_problem(self.escalation_json(), [str(c) for c in self.channels])
        if problem:
            raise ValueError(f"type {self.key!r}: escalation {problem}")

    def escalation_json(self) -> list[dict[str, Any]]:
        """The escalation as NotificationType.escalation stores it."""
        steps: list[dict[str, Any]] = []
        for channel, after, *rest in self.escalation:
            step: dict[str, Any] = {"channel": str(channel), "after_s": int(after.total_seconds())}
            if rest and rest[0]:
                step["critical_only"] = True
            steps.append(step)
        return steps


CATALOG: tuple[TypeSpec, ...] = (
    TypeSpec(
        "order.shipped",
        "Order shipped",
        Kind.TRANSACTIONAL,
        Priority.HIGH,
        (Channel.INAPP, Channel.EMAIL, Channel.SMS, Channel.PUSH),
        description="The parcel left the warehouse; carries the tracking link.",
        customer_name=_("Your order is on its way"),
        customer_description=_("When a parcel leaves us, with the link to follow it."),
    ),
    TypeSpec(
        "payment.succeeded",
        "Payment succeeded",
        Kind.TRANSACTIONAL,
        Priority.CRITICAL,
        (Channel.SMS, Channel.PUSH, Channel.INAPP, Channel.EMAIL),
        description="A payment went through. Urgent: SMS and push at once.",
        customer_name=_("Payment received"),
        customer_description=_("A receipt each time you pay."),
    ),
    TypeSpec(
        "account.password_changed",
        "Password changed",
        Kind.TRANSACTIONAL,
        Priority.CRITICAL,
        (Channel.EMAIL, Channel.SMS, Channel.INAPP),
        description="Security notice after a password change.",
        customer_name=_("Your password was changed"),
        customer_description=_("So you know at once if it was not you."),
        topic="account",
    ),
    TypeSpec(
        "subscription.renewal_reminder",
        "Subscription renewal reminder",
        Kind.SERVICE,
        Priority.NORMAL,
        (Channel.EMAIL, Channel.INAPP, Channel.PUSH),
        description="A plan renews soon.",
        customer_name=_("Your plan renews soon"),
        customer_description=_("A reminder a few days before a subscription renews."),
    ),
    TypeSpec(
        "promo.flash_sale",
        "Flash sale",
        Kind.MARKETING,
        Priority.LOW,
        (Channel.INAPP, Channel.EMAIL, Channel.PUSH),
        description="A promotion. Needs marketing consent.",
        customer_name=_("Flash sales"),
        customer_description=_("Short sales with limited stock, and the coupons for them."),
        optional_context=("coupon_code",),
    ),
    TypeSpec(
        "social.new_comment",
        "New comment",
        Kind.SOCIAL,
        Priority.LOW,
        (Channel.INAPP, Channel.PUSH),
        description="Someone commented on the user's post. The first goes at once; the rest "
        "of the next 10 minutes on the same post come as one digest (digest_key: the post).",
        customer_name=_("Comments on your posts"),
        customer_description=_(
            "When someone comments on what you posted; many at once come together."
        ),
        digest_window=timedelta(minutes=10),
        digest_first_now=True,
        digest_cadence=True,
    ),
    TypeSpec(
        "social.new_follower",
        "New follower",
        Kind.SOCIAL,
        Priority.LOW,
        (Channel.INAPP, Channel.PUSH),
        description="Someone followed the user.",
        customer_name=_("New followers"),
        customer_description=_("When someone starts following you."),
    ),
)


@dataclass(frozen=True)
class SeriesSpec:
    """A per-recipient date series (notifier.services.date_series): steps of `type` around
    each person's own date. Steps as DateSeries.steps stores them: {"before_s": 259200},
    {"after_s": 3600}, or {"days_before": 1, "at": "10:00"} (the recipient's local time)."""

    key: str
    name: str
    type: str
    steps: tuple[dict[str, Any], ...]
    exit_on: str = "clicked"  # notifier.models.series.SeriesExit

    def __post_init__(self) -> None:
        from notifier.models.series import SeriesExit, series_steps_problem

        if not TYPE_KEY_RE.match(self.key):
            raise ValueError(f"series key {self.key!r} must look like 'points.expiring'")
        problem = series_steps_problem(list(self.steps))
        if problem:
            raise ValueError(f"series {self.key!r}: {problem}")
        if self.exit_on not in SeriesExit.values:
            raise ValueError(f"series {self.key!r}: exit_on is one of {SeriesExit.values}")


SERIES: tuple[SeriesSpec, ...] = (
    # The 3-2-1 rule around each subscriber's own renewal date: 10:00 their time three days
    # and one day before, then an hour before; a click on one stops the rest.
    SeriesSpec(
        "subscription.renewal",
        "Subscription renewal reminders",
        "subscription.renewal_reminder",
        (
            {"days_before": 3, "at": "10:00"},
            {"days_before": 1, "at": "10:00"},
            {"before_s": 3600},
        ),
    ),
)


def all_series() -> list[SeriesSpec]:
    """The built-in series plus the SERIES of each module named by NOTIFIER_CATALOGS."""
    series = list(SERIES)
    for module_path in getattr(settings, "NOTIFIER_CATALOGS", []):
        series.extend(getattr(importlib.import_module(module_path), "SERIES", ()))
    return series


def all_specs() -> list[TypeSpec]:
    """The built-in catalog plus every TypeSpec in the modules named by NOTIFIER_CATALOGS."""
    specs = list(CATALOG)
    for module_path in getattr(settings, "NOTIFIER_CATALOGS", []):
        specs.extend(importlib.import_module(module_path).CATALOG)
    return specs


def spec_of(key: str) -> TypeSpec | None:
    """The code-defined type with this key, if there is one (admin-defined types have none)."""
    return _specs_by_key().get(key)


def _specs_by_key() -> dict[str, TypeSpec]:
    return {spec.key: spec for spec in all_specs()}


def sync_catalog(specs: Iterable[TypeSpec] | None = None) -> int:
    """Upsert code-defined types; keeps an operator's on/off switch. Returns how many."""
    from notifier.models import NotificationType

    count = 0
    for spec in specs if specs is not None else all_specs():
        NotificationType.objects.update_or_create(
            key=spec.key,
            defaults={
                "name": spec.name,
                "description": spec.description,
                "kind": spec.kind,
                "priority": spec.priority,
                "channels": [str(channel) for channel in spec.channels],
                "optional_context": list(spec.optional_context),
                "throttle_limit": spec.throttle_limit,
                "throttle_window_s": (
                    int(spec.throttle_window.total_seconds()) if spec.throttle_window else None
                ),
                "escalation": spec.escalation_json(),
                "digest_window_s": (
                    int(spec.digest_window.total_seconds()) if spec.digest_window else None
                ),
                "digest_first_now": spec.digest_first_now,
                "digest_cadence": spec.digest_cadence,
                "throttle_over": spec.throttle_over,
                "code_defined": True,
            },
        )
        count += 1
    return count


def sync_series(series: Iterable[SeriesSpec] | None = None) -> int:
    """Upsert code-defined date series (after the types they send); keeps the on/off switch."""
    from notifier.models import DateSeries, NotificationType

    count = 0
    for spec in series if series is not None else all_series():
        if not NotificationType.objects.filter(key=spec.type).exists():
            raise ValueError(
                f"date series {spec.key!r} sends type {spec.type!r}, which no catalog declares "
                "and the admin has not made"
            )
        DateSeries.objects.update_or_create(
            key=spec.key,
            defaults={
                "name": spec.name,
                "type_id": spec.type,
                "steps": list(spec.steps),
                "exit_on": spec.exit_on,
                "code_defined": True,
            },
        )
        count += 1
    return count


def sync_catalog_after_migrate(**kwargs: Any) -> None:
    sync_catalog()
    sync_series()
