"""Sentry for web and worker processes; personal data stays out of events; beat jobs check in.

Initialised from settings (so in every process that loads them: web, each worker, beat) when
SENTRY_DSN is set. Before anything leaves the process:

- sentry's own EventScrubber drops values under secret keys (passwords, auth headers, cookies)
  plus our denylist of personal keys (email, phone, token, body, context, content, ...), at
  any depth, including stack frames' local variables;
- `scrub_event` (before_send, and before_breadcrumb for breadcrumbs) then rewrites every
  remaining string: email addresses, phone numbers, signed tokens in our link paths, token
  query parameters, long opaque tokens (push tokens), and `body=`/`'subject': ...` fields
  inside reprs of our dataclasses (a local `pairs` holding Outgoing objects, say);
- while a provider is called, the recipients and rendered words of its batch are known values
  (`personal_values`): a provider error that quotes a message body back is filtered by value.

Beat jobs are monitored as Sentry Crons check-ins sent by the worker that runs them (see
`checkin_started`/`checkin_finished`), not by `CeleryIntegration(monitor_beat_tasks=True)`:
that one adds its check-in in `Scheduler.apply_entry`, which works only when beat itself inits
Sentry and ignores sub-minute intervals (our release and campaign-step jobs run every 15 and 30
seconds), and Sentry documents only the default scheduler as supported, not django-celery-beat's
DatabaseScheduler. Checking in from the worker covers every job on any scheduler: a job that
beat stops sending, or that no worker runs, misses its check-in and Sentry alerts. Jobs that
run more often than once a minute check in once a minute.
"""

from __future__ import annotations

import math
import re
import threading
import time
from collections.abc import Callable, Iterable, Iterator, Mapping
from contextlib import contextmanager
from contextvars import ContextVar
from typing import Any, cast

from celery.schedules import crontab, schedule

from notifier.cooldowns import cooldown_take

FILTERED = "[Filtered]"

# Keys whose values are personal or message content, wherever they appear (dict keys, local
# variable names, extra, contexts). Lower case; sentry's scrubber compares lower-cased keys.
PERSONAL_KEYS = [
    "email",
    "emails",
    "phone",
    "phones",
    "to",
    "recipient",
    "recipients",
    "address",
    "token",
    "tokens",
    "push_token",
    "device_token",
    "web_push_keys",
    "devices",
    "device",
    "body",
    "html",
    "text",
    "subject",
    "title",
    "link",
    "content",
    "contents",
    "context",
    "clean_context",
    "shared_context",
    "contexts",
    "rendered",
    "outgoing",
    "outgoings",
    "first_name",
    "last_name",
    "name_on_file",
]

# Structural keys of an event whose values are code, not data: never rewritten.
_STRUCTURAL = frozenset(
    {
        "filename",
        "abs_path",
        "module",
        "function",
        "lineno",
        "colno",
        "platform",
        "logger",
        "level",
        "event_id",
        "timestamp",
        "start_timestamp",
        "type",
        "mechanism",
        "in_app",
        "context_line",
        "pre_context",
        "post_context",
        "release",
        "environment",
        "server_name",
        "sdk",
        "modules",
        "fingerprint",
        "tags",
        "request_id",
    }
)

