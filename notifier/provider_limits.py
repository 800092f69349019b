"""Outbound limits: how fast and whether we call each provider. Global per-provider rate limits
and circuit breakers, shared by every worker process. (Inbound limits on the requests we answer
are notifier.request_limits; both count in this module's token bucket.)

Rate limit: a token bucket per provider key ("sms:twilio"). The bucket holds at most `burst`
tokens and refills continuously at `per_second`; a delivery takes one token per message. State
is one Redis hash {tokens, ts} updated by a single Lua script, so the read-refill-take step is
atomic across all workers, and the script reads Redis `TIME` so every worker shares one clock
(worker clocks drift; Redis has one). A key expires once the bucket would be full again, which
is exactly when forgetting it changes nothing. A caller that gets fewer tokens than it asked
for is told when the next token arrives instead of being blocked: workers never sleep here.

Circuit breaker: CLOSED counts calls and failures in a sliding window of
NOTIFIER_CIRCUIT_WINDOW_S (ten buckets of a tenth of the window each, one Redis hash), and opens
for NOTIFIER_CIRCUIT_COOLDOWN_S when, over at least NOTIFIER_CIRCUIT_MIN_CALLS calls in the
window, the share of failures reaches NOTIFIER_CIRCUIT_FAILURE_RATIO. Successes count: a few
soft failures among many good sends never open it, however busy the provider is. While OPEN
every delivery waits. After the cooldown it is HALF_OPEN: one caller across all processes wins
a probe lease (SET NX with a TTL) and sends; a success closes the breaker and forgets the
counts, a failure re-opens it for another cooldown. Callers that lost the probe race leave a
waiter token; the probe's success hands those tokens back in its CLOSED Transition so that the
caller can wake them at once instead of letting them wait out the lease. A probe whose worker
dies is forgotten when its lease expires and another is let through. Openings and closings are
returned as a Transition for `alert_transition`.

Pause: a provider that answered 429 or 5xx with a Retry-After is paused for that long
(`provider_pause`); the breaker then refuses it (`Permission.paused`) so that every worker
fails over to the next provider instead of calling it again early.

Embedded mode (NOTIFIER_EMBEDDED, or no Redis URL at all) runs the same algorithms in process
behind the same functions, so callers never branch on the deployment.
"""

from __future__ import annotations

import logging
import math
import re
import threading
import time
import uuid
from dataclasses import dataclass, field
from enum import StrEnum
from functools import lru_cache
from typing import Any, Protocol

import redis
from django.conf import settings
from django.core.exceptions import ImproperlyConfigured
from redis.commands.core import Script

from notifier.rates import InvalidRate, Rate, parse_rate_text
from notifier.redis_client import redis_client, state_client, state_redis_url

# The module was notifier/throttle.py. Its logger, its Sentry fingerprint and its Redis keys keep
# that name: log filters, alert rules, Sentry issues and the live buckets and breakers of a
# running deployment all carry on across the rename.
logger = logging.getLogger("notifier.throttle")
SENTRY_FINGERPRINT = "notifier.throttle"

# Every Redis key of this module starts with this; tests point it at a private prefix.
KEY_PREFIX = "notifier:throttle"
# How long a half-open probe may take before its worker is presumed dead and another caller
# may probe: longer than any provider's send timeout (EMAIL_TIMEOUT is 10 s).
PROBE_LEASE_S = 30.0
# After Redis fails, skip it for this long, so a black-holed Redis does not add a socket
# timeout to every delivery while it is down.
REDIS_RETRY_AFTER_S = 1.0
# The breaker's window is counted in this many buckets: it slides in steps of a tenth.
WINDOW_BUCKETS = 10


# --- Values ---------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Grant:
    """`granted` of the tokens asked for; when short, the next token comes in `retry_after_s`."""

    granted: int
    retry_after_s: float = 0.0


