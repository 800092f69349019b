"""Provider limits: global token buckets and circuit breakers, on real Redis and in process."""

from __future__ import annotations

import json
import logging
import os
import random
import subprocess
import sys
import threading
import time
import uuid
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
import redis
import sentry_sdk
from django.conf import settings as django_settings
from django.core.exceptions import ImproperlyConfigured

from notifier import provider_limits
from notifier.provider_limits import Grant, State, TransitionKind
from notifier.rates import InvalidRate, Rate
from notifier.redis_client import redis_client, state_redis_url
from tests.conftest import wait_until

ROOT = Path(__file__).resolve().parents[2]
KEY = "sms:test"
# Read before any test points it at a private prefix.
DEPLOYED_KEY_PREFIX = provider_limits.KEY_PREFIX


@pytest.fixture(autouse=True)
def key_prefix(monkeypatch):
    """A private Redis key prefix per test, deleted afterwards."""
    prefix = f"test-provider-limits:{uuid.uuid4().hex[:12]}"
    monkeypatch.setattr(provider_limits, "KEY_PREFIX", prefix)
    yield prefix
    client = redis_client(state_redis_url())
    stale = list(client.scan_iter(match=f"{prefix}:*"))
    if stale:
        client.delete(*stale)


@pytest.fixture
def limits_redis():
    return redis_client(state_redis_url())


@pytest.fixture(params=["redis", "embedded"])
def backend(request, settings, monkeypatch):
    """Runs a behavioural test on the shared Redis backend and on the in-process one."""
    settings.NOTIFIER_EMBEDDED = request.param == "embedded"
    if request.param == "embedded":
        # Fresh in-process state, and proof that embedded mode never reaches for Redis.
        monkeypatch.setattr(provider_limits, "_LOCAL", provider_limits._LocalBackend())

        def no_redis(url):
            raise AssertionError("embedded mode must not use Redis")

        monkeypatch.setattr(provider_limits, "_redis_backend", no_redis)
    else:
        assert django_settings.NOTIFIER_REDIS_URL.startswith("redis://")
    return request.param


@pytest.fixture
def limited(settings):
    """KEY limited to 20/s (burst 20)."""
    settings.NOTIFIER_RATE_LIMITS = {KEY: "20/s"}
    return KEY


@pytest.fixture
def breaker_settings(settings):
    settings.NOTIFIER_CIRCUIT_MIN_CALLS = 3
    settings.NOTIFIER_CIRCUIT_FAILURE_RATIO = 0.5
    settings.NOTIFIER_CIRCUIT_WINDOW_S = 2
    settings.NOTIFIER_CIRCUIT_COOLDOWN_S = 1
    return settings


# --- Rates ----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "per_second", "burst"),
    [
        ("10/s", 10.0, 10),
        ("600/m", 10.0, 10),
        ("3600/h", 1.0, 1),
        ("0.5/s", 0.5, 1),
        ("90/m", 1.5, 2),
        (" 25 / s ", 25.0, 25),
    ],
)
def test_parse_rate_accepts_per_second_minute_and_hour(text, per_second, burst):
    assert provider_limits.parse_rate(text) == Rate(per_second=per_second, burst=burst)


@pytest.mark.parametrize(
    "text", ["10", "10/d", "ten/s", "-1/s", "0/s", "", "10/s/s", "1e3/s", "/s", "10 per s"]
)
def test_parse_rate_rejects_other_forms_naming_the_accepted_one(text):
    with pytest.raises(InvalidRate, match=r"use <number>/<s\|m\|h>"):
        provider_limits.parse_rate(text)


def test_rate_limits_come_parsed_from_settings(settings):
    settings.NOTIFIER_RATE_LIMITS = {"sms:twilio": "10/s", "email:django": "6000/m"}
    assert provider_limits.rate_limits() == {"sms:twilio": Rate(10.0), "email:django": Rate(100.0)}


def test_rate_limits_name_the_bad_entry(settings):
    settings.NOTIFIER_RATE_LIMITS = {"sms:twilio": "10/s", "push:fcm": "fast"}
    with pytest.raises(ImproperlyConfigured, match=r"'push:fcm'='fast'.*<number>/<s\|m\|h>"):
        provider_limits.rate_limits()