_EMAIL = re.compile(r"[A-Za-z0-9._%+\-]+@[A-Za-z0-9.\-]+\.[A-Za-z]{2,}")
# E.164 (how phones are stored here) and the same with spaces or dashes, after a '+'.
_PHONE = re.compile(r"(?<![\w+])\+\d[\d \-().]{6,18}\d\b")
# Signed tokens in our own link paths: /unsubscribe/<t>/, /preferences/<t>/, /t/c/<t>/, /t/o/<t>.gif
# (a route pattern such as "/unsubscribe/{token}/", a transaction's name, is left alone).
_LINK_TOKEN = re.compile(r"(/(?:unsubscribe|preferences|t/c|t/o)/)(?![{<])[^/\s?#'\"]+")
_QUERY_TOKEN = re.compile(
    r"([?&](?:token|access_token|auth|key|sig|signature|code|secret|password)=)[^&\s#'\"]+",
    re.IGNORECASE,
)
# Push tokens (FCM, APNs hex, web push endpoints' ids) and similar opaque credentials.
_LONG_TOKEN = re.compile(r"\b[A-Za-z0-9_\-:]{40,}\b")
# Notifier's own secrets, whatever their length: API keys, app tokens, webhook signing secrets.
_OWN_SECRET = re.compile(r"\b(?:ntf|ntr|whsec)_[A-Za-z0-9+/=_\-:.]+")
# `body='...'`, `'body': '...'`, `"context": {...}` inside a repr or a message.
_FIELD_NAMES = "|".join(re.escape(k) for k in PERSONAL_KEYS)
_REPR_FIELD = re.compile(rf"(?<![\w])['\"]?({_FIELD_NAMES})['\"]?\s*[=:]\s*", re.IGNORECASE)
_OPEN_CLOSE = {"{": "}", "[": "]", "(": ")"}
_CALL = re.compile(r"[A-Za-z_][\w.]*(?=\()")
_BARE = re.compile(r"[^,)}\]\s&'\"#]*")


def _skip_value(text: str, start: int) -> int:
    """Index just past the value starting at `start`: a quoted string or a bracketed group."""
    if start >= len(text):
        return start
    opener = text[start]
    if opener in "'\"":
        index = start + 1
        while index < len(text):
            if text[index] == "\\":
                index += 2
                continue
            if text[index] == opener:
                return index + 1
            index += 1
        return len(text)
    if opener in _OPEN_CLOSE:
        depth, index, quote = 0, start, ""
        while index < len(text):
            char = text[index]
            if quote:
                if char == "\\":
                    index += 1
                elif char == quote:
                    quote = ""
            elif char in "'\"":
                quote = char
            elif char in _OPEN_CLOSE:
                depth += 1
            elif char in _OPEN_CLOSE.values():
                depth -= 1
                if depth == 0:
                    return index + 1
            index += 1
        return len(text)
    call = _CALL.match(text, start)  # Content(subject=..., body=...)
    if call:
        return _skip_value(text, call.end())
    match = _BARE.match(text, start)
    return match.end() if match else start


def _scrub_repr_fields(text: str) -> str:
    out: list[str] = []
    position = 0
    for match in _REPR_FIELD.finditer(text):
        if match.start() < position:
            continue
        end = _skip_value(text, match.end())
        if end == match.end():
            continue
        out.append(text[position : match.end()])
        out.append(FILTERED)
        position = end
    out.append(text[position:])
    return "".join(out)


# The personal strings of what is being sent right now (set around a provider call): free text
# such as a message body has no pattern, so a provider error quoting it is caught by value.
# Worked out only if something is scrubbed while the block runs, then kept for the block.
MIN_KNOWN_LEN = 6


class _Known:
    def __init__(self, values: Callable[[], Iterable[str]]) -> None:
        self._values: Callable[[], Iterable[str]] | None = values
        self._pieces: tuple[str, ...] = ()

    def pieces(self) -> tuple[str, ...]:
        if self._values is not None:
            found: set[str] = set()
            for value in self._values():
                if len(value) >= MIN_KNOWN_LEN:
                    found.add(value)
                    found.update(line.strip() for line in value.splitlines())
            self._pieces = tuple(
                sorted((p for p in found if len(p) >= MIN_KNOWN_LEN), key=len, reverse=True)
            )
            self._values = None
        return self._pieces


_known: ContextVar[tuple[_Known, ...]] = ContextVar("notifier_personal_values", default=())


