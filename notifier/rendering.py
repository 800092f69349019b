"""Message templates: where they live, which variables they need, and rendering them.

Templates are Jinja2 files rendered in a sandbox with StrictUndefined, so a template can reach
only the values it is given, and a missing variable is an error rather than a blank:

    notifications/<type key>/<channel>.<part>.txt     e.g. order.shipped/sms.body.txt
    notifications/<type key>/email.body.html          (optional HTML part)
    notifications/<type key>/<locale>/...             per-locale overrides

found in the directories of NOTIFIER_TEMPLATE_DIRS, then in each installed app's
templates/notifications/ in INSTALLED_APPS order (Notifier's own copy is in notifier/templates/):
a host overrides one file of a message by putting the same path in a directory found first.

Every template also sees `user` (first_name, last_name, name, locale, time_zone), `site_name`,
`site_url` and `preferences_url` (a signed link to the user's preference page); marketing
templates also see `unsubscribe_url` (one click away from this category on this channel). The
filters `localdate`, `localtime`, `localdatetime` and `money` write dates and amounts in the
recipient's locale and zone (notifier.local_formats).

The sandbox and the budget every render runs under live in notifier/sandbox.py.
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, cast

from django.apps import apps
from django.conf import settings
from jinja2 import (
    FileSystemLoader,
    StrictUndefined,
    TemplateNotFound,
    TemplateSyntaxError,
    meta,
    select_autoescape,
)
from jinja2.sandbox import SandboxedEnvironment
from markupsafe import escape

from channels.base import Channel, Content
from notifier import local_formats
from notifier.sandbox import (  # RenderError and RenderBudgetExceeded are raised from here
    BudgetedTemplate,
    MessageSandbox,
    RenderBudgetExceeded,
    RenderError,
    SharedContext,
    budgeted_filter,
    python_limit_as_budget,
    render_budget,
)

SYSTEM_VARIABLES = frozenset(
    {"user", "site_name", "site_url", "preferences_url", "unsubscribe_url", "digest"}
)
# What `user` holds in every template: plain values, never the model (no user.password, no
# user.delivery_set).
USER_FIELDS = frozenset({"first_name", "last_name", "name", "locale", "time_zone"})
# A failure's text is kept on each delivery it fails: the template's complaint, not a novel.
MAX_ERROR_CHARS = 500


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


def render_failure(where: str, exc: BaseException, *, with_kind: bool = True) -> RenderError:
    """The RenderError for a template that failed, its complaint cut to MAX_ERROR_CHARS; a
    budget breach keeps its class (workers and previews tell it apart)."""
    exc = python_limit_as_budget(exc)
    if isinstance(exc, RenderBudgetExceeded) or not with_kind:
        text = f"{where}: {exc}"
    else:
        text = f"{where}: {type(exc).__name__}: {exc}"
    if len(text) > MAX_ERROR_CHARS:
        text = text[: MAX_ERROR_CHARS - 1] + "…"
    return (RenderBudgetExceeded if isinstance(exc, RenderBudgetExceeded) else RenderError)(text)


def compile_failure(exc: BaseException) -> str:
    """Why a template cannot compile, in words: Jinja's own message for its syntax errors, and
    Python's limits (nesting, size) said as what to change."""
    if isinstance(exc, TemplateSyntaxError):
        return f"line {exc.lineno}: {exc.message}"
    if isinstance(exc, RecursionError | MemoryError) or "nest" in str(exc):
        return (
            "it nests too deeply to compile (brackets, loops, conditions or a long chain of "
            "+ or ~): split it into simpler pieces"
        )
    return f"it cannot be compiled ({type(exc).__name__}: {exc}): simplify it"


# What compiling a template can raise besides Jinja's syntax errors: Python's own limits on
# the code Jinja generates (too many nested blocks, nesting too deep for the parser or the
# recursion limit, not enough memory).
COMPILE_ERRORS = (
    TemplateSyntaxError,
    SyntaxError,
    RecursionError,
    MemoryError,
    OverflowError,
    ValueError,
)


@functools.cache
def template_dirs() -> tuple[Path, ...]:
    """Where message templates are looked up, first match wins (see the module's docstring)."""
    dirs = [Path(d) for d in settings.NOTIFIER_TEMPLATE_DIRS]
    for app_config in apps.get_app_configs():
        found = Path(app_config.path) / "templates" / "notifications"
        if found.is_dir():
            dirs.append(found)
    return tuple(dirs)