# --- Token bucket ---------------------------------------------------------------------------


def test_bucket_grants_its_burst_then_refuses_with_retry_after_of_one_token(backend, limited):
    grants = [provider_limits.acquire(limited) for _ in range(20)]
    assert grants == [Grant(granted=1, retry_after_s=0.0)] * 20

    refused = provider_limits.acquire(limited)

    assert refused.granted == 0
    # 1/20 s, less whatever trickled in while the 20 calls ran (a few ms at most).
    assert 0.03 < refused.retry_after_s <= 0.05


def test_batch_gets_a_partial_grant_and_the_wait_for_the_rest(backend, limited):
    assert provider_limits.acquire(limited, 13) == Grant(granted=13, retry_after_s=0.0)

    batch = provider_limits.acquire(limited, 50)

    assert batch.granted == 7
    assert 0.03 < batch.retry_after_s <= 0.05


def test_waiting_the_retry_after_yields_the_next_token(backend, limited):
    refused = provider_limits.acquire(limited, 21)
    assert refused.granted == 20

    time.sleep(refused.retry_after_s)

    assert provider_limits.acquire(limited).granted == 1


def test_unlimited_keys_grant_everything_without_touching_redis(settings, monkeypatch):
    settings.NOTIFIER_EMBEDDED = False
    settings.NOTIFIER_RATE_LIMITS = {KEY: "1/s"}

    def no_backend():
        raise AssertionError("an unlimited key must not reach a backend")

    monkeypatch.setattr(provider_limits, "_backend", no_backend)

    assert provider_limits.acquire("email:unlimited", 500) == Grant(granted=500, retry_after_s=0.0)


def test_redis_keys_keep_the_names_a_running_deployment_has(monkeypatch):
    """The module was notifier/throttle.py: live buckets and open breakers must still be found
    after an upgrade, so its Redis keys keep that name."""
    monkeypatch.setattr(provider_limits, "KEY_PREFIX", DEPLOYED_KEY_PREFIX)

    assert provider_limits.bucket_redis_key("sms:twilio") == "notifier:throttle:bucket:sms:twilio"
    assert provider_limits.breaker_redis_keys("sms:twilio") == [
        "notifier:throttle:breaker:{sms:twilio}",
        "notifier:throttle:breaker:{sms:twilio}:counts",
        "notifier:throttle:breaker:{sms:twilio}:probe",
        "notifier:throttle:breaker:{sms:twilio}:waiters",
        "notifier:throttle:breaker:{sms:twilio}:paused",
    ]


def test_bucket_key_expires_once_it_would_be_full_again(settings, limited, limits_redis):
    settings.NOTIFIER_EMBEDDED = False
    provider_limits.acquire(limited, 10)

    ttl_ms = limits_redis.pttl(provider_limits.bucket_redis_key(limited))

    # 10 tokens to refill at 20/s: 0.5 s, plus a second of slack.
    assert 1000 < ttl_ms <= 1500


CHILD = """
import json, sys, time
from notifier import provider_limits

prefix, key, duration = sys.argv[1], sys.argv[2], float(sys.argv[3])
provider_limits.KEY_PREFIX = prefix
provider_limits.breaker_state("warm-up")  # settings loaded, Redis connected, before the start line
print("ready", flush=True)
sys.stdin.readline()
granted = calls = 0
start = time.time()
deadline = start + duration
while time.time() < deadline:
    grant = provider_limits.acquire(key)
    calls += 1
    granted += grant.granted
    if not grant.granted:
        time.sleep(max(0.0, min(grant.retry_after_s, deadline - time.time())))
print(json.dumps({"granted": granted, "calls": calls, "start": start, "end": time.time()}))
"""


