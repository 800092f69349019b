"""What a campaign's approval covers: its definition (who receives it, and what they receive) as
a JSON snapshot, compared with the one taken when a lead approved it.

The definition holds everything that decides the audience or the message:

- the campaign's settings: name (the copy can show it), kind, category, segment, priority,
  channels, variables, hold-out and re-entry days, and a lead's "Send in quiet hours" (recorded
  only when on, so approvals taken before the switch existed still match);
- its steps (offset and timing), their variants (names and weights) and every variant's copy,
  per channel, locale and persona;
- its segment's rules and "use member list" switch;
- the member list itself, when the segment uses it: a count and a SHA-256 digest of the sorted
  user ids (one aggregate query; never the ids themselves);
- the audience thresholds, as far as the segment's rules or the copy follow them (tier edges
  only with a tier rule, copy written per spend tier or copy reading `user.spend_tier`;
  activity edges likewise): a new edge changes who gets which persona's copy.

Deliberately outside it: the event time (moving the event needs no new approval), the segment's
name and description, measurement and safety settings (attribution window, automatic-pause
threshold), and who matches the rules today: users entering or leaving a segment is data, not
a change of definition.

`definition_changes` (pure) says in words what differs between two definitions, e.g.
'Segment “Winter whales”: use member list: yes → no'; every difference it cannot name still
counts, so "unequal" and "has changes" are the same thing.
"""

from __future__ import annotations

import functools
import hashlib
import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from enum import StrEnum
from typing import Any

from django.core.serializers.json import DjangoJSONEncoder
from django.db import connection
from jinja2 import nodes

from campaigns.models import (
    AudienceThresholds,
    Campaign,
    CampaignKind,
    CampaignStep,
    Segment,
    SegmentMember,
    SeriesStop,
    StepTiming,
)
from campaigns.personas import ACTIVITY_PERSONAS, SPEND_PERSONAS, persona_label
from campaigns.policies import describe_offset
from campaigns.rendering import COMPILE_ERRORS, EVERYONE, PART_FIELDS, environment
from notifier.db import table_name

Definition = dict[str, Any]

# Campaign field -> key in the definition.
CAMPAIGN_FIELDS = {
    "name": "name",
    "kind": "kind",
    "category_id": "category",
    "segment_id": "segment",
    "priority": "priority",
    "channels": "channels",
    "variables": "variables",
    "holdout_percent": "holdout_percent",
    "reentry_days": "reentry_days",
    "stop_series_on": "stop_series_on",
}
# Marketing in quiet hours, a lead's switch: in the definition only when on.
QUIET_HOURS = "quiet_hours_allowed"
# The campaign's own send rate: in the definition only when set, so that approvals recorded
# before the field existed still match a campaign without one.
SEND_RATE = "send_rate_per_minute"
SPEND_EDGES = ("whale_min_spend", "dolphin_min_spend")
ACTIVITY_EDGES = ("active_within_days", "dormant_within_days")
TIER_COUNT = ACTIVITY_COUNT = 3  # all three ticked is the same as none: no condition
LABELS = "labels"  # shown, never compared (the segment's name)
MEMBER_CHUNK = 10_000
EXCERPT = 60  # characters of copy shown on each side of a change


class Area(StrEnum):
    """What kind of change; the reason a campaign goes back for approval names these."""

    APPROVAL = "approval"
    SETTINGS = "settings"
    SEGMENT = "segment"
    MEMBERS = "members"
    THRESHOLDS = "thresholds"
    STEPS = "steps"
    VARIANTS = "variants"
    COPY = "copy"


AREA_REASONS = {
    Area.APPROVAL: "it was approved before approvals covered its audience",
    Area.SETTINGS: "its settings changed",
    Area.SEGMENT: "its segment changed",
    Area.MEMBERS: "its segment's member list changed",
    Area.THRESHOLDS: "the audience thresholds changed",
    Area.STEPS: "its steps changed",
    Area.VARIANTS: "its A/B variants changed",
    Area.COPY: "its copy changed",
}
REASON_MAX = 500


@dataclass(frozen=True)
class Change:
    area: Area
    text: str


# An approval taken before approvals recorded their definition (before migration 0008).
UNRECORDED = Change(
    Area.APPROVAL,
    "It was approved before approvals recorded the audience, steps and copy they cover: "
    "approve it again to confirm them",
)


# --- Reading a definition --------------------------------------------------------------------