class State(StrEnum):
    CLOSED = "closed"
    OPEN = "open"
    HALF_OPEN = "half_open"
    # Redis is unreachable: the breaker fails open and cannot say more.
    UNKNOWN = "unknown"


@dataclass(frozen=True, slots=True)
class Permission:
    """Whether a delivery may call the provider now; if not, ask again after `retry_after_s`."""

    allowed: bool
    state: State
    retry_after_s: float = 0.0
    # This caller is the one half-open probe: its breaker_record decides open or closed.
    probe: bool = False
    # The provider asked us (Retry-After) to stay away for retry_after_s.
    paused: bool = False


class TransitionKind(StrEnum):
    OPENED = "opened"
    CLOSED = "closed"


@dataclass(frozen=True, slots=True)
class Transition:
    """A breaker changed state; `alert_transition` tells the operators."""

    kind: TransitionKind
    key: str
    # Failures within the window that first opened the breaker.
    failures: int
    # Openings since it was last closed: 1 on the first, 2+ when failed probes re-open it.
    trips: int
    # Seconds since the first opening (0 on the first opening).
    open_for_s: float
    window_s: float
    cooldown_s: float
    # Calls counted in the window that opened it (successes and failures).
    calls: int = 0
    # On closing: the waiter tokens of callers that lost the probe race, to be woken now.
    waiters: tuple[str, ...] = ()


@dataclass(frozen=True, slots=True)
class BreakerPolicy:
    failure_ratio: float
    min_calls: int
    window_s: float
    cooldown_s: float

    @property
    def bucket_s(self) -> float:
        return self.window_s / WINDOW_BUCKETS

    def trips(self, *, calls: int, failures: int) -> bool:
        """Open on this many calls and failures in the window? A pure decision."""
        return failures > 0 and calls >= self.min_calls and failures >= self.failure_ratio * calls


# --- Settings -------------------------------------------------------------------------------


def parse_rate(text: str) -> Rate:
    """'10/s', '600/m', '3600/h' or '0.5/s' -> that many a second, with about a second's worth
    of burst; InvalidRate naming the form otherwise."""
    return Rate(parse_rate_text(text).per_second)


def rate_limits() -> dict[str, Rate]:
    """NOTIFIER_RATE_LIMITS parsed and validated; ImproperlyConfigured names a bad entry."""
    configured = settings.NOTIFIER_RATE_LIMITS
    try:
        items = tuple(sorted(configured.items()))
    except (AttributeError, TypeError) as error:
        raise ImproperlyConfigured(
            f"NOTIFIER_RATE_LIMITS must map 'channel:provider' to a rate, not {configured!r}"
        ) from error
    # Cached on the configured value: acquire() runs once per delivery and the settings
    # almost never change (tests do, hence the value rather than a flag as the cache key).
    return dict(_parse_rate_limits(items))


@lru_cache(maxsize=8)
def _parse_rate_limits(items: tuple[tuple[str, Any], ...]) -> tuple[tuple[str, Rate], ...]:
    parsed = []
    for key, value in items:
        try:
            rate = value if isinstance(value, Rate) else parse_rate(str(value))
        except InvalidRate as error:
            raise ImproperlyConfigured(
                f"NOTIFIER_RATE_LIMITS entry {key!r}={value!r}: {error}"
            ) from error
        parsed.append((key, rate))
    return tuple(parsed)


def breaker_policy() -> BreakerPolicy:
    """The NOTIFIER_CIRCUIT_* settings, validated."""
    policy = BreakerPolicy(
        failure_ratio=float(settings.NOTIFIER_CIRCUIT_FAILURE_RATIO),
        min_calls=int(settings.NOTIFIER_CIRCUIT_MIN_CALLS),
        window_s=float(settings.NOTIFIER_CIRCUIT_WINDOW_S),
        cooldown_s=float(settings.NOTIFIER_CIRCUIT_COOLDOWN_S),
    )
    if (
        not 0 < policy.failure_ratio <= 1
        or policy.min_calls < 1
        or policy.window_s <= 0
        or policy.cooldown_s <= 0
    ):
        raise ImproperlyConfigured(
            "NOTIFIER_CIRCUIT_FAILURE_RATIO must be above 0 and at most 1, "
            "NOTIFIER_CIRCUIT_MIN_CALLS at least 1, and NOTIFIER_CIRCUIT_WINDOW_S and "
            f"NOTIFIER_CIRCUIT_COOLDOWN_S above zero, not {policy}"
        )
    return policy


