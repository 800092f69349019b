"""The template sandbox: Jinja's SandboxedEnvironment with an enforced budget for every render
and a size check before every operation that can multiply a value's size.

Every render runs under a `RenderBudget` (one per render, kept in a context variable, so renders
in other threads never share it) with three meters, read from settings when the render starts
(NOTIFIER_RENDER_* for real renders; the tighter NOTIFIER_COPY_* for a marketer's copy tried at
save time, see `copy_limits`):

- **steps** (NOTIFIER_RENDER_MAX_STEPS): one for each operation a template can repeat: every
  call (functions, methods, macros wherever they are called from, `caller()`, a recursive
  `loop()`), attribute and item lookup, operator, comparison, filter and test, and every
  iteration of every `for` loop (Jinja has no hook per iteration: the code generator below makes
  each loop iterate through a ticking iterator). An operation that goes through a value (a
  comparison or `in` scanning text or a list in C, a filter or method reading its input,
  printing a container) takes one more step for every READ_PER_STEP characters it reads, and
  the few whose cost grows faster than their input (sorting, wordwrap's long words, urlize's
  schemes) are charged what they really do; so steps bound CPU, not only operations;
- **time** (NOTIFIER_RENDER_MAX_SECONDS): CPU time of the rendering thread (a loaded machine
  or a full garbage collection does not count against a render), read every CLOCK_EVERY steps,
  at every large allocation, and when the render ends (from its first reading: the few steps
  before it are not timed);
- **characters** (NOTIFIER_RENDER_MAX_CHARS): what the render builds, counted as it is built:
  its output wherever output is assembled (the template itself, and the body of each macro,
  `{% set %}...{% endset %}`, `{% filter %}` and call block: literal text emitted in a loop
  counts each time), and every value an operation makes on the way, measured expanded (a string
  by its length; a list item, number or any other value as VALUE_CHARS; a list holding the same
  list twice counts it twice, so shared references cannot hide a size).

An operation that can multiply a size is refused before it allocates when its result would not
fit in the characters left (see "Size estimates" below for every such path). Going over any
meter raises `RenderBudgetExceeded`, in words a marketer understands. So no template can make a
process allocate much more than NOTIFIER_RENDER_MAX_CHARS characters' worth (README "Security").
"""

from __future__ import annotations

import functools
import gc
import json
import operator
import re
import threading
import time
import types
from collections import ChainMap
from collections.abc import Callable, Iterable, Iterator, Mapping, Sized
from contextvars import ContextVar
from itertools import chain
from typing import Any, cast

from django.conf import settings
from django.core.signals import setting_changed
from django.dispatch import receiver
from jinja2 import Template, nodes
from jinja2.compiler import CodeGenerator, Frame, optimizeconst
from jinja2.exceptions import FilterArgumentError
from jinja2.filters import FILTERS, _uri_scheme_re, make_attrgetter
from jinja2.runtime import LoopContext, Macro, Undefined, markup_join, str_join
from jinja2.sandbox import SandboxedEnvironment, SandboxedEscapeFormatter, SandboxedFormatter
from jinja2.utils import (
    Cycler,
    Namespace,
    _email_re,
    _http_re,
    _PassArg,
    htmlsafe_json_dumps,
    pass_eval_context,
)
from markupsafe import Markup, escape

# A list item, a number or any value but text counts as this many characters: about what it
# costs in memory, so the character meter bounds memory whatever a template builds.
VALUE_CHARS = 8
# The clock is read every this many steps (and at each allocation of LARGE_CHARS or more, and
# when the render ends).
CLOCK_EVERY = 64
LARGE_CHARS = 4096
# An operation that goes through a value takes a step more for every this many characters it
# reads (measured as `measure` does). The slowest reading measured (test_steps_bound_cpu in
# tests/security/test_template_sandbox.py: striptags of tag soup, title of one-letter words,
# about 130 ns a character) then costs about 2.5 µs a step, and an everyday step about 1 µs: the
# step meter bounds CPU, and no single operation, charged before it runs, can take much more
# than the whole budget's worth (about 21 ms at the defaults, measured).
READ_PER_STEP = 16
# What a render may allocate, at most, per character of NOTIFIER_RENDER_MAX_CHARS (16 MB at the
# default): measured with tracemalloc on every bomb in tests/security/test_template_sandbox.py,
# the worst (text split into one-character values) takes about half of it.
MEMORY_PER_CHAR = 32
# `**` and `*` on integers: beyond these a single number costs real CPU and memory.
MAX_EXPONENT = 64
MAX_BITS = 4096
# An integer beyond this is read like text (its digits) when printed, parsed or operated on.
BIG_INT = 2**64


class RenderError(Exception):
    """A template failed to render with a context that passed validation."""


class RenderBudgetExceeded(RenderError):
    """A render went over its budget (steps, time or characters), or asked for a value too big
    to make; said in words for the marketer who wrote the copy."""


class RenderTooSlow(RenderBudgetExceeded):
    """A render went over its time, the one meter that is not exactly repeatable (a CPU's speed
    varies with its load and temperature)."""


# --- The budget -------------------------------------------------------------------------------


class _FullCollections(threading.local):
    """CPU time this thread spent in full garbage collections (see `cpu_seconds`)."""

    seconds = 0.0
    started = 0.0


_full_collections = _FullCollections()


def _time_full_collections(phase: str, info: dict[str, int]) -> None:
    if info.get("generation") != 2:
        return
    if phase == "start":
        _full_collections.started = time.thread_time()
    else:
        _full_collections.seconds += time.thread_time() - _full_collections.started


# A full collection takes 18-31 ms in a worker process (90,000-290,000 objects, measured) and
# runs in whichever code happens to allocate: a real message that meets one must not be failed
# for it. Young collections take microseconds and are not timed.
gc.callbacks.append(_time_full_collections)


def cpu_seconds() -> float:
    """CPU time of this thread, less its full garbage collections: the clock of a render. Not
    wall-clock time, so a loaded machine or a throttled container (the thread waiting for a
    CPU) never fails a render; the wall clock of a web request is `timebox`'s job."""
    return time.thread_time() - _full_collections.seconds


def duration_text(seconds: float) -> str:
    return f"{seconds * 1000:g} ms" if seconds < 1 else f"{seconds:g} s"


class RenderBudget:
    """What one render may still spend. Made by `render_budget()`; read through `_current`."""

    __slots__ = (
        "chars_left",
        "deadline",
        "max_chars",
        "max_seconds",
        "max_steps",
        "next_clock",
        "steps_left",
    )

    def __init__(self, max_steps: int, max_chars: int, max_seconds: float) -> None:
        self.max_steps = max_steps
        self.max_chars = max_chars
        self.max_seconds = max_seconds
        self.steps_left = max_steps
        self.chars_left = max_chars
        # The clock starts at its first reading (CLOCK_EVERY steps in, or a large allocation):
        # what comes before is under CLOCK_EVERY steps' worth (well under a millisecond, as steps
        # bound CPU), and a real message, a few dozen steps, never pays for reading a CPU clock.
        self.deadline = 0.0
        self.next_clock = max_steps - CLOCK_EVERY

    def checkpoint(self) -> None:
        """Every CLOCK_EVERY steps: out of steps, or out of time?"""
        if self.steps_left < 0:
            raise RenderBudgetExceeded(
                f"this copy needs more than {self.max_steps:,} steps to render: "
                "a loop or a macro calling itself, or long text compared or searched again "
                "and again?"
            )
        self.check_clock()
        self.next_clock = max(self.steps_left - CLOCK_EVERY, -1)

    def check_clock(self) -> None:
        now = cpu_seconds()
        if not self.deadline:
            self.deadline = now + self.max_seconds
        elif now > self.deadline:
            raise RenderTooSlow(
                f"this copy takes more than {duration_text(self.max_seconds)} of CPU to "
                "render: a loop or a macro calling itself?"
            )

    def charge(self, steps: int) -> None:
        self.steps_left -= steps
        if self.steps_left <= self.next_clock:
            self.checkpoint()

    def spend(self, chars: int) -> None:
        self.chars_left -= chars
        if self.chars_left < 0:
            raise out_of_chars(self.max_chars)
        if chars >= LARGE_CHARS:
            self.check_clock()


_current: ContextVar[RenderBudget | None] = ContextVar("notifier_render_budget", default=None)

Limits = tuple[int, int, float]  # steps, characters, seconds


@functools.cache
def limits() -> Limits:
    """(steps, characters, seconds) of every render, from settings, read once: settings cost a
    microsecond a read, renders are on the hot path. Tests that change them clear it (below)."""
    return (
        int(settings.NOTIFIER_RENDER_MAX_STEPS),
        int(settings.NOTIFIER_RENDER_MAX_CHARS),
        float(settings.NOTIFIER_RENDER_MAX_SECONDS),
    )


