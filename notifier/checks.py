"""System checks: every code-defined type has parseable templates for each of its channels."""

from __future__ import annotations

from typing import Any

from django.core.checks import CheckMessage, Error, register
from jinja2 import TemplateSyntaxError

from notifier.catalog import all_specs
from notifier.rendering import environment, missing_parts, template_files


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
                        hint=f"create templates/notifications/{missing}",
                        id="notifier.E001",
                    )
                )
            for path in template_files(spec.key, channel):
                try:
                    env.parse(path.read_text(encoding="utf-8"))
                except TemplateSyntaxError as exc:
                    errors.append(
                        Error(
                            f"template {path.name} of {spec.key!r} does not parse: {exc.message}"
                            f" (line {exc.lineno})",
                            id="notifier.E002",
                        )
                    )
    return errors


@register()
def check_public_rate_limits(app_configs: Any = None, **kwargs: Any) -> list[CheckMessage]:
    """NOTIFIER_PUBLIC_RATE_LIMITS and NOTIFIER_TRUSTED_PROXIES parse (else the first request
    would be the one to find out)."""
    from django.conf import settings
    from django.core.exceptions import ImproperlyConfigured

    from notifier.ratelimit import GROUPS, limits, parse_networks

    errors: list[CheckMessage] = []
    try:
        for group in GROUPS:
            limits(group)
        parse_networks(settings.NOTIFIER_TRUSTED_PROXIES)
    except ImproperlyConfigured as exc:
        errors.append(Error(str(exc), id="notifier.E010"))
    return errors