@contextmanager
def personal_values(values: Callable[[], Iterable[str]]) -> Iterator[None]:
    """Within the block, the strings `values()` returns (and each of their lines) never reach
    Sentry. `values` is called only if an event or breadcrumb is scrubbed meanwhile."""
    token = _known.set((*_known.get(), _Known(values)))
    try:
        yield
    finally:
        _known.reset(token)


def scrub_text(text: str) -> str:
    """Personal data out of one string (pure, but for the values of `personal_values`)."""
    for known in _known.get():
        for value in known.pieces():
            if value in text:
                text = text.replace(value, FILTERED)
    if "=" in text or ":" in text:
        text = _scrub_repr_fields(text)
    text = _EMAIL.sub("[email]", text)
    text = _LINK_TOKEN.sub(r"\1[token]", text)
    text = _QUERY_TOKEN.sub(r"\1[Filtered]", text)
    text = _PHONE.sub("[phone]", text)
    text = _OWN_SECRET.sub("[token]", text)
    return _LONG_TOKEN.sub("[token]", text)


_PERSONAL = frozenset(PERSONAL_KEYS)


def scrub(value: Any, key: str = "") -> Any:
    """Personal data out of a JSON-like structure (pure): denylisted keys are filtered, every
    other string is rewritten by `scrub_text`; structural event keys are left as they are."""
    if key.lower() in _STRUCTURAL:
        return value
    if key.lower() in _PERSONAL:
        return FILTERED if value not in (None, "", [], {}) else value
    if isinstance(value, str):
        return scrub_text(value)
    if isinstance(value, Mapping):
        return {k: scrub(v, str(k)) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [scrub(item) for item in value]
    return value


def scrub_event(event: dict[str, Any], hint: dict[str, Any] | None = None) -> dict[str, Any]:
    """before_send: scrub the whole event; tag it with the log context's ids."""
    from notifier.logcontext import current_ids

    # Top-level keys are the event's own structure ("contexts" holds runtime and celery
    # details); below them the denylist applies.
    scrubbed: dict[str, Any] = {
        key: value if key in _STRUCTURAL else scrub(value) for key, value in event.items()
    }
    tags = scrubbed.setdefault("tags", {})
    if isinstance(tags, dict):
        for name, value in current_ids().items():
            tags.setdefault(name, value)
    return scrubbed


def scrub_breadcrumb(crumb: dict[str, Any], hint: dict[str, Any] | None = None) -> dict[str, Any]:
    scrubbed: dict[str, Any] = scrub(crumb)
    return scrubbed


def init_sentry(dsn: str, *, environment: str, transport: Any = None) -> None:
    """Set Sentry up in this process (web, worker or beat). `transport` is for tests."""
    import sentry_sdk
    from sentry_sdk.integrations.celery import CeleryIntegration
    from sentry_sdk.integrations.django import DjangoIntegration
    from sentry_sdk.scrubber import DEFAULT_DENYLIST, EventScrubber

    options: dict[str, Any] = {}
    if transport is not None:
        options["transport"] = transport
    sentry_sdk.init(
        dsn=dsn,
        environment=environment,
        # Check-ins come from the workers (module docstring), so beat's own are off.
        integrations=[DjangoIntegration(), CeleryIntegration(monitor_beat_tasks=False)],
        event_scrubber=EventScrubber(denylist=DEFAULT_DENYLIST + PERSONAL_KEYS, recursive=True),
        before_send=cast(Any, scrub_event),
        before_breadcrumb=cast(Any, scrub_breadcrumb),
        max_request_body_size="never",
        traces_sample_rate=0.0,
        **options,
    )


def sentry_on() -> bool:
    try:
        import sentry_sdk
    except ImportError:
        return False
    return bool(sentry_sdk.is_initialized())


# --- Cron check-ins for beat jobs -------------------------------------------------------------

# Sentry Crons counts in whole minutes: a job every 15 s is watched as "every minute".
MIN_INTERVAL_MIN = 1
CRONTAB_MARGIN_MIN = 30


def monitor_config(spec: Mapping[str, Any], *, timezone: str = "UTC") -> dict[str, Any]:
    """Pure: a Sentry monitor config from a BEAT_SCHEDULE entry.

    Intervals become `interval` schedules in whole minutes (at least one), with half an
    interval of margin (at least a minute, at most 30); crontabs keep their expression with 30
    minutes of margin. The longest a run may take is the job's own `expires` (a run that is
    still going when its successor would have been dropped is late).
    """
    job_schedule = spec["schedule"]
    if isinstance(job_schedule, crontab):
        config: dict[str, Any] = {
            "schedule": {
                "type": "crontab",
                # the expression as written (the parsed sets would be expanded)
                "value": " ".join(
                    str(getattr(job_schedule, f"_orig_{part}"))
                    for part in ("minute", "hour", "day_of_month", "month_of_year", "day_of_week")
                ),
            },
            "checkin_margin": CRONTAB_MARGIN_MIN,
        }
    else:
        seconds = (
            job_schedule.seconds if isinstance(job_schedule, schedule) else float(job_schedule)
        )
        minutes = max(MIN_INTERVAL_MIN, math.ceil(seconds / 60))
        config = {
            "schedule": {"type": "interval", "value": minutes, "unit": "minute"},
            "checkin_margin": min(CRONTAB_MARGIN_MIN, max(1, minutes // 2)),
        }
    expires = spec.get("options", {}).get("expires")
    if expires:
        config["max_runtime"] = max(1, math.ceil(float(expires) / 60))
    config["timezone"] = timezone
    return config


_open_checkins: dict[str, tuple[str, str | None, float]] = {}
_open_lock = threading.Lock()


def _sentry_capture() -> Callable[..., Any]:
    from sentry_sdk.crons import capture_checkin

    return capture_checkin


def _job_of(task_name: str) -> str | None:
    from notifier.periodic import BEAT_SCHEDULE

    for job, spec in BEAT_SCHEDULE.items():
        if spec["task"] == task_name:
            return job
    return None


def _checks_in_now(job: str, spec: Mapping[str, Any]) -> bool:
    """A job that runs more often than once a minute checks in once a minute (whichever run
    comes first, across processes): Sentry watches it by the minute, so more check-ins would
    only add volume."""
    job_schedule = spec["schedule"]
    if isinstance(job_schedule, crontab):
        return True
    seconds = job_schedule.seconds if isinstance(job_schedule, schedule) else float(job_schedule)
    if seconds >= 60:
        return True
    return cooldown_take(f"crons:{job}", 60 - seconds)


def checkin_started(
    task_id: str, task_name: str, *, capture: Callable[..., Any] | None = None
) -> None:
    """task_prerun of a periodic job: an in_progress check-in under the job's name."""
    if capture is None:
        if not sentry_on():
            return
        capture = _sentry_capture()
    job = _job_of(task_name)
    if job is None:
        return
    from notifier.periodic import BEAT_SCHEDULE

    if not _checks_in_now(job, BEAT_SCHEDULE[job]):
        return
    check_in_id = capture(
        monitor_slug=job,
        monitor_config=monitor_config(BEAT_SCHEDULE[job]),
        status="in_progress",
    )
    with _open_lock:
        _open_checkins[task_id] = (job, check_in_id, time.monotonic())


def checkin_finished(task_id: str, *, ok: bool, capture: Callable[..., Any] | None = None) -> None:
    """task_postrun of a periodic job: ok, or error when it raised."""
    with _open_lock:
        opened = _open_checkins.pop(task_id, None)
    if opened is None:
        return
    if capture is None:
        capture = _sentry_capture()
    job, check_in_id, started = opened
    from notifier.periodic import BEAT_SCHEDULE

    capture(
        monitor_slug=job,
        check_in_id=check_in_id,
        monitor_config=monitor_config(BEAT_SCHEDULE[job]),
        status="ok" if ok else "error",
        duration=time.monotonic() - started,
    )
