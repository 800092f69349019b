"""System checks: every code-defined type has templates that compile for each of its channels,
the provider webhooks can work (signing keys, basic auth, a public callback URL), links in
messages point at a public site, and the render tasks' time limits fit together."""

from __future__ import annotations

import warnings
from typing import Any
from urllib.parse import urlsplit

from django.core.checks import CheckMessage, Error, register
from django.core.checks import Warning as CheckWarning

from notifier.catalog import all_specs
from notifier.rendering import (
    COMPILE_ERRORS,
    compile_failure,
    environment,
    missing_parts,
    template_files,
)


@register()
def check_notification_templates(app_configs: Any = None, **kwargs: Any) -> list[CheckMessage]:
    errors: list[CheckMessage] = []
    env = environment()
    for spec in all_specs():
        for channel in spec.channels:
            for missing in missing_parts(spec.key, channel):
                errors.append(
                    Error(
                        f"type {spec.key!r} uses {channel} but has no template {missing}",
                        hint=f"create notifications/{missing} in a directory of "
                        "NOTIFIER_TEMPLATE_DIRS or in an app's templates/",
                        id="notifier.E001",
                    )
                )
            for path in template_files(spec.key, channel):
                # Compiled, not only parsed: Python refuses some templates Jinja reads (21
                # nested loops, a 3,000-term sum), and every render of them would fail.
                try:
                    env.compile(path.read_text(encoding="utf-8"), filename=str(path))
                except COMPILE_ERRORS as exc:
                    errors.append(
                        Error(
                            f"template {path.name} of {spec.key!r} does not compile: "
                            f"{compile_failure(exc)}",
                            id="notifier.E002",
                        )
                    )
    return errors


@register()
def check_provider_webhooks(app_configs: Any = None, **kwargs: Any) -> list[CheckMessage]:
    """Webhooks that would fail or be open once providers call them: say so at start-up."""
    from anymail.exceptions import AnymailConfigurationError, AnymailInsecureWebhookWarning
    from django.conf import settings
    from django.urls import NoReverseMatch

    from notifier.webhooks.views import anymail_tracking_views, email_webhook_esps

    found: list[CheckMessage] = []
    for esp in email_webhook_esps():
        try:
            view = anymail_tracking_views().get(esp)
            if view is None:
                raise NoReverseMatch(esp)
            view_class = view.view_class  # type: ignore[attr-defined]
            with warnings.catch_warnings():  # W103 below says it, with the fix
                warnings.simplefilter("ignore", AnymailInsecureWebhookWarning)
                view_class()  # reads the ESP's signing key; raises when it is missing
        except NoReverseMatch:
            found.append(
                CheckWarning(f"anymail has no tracking webhook for {esp!r}", id="notifier.W101")
            )
            continue
        except AnymailConfigurationError as exc:  # it names the setting to fill
            found.append(
                CheckWarning(
                    f"{esp} tracking webhooks will fail: {exc}",
                    hint="set the ESP's webhook signing key in ANYMAIL",
                    id="notifier.W102",
                )
            )
            continue
        if getattr(view_class, "warn_if_no_basic_auth", False) and not settings.ANYMAIL.get(
            "WEBHOOK_SECRET"
        ):
            found.append(
                CheckWarning(
                    f"{esp} webhooks carry no signature and WEBHOOK_SECRET is not set: "
                    "they will be refused",
                    hint="set ANYMAIL WEBHOOK_SECRET=user:password and put it in the URL",
                    id="notifier.W103",
                )
            )
    if _twilio_in_sms_chain():
        base = settings.NOTIFIER_TWILIO_WEBHOOK_BASE_URL or settings.NOTIFIER_SITE_URL
        parts = urlsplit(base)
        if parts.scheme != "https" or parts.hostname in LOCAL_HOSTS:
            found.append(
                CheckWarning(
                    f"Twilio status callbacks go to {base}, which Twilio cannot reach",
                    hint="set NOTIFIER_TWILIO_WEBHOOK_BASE_URL (or NOTIFIER_SITE_URL) to the "
                    "public https origin",
                    id="notifier.W104",
                )
            )
    return found


# Host names that reach the machine a link is opened on, never the site.
LOCAL_HOSTS = frozenset({"localhost", "127.0.0.1", "::1", "0.0.0.0"})


def site_url_problem(url: str) -> str | None:
    """What is wrong with `url` as the origin of links customers open (worded to follow
    "NOTIFIER_SITE_URL "), or None for an absolute http(s) URL on a host others can reach."""
    if not url.strip():
        return "is not set"
    try:
        parts = urlsplit(url.strip())
        host = parts.hostname
    except ValueError:  # e.g. an unbalanced "[" in the host
        return f"is {url!r}, not a URL"
    if parts.scheme not in ("http", "https") or not host:
        return f"is {url!r}, not an absolute http(s) URL"
    if host in LOCAL_HOSTS or host.startswith("127.") or host.endswith(".localhost"):
        return f"is {url!r}: {host} is the customer's own device, not this site"
    return None


@register()
def check_site_url(app_configs: Any = None, **kwargs: Any) -> list[CheckMessage]:
    """Every link in messages (unsubscribe, preference centre, click tracking, the templates'
    `site_url`) starts with NOTIFIER_SITE_URL, whose default is http://localhost:8000: with
    DEBUG off, say so while it is unset or points at this machine. Not for the embedded
    first-run default (the demo), which is never a deployment."""
    from django.conf import settings

    if settings.DEBUG or settings.NOTIFIER_EMBEDDED:
        return []
    problem = site_url_problem(settings.NOTIFIER_SITE_URL)
    if problem is None:
        return []
    return [
        CheckWarning(
            f"NOTIFIER_SITE_URL {problem}; every link in messages (unsubscribe, preference "
            "centre, click tracking) starts with it",
            hint="set NOTIFIER_SITE_URL to the site's public origin, e.g. "
            "https://notify.example.com",
            id="notifier.W020",
        )
    ]


