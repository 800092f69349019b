"""The reach forecast: before launch, what each step of a campaign will do, per channel.

For every step not yet sent, per channel: how many are in the segment, how many the hold-out
keeps aside, how many are not sent and why (no consent, switched off, no contact point,
suppressed, over the frequency cap, too late), how many wait for their quiet hours to end (and
until when on their own clock), and how many are expected to go out; with the time the send
takes at the campaign's own rate or the providers' limits.

The forecast runs the fan-out's own code on the audience, in memory and writing nothing: the
fan-out's `recipients` (hold-out, variant, each user's moment) and the pipeline's
`message_route` (routing rules, contact points, preferences, consent, quiet hours and the cap's
policy) at the moment each message is due. So its reasons are the delivery reasons
(`notifier.status.Reason`), shown with their labels: the words of the support timeline.

What it cannot know is left out and said so: the bulk queues' depth on the day (backpressure),
other campaigns' messages not yet written (caps count what is already used plus this
campaign's own earlier steps), and higher-priority rivals (`outranked`).

Exact up to FORECAST_SAMPLE users; above that it routes an evenly spread sample of the audience
(every n-th recipient id) and scales the counts, and says it is an estimate.
"""

from __future__ import annotations

import copy
import math
from collections import Counter, defaultdict
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from datetime import date, datetime
from enum import StrEnum

from django.contrib.auth import get_user_model
from django.db.models import Exists, OuterRef, QuerySet
from django.utils import timezone

from campaigns.models import (
    AudienceThresholds,
    Campaign,
    CampaignKind,
    CampaignStep,
    SegmentMember,
    StepStatus,
)
from campaigns.policies import Timing, step_expiry, step_moment
from campaigns.services.audience_values import ValueWarning, segment_value_warnings
from campaigns.services.fanout import recipients
from campaigns.services.lifecycle import plan_of
from campaigns.services.segments import profile_rules_q
from campaigns.services.stats import reason_label  # the support timeline's words
from channels.base import Channel
from channels.registry import providers_for
from notifier.db import readable
from notifier.models import CapPeriod, FrequencyCounter, Recipient, User, recipients_attach
from notifier.policies.caps import Windows, next_window_start, windows_at
from notifier.policies.quiet_hours import quiet_until
from notifier.provider_limits import rate_limits
from notifier.services.admission import Admission, quiet_hours_of
from notifier.services.messages import as_message
from notifier.services.pipeline import Audience, audience_of, message_route
from notifier.status import DeliveryStatus, Reason
from notifier.user_keys import UserKey

S = DeliveryStatus
CapKey = tuple[UserKey, str, date]  # (user, period, window start)
CHANNEL_NAMES = {"inapp": "in-app", "email": "email", "sms": "SMS", "push": "push"}

# Users routed one by one; above this, an evenly spread sample of this many.
FORECAST_SAMPLE = 1000
# The statuses a campaign has before it sends: its forecast is shown then.
FORECAST_STATUSES = ("draft", "awaiting_approval", "scheduled")


class Stage(StrEnum):
    """The funnel's stages, in the order a marketer reads them."""

    CONSENT = "consent"
    PREFERENCE = "preference"
    CONTACT = "contact"
    SUPPRESSED = "suppressed"
    CAPPED = "capped"
    OTHER = "other"


STAGE_LABELS = {
    Stage.CONSENT: "Without consent",
    Stage.PREFERENCE: "Unsubscribed or switched off",
    Stage.CONTACT: "Without a contact point",
    Stage.SUPPRESSED: "Suppressed",
    Stage.CAPPED: "Capped",
    Stage.OTHER: "Not sent for another reason",
}

REASON_STAGES: dict[str, Stage] = {
    Reason.NO_CONSENT: Stage.CONSENT,
    Reason.OPTED_OUT: Stage.PREFERENCE,
    Reason.MARKETING_OFF: Stage.PREFERENCE,
    Reason.NO_EMAIL_ADDRESS: Stage.CONTACT,
    Reason.NO_PHONE_NUMBER: Stage.CONTACT,
    Reason.INVALID_PHONE_NUMBER: Stage.CONTACT,
    Reason.NO_ACTIVE_DEVICE: Stage.CONTACT,
    Reason.ADDRESS_SUPPRESSED: Stage.SUPPRESSED,
    Reason.RECIPIENT_ERASED: Stage.SUPPRESSED,
    Reason.USER_INACTIVE: Stage.SUPPRESSED,
    Reason.FREQUENCY_CAP: Stage.CAPPED,
    Reason.OUTRANKED: Stage.CAPPED,
    Reason.STALE: Stage.CAPPED,  # deferred past its expiry: the cap is why
}


