"""Which provider each channel uses, decided from the environment (read by settings only).

A channel's providers come from NOTIFIER_<CHANNEL>_PROVIDERS (comma-separated, first is
primary, the rest its failover order); a name there is a provider class ("twilio") or a named
instance of one with its own credentials (NOTIFIER_PROVIDER_INSTANCES, see channels.registry).
When unset, a real provider is chosen if its credentials are present, otherwise the sandbox.
Whether a chosen provider has its credentials is checked at start-up by
`channels.registry.check_providers_configured`, which fails loudly.
"""

from __future__ import annotations

from typing import Any

CHANNELS = ("inapp", "email", "sms", "push")


def providers_from_env(env: Any) -> dict[str, list[str]]:
    inferred = {
        "inapp": ["inapp"],
        "email": ["django"]
        if env.str("EMAIL_URL", default="") or env.str("EMAIL_BACKEND", default="")
        else ["sandbox"],
        "sms": ["twilio"]
        if env.str("TWILIO_ACCOUNT_SID", default="")
        else ["plivo"]
        if env.str("PLIVO_AUTH_ID", default="")
        else ["sandbox"],
        "push": ["push"]
        if env.str("FCM_CREDENTIALS_FILE", default="")
        or env.str("WEBPUSH_VAPID_PRIVATE_KEY", default="")
        else ["sandbox"],
    }
    chosen: dict[str, list[str]] = {}
    for channel in CHANNELS:
        names = env.list(f"NOTIFIER_{channel.upper()}_PROVIDERS", default=[])
        chosen[channel] = [name.strip() for name in names if name.strip()] or inferred[channel]
    return chosen