def test_two_processes_share_one_limit_without_starving(key_prefix, report_figure):
    rate, duration = 20.0, 3.0
    env = {
        **os.environ,
        "DJANGO_SETTINGS_MODULE": "tests.settings",
        "REDIS_URL": django_settings.NOTIFIER_REDIS_URL,
        "CELERY_BROKER_URL": django_settings.CELERY_BROKER_URL,
        "NOTIFIER_RATE_LIMITS": f"{KEY}=20/s",
    }
    argv = [sys.executable, "-c", CHILD, key_prefix, KEY, str(duration)]
    children = [
        subprocess.Popen(
            argv, cwd=ROOT, env=env, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True
        )
        for _ in range(2)
    ]
    try:
        for child in children:
            assert child.stdout.readline().strip() == "ready"
        for child in children:
            child.stdin.write("go\n")
            child.stdin.flush()
        results = [json.loads(child.communicate(timeout=30)[0]) for child in children]
    finally:
        for child in children:
            if child.poll() is None:
                child.kill()
    assert [child.returncode for child in children] == [0, 0]

    elapsed = max(r["end"] for r in results) - min(r["start"] for r in results)
    granted = sum(r["granted"] for r in results)
    ceiling = rate * elapsed + 20  # refill over the measured window plus the initial burst
    report_figure(
        f"two processes: {granted} granted in {elapsed:.3f} s, ceiling {ceiling:.1f}, {results}"
    )

    assert elapsed >= duration
    assert granted <= ceiling
    assert granted >= 0.8 * ceiling
    assert all(r["granted"] > 0 for r in results)


# --- Circuit breaker ------------------------------------------------------------------------


def open_breaker(key=KEY, failures=3):
    transitions = [provider_limits.breaker_record(key, success=False) for _ in range(failures)]
    assert transitions[:-1] == [None] * (failures - 1)
    assert transitions[-1] is not None
    return transitions[-1]


def wait_half_open(key=KEY):
    wait_until(
        lambda: provider_limits.breaker_state(key) is State.HALF_OPEN,
        timeout=5,
        message="the cooldown to end",
    )


def test_a_failure_ratio_over_the_minimum_volume_opens_the_breaker_once(backend, breaker_settings):
    assert provider_limits.breaker_record(KEY, success=True) is None
    assert provider_limits.breaker_record(KEY, success=True) is None
    assert provider_limits.breaker_record(KEY, success=False) is None  # 1 of 3: under half
    assert provider_limits.breaker_state(KEY) is State.CLOSED

    opened = provider_limits.breaker_record(KEY, success=False)  # 2 of 4: half

    assert opened is not None
    assert (opened.kind, opened.key, opened.failures, opened.calls, opened.trips) == (
        TransitionKind.OPENED,
        KEY,
        2,
        4,
        1,
    )
    assert (opened.window_s, opened.cooldown_s) == (2.0, 1.0)
    assert provider_limits.breaker_state(KEY) is State.OPEN
    # Late failures of sends that started earlier do not report the opening again.
    assert [provider_limits.breaker_record(KEY, success=False) for _ in range(5)] == [None] * 5


def test_failures_under_the_minimum_volume_keep_it_closed(backend, breaker_settings):
    assert [provider_limits.breaker_record(KEY, success=False) for _ in range(2)] == [None, None]
    assert provider_limits.breaker_state(KEY) is State.CLOSED


def test_three_percent_soft_failures_at_volume_never_open_it(backend):
    """Default settings; 6,000 sends, 3 % of them failing at random, each recorded as it
    happens, and then as batch reports (a deliver task's batch of 500 at once): the count of
    failures passes any absolute threshold within the window, the ratio never comes close."""
    rng = random.Random(11)
    opened = [
        t
        for _ in range(6000)
        if (t := provider_limits.breaker_record(KEY, success=rng.random() >= 0.03)) is not None
    ]
    assert opened == []
    for _ in range(8):
        failures = sum(rng.random() < 0.03 for _ in range(500))
        assert (
            provider_limits.breaker_outcomes(KEY, successes=500 - failures, failures=failures)
            is None
        )
    assert provider_limits.breaker_state(KEY) is State.CLOSED


def test_sixty_percent_failures_open_it_once_the_minimum_volume_is_reached(backend):
    """Default settings: 20 calls at least, half of them failed."""
    pattern = [False, True, False, True, False]  # 3 of 5 fail
    outcomes = [provider_limits.breaker_record(KEY, success=ok) for ok in pattern * 4]

    assert outcomes[:-1] == [None] * 19
    opened = outcomes[-1]
    assert opened is not None and opened.kind is TransitionKind.OPENED
    assert (opened.failures, opened.calls) == (12, 20)
    assert provider_limits.breaker_state(KEY) is State.OPEN