def campaign_definition(campaign_id: int, *, members: bool = True) -> Definition:
    """The campaign's definition as it is in the database now, JSON-safe.

    `members=False` leaves out the member list's digest (the one part whose cost grows with
    the list): for checks that run per batch, after the walk checked the whole of it.
    """
    row = (
        Campaign.objects.filter(pk=campaign_id)
        .values(*CAMPAIGN_FIELDS, QUIET_HOURS, SEND_RATE)
        .get()
    )
    chosen = {key: row[field] for field, key in CAMPAIGN_FIELDS.items()}
    if row[QUIET_HOURS]:
        chosen[QUIET_HOURS] = True
    if row[SEND_RATE] is not None:
        chosen[SEND_RATE] = row[SEND_RATE]
    definition: Definition = {
        "campaign": chosen,
        "steps": _steps(campaign_id),
        "segment": None,
        "members": None,
        "thresholds": {},
        LABELS: {"segment": ""},
    }
    segment = Segment.objects.filter(pk=row["segment_id"]).first() if row["segment_id"] else None
    if segment is not None:
        definition["segment"] = {name: getattr(segment, name) for name in Segment.AUDIENCE_FIELDS}
        definition[LABELS]["segment"] = segment.name
    definition["thresholds"] = thresholds_followed(segment, copy_follows(definition["steps"]))
    if segment is not None and segment.use_member_list and members:
        count, digest = members_digest(segment.pk)
        definition["members"] = {"count": count, "digest": digest}
    # Decimals and times as the JSONField stores them, so a fresh read equals a stored one.
    loaded: Definition = json.loads(json.dumps(definition, cls=DjangoJSONEncoder))
    return loaded


def _steps(campaign_id: int) -> dict[str, Any]:
    steps = CampaignStep.objects.filter(campaign_id=campaign_id).prefetch_related(
        "variants__templates"
    )
    return {
        str(step.pk): {
            "name": step.name,
            "offset_minutes": step.offset_minutes,
            "timing": step.timing,
            "local_time": step.local_time,
            "variants": {
                str(variant.pk): {
                    "name": variant.name,
                    "weight": variant.weight,
                    "copy": {
                        copy_key_text(template.channel, template.locale, template.persona): {
                            part: getattr(template, part) for part in PART_FIELDS
                        }
                        for template in variant.templates.all()
                    },
                }
                for variant in step.variants.all()
            },
        }
        for step in steps
    }


def copy_key_text(channel: str, locale: str, persona: str) -> str:
    """A copy's key in a definition: "email:zh-hans", and "email:zh-hans:whale" for a persona's
    (copy for everyone keeps the key approvals recorded before personas)."""
    return f"{channel}:{locale}:{persona}" if persona else f"{channel}:{locale}"


def copy_key_of(text: str) -> tuple[str, str, str]:
    """(channel, locale, persona) of a `copy_key_text`."""
    channel, _, rest = text.partition(":")
    locale, _, persona = rest.partition(":")
    return channel, locale, persona


@dataclass(frozen=True)
class CopyFollows:
    """Whether a campaign's copy depends on the spend tier or the activity edges."""

    spend: bool = False
    activity: bool = False


def copy_follows(steps: Mapping[str, Any]) -> CopyFollows:
    """Whether the copy of `steps` (a definition's) is written per spend tier or activity
    state, or reads `user.spend_tier` or `user.activity`."""
    spend = activity = False
    for step in steps.values():
        for variant in step["variants"].values():
            for key, parts in variant["copy"].items():
                persona = copy_key_of(key)[2]
                spend |= persona in SPEND_PERSONAS
                activity |= persona in ACTIVITY_PERSONAS
                for source in parts.values():
                    used = user_fields_read(source or "")
                    spend |= "spend_tier" in used
                    activity |= "activity" in used
    return CopyFollows(spend=spend, activity=activity)


@functools.lru_cache(maxsize=4096)
def user_fields_read(source: str) -> frozenset[str]:
    """The `user.<name>` (and `user["<name>"]`) a template reads; nothing for one that does
    not parse (it cannot be approved anyway). Remembered: definitions are read per batch."""
    if "user" not in source:
        return frozenset()
    try:
        parsed = environment().parse(source)
    except COMPILE_ERRORS:
        return frozenset()
    found: set[str] = set()
    lookups: list[nodes.Getattr | nodes.Getitem] = [
        *parsed.find_all(nodes.Getattr),
        *parsed.find_all(nodes.Getitem),
    ]
    for node in lookups:
        if not (isinstance(node.node, nodes.Name) and node.node.name == "user"):
            continue
        if isinstance(node, nodes.Getattr):
            found.add(node.attr)
        elif isinstance(node.arg, nodes.Const) and isinstance(node.arg.value, str):
            found.add(node.arg.value)
    return frozenset(found)


