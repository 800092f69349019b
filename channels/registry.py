"""Which provider classes exist, which configured instances of them each channel uses, in
which failover order, and whether a sandbox may stand in for a real provider.

A channel's chain is NOTIFIER_<CHANNEL>_PROVIDERS (settings.NOTIFIER_PROVIDERS). Each name in it
is a provider class of that channel ("twilio", "django", "sandbox": the class with the usual
settings), or an instance defined in NOTIFIER_PROVIDER_INSTANCES:

    {"twilio_backup": {"class": "twilio", "account_sid": "AC...", "auth_token": "...",
                       "from_number": "+1..."},
     "mailgun": {"class": "django", "backend": "anymail.backends.mailgun.EmailBackend",
                 "backend_options": {"api_key": "..."}}}

An instance has its own name (its rate limit and circuit breaker key, Delivery.provider) and its
own credentials, so one class can serve twice in a chain (two Twilio accounts, SMTP and an ESP).

Adding a provider: write its module (a class implementing `channels.base.Provider` with a
`configuration_problems()` classmethod; `channels.base.ConfiguredProvider` to take options; an
`extra` and `sdk_modules()` when it needs an SDK, which then goes in that extra in pyproject.toml)
and add one line to PROVIDER_CLASSES.
"""

from __future__ import annotations

import functools
import importlib.util
import logging
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from django.conf import settings
from django.core.exceptions import ImproperlyConfigured
from django.utils.module_loading import import_string

from channels.base import Channel, ConfiguredProvider, Provider

logger = logging.getLogger(__name__)

# (channel, provider name) -> class path. Imported lazily: a process that never sends push
# never imports firebase_admin.
PROVIDER_CLASSES: dict[tuple[Channel, str], str] = {
    (Channel.INAPP, "inapp"): "channels.inapp.InAppProvider",
    (Channel.EMAIL, "django"): "channels.email.DjangoEmailProvider",
    (Channel.EMAIL, "sandbox"): "channels.sandbox.SandboxEmailProvider",
    (Channel.SMS, "twilio"): "channels.sms.TwilioSmsProvider",
    (Channel.SMS, "plivo"): "channels.sms.PlivoSmsProvider",
    (Channel.SMS, "sandbox"): "channels.sandbox.SandboxSmsProvider",
    (Channel.PUSH, "push"): "channels.push.FcmWebPushProvider",
    (Channel.PUSH, "sandbox"): "channels.sandbox.SandboxPushProvider",
}


# Classes that only record sends (never reach a person): not a stand-in for a real provider.
SANDBOX_CLASS = "sandbox"


@dataclass(frozen=True, slots=True)
class ProviderSpec:
    """One entry of a channel's chain: a configured name, its class, and its own options
    (None: the class's usual settings)."""

    channel: Channel
    name: str
    class_name: str
    options: Mapping[str, Any] | None = field(default=None, hash=False, compare=False)

    @property
    def is_sandbox(self) -> bool:
        return self.class_name == SANDBOX_CLASS


def configured_names(channel: Channel) -> list[str]:
    names: list[str] = settings.NOTIFIER_PROVIDERS.get(str(channel), [])
    return names


def provider_spec(channel: Channel, name: str) -> ProviderSpec:
    """What a name in a channel's chain stands for; ImproperlyConfigured when it is nothing."""
    instances: Mapping[str, Any] = getattr(settings, "NOTIFIER_PROVIDER_INSTANCES", {}) or {}
    definition = instances.get(name)
    if definition is None:
        provider_class(channel, name)  # raises with the choices when it is not a class either
        return ProviderSpec(channel=channel, name=name, class_name=name)
    if not isinstance(definition, Mapping) or not definition.get("class"):
        raise ImproperlyConfigured(
            f"NOTIFIER_PROVIDER_INSTANCES[{name!r}] must be an object with a 'class' (one of "
            f"{', '.join(_class_names(channel))}) and that class's options"
        )
    class_name = str(definition["class"])
    cls = provider_class(channel, class_name)
    options = {k: v for k, v in definition.items() if k != "class"}
    if not (isinstance(cls, type) and issubclass(cls, ConfiguredProvider)):
        raise ImproperlyConfigured(
            f"NOTIFIER_PROVIDER_INSTANCES[{name!r}]: {channel} provider {class_name!r} takes no "
            "options; name it in the chain directly"
        )
    unknown = sorted(set(options) - cls.option_names)
    if unknown:
        raise ImproperlyConfigured(
            f"NOTIFIER_PROVIDER_INSTANCES[{name!r}]: unknown option(s) {', '.join(unknown)}; "
            f"{class_name!r} takes {', '.join(sorted(cls.option_names))}"
        )
    return ProviderSpec(channel=channel, name=name, class_name=class_name, options=options)


def provider_specs(channel: Channel) -> list[ProviderSpec]:
    """A channel's chain, primary first."""
    return [provider_spec(channel, name) for name in configured_names(channel)]