@register()
def check_default_region(app_configs: Any = None, **kwargs: Any) -> list[CheckMessage]:
    """NOTIFIER_DEFAULT_REGION names a region whose national phone formats phonenumbers knows;
    a typo would otherwise make support's search quietly ignore every national number."""
    import phonenumbers
    from django.conf import settings

    region = settings.NOTIFIER_DEFAULT_REGION
    if not region or region in phonenumbers.SUPPORTED_REGIONS:
        return []
    return [
        Error(
            f"NOTIFIER_DEFAULT_REGION is {region!r}, which is not a region code phonenumbers knows",
            hint="an ISO 3166 code in capitals (CN, US, GB), or empty for numbers written "
            "with their country code only",
            id="notifier.E021",
        )
    ]


@register()
def check_public_rate_limits(app_configs: Any = None, **kwargs: Any) -> list[CheckMessage]:
    """NOTIFIER_PUBLIC_RATE_LIMITS and NOTIFIER_TRUSTED_PROXIES parse (else the first request
    would be the one to find out)."""
    from django.conf import settings
    from django.core.exceptions import ImproperlyConfigured

    from notifier.request_limits import GROUPS, limits, parse_networks

    errors: list[CheckMessage] = []
    try:
        for group in GROUPS:
            limits(group)
        parse_networks(settings.NOTIFIER_TRUSTED_PROXIES)
    except ImproperlyConfigured as exc:
        errors.append(Error(str(exc), id="notifier.E010"))
    return errors


@register()
def check_task_time_limits(app_configs: Any = None, **kwargs: Any) -> list[CheckMessage]:
    """The render tasks' time limits make sense together: a soft limit below its hard limit
    (else a slow render is killed without its message being failed with a reason), and deliver
    killed before its claims expire (else a live sender's deliveries are taken over and sent
    twice)."""
    from django.conf import settings

    errors: list[CheckMessage] = []
    for task in ("PREPARE", "DELIVER"):
        soft = getattr(settings, f"NOTIFIER_{task}_SOFT_TIME_LIMIT_S")
        hard = getattr(settings, f"NOTIFIER_{task}_TIME_LIMIT_S")
        if not 0 < soft < hard:
            errors.append(
                Error(
                    f"NOTIFIER_{task}_SOFT_TIME_LIMIT_S ({soft}) must be above 0 and below "
                    f"NOTIFIER_{task}_TIME_LIMIT_S ({hard})",
                    id="notifier.E011",
                )
            )
    email_timeout = getattr(settings, "EMAIL_TIMEOUT", None)
    if email_timeout is None:
        # Django's default: SMTP waits as long as the server keeps the connection open.
        errors.append(
            CheckWarning(
                "EMAIL_TIMEOUT is not set: an SMTP send can wait longer than the claim lease "
                f"(NOTIFIER_CLAIM_LEASE_S, {settings.NOTIFIER_CLAIM_LEASE_S} s), and a send "
                "still waiting when it runs out is re-queued and may be sent twice",
                hint="set EMAIL_TIMEOUT below NOTIFIER_CLAIM_LEASE_S, e.g. 10",
                id="notifier.W013",
            )
        )
    elif email_timeout >= settings.NOTIFIER_CLAIM_LEASE_S:
        errors.append(
            Error(
                f"NOTIFIER_CLAIM_LEASE_S ({settings.NOTIFIER_CLAIM_LEASE_S}) must be above "
                f"EMAIL_TIMEOUT ({settings.EMAIL_TIMEOUT}): a send still waiting for its "
                "provider when the lease runs out is re-queued and may be sent twice",
                id="notifier.E012",
            )
        )
    return errors


@register()
def check_no_sandbox_failover(app_configs: Any = None, **kwargs: Any) -> list[CheckMessage]:
    """A sandbox behind a real provider would mark real customers' messages sent and send
    nothing: refused with DEBUG off unless NOTIFIER_ALLOW_SANDBOX_FAILOVER says otherwise."""
    from django.core.exceptions import ImproperlyConfigured

    from channels.registry import sandbox_failover_refused, sandbox_stand_ins

    if not sandbox_failover_refused():
        return []
    try:
        found = sandbox_stand_ins()
    except ImproperlyConfigured:  # an unknown provider name: the start-up check says which
        return []
    return [
        Error(
            f"{problem}: with DEBUG off a sandbox must never take over from a real provider",
            hint="remove the sandbox from the chain (list a second real provider instead, see "
            "NOTIFIER_PROVIDER_INSTANCES), or set NOTIFIER_ALLOW_SANDBOX_FAILOVER=true where "
            "that is wanted (a staging site)",
            id="notifier.E201",
        )
        for problem in found
    ]


def _twilio_in_sms_chain() -> bool:
    """Is any provider of the SMS chain Twilio (the class, or a named instance of it)?"""
    from django.core.exceptions import ImproperlyConfigured

    from channels.base import Channel
    from channels.registry import provider_specs

    try:
        return any(spec.class_name == "twilio" for spec in provider_specs(Channel.SMS))
    except ImproperlyConfigured:  # the start-up check names the bad entry
        return False