# --- Public API -----------------------------------------------------------------------------


def acquire(key: str, n: int = 1) -> Grant:
    """Take up to n tokens from `key`'s bucket now; never blocks, may grant fewer than n."""
    if n < 1:
        raise ValueError(f"acquire at least one token, not {n}")
    rate = rate_limits().get(key)
    if rate is None:
        # No limit configured: nothing to count, so no round trip to Redis.
        return Grant(granted=n)
    return _backend().acquire(key, rate, n)


def take(key: str, rate: Rate, n: int = 1) -> Grant:
    """Take up to n tokens from `key`'s bucket at an explicit rate (not NOTIFIER_RATE_LIMITS):
    the same atomic bucket, for callers with limits of their own (notifier.request_limits)."""
    if n < 1:
        raise ValueError(f"take at least one token, not {n}")
    return _backend().acquire(key, rate, n)


def breaker_allows(key: str, *, waiter: str = "") -> Permission:
    """May a delivery through `key` call the provider now? Half-open lets exactly one probe.

    A caller that loses the probe race and passes a `waiter` token gets it back in the CLOSED
    Transition of the probe's success, so that whoever records the success can wake it.
    """
    return _backend().allows(key, breaker_policy(), waiter)


def breaker_record(key: str, *, success: bool) -> Transition | None:
    """Count one provider call's outcome; returns the Transition when it opened or closed."""
    return breaker_outcomes(key, successes=int(success), failures=int(not success))


def breaker_outcomes(key: str, *, successes: int, failures: int) -> Transition | None:
    """Count a batch of calls' outcomes at once (one round trip); the Transition if any."""
    if successes < 0 or failures < 0 or successes + failures == 0:
        raise ValueError(f"record at least one outcome, not {successes}+{failures}")
    return _backend().record(key, breaker_policy(), successes=successes, failures=failures)


def provider_pause(key: str, seconds: float) -> None:
    """Keep every worker off `key` for `seconds` (a provider's Retry-After): breaker_allows
    refuses it meanwhile, with the time left, whatever the breaker's state."""
    if seconds > 0:
        _backend().pause(key, seconds)


def breaker_state(key: str) -> State:
    """The breaker's current state, without taking a probe (dashboards, tests)."""
    return _backend().state(key, breaker_policy())


def alert_transition(transition: Transition) -> None:
    """Tell operators: a WARNING (opened) or INFO (closed) log, and Sentry when it is set up."""
    if transition.kind is TransitionKind.OPENED:
        if transition.trips == 1:
            message = (
                f"circuit breaker for {transition.key} opened: {transition.failures} failures "
                f"of {transition.calls} calls within {transition.window_s:g} s; deliveries wait "
                f"{transition.cooldown_s:g} s"
            )
        else:
            message = (
                f"circuit breaker for {transition.key} re-opened: probe failed "
                f"(opening {transition.trips}, open for {transition.open_for_s:.0f} s)"
            )
        level = logging.WARNING
    else:
        message = (
            f"circuit breaker for {transition.key} closed: probe succeeded after "
            f"{transition.open_for_s:.0f} s open ({transition.trips} opening(s))"
        )
        level = logging.INFO
    logger.log(
        level,
        message,
        extra={
            "circuit_key": transition.key,
            "circuit_transition": str(transition.kind),
            "circuit_failures": transition.failures,
            "circuit_trips": transition.trips,
        },
    )
    _report_to_sentry(transition, message)


