"""The marketers' admin: segments, campaigns with their steps and copy, and the funnel."""

from campaigns.admin import campaigns, segments, stats

__all__ = ["campaigns", "segments", "stats"]