@functools.cache
def copy_limits() -> Limits:
    """The tighter limits a marketer's copy must fit when it is tried at save time (one
    channel's parts together, for one customer): what every recipient of a campaign will cost,
    so far below the runtime budget, which stays a backstop for what depends on the data."""
    return (
        int(settings.NOTIFIER_COPY_MAX_STEPS),
        int(settings.NOTIFIER_RENDER_MAX_CHARS),
        float(settings.NOTIFIER_COPY_MAX_SECONDS),
    )


@receiver(setting_changed)
def _limits_changed(*, setting: str, **kwargs: Any) -> None:
    if setting.startswith(("NOTIFIER_RENDER_", "NOTIFIER_COPY_")):
        limits.cache_clear()
        copy_limits.cache_clear()


def max_chars() -> int:
    return limits()[1]


class render_budget:  # a context manager, named like the function it reads as
    """Run a render under a fresh budget (of `limits()`, or the limits given), or under the one
    already running (parts of one channel share it; an include or import inside a render is
    part of that render). `fresh`: a new budget whatever is set, for the outermost render
    (one channel of one message, one copy check), which nothing can be part of: a time limit
    raised between any two bytecodes (Celery's soft limit, a preview's time box) can leave a
    budget set where `__exit__` did not get to reset it, and no render may inherit it.

    The clock is read once more when the render ends, not only every CLOCK_EVERY steps: copy
    that ran past its time is refused every time, wherever its last reading fell. Python's own
    limits are translated on the way out: a RecursionError (a macro calling itself too deep) or
    a MemoryError becomes RenderBudgetExceeded."""

    __slots__ = ("_budget", "_fresh", "_limits", "_token")

    def __init__(self, given: Limits | None = None, *, fresh: bool = False) -> None:
        self._limits, self._fresh = given, fresh

    def __enter__(self) -> RenderBudget:
        budget = None if self._fresh else _current.get()
        if budget is not None:
            self._token = None
            return budget
        self._budget = RenderBudget(*(self._limits or limits()))
        self._token = _current.set(self._budget)
        return self._budget

    def __exit__(
        self, kind: type[BaseException] | None, exc: BaseException | None, tb: Any
    ) -> None:
        if self._token is None:
            return
        _current.reset(self._token)
        if exc is None:
            if self._budget.deadline:  # the clock started: read it once more
                self._budget.check_clock()
        elif python_limit_as_budget(exc) is not exc:
            raise python_limit_as_budget(exc) from exc


def python_limit_as_budget(exc: BaseException) -> BaseException:
    """Python's own limits met by a render, said as the budget they stand for."""
    if isinstance(exc, RecursionError):
        return RenderBudgetExceeded(
            "this copy nests macros, loops or values too deeply: a macro calling itself?"
        )
    if isinstance(exc, MemoryError):
        return RenderBudgetExceeded("this copy needs more memory than a message may use")
    return exc


def tick() -> None:
    """One step of the current render."""
    budget = _current.get()
    if budget is not None:
        budget.steps_left -= 1
        if budget.steps_left <= budget.next_clock:
            budget.checkpoint()