def _report_to_sentry(transition: Transition, message: str) -> None:
    try:
        import sentry_sdk
    except ImportError:  # the log line above is the alert of last resort
        return
    if not sentry_sdk.is_initialized():
        return
    sentry_sdk.capture_message(
        message,
        level="warning" if transition.kind is TransitionKind.OPENED else "info",
        # One issue per provider and kind: a provider that keeps failing its probes re-opens
        # every cooldown, and that must not page anyone once per cooldown.
        fingerprint=[SENTRY_FINGERPRINT, str(transition.kind), transition.key],
        tags={"circuit_key": transition.key, "circuit_transition": str(transition.kind)},
    )


# --- Backends -------------------------------------------------------------------------------


class _Backend(Protocol):
    def acquire(self, key: str, rate: Rate, n: int) -> Grant: ...

    def allows(self, key: str, policy: BreakerPolicy, waiter: str) -> Permission: ...

    def record(
        self, key: str, policy: BreakerPolicy, *, successes: int, failures: int
    ) -> Transition | None: ...

    def pause(self, key: str, seconds: float) -> None: ...

    def state(self, key: str, policy: BreakerPolicy) -> State: ...


def _backend() -> _Backend:
    url = state_redis_url()
    if settings.NOTIFIER_EMBEDDED or not url:
        return _LOCAL
    return _redis_backend(url)


# --- Redis ----------------------------------------------------------------------------------

# Shared by the breaker scripts. KEYS: state hash, counts hash, probe lease, waiters set, pause.
# Times are integer microseconds from Redis TIME; doubles hold them exactly (< 2^53).
_BREAKER_PRELUDE = """
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000000 + tonumber(t[2])
local open_until = tonumber(redis.call('HGET', KEYS[1], 'open_until'))
local state = 'closed'
if open_until then
  if now < open_until then state = 'open' else state = 'half_open' end
end
local function us(x) return string.format('%.0f', x) end
"""

# KEYS[1] bucket hash {tokens, ts}; ARGV rate per second, burst, n. Returns {granted, wait_us}.
_BUCKET_LUA = """
local rate = tonumber(ARGV[1])
local burst = tonumber(ARGV[2])
local n = tonumber(ARGV[3])
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000000 + tonumber(t[2])
local saved = redis.call('HMGET', KEYS[1], 'tokens', 'ts')
local tokens = tonumber(saved[1])
local ts = tonumber(saved[2])
if tokens == nil or ts == nil then
  tokens = burst
else
  -- max(0, ...): Redis TIME can step back after a failover; never refill negatively.
  tokens = math.min(burst, tokens + math.max(0, now - ts) * rate / 1000000)
end
local granted = math.min(n, math.floor(tokens))
tokens = tokens - granted
local wait_us = 0
if granted < n then
  -- tokens < 1 is left: the next whole token arrives after (1 - tokens) / rate.
  wait_us = math.ceil((1 - tokens) * 1000000 / rate)
end
redis.call('HSET', KEYS[1], 'tokens', string.format('%.17g', tokens), 'ts',
  string.format('%.0f', now))
-- Once the bucket would be full again the hash says nothing a missing one does not.
redis.call('PEXPIRE', KEYS[1], math.ceil((burst - tokens) / rate * 1000) + 1000)
return {granted, wait_us}
"""

