"""The campaign calendar: when each step of the one-off campaigns goes out, in a marketer's
time zone, and where two campaigns compete for the same users' frequency caps on one day.

A step at an offset goes out at one moment. A step at a local time of day (or at each user's
usual active hour) goes out over a span: its day comes first in the easternmost zone of its
audience and last in the westernmost, so the calendar shows it from the first user's moment to
the last one's (the audience's zones: the segment's own zone rule, else the zones the profiles
use). Triggered campaigns have no date: they send whenever someone enters their segment.

Frequency caps count every marketing message of a user per day and week, whatever the
campaign, so two campaigns with steps on the same day compete for the cap of every user in
both audiences. How many users that is comes from one set query per pair of segments (the
intersection of their audiences as they are now); the day is the marketer's day, which for
most users is the same as theirs.
"""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass, field
from datetime import date, datetime, time, timedelta
from itertools import combinations
from zoneinfo import ZoneInfo

from django.db.models import DateTimeField, ExpressionWrapper, F, Value

from campaigns.models import (
    CampaignKind,
    CampaignStatus,
    CampaignStep,
    Segment,
    StepStatus,
    StepTiming,
)
from campaigns.policies import DEFAULT_ACTIVE_HOUR, StepPlan, Timing, step_moment
from campaigns.services.segments import segment_users
from notifier.models import Recipient

# Campaigns whose pending steps will still take users' cap slots.
COMPETING_CAMPAIGNS = (
    CampaignStatus.AWAITING_APPROVAL,
    CampaignStatus.SCHEDULED,
    CampaignStatus.RUNNING,
    CampaignStatus.PAUSED,
)
COMPETING_STEPS = (StepStatus.PENDING, StepStatus.RUNNING)
LATEST_ACTIVE_HOUR = 23


@dataclass(frozen=True)
class CalendarStep:
    """One step on the calendar: its first moment out and, over time zones, its last."""

    campaign_id: int
    campaign_name: str
    campaign_status: str
    campaign_status_label: str
    category_id: str | None
    segment_id: int | None
    step_id: int
    step_name: str
    step_status: str
    step_status_label: str
    timing: str
    starts: datetime  # in the marketer's zone
    ends: datetime | None  # in the marketer's zone; None: a single moment

    @property
    def day(self) -> date:
        return self.starts.date()

    @property
    def competes(self) -> bool:
        return self.campaign_status in COMPETING_CAMPAIGNS and self.step_status in COMPETING_STEPS


@dataclass(frozen=True)
class Competition:
    """Two campaigns with steps on one day whose audiences share users."""

    day: date
    first: str  # campaign names
    second: str
    first_id: int
    second_id: int
    shared_users: int
    same_category: bool

    @property
    def sentence(self) -> str:
        category = " They are of the same type." if self.same_category else ""
        people = "user" if self.shared_users == 1 else "users"
        return (
            f"{self.first} and {self.second} both send on {self.day:%a %d %b}: "
            f"{self.shared_users} {people} are in both audiences and compete for the same "
            f"daily cap (the higher-priority campaign wins the slot).{category}"
        )


@dataclass
class CalendarData:
    steps: list[CalendarStep]
    competitions: list[Competition]
    by_day: dict[date, list[CalendarStep]] = field(default_factory=dict)
    competing_days: dict[date, list[Competition]] = field(default_factory=dict)


def audience_zones(segment: Segment | None, zones_in_use: list[str]) -> list[str]:
    """The time zones a step's users may be in: the segment's own rule, else all in use."""
    if segment is not None and segment.time_zones:
        return list(segment.time_zones)
    return zones_in_use or ["UTC"]


def _zone(name: str) -> ZoneInfo | None:
    try:
        return ZoneInfo(name)
    except (ValueError, KeyError, OSError):
        return None


def step_span(
    event_at: datetime, plan: StepPlan, zones: list[str]
) -> tuple[datetime, datetime | None]:
    """When a step goes out: (moment, None) at an offset; otherwise (first user's moment, last
    user's moment) over the zones. Pure."""
    moment = step_moment(event_at, plan)
    if plan.timing == Timing.OFFSET:
        return moment, None
    if plan.timing == Timing.LOCAL_TIME and plan.local_time is not None:
        earliest = latest = plan.local_time
    elif plan.timing == Timing.LOCAL_TIME:
        earliest = latest = time(DEFAULT_ACTIVE_HOUR)
    else:  # each user's usual hour: any hour of their day
        earliest, latest = time(0), time(LATEST_ACTIVE_HOUR)
    firsts, lasts = [], []
    for name in zones:
        tz = _zone(name)
        if tz is None:
            continue
        day = moment.astimezone(tz).date()
        firsts.append(datetime.combine(day, earliest, tzinfo=tz))
        lasts.append(datetime.combine(day, latest, tzinfo=tz))
    if not firsts:
        return moment, None
    start, end = min(firsts), max(lasts)
    return start, (end if end != start else None)


