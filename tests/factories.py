"""factory-boy factories for the core models."""

from __future__ import annotations

import uuid

import factory
from django.contrib.auth.models import Group

from notifier.models import Device, Platform, User


class UserFactory(factory.django.DjangoModelFactory):
    class Meta:
        model = User
        skip_postgeneration_save = True

    username = factory.Sequence(lambda n: f"user{n}")
    email = factory.LazyAttribute(lambda u: f"{u.username}@example.com")
    first_name = factory.Faker("first_name")
    phone = factory.Sequence(lambda n: f"+861380013{n % 10000:04d}")
    time_zone = "Asia/Shanghai"
    locale = "en"
    is_active = True
    # Off unless a test is about quiet hours: tests must not depend on the hour they run at.
    quiet_hours_enabled = False


class DeviceFactory(factory.django.DjangoModelFactory):
    class Meta:
        model = Device

    user = factory.SubFactory(UserFactory)
    platform = Platform.ANDROID
    token = factory.Sequence(lambda n: f"fcm-token-{n:06d}")
    active = True


def order_context(**overrides: str) -> dict[str, str]:
    """A complete context for order.shipped."""
    return {
        "order_number": "A1001",
        "carrier": "SF Express",
        "eta": "Tuesday",
        "tracking_url": "https://example.com/track/A1001",
        **overrides,
    }


def staff_member(group: str | None = None, name: str = "") -> User:
    """A staff user in one of the roles `roles_sync` makes ("Marketer", "Marketing lead",
    "Support"), read back fresh: permissions are cached per instance."""
    prefix = name or (group or "staff").split()[0].lower()
    user = UserFactory(username=f"{prefix}-{uuid.uuid4().hex[:6]}", is_staff=True)
    if group:
        user.groups.add(Group.objects.get(name=group))
    return User.objects.get(pk=user.pk)