def test_failures_spread_wider_than_the_window_keep_it_closed(backend, settings):
    settings.NOTIFIER_CIRCUIT_MIN_CALLS = 2
    settings.NOTIFIER_CIRCUIT_WINDOW_S = 0.3
    settings.NOTIFIER_CIRCUIT_COOLDOWN_S = 1

    assert provider_limits.breaker_record(KEY, success=False) is None
    time.sleep(0.35)
    assert provider_limits.breaker_record(KEY, success=False) is None
    assert provider_limits.breaker_state(KEY) is State.CLOSED

    opened = provider_limits.breaker_record(KEY, success=False)
    assert opened is not None and opened.kind is TransitionKind.OPENED


def test_breakers_are_per_key(backend, breaker_settings):
    open_breaker("sms:broken")

    assert provider_limits.breaker_state("sms:broken") is State.OPEN
    assert provider_limits.breaker_allows("sms:healthy") == provider_limits.Permission(
        True, State.CLOSED
    )


def test_open_breaker_refuses_with_retry_after_until_the_cooldown_ends(backend, breaker_settings):
    assert provider_limits.breaker_allows(KEY).allowed
    open_breaker()

    permission = provider_limits.breaker_allows(KEY)

    assert not permission.allowed
    assert permission.state is State.OPEN
    assert 0.9 < permission.retry_after_s <= 1.0


def test_after_the_cooldown_exactly_one_concurrent_caller_gets_the_probe(backend, breaker_settings):
    open_breaker()
    wait_half_open()
    callers = 24
    start = threading.Barrier(callers)

    def ask(_):
        start.wait()
        return provider_limits.breaker_allows(KEY)

    with ThreadPoolExecutor(max_workers=callers) as pool:
        permissions = list(pool.map(ask, range(callers)))

    allowed = [p for p in permissions if p.allowed]
    waiting = [p for p in permissions if not p.allowed]
    assert len(allowed) == 1
    assert allowed[0].probe and allowed[0].state is State.HALF_OPEN
    assert len(waiting) == callers - 1
    assert all(p.state is State.HALF_OPEN and not p.probe for p in waiting)
    # Waiters come back after at most a cooldown, not after the whole probe lease.
    assert all(0 < p.retry_after_s <= 1.0 for p in waiting)


def test_probe_success_closes_the_breaker_and_forgets_the_failures(backend, breaker_settings):
    open_breaker()
    wait_half_open()
    assert provider_limits.breaker_allows(KEY).probe

    closed = provider_limits.breaker_record(KEY, success=True)

    assert closed is not None
    assert (closed.kind, closed.key, closed.failures, closed.trips) == (
        TransitionKind.CLOSED,
        KEY,
        3,
        1,
    )
    assert closed.open_for_s >= 1.0
    assert provider_limits.breaker_state(KEY) is State.CLOSED
    assert provider_limits.breaker_allows(KEY) == provider_limits.Permission(True, State.CLOSED)
    # The count starts again from zero: two failures are not enough to re-open.
    assert [provider_limits.breaker_record(KEY, success=False) for _ in range(2)] == [None, None]
    assert provider_limits.breaker_state(KEY) is State.CLOSED


def test_probe_failure_reopens_the_breaker_for_another_cooldown(backend, breaker_settings):
    open_breaker()
    wait_half_open()
    assert provider_limits.breaker_allows(KEY).probe

    reopened = provider_limits.breaker_record(KEY, success=False)

    assert reopened is not None
    assert (reopened.kind, reopened.failures, reopened.trips) == (TransitionKind.OPENED, 3, 2)
    assert provider_limits.breaker_state(KEY) is State.OPEN
    permission = provider_limits.breaker_allows(KEY)
    assert not permission.allowed
    assert 0.9 < permission.retry_after_s <= 1.0
    # The next cooldown ends in a fresh probe.
    wait_half_open()
    assert provider_limits.breaker_allows(KEY).probe


