"""Campaign copy: marketers' templates stored per variant, channel and locale, rendered with the
same sandboxed Jinja environment as the code-defined types, and validated before they are saved.

A campaign template sees the campaign's `variables`, `campaign` (name, event time in the
user's zone), `event_at` (the same time, for `{{ event_at|localdatetime }}`: see
notifier.local_formats for the date and money filters), and the system variables every
template has (`user`, `site_name`, `site_url`, `preferences_url`, `unsubscribe_url`); its
`user` also holds the customer's segment attributes (`PERSONA_FIELDS`: spend tier, activity,
interests, points; see campaigns.personas). Nothing else: the sandbox refuses attribute
tricks and StrictUndefined refuses unknown names, and a
`user.<name>` it does not have is refused when the copy is saved.

A variant's copy is kept per (channel, locale, persona): `copy_key` chooses, the customer's
locale first, then their persona's copy before the copy for everyone.

Copy is checked before it is saved: it parses, names only what it may use, compiles (Python's
limits on nesting included), and one channel's parts render together within what a marketer's
copy may cost for one customer (NOTIFIER_COPY_MAX_*, far below the runtime budget of
notifier/sandbox.py: every recipient of a campaign pays it) for a representative customer.
Checks are remembered per process, and every request that checks copy does so within one time
budget (`TimeBudget`) for all its parts. Copy stored by other means that cannot compile fails
as a RenderError of its variant, like any copy that cannot render.
"""

from __future__ import annotations

import functools
import hashlib
import json
import threading
import time
import weakref
from collections import OrderedDict
from collections.abc import Collection, Iterable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from typing import Any, cast

from django.conf import settings
from jinja2 import Template, meta, nodes, pass_context

from channels.base import Channel, Content
from notifier import local_formats
from notifier.links import preferences_url, unsubscribe_url
from notifier.rendering import (
    COMPILE_ERRORS,
    PARTS,
    SYSTEM_VARIABLES,
    USER_FIELDS,
    RenderBudgetExceeded,
    RenderError,
    compile_failure,
    environment,
    locale_chain,
    render_budget,
    render_failure,
)
from notifier.sandbox import (
    BudgetedTemplate,
    RenderTooSlow,
    SharedContext,
    copy_limits,
    python_limit_as_budget,
)

CACHE_TTL_S = 30.0
CAMPAIGN_VARIABLES = frozenset({"campaign", "event_at"})
# What campaign copy reads of `user` beyond the name and locale every template has: the
# customer's segment attributes (campaigns.personas).
PERSONA_FIELDS = frozenset(
    {"spend_tier", "activity", "interests", "points", "points_expiring", "points_expire_on"}
)
CAMPAIGN_USER_FIELDS = USER_FIELDS | PERSONA_FIELDS
# The keys of the plain dicts `user` and `campaign` (see campaigns.services.previews).
DICT_FIELDS = {"user": CAMPAIGN_USER_FIELDS, "campaign": frozenset({"name", "event_at"})}
# The persona of the copy everyone else gets; the spend tiers among the personas (the others
# are activity states: campaigns.personas).
EVERYONE = ""
SPEND_TIERS = frozenset({"whale", "dolphin", "small_fish"})
PART_FIELDS = ("subject", "title", "body", "html", "link")
# Jinja compiles about 20,000 elements (text, tags, names, filters) a second, parsing included:
# copy bigger than this would cost each worker process a quarter of a second every CACHE_TTL_S.
# A long HTML email is far smaller (a hundred variables in 50,000 characters: ~500 elements).
MAX_COPY_CHARS = 100_000
MAX_COPY_ELEMENTS = 5_000

# (channel, locale, persona) -> part -> template
Compiled = dict[tuple[str, str, str], dict[str, BudgetedTemplate | RenderError]]
_cache: dict[int, tuple[float, Compiled]] = {}


def allowed_variables(campaign_variables: Iterable[str]) -> frozenset[str]:
    return SYSTEM_VARIABLES | CAMPAIGN_VARIABLES | frozenset(campaign_variables)


