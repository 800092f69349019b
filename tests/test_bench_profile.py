"""The bench's profile summary: self time by area, shared helpers charged to their callers."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

from notifier_site.bench_profile import (
    AREAS,
    COPY_TEXT,
    DATABASE,
    JSON,
    LINKS,
    ORM,
    OTHER,
    RENDER,
    ROUTING,
    area_of,
    area_shares,
)

SITE = "/venv/lib/python3.11/site-packages"
STDLIB = "/usr/lib/python3.11"
EXECUTE = ("~", 0, "<method 'execute' of 'psycopg2.extensions.cursor' objects>")
JINJA = (f"{SITE}/jinja2/runtime.py", 93, "new_context")
COPY = ("/app/notifier/db.py", 204, "_copy_text")
DECISION = ("/app/notifier/services/pipeline.py", 202, "channel_decision")
GENERATE = ("/app/notifier/services/pipeline.py", 295, "message_generate")
ISINSTANCE = ("~", 0, "<built-in method builtins.isinstance>")
CHAIN = (f"{STDLIB}/collections/__init__.py", 1014, "__iter__")
PING = (f"{STDLIB}/functools.py", 1, "ping")
PONG = (f"{STDLIB}/functools.py", 2, "pong")


def row(self_s: float, callers: dict | None = None, calls: int = 1) -> tuple:
    return (calls, calls, self_s, self_s, callers or {})


def called(self_s: float, calls: int = 1) -> tuple:
    return (calls, calls, self_s, self_s)


def test_each_area_is_found_by_file_and_by_name():
    assert area_of(*EXECUTE[::2]) == DATABASE
    assert area_of("~", "<method 'digest' of '_hashlib.HMAC' objects>") == LINKS
    assert area_of(f"{SITE}/django/db/models/base.py", "__init__") == ORM
    assert area_of(f"{SITE}/django/db/models/fields/json.py", "get_prep_value") == JSON
    assert area_of(f"{STDLIB}/json/encoder.py", "iterencode") == JSON
    assert area_of("<template>", "root") == RENDER
    assert area_of("/app/campaigns/tracking.py", "track_content") == LINKS
    assert area_of("/app/notifier/policies/routing.py", "plan_channels") == ROUTING
    assert area_of(*COPY[::2]) == COPY_TEXT
    # The pipeline module routes in some functions and writes in others.
    assert area_of(*DECISION[::2]) == ROUTING
    assert area_of(*GENERATE[::2]) == OTHER
    # Shared helpers have no area of their own; a site-packages folder named like ours is not ours.
    assert area_of(*ISINSTANCE[::2]) is None
    assert area_of(f"{SITE}/channels/layers.py", "send") is None


def test_shares_sum_self_time_by_area_and_charge_helpers_to_their_callers():
    stats = {
        EXECUTE: row(3.0),
        JINJA: row(2.0),
        COPY: row(1.0),
        DECISION: row(0.5),
        GENERATE: row(0.5),
        # isinstance: 1.5 s of its time was spent called from jinja, 0.5 s from the COPY text;
        ISINSTANCE: row(2.0, {JINJA: called(1.5, 900), COPY: called(0.5, 100)}, calls=1000),
        # a standard-library helper called by jinja alone.
        CHAIN: row(0.5, {JINJA: called(0.5)}),
    }

    shares = area_shares(stats)

    assert list(shares) == list(AREAS)
    assert shares[DATABASE] == 31.6  # 3 of 9.5 s
    assert shares[RENDER] == 42.1  # 2 + 1.5 + 0.5
    assert shares[COPY_TEXT] == 15.8  # 1 + 0.5
    assert shares[ROUTING] == 5.3
    assert shares[OTHER] == 5.3
    assert abs(sum(shares.values()) - 100) < 0.5


def test_a_helper_in_a_cycle_of_helpers_is_other_and_nothing_is_lost():
    stats = {
        JINJA: row(1.0),
        PING: row(1.0, {PONG: called(1.0)}),
        PONG: row(1.0, {PING: called(1.0)}),
    }

    shares = area_shares(stats)

    assert shares[RENDER] == 33.3
    assert shares[OTHER] == 66.7


# Profiled in a fresh interpreter, as the bench's own process profiles: in the test session's
# process (after the whole suite, with Sentry and others initialised) cProfile was once seen to
# spin at its first call.
REAL_PROFILE = """
import cProfile, json, pstats
from notifier_site.bench_profile import area_shares
profiler = cProfile.Profile()
profiler.enable()
for index in range(2000):
    json.dumps({"index": index, "name": f"user {index}"})
profiler.disable()
print(json.dumps(area_shares(pstats.Stats(profiler).stats)))
"""


def test_a_real_profile_sums_to_a_hundred():
    done = subprocess.run(
        [sys.executable, "-c", REAL_PROFILE],
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
        cwd=Path(__file__).resolve().parent.parent,
    )

    shares = json.loads(done.stdout)

    assert shares[JSON] > 50
    assert abs(sum(shares.values()) - 100) < 0.5


def test_no_time_at_all_is_no_share():
    assert area_shares({}) == dict.fromkeys(AREAS, 0.0)