def zones_in_use() -> list[str]:
    """The distinct time zones of the recipient profiles (through their index)."""
    return sorted(
        Recipient.objects.filter(erased_at__isnull=True)
        .order_by()
        .values_list("time_zone", flat=True)
        .distinct()
    )


def calendar_steps(*, start: datetime, end: datetime, tz: ZoneInfo) -> list[CalendarStep]:
    """The steps of one-off campaigns (any status but cancelled) that go out, at least in part,
    between `start` and `end`; times in `tz`, ordered by when they start."""
    margin = timedelta(days=2)  # a span over zones reaches about a day either side
    steps = (
        CampaignStep.objects.filter(
            campaign__kind=CampaignKind.ONE_OFF,
            campaign__event_at__isnull=False,
        )
        .exclude(campaign__status=CampaignStatus.CANCELLED)
        .select_related("campaign", "campaign__segment")
        .order_by("campaign__event_at", "offset_minutes", "pk")
    )
    # The step's moment (event + offset) in SQL; the span over zones is checked below.
    moment = ExpressionWrapper(
        F("campaign__event_at") + F("offset_minutes") * Value(timedelta(minutes=1)),
        output_field=DateTimeField(),
    )
    candidates = list(
        steps.annotate(moment=moment).filter(moment__gte=start - margin, moment__lte=end + margin)
    )
    zones = zones_in_use() if any(step.timing != StepTiming.OFFSET for step in candidates) else []
    found = []
    for step in candidates:
        campaign = step.campaign
        assert campaign.event_at is not None
        first, last = step_span(
            campaign.event_at, _plan(step), audience_zones(campaign.segment, zones)
        )
        if (last or first) < start or first >= end:
            continue
        found.append(
            CalendarStep(
                campaign_id=campaign.pk,
                campaign_name=campaign.name,
                campaign_status=campaign.status,
                campaign_status_label=str(campaign.get_status_display()),
                category_id=campaign.category_id,
                segment_id=campaign.segment_id,
                step_id=step.pk,
                step_name=step.name,
                step_status=step.status,
                step_status_label=str(step.get_status_display()),
                timing=step.timing,
                starts=first.astimezone(tz),
                ends=last.astimezone(tz) if last else None,
            )
        )
    return sorted(found, key=lambda item: (item.starts, item.campaign_name, item.step_id))


def _plan(step: CampaignStep) -> StepPlan:
    return StepPlan(step.offset_minutes, Timing(step.timing), step.local_time)


def shared_audience(first: Segment, second: Segment) -> int:
    """How many users are in both segments now: one set query (an IN over the second's)."""
    if first.pk == second.pk:
        return segment_users(first).count()
    return segment_users(first).filter(pk__in=segment_users(second).values("pk")).count()


def competitions(steps: list[CalendarStep]) -> list[Competition]:
    """Pairs of live campaigns with steps on the same (marketer's) day whose audiences share
    users; one set query per pair of segments, however many days they meet."""
    campaigns_by_day: dict[date, dict[int, CalendarStep]] = defaultdict(dict)
    for step in steps:
        if step.competes and step.segment_id is not None:
            days = {step.day} | ({step.ends.date()} if step.ends else set())
            for day in days:
                campaigns_by_day[day].setdefault(step.campaign_id, step)
    segments = Segment.objects.in_bulk(
        {step.segment_id for step in steps if step.segment_id is not None}
    )
    shared: dict[tuple[int, int], int] = {}
    found = []
    for day in sorted(campaigns_by_day):
        meeting = sorted(campaigns_by_day[day].values(), key=lambda s: s.campaign_id)
        for first, second in combinations(meeting, 2):
            assert first.segment_id is not None and second.segment_id is not None
            pair = (
                min(first.segment_id, second.segment_id),
                max(first.segment_id, second.segment_id),
            )
            if pair not in shared:
                shared[pair] = shared_audience(segments[pair[0]], segments[pair[1]])
            if shared[pair]:
                found.append(
                    Competition(
                        day=day,
                        first=first.campaign_name,
                        second=second.campaign_name,
                        first_id=first.campaign_id,
                        second_id=second.campaign_id,
                        shared_users=shared[pair],
                        same_category=first.category_id == second.category_id,
                    )
                )
    return found


def campaign_calendar(*, start: datetime, end: datetime, tz: ZoneInfo) -> CalendarData:
    """The calendar between two moments: steps by (marketer's) day and competitions by day."""
    steps = calendar_steps(start=start, end=end, tz=tz)
    found = competitions(steps)
    data = CalendarData(steps=steps, competitions=found)
    for step in steps:
        data.by_day.setdefault(step.day, []).append(step)
    for competition in found:
        data.competing_days.setdefault(competition.day, []).append(competition)
    return data


__all__ = [
    "CalendarData",
    "CalendarStep",
    "Competition",
    "campaign_calendar",
    "competitions",
    "shared_audience",
    "step_span",
]
