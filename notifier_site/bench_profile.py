"""Where a profiled batch's time goes, for `manage.py bench`: cProfile self time summed by area.

Each function's own time goes to the area of its file (and, in the pipeline module, of its
name). Shared helpers that belong to no area (C built-ins such as getattr or str.join, the
standard library, third-party code outside the areas) are charged to the areas of their callers,
in proportion to the time each caller spent in them; project code of no area is "other".
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Mapping
from typing import Any

RENDER = "render"
LINKS = "tracked links and signing"
ROUTING = "routing and policies"
DATABASE = "database round trips"
REDIS = "redis round trips"
COPY_TEXT = "COPY text building"
ORM = "Django ORM"
JSON = "JSON"
OTHER = "other"
AREAS = (RENDER, LINKS, ROUTING, DATABASE, REDIS, COPY_TEXT, ORM, JSON, OTHER)

# The parts of the pipeline module that route (decide channels, read the audience); the rest of
# it (writing, publishing, bookkeeping) is "other".
PIPELINE_ROUTING = frozenset(
    {
        "routing_rules",
        "audience_of",
        "_may_email",
        "suppressed_emails_of",
        "message_type",
        "channel_decision",
        "routed",
        "_decide_plan",
        "message_route",
        "route_many",
        "outcome_rows",
    }
)

# First match wins: a file (path tail) or a package folder ("name/") and its area. The COPY text
# module comes before the ORM and JSON so that its own loops count as building the COPY.
FILE_AREAS: tuple[tuple[str, str], ...] = (
    ("notifier/db.py", COPY_TEXT),
    ("psycopg2/_json.py", JSON),
    ("django/db/models/fields/json.py", JSON),
    ("json/", JSON),
    ("psycopg2/", DATABASE),
    ("redis/", REDIS),
    ("socket.py", REDIS),
    ("notifier/redis_client.py", REDIS),
    ("campaigns/tracking.py", LINKS),
    ("campaigns/services/tracking.py", LINKS),
    ("notifier/links.py", LINKS),
    ("notifier/signing.py", LINKS),
    ("django/core/signing.py", LINKS),
    ("hmac.py", LINKS),
    ("hashlib.py", LINKS),
    ("base64.py", LINKS),
    ("urllib/parse.py", LINKS),
    ("jinja2/", RENDER),
    ("markupsafe/", RENDER),
    ("notifier/rendering.py", RENDER),
    ("notifier/sandbox.py", RENDER),
    ("campaigns/rendering.py", RENDER),
    ("notifier/policies/", ROUTING),
    ("campaigns/policies.py", ROUTING),
    ("notifier/services/admission.py", ROUTING),
    ("notifier/services/caps.py", ROUTING),
    ("notifier/services/preferences.py", ROUTING),
    ("notifier/cooldowns.py", ROUTING),
    ("django/db/", ORM),
)

# C functions (cProfile's file "~") by a word of their name: "<method 'execute' of
# 'psycopg2.extensions.cursor' objects>", "<method 'digest' of '_hashlib.HMAC' objects>", ...
BUILTIN_AREAS: tuple[tuple[str, str], ...] = (
    ("psycopg2", DATABASE),
    ("_hashlib", LINKS),
    ("_hmac", LINKS),
    ("binascii", LINKS),
    ("_json", JSON),
    ("markupsafe", RENDER),
    ("_socket", REDIS),
)

TEMPLATE_SUFFIXES = (".html", ".txt", ".jinja", ".j2")
PROJECT_PACKAGES = ("notifier/", "campaigns/", "channels/", "notifier_site/")

# pstats' key of a function, and its row: (primitive calls, calls, self time, cumulative time,
# callers), callers mapping each caller's key to (primitive calls, calls, self time, cum. time)
# of the calls it made.
Key = tuple[str, int, str]
Stats = Mapping[Key, tuple[Any, ...]]


def _in(path: str, where: str) -> bool:
    """A path is in `where`: that file (as the path's tail) or somewhere under that folder."""
    if where.endswith("/"):
        return f"/{where}" in path or path.startswith(where)
    return path == where or path.endswith(f"/{where}")


def area_of(filename: str, function: str) -> str | None:
    """The area a profiled function's own time counts towards; None for a shared helper, whose
    time is its callers'."""
    if filename == "~":
        return next((area for word, area in BUILTIN_AREAS if word in function), None)
    path = filename.replace("\\", "/")
    # Jinja's compiled templates: "<template>" for a template from a string, else the file.
    if path.startswith("<template") or path.endswith(TEMPLATE_SUFFIXES):
        return RENDER
    if _in(path, "notifier/services/pipeline.py"):
        return ROUTING if function in PIPELINE_ROUTING else OTHER
    area = next((area for where, area in FILE_AREAS if _in(path, where)), None)
    if (
        area is None
        and "site-packages/" not in path
        and any(_in(path, package) for package in PROJECT_PACKAGES)
    ):
        return OTHER
    return area


def _split(
    key: Key, stats: Stats, known: dict[Key, dict[str, float]], seen: set[Key]
) -> dict[str, float]:
    """Which share of `key`'s own time each area gets: its own area's, or its callers'."""
    own = area_of(key[0], key[2])
    if own is not None:
        return {own: 1.0}
    if key in known:
        return known[key]
    callers = stats[key][4] if key in stats and len(stats[key]) > 4 else {}
    weights = {caller: row[2] for caller, row in callers.items() if caller not in seen}
    total = sum(weights.values())
    if not weights or total <= 0:  # no caller timed (or only a cycle back): not attributable
        weights = {caller: row[1] for caller, row in callers.items() if caller not in seen}
        total = sum(weights.values())
    if not weights or total <= 0:
        return {OTHER: 1.0}
    split: dict[str, float] = defaultdict(float)
    for caller, weight in weights.items():
        for area, share in _split(caller, stats, known, seen | {key}).items():
            split[area] += share * weight / total
    known[key] = split
    return split


def area_shares(stats: Stats) -> dict[str, float]:
    """Percent of all self time per area, every area listed, rounded to 0.1.

    `stats` is shaped as `pstats.Stats(...).stats`."""
    seconds = dict.fromkeys(AREAS, 0.0)
    known: dict[Key, dict[str, float]] = {}
    for key, row in stats.items():
        for area, share in _split(key, stats, known, set()).items():
            seconds[area] += row[2] * share
    total = sum(seconds.values())
    if total <= 0:
        return dict.fromkeys(AREAS, 0.0)
    return {area: round(100 * spent / total, 1) for area, spent in seconds.items()}