@dataclass
class TimeBudget:
    """The wall-clock time one request may spend on marketers' copy, shared by everything it
    renders or tries: a preview page's cells, or the trial renders of a save, a submit, an
    approval or a test send. A page of many steps, variants, channels and locales holds a web
    worker no longer than this, however slow or plentiful its copy."""

    seconds: float
    started: float = field(default_factory=time.monotonic)

    def left(self) -> float:
        return self.seconds - (time.monotonic() - self.started)


# Trial results remembered per process, by a digest of what decides them: re-checking unchanged
# copy (every submit, approval, test send and save re-checks it) costs a dictionary lookup.
CHECKED_MAX = 4096
_checked: OrderedDict[str, dict[str, list[str]]] = OrderedDict()
_checked_lock = threading.Lock()


def copy_problems(
    parts: Mapping[str, str],
    *,
    allowed: frozenset[str],
    variables: Mapping[str, Any] | None = None,
    budget: TimeBudget | None = None,
    persona: str = EVERYONE,
) -> dict[str, list[str]]:
    """What is wrong with one channel's copy (its parts: subject, body, html...), part by part:
    too long, a syntax error, names it cannot use, code Python cannot compile, or more work for
    a representative customer than a marketer's copy may take (`variables`: the campaign's
    values; names without one get a long placeholder). The parts are tried together, under one
    budget of NOTIFIER_COPY_MAX_STEPS and NOTIFIER_COPY_MAX_SECONDS, as they render for each
    recipient. Parts without problems are left out. Copy for one `persona` is tried with a
    customer of that persona.

    Remembered per process. `budget` is the request's: once it is spent, copy not already
    remembered is not tried, and says so."""
    parts = {part: source for part, source in parts.items() if source}
    if not parts:
        return {}
    key = _check_key(parts, allowed, variables, persona)
    with _checked_lock:
        known = _checked.get(key)
        if known is not None:
            _checked.move_to_end(key)
            return {part: list(found) for part, found in known.items()}
    if budget is not None and budget.left() <= 0:
        return {
            next(iter(parts)): [
                f"not checked yet: trying the copy took more than {budget.seconds:g} s in all; "
                "try again, and the check goes on where it stopped"
            ]
        }
    problems: dict[str, list[str]] = {}
    templates: dict[str, Template] = {}
    for part, source in parts.items():
        compiled = _compiled_copy(source, allowed)
        if isinstance(compiled, Template):
            templates[part] = compiled
        else:
            problems[part] = compiled
    over = _trial(templates, trial_context(allowed, variables, persona=persona))
    if over is not None:
        part, problem = over
        problems.setdefault(part, []).append(problem)
    with _checked_lock:
        _checked[key] = {part: list(found) for part, found in problems.items()}
        while len(_checked) > CHECKED_MAX:
            _checked.popitem(last=False)
    return problems


def template_problems(
    source: str,
    *,
    allowed: frozenset[str],
    variables: Mapping[str, Any] | None = None,
    budget: TimeBudget | None = None,
) -> list[str]:
    """`copy_problems` of a template on its own."""
    return copy_problems({"part": source}, allowed=allowed, variables=variables, budget=budget).get(
        "part", []
    )


def checked_copy_clear() -> None:
    with _checked_lock:
        _checked.clear()


def _check_key(
    parts: Mapping[str, str],
    allowed: frozenset[str],
    variables: Mapping[str, Any] | None,
    persona: str,
) -> str:
    decided_by = [sorted(parts.items()), sorted(allowed), variables or {}, copy_limits(), persona]
    text = json.dumps(decided_by, sort_keys=True, default=str, separators=(",", ":"))
    return hashlib.sha256(text.encode()).hexdigest()


