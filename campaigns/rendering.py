"""Campaign copy: marketers' templates stored per variant, channel and locale, rendered with the
same sandboxed Jinja environment as the code-defined types, and validated before they are saved.

A campaign template sees the campaign's `variables`, `campaign` (name, event time in the
user's zone), and the system variables every template has (`user`, `site_name`, `site_url`,
`preferences_url`, `unsubscribe_url`). Nothing else: the sandbox refuses attribute tricks and
StrictUndefined refuses unknown names.
"""

from __future__ import annotations

import time
from collections.abc import Iterable, Mapping
from typing import Any

from jinja2 import Template, TemplateSyntaxError, meta, nodes

from channels.base import Channel, Content
from notifier.rendering import (
    PARTS,
    SYSTEM_VARIABLES,
    USER_FIELDS,
    RenderError,
    environment,
    locale_chain,
)

CACHE_TTL_S = 30.0
CAMPAIGN_VARIABLES = frozenset({"campaign"})
# The keys of the plain dicts `user` and `campaign` (see campaigns.services.previews).
DICT_FIELDS = {"user": USER_FIELDS, "campaign": frozenset({"name", "event_at"})}
PART_FIELDS = ("subject", "title", "body", "html", "link")

Compiled = dict[tuple[str, str], dict[str, Template]]  # (channel, locale) -> part -> template
_cache: dict[int, tuple[float, Compiled]] = {}


def allowed_variables(campaign_variables: Iterable[str]) -> frozenset[str]:
    return SYSTEM_VARIABLES | CAMPAIGN_VARIABLES | frozenset(campaign_variables)


def template_problems(source: str, *, allowed: frozenset[str]) -> list[str]:
    """What is wrong with a marketer's template: a syntax error, or names it cannot use."""
    if not source:
        return []
    try:
        parsed = environment().parse(source)
    except TemplateSyntaxError as exc:
        return [f"line {exc.lineno}: {exc.message}"]
    unknown = sorted(meta.find_undeclared_variables(parsed) - allowed)
    if unknown:
        known = ", ".join(sorted(allowed))
        return [
            f"unknown variable{'s' if len(unknown) > 1 else ''} {', '.join(unknown)}; "
            f"use one of: {known}, or add it to the campaign's variables"
        ]
    return _reach_problems(parsed)


def _key(node: nodes.Getattr | nodes.Getitem) -> str | None:
    """The attribute or constant key a lookup reads; None for a computed one (`x[i]`)."""
    if isinstance(node, nodes.Getattr):
        return node.attr
    if isinstance(node.arg, nodes.Const) and isinstance(node.arg.value, str):
        return node.arg.value
    return None


def _reach_problems(parsed: nodes.Template) -> list[str]:
    """Lookups the sandbox would refuse while rendering, said at save time in words: internal
    names (`__class__`, `_meta`), and fields `user` and `campaign` do not have (`user.password`,
    `user.delivery_set`: they are plain values, not the database rows)."""
    problems: list[str] = []
    lookups: list[nodes.Getattr | nodes.Getitem] = [
        *parsed.find_all(nodes.Getattr),
        *parsed.find_all(nodes.Getitem),
    ]
    for filter_node in parsed.find_all(nodes.Filter):
        if filter_node.name == "attr" and filter_node.args:
            name = filter_node.args[0]
            if isinstance(name, nodes.Const) and str(name.value).startswith("_"):
                problems.append(f"line {filter_node.lineno}: '{name.value}' is internal")
    for node in sorted(lookups, key=lambda n: n.lineno):
        key = _key(node)
        if key is None:
            continue
        if key.startswith("_") or key in ("mro", "func_globals", "gi_frame"):
            problems.append(
                f"line {node.lineno}: '{key}' is internal; templates read only the values listed"
            )
        elif isinstance(node.node, nodes.Name) and node.node.name in DICT_FIELDS:
            owner = node.node.name
            if key not in DICT_FIELDS[owner]:
                problems.append(
                    f"line {node.lineno}: {owner} has no {key!r}; it has "
                    f"{', '.join(sorted(DICT_FIELDS[owner]))}"
                )
    return problems


def required_parts(channel: Channel) -> list[str]:
    """The parts a channel cannot go without (subject and body for email, ...)."""
    names = {"email.body.txt": "body", "email.body.html": "html"}
    return [names.get(part.filename, part.name) for part in PARTS[channel] if part.required]


def _compile(variant_id: int) -> Compiled:
    from campaigns.models import VariantTemplate

    env = environment()
    compiled: Compiled = {}
    for row in VariantTemplate.objects.filter(variant_id=variant_id):
        compiled[(row.channel, row.locale)] = {
            part: env.from_string(source) for part in PART_FIELDS if (source := getattr(row, part))
        }
    return compiled


def variant_templates(variant_id: int) -> Compiled:
    """Compiled templates of a variant, cached per process for CACHE_TTL_S."""
    now = time.monotonic()
    hit = _cache.get(variant_id)
    if hit is not None and now - hit[0] < CACHE_TTL_S:
        return hit[1]
    compiled = _compile(variant_id)
    _cache[variant_id] = (now, compiled)
    return compiled


def variant_cache_clear() -> None:
    _cache.clear()


def render_variant(
    variant_id: int,
    channel: Channel,
    context: Mapping[str, Any],
    locale: str,
    *,
    fresh: bool = False,
) -> Content:
    """Render a variant's copy for one channel, in the user's locale or the default one.

    `fresh` skips the per-process cache: a marketer's test send right after an edit must show
    the edit. (Approved campaigns cannot be edited, so real sends never see stale copy.)"""
    compiled = _compile(variant_id) if fresh else variant_templates(variant_id)
    for loc in [*locale_chain(locale), ""]:
        parts = compiled.get((str(channel), loc))
        if parts:
            break
    else:
        raise RenderError(f"variant {variant_id} has no {channel} copy")
    rendered: dict[str, str] = {}
    for part, template in parts.items():
        try:
            rendered[part] = template.render(context).strip()
        except Exception as exc:  # any template error, in the template's own words
            raise RenderError(f"variant {variant_id} {channel} {part}: {exc}") from exc
    return Content.from_dict(rendered)