def template_file(name: str) -> Path | None:
    """The file a template name resolves to, as the loader finds it."""
    for directory in template_dirs():
        path = directory / name
        if path.is_file():
            return path
    return None


@functools.cache
def environment() -> SandboxedEnvironment:
    env = MessageSandbox(
        loader=FileSystemLoader(template_dirs()),
        undefined=StrictUndefined,
        autoescape=select_autoescape(enabled_extensions=("html",), default_for_string=False),
        trim_blocks=True,
        lstrip_blocks=True,
        auto_reload=settings.DEBUG,
        cache_size=2000,
    )
    # Dates and money in the recipient's locale and zone, under the render budget like the rest.
    env.filters.update(
        {name: budgeted_filter(name, func) for name, func in local_formats.FILTERS.items()}
    )
    return env


def locale_chain(locale: str) -> list[str]:
    """'zh-hans-cn' -> ['zh-hans-cn', 'zh-hans', 'zh']; the default locale lives at the top."""
    pieces = locale.lower().split("-") if locale else []
    return ["-".join(pieces[:n]) for n in range(len(pieces), 0, -1)]


def template_names(type_key: str, part: Part, locale: str) -> list[str]:
    names = [f"{type_key}/{loc}/{part.filename}" for loc in locale_chain(locale)]
    names.append(f"{type_key}/{part.filename}")
    return names


def template_files(type_key: str, channel: Channel) -> list[Path]:
    """Every template file (all locales) for a type and channel: for each name, the file the
    loader uses."""
    names: set[str] = set()
    for directory in template_dirs():
        base = directory / type_key
        if base.is_dir():
            names |= {
                p.relative_to(directory).as_posix()
                for p in base.rglob(f"{channel}.*")
                if p.is_file()
            }
    return sorted(path for name in names if (path := template_file(name)) is not None)


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
        if part.required and template_file(f"{type_key}/{part.filename}") is None
    ]


def template_context(context: Mapping[str, Any], user: Mapping[str, Any]) -> dict[str, Any]:
    return {
        **context,
        # A digest's message carries what it collected (notifier.services.digests); every
        # other message renders with none, so a type's templates can ask `{% if digest %}`.
        "digest": context.get("digest"),
        "user": dict(user),
        "site_name": settings.NOTIFIER_SITE_NAME,
        # Without a trailing slash: templates write {{ site_url }}/account/reset/.
        "site_url": settings.NOTIFIER_SITE_URL.rstrip("/"),
    }


@functools.lru_cache(maxsize=8192)
def _templates(
    type_key: str, channel: Channel, locale: str
) -> tuple[tuple[Part, BudgetedTemplate | RenderError | None], ...]:
    """Which file renders each part for a locale; resolved once per process (misses included,
    and a file that cannot compile, as the RenderError each render of it raises)."""
    env = environment()
    found: list[tuple[Part, BudgetedTemplate | RenderError | None]] = []
    for part in PARTS[channel]:
        names = template_names(type_key, part, locale)
        try:
            found.append((part, cast(BudgetedTemplate, env.select_template(names))))
        except TemplateNotFound:
            found.append((part, None))
        except COMPILE_ERRORS as exc:
            found.append((part, RenderError(f"{names[0]}: {compile_failure(exc)}")))
    return tuple(found)


def render(type_key: str, channel: Channel, context: Mapping[str, Any], locale: str) -> Content:
    """Render every part of one channel under one budget; raises RenderError with the
    template's complaint (RenderBudgetExceeded when it went over the budget)."""
    rendered: dict[str, str] = {}
    if "digest" not in context:  # a caller other than the pipeline (a preview, a check)
        context = {**context, "digest": None}
    shared = SharedContext(context)
    with render_budget(fresh=True):
        for part, template in _templates(type_key, channel, locale):
            if template is None:
                if part.required:
                    raise RenderError(f"no template {type_key}/{part.filename}")
                continue
            if isinstance(template, RenderError):
                raise RenderError(str(template))  # a fresh one: a raised error keeps its trace
            try:
                rendered[part.name] = template.render_shared(shared).strip()
            except Exception as exc:  # any template error, with the template's own words
                raise render_failure(str(template.name), exc) from exc
    return Content.from_dict(rendered)