def read(value: object, weight: int = 1) -> None:
    """What an operation going through `value` costs besides its own step: a step for every
    READ_PER_STEP characters of it (`weight` times that for operations slower than a scan).
    Text costs its length; containers are measured, and the walk stops once it is over what
    the render has left, so reading a huge value costs no more than refusing it."""
    kind = type(value)
    if kind in _SCALARS and (kind is not int or -BIG_INT < value < BIG_INT):  # type: ignore[operator]
        return
    budget = _current.get()
    if budget is None:
        return
    if kind is str:
        units = len(value)  # type: ignore[arg-type]
    elif kind is int:
        # About its decimal digits: printing, parsing or dividing a big number is quadratic.
        units = value.bit_length() // 3  # type: ignore[attr-defined]
    else:
        units = measure(value, (budget.steps_left + 1) * READ_PER_STEP // weight + 1)
    steps = units * weight // READ_PER_STEP
    if steps:
        budget.charge(steps)


def work(units: int) -> None:
    """Work an operation does beyond reading its input (sorting, wrapping long words), in the
    same units: a step every READ_PER_STEP."""
    budget = _current.get()
    if budget is not None and units >= READ_PER_STEP:
        budget.charge(units // READ_PER_STEP)


def chars_left() -> int:
    budget = _current.get()
    # Outside a render (Jinja folding constants while it compiles) the whole allowance applies.
    return budget.chars_left if budget is not None else max_chars()


def too_big(what: str, chars: int) -> RenderBudgetExceeded:
    budget = _current.get()
    limit = budget.max_chars if budget is not None else max_chars()
    if chars <= limit:  # it would fit a render of its own: the render as a whole is too big
        return out_of_chars(limit)
    return RenderBudgetExceeded(
        f"{what} would make about {chars:,} characters, and a message may build at most "
        f"{limit:,} in all: text repeated, padded or joined too many times?"
    )


def out_of_chars(limit: int) -> RenderBudgetExceeded:
    return RenderBudgetExceeded(
        f"this copy builds more than {limit:,} characters: a loop or a macro repeating text?"
    )


def afford(chars: int, what: str) -> int:
    """Refuse, before allocating, a result of `chars` that would not fit what is left."""
    if chars > chars_left():
        raise too_big(what, chars)
    return chars


def spend(chars: int) -> None:
    budget = _current.get()
    if budget is not None:
        budget.spend(chars)


# --- Measuring and printing values, stopped at the limit ----------------------------------------

_SCALARS = frozenset({int, float, bool, type(None)})
_DICT_VIEWS: tuple[type, ...] = (type({}.keys()), type({}.values()), type({}.items()))
_CONTAINERS = (list, tuple, set, frozenset, dict, types.MappingProxyType)
_PRINTED = (*_CONTAINERS, Namespace, *_DICT_VIEWS)


def _namespace_attrs(value: Namespace) -> dict[str, Any]:
    attrs: dict[str, Any] = object.__getattribute__(value, "_Namespace__attrs")
    return attrs


def measure(value: object, limit: int | None = None) -> int:
    """The characters `value` holds, expanded: text by its length, every other value
    VALUE_CHARS, containers with everything they hold (each time it occurs). The walk stops as
    soon as it passes `limit` (default: what the render has left), so it costs at most that."""
    kind = type(value)
    if kind is str:
        return len(value)  # type: ignore[arg-type]
    if kind in _SCALARS:
        return VALUE_CHARS
    limit = chars_left() if limit is None else limit
    total = 0
    stack = [value]
    while stack:
        item = stack.pop()
        if isinstance(item, str | bytes | bytearray):
            total += len(item)
            continue
        total += VALUE_CHARS
        if isinstance(item, _CONTAINERS):
            total += VALUE_CHARS * len(item)
            if total > limit:
                return total
            stack.extend(item)
            if isinstance(item, dict | types.MappingProxyType):
                stack.extend(item.values())
        elif isinstance(item, _DICT_VIEWS):
            stack.append(item.mapping)  # type: ignore[attr-defined]  # a read-only proxy of it
        elif isinstance(item, Namespace):
            stack.append(_namespace_attrs(item))
        elif isinstance(item, Cycler):
            stack.append(item.items)
        elif isinstance(item, range):
            total += VALUE_CHARS * len(item)
        if total > limit:
            return total
    return total


def measure_depth(value: object) -> int:
    """How deeply containers nest in `value` (pprint's work and tojson's indentation grow with
    it). It walks everything: call it on a value `measure` found small."""
    deepest, stack = 0, [(value, 1)]
    while stack:
        item, depth = stack.pop()
        if isinstance(item, _CONTAINERS) and depth < 1000:
            deepest = max(deepest, depth)
            stack.extend((child, depth + 1) for child in item)
            if isinstance(item, dict):
                stack.extend((child, depth + 1) for child in item.values())
    return deepest


# Printing a container goes through it in Python, about 60 ns a character (`|string`, "%s"):
# it reads at twice the weight of a scan.
PRINTING_WEIGHT = 2


class _Printer:
    """Python's str() and repr() of a value, written piece by piece and stopped as soon as it
    passes the limit: `{{ a_list }}` of a list holding one big list a thousand times is refused
    before it is built. The text is the same as Python's for the values templates handle."""

    __slots__ = ("left", "open", "parts", "what")

    def __init__(self, limit: int, what: str) -> None:
        self.left = limit
        self.parts: list[str] = []
        self.open: set[int] = set()
        self.what = what

    def result(self) -> str:
        return "".join(self.parts)

    def put(self, piece: str) -> None:
        self.left -= len(piece)
        if self.left < 0:
            raise too_big(self.what, sum(map(len, self.parts)) + len(piece))
        self.parts.append(piece)

    def text(self, value: object) -> None:
        if isinstance(value, str):
            self.put(str(value))
        elif isinstance(value, _PRINTED):
            self.repr(value)
        else:
            self.put(str(value))

    def repr(self, value: object) -> None:
        kind = type(value)
        if kind is list:
            self.sequence(value, "[", "]", "[...]")  # type: ignore[arg-type]
        elif kind is tuple:
            close = ",)" if len(value) == 1 else ")"  # type: ignore[arg-type]
            self.sequence(value, "(", close, "(...)")  # type: ignore[arg-type]
        elif kind is dict:
            self.mapping(value)  # type: ignore[arg-type]
        elif kind is set or kind is frozenset:
            name = "set" if kind is set else "frozenset"
            if not value:
                self.put(f"{name}()")
            elif kind is set:
                self.sequence(value, "{", "}", "{...}")  # type: ignore[arg-type]
            else:
                self.sequence(value, "frozenset({", "})", "frozenset(...)")  # type: ignore[arg-type]
        elif isinstance(value, Namespace):
            self.put("<Namespace ")
            self.mapping(_namespace_attrs(value))
            self.put(">")
        elif isinstance(value, _DICT_VIEWS):
            self.put(f"{kind.__name__}(")
            self.sequence(list(value), "[", "]", "[...]")  # type: ignore[call-overload]
            self.put(")")
        else:
            # Anything else (a subclass, a number, a link): its own repr, measured first.
            if measure(value, self.left) > self.left:
                raise too_big(self.what, self.left + 1)
            self.put(repr(value))

    def sequence(self, items: Iterable[Any], start: str, end: str, cyclic: str) -> None:
        key = id(items)
        if key in self.open:  # a list holding itself prints [...], as in Python
            self.put(cyclic)
            return
        self.open.add(key)
        self.put(start)
        for index, item in enumerate(items):
            if index:
                self.put(", ")
            self.repr(item)
        self.put(end)
        self.open.discard(key)

    def mapping(self, items: Mapping[Any, Any]) -> None:
        key = id(items)
        if key in self.open:
            self.put("{...}")
            return
        self.open.add(key)
        self.put("{")
        for index, (name, item) in enumerate(items.items()):
            if index:
                self.put(", ")
            self.repr(name)
            self.put(": ")
            self.repr(item)
        self.put("}")
        self.open.discard(key)


def text_of(value: object, what: str = "printing a value") -> str:
    """str(value), refused before it is built when it would not fit what the render has left.
    Not counted: the caller counts what it keeps."""
    if isinstance(value, str):
        return value
    if type(value) in _SCALARS:
        text = str(value)
        if len(text) > READ_PER_STEP:  # a big number: turning it into text is quadratic
            read(value)
        return text
    if not isinstance(value, _PRINTED):  # a link, a macro, a generator: small and its own
        return afford_text(str(value), what)
    read(value, PRINTING_WEIGHT)
    printer = _Printer(chars_left(), what)
    printer.text(value)
    return printer.result()


def afford_text(text: str, what: str) -> str:
    afford(len(text), what)
    return text


def repr_of(value: object, what: str = "printing a value") -> str:
    read(value, PRINTING_WEIGHT)
    printer = _Printer(chars_left(), what)
    printer.repr(value)
    return printer.result()


def ascii_of(value: object, what: str = "printing a value") -> str:
    text = repr_of(value, what).encode("ascii", "backslashreplace").decode("ascii")
    afford(len(text), what)
    return text


def plain(value: object) -> str:
    """`{{ value }}` without autoescaping: str(value), printed within the limit, and counted
    as output (the step was taken by `emitting`)."""
    text = value if type(value) is str else str(text_of(value))
    budget = _current.get()
    if budget is not None:
        budget.chars_left -= len(text)  # budget.spend(), inlined: once for every {{ }}
        if budget.chars_left < 0:
            raise out_of_chars(budget.max_chars)
    return text


def html_of(value: object) -> Markup:
    """`{{ value }}` with autoescaping: escape(value) (containers printed within the limit
    first), counted as output."""
    if type(value) is Markup:
        html = value
    elif isinstance(value, str) or hasattr(value, "__html__"):
        html = escape(value)
    else:
        html = escape(text_of(value))
    spend(len(html))
    return html


def emitting(expressions: int, literal_chars: int) -> None:
    """Before an output node (text and `{{ }}`s between tags, in a template, a macro, a block):
    a step for each expression it prints, and its literal text counted. The expressions' text
    is counted by `plain` or `html_of`. So output is counted where it is made, and joining it
    (a macro's, a block's, the template's) never makes more than was counted."""
    budget = _current.get()
    if budget is not None:
        budget.steps_left -= expressions
        if budget.steps_left <= budget.next_clock:
            budget.checkpoint()
        budget.spend(literal_chars)


def stringified(value: object) -> Any:
    """A filter's text argument as text (within the limit) unless it already is text or HTML:
    Jinja's string filters call str() on whatever they get."""
    if isinstance(value, str) or hasattr(value, "__html__"):
        return value
    return text_of(value)


# --- Size estimates -------------------------------------------------------------------------------
#
# Every operation a template can reach that makes a value bigger than its inputs, and how its
# size is bounded before it allocates (everything else is at most a small multiple of inputs
# already counted, and is counted when made):
#
# operators   `*` of str, bytes, list, tuple by an int (the result's expanded size); `+` of two
#             str, bytes, lists or tuples; `~` (each side printed within the limit); `%` with
#             str or bytes on the left (widths, precisions, `*` arguments and each argument's
#             printed size, Markup's escaping); `**` and `*` of integers (exponent and bits).
# str, bytes  center, ljust, rjust, zfill (width), expandtabs (tabs x tabsize), replace
#   methods   (occurrences x growth; "" matches between every character), join (items
#             materialised and added up), translate (length x the longest replacement), encode,
#             hex, decode and the case changes (fixed factors), split, rsplit, splitlines (a
#             value per piece); format and format_map (a bounded Formatter: every number in a
#             field's spec, each field's printed size, the total).
# list, dict  append, insert, extend, update, setdefault, set.add and update (what they add,
#   methods   expanded); dict.fromkeys (its keys); int.to_bytes (length).
# filters     center, indent (width as spaces or as a string, times the lines), replace, join,
#             wordwrap (lines x wrapstring), format (like `%`), sum with a list or tuple start,
#             batch and slice with a fill value or many slices, tojson (streamed, indent
#             included), pprint (size x depth), urlize (target and rel per word), urlencode,
#             xmlattr; every filter that turns its input into text (string, escape, upper...)
#             and every one that goes through text character by character (list, sort...).
# printing    `{{ value }}`, `|string`, `~`, "%s", "{}" of a container: printed by _Printer,
#             which stops at the limit (shared references print, and count, each time).
# globals     range (its length); lipsum is removed; dict, namespace, cycler, joiner are calls.


def _int_arg(
    args: tuple[Any, ...], kwargs: Mapping[str, Any], at: int, name: str, default: int
) -> int:
    value = args[at] if len(args) > at else kwargs.get(name, default)
    return value if isinstance(value, int) else default


def _number(digits: str) -> int:
    return int(digits) if len(digits) <= 18 else 10**18


def _int_digits(value: object, base_bits: float) -> int:
    if isinstance(value, int):
        return int(value.bit_length() / base_bits) + 2
    return 330  # a float's integer part has at most 309 digits; anything else is refused by %


def _conversion_chars(
    kind: str, value: object, width: int, precision: int | None, escaping: int
) -> int:
    """An upper bound of one printf-style conversion."""
    if kind == "%":
        body = 1
    elif kind in "sbra":
        if isinstance(value, bytes | bytearray) and kind in "sb":
            body = len(value)
        elif kind == "s":
            body = len(text_of(value, "formatting")) * escaping
        elif kind == "r":
            body = len(repr_of(value, "formatting")) * escaping
        else:
            body = len(ascii_of(value, "formatting")) * escaping
        if precision is not None:
            body = min(body, precision)
    elif kind in "diu":
        body = max(_int_digits(value, 3.3), precision or 0) + 2
    elif kind in "oxX":
        body = max(_int_digits(value, 3.0), precision or 0) + 4
    elif kind in "eEfFgG":
        body = (6 if precision is None else precision) + (330 if kind in "fF" else 12)
    elif kind == "c":
        body = 1
    else:
        raise ValueError(f"unsupported format character {kind!r}")
    return max(width, body)


def percent_chars(template: str | bytes, operand: object, what: str = "formatting") -> int:
    """An upper bound of the characters `template % operand` makes (printf-style formatting),
    scanned as CPython scans it; refused as soon as the bound passes what is left. A format
    that Python would refuse is refused here too, before any of it is built."""
    left = chars_left()
    text = template.decode("latin-1") if isinstance(template, bytes) else template
    escaping = 5 if isinstance(template, Markup) else 1
    is_mapping = not isinstance(operand, tuple | str | bytes) and hasattr(
        type(operand), "__getitem__"
    )
    positional = operand if isinstance(operand, tuple) else (operand,)
    taken = 0

    def next_argument() -> object:
        nonlocal taken
        if taken >= len(positional):
            raise TypeError("not enough arguments for format string")
        taken += 1
        return positional[taken - 1]

    def number(at: int) -> tuple[int, int]:
        if at < len(text) and text[at] == "*":
            star = next_argument()
            if not isinstance(star, int):
                raise TypeError("* wants int")
            return abs(star), at + 1
        end = at
        while end < len(text) and text[end].isdigit():
            end += 1
        return (_number(text[at:end]) if end > at else 0), end

    total, at = 0, 0
    while True:
        found = text.find("%", at)
        if found < 0:
            return afford(total + len(text) - at, what)
        total += found - at
        at = found + 1
        key = None
        if at < len(text) and text[at] == "(":
            depth, start = 1, at + 1
            at += 1
            while at < len(text) and depth:
                depth += {"(": 1, ")": -1}.get(text[at], 0)
                at += 1
            if depth:
                raise ValueError("incomplete format key")
            key = text[start : at - 1]
        while at < len(text) and text[at] in "-+ #0":
            at += 1
        width, at = number(at)
        precision = None
        if at < len(text) and text[at] == ".":
            precision, at = number(at + 1)
        while at < len(text) and text[at] in "hlL":
            at += 1
        if at >= len(text):
            raise ValueError("incomplete format")
        kind = text[at]
        at += 1
        if kind == "%":
            value: object = None
        elif key is not None:
            if not is_mapping:
                raise TypeError("format requires a mapping")
            lookup = key.encode("latin-1") if isinstance(template, bytes) else key
            value = operand[lookup]  # type: ignore[index]
        else:
            value = next_argument()
        total += _conversion_chars(kind, value, width, precision, escaping)
        if total > left:
            raise too_big(what, total)


_SPEC_NUMBERS = re.compile(r"\d+")


def field_chars(value: object, format_spec: str, escaping: int) -> int:
    """An upper bound of `format(value, format_spec)`: every number in the spec (width,
    precision) counts, plus the value printed; for a str.format field."""
    numbers = sum(_number(digits) for digits in _SPEC_NUMBERS.findall(format_spec))
    if isinstance(value, str):
        body = len(value)
    elif isinstance(value, int):
        body = _int_digits(value, 1.0)  # binary ("b") is the longest
    elif isinstance(value, float):
        body = 330
    else:
        body = len(text_of(value, "formatting"))
    return (body + numbers + 16) * escaping


def _longest_replacement(table: object) -> int:
    """The longest text `str.translate(table)` can put in place of one character."""
    if isinstance(table, Mapping):
        values: Iterable[Any] = table.values()
    elif isinstance(table, list | tuple):
        values = table
    elif isinstance(table, str):
        return 1
    else:
        raise TypeError("translate() takes a dict or a list here")
    return max((len(v) for v in values if isinstance(v, str)), default=1)


def _replace_chars(text: str | bytes, old: object, new: object, count: object, growth: int) -> int:
    if not isinstance(old, str | bytes) or not isinstance(new, str | bytes):
        return len(text)  # Python refuses it
    extra = len(new) * growth - len(old)
    if extra <= 0:
        return len(text)
    occurrences = len(text) + 1 if not old else text.count(old)  # type: ignore[arg-type]
    if isinstance(count, int) and count >= 0:
        occurrences = min(occurrences, count)
    return len(text) + occurrences * extra


def text_method_chars(
    owner: str | bytes, name: str, args: tuple[Any, ...], kwargs: Mapping[str, Any]
) -> int | None:
    """An upper bound of a str or bytes method's result, for the methods that can make a value
    bigger than its input; None for the others (at most their input, counted when made)."""
    length = len(owner)
    growth = 5 if isinstance(owner, Markup) else 1  # Markup escapes the arguments it gets
    if name in ("center", "ljust", "rjust", "zfill"):
        return max(length, _int_arg(args, kwargs, 0, "width", 0))
    if name == "expandtabs":
        tabs = owner.count("\t" if isinstance(owner, str) else b"\t")  # type: ignore[arg-type]
        return length + tabs * max(_int_arg(args, kwargs, 0, "tabsize", 8), 0)
    if name == "replace":
        if len(args) < 2:
            return None
        count = args[2] if len(args) > 2 else kwargs.get("count", -1)
        return _replace_chars(owner, args[0], args[1], count, growth)
    if name == "translate" and isinstance(owner, str) and args:
        return length * _longest_replacement(args[0])
    if name == "encode":
        return length * 10  # "unicode_escape" and "xmlcharrefreplace" at worst
    if name == "hex":
        return length * 3
    if name == "decode":
        return length * 4  # "backslashreplace" at worst
    if name in ("upper", "lower", "title", "capitalize", "swapcase", "casefold"):
        return length * 3  # special casings such as "ﬃ" -> "FFI"
    if name in ("split", "rsplit", "splitlines"):
        return length + (length + 1) * VALUE_CHARS  # at most a piece per character, and one
    return None


def _joined_chars(separator: str | bytes, items: list[Any], growth: int) -> int:
    texts = sum(len(item) for item in items if isinstance(item, str | bytes))
    return (texts + len(separator) * max(len(items) - 1, 0)) * growth


# --- Calls ------------------------------------------------------------------------------------

# What Jinja adds to calls made inside loops and blocks (Context.call drops them).
_JINJA_KWARGS = frozenset({"_loop_vars", "_block_vars"})
_GROWING_CONTAINER_METHODS = {
    list: frozenset({"append", "insert", "extend"}),
    dict: frozenset({"update", "setdefault"}),
    set: frozenset({"add", "update"}),
}


def checked_call_args(obj: Any, args: tuple[Any, ...], kwargs: dict[str, Any]) -> tuple[Any, ...]:
    """Refuse a method call whose result would not fit, before it runs; the arguments to call
    it with (an iterable it consumes is materialised once, to be measured)."""
    owner = getattr(obj, "__self__", None)
    name = getattr(obj, "__name__", "")
    if isinstance(owner, str | bytes):
        if name == "join" and args:
            items = list(args[0])
            growth = 5 if isinstance(owner, Markup) else 1
            afford(_joined_chars(owner, items, growth), "joining")
            return (items, *args[1:])
        estimate = text_method_chars(owner, name, args, kwargs)
        if estimate is not None:
            afford(estimate, f"{name}()")
        return args
    for kind, names in _GROWING_CONTAINER_METHODS.items():
        if isinstance(owner, kind) and name in names:
            if name in ("extend", "update") and args and not isinstance(args[0], Mapping):
                args = (list(args[0]), *args[1:])
            given = {k: v for k, v in kwargs.items() if k not in _JINJA_KWARGS}
            spend(afford(measure((args, given)), f"{name}()"))
            return args
    if isinstance(owner, int) and name == "to_bytes":
        afford(_int_arg(args, kwargs, 0, "length", 1), "to_bytes()")
    if owner is dict and name == "fromkeys" and args and isinstance(args[0], Sized):
        afford(2 * VALUE_CHARS * len(args[0]), "fromkeys()")  # a key and a value each
    return args


# Methods that take the same time whatever the size of the value they belong to (their
# arguments are still read).
CONSTANT_METHODS = frozenset(
    {"add", "append", "discard", "endswith", "get", "items", "keys", "pop", "setdefault"}
    | {"startswith", "values"}
)
_READ_OWNERS = (str, bytes, bytearray, list, tuple, dict, set, frozenset)


def read_call(obj: Any, args: tuple[Any, ...], kwargs: Mapping[str, Any]) -> None:
    """What a call reads: its arguments, and the text or container a method belongs to
    (`s.count('x')`, `big.sort()`, `long_text.find(...)` go through it in C)."""
    owner = getattr(obj, "__self__", None)
    if isinstance(owner, _READ_OWNERS) and getattr(obj, "__name__", "") not in CONSTANT_METHODS:
        read(owner, 2 if getattr(obj, "__name__", "") == "sort" else 1)
    for value in args:
        read(value)
    for key, value in kwargs.items():
        if key not in _JINJA_KWARGS:
            read(value)


class TickingIterator:
    """What a `for` loop iterates: one step per item."""

    __slots__ = ("_iterable", "_iterator")

    def __init__(self, iterable: Iterable[Any]) -> None:
        self._iterable = iterable
        self._iterator = iter(iterable)

    def __iter__(self) -> TickingIterator:
        return self

    def __next__(self) -> Any:
        tick()
        return next(self._iterator)

    def __len__(self) -> int:  # loop.length and loop.last ask; a generator has none (TypeError)
        return len(self._iterable)  # type: ignore[arg-type]


class BudgetedMacro(Macro):
    """A macro (or a call block's `caller`) that takes a step each time it runs, wherever it is
    called from (a template, or `list.sort(key=...)`), and counts the varargs and kwargs it
    collects (new containers)."""

    def _invoke(self, arguments: list[Any], autoescape: bool) -> str:
        tick()
        if self.catch_varargs:
            spend(measure(arguments[-1]))
        if self.catch_kwargs:
            spend(measure(arguments[-1 - int(self.catch_varargs)]))
        return super()._invoke(arguments, autoescape)


def budgeted_range(*args: int) -> range:
    numbers = range(*args)
    afford(len(numbers) * VALUE_CHARS, f"range of {len(numbers):,} numbers")
    return numbers


# --- Filters and tests --------------------------------------------------------------------------

# Filters that turn their input into text with str(): a container is printed within the limit
# first. The factor bounds how much bigger than its input each result can be.
TEXT_FILTERS = {
    "capitalize": 3,
    "e": 5,
    "escape": 5,
    "forceescape": 5,
    "lower": 3,
    "safe": 1,
    "string": 1,
    "striptags": 1,
    "title": 3,
    "trim": 1,
    "truncate": 1,
    "upper": 3,
    "wordcount": 0,
}


# Filters that go through their input item by item: given text, each character becomes a value.
ITEM_FILTERS = frozenset(
    {
        "batch",
        "dictsort",
        "first",
        "groupby",
        "items",
        "last",
        "list",
        "map",
        "max",
        "min",
        "random",
        "reject",
        "rejectattr",
        "reverse",
        "select",
        "selectattr",
        "slice",
        "sort",
        "sum",
        "unique",
    }
)


# Filters that take the same time whatever the size of their input: they do not read it.
CONSTANT_FILTERS = frozenset(
    {
        "abs",
        "attr",
        "count",
        "d",
        "default",
        "filesizeformat",
        "first",
        "last",
        "length",
        "random",
        "round",
    }
)
# Filters that spend more than a scan's time on each character they read (measured: sorting
# through Jinja's key function, pprint, urlize's regular expressions): they read at this weight.
READ_WEIGHTS = {"dictsort": 2, "groupby": 2, "pprint": 2, "sort": 2, "urlize": 4}
# Filters whose result costs more to make than their input to read: printf-style formatting (a
# float with a precision of hundreds of digits) reads what it made as well.
READS_RESULT = frozenset({"format"})


def _value_index(func: Callable[..., Any]) -> int:
    """Where a filter's input is among its arguments (after a context or environment)."""
    return 0 if _PassArg.from_obj(func) is None else 1


def budgeted_filter(name: str, func: Callable[..., Any]) -> Callable[..., Any]:
    """A filter that takes a step, prints its text input within the limit, refuses a result that
    would not fit before making it, and counts the result it makes."""
    at = _value_index(func)
    growth = TEXT_FILTERS.get(name)
    precheck = FILTER_CHECKS.get(name)
    by_item = name in ITEM_FILTERS
    checked = growth is not None or precheck is not None or by_item
    reads = name not in CONSTANT_FILTERS
    weight = READ_WEIGHTS.get(name, 1)
    reads_result = name in READS_RESULT

    @functools.wraps(func)
    def budgeted(*args: Any, **kwargs: Any) -> Any:
        budget = _current.get()
        if budget is None:
            # Jinja folding constants while it compiles: filters run in the render, under its
            # budget (else a thousand `'x'|center(400000)` would compile into the code).
            raise nodes.Impossible()
        budget.steps_left -= 1  # tick(), inlined
        if budget.steps_left <= budget.next_clock:
            budget.checkpoint()
        if reads and len(args) > at:
            value = args[at]
            # Text gone through item by item makes a value of each character.
            read(value, weight * VALUE_CHARS if by_item and type(value) is str else weight)
        if checked and len(args) > at:
            args, kwargs = prepared(args, kwargs)
        result = func(*args, **kwargs)
        budget.spend(len(result) if type(result) is str else measure(result))
        if reads_result:
            read(result)
        return result

    def prepared(args: tuple[Any, ...], kwargs: dict[str, Any]) -> Checked:
        passed, given = args[:at], args[at:]  # Jinja's context or environment, then the filter's
        if growth is not None:
            value = stringified(given[0])
            afford(len(value) * growth, f"the {name} filter")
            given = (value, *given[1:])
        elif by_item and isinstance(given[0], str):
            afford(len(given[0]) * VALUE_CHARS, f"the {name} filter")
        if precheck is not None:
            given, kwargs = precheck(passed[0] if passed else None, *given, **kwargs)
        return (*passed, *given), kwargs

    return budgeted


# Tests that compare or search their arguments read them (`x is in long_text`); `lower` and
# `upper` call str() on their input, which is printed within the limit first.
READING_TESTS = frozenset(
    {"!=", "<", "<=", "==", ">", ">=", "eq", "equalto", "ge", "greaterthan", "gt", "in"}
    | {"le", "lessthan", "lt", "ne"}
)
TEXT_TESTS = frozenset({"lower", "upper"})


def budgeted_test(name: str, func: Callable[..., Any]) -> Callable[..., Any]:
    reads = name in READING_TESTS
    prints = name in TEXT_TESTS

    @functools.wraps(func)
    def budgeted(*args: Any, **kwargs: Any) -> Any:
        tick()
        if reads:
            for value in args:
                read(value)
        elif prints and args:
            args = (stringified(args[0]), *args[1:])
            read(args[0])
        return func(*args, **kwargs)

    return budgeted


# Each check gets what Jinja passes the filter (an eval context or environment, or None) and the
# filter's own arguments; it returns the arguments to call the filter with.
Checked = tuple[tuple[Any, ...], dict[str, Any]]


def _check_center(_: None, value: Any, width: int = 80) -> Checked:
    text = stringified(value)
    afford(max(len(text), width if isinstance(width, int) else 0), "the center filter")
    return (text, width), {}


def _check_indent(
    _: None, s: Any, width: Any = 4, first: bool = False, blank: bool = False
) -> Checked:
    text = stringified(s)
    indention = len(width) if isinstance(width, str) else width if isinstance(width, int) else 0
    lines = text.count("\n") + 2
    afford(len(text) + lines * (max(indention, 0) + 1), "the indent filter")
    return (text, width, first, blank), {}


def _check_replace(eval_ctx: Any, s: Any, old: Any, new: Any, count: Any = None) -> Checked:
    text, old, new = stringified(s), stringified(old), stringified(new)
    growth = 5 if eval_ctx.autoescape else 1
    afford(_replace_chars(text, old, new, -1 if count is None else count, growth), "replace")
    return (text, old, new, count), {}


def _check_join(eval_ctx: Any, value: Any, d: Any = "", attribute: Any = None) -> Checked:
    if attribute is not None:
        value = map(make_attrgetter(eval_ctx.environment, attribute), value)
    items = [stringified(item) for item in value]
    separator = stringified(d)
    afford(_joined_chars(separator, items, 5 if eval_ctx.autoescape else 1), "joining")
    return (items, separator, None), {}


# textwrap's whitespace, between the chunks it wraps (str.split's is wider: its words are shorter).
_WRAP_SPACE = "\t\n\x0b\x0c\r "
# textwrap cuts a word longer than the width a line at a time, copying the rest of the word at
# each cut: that memory copy runs at about 30 GB/s, a unit (1/16 step) per COPIED_PER_UNIT.
COPIED_PER_UNIT = 256


def _check_wordwrap(
    environment: Any,
    s: Any,
    width: int = 79,
    break_long_words: bool = True,
    wrapstring: Any = None,
    break_on_hyphens: bool = True,
) -> Checked:
    text = stringified(s)
    wrap = stringified(environment.newline_sequence if wrapstring is None else wrapstring)
    # Every line holds at least one character: at most len(text) + 1 lines.
    afford(len(text) + (len(text) + 1) * len(wrap), "the wordwrap filter")
    if isinstance(width, int) and width > 0:
        # textwrap's cost is a step a line (about 1.4 µs each, measured), and for each word
        # longer than the width, the rest of the word copied at every cut: length² / 2·width
        # characters, quadratic (150,000 characters at width 1 took seconds in one call).
        copied = 0
        if break_long_words and width < len(text):
            long_word = f"(?<![^{_WRAP_SPACE}])[^{_WRAP_SPACE}]{{{width + 1},}}"
            for word in re.finditer(long_word, text):
                length = word.end() - word.start()
                copied += length * length // (2 * width)
        work((len(text) // width + 1) * READ_PER_STEP + copied // COPIED_PER_UNIT)
    return (text, width, break_long_words, wrap, break_on_hyphens), {}


def _check_format(_: None, value: Any, *args: Any, **kwargs: Any) -> Checked:
    template = stringified(value)
    if not (args and kwargs):  # both: Jinja refuses it
        percent_chars(template, kwargs or args, "the format filter")
    return (template, *args), kwargs


def _check_sum(environment: Any, iterable: Any, attribute: Any = None, start: Any = 0) -> Checked:
    if isinstance(start, list | tuple):
        # Python's sum() would copy the growing list at every item; add it up once, measured.
        if attribute is not None:
            iterable = map(make_attrgetter(environment, attribute), iterable)
        items = list(iterable)
        for item in items:
            if type(item) is not type(start):
                raise TypeError(
                    f'can only concatenate {type(start).__name__} (not "{type(item).__name__}") '
                    f"to {type(start).__name__}"
                )
        afford(measure(start) + sum(measure(item) for item in items), "the sum filter")
        return ([type(start)(chain(start, *items))], None, type(start)()), {}
    return (iterable, attribute, start), {}


def _check_batch(_: None, value: Any, linecount: Any, fill_with: Any = None) -> Checked:
    if fill_with is not None and isinstance(linecount, int):
        afford(linecount * VALUE_CHARS, "the batch filter")
    return (value, linecount, fill_with), {}


def _check_slice(_: Any, value: Any, slices: Any, fill_with: Any = None) -> Checked:
    if isinstance(slices, int):
        afford(slices * VALUE_CHARS, "the slice filter")
    return (value, slices, fill_with), {}


def _check_urlize(
    eval_ctx: Any,
    value: Any,
    trim_url_limit: Any = None,
    nofollow: bool = False,
    target: Any = None,
    rel: Any = None,
    extra_schemes: Any = None,
) -> Checked:
    text = stringified(value)
    target = None if target is None else stringified(target)
    rel = None if rel is None else stringified(rel)
    # Each word can become <a href="https://word" rel=".." target="..">word</a>, escaped.
    per_word = 80 + 5 * (len(target or "") + len(rel or ""))
    afford(11 * len(text) + (len(text.split()) + 1) * per_word, "the urlize filter")
    return (text, trim_url_limit, nofollow, target, rel, extra_schemes), {}


def _check_urlencode(_: None, value: Any) -> Checked:
    if isinstance(value, str) or not isinstance(value, Iterable):
        text = stringified(value)
        afford(12 * len(text), "the urlencode filter")
        return (text,), {}
    pairs = value.items() if isinstance(value, Mapping) else value
    texts = [(text_of(k), text_of(v)) for k, v in pairs]
    afford(sum(12 * (len(k) + len(v)) + 2 for k, v in texts), "the urlencode filter")
    return (texts,), {}


def _check_xmlattr(eval_ctx: Any, d: Any, autospace: bool = True) -> Checked:
    values = {
        key: value if value is None or isinstance(value, Undefined) else stringified(value)
        for key, value in d.items()
    }
    total = sum(len(str(k)) + 5 * len(v) + 4 for k, v in values.items() if isinstance(v, str))
    afford(total, "the xmlattr filter")
    return (values, autospace), {}


def _check_pprint(_: None, value: Any) -> Checked:
    # pformat prints each nested level again, indented: its work and text grow with depth.
    size = afford(measure(value), "the pprint filter")
    afford(size * (measure_depth(value) + 1), "the pprint filter")
    return (value,), {}


FILTER_CHECKS: dict[str, Callable[..., Checked]] = {
    "batch": _check_batch,
    "center": _check_center,
    "format": _check_format,
    "indent": _check_indent,
    "join": _check_join,
    "pprint": _check_pprint,
    "replace": _check_replace,
    "slice": _check_slice,
    "sum": _check_sum,
    "urlencode": _check_urlencode,
    "urlize": _check_urlize,
    "wordwrap": _check_wordwrap,
    "xmlattr": _check_xmlattr,
}


def _bounded_dumps(value: Any, **kwargs: Any) -> str:
    """json.dumps, streamed and stopped at the limit (an indent and shared references
    included)."""
    indent = kwargs.get("indent")
    if indent is not None:  # each nested line starts with indent x depth; an int is spaces
        width = len(indent) if isinstance(indent, str) else int(indent)
        afford(measure(value), "the tojson filter")  # and so the depth is quick to find
        afford(width * (measure_depth(value) + 1), "the tojson filter")
    left = chars_left()
    parts: list[str] = []
    for chunk in json.JSONEncoder(**kwargs).iterencode(value):
        left -= len(chunk)
        if left < 0:
            raise too_big("the tojson filter", sum(map(len, parts)) + len(chunk))
        parts.append(chunk)
    text = "".join(parts)
    # htmlsafe_json_dumps then writes <, >, & and ' as six-character escapes.
    afford(len(text) + 5 * sum(map(text.count, "<>&'")), "the tojson filter")
    return text


def do_tojson(eval_ctx: Any, value: Any, indent: Any = None) -> Markup:
    kwargs = dict(eval_ctx.environment.policies["json.dumps_kwargs"])
    if indent is not None:
        kwargs["indent"] = indent
    return htmlsafe_json_dumps(value, dumps=_bounded_dumps, **kwargs)


# --- urlize, in linear time -----------------------------------------------------------------------
#
# Jinja's urlize (3.1), rule for rule, with its two quadratic steps made linear: the trailing
# punctuation of a word is found by a regular expression searched from every position (a word of
# 5,000 ')' then 'a)' took 0.4 s, 80,000 took two minutes; pallets/jinja#2204, not merged), and
# parentheses are balanced by moving one character at a time, copying the rest each time. Kept
# identical in output: tests/security/test_template_sandbox.py compares the two on generated text.

_LEADING_PUNCTUATION = re.compile(r"^([(<]|&lt;)+")
_TRAILING_CHARS = ")>.,\n"
_PAIRS = (("(", ")"), ("<", ">"), ("&lt;", "&gt;"))


def _trailing_start(middle: str) -> int:
    """Where `([)>.,\n]|&gt;)+$` would start in `middle` (its length when nowhere), read from
    the end: each of those tokens ends in a character no other token ends in, so the longest
    run of them at the end is the one the search finds first."""
    end = len(middle)
    while end:
        if middle[end - 1] in _TRAILING_CHARS:
            end -= 1
        elif middle.endswith("&gt;", 0, end):
            end -= 4
        else:
            break
    return end


def _after_occurrences(text: str, needle: str, count: int) -> int:
    """Just past the `count`-th occurrence of `needle` in `text` (0 for none)."""
    at = 0
    for _ in range(count):
        at = text.index(needle, at) + len(needle)
    return at


def urlize(
    text: str,
    trim_url_limit: int | None = None,
    rel: str | None = None,
    target: str | None = None,
    extra_schemes: Iterable[str] | None = None,
) -> str:
    """jinja2.utils.urlize, in linear time (see above)."""

    def trim_url(url: str) -> str:
        if trim_url_limit is not None and len(url) > trim_url_limit:
            return f"{url[:trim_url_limit]}..."
        return url

    words = re.split(r"(\s+)", str(escape(text)))
    rel_attr = f' rel="{escape(rel)}"' if rel else ""
    target_attr = f' target="{escape(target)}"' if target else ""
    schemes = list(extra_schemes) if extra_schemes is not None else None
    if schemes:
        work(len(words) * len(schemes))  # each word is tried with each scheme
    for i, word in enumerate(words):
        head, middle, tail = "", word, ""
        match = _LEADING_PUNCTUATION.match(middle)
        if match:
            head = match.group()
            middle = middle[match.end() :]
        end = _trailing_start(middle)
        middle, tail = middle[:end], middle[end:]
        # Prefer balancing parentheses in URLs to ignoring a trailing character.
        for start_char, end_char in _PAIRS:
            start_count = middle.count(start_char)
            if start_count <= middle.count(end_char):
                continue
            moved = _after_occurrences(tail, end_char, min(start_count, tail.count(end_char)))
            middle, tail = middle + tail[:moved], tail[moved:]
        if _http_re.match(middle):
            if middle.startswith("https://") or middle.startswith("http://"):
                middle = f'<a href="{middle}"{rel_attr}{target_attr}>{trim_url(middle)}</a>'
            else:
                middle = f'<a href="https://{middle}"{rel_attr}{target_attr}>{trim_url(middle)}</a>'
        elif middle.startswith("mailto:") and _email_re.match(middle[7:]):
            middle = f'<a href="{middle}">{middle[7:]}</a>'
        elif (
            "@" in middle
            and not middle.startswith("www.")
            and not middle.startswith("@")  # ignore values like `@a@b`
            and ":" not in middle
            and _email_re.match(middle)
        ):
            middle = f'<a href="mailto:{middle}">{middle}</a>'
        elif schemes is not None:
            for scheme in schemes:
                if middle != scheme and middle.startswith(scheme):
                    middle = f'<a href="{middle}"{rel_attr}{target_attr}>{middle}</a>'
        words[i] = f"{head}{middle}{tail}"
    return "".join(words)


@pass_eval_context
def do_urlize(
    eval_ctx: Any,
    value: str,
    trim_url_limit: int | None = None,
    nofollow: bool = False,
    target: str | None = None,
    rel: str | None = None,
    extra_schemes: Iterable[str] | None = None,
) -> str:
    """jinja2.filters.do_urlize, calling the linear urlize."""
    policies = eval_ctx.environment.policies
    rel_parts = set((rel or "").split())
    if nofollow:
        rel_parts.add("nofollow")
    rel_parts.update((policies["urlize.rel"] or "").split())
    rel = " ".join(sorted(rel_parts)) or None
    if target is None:
        target = policies["urlize.target"]
    if extra_schemes is None:
        extra_schemes = policies["urlize.extra_schemes"] or ()
    for scheme in extra_schemes:
        if _uri_scheme_re.fullmatch(scheme) is None:
            raise FilterArgumentError(f"{scheme!r} is not a valid URI scheme prefix.")
    result = urlize(
        value, trim_url_limit=trim_url_limit, rel=rel, target=target, extra_schemes=extra_schemes
    )
    return Markup(result) if eval_ctx.autoescape else result


def bounded_filters() -> dict[str, Callable[..., Any]]:
    replacements: dict[str, Callable[..., Any]] = {
        "tojson": functools.wraps(FILTERS["tojson"])(do_tojson),
        "urlize": do_urlize,
    }
    return {
        name: budgeted_filter(name, replacements.get(name, func)) for name, func in FILTERS.items()
    }


# --- str.format -----------------------------------------------------------------------------------


class _BoundedFormatting(SandboxedFormatter):
    """str.format and format_map: each field is refused before it is made when it would not fit
    (every number in its spec counts), and so is the sum of the fields."""

    escaping = 1
    made = 0

    def vformat(self, format_string: str, args: Any, kwargs: Any) -> str:
        self.made = 0
        return super().vformat(format_string, args, kwargs)

    def convert_field(self, value: Any, conversion: str | None) -> Any:
        if conversion == "s":
            return str(text_of(value, "formatting"))
        if conversion == "r":
            return repr_of(value, "formatting")
        if conversion == "a":
            return ascii_of(value, "formatting")
        return super().convert_field(value, conversion)

    def format_field(self, value: Any, format_spec: str) -> Any:
        afford(self.made + field_chars(value, format_spec, self.escaping), "formatting")
        if (
            not format_spec
            and not isinstance(value, str | int | float)
            and not hasattr(value, "__html__")
        ):
            value = text_of(value, "formatting")
        made = super().format_field(value, format_spec)
        self.made += len(made)
        read(made)  # a field can cost more than its value to read (a 300-digit float)
        return made


class BoundedFormatter(_BoundedFormatting):
    pass


class BoundedEscapeFormatter(_BoundedFormatting, SandboxedEscapeFormatter):
    escaping = 5


# --- Templates and their compiled code ------------------------------------------------------


class BudgetedTemplate(Template):
    """A template that renders under a budget: its own, or that of the render it is part of."""

    def render(self, *args: Any, **kwargs: Any) -> str:
        if _current.get() is not None:
            return super().render(*args, **kwargs)
        with render_budget():
            return super().render(*args, **kwargs)

    def generate(self, *args: Any, **kwargs: Any) -> Iterator[str]:
        # A budget cannot follow a generator across yields: render whole, then stream.
        yield self.render(*args, **kwargs)

    @functools.cached_property
    def _globals_keys(self) -> set[str]:
        return set(self.globals)  # shared by its renders: Jinja only reads it

    @functools.cached_property
    def _globals_dict(self) -> dict[str, Any]:
        # Globals are set before templates are loaded (Jinja's rule), so a copy stays true.
        return dict(self.globals)

    @functools.cached_property
    def _globals_owner(self) -> int:
        """Whose globals it sees: a template without globals of its own sees its
        environment's, so one parent serves all of them (`SharedContext`)."""
        found = self.globals
        shares = (
            isinstance(found, ChainMap)
            and len(found.maps) == 2
            and not found.maps[0]
            and found.maps[1] is self.environment.globals
        )
        return id(self.environment) if shares else id(self)

    def render_shared(self, context: SharedContext) -> str:
        """`render(context)`, the same text and errors, with the context laid over the globals
        once for all the parts of a message instead of once per template (Jinja copies both,
        walking its globals' ChainMap, for every render: most of a short part's cost)."""
        if _current.get() is None:
            with render_budget():
                return self.render_shared(context)
        environment = self.environment
        # What Template.new_context makes, from a parent dict Jinja never writes to.
        jinja_context = environment.context_class(
            environment, context.parent_for(self), self.name, self.blocks
        )
        jinja_context.globals_keys = self._globals_keys  # read by {% import %}
        try:
            return environment.concat(self.root_render_func(jinja_context))
        except Exception:
            environment.handle_exception()  # raises it, its traceback in the template's lines


class SharedContext:
    """One render's variables (one channel of one message) laid over the templates' globals
    once, for `BudgetedTemplate.render_shared` of each of its parts. `values` must not change
    while it is in use."""

    __slots__ = ("_parents", "values")

    def __init__(self, values: Mapping[str, Any]) -> None:
        self.values = values
        self._parents: dict[int, dict[str, Any]] = {}

    def parent_for(self, template: BudgetedTemplate) -> dict[str, Any]:
        key = template._globals_owner
        parent = self._parents.get(key)
        if parent is None:
            parent = self._parents[key] = {**template._globals_dict, **self.values}
        return parent


def _ticking(iterable: nodes.Node) -> nodes.Call:
    """`environment.loop_items(iterable)`: what a `for` loop iterates instead."""
    return nodes.Call(
        nodes.EnvironmentAttribute("loop_items", lineno=iterable.lineno),
        [iterable],
        [],
        None,
        None,
        lineno=iterable.lineno,
    )


def _is_ticking(iterable: nodes.Node) -> bool:
    return (
        isinstance(iterable, nodes.Call)
        and isinstance(iterable.node, nodes.EnvironmentAttribute)
        and iterable.node.name == "loop_items"
    )


class BudgetedCodeGenerator(CodeGenerator):
    """Jinja's code generator with the hooks the budget needs: every loop iterates through a
    ticking iterator, every macro is a BudgetedMacro, output and `~` print values within the
    limit, and container literals are counted when made."""

    def visit_Template(self, node: nodes.Template, frame: Frame | None = None) -> None:
        # Jinja has no hook per iteration: each loop iterates through environment.loop_items.
        for loop in list(node.find_all(nodes.For)):
            if not _is_ticking(loop.iter):
                loop.iter = _ticking(loop.iter)
        super().visit_Template(node, frame)

    def macro_def(self, macro_ref: Any, frame: Frame) -> None:
        # Jinja's own, with the macro class taken from the environment.
        arg_tuple = ", ".join(repr(x.name) for x in macro_ref.node.args)
        name = getattr(macro_ref.node, "name", None)
        if len(macro_ref.node.args) == 1:
            arg_tuple += ","
        self.write(
            f"environment.macro_class(environment, macro, {name!r}, ({arg_tuple}),"
            f" {macro_ref.accesses_kwargs!r}, {macro_ref.accesses_varargs!r},"
            f" {macro_ref.accesses_caller!r}, context.eval_ctx.autoescape)"
        )

    def visit_Output(self, node: nodes.Output, frame: Frame) -> None:
        # What Jinja's own visit_Output will make constant (text, folded constants) is counted
        # here at once; each expression it leaves for the render is a step, counted when printed.
        if frame.require_output_check and self.has_known_extends:
            return  # nothing is output outside blocks
        finalize = self._make_finalize()
        expressions = literal_chars = 0
        for child in node.nodes:
            try:
                if not (finalize.const or isinstance(child, nodes.TemplateData)):
                    raise nodes.Impossible()
                literal_chars += len(self._output_child_to_const(child, frame, finalize))
            except (nodes.Impossible, Exception):
                expressions += 1
        self.writeline(f"environment.emitting({expressions}, {literal_chars})")
        super().visit_Output(node, frame)

    def _output_child_pre(self, node: nodes.Expr, frame: Frame, finalize: Any) -> None:
        if frame.eval_ctx.volatile:
            self.write(
                "(environment.html_of if context.eval_ctx.autoescape else environment.plain)("
            )
        elif frame.eval_ctx.autoescape:
            self.write("environment.html_of(")
        else:
            self.write("environment.plain(")
        if finalize.src is not None:
            self.write(finalize.src)

    @optimizeconst
    def visit_Concat(self, node: nodes.Concat, frame: Frame) -> None:
        if frame.eval_ctx.volatile:
            markup = "context.eval_ctx.autoescape"
        else:
            markup = repr(bool(frame.eval_ctx.autoescape))
        self.write("environment.tilde((")
        for arg in node.nodes:
            self.visit(arg, frame)
            self.write(", ")
        self.write(f"), {markup})")

    @optimizeconst
    def visit_Compare(self, node: nodes.Compare, frame: Frame) -> None:
        # `a in b`, `a == b`, ...: environment.compare(op, a, b), a step that reads what it
        # compares (a scan in C that would cost nothing otherwise). A chain `a < b < c` keeps
        # Python's meaning: b evaluated once, c only when a < b.
        left: nodes.Expr | str = node.expr
        self.write("(")
        for index, operand in enumerate(node.ops):
            if index:
                self.write(" and ")
            self.write(f"environment.compare({operand.op!r}, ")
            if isinstance(left, str):
                self.write(left)
            else:
                self.visit(left, frame)
            self.write(", ")
            if index < len(node.ops) - 1:
                left = self.temporary_identifier()
                self.write(f"({left} := ")
                self.visit(operand.expr, frame)
                self.write(")")
            else:
                self.visit(operand.expr, frame)
            self.write(")")
        self.write(")")

    def _counted(self, visit: Callable[[Any, Frame], None], node: nodes.Expr, frame: Frame) -> None:
        self.write("environment.literal(")
        visit(node, frame)
        self.write(")")

    def visit_List(self, node: nodes.List, frame: Frame) -> None:
        self._counted(super().visit_List, node, frame)

    def visit_Dict(self, node: nodes.Dict, frame: Frame) -> None:
        self._counted(super().visit_Dict, node, frame)

    def visit_Tuple(self, node: nodes.Tuple, frame: Frame) -> None:
        if node.ctx == "load":
            self._counted(super().visit_Tuple, node, frame)
        else:  # an assignment target
            super().visit_Tuple(node, frame)


# --- The environment -------------------------------------------------------------------------


class MessageSandbox(SandboxedEnvironment):
    """Jinja's sandbox (no `__class__`, `__globals__`, `mro`, no unsafe callables) with the
    render budget: every call, lookup, operator, filter, test, loop iteration and output counted
    and every size-multiplying operation checked before it runs (see the module docstring)."""

    code_generator_class = BudgetedCodeGenerator
    template_class = BudgetedTemplate
    macro_class = BudgetedMacro
    intercepted_binops = frozenset({"+", "-", "*", "/", "//", "%", "**"})

    def __init__(self, **options: Any) -> None:
        super().__init__(**options)
        self.filters = bounded_filters()
        tests = cast(dict[str, Callable[..., Any]], self.tests)
        self.tests = {name: budgeted_test(name, test) for name, test in tests.items()}
        # lipsum makes any amount of text from one call; nothing a message needs.
        self.globals.pop("lipsum", None)
        self.globals["range"] = budgeted_range

    # What the compiled code calls (see BudgetedCodeGenerator).
    loop_items = TickingIterator
    plain = staticmethod(plain)
    html_of = staticmethod(html_of)
    emitting = staticmethod(emitting)

    @staticmethod
    def tilde(pieces: tuple[Any, ...], markup: bool) -> str:
        """`a ~ b`: each side printed within the limit, the whole refused before it is joined."""
        tick()
        texts = [stringified(piece) for piece in pieces]
        escaping = 5 if markup and any(hasattr(text, "__html__") for text in texts) else 1
        afford(sum(len(str(text)) for text in texts) * escaping, "joining with ~")
        joined: str = markup_join(texts) if markup else str_join(texts)
        spend(len(joined))
        return joined

    @staticmethod
    def compare(name: str, left: Any, right: Any) -> Any:
        """A comparison (`in`, `not in`, `==`, `<`...): a step, and what it reads of both
        sides."""
        tick()
        read(left)
        read(right)
        return COMPARISONS[name](left, right)

    @staticmethod
    def literal(value: Any) -> Any:
        """A list, tuple or dict literal: counted expanded (`[a, a]` holds a twice)."""
        spend(measure(value))
        return value

    def call_binop(self, context: Any, operator: str, left: Any, right: Any) -> Any:
        tick()
        read(left)
        read(right)
        chars = _binop_chars(operator, left, right)
        result = self.binop_table[operator](left, right)
        spend(chars if chars is not None else measure(result))
        if operator == "%":  # formatting can cost more than its inputs (a 300-digit float)
            read(result)
        return result

    def getattr(self, obj: Any, attribute: str) -> Any:
        budget = _current.get()  # tick(), inlined: the commonest step
        if budget is not None:
            budget.steps_left -= 1
            if budget.steps_left <= budget.next_clock:
                budget.checkpoint()
        return super().getattr(obj, attribute)

    def getitem(self, obj: Any, argument: Any) -> Any:
        tick()
        if type(argument) is not int:
            read(argument)  # a key is hashed and compared
        value = super().getitem(obj, argument)
        if isinstance(argument, slice):
            spend(measure(value))
        return value

    def call(self, context: Any, obj: Any, /, *args: Any, **kwargs: Any) -> Any:
        tick()
        if isinstance(obj, LoopContext) and args:  # a recursive loop() iterates too
            args = (TickingIterator(args[0]), *args[1:])
        if not self.is_safe_callable(obj):
            return super().call(context, obj, *args, **kwargs)  # refuses it
        # A macro takes its arguments as they are; a loop's iterator ticks for each item.
        if obj is not TickingIterator and not isinstance(obj, Macro):
            read_call(obj, args, kwargs)
        args = checked_call_args(obj, args, kwargs)
        result = context.call(obj, *args, **kwargs)
        spend(measure(result))
        return result

    def wrap_str_format(self, value: Any) -> Callable[..., str] | None:
        """Jinja's, with the bounded formatters."""
        methods = types.MethodType | types.BuiltinMethodType
        if not isinstance(value, methods) or value.__name__ not in ("format", "format_map"):
            return None
        f_self: Any = value.__self__
        if not isinstance(f_self, str):
            return None
        str_type: type[str] = type(f_self)
        is_format_map = value.__name__ == "format_map"
        formatter: SandboxedFormatter
        if isinstance(f_self, Markup):
            formatter = BoundedEscapeFormatter(self, escape=f_self.escape)
        else:
            formatter = BoundedFormatter(self)
        vformat = formatter.vformat

        def wrapper(*args: Any, **kwargs: Any) -> str:
            if is_format_map:
                if kwargs:
                    raise TypeError("format_map() takes no keyword arguments")
                if len(args) != 1:
                    raise TypeError(f"format_map() takes exactly one argument ({len(args)} given)")
                kwargs = args[0]
                args = ()
            return str_type(vformat(f_self, args, kwargs))

        return functools.update_wrapper(wrapper, value)


_SIZED = str | bytes | list | tuple
COMPARISONS: dict[str, Callable[[Any, Any], Any]] = {
    "eq": operator.eq,
    "ne": operator.ne,
    "gt": operator.gt,
    "gteq": operator.ge,
    "lt": operator.lt,
    "lteq": operator.le,
    "in": lambda left, right: left in right,
    "notin": lambda left, right: left not in right,
}


def _binop_chars(operator: str, left: Any, right: Any) -> int | None:
    """What an operator's result will count, refused before it is made when it would not fit;
    None when the result is small (numbers) or at most its inputs, measured once made."""
    if operator == "**" and isinstance(right, int | float):
        grows = isinstance(left, int) and left.bit_length() * abs(right) > MAX_BITS
        if abs(right) > MAX_EXPONENT or grows:
            raise RenderBudgetExceeded("numbers this large are not allowed in a template")
    elif operator == "*":
        for sequence, times in ((left, right), (right, left)):
            if isinstance(sequence, _SIZED) and isinstance(times, int):
                return afford(measure(sequence) * max(times, 0), "repeating")
        if (
            isinstance(left, int)
            and isinstance(right, int)
            and left.bit_length() + right.bit_length() > MAX_BITS
        ):
            raise RenderBudgetExceeded("numbers this large are not allowed in a template")
    elif operator == "+" and isinstance(left, _SIZED) and type(left) is type(right):
        return afford(measure(left) + measure(right), "adding")
    elif operator == "+" and isinstance(left, str) and isinstance(right, str):
        # Markup + str escapes the str: up to five characters for one.
        return afford(5 * (len(left) + len(right)), "adding")
    elif operator == "%" and isinstance(left, str | bytes):
        percent_chars(left, right)
    return None