# ARGV lease ms, lease holder, cooldown us, waiter token ('' for none).
# Returns {state, allowed, wait_us, probe, paused}.
_ALLOWS_LUA = (
    _BREAKER_PRELUDE
    + """
local paused_ms = redis.call('PTTL', KEYS[5])
if paused_ms > 0 then return {state, 0, paused_ms * 1000, 0, 1} end
if state == 'closed' then return {state, 1, 0, 0, 0} end
if state == 'open' then return {state, 0, open_until - now, 0, 0} end
if redis.call('SET', KEYS[3], ARGV[2], 'NX', 'PX', ARGV[1]) then return {state, 1, 0, 1, 0} end
-- Lost the probe race: leave a token for the probe's success to hand back (it lives as long as
-- the lease: a dead probe wakes nobody, and the waiters come back by themselves).
if ARGV[4] ~= '' then
  redis.call('SADD', KEYS[4], ARGV[4])
  redis.call('PEXPIRE', KEYS[4], ARGV[1])
end
-- Waiters come back when the lease would lapse, or after a cooldown if that is sooner.
local lease_us = math.max(redis.call('PTTL', KEYS[3]), 1) * 1000
return {state, 0, math.min(lease_us, tonumber(ARGV[3])), 0, 0}
"""
)

# ARGV successes, failures, failure ratio, min calls, window us, cooldown us, bucket us.
# Returns {kind, failures, trips, open_for_us, calls, waiters}; kind 'none' when nothing changed.
_RECORD_LUA = (
    _BREAKER_PRELUDE
    + """
local successes = tonumber(ARGV[1])
local failed = tonumber(ARGV[2])
local cooldown_us = tonumber(ARGV[6])
-- Results of sends that started before the breaker opened change nothing.
if state == 'open' then return {'none', 0, 0, 0, 0, {}} end
if state == 'half_open' then
  local h = redis.call('HMGET', KEYS[1], 'failures', 'trips', 'opened_at', 'calls')
  local failures = tonumber(h[1]) or 0
  local trips = tonumber(h[2]) or 1
  local opened_at = tonumber(h[3]) or now
  local calls = tonumber(h[4]) or 0
  redis.call('DEL', KEYS[3])
  if failed == 0 then
    local waiters = redis.call('SMEMBERS', KEYS[4])
    redis.call('DEL', KEYS[1], KEYS[2], KEYS[4])
    return {'closed', failures, trips, now - opened_at, calls, waiters}
  end
  -- The waiters' own countdowns bring them back; a failed probe wakes nobody.
  redis.call('DEL', KEYS[4])
  trips = trips + 1
  redis.call('HSET', KEYS[1], 'open_until', us(now + cooldown_us), 'trips', trips)
  return {'opened', failures, trips, now - opened_at, calls, {}}
end
local window_us = tonumber(ARGV[5])
local bucket_us = tonumber(ARGV[7])
local bucket = math.floor(now / bucket_us)
if successes > 0 then redis.call('HINCRBY', KEYS[2], 's' .. bucket, successes) end
if failed > 0 then redis.call('HINCRBY', KEYS[2], 'f' .. bucket, failed) end
-- Sum the buckets still inside the window; forget the older ones.
local oldest = bucket - math.ceil(window_us / bucket_us) + 1
local counts = redis.call('HGETALL', KEYS[2])
local ok, failures, stale = 0, 0, {}
for i = 1, #counts, 2 do
  local field = counts[i]
  if tonumber(string.sub(field, 2)) < oldest then
    stale[#stale + 1] = field
  elseif string.sub(field, 1, 1) == 's' then
    ok = ok + tonumber(counts[i + 1])
  else
    failures = failures + tonumber(counts[i + 1])
  end
end
if #stale > 0 then redis.call('HDEL', KEYS[2], unpack(stale)) end
local calls = ok + failures
if failed > 0 and calls >= tonumber(ARGV[4]) and failures >= tonumber(ARGV[3]) * calls then
  redis.call('DEL', KEYS[2])
  -- No TTL: an open breaker must stay open until a probe says otherwise, and there is one
  -- small hash per provider.
  redis.call('HSET', KEYS[1], 'open_until', us(now + cooldown_us), 'opened_at', us(now),
    'failures', failures, 'calls', calls, 'trips', 1)
  return {'opened', failures, 1, 0, calls, {}}
end
redis.call('PEXPIRE', KEYS[2], math.ceil((window_us + bucket_us) / 1000) + 1000)
return {'none', failures, 0, 0, calls, {}}
"""
)