def _constrains(values: Sequence[str], count: int) -> bool:
    return 0 < len(set(values)) < count


def thresholds_followed(segment: Segment | None, copy: CopyFollows | None = None) -> dict[str, Any]:
    """The threshold edges the segment's rules or the campaign's copy (`copy_follows`) depend
    on (empty: thresholds do not matter)."""
    copy = copy or CopyFollows()
    spend = copy.spend or (segment is not None and _constrains(segment.spend_tiers, TIER_COUNT))
    activity = copy.activity or (
        segment is not None and _constrains(segment.activity, ACTIVITY_COUNT)
    )
    if not (spend or activity):
        return {}
    names = (SPEND_EDGES if spend else ()) + (ACTIVITY_EDGES if activity else ())
    # Read back from the row (a row just created holds its defaults unrounded: 5000, not 5000.00).
    row: dict[str, Any] = AudienceThresholds.objects.values(*names).get(
        pk=AudienceThresholds.current().pk
    )
    return row


def members_digest(segment_id: int) -> tuple[int, str]:
    """How many users the segment's list holds, and a SHA-256 of their sorted ids joined by
    commas: one aggregate over the (segment, user) index on PostgreSQL, streamed elsewhere."""
    if connection.vendor == "postgresql":
        with connection.cursor() as cursor:
            cursor.execute(
                "SELECT count(*), encode(sha256(convert_to(coalesce("
                "string_agg(user_id::text, ',' ORDER BY user_id), ''), 'UTF8')), 'hex') "
                f"FROM {table_name(SegmentMember)} WHERE segment_id = %s",
                [segment_id],
            )
            count, digest = cursor.fetchone()
        return int(count), str(digest)
    hasher = hashlib.sha256()
    count = 0
    ids = (
        SegmentMember.objects.filter(segment_id=segment_id)
        .order_by("user_id")
        .values_list("user_id", flat=True)
    )
    for user_id in ids.iterator(chunk_size=MEMBER_CHUNK):
        hasher.update(f"{',' if count else ''}{user_id}".encode())
        count += 1
    return count, hasher.hexdigest()


def _compared(definition: Mapping[str, Any]) -> dict[str, Any]:
    return {key: value for key, value in definition.items() if key != LABELS}