def test_probe_race_losers_learn_of_the_closing_at_once(backend, breaker_settings, monkeypatch):
    """The losers of the probe race leave a token; the probe's success hands every token back,
    so they need not wait out the lease (30 s) or the cooldown."""
    monkeypatch.setattr(provider_limits, "PROBE_LEASE_S", 30.0)
    open_breaker()
    wait_half_open()
    assert provider_limits.breaker_allows(KEY, waiter="probe").probe
    losers = [provider_limits.breaker_allows(KEY, waiter=f"loser-{n}") for n in range(3)]
    assert not any(p.allowed for p in losers)

    closed = provider_limits.breaker_record(KEY, success=True)

    assert closed is not None and closed.kind is TransitionKind.CLOSED
    assert closed.waiters == ("loser-0", "loser-1", "loser-2")
    assert provider_limits.breaker_allows(KEY).allowed


def test_a_failed_probe_hands_back_no_waiters(backend, breaker_settings):
    open_breaker()
    wait_half_open()
    assert provider_limits.breaker_allows(KEY).probe
    assert not provider_limits.breaker_allows(KEY, waiter="loser").allowed

    reopened = provider_limits.breaker_record(KEY, success=False)

    assert reopened is not None and reopened.waiters == ()
    wait_half_open()
    assert provider_limits.breaker_allows(KEY).probe
    closed = provider_limits.breaker_record(KEY, success=True)
    assert closed is not None and closed.waiters == ()


def test_a_pause_refuses_the_provider_whatever_its_state_then_lapses(backend):
    provider_limits.provider_pause(KEY, 0.3)
    provider_limits.provider_pause(KEY, 0.1)  # a shorter Retry-After does not cut the pause

    permission = provider_limits.breaker_allows(KEY)

    assert (permission.allowed, permission.paused, permission.state) == (False, True, State.CLOSED)
    assert 0.1 < permission.retry_after_s <= 0.3
    wait_until(lambda: provider_limits.breaker_allows(KEY).allowed, timeout=3, message="the pause")


def test_a_lost_probe_lets_another_caller_probe_once_its_lease_lapses(
    backend, breaker_settings, monkeypatch
):
    monkeypatch.setattr(provider_limits, "PROBE_LEASE_S", 0.3)
    open_breaker()
    wait_half_open()
    assert provider_limits.breaker_allows(KEY).probe  # ...and this worker dies without recording
    assert not provider_limits.breaker_allows(KEY).allowed

    second = wait_until(
        lambda: (p := provider_limits.breaker_allows(KEY)).allowed and p,
        timeout=3,
        message="the probe lease to lapse",
    )

    assert second.probe and second.state is State.HALF_OPEN


def test_breaker_rejects_nonsense_settings(backend, settings):
    settings.NOTIFIER_CIRCUIT_MIN_CALLS = 0
    with pytest.raises(ImproperlyConfigured, match="NOTIFIER_CIRCUIT_MIN_CALLS"):
        provider_limits.breaker_allows(KEY)


# --- Alerts ---------------------------------------------------------------------------------

OPENED = provider_limits.Transition(TransitionKind.OPENED, "sms:twilio", 20, 1, 0.0, 30.0, 30.0, 32)
REOPENED = provider_limits.Transition(TransitionKind.OPENED, "sms:twilio", 20, 2, 61.0, 30.0, 30.0)
CLOSED = provider_limits.Transition(TransitionKind.CLOSED, "sms:twilio", 20, 2, 95.0, 30.0, 30.0)


@pytest.fixture
def sentry_messages(monkeypatch):
    sent = []
    monkeypatch.setattr(sentry_sdk, "is_initialized", lambda: True)
    monkeypatch.setattr(sentry_sdk, "capture_message", lambda msg, **kw: sent.append((msg, kw)))
    return sent


def test_alert_logs_a_warning_when_opened_and_info_when_closed(caplog):
    caplog.set_level(logging.INFO, logger="notifier.throttle")

    for transition in (OPENED, REOPENED, CLOSED):
        provider_limits.alert_transition(transition)

    records = [(r.name, r.levelno, r.getMessage()) for r in caplog.records]
    assert records == [
        (
            "notifier.throttle",
            logging.WARNING,
            "circuit breaker for sms:twilio opened: 20 failures of 32 calls within 30 s; "
            "deliveries wait 30 s",
        ),
        (
            "notifier.throttle",
            logging.WARNING,
            "circuit breaker for sms:twilio re-opened: probe failed (opening 2, open for 61 s)",
        ),
        (
            "notifier.throttle",
            logging.INFO,
            "circuit breaker for sms:twilio closed: probe succeeded after 95 s open (2 opening(s))",
        ),
    ]


