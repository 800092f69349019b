"""factory-boy factories for the core models."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime

import factory
from django.contrib.auth.models import Group

from notifier.models import Device, Platform, User


def daytime_zone(at: datetime | None = None) -> str:
    """A fixed-offset zone ("Etc/GMT-8" is UTC+8) in which it is 13:xx at `at` (default: now,
    frozen or not): hours from either end of the default quiet window, 22:00-08:00.

    Worker processes run on the real clock, which a test cannot freeze; a user made in such a
    zone is in their afternoon for the test's whole run.
    """
    hour = (at or datetime.now(UTC)).astimezone(UTC).hour
    offset = (13 - hour + 12) % 24 - 12  # -12..+11 hours: every zone exists in the Etc area
    return "Etc/UTC" if offset == 0 else f"Etc/GMT{-offset:+d}"  # Etc signs are POSIX's


class UserFactory(factory.django.DjangoModelFactory):
    class Meta:
        model = User
        skip_postgeneration_save = True

    username = factory.Sequence(lambda n: f"user{n}")
    email = factory.LazyAttribute(lambda u: f"{u.username}@example.com")
    first_name = factory.Faker("first_name")
    phone = factory.Sequence(lambda n: f"+861380013{n % 10000:04d}")
    # Quiet hours stay as the model has them (on, the site's 22:00-08:00 window); the user lives
    # where it is early afternoon as the user is made, so a test meets them only when it is
    # about them (it then names a zone and a time), whatever hour the suite runs at.
    time_zone = factory.LazyFunction(lambda: daytime_zone())
    locale = "en"
    is_active = True


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