def definition_digest(definition: Mapping[str, Any]) -> str:
    """A short fingerprint of what is compared: what the approver saw, carried by the approve
    button, so that approval refuses a definition that changed while the page was open."""
    text = json.dumps(_compared(definition), sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(text.encode()).hexdigest()


def approval_changes(campaign: Campaign, *, members: bool = True) -> list[Change]:
    """What differs between the campaign's approved definition and the database now (pass a
    campaign read in this transaction). Empty when it matches its approval."""
    approved = campaign.approved_definition
    if not isinstance(approved, dict):
        return [UNRECORDED]
    current = campaign_definition(campaign.pk, members=members)
    if not members:
        approved = {**approved, "members": None}
    return definition_changes(approved, current)


def change_reason(changes: Sequence[Change], *, details: int = 2) -> str:
    """One line for the campaign's page and the marketer's message: which kinds of things
    changed, then the first changes themselves."""
    kinds = ", ".join(dict.fromkeys(AREA_REASONS[change.area] for change in changes))
    shown = "; ".join(change.text for change in changes[:details])
    if len(changes) > details:
        shown += f"; and {len(changes) - details} more"
    reason = f"{kinds}: {shown}" if shown else kinds
    return reason if len(reason) <= REASON_MAX else reason[: REASON_MAX - 1] + "…"


# --- Differences in words (pure) -------------------------------------------------------------


def definition_changes(approved: Mapping[str, Any], current: Mapping[str, Any]) -> list[Change]:
    """Every difference between two definitions, in words, in page order."""
    changes = [
        *_settings_changes(approved, current),
        *_segment_changes(approved, current),
        *_threshold_changes(approved.get("thresholds") or {}, current.get("thresholds") or {}),
        *_step_changes(approved.get("steps") or {}, current.get("steps") or {}),
    ]
    if not changes and _compared(approved) != _compared(current):
        changes.append(Change(Area.SETTINGS, "Something else about it changed"))
    return changes


SETTING_LABELS = {
    "name": "Name",
    "kind": "Kind",
    "category": "Category",
    "priority": "Priority",
    "channels": "Channels",
    "holdout_percent": "Hold-out",
    "reentry_days": "Re-entry",
    QUIET_HOURS: "Send in quiet hours",
    SEND_RATE: "Send rate",
    "stop_series_on": "Stop the series for a customer who",
}


def _setting_text(key: str, value: Any) -> str:
    if key == "name":
        return _quoted(str(value))
    if key == "kind":
        return str(CampaignKind(value).label) if value in CampaignKind.values else str(value)
    if key == "channels":
        return ", ".join(value) if value else "the routing rules' choice"
    if key == "holdout_percent":
        return f"{value}%"
    if key == "reentry_days":
        return f"once in {value} days"
    if key == QUIET_HOURS:
        return "allowed" if value else "no"
    if key == SEND_RATE:
        return f"{value:,} a minute" if value else "no limit of its own"
    if key == "stop_series_on" and value in SeriesStop.values:
        return str(SeriesStop(value).label)
    return "none" if value is None else str(value)


def _settings_changes(approved: Mapping[str, Any], current: Mapping[str, Any]) -> list[Change]:
    before, after = approved.get("campaign") or {}, current.get("campaign") or {}
    changes: list[Change] = []
    for key, label in SETTING_LABELS.items():
        if before.get(key) != after.get(key):
            changes.append(
                Change(
                    Area.SETTINGS,
                    f"{label}: {_setting_text(key, before.get(key))} → "
                    f"{_setting_text(key, after.get(key))}",
                )
            )
    old_vars, new_vars = before.get("variables") or {}, after.get("variables") or {}
    for name in sorted(set(old_vars) | set(new_vars)):
        if name not in new_vars:
            changes.append(Change(Area.SETTINGS, f"Variable {name} removed"))
        elif name not in old_vars:
            changes.append(
                Change(Area.SETTINGS, f"Variable {name} added: {_quoted(str(new_vars[name]))}")
            )
        elif old_vars[name] != new_vars[name]:
            old, new = _excerpts(str(old_vars[name]), str(new_vars[name]))
            changes.append(Change(Area.SETTINGS, f"Variable {name}: {old} → {new}"))
    if before.get("segment") != after.get("segment"):
        changes.append(
            Change(
                Area.SEGMENT,
                f"Segment: {_segment_label(approved)} → {_segment_label(current)}",
            )
        )
    return changes


def _segment_label(definition: Mapping[str, Any]) -> str:
    name = (definition.get(LABELS) or {}).get("segment") or ""
    segment_id = (definition.get("campaign") or {}).get("segment")
    if segment_id is None:
        return "none"
    return _quoted(name) if name else f"#{segment_id}"


RULE_LABELS = {
    "spend_tiers": "spend tiers",
    "activity": "activity",
    "tags_any": "interest tags (any)",
    "tags_all": "interest tags (all)",
    "locales": "locales",
    "time_zones": "time zones",
    "points_expiring_within_days": "points expiring within (days)",
    "use_member_list": "use member list",
}


def _rule_text(value: Any) -> str:
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, list):
        return ", ".join(str(item) for item in value) if value else "any"
    return "any" if value is None else str(value)


def _segment_changes(approved: Mapping[str, Any], current: Mapping[str, Any]) -> list[Change]:
    same_segment = (approved.get("campaign") or {}).get("segment") == (
        current.get("campaign") or {}
    ).get("segment")
    before, after = approved.get("segment"), current.get("segment")
    if not same_segment or before is None or after is None:
        return []  # another segment (or none): the settings say so
    prefix = f"Segment {_segment_label(current)}"
    changes = [
        Change(
            Area.SEGMENT,
            f"{prefix}: {label}: {_rule_text(before.get(name))} → {_rule_text(after.get(name))}",
        )
        for name, label in RULE_LABELS.items()
        if before.get(name) != after.get(name)
    ]
    old_list, new_list = approved.get("members"), current.get("members")
    if isinstance(old_list, dict) and isinstance(new_list, dict) and old_list != new_list:
        old_count, new_count = old_list.get("count"), new_list.get("count")
        changes.append(
            Change(
                Area.MEMBERS,
                f"{prefix}: member list: {old_count:,} → {new_count:,} members"
                if old_count != new_count
                else f"{prefix}: member list: other members (still {new_count:,})",
            )
        )
    return changes


THRESHOLD_LABELS = {
    "whale_min_spend": "whale line (yearly spend)",
    "dolphin_min_spend": "dolphin line (yearly spend)",
    "active_within_days": "active: seen within (days)",
    "dormant_within_days": "dormant: seen within (days)",
}


def _threshold_changes(before: Mapping[str, Any], after: Mapping[str, Any]) -> list[Change]:
    # An edge present on one side only came or went with a rule: the segment's change says so.
    return [
        Change(Area.THRESHOLDS, f"Audience thresholds: {label}: {before[name]} → {after[name]}")
        for name, label in THRESHOLD_LABELS.items()
        if name in before and name in after and before[name] != after[name]
    ]


