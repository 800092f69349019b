"""Which provider classes exist, and which one each channel uses.

Adding a provider: write its module (a class implementing `channels.base.Provider` with a
`configuration_problems()` classmethod) and add one line to PROVIDER_CLASSES.
"""

from __future__ import annotations

import functools
from typing import Any

from django.conf import settings
from django.core.exceptions import ImproperlyConfigured
from django.utils.module_loading import import_string

from channels.base import Channel, Provider

# (channel, provider name) -> class path. Imported lazily: a process that never sends push
# never imports firebase_admin.
PROVIDER_CLASSES: dict[tuple[Channel, str], str] = {
    (Channel.INAPP, "inapp"): "channels.inapp.InAppProvider",
    (Channel.EMAIL, "django"): "channels.email.DjangoEmailProvider",
    (Channel.EMAIL, "sandbox"): "channels.sandbox.SandboxEmailProvider",
    (Channel.SMS, "twilio"): "channels.sms.TwilioSmsProvider",
    (Channel.SMS, "sandbox"): "channels.sandbox.SandboxSmsProvider",
    (Channel.PUSH, "push"): "channels.push.FcmWebPushProvider",
    (Channel.PUSH, "sandbox"): "channels.sandbox.SandboxPushProvider",
}


def configured_names(channel: Channel) -> list[str]:
    names: list[str] = settings.NOTIFIER_PROVIDERS.get(str(channel), [])
    return names


def provider_class(channel: Channel, name: str) -> Any:
    try:
        path = PROVIDER_CLASSES[(channel, name)]
    except KeyError:
        known = sorted(n for (c, n) in PROVIDER_CLASSES if c == channel)
        raise ImproperlyConfigured(
            f"NOTIFIER_{channel.upper()}_PROVIDERS names {name!r}, which is not a {channel} "
            f"provider; choose one of: {', '.join(known)}"
        ) from None
    return import_string(path)


def check_providers_configured() -> None:
    """Fail at start-up, with what to set, when a chosen provider lacks its credentials."""
    problems: list[str] = []
    for channel in Channel:
        names = configured_names(channel)
        if not names:
            problems.append(f"no provider is configured for {channel}")
        for name in names:
            cls = provider_class(channel, name)
            problems += [f"{channel} provider {name!r}: {p}" for p in cls.configuration_problems()]
    if problems:
        raise ImproperlyConfigured("; ".join(problems))


@functools.cache
def provider_for(channel: Channel) -> Provider:
    """The primary provider of a channel, one instance per process."""
    provider: Provider = provider_class(channel, configured_names(channel)[0])()
    return provider


@functools.cache
def providers_for(channel: Channel) -> tuple[Provider, ...]:
    """Every configured provider of a channel, primary first: the failover order."""
    return tuple(provider_class(channel, name)() for name in configured_names(channel))


def reset_providers() -> None:
    """Forget provider instances (tests that change settings call this)."""
    provider_for.cache_clear()
    providers_for.cache_clear()
