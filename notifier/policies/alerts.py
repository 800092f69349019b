"""Failure-rate alerts: is a provider failing too often, should a campaign be paused?

Pure functions over counts: they take what the alert job counted (attempts and failures in
the window) and the thresholds, and return a decision with the reason an operator or a
marketer reads. A rate measured on too few sends says nothing, so below the minimum sample
the answer is always "no" (with the reason saying so).
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class Counts:
    """What happened in the window: `total` attempts (or finished sends), `failed` of them."""

    total: int
    failed: int

    @property
    def rate(self) -> float:
        return self.failed / self.total if self.total else 0.0


@dataclass(frozen=True, slots=True)
class Decision:
    act: bool
    reason: str


def _minutes(window_s: float) -> str:
    minutes = window_s / 60
    return f"{minutes:g} min" if minutes >= 1 else f"{window_s:g} s"


def provider_alert(
    key: str, counts: Counts, *, threshold: float, min_attempts: int, window_s: float
) -> Decision:
    """Alert when more than `threshold` (0..1) of a provider's attempts failed in the window."""
    seen = (
        f"{key}: {counts.failed} of {counts.total} attempts failed ({counts.rate:.0%}) "
        f"in the last {_minutes(window_s)}"
    )
    if counts.total < min_attempts:
        return Decision(False, f"{seen}; fewer than {min_attempts} attempts, too few to judge")
    if counts.rate <= threshold:
        return Decision(False, f"{seen}; within the {threshold:.0%} threshold")
    return Decision(True, f"{seen}, above the {threshold:.0%} threshold")


def campaign_pause(
    name: str, counts: Counts, *, threshold_percent: int, min_sample: int, window_s: float
) -> Decision:
    """Pause when more than `threshold_percent` of the campaign's finished sends failed."""
    seen = (
        f"{counts.failed} of its last {counts.total} sends failed ({counts.rate:.0%}) "
        f"in the last {_minutes(window_s)}"
    )
    if counts.total < min_sample:
        return Decision(False, f"{name}: {seen}; fewer than {min_sample}, too few to judge")
    if counts.rate * 100 <= threshold_percent:
        return Decision(False, f"{name}: {seen}; within its {threshold_percent}% threshold")
    return Decision(
        True,
        f"{seen}, above its {threshold_percent}% threshold. Check the copy, the audience's "
        "contact details and the providers, then resume.",
    )