def _timing_text(step: Mapping[str, Any]) -> str:
    timing = step.get("timing")
    if timing == StepTiming.LOCAL_TIME:
        return f"at {str(step.get('local_time') or '')[:5]} local time"
    if timing == StepTiming.ACTIVE_HOUR:
        return "at each user's usual hour"
    return "at the offset"


def _step_changes(before: Mapping[str, Any], after: Mapping[str, Any]) -> list[Change]:
    changes: list[Change] = []
    for key in _keys(before, after):
        old, new = before.get(key), after.get(key)
        if new is None:
            changes.append(Change(Area.STEPS, f"Step {_quoted(before[key]['name'])} removed"))
            continue
        name = _quoted(new["name"])
        if old is None:
            changes.append(
                Change(
                    Area.STEPS,
                    f"Step {name} added ({describe_offset(new['offset_minutes'])})",
                )
            )
            continue
        if old["name"] != new["name"]:
            changes.append(Change(Area.STEPS, f"Step {_quoted(old['name'])} renamed {name}"))
        if old["offset_minutes"] != new["offset_minutes"]:
            changes.append(
                Change(
                    Area.STEPS,
                    f"Step {name}: {describe_offset(old['offset_minutes'])} → "
                    f"{describe_offset(new['offset_minutes'])}",
                )
            )
        if _timing_text(old) != _timing_text(new):
            changes.append(
                Change(Area.STEPS, f"Step {name}: {_timing_text(old)} → {_timing_text(new)}")
            )
        changes += _variant_changes(name, old.get("variants") or {}, new.get("variants") or {})
    return changes


def _variant_changes(
    step: str, before: Mapping[str, Any], after: Mapping[str, Any]
) -> list[Change]:
    changes: list[Change] = []
    for key in _keys(before, after):
        old, new = before.get(key), after.get(key)
        if new is None:
            gone = before[key]["name"]
            changes.append(Change(Area.VARIANTS, f"Step {step} variant {gone} removed"))
            continue
        where = f"Step {step} variant {new['name']}"
        if old is None:
            changes.append(Change(Area.VARIANTS, f"{where} added (weight {new['weight']})"))
            old = {"name": new["name"], "weight": new["weight"], "copy": {}}
        if old["name"] != new["name"]:
            changes.append(
                Change(Area.VARIANTS, f"Step {step} variant {old['name']} renamed {new['name']}")
            )
        if old["weight"] != new["weight"]:
            changes.append(
                Change(Area.VARIANTS, f"{where}: weight {old['weight']} → {new['weight']}")
            )
        changes += _copy_changes(where, old.get("copy") or {}, new.get("copy") or {})
    return changes


def _copy_label(key: str) -> str:
    channel, locale, persona = copy_key_of(key)
    shown = [locale] if locale else []
    if persona != EVERYONE:
        shown.append(f"for {persona_label(persona)}")
    return f"{channel} ({', '.join(shown)})" if shown else channel


def _copy_changes(where: str, before: Mapping[str, Any], after: Mapping[str, Any]) -> list[Change]:
    changes: list[Change] = []
    for key in _keys(before, after):
        old, new = before.get(key), after.get(key)
        label = _copy_label(key)
        if new is None:
            changes.append(Change(Area.COPY, f"{where}: {label} copy removed"))
            continue
        old = old or {}
        for part in PART_FIELDS:
            if (old.get(part) or "") != (new.get(part) or ""):
                was, now = _excerpts(old.get(part) or "", new.get(part) or "")
                changes.append(Change(Area.COPY, f"{where} {label} {part}: {was} → {now}"))
    return changes


def _keys(before: Mapping[str, Any], after: Mapping[str, Any]) -> list[str]:
    """Keys of both, in id order (the order things were created in)."""
    return sorted(set(before) | set(after), key=lambda key: (len(key), key))


def _quoted(text: str) -> str:
    return f"“{text}”" if text else "(empty)"


def _excerpts(old: str, new: str) -> tuple[str, str]:
    """Both texts quoted, cut to the stretch where they differ when they are long."""
    if len(old) <= EXCERPT and len(new) <= EXCERPT:
        return _quoted(old), _quoted(new)
    pairs = enumerate(zip(old, new, strict=False))
    same = next((i for i, (a, b) in pairs if a != b), min(len(old), len(new)))
    start = max(same - EXCERPT // 3, 0)

    def cut(text: str) -> str:
        if not text:
            return _quoted(text)
        part = text[start : start + EXCERPT]
        return _quoted(("…" if start else "") + part + ("…" if len(text) > start + EXCERPT else ""))

    return cut(old), cut(new)