def test_alert_sends_sentry_messages_when_sentry_is_initialised(sentry_messages):
    provider_limits.alert_transition(OPENED)
    provider_limits.alert_transition(CLOSED)

    (opened_message, opened_kw), (closed_message, closed_kw) = sentry_messages
    assert "opened" in opened_message and opened_kw["level"] == "warning"
    assert "closed" in closed_message and closed_kw["level"] == "info"
    assert opened_kw["fingerprint"] == ["notifier.throttle", "opened", "sms:twilio"]
    assert opened_kw["tags"]["circuit_key"] == "sms:twilio"


def test_alert_without_sentry_only_logs(monkeypatch, caplog):
    assert not sentry_sdk.is_initialized()
    monkeypatch.setattr(
        sentry_sdk, "capture_message", lambda *a, **kw: pytest.fail("Sentry is not set up")
    )

    provider_limits.alert_transition(OPENED)

    assert [r.levelno for r in caplog.records] == [logging.WARNING]


# --- Backend choice and outages -------------------------------------------------------------


def test_without_any_redis_url_the_in_process_backend_is_used(settings):
    settings.NOTIFIER_EMBEDDED = False
    settings.NOTIFIER_REDIS_URL = ""
    settings.CELERY_BROKER_URL = "memory://localhost/"

    assert state_redis_url() == ""
    assert provider_limits._backend() is provider_limits._LOCAL


def test_a_redis_broker_url_serves_when_redis_url_is_empty(settings):
    settings.NOTIFIER_EMBEDDED = False
    settings.NOTIFIER_REDIS_URL = ""
    settings.CELERY_BROKER_URL = "redis://127.0.0.1:6379/10"

    assert state_redis_url() == "redis://127.0.0.1:6379/10"
    assert isinstance(provider_limits._backend(), provider_limits._RedisBackend)


def test_redis_down_fails_open_and_logs_once(settings, monkeypatch, caplog, breaker_settings):
    monkeypatch.setattr(provider_limits, "_redis_backends", {})
    settings.NOTIFIER_EMBEDDED = False
    settings.NOTIFIER_REDIS_URL = "redis://:secret@127.0.0.1:1/0"  # nothing listens on port 1
    settings.NOTIFIER_RATE_LIMITS = {KEY: "1/s"}
    caplog.set_level(logging.INFO, logger="notifier.throttle")

    started = time.monotonic()
    grants = [provider_limits.acquire(KEY, 5) for _ in range(3)]
    permission = provider_limits.breaker_allows(KEY)
    transitions = [provider_limits.breaker_record(KEY, success=False) for _ in range(5)]
    state = provider_limits.breaker_state(KEY)

    assert grants == [Grant(granted=5, retry_after_s=0.0)] * 3
    assert permission.allowed and permission.state is State.UNKNOWN
    assert transitions == [None] * 5
    assert state is State.UNKNOWN
    assert time.monotonic() - started < 2
    warnings = [r for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warnings) == 1
    assert "unreachable" in warnings[0].getMessage()
    assert "secret" not in warnings[0].getMessage()


def test_redis_outage_is_retried_and_recovery_logged(settings, monkeypatch, caplog):
    monkeypatch.setattr(provider_limits, "_redis_backends", {})
    monkeypatch.setattr(provider_limits, "REDIS_RETRY_AFTER_S", 0.0)
    settings.NOTIFIER_EMBEDDED = False
    settings.NOTIFIER_RATE_LIMITS = {KEY: "1/s"}
    caplog.set_level(logging.INFO, logger="notifier.throttle")
    backend = provider_limits._redis_backend(state_redis_url())
    real_script = backend.scripts["bucket"]
    outage = [redis.ConnectionError("Connection refused")]

    def flaky_script(**kwargs):
        if outage:
            raise outage.pop()
        return real_script(**kwargs)

    monkeypatch.setitem(backend.scripts, "bucket", flaky_script)

    assert provider_limits.acquire(KEY, 3).granted == 3  # down: fails open
    assert provider_limits.acquire(KEY, 3).granted == 1  # back: 1/s with a burst of 1
    assert [r.levelno for r in caplog.records] == [logging.WARNING, logging.INFO]
