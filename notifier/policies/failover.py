"""Provider failover within a channel: which failed sends the next provider may take at once,
and how long a provider asked to be left alone. Pure decisions on a send's typed result."""

from __future__ import annotations

from channels.base import NOT_ATTEMPTED, ErrorCode, Outcome, SendResult

# The provider said, with a 429 or a 5xx (or an SMTP 4xx reply), that it did not take the
# message: handing it to the next provider cannot double-send it. Timeouts and dropped
# connections are not here: the first provider may have accepted the message before it went
# quiet, so those wait for their retry on the same provider instead.
REFUSED_UNSENT = frozenset({ErrorCode.RATE_LIMITED, ErrorCode.PROVIDER_UNAVAILABLE})
# A 429 without a Retry-After still means "not now": stay away this long.
RATE_LIMITED_PAUSE_S = 1.0


def hands_on(result: SendResult) -> bool:
    """May the next provider of the chain take this message now, in the same attempt?"""
    return result.outcome is Outcome.TRANSIENT and result.error_code in REFUSED_UNSENT


def pause_for(result: SendResult, *, max_pause_s: float) -> float:
    """How long every worker should leave this provider alone after this result (0: no pause):
    its Retry-After on a 429 or 5xx, at most max_pause_s; a short pause on a bare 429."""
    if not hands_on(result):
        return 0.0
    if result.retry_after_s is not None and result.retry_after_s > 0:
        return min(result.retry_after_s, max_pause_s)
    return RATE_LIMITED_PAUSE_S if result.error_code is ErrorCode.RATE_LIMITED else 0.0


def counts_against_health(result: SendResult) -> bool:
    """Does this result count as a failure for the provider's circuit breaker? Timeouts, 5xx
    and the like do; a 429 does not (the provider is well and asked us to slow down: the
    Retry-After pause handles it), nor does a message it was never asked to send."""
    return (
        result.outcome is Outcome.TRANSIENT
        and result.error_code is not ErrorCode.RATE_LIMITED
        and not result.detail.get(NOT_ATTEMPTED)
    )