# ARGV pause ms. Only ever lengthens a pause: a shorter Retry-After does not cut a longer one.
_PAUSE_LUA = """
if redis.call('PTTL', KEYS[5]) < tonumber(ARGV[1]) then
  redis.call('SET', KEYS[5], '1', 'PX', ARGV[1])
end
return 1
"""

_STATE_LUA = _BREAKER_PRELUDE + "return state\n"

# What "Redis is unreachable" looks like: down, too slow, loading, or a replica mid-failover.
_UNREACHABLE = (
    redis.exceptions.ConnectionError,  # includes BusyLoadingError
    redis.exceptions.TimeoutError,
    redis.exceptions.ReadOnlyError,
)


def bucket_redis_key(key: str) -> str:
    return f"{KEY_PREFIX}:bucket:{key}"


def breaker_redis_keys(key: str) -> list[str]:
    # The {hash tag} keeps one breaker's keys in one Redis Cluster slot, as its scripts need.
    base = f"{KEY_PREFIX}:breaker:{{{key}}}"
    return [base, f"{base}:counts", f"{base}:probe", f"{base}:waiters", f"{base}:paused"]


@dataclass(eq=False)
class _RedisBackend:
    """The shared implementation; fails open (and says so once) while Redis is unreachable."""

    url: str
    client: redis.Redis = field(init=False)
    scripts: dict[str, Script] = field(init=False)
    lock: threading.Lock = field(default_factory=threading.Lock)
    down_until: float = 0.0
    down: bool = False

    def __post_init__(self) -> None:
        # The factory's short timeouts: this sits on the hot path of every delivery, and a slow
        # Redis must cost a delivery milliseconds, not seconds.
        self.client = redis_client(self.url)
        self.scripts = {
            name: self.client.register_script(source)
            for name, source in {
                "bucket": _BUCKET_LUA,
                "allows": _ALLOWS_LUA,
                "record": _RECORD_LUA,
                "pause": _PAUSE_LUA,
                "state": _STATE_LUA,
            }.items()
        }

    def acquire(self, key: str, rate: Rate, n: int) -> Grant:
        reply = self._run("bucket", [bucket_redis_key(key)], [rate.per_second, rate.burst, n])
        if reply is None:
            # Fail open: a Redis outage must not stop all sending. Providers enforce their own
            # limits and answer "too many requests", which the retry policy already handles;
            # losing the limit for a while costs a few of those, losing Redis costs everything.
            return Grant(granted=n)
        granted, wait_us = reply
        return Grant(granted=int(granted), retry_after_s=int(wait_us) / 1e6)

    def allows(self, key: str, policy: BreakerPolicy, waiter: str) -> Permission:
        lease = [
            int(PROBE_LEASE_S * 1000),
            uuid.uuid4().hex,
            int(policy.cooldown_s * 1e6),
            waiter,
        ]
        reply = self._run("allows", breaker_redis_keys(key), lease)
        if reply is None:
            # Fail open for the same reason as acquire(): without Redis, send.
            return Permission(allowed=True, state=State.UNKNOWN)
        state, allowed, wait_us, probe, paused = reply
        return Permission(
            allowed=bool(allowed),
            state=State(state.decode()),
            retry_after_s=int(wait_us) / 1e6,
            probe=bool(probe),
            paused=bool(paused),
        )

    def record(
        self, key: str, policy: BreakerPolicy, *, successes: int, failures: int
    ) -> Transition | None:
        args = [
            successes,
            failures,
            repr(policy.failure_ratio),
            policy.min_calls,
            int(policy.window_s * 1e6),
            int(policy.cooldown_s * 1e6),
            max(1, int(policy.bucket_s * 1e6)),
        ]
        reply = self._run("record", breaker_redis_keys(key), args)
        if reply is None or reply[0] == b"none":
            return None
        kind, failed, trips, open_for_us, calls, waiters = reply
        return Transition(
            kind=TransitionKind(kind.decode()),
            key=key,
            failures=int(failed),
            trips=int(trips),
            open_for_s=int(open_for_us) / 1e6,
            window_s=policy.window_s,
            cooldown_s=policy.cooldown_s,
            calls=int(calls),
            waiters=tuple(sorted(w.decode() for w in waiters)),
        )

    def pause(self, key: str, seconds: float) -> None:
        self._run("pause", breaker_redis_keys(key), [max(1, math.ceil(seconds * 1000))])

    def state(self, key: str, policy: BreakerPolicy) -> State:
        reply = self._run("state", breaker_redis_keys(key), [])
        return State.UNKNOWN if reply is None else State(reply.decode())

    def _run(self, script: str, keys: list[str], args: list[Any]) -> Any:
        """The script's reply, or None while Redis is unreachable (logged once per outage)."""
        if time.monotonic() < self.down_until:
            return None
        try:
            reply = self.scripts[script](keys=keys, args=args)
        except _UNREACHABLE as error:
            with self.lock:
                self.down_until = time.monotonic() + REDIS_RETRY_AFTER_S
                first = not self.down
                self.down = True
            if first:
                logger.warning(
                    "Redis at %s is unreachable (%s): rate limits and circuit breakers are "
                    "off, deliveries are let through until it is back",
                    _redacted(self.url),
                    error,
                )
            return None
        if self.down:
            with self.lock:
                recovered, self.down = self.down, False
            if recovered:
                logger.info(
                    "Redis at %s is reachable again: throttling resumed", _redacted(self.url)
                )
        return reply