@dataclass(frozen=True, slots=True)
class ReasonRow:
    """One not-sent reason of a step: how many per channel."""

    reason: str
    counts: dict[str, int]

    @property
    def stage(self) -> Stage:
        return REASON_STAGES.get(self.reason, Stage.OTHER)

    @property
    def label(self) -> str:
        return reason_label(self.reason)

    @property
    def total(self) -> int:
        return sum(self.counts.values())


@dataclass(frozen=True, slots=True)
class QuietRelease:
    """Messages held for quiet hours until `local_time` on their users' own clocks."""

    local_time: str  # "08:00"
    users: int


@dataclass(frozen=True, slots=True)
class SendTime:
    """How long a step's messages take to go out at the limit that binds."""

    messages: int
    per_minute: float
    limit: str  # whose limit: "this campaign's send rate", "the email provider's limit"

    @property
    def minutes(self) -> float:
        return self.messages / self.per_minute

    @property
    def text(self) -> str:
        rate = f"{self.per_minute:,.0f}/min"
        minutes = self.minutes
        if minutes < 1:
            return f"under a minute at {rate} ({self.limit})"
        if minutes < 90:
            return f"about {math.ceil(minutes)} min at {rate} ({self.limit})"
        hours, rest = divmod(math.ceil(minutes), 60)
        return f"about {hours} h {rest} min at {rate} ({self.limit})"


@dataclass
class StepForecast:
    step_id: int
    name: str
    moment: datetime | None  # when it fans out (None: no event time yet)
    local_time: str  # for a step at each user's own time of day: "10:00", else ""
    channels: list[str]
    in_segment: int
    held_out: int
    rows: list[ReasonRow] = field(default_factory=list)
    quiet: dict[str, int] = field(default_factory=dict)  # held for quiet hours, per channel
    releases: list[QuietRelease] = field(default_factory=list)
    not_tried: dict[str, int] = field(default_factory=dict)  # an earlier channel reached them
    going_out: dict[str, int] = field(default_factory=dict)  # at its moment
    send_time: SendTime | None = None
    passed: bool = False  # its moment has passed: the fan-out will skip it

    @property
    def after_holdout(self) -> int:
        return max(0, self.in_segment - self.held_out)

    @property
    def quiet_reason(self) -> str:
        return reason_label(Reason.QUIET_HOURS)

    def stages(self) -> list[tuple[str, list[ReasonRow]]]:
        """The not-sent rows grouped by stage, in the funnel's order (empty stages left out)."""
        grouped: dict[Stage, list[ReasonRow]] = defaultdict(list)
        for row in self.rows:
            grouped[row.stage].append(row)
        return [(STAGE_LABELS[stage], grouped[stage]) for stage in Stage if grouped.get(stage)]

    @property
    def total_out(self) -> int:
        return sum(self.going_out.values())

    @property
    def total_quiet(self) -> int:
        return sum(self.quiet.values())


@dataclass
class Forecast:
    campaign_id: int
    audience: int  # users the fan-out would hand out now
    routed: int  # users routed (the whole audience, or the sample)
    steps: list[StepForecast]
    warnings: list[ValueWarning]
    notes: list[str]
    computed_at: datetime
    send_rate_per_minute: int | None

    @property
    def exact(self) -> bool:
        return self.routed >= self.audience


def audience_profiles(campaign: Campaign, *, now: datetime) -> QuerySet[Recipient]:
    """The recipient profiles the fan-out's walk would hand out now (`segment_walk`'s
    conditions: the rules, the member list, not erased, the user active)."""
    segment = campaign.segment
    assert segment is not None
    rules = profile_rules_q(segment, thresholds=AudienceThresholds.current(), now=now)
    profiles = Recipient.objects.filter(rules, erased_at__isnull=True, user__is_active=True)
    if segment.use_member_list:
        profiles = profiles.filter(
            Exists(SegmentMember.objects.filter(segment_id=segment.pk, user_id=OuterRef("user_id")))
        )
    return profiles


