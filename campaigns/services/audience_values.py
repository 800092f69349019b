"""Rule values no recipient has: a segment's tag, locale or time zone that matches nobody.

A mistyped tag does not fail, it silently reaches no one ("sael" for "sale"). These checks name
each value of a segment's rules that no recipient (erased people aside) has, with the closest
existing value as a suggestion (difflib), so the segment page and the campaign's forecast can
warn. They never block a save: a tag may be meant for users who have yet to be tagged.

Each value is one `EXISTS` on an indexed condition (the tags' GIN index, as the segment's own
query uses); the existing values for a suggestion are read only when some value is missing.
"""

from __future__ import annotations

import difflib
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

from django.db import connection
from django.db.models import F, Func, QuerySet

from campaigns.models import Segment
from notifier.models import Recipient

# Existing values read for a "did you mean" (tags can number in the hundreds).
SUGGESTION_POOL = 5000


@dataclass(frozen=True, slots=True)
class ValueWarning:
    """A rule value no recipient has, and the closest one some have (or "")."""

    rule: str  # "tags_any", "tags_all", "locales", "time_zones"
    value: str
    suggestion: str = ""

    @property
    def what(self) -> str:
        return RULE_NOUNS[self.rule]

    @property
    def text(self) -> str:
        text = f"No user has the {self.what} “{self.value}”: this rule matches nobody"
        return text + (f". Did you mean “{self.suggestion}”?" if self.suggestion else ".")


RULE_NOUNS = {
    "tags_any": "tag",
    "tags_all": "tag",
    "locales": "locale",
    "time_zones": "time zone",
}


def _profiles() -> QuerySet[Recipient]:
    return Recipient.objects.filter(erased_at__isnull=True)


def _tag_exists(tag: str) -> bool:
    return _profiles().filter(interest_tags__has_key=tag).exists()


def _existing_tags() -> list[str]:
    if connection.vendor != "postgresql":
        return []  # the embedded default: no suggestion
    tags = (
        _profiles()
        .annotate(tag=Func(F("interest_tags"), function="jsonb_array_elements_text"))
        .values_list("tag", flat=True)
        .distinct()[:SUGGESTION_POOL]
    )
    return [str(tag) for tag in tags]


def _existing(field: str) -> list[str]:
    return [
        str(value)
        for value in _profiles().values_list(field, flat=True).distinct()[:SUGGESTION_POOL]
        if value
    ]


def closest(value: str, candidates: Sequence[str]) -> str:
    """The existing value closest to `value` (case aside), or "" when none is close."""
    by_folded = {candidate.casefold(): candidate for candidate in candidates}
    match = difflib.get_close_matches(value.casefold(), list(by_folded), n=1, cutoff=0.6)
    return by_folded[match[0]] if match else ""


def segment_value_warnings(segment: Segment) -> list[ValueWarning]:
    """Every tag, locale and time zone of the segment's rules that no recipient has."""
    warnings: list[ValueWarning] = []
    tags = [("tags_any", str(t)) for t in segment.tags_any or []]
    tags += [("tags_all", str(t)) for t in segment.tags_all or []]
    missing_tags = [(rule, tag) for rule, tag in tags if not _tag_exists(tag)]
    if missing_tags:
        pool = _existing_tags()
        warnings += [ValueWarning(rule, tag, closest(tag, pool)) for rule, tag in missing_tags]
    for rule, field in (("locales", "locale"), ("time_zones", "time_zone")):
        values = [str(v) for v in getattr(segment, rule) or []]
        missing = [v for v in values if not _profiles().filter(**{field: v}).exists()]
        if missing:
            pool = _existing(field)
            warnings += [ValueWarning(rule, value, closest(value, pool)) for value in missing]
    return warnings


def warning_texts(warnings: Iterable[ValueWarning]) -> list[str]:
    return [warning.text for warning in warnings]
