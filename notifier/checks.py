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
