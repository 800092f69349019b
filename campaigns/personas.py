"""Personas: the segment attributes campaign copy sees of each customer, and which persona copy
they get. Pure functions of the profile row the pipeline already holds: no query per message.

Campaign copy sees, besides `user.first_name`, `last_name`, `name` and `locale`:

    user.spend_tier        "whale", "dolphin" or "small_fish": yearly spend against the
                           audience thresholds (whale over 5,000, dolphin 500-5,000, small fish
                           under 500 by default; the same edges as segments)
    user.activity          "active", "dormant" or "churned": last activity against the
                           thresholds (30 and 90 days by default)
    user.interests         the interest tags, a list of strings
    user.points            the loyalty points balance (0 when none)
    user.points_expiring   the balance when it expires within the window, else 0: the
                           campaign segment's "points expiring within N days", or
                           NOTIFIER_POINTS_EXPIRING_DAYS (30) when the segment has none
    user.points_expire_on  the day the balance expires, in the customer's time zone
                           ("2026-11-30"); "" when there is no balance or it has lapsed

None of these is a contact detail: a marketer already sees them of a sampled customer.

A variant's copy can be written per persona (VariantTemplate.persona: a spend tier or an
activity state). A customer gets, in their locale (or the next one down the locale chain),
the copy for their spend tier, else for their activity state, else the copy for everyone
(`campaigns.rendering.copy_key`). The locale is chosen first: a customer never gets another
language because their persona has copy only there. One variant's persona copy follows one
of the two, spend tiers or activity states, never both (refused when saved), so who gets
which is never a question of precedence.
"""

from __future__ import annotations

from collections.abc import Collection
from dataclasses import dataclass, replace
from datetime import datetime, timedelta
from decimal import Decimal
from typing import Any
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from campaigns.models import Activity, AudienceThresholds, SpendTier
from campaigns.rendering import EVERYONE
from campaigns.services.segments import activity_of, spend_tier_of
from notifier.models.recipients import recipient_for

SPEND_PERSONAS = frozenset(SpendTier.values)
ACTIVITY_PERSONAS = frozenset(Activity.values)
PERSONAS = SPEND_PERSONAS | ACTIVITY_PERSONAS
# Tags a persona carries into the copy at most: the taxonomy has 200-odd (seed 003).
MAX_INTERESTS = 200


@dataclass(frozen=True, slots=True)
class Persona:
    """What campaign copy knows about one customer's segment attributes."""

    spend_tier: str
    activity: str
    interests: tuple[str, ...] = ()
    points: int = 0
    points_expiring: int = 0
    points_expire_on: str = ""

    def copy_keys(self) -> tuple[str, str]:
        """The persona copy this customer may get, the first that exists wins."""
        return (self.spend_tier, self.activity)

    def template_values(self) -> dict[str, Any]:
        return {
            "spend_tier": self.spend_tier,
            "activity": self.activity,
            "interests": list(self.interests),
            "points": self.points,
            "points_expiring": self.points_expiring,
            "points_expire_on": self.points_expire_on,
        }

    def as_persona(self, key: str) -> Persona:
        """This customer as another persona would be (a preview of that persona's copy)."""
        if key in SPEND_PERSONAS:
            return replace(self, spend_tier=key)
        if key in ACTIVITY_PERSONAS:
            return replace(self, activity=key)
        return self


def persona_of(
    *,
    yearly_spend: Decimal,
    last_active_at: datetime | None,
    interest_tags: Any,
    points_balance: int,
    points_expire_at: datetime | None,
    time_zone: str,
    thresholds: AudienceThresholds,
    points_days: int,
    now: datetime,
) -> Persona:
    """The persona of one profile at `now`; the tier and activity edges are the segments'."""
    balance = max(int(points_balance or 0), 0)
    live = balance > 0 and points_expire_at is not None and points_expire_at >= now
    expiring = (
        live
        and points_expire_at is not None
        and (points_expire_at <= now + timedelta(days=points_days))
    )
    return Persona(
        spend_tier=str(spend_tier_of(Decimal(yearly_spend or 0), thresholds=thresholds)),
        activity=str(activity_of(last_active_at, thresholds=thresholds, now=now)),
        interests=interests_of(interest_tags),
        points=balance,
        points_expiring=balance if expiring else 0,
        points_expire_on=local_day(points_expire_at, time_zone) if live else "",
    )


def user_persona(
    user: Any, *, thresholds: AudienceThresholds, points_days: int, now: datetime
) -> Persona:
    """The persona of a user (any user model), from their recipient profile."""
    profile = recipient_for(user)
    return persona_of(
        yearly_spend=profile.yearly_spend,
        last_active_at=profile.last_active_at,
        interest_tags=profile.interest_tags,
        points_balance=profile.points_balance,
        points_expire_at=profile.points_expire_at,
        time_zone=profile.time_zone,
        thresholds=thresholds,
        points_days=points_days,
        now=now,
    )


def interests_of(tags: Any) -> tuple[str, ...]:
    """The tags as strings: the product may store a list or, in older rows, an object."""
    if isinstance(tags, dict):
        tags = list(tags)
    if not isinstance(tags, list):
        return ()
    return tuple(tag for tag in tags if isinstance(tag, str))[:MAX_INTERESTS]


def local_day(moment: datetime | None, time_zone: str) -> str:
    if moment is None:
        return ""
    try:
        zone = ZoneInfo(time_zone)
    except (ZoneInfoNotFoundError, ValueError):
        zone = ZoneInfo("UTC")
    return moment.astimezone(zone).date().isoformat()


def persona_problem(personas: Collection[str]) -> str | None:
    """What is wrong with the personas one variant writes copy for: an unknown one, or spend
    tiers and activity states mixed (who would get which?)."""
    unknown = sorted(set(personas) - PERSONAS - {EVERYONE})
    if unknown:
        return (
            f"no persona {', '.join(repr(p) for p in unknown)}; use a spend tier "
            f"({', '.join(SpendTier.values)}) or an activity state ({', '.join(Activity.values)})"
        )
    if set(personas) & SPEND_PERSONAS and set(personas) & ACTIVITY_PERSONAS:
        return (
            "its copy is written per spend tier and per activity state: choose one of the two "
            "for this variant (another variant or step can use the other)"
        )
    return None


def persona_label(key: str) -> str:
    if key in SPEND_PERSONAS:
        return f"spend tier {SpendTier(key).label.lower()}"
    if key in ACTIVITY_PERSONAS:
        return f"activity {Activity(key).label.lower()}"
    return "everyone" if key == EVERYONE else key