def _compiled_copy(source: str, allowed: frozenset[str]) -> Template | list[str]:
    """The copy compiled, or what stops it: too long, a syntax error, names it cannot use,
    lookups the sandbox would refuse, code Python cannot compile."""
    try:
        parsed = _parse_copy(source)
        unknown = sorted(meta.find_undeclared_variables(parsed) - allowed)
        reach = _reach_problems(parsed)
    except RenderError as exc:
        return [str(exc)]
    except COMPILE_ERRORS as exc:  # nesting too deep for the analysis itself
        return [compile_failure(exc)]
    if unknown:
        known = ", ".join(sorted(allowed))
        return [
            f"unknown variable{'s' if len(unknown) > 1 else ''} {', '.join(unknown)}; "
            f"use one of: {known}, or add it to the campaign's variables"
        ]
    if reach:
        return reach
    try:
        return _compile_parsed(parsed)
    except RenderError as exc:
        return [str(exc)]


def _parse_copy(source: str) -> nodes.Template:
    """The copy parsed; RenderError, in words, when it is too long or too big to compile
    quickly, or cannot be read."""
    if len(source) > MAX_COPY_CHARS:
        raise RenderError(
            f"it is {len(source):,} characters long; copy may have at most {MAX_COPY_CHARS:,}"
        )
    try:
        parsed = environment().parse(source)
        elements = sum(1 for _ in parsed.find_all(nodes.Node))
    except COMPILE_ERRORS as exc:
        raise RenderError(compile_failure(exc)) from exc
    if elements > MAX_COPY_ELEMENTS:
        raise RenderError(
            f"it has {elements:,} elements (text, tags, variables, filters); copy may have at "
            f"most {MAX_COPY_ELEMENTS:,}: split it, or repeat less"
        )
    return parsed


def compile_copy(source: str) -> BudgetedTemplate:
    """A marketer's template, compiled; RenderError saying what to change when it cannot be
    (too long, nested too deeply for Python, a syntax error)."""
    return _compile_parsed(_parse_copy(source))


def _compile_parsed(parsed: nodes.Template) -> BudgetedTemplate:
    try:
        return cast(BudgetedTemplate, environment().from_string(parsed))
    except COMPILE_ERRORS as exc:
        raise RenderError(compile_failure(exc)) from exc


# A long but real name, with the lengths the user model allows: copy that loops over a name
# or pads it is tried with the worst a customer can have.
TRIAL_FIRST_NAME = ("Maximiliana-Konstantina " * 7)[:150].strip()
TRIAL_LAST_NAME = ("Wolfeschlegelsteinhausenbergerdorff " * 5)[:150].strip()
TRIAL_TEXT = ("Everything in the autumn collection is thirty percent off this week. " * 3)[:200]
# As many interest tags as the taxonomy has (seed 003: 200-odd), each as long as a real one.
TRIAL_INTERESTS = [f"interest-tag-number-{n:03d}" for n in range(200)]


def trial_context(
    allowed: frozenset[str], variables: Mapping[str, Any] | None, *, persona: str = EVERYONE
) -> dict[str, Any]:
    """What a save-time trial render gives the copy: the campaign's values (a long placeholder
    for a name without one), a customer with long realistic fields (of `persona`, for copy
    written for one), real signed links."""
    context: dict[str, Any] = {name: TRIAL_TEXT for name in allowed - SYSTEM_VARIABLES}
    context.update(variables or {})
    trial_user = 2**31 - 1
    context.update(
        user={
            "first_name": TRIAL_FIRST_NAME,
            "last_name": TRIAL_LAST_NAME,
            "name": f"{TRIAL_FIRST_NAME} {TRIAL_LAST_NAME}",
            "locale": "zh-hans-cn",
            "time_zone": "Asia/Shanghai",
            "spend_tier": "small_fish",
            "activity": "dormant",
            "interests": TRIAL_INTERESTS,
            "points": 2_000_000_000,
            "points_expiring": 2_000_000_000,
            "points_expire_on": "2030-12-31",
        },
        site_name=settings.NOTIFIER_SITE_NAME,
        site_url=settings.NOTIFIER_SITE_URL.rstrip("/"),
        preferences_url=preferences_url(user_id=trial_user),
        unsubscribe_url=unsubscribe_url(
            user_id=trial_user, category="marketing", channel="email", message_id=2**62
        ),
        campaign={"name": TRIAL_TEXT, "event_at": "2030-12-31 23:59"},
        event_at="2030-12-31 23:59",
    )
    if persona in SPEND_TIERS:
        context["user"]["spend_tier"] = persona
    elif persona:
        context["user"]["activity"] = persona
    return context