def _class_names(channel: Channel) -> list[str]:
    return sorted(n for (c, n) in PROVIDER_CLASSES if c == channel)


def provider_class(channel: Channel, name: str) -> Any:
    try:
        path = PROVIDER_CLASSES[(channel, name)]
    except KeyError:
        raise ImproperlyConfigured(
            f"NOTIFIER_{channel.upper()}_PROVIDERS names {name!r}, which is not a {channel} "
            f"provider; choose one of: {', '.join(_class_names(channel))}, or define it in "
            "NOTIFIER_PROVIDER_INSTANCES"
        ) from None
    return import_string(path)


def sandbox_stand_ins() -> list[str]:
    """Chains where a sandbox would take over from a real provider: sends that would reach
    nobody and be marked sent. In words, one per channel; empty when there is none."""
    found = []
    for channel in Channel:
        specs = provider_specs(channel)
        real = [s.name for s in specs if not s.is_sandbox]
        sandboxes = [s.name for s in specs if s.is_sandbox]
        if real and sandboxes:
            found.append(
                f"NOTIFIER_{channel.upper()}_PROVIDERS fails over from {', '.join(real)} to the "
                f"sandbox ({', '.join(sandboxes)}), which records messages and sends nothing"
            )
    return found


def sandbox_failover_refused() -> bool:
    """Production settings (DEBUG off) never fail over to a sandbox, unless explicitly allowed
    (NOTIFIER_ALLOW_SANDBOX_FAILOVER, e.g. for a staging site)."""
    return not settings.DEBUG and not getattr(settings, "NOTIFIER_ALLOW_SANDBOX_FAILOVER", False)


def missing_sdks(channel: Channel, name: str, cls: Any) -> list[str]:
    """A provider whose SDK is not installed, in words naming the extra that brings it (the SMS
    and push SDKs are the `sms` and `push` extras, not base dependencies). Looked up, not
    imported: a process that never sends push still never imports firebase_admin."""
    modules: tuple[str, ...] = cls.sdk_modules() if hasattr(cls, "sdk_modules") else ()
    setting = f"NOTIFIER_{channel.upper()}_PROVIDERS"
    return [
        f"{setting} names {name} but the {module} SDK is not installed: "
        f"pip install 'notifier[{cls.extra}]'"
        for module in modules
        if not _installed(module)
    ]


def _installed(module: str) -> bool:
    try:
        return importlib.util.find_spec(module) is not None
    except (ImportError, ValueError):  # a parent package missing, or a stubbed-out module
        return False


def check_providers_configured() -> None:
    """Fail at start-up, with what to set, when a chosen provider lacks its credentials or its
    SDK. (A sandbox behind a real provider is the system check notifier.E201's to report.)"""
    problems: list[str] = []
    for channel in Channel:
        names = configured_names(channel)
        if not names:
            problems.append(f"no provider is configured for {channel}")
        if len(set(names)) != len(names):
            problems.append(f"NOTIFIER_{channel.upper()}_PROVIDERS names a provider twice")
        for name in names:
            spec = provider_spec(channel, name)
            cls = provider_class(channel, spec.class_name)
            problems += missing_sdks(channel, name, cls)
            found = (
                cls.configuration_problems()
                if spec.options is None
                else cls.configuration_problems(spec.options)
            )
            problems += [f"{channel} provider {name!r}: {p}" for p in found]
    if problems:
        raise ImproperlyConfigured("; ".join(problems))


def _instance(spec: ProviderSpec) -> Provider:
    cls = provider_class(spec.channel, spec.class_name)
    provider: Provider = (
        cls() if spec.options is None else cls(name=spec.name, options=spec.options)
    )
    return provider


@functools.cache
def provider_for(channel: Channel) -> Provider:
    """The primary provider of a channel, one instance per process."""
    return _instance(provider_spec(channel, configured_names(channel)[0]))


@functools.cache
def providers_for(channel: Channel) -> tuple[Provider, ...]:
    """Every configured provider of a channel, primary first: the failover order. A sandbox
    behind a real provider is left out where production settings refuse it (the start-up
    check says so loudly; this keeps a process that skipped the check from using it)."""
    specs = provider_specs(channel)
    if sandbox_failover_refused() and any(not s.is_sandbox for s in specs):
        left_out = [s.name for s in specs if s.is_sandbox]
        if left_out:
            logger.error(
                "%s: the sandbox (%s) is left out of the failover chain with DEBUG off; set "
                "NOTIFIER_ALLOW_SANDBOX_FAILOVER=true to allow it",
                channel,
                ", ".join(left_out),
            )
        specs = [s for s in specs if not s.is_sandbox]
    return tuple(_instance(spec) for spec in specs)


def provider_named(channel: Channel, name: str) -> Provider | None:
    """The configured provider of a channel with this name (webhooks: whose account?)."""
    return next((p for p in providers_for(channel) if p.name == name), None)


def reset_providers() -> None:
    """Forget provider instances (tests that change settings call this)."""
    provider_for.cache_clear()
    providers_for.cache_clear()