def spread_sample(ids: Sequence[int], size: int) -> list[int]:
    """`size` ids spread evenly over `ids` (all of them when there are no more)."""
    if len(ids) <= size:
        return list(ids)
    return [ids[(index * len(ids)) // size] for index in range(size)]


def campaign_forecast(
    *, campaign: Campaign, now: datetime | None = None, sample: int = FORECAST_SAMPLE
) -> Forecast:
    """The campaign's forecast for each step not yet sent. Writes nothing."""
    now = now or timezone.now()
    forecast = Forecast(
        campaign_id=campaign.pk,
        audience=0,
        routed=0,
        steps=[],
        warnings=[],
        notes=[],
        computed_at=now,
        send_rate_per_minute=campaign.send_rate_per_minute,
    )
    if campaign.segment is None or campaign.category_id is None:
        forecast.notes.append("Choose a segment and a category to see the forecast.")
        return forecast
    forecast.warnings = segment_value_warnings(campaign.segment)
    try:
        ids = list(audience_profiles(campaign, now=now).order_by("pk").values_list("pk", flat=True))
    except ValueError as exc:  # a rule value that no longer exists
        forecast.notes.append(str(exc))
        return forecast
    forecast.audience = len(ids)
    users = _users(spread_sample(ids, sample))
    forecast.routed = len(users)
    scale = forecast.audience / forecast.routed if forecast.routed else 0.0
    if campaign.kind == CampaignKind.TRIGGERED:
        forecast.notes.append(
            "A triggered campaign: the forecast is for the users in its segment now; who "
            "gets it is whoever enters the segment later."
        )
        campaign = copy.copy(campaign)  # routed like a one-off: everyone in the segment now
        campaign.kind = CampaignKind.ONE_OFF
    if campaign.event_at is None and campaign.kind == CampaignKind.ONE_OFF:
        forecast.notes.append("No event time yet: each step is forecast as if it went out now.")
    taken: Counter[CapKey] = Counter()  # cap slots this campaign's steps take
    known: list[Audience] = []  # what routing knows of the users: the same for every step
    steps = campaign.steps.filter(status=StepStatus.PENDING).order_by("offset_minutes", "pk")
    for step in steps:
        forecast.steps.append(
            _step_forecast(campaign, step, users, now=now, scale=scale, taken=taken, known=known)
        )
    return forecast


def _users(recipient_ids: list[int]) -> list[User]:
    """The users of these profiles, loaded as the fan-out's batch loads them."""
    if not recipient_ids:
        return []
    users, _ = readable(
        get_user_model()
        ._default_manager.filter(notifier_recipient__pk__in=recipient_ids, is_active=True)
        .select_related("notifier_recipient")
        .order_by("pk")
    )
    recipients_attach(users)
    return users


def _step_forecast(
    campaign: Campaign,
    step: CampaignStep,
    users: list[User],
    *,
    now: datetime,
    scale: float,
    taken: Counter[CapKey],
    known: list[Audience],
) -> StepForecast:
    plan = plan_of(step)
    moment = step_moment(campaign.event_at, plan) if campaign.event_at else None
    rows, held_out = recipients(step, campaign, users)
    by_id = {user.pk: user for user in users}
    expiry = step_expiry(campaign.event_at, plan) if campaign.event_at else None
    messages = []
    for index, row in enumerate(rows, start=1):
        # Routed at the moment it is due, as the release of a held message routes it then.
        due = row.not_before or moment or now
        message = as_message(row, index, max(due, now))
        message.not_before, message.user = None, by_id[row.user_id]
        messages.append(message)
    if not known and messages:
        known.append(audience_of(messages, now, congested=False))
    audience = known[0] if known else audience_of(messages, now, congested=False)
    tally: dict[str, Counter[str]] = defaultdict(Counter)
    quiet: Counter[str] = Counter()
    releases: Counter[str] = Counter()
    going: Counter[str] = Counter()
    not_tried: Counter[str] = Counter()
    columns: list[str] = []
    outcomes = [message_route(m, audience, m.created_at) for m in messages]
    used = _caps_used([o.admission for o in outcomes if o.admission is not None])
    for outcome in outcomes:
        message, admission = outcome.message, outcome.admission
        at = message.created_at
        if admission is not None and admission.pending is not None:
            admission = _cap_outcome(admission, used, taken, expiry)
        for channel in outcome.decisions:
            if channel not in columns:
                columns.append(channel)
        for channel, decision in outcome.decisions.items():
            if not decision.sends:
                tally[decision.reason or ""][channel] += 1
            elif admission is None:  # cannot happen: one channel sends
                continue
            elif admission.status == S.HELD and admission.reason == Reason.QUIET_HOURS:
                quiet[channel] += 1
            elif admission.status == S.QUEUED:
                going[channel] += 1
            else:
                tally[admission.reason][channel] += 1
        for left in outcome.chain_left:
            not_tried[left] += 1
            if left not in columns:
                columns.append(left)
        if admission is not None and admission.reason == Reason.QUIET_HOURS:
            hours = quiet_hours_of(message.user)
            ends = quiet_until(at, hours)
            if ends is not None:
                releases[ends.astimezone(hours.tz).strftime("%H:%M")] += 1
                _take(taken, message.user_id, windows_at(ends, hours.tz))
    ordered = sorted(columns, key=lambda c: list(Channel).index(Channel(c)))

    def scaled(counts: Counter[str]) -> dict[str, int]:
        return {c: round(counts[c] * scale) for c in ordered}

    forecast = StepForecast(
        step_id=step.pk,
        name=step.name,
        moment=moment,
        local_time=(
            (step.local_time.strftime("%H:%M") if step.local_time else "their usual hour")
            if plan.timing != Timing.OFFSET
            else ""
        ),
        channels=ordered,
        in_segment=round(len(users) * scale),
        held_out=round(len(held_out) * scale),
        rows=sorted(
            (ReasonRow(reason, scaled(counts)) for reason, counts in tally.items()),
            key=lambda r: (list(Stage).index(r.stage), r.reason),
        ),
        quiet=scaled(quiet),
        releases=[
            QuietRelease(local, round(count * scale)) for local, count in sorted(releases.items())
        ],
        not_tried=scaled(not_tried) if not_tried else {},
        going_out=scaled(going),
        passed=moment is not None and moment < now and plan.timing == Timing.OFFSET,
    )
    forecast.send_time = send_time(forecast.going_out, campaign_rate=campaign.send_rate_per_minute)
    return forecast


# --- Caps: what is already used, plus this campaign's own earlier steps ----------------------


def _caps_used(admissions: Iterable[Admission]) -> Counter[CapKey]:
    """(user, period, window start) -> slots used already, for these admissions' windows."""
    pending = [a.pending for a in admissions if a.pending is not None]
    if not pending:
        return Counter()
    rows = FrequencyCounter.objects.filter(
        user_id__in={p.request.user_id for p in pending},
        window_start__in={
            w for p in pending for w in (p.request.windows.day, p.request.windows.week)
        },
    ).values_list("user_id", "period", "window_start", "count")
    return Counter({(user, period, window): count for user, period, window, count in rows})


def _take(taken: Counter[CapKey], user_id: UserKey, windows: Windows) -> None:
    taken[(user_id, str(CapPeriod.DAY), windows.day)] += 1
    taken[(user_id, str(CapPeriod.WEEK), windows.week)] += 1


def _cap_outcome(
    admission: Admission,
    used: Counter[CapKey],
    taken: Counter[CapKey],
    expiry: datetime | None,
) -> Admission:
    """The cap's verdict as `settle_caps` gives it (the week first, then the day; over it,
    held until the next window, or stale when that is past the expiry), against the slots
    used already and those this campaign's earlier steps take."""
    assert admission.pending is not None
    request, at, tz = admission.pending.request, admission.pending.now, admission.pending.tz
    user, windows, caps = request.user_id, request.windows, request.caps

    def count(period: CapPeriod, window: date) -> int:
        key = (user, str(period), window)
        return used[key] + taken[key]

    full: CapPeriod | None = None
    if count(CapPeriod.WEEK, windows.week) >= caps.week:
        full = CapPeriod.WEEK
    elif count(CapPeriod.DAY, windows.day) >= caps.day:
        full = CapPeriod.DAY
    if full is None:
        _take(taken, user, windows)
        return Admission(S.QUEUED, admission.reason, cap=windows)
    until = next_window_start(at, tz, full)
    if expiry is not None and until >= expiry:
        return Admission(S.SUPPRESSED, Reason.STALE)
    return Admission(S.HELD, Reason.FREQUENCY_CAP, until)


# --- How long the send takes ------------------------------------------------------------------


def provider_rate_per_minute(channel: str) -> float | None:
    """The first provider's limit on a channel (NOTIFIER_RATE_LIMITS), a minute; None: none."""
    chain = providers_for(Channel(channel))
    if not chain:
        return None
    rate = rate_limits().get(f"{channel}:{chain[0].name}")
    return rate.per_second * 60 if rate is not None else None


def send_time(going_out: dict[str, int], *, campaign_rate: int | None) -> SendTime | None:
    """The longest of: everything at the campaign's own rate, and each channel at its
    provider's limit. None when no limit applies (as fast as the workers go)."""
    total = sum(going_out.values())
    if total == 0:
        return None
    candidates: list[SendTime] = []
    if campaign_rate:
        candidates.append(SendTime(total, float(campaign_rate), "this campaign's send rate"))
    for channel, count in going_out.items():
        per_minute = provider_rate_per_minute(channel)
        if per_minute and count:
            label = CHANNEL_NAMES.get(channel, channel)
            candidates.append(SendTime(count, per_minute, f"the {label} provider's limit"))
    return max(candidates, key=lambda c: c.minutes, default=None)