def _trial(templates: Mapping[str, Template], context: Mapping[str, Any]) -> tuple[str, str] | None:
    """The part where one channel's parts, rendered in turn under one copy budget, went over
    it, and how; None when they fit. Time is the one meter a busy CPU can push over: copy over
    it on time alone is tried once more, and refused when it is over again."""
    over = _render_together(templates, context)
    if over is not None and isinstance(over[1], RenderTooSlow):
        over = _render_together(templates, context)
    return None if over is None else (over[0], str(over[1]))


def _render_together(
    templates: Mapping[str, Template], context: Mapping[str, Any]
) -> tuple[str, RenderBudgetExceeded] | None:
    """Any error but the budget's is not the copy's alone: it depends on the values (the
    preview shows it for a real customer), so it is not refused."""
    with render_budget(copy_limits(), fresh=True) as budget:
        for part, template in templates.items():
            try:
                template.render(context)
                budget.check_clock()  # the part it ran out of time in, not the next one
            except Exception as exc:
                over = python_limit_as_budget(exc)  # a macro calling itself without end
                if isinstance(over, RenderBudgetExceeded):
                    return part, over
    return None


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
        problems.extend(_filter_argument_problems(filter_node))
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


def _filter_argument_problems(node: nodes.Filter) -> list[str]:
    """A date format or currency the copy writes as a constant, checked when it is saved (a
    value that only arrives at render time fails that render, in the same words)."""
    if node.name not in local_formats.FILTERS or not node.args:
        return []
    argument = node.args[0]
    if not isinstance(argument, nodes.Const):
        return []
    if node.name in local_formats.MOMENT_FILTERS:
        problem = local_formats.format_problem(argument.value)
    else:
        problem = local_formats.currency_problem(argument.value)
    return [] if problem is None else [f"line {node.lineno}: {node.name}: {problem}"]


def channel_parts(channel: str) -> tuple[str, ...]:
    """The parts of copy a channel uses (an SMS is its body alone); the others are not sent."""
    try:
        return tuple(part.name for part in PARTS[Channel(channel)])
    except ValueError:
        return ()


# GSM 03.38: the characters an SMS sends in 7 bits (one segment: 160 of them), and those of its
# extension table, which take two. Anything else sends the whole text as UCS-2 (70).
GSM_BASIC = frozenset(
    "@£$¥èéùìòÇ\nØø\rÅåΔ_ΦΓΛΩΠΨΣΘΞÆæßÉ !\"#¤%&'()*+,-./0123456789:;<=>?"
    "¡ABCDEFGHIJKLMNOPQRSTUVWXYZÄÖÑÜ§¿abcdefghijklmnopqrstuvwxyzäöñüà"
)
GSM_EXTENDED = frozenset("^{}\\[~]|€\f")


@dataclass(frozen=True)
class SmsLength:
    encoding: str  # "GSM-7" or "UCS-2"
    units: int  # characters as the network counts them
    segments: int

    def __str__(self) -> str:
        parts = "1 message" if self.segments == 1 else f"{self.segments} messages"
        return f"{self.units} characters ({self.encoding}): {parts}"