_redis_backends: dict[str, _RedisBackend] = {}
_redis_backends_lock = threading.Lock()


def _redis_backend(url: str) -> _RedisBackend:
    # Created lazily: importing this module must not need Redis (embedded mode, management
    # commands), and its scripts are registered once per process.
    backend = _redis_backends.get(url)
    if backend is None:
        with _redis_backends_lock:
            backend = _redis_backends.setdefault(url, _RedisBackend(url))
    return backend


def _redacted(url: str) -> str:
    return re.sub(r"//[^@/]*@", "//***@", url)


# --- Embedded (in process) ------------------------------------------------------------------


@dataclass(slots=True)
class _LocalBreaker:
    # bucket number -> [successes, failures]
    counts: dict[int, list[int]] = field(default_factory=dict)
    open_until: float | None = None
    opened_at: float = 0.0
    failures_at_open: int = 0
    calls_at_open: int = 0
    trips: int = 0
    probe_until: float = 0.0
    waiters: set[str] = field(default_factory=set)
    paused_until: float = 0.0

    def state(self, now: float) -> State:
        if self.open_until is None:
            return State.CLOSED
        return State.OPEN if now < self.open_until else State.HALF_OPEN


class _LocalBackend:
    """The same algorithms in process: embedded mode has one process, so a lock is enough."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._buckets: dict[str, tuple[float, float]] = {}
        self._breakers: dict[str, _LocalBreaker] = {}

    def acquire(self, key: str, rate: Rate, n: int) -> Grant:
        with self._lock:
            now = time.monotonic()
            tokens, ts = self._buckets.get(key, (float(rate.burst), now))
            tokens = min(float(rate.burst), tokens + (now - ts) * rate.per_second)
            granted = min(n, math.floor(tokens))
            tokens -= granted
            self._buckets[key] = (tokens, now)
        wait = 0.0 if granted == n else (1 - tokens) / rate.per_second
        return Grant(granted=granted, retry_after_s=wait)

    def allows(self, key: str, policy: BreakerPolicy, waiter: str) -> Permission:
        with self._lock:
            now = time.monotonic()
            breaker = self._breakers.setdefault(key, _LocalBreaker())
            state = breaker.state(now)
            if now < breaker.paused_until:
                wait = breaker.paused_until - now
                return Permission(allowed=False, state=state, retry_after_s=wait, paused=True)
            if state is State.CLOSED:
                return Permission(allowed=True, state=state)
            if state is State.OPEN:
                wait = (breaker.open_until or now) - now
                return Permission(allowed=False, state=state, retry_after_s=wait)
            if now >= breaker.probe_until:
                breaker.probe_until = now + PROBE_LEASE_S
                breaker.waiters.clear()
                return Permission(allowed=True, state=state, probe=True)
            if waiter:
                breaker.waiters.add(waiter)
            wait = min(breaker.probe_until - now, policy.cooldown_s)
            return Permission(allowed=False, state=state, retry_after_s=wait)

    def record(
        self, key: str, policy: BreakerPolicy, *, successes: int, failures: int
    ) -> Transition | None:
        with self._lock:
            now = time.monotonic()
            breaker = self._breakers.setdefault(key, _LocalBreaker())
            state = breaker.state(now)
            if state is State.OPEN:
                return None
            if state is State.HALF_OPEN:
                breaker.probe_until = 0.0
                waiters, breaker.waiters = tuple(sorted(breaker.waiters)), set()
                if failures == 0:
                    del self._breakers[key]
                    return self._transition(
                        TransitionKind.CLOSED, key, breaker, now, policy, waiters
                    )
                breaker.trips += 1
                breaker.open_until = now + policy.cooldown_s
                return self._transition(TransitionKind.OPENED, key, breaker, now, policy)
            bucket = math.floor(now / policy.bucket_s)
            counted = breaker.counts.setdefault(bucket, [0, 0])
            counted[0] += successes
            counted[1] += failures
            oldest = bucket - math.ceil(policy.window_s / policy.bucket_s) + 1
            for stale in [b for b in breaker.counts if b < oldest]:
                del breaker.counts[stale]
            failed = sum(f for _, f in breaker.counts.values())
            calls = failed + sum(s for s, _ in breaker.counts.values())
            if not (failures and policy.trips(calls=calls, failures=failed)):
                return None
            breaker.failures_at_open, breaker.calls_at_open = failed, calls
            breaker.counts.clear()
            breaker.open_until = now + policy.cooldown_s
            breaker.opened_at = now
            breaker.trips = 1
            return self._transition(TransitionKind.OPENED, key, breaker, now, policy)

    def pause(self, key: str, seconds: float) -> None:
        with self._lock:
            breaker = self._breakers.setdefault(key, _LocalBreaker())
            breaker.paused_until = max(breaker.paused_until, time.monotonic() + seconds)

    def state(self, key: str, policy: BreakerPolicy) -> State:
        with self._lock:
            breaker = self._breakers.get(key)
            return State.CLOSED if breaker is None else breaker.state(time.monotonic())

    @staticmethod
    def _transition(
        kind: TransitionKind,
        key: str,
        breaker: _LocalBreaker,
        now: float,
        policy: BreakerPolicy,
        waiters: tuple[str, ...] = (),
    ) -> Transition:
        return Transition(
            kind=kind,
            key=key,
            failures=breaker.failures_at_open,
            trips=breaker.trips,
            open_for_s=now - breaker.opened_at,
            window_s=policy.window_s,
            cooldown_s=policy.cooldown_s,
            calls=breaker.calls_at_open,
            waiters=waiters,
        )


_LOCAL = _LocalBackend()


def limits_reset() -> None:
    """Forget every bucket and breaker (tests start each case from a clean slate)."""
    global _LOCAL
    _LOCAL = _LocalBackend()
    client = state_client()
    if client is not None:
        keys = list(client.scan_iter(match=f"{KEY_PREFIX}:*", count=1000))
        if keys:
            client.delete(*keys)
