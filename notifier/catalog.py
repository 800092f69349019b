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
from typing import Any

from django.conf import settings

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

    def __post_init__(self) -> None:
        if not TYPE_KEY_RE.match(self.key):
            raise ValueError(f"type key {self.key!r} must look like 'order.shipped'")
        if not self.channels:
            raise ValueError(f"type {self.key!r} needs at least one channel")


CATALOG: tuple[TypeSpec, ...] = (
    TypeSpec(
        "order.shipped",
        "Order shipped",
        Kind.TRANSACTIONAL,
        Priority.HIGH,
        (Channel.INAPP, Channel.EMAIL, Channel.SMS, Channel.PUSH),
        description="The parcel left the warehouse; carries the tracking link.",
    ),
    TypeSpec(
        "payment.succeeded",
        "Payment succeeded",
        Kind.TRANSACTIONAL,
        Priority.CRITICAL,
        (Channel.SMS, Channel.PUSH, Channel.INAPP, Channel.EMAIL),
        description="A payment went through. Urgent: SMS and push at once.",
    ),
    TypeSpec(
        "account.password_changed",
        "Password changed",
        Kind.TRANSACTIONAL,
        Priority.CRITICAL,
        (Channel.EMAIL, Channel.SMS, Channel.INAPP),
        description="Security notice after a password change.",
    ),
    TypeSpec(
        "subscription.renewal_reminder",
        "Subscription renewal reminder",
        Kind.SERVICE,
        Priority.NORMAL,
        (Channel.EMAIL, Channel.INAPP, Channel.PUSH),
        description="A plan renews soon.",
    ),
    TypeSpec(
        "promo.flash_sale",
        "Flash sale",
        Kind.MARKETING,
        Priority.LOW,
        (Channel.INAPP, Channel.EMAIL, Channel.PUSH),
        description="A promotion. Needs marketing consent.",
        optional_context=("coupon_code",),
    ),
    TypeSpec(
        "social.new_follower",
        "New follower",
        Kind.SOCIAL,
        Priority.LOW,
        (Channel.INAPP, Channel.PUSH),
        description="Someone followed the user.",
    ),
)


def all_specs() -> list[TypeSpec]:
    """The built-in catalog plus every TypeSpec in the modules named by NOTIFIER_CATALOGS."""
    specs = list(CATALOG)
    for module_path in getattr(settings, "NOTIFIER_CATALOGS", []):
        specs.extend(importlib.import_module(module_path).CATALOG)
    return specs


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
                "code_defined": True,
            },
        )
        count += 1
    return count


def sync_catalog_after_migrate(**kwargs: Any) -> None:
    sync_catalog()