def sms_length(text: str) -> SmsLength:
    """How an SMS of `text` is sent: GSM-7 (160 a message, 153 each when split) unless a
    character is outside it, then UCS-2 (70, 67 when split; an emoji counts two)."""
    if all(char in GSM_BASIC or char in GSM_EXTENDED for char in text):
        units = sum(2 if char in GSM_EXTENDED else 1 for char in text)
        single, split, encoding = 160, 153, "GSM-7"
    else:
        units = len(text.encode("utf-16-le")) // 2
        single, split, encoding = 70, 67, "UCS-2"
    segments = 1 if units <= single else -(-units // split)
    return SmsLength(encoding, units, segments)


TEST_MARK = "[Test] "


def marked_as_test(content: Content) -> Content:
    """A test send's copy, marked so that nobody takes it for the real one: its subject or
    title starts with "[Test] " (an SMS, which has neither, its body)."""
    marked = {
        part: TEST_MARK + value
        for part in ("subject", "title")
        if (value := getattr(content, part)) and not value.startswith(TEST_MARK)
    }
    if not content.subject and not content.title and not content.body.startswith(TEST_MARK):
        marked["body"] = TEST_MARK + content.body
    return replace(content, **marked)


def required_parts(channel: Channel) -> list[str]:
    """The parts a channel cannot go without (subject and body for email, ...)."""
    names = {"email.body.txt": "body", "email.body.html": "html"}
    return [names.get(part.filename, part.name) for part in PARTS[channel] if part.required]


def _compile(variant_id: int) -> Compiled:
    """A variant's copy compiled; a part that cannot be is kept as the RenderError each render
    of it raises, so it fails its own messages and no others."""
    from campaigns.models import VariantTemplate

    compiled: Compiled = {}
    for row in VariantTemplate.objects.filter(variant_id=variant_id):
        parts = {
            part: _compiled_or_error(source)
            for part in PART_FIELDS
            if (source := getattr(row, part))
        }
        if parts:  # a row with every part empty is no copy: the next in line is used
            compiled[(row.channel, row.locale, row.persona)] = parts
    return compiled


def _compiled_or_error(source: str) -> BudgetedTemplate | RenderError:
    try:
        parsed = _parse_copy(source)
        reuse_names = _reuse_names(parsed)  # before compiling: the code generator edits loops
        template = _compile_parsed(parsed)
    except RenderError as exc:
        return exc
    if reuse_names is not None:
        _reusable[template] = reuse_names
    return template


# --- Parts rendered once per batch ----------------------------------------------------------
#
# A part that reads nothing of the customer (a subject of the campaign's name and headline, an
# in-app link) renders to the same text for everyone of a batch who has the same values for
# the names it reads (`campaign` and `event_at` differ only by time zone): it is rendered once,
# and its text reused with the steps and characters it cost charged to each render's budget,
# so the budget meters what it always did.

# Names whose value is the customer's own.
PER_RECIPIENT = frozenset({"user", "preferences_url", "unsubscribe_url"})
# Filters whose text is not a function of what they are given: `random`, and the date and money
# filters, which read the customer's zone and locale from the context. Any other filter or test
# that is handed the context counts too (`_context_readers`): `map`, `select`, `reject`,
# `selectattr` and `rejectattr` pass it on to the filter or test they name (`map('money')`).
UNREPEATABLE_FILTERS = frozenset({"random", *local_formats.FILTERS})
# Calls (a method could change a value a later part reads) and templates brought in with the
# whole context.
UNREPEATABLE_NODES = (
    nodes.Call,
    nodes.Include,
    nodes.Import,
    nodes.FromImport,
    nodes.Extends,
)
_reusable: weakref.WeakKeyDictionary[Template, tuple[str, ...]] = weakref.WeakKeyDictionary()
# (template, the values of the names it reads) -> (text, steps, characters)
Reused = dict[tuple[Any, ...], tuple[str, int, int]]
_UNFROZEN = object()


def _reuse_names(parsed: nodes.Template) -> tuple[str, ...] | None:
    """The names a part's text depends on when it can be reused across a batch, else None."""
    names = meta.find_undeclared_variables(parsed)
    if names & PER_RECIPIENT or next(parsed.find_all(UNREPEATABLE_NODES), None) is not None:
        return None
    filters, tests = _context_readers()
    if any(
        node.name in UNREPEATABLE_FILTERS or node.name in filters
        for node in parsed.find_all(nodes.Filter)
    ):
        return None
    if any(node.name in tests for node in parsed.find_all(nodes.Test)):
        return None
    return tuple(sorted(names))


@functools.cache
def _context_readers() -> tuple[frozenset[str], frozenset[str]]:
    """The names of the copy environment's filters and tests that are handed the render's
    context (`@pass_context`): what they give can depend on the customer whatever they are
    given."""
    env = environment()

    def readers(functions: Mapping[str, Any]) -> frozenset[str]:
        return frozenset(
            name
            for name, function in functions.items()
            if getattr(function, "jinja_pass_arg", None) is _PASS_CONTEXT
        )

    return readers(env.filters), readers(env.tests)


_PASS_CONTEXT = getattr(pass_context(lambda: None), "jinja_pass_arg", None)


def _frozen(value: Any) -> Any:
    """A hashable stand-in for a plain value, equal only for values that print the same (1,
    1.0, True and "1" differ); _UNFROZEN for anything else."""
    kind = type(value)
    if kind is str or kind is int or kind is bool or value is None:
        return (kind, value)
    if kind is float:
        return (kind, repr(value))  # -0.0 == 0.0, but prints otherwise
    if kind is list or kind is tuple:
        items = tuple(_frozen(item) for item in value)
        return _UNFROZEN if _UNFROZEN in items else (kind, items)
    if kind is dict:
        pairs = tuple((_frozen(key), _frozen(item)) for key, item in value.items())
        return _UNFROZEN if any(_UNFROZEN in pair for pair in pairs) else (kind, pairs)
    return _UNFROZEN


def _reuse_key(
    template: Template, names: tuple[str, ...], context: Mapping[str, Any]
) -> tuple[Any, ...] | None:
    values = tuple(_frozen(context.get(name, _UNFROZEN)) for name in names)
    return None if _UNFROZEN in values else (template, values)


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


def copy_key(
    available: Collection[tuple[str, str, str]],
    channel: str,
    locale: str,
    personas: Sequence[str] = (),
) -> tuple[str, str, str] | None:
    """Which (channel, locale, persona) copy a customer gets: the first locale of their chain
    (the default one last) with copy for them, in it their first persona with copy of its own
    (`personas`: their spend tier, then their activity state), else the copy for everyone."""
    for loc in [*locale_chain(locale), ""]:
        for persona in (*personas, EVERYONE):
            if (channel, loc, persona) in available:
                return (channel, loc, persona)
    return None


def render_variant(
    variant_id: int,
    channel: Channel,
    context: Mapping[str, Any],
    locale: str,
    *,
    personas: Sequence[str] = (),
    fresh: bool = False,
    reused: Reused | None = None,
) -> Content:
    """Render a variant's copy for one channel, in the user's locale or the default one, for
    their persona (`personas`, see `copy_key`) or everyone.

    `fresh` skips the per-process cache: a marketer's test send right after an edit must show
    the edit. (Approved campaigns cannot be edited, so real sends never see stale copy.)
    `reused`: a batch's parts that read nothing of the customer, rendered once (see above)."""
    compiled = _compile(variant_id) if fresh else variant_templates(variant_id)
    key = copy_key(compiled.keys(), str(channel), locale, personas)
    if key is None:
        raise RenderError(f"variant {variant_id} has no {channel} copy")
    parts = compiled[key]
    rendered: dict[str, str] = {}
    shared = SharedContext(context)
    with render_budget(fresh=True) as budget:  # one budget for the channel's parts
        for part, template in parts.items():
            if isinstance(template, RenderError):
                raise RenderError(f"variant {variant_id} {channel} {part}: {template}")
            names = None if reused is None else _reusable.get(template)
            same_as = None if names is None else _reuse_key(template, names, context)
            try:
                if same_as is not None and reused is not None and same_as in reused:
                    rendered[part], steps, chars = reused[same_as]
                    budget.charge(steps)  # what rendering it costs, as if it did
                    budget.spend(chars)
                    continue
                steps_left, chars_left = budget.steps_left, budget.chars_left
                rendered[part] = template.render_shared(shared).strip()
                if same_as is not None and reused is not None:
                    steps, chars = steps_left - budget.steps_left, chars_left - budget.chars_left
                    reused[same_as] = (rendered[part], steps, chars)
            except Exception as exc:  # any template error, in the template's own words
                where = f"variant {variant_id} {channel} {part}"
                raise render_failure(where, exc, with_kind=False) from exc
    return Content.from_dict(rendered)
