"""Message templates: where they live, which variables they need, and rendering them.

Templates are Jinja2 files rendered in a sandbox with StrictUndefined, so a template can reach
only the values it is given, and a missing variable is an error rather than a blank:

    templates/notifications/<type key>/<channel>.<part>.txt     e.g. order.shipped/sms.body.txt
    templates/notifications/<type key>/email.body.html          (optional HTML part)
    templates/notifications/<type key>/<locale>/...             per-locale overrides

Every template also sees `user` (first_name, last_name, name, locale), `site_name`, `site_url`
and `preferences_url` (a signed link to the user's preference page); marketing templates also
see `unsubscribe_url` (one click away from this category on this channel).
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from django.conf import settings
from jinja2 import (
    FileSystemLoader,
    StrictUndefined,
    Template,
    TemplateNotFound,
    meta,
    select_autoescape,
)
from jinja2.sandbox import SandboxedEnvironment, SecurityError
from markupsafe import escape

from channels.base import Channel, Content

NOTIFICATION_TEMPLATES_DIR = Path(settings.BASE_DIR) / "templates" / "notifications"
SYSTEM_VARIABLES = frozenset(
    {"user", "site_name", "site_url", "preferences_url", "unsubscribe_url"}
)
# What `user` holds in every template: plain values, never the model (no user.password, no
# user.delivery_set).
USER_FIELDS = frozenset({"first_name", "last_name", "name", "locale"})
# Templates render into messages: nothing a template computes needs to be bigger than this.
MAX_PRODUCT_LENGTH = 100_000
MAX_EXPONENT = 64
MAX_BITS = 4096


@dataclass(frozen=True)
class Part:
    name: str  # the Content field it fills
    filename: str  # file name without the type directory
    required: bool = True


PARTS: dict[Channel, tuple[Part, ...]] = {
    Channel.INAPP: (
        Part("title", "inapp.title.txt"),
        Part("body", "inapp.body.txt"),
        Part("link", "inapp.link.txt", required=False),
    ),
    Channel.EMAIL: (
        Part("subject", "email.subject.txt"),
        Part("body", "email.body.txt"),
        Part("html", "email.body.html", required=False),
    ),
    Channel.SMS: (Part("body", "sms.body.txt"),),
    Channel.PUSH: (
        Part("title", "push.title.txt"),
        Part("body", "push.body.txt"),
        Part("link", "push.link.txt", required=False),
    ),
}


class Lazy:
    """A template value made only if a template uses it: a signed link costs a signature, and
    most templates of most channels never print the preference or unsubscribe link."""

    __slots__ = ("_make", "_value")

    def __init__(self, make: Callable[[], str]) -> None:
        self._make = make
        self._value: str | None = None

    def __str__(self) -> str:
        if self._value is None:
            self._value = self._make()
        return self._value

    def __html__(self) -> str:  # autoescaped HTML templates escape it like any string
        return str(escape(str(self)))


class RenderError(Exception):
    """A template failed to render with a context that passed validation."""


class MessageSandbox(SandboxedEnvironment):
    """Jinja's sandbox (no `__class__`, `__globals__`, `mro`, no unsafe callables; `range` at
    most 100,000 items), plus bounds on the two operators that can exhaust a worker from one
    line of copy: `"x" * 10**9` and `9**9**9`."""

    intercepted_binops = frozenset({"*", "**"})

    def call_binop(self, context: Any, operator: str, left: Any, right: Any) -> Any:
        if operator == "**" and isinstance(right, int | float):
            grows = isinstance(left, int) and left.bit_length() * abs(right) > MAX_BITS
            if abs(right) > MAX_EXPONENT or grows:
                raise SecurityError("numbers this large are not allowed in a template")
        if operator == "*":
            for sequence, times in ((left, right), (right, left)):
                if (
                    isinstance(sequence, str | list | tuple)
                    and isinstance(times, int)
                    and len(sequence) * times > MAX_PRODUCT_LENGTH
                ):
                    raise SecurityError(
                        f"repeating to more than {MAX_PRODUCT_LENGTH:,} items is not allowed "
                        "in a template"
                    )
            if (
                isinstance(left, int)
                and isinstance(right, int)
                and left.bit_length() + right.bit_length() > MAX_BITS
            ):
                raise SecurityError("numbers this large are not allowed in a template")
        return super().call_binop(context, operator, left, right)


@functools.cache
def environment() -> SandboxedEnvironment:
    return MessageSandbox(
        loader=FileSystemLoader(NOTIFICATION_TEMPLATES_DIR),
        undefined=StrictUndefined,
        autoescape=select_autoescape(enabled_extensions=("html",), default_for_string=False),
        trim_blocks=True,
        lstrip_blocks=True,
        auto_reload=settings.DEBUG,
        cache_size=2000,
    )


def locale_chain(locale: str) -> list[str]:
    """'zh-hans-cn' -> ['zh-hans-cn', 'zh-hans', 'zh']; the default locale lives at the top."""
    pieces = locale.lower().split("-") if locale else []
    return ["-".join(pieces[:n]) for n in range(len(pieces), 0, -1)]


def template_names(type_key: str, part: Part, locale: str) -> list[str]:
    names = [f"{type_key}/{loc}/{part.filename}" for loc in locale_chain(locale)]
    names.append(f"{type_key}/{part.filename}")
    return names


def template_files(type_key: str, channel: Channel) -> list[Path]:
    """Every template file (all locales) for a type and channel."""
    base = NOTIFICATION_TEMPLATES_DIR / type_key
    if not base.is_dir():
        return []
    return sorted(p for p in base.rglob(f"{channel}.*") if p.is_file())


@functools.cache
def variables_used(type_key: str, channel: Channel) -> frozenset[str]:
    """Top-level variables the templates of one type and channel read, in every locale."""
    env = environment()
    used: set[str] = set()
    for path in template_files(type_key, channel):
        used |= meta.find_undeclared_variables(env.parse(path.read_text(encoding="utf-8")))
    return frozenset(used - SYSTEM_VARIABLES)


def missing_parts(type_key: str, channel: Channel) -> list[str]:
    """Required template files of the default locale that do not exist."""
    return [
        f"{type_key}/{part.filename}"
        for part in PARTS[channel]
        if part.required and not (NOTIFICATION_TEMPLATES_DIR / type_key / part.filename).is_file()
    ]


def template_context(context: Mapping[str, Any], user: Mapping[str, Any]) -> dict[str, Any]:
    return {
        **context,
        "user": dict(user),
        "site_name": settings.NOTIFIER_SITE_NAME,
        "site_url": settings.NOTIFIER_SITE_URL,
    }


@functools.lru_cache(maxsize=8192)
def _templates(
    type_key: str, channel: Channel, locale: str
) -> tuple[tuple[Part, Template | None], ...]:
    """Which file renders each part for a locale; resolved once per process (misses included)."""
    env = environment()
    found: list[tuple[Part, Template | None]] = []
    for part in PARTS[channel]:
        try:
            found.append((part, env.select_template(template_names(type_key, part, locale))))
        except TemplateNotFound:
            found.append((part, None))
    return tuple(found)


def render(type_key: str, channel: Channel, context: Mapping[str, Any], locale: str) -> Content:
    """Render every part of one channel; raises RenderError with the template's complaint."""
    rendered: dict[str, str] = {}
    for part, template in _templates(type_key, channel, locale):
        if template is None:
            if part.required:
                raise RenderError(f"no template {type_key}/{part.filename}")
            continue
        try:
            rendered[part.name] = template.render(context).strip()
        except Exception as exc:  # any template error, with the template's own words
            raise RenderError(f"{template.name}: {type(exc).__name__}: {exc}") from exc
    return Content.from_dict(rendered)
