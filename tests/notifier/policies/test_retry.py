"""Retry policy: backoff with jitter, permanent errors fail at once, retries end."""

import random

import pytest

from channels.base import ErrorCode, SendResult
from notifier.policies.retry import RetryPolicy, Verdict, after_attempt, backoff_delay
from notifier.status import Reason

POLICY = RetryPolicy(max_attempts=5, base_delay_s=2.0, max_delay_s=60.0)


def test_backoff_doubles_with_jitter_within_each_step():
    rng = random.Random(7)
    for attempt in range(1, 8):
        step = min(60.0, 2.0 * 2 ** (attempt - 1))
        delays = [backoff_delay(attempt, POLICY, rng) for _ in range(200)]
        assert all(step / 2 <= d <= step for d in delays)
        assert max(delays) - min(delays) > step / 4  # jitter actually spreads them


def test_backoff_never_exceeds_the_cap():
    assert max(backoff_delay(30, POLICY) for _ in range(100)) <= 60.0


def test_sent_is_sent():
    assert after_attempt(SendResult.sent("p"), attempt=1, policy=POLICY).verdict is Verdict.SENT


def test_transient_error_retries_until_the_last_attempt():
    transient = SendResult.transient("p", ErrorCode.TIMEOUT, "timed out")
    for attempt in range(1, 5):
        decision = after_attempt(transient, attempt=attempt, policy=POLICY)
        assert decision.verdict is Verdict.RETRY
        assert decision.reason is Reason.RETRY_SCHEDULED
        assert decision.delay_s > 0
    last = after_attempt(transient, attempt=5, policy=POLICY)
    assert (last.verdict, last.reason) == (Verdict.FAIL, Reason.RETRIES_EXHAUSTED)


@pytest.mark.parametrize(
    ("code", "reason"),
    [
        (ErrorCode.INVALID_RECIPIENT, Reason.INVALID_RECIPIENT),
        (ErrorCode.DEVICE_UNREGISTERED, Reason.DEVICE_UNREGISTERED),
        (ErrorCode.REJECTED, Reason.PROVIDER_REJECTED),
        (ErrorCode.NOT_CONFIGURED, Reason.PROVIDER_NOT_CONFIGURED),
    ],
)
def test_permanent_error_fails_at_once(code, reason):
    decision = after_attempt(SendResult.permanent("p", code, "no"), attempt=1, policy=POLICY)
    assert (decision.verdict, decision.reason) == (Verdict.FAIL, reason)


def test_retry_after_from_the_provider_is_a_floor():
    limited = SendResult.transient("p", ErrorCode.RATE_LIMITED, "429", retry_after_s=30)
    assert after_attempt(limited, attempt=1, policy=POLICY).delay_s >= 30
