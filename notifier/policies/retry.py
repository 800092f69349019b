"""Retry policy: after an attempt, is the delivery sent, retried later, or failed for good."""

from __future__ import annotations

import random
from dataclasses import dataclass
from enum import StrEnum

from channels.base import ErrorCode, Outcome, SendResult
from notifier.status import Reason


@dataclass(frozen=True, slots=True)
class RetryPolicy:
    max_attempts: int = 5
    base_delay_s: float = 2.0
    max_delay_s: float = 300.0


class Verdict(StrEnum):
    SENT = "sent"
    RETRY = "retry"
    FAIL = "fail"


@dataclass(frozen=True, slots=True)
class AttemptDecision:
    verdict: Verdict
    reason: Reason | None = None
    delay_s: float = 0.0


PERMANENT_REASONS: dict[ErrorCode, Reason] = {
    ErrorCode.INVALID_RECIPIENT: Reason.INVALID_RECIPIENT,
    ErrorCode.DEVICE_UNREGISTERED: Reason.DEVICE_UNREGISTERED,
    ErrorCode.NOT_CONFIGURED: Reason.PROVIDER_NOT_CONFIGURED,
}


def backoff_delay(attempt: int, policy: RetryPolicy, rng: random.Random | None = None) -> float:
    """Exponential backoff with 'equal jitter': half the step fixed, half random.

    attempt 1 -> 1..2 s, 2 -> 2..4 s, 3 -> 4..8 s ... never above max_delay_s. The fixed half
    keeps retries from bunching near zero; the random half spreads a burst of failures apart.
    """
    step = min(policy.max_delay_s, policy.base_delay_s * 2 ** (attempt - 1))
    return step / 2 + (rng or random).uniform(0, step / 2)


def after_attempt(
    result: SendResult, *, attempt: int, policy: RetryPolicy, rng: random.Random | None = None
) -> AttemptDecision:
    if result.outcome is Outcome.SENT:
        return AttemptDecision(Verdict.SENT)
    if result.outcome is Outcome.PERMANENT:
        reason = PERMANENT_REASONS.get(
            result.error_code or ErrorCode.REJECTED, Reason.PROVIDER_REJECTED
        )
        return AttemptDecision(Verdict.FAIL, reason)
    if attempt >= policy.max_attempts:
        return AttemptDecision(Verdict.FAIL, Reason.RETRIES_EXHAUSTED)
    delay = backoff_delay(attempt, policy, rng)
    if result.retry_after_s is not None:
        delay = min(policy.max_delay_s, max(delay, result.retry_after_s))
    return AttemptDecision(Verdict.RETRY, Reason.RETRY_SCHEDULED, delay)
