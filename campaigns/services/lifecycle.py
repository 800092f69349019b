"""A campaign's life: draft -> awaiting approval -> scheduled -> running -> done, plus paused
and cancelled. Every move is a compare-and-set on the status, so two people clicking at once
move it once; pausing and cancelling also stop what is already queued.

Approval covers the campaign's definition (campaigns.services.definitions), recorded when a
lead approves. Its copy is tried (trial renders, campaigns.rendering) before the campaign's row
is locked, on the very definition approved: under the lock only its digest is compared. A live
campaign whose definition no longer matches goes back to awaiting approval
(`campaign_back_for_approval`), remembering whether it was scheduled, running or paused;
approving the change returns it there. Nothing more starts meanwhile; what was sent stays sent.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from functools import partial
from typing import Any
from zoneinfo import ZoneInfo

from django.conf import settings
from django.db import connection, transaction
from django.db.models import F, QuerySet
from django.utils import timezone

from campaigns import dispatch as campaign_dispatch
from campaigns.models import (
    Campaign,
    CampaignKind,
    CampaignStatus,
    CampaignStep,
    FanoutBatch,
    SeriesStop,
    StepStatus,
    StepVariant,
    VariantTemplate,
)
from campaigns.personas import persona_label, persona_problem
from campaigns.policies import (
    DEFAULT_PLAN,
    StepDecision,
    StepPlan,
    Timing,
    fanout_start,
    send_time,
    step_decision,
    step_expiry,
    step_moment,
)
from campaigns.rendering import (
    EVERYONE,
    PART_FIELDS,
    TimeBudget,
    allowed_variables,
    copy_problems,
    required_parts,
)
from campaigns.services.definitions import (
    Change,
    Definition,
    approval_changes,
    campaign_definition,
    change_reason,
    copy_key_of,
    definition_digest,
)
from campaigns.services.segments import segment_count
from channels.base import Channel
from notifier.db import table_name
from notifier.models import (
    Delivery,
    EventKind,
    Kind,
    Message,
    NotificationType,
    Recipient,
    User,
)
from notifier.services.transitions import deliveries_move, deliveries_move_joined
from notifier.status import DeliveryStatus, Reason

C = CampaignStatus
S = DeliveryStatus

MOVES: dict[str, frozenset[str]] = {
    C.DRAFT: frozenset({C.AWAITING_APPROVAL, C.CANCELLED}),
    # Approving a change to a live campaign returns it to where it was (status_before_review).
    C.AWAITING_APPROVAL: frozenset({C.DRAFT, C.SCHEDULED, C.RUNNING, C.PAUSED, C.CANCELLED}),
    C.SCHEDULED: frozenset({C.RUNNING, C.PAUSED, C.CANCELLED, C.DRAFT, C.AWAITING_APPROVAL}),
    C.RUNNING: frozenset({C.PAUSED, C.DONE, C.CANCELLED, C.AWAITING_APPROVAL}),
    C.PAUSED: frozenset({C.SCHEDULED, C.RUNNING, C.CANCELLED, C.AWAITING_APPROVAL}),
    C.DONE: frozenset(),
    C.CANCELLED: frozenset(),
}
# Approved and not finished: what its approval covers must still hold.
LIVE = frozenset({C.SCHEDULED, C.RUNNING, C.PAUSED})


class CampaignError(ValueError):
    """A campaign action that cannot be done; the message says why and what to do."""


def sources_of(target: str) -> list[str]:
    return [source for source, targets in MOVES.items() if target in targets]


def _move(campaign: Campaign, to: str, **fields: Any) -> None:
    campaign.refresh_from_db(fields=["status"])  # act on what it is now, not on a stale copy
    if to not in MOVES[campaign.status]:
        raise CampaignError(
            f"a {campaign.get_status_display().lower()} campaign cannot become "
            f"{C(to).label.lower()}"
        )
    moved = Campaign.objects.filter(pk=campaign.pk, status=campaign.status).update(
        status=to, updated_at=timezone.now(), **fields
    )
    if not moved:
        raise CampaignError("someone else changed this campaign's status a moment ago; reload")
    campaign.refresh_from_db()


# --- Creating ------------------------------------------------------------------------------


def campaign_create(
    *,
    name: str,
    category: NotificationType,
    created_by: User | None,
    segment: Any = None,
    event_at: datetime | None = None,
    kind: str = CampaignKind.ONE_OFF,
    priority: str = "low",
    channels: Sequence[str] = (),
    variables: dict[str, Any] | None = None,
    holdout_percent: int = 0,
    plan: Sequence[tuple[str, int]] = DEFAULT_PLAN,
    stop_series_on: str = SeriesStop.CONVERTED,
) -> Campaign:
    """A draft with the 3-2-1 plan (or `plan`), one variant "A" per step, ready for copy."""
    if category.kind != Kind.MARKETING:
        raise CampaignError(f"{category.key} is not a marketing type; campaigns send marketing")
    with transaction.atomic():
        campaign = Campaign.objects.create(
            name=name,
            category=category,
            segment=segment,
            event_at=event_at,
            kind=kind,
            priority=priority,
            channels=list(channels),
            variables=variables or {},
            holdout_percent=holdout_percent,
            stop_series_on=stop_series_on,
            created_by=created_by,
        )
        for step_name, offset in plan if kind == CampaignKind.ONE_OFF else plan[:1]:
            step = CampaignStep.objects.create(
                campaign=campaign, name=step_name, offset_minutes=offset
            )
            StepVariant.objects.create(step=step, name="A")
    return campaign


def campaign_channels(campaign: Campaign) -> list[Channel]:
    """The channels its messages can use: its own list, else everything its type uses."""
    names = campaign.channels or (campaign.category.channels if campaign.category else [])
    return [Channel(name) for name in names]


def campaign_problems(
    campaign: Campaign,
    *,
    now: datetime | None = None,
    definition: Definition | None = None,
    budget: TimeBudget | None = None,
) -> list[str]:
    """Everything that stops a campaign from being submitted or approved, in words: its
    settings and steps, and its copy as `definition` holds it (read now when not given), tried
    within `budget` (one of NOTIFIER_COPY_CHECK_BUDGET_S when not given)."""
    definition = definition or campaign_definition(campaign.pk, members=False)
    return setup_problems(campaign, now=now) + definition_copy_problems(
        definition,
        campaign_channels(campaign),
        budget or TimeBudget(settings.NOTIFIER_COPY_CHECK_BUDGET_S),
    )


def setup_problems(campaign: Campaign, *, now: datetime | None = None) -> list[str]:
    """What stops a campaign besides its copy: category, segment, event time, steps and their
    moments, variants. A few queries, no rendering: approval checks them again under the lock."""
    now = now or timezone.now()
    problems: list[str] = []
    if campaign.category is None:
        problems.append("choose a marketing category")
    if campaign.segment_id is None:
        problems.append("choose a segment")
    if campaign.kind == CampaignKind.ONE_OFF and campaign.event_at is None:
        problems.append("set the event time")
    steps = list(campaign.steps.prefetch_related("variants"))
    if not steps:
        problems.append("add at least one step")
    for step in steps:
        if (
            campaign.kind == CampaignKind.ONE_OFF
            and campaign.event_at is not None
            and step.status == StepStatus.PENDING
            # A live campaign back for approval keeps its clock: beat skips a step whose
            # moment passed meanwhile, with the reason, rather than blocking the approval.
            and not campaign.status_before_review
            and fanout_start(campaign.event_at, plan_of(step)) < now
        ):
            problems.append(f"step {step.name!r}: its moment has already passed")
        if not step.variants.all():
            problems.append(f"step {step.name!r}: add a variant")
    return problems


def definition_copy_problems(
    definition: Definition, channels: Sequence[Channel], budget: TimeBudget
) -> list[str]:
    """What stops the copy of every variant of a definition from going out, tried with the
    campaign's own values."""
    variables = definition["campaign"]["variables"] or {}
    allowed = allowed_variables(variables)
    problems: list[str] = []
    for step in definition["steps"].values():
        for variant in step["variants"].values():
            copy = {copy_key_of(key): parts for key, parts in variant["copy"].items()}
            problems += [
                f"step {step['name']!r}, variant {variant['name']}: {problem}"
                for problem in variant_problems(copy, channels, allowed, variables, budget=budget)
            ]
    return problems


# (channel, locale, persona) -> part -> source
Copy = Mapping[tuple[str, str, str], Mapping[str, str]]


def variant_copy(variant: StepVariant) -> dict[tuple[str, str, str], dict[str, str]]:
    """A variant's copy as `variant_problems` reads it."""
    return {
        (row.channel, row.locale, row.persona): {part: getattr(row, part) for part in PART_FIELDS}
        for row in variant.templates.all()
    }


def locale_problem(locales: int) -> str | None:
    limit = settings.NOTIFIER_COPY_MAX_LOCALES
    if locales <= limit:
        return None
    return (
        f"it has copy for {locales} locales; a variant may have at most {limit} "
        "(the default included): remove some"
    )


def variant_problems(
    copy: Copy,
    channels: Sequence[Channel],
    allowed: frozenset[str],
    variables: Mapping[str, Any] | None = None,
    *,
    budget: TimeBudget | None = None,
) -> list[str]:
    """What stops a variant's copy (`variant_copy`) from going out; `variables` (the campaign's
    values) make the trial render of each channel's copy realistic. Copy for more locales than
    NOTIFIER_COPY_MAX_LOCALES is refused as such, without trying any of it. Copy for one
    persona stands in for the copy for everyone for those customers: it needs the same parts,
    and one variant's personas are spend tiers or activity states, not both."""
    problems: list[str] = []
    for channel in channels:
        default = copy.get((str(channel), "", EVERYONE))
        if default is None:
            problems.append(f"write the {channel} copy")
            continue
        for part in required_parts(channel):
            if not default.get(part):
                problems.append(f"{channel}: the {part} is empty")
    too_many = locale_problem(len({key[1] for key in copy}))
    if too_many is not None:
        return [*problems, too_many]
    mixed = persona_problem({key[2] for key in copy})
    if mixed is not None:
        return [*problems, mixed]
    for (channel_name, locale, persona), parts in copy.items():
        where = " ".join(
            [channel_name]
            + ([locale] if locale else [])
            + ([f"({persona_label(persona)})"] if persona else [])
        )
        if persona and channel_name in {str(known) for known in Channel}:
            problems += [
                f"{where}: the {part} is empty"
                for part in required_parts(Channel(channel_name))
                if not parts.get(part)
            ]
        found = copy_problems(
            parts, allowed=allowed, variables=variables, budget=budget, persona=persona
        )
        problems += [
            f"{where} {part}: {problem}" for part in parts for problem in found.get(part, ())
        ]
    return problems


def plan_of(step: CampaignStep) -> StepPlan:
    return StepPlan(step.offset_minutes, Timing(step.timing), step.local_time)


# --- Approval --------------------------------------------------------------------------------


def campaign_submit(*, campaign: Campaign, by: User) -> None:
    problems = campaign_problems(campaign)
    if problems:
        raise CampaignError("before submitting: " + "; ".join(problems))
    _move(campaign, C.AWAITING_APPROVAL)


CHANGED_WHILE_REVIEWED = (
    "it changed while you were reviewing it: reload the page to see what changed, then approve"
)


def campaign_approve(*, campaign: Campaign, by: User, seen: str | None = None) -> None:
    """Approval by a second person holding `campaigns.approve_campaign`. It records what it
    covers (the definition and the audience count now); `seen` is the digest of the definition
    the approver was shown, and approval refuses one that changed since.

    The copy is tried before the row is locked (trial renders take time, and the lock holds
    every admin save and re-check of this campaign meanwhile), on the definition read for it;
    under the lock the definition is read again and approved only when its digest is the one
    tried, so what is approved is what was tried."""
    if not by.has_perm("campaigns.approve_campaign"):
        raise CampaignError(
            "approving campaigns needs the 'approve campaign' permission (the Marketing lead group)"
        )
    if campaign.created_by_id is not None and by.pk == campaign.created_by_id:
        raise CampaignError("a campaign must be approved by someone other than who prepared it")
    if seen == "":  # from the admin, but not from the page: the lead saw nothing
        raise CampaignError("approve from the campaign's page, which shows what you are approving")
    campaign.refresh_from_db()
    tried = campaign_definition(campaign.pk)
    if seen is not None and seen != definition_digest(tried):
        raise CampaignError(CHANGED_WHILE_REVIEWED)
    problems = campaign_problems(campaign, definition=tried)
    if problems:
        raise CampaignError("cannot approve: " + "; ".join(problems))
    with transaction.atomic():
        # The row lock orders approval with admin saves and re-checks of the same campaign.
        locked = (
            Campaign.objects.select_for_update(of=("self",))
            .select_related("segment", "category")
            .get(pk=campaign.pk)
        )
        problems = setup_problems(locked)  # the event time is not in the definition
        if problems:
            raise CampaignError("cannot approve: " + "; ".join(problems))
        definition = campaign_definition(locked.pk)
        if definition_digest(definition) != definition_digest(tried):
            raise CampaignError(
                CHANGED_WHILE_REVIEWED
                if seen is not None
                else "it changed while it was being checked: approve it again"
            )
        target = locked.status_before_review or C.SCHEDULED
        _move(
            locked,
            target,
            approved_by=by,
            approved_at=timezone.now(),
            approved_definition=definition,
            approved_audience=_audience_now(locked),
            review_reason="",
            status_before_review="",
        )
        if target == C.RUNNING:  # its walks stopped when it went back for approval
            _walks_restart(locked, timezone.now())
            campaign_finish_if_done(campaign_id=locked.pk)  # its last steps may have passed
    campaign.refresh_from_db()


def _audience_now(campaign: Campaign) -> int | None:
    if campaign.segment is None:
        return None
    try:
        return segment_count(campaign.segment)
    except ValueError:  # a rule value that no longer exists; campaign_problems names it
        return None


def campaign_send_back(*, campaign: Campaign, by: User) -> None:
    """Back to draft for changes (from awaiting approval or scheduled, before it runs)."""
    campaign.refresh_from_db(fields=["started_at"])
    if campaign.started_at is not None:
        raise CampaignError(
            "it has started, so it cannot become a draft again: approve the change or cancel it"
        )
    _move(
        campaign,
        C.DRAFT,
        approved_by=None,
        approved_at=None,
        review_reason="",
        status_before_review="",
    )


def campaign_back_for_approval(*, campaign: Campaign, changes: Sequence[Change]) -> bool:
    """A live campaign whose definition no longer matches its approval goes back to awaiting
    approval, with the reason in words; nothing more of it starts until a lead approves the
    change (walks and queued batches stop at their next status check). Returns False when it
    was not live (already back, or finished): one statement, safe to race."""
    moved = Campaign.objects.filter(pk=campaign.pk, status__in=LIVE).update(
        status_before_review=F("status"),  # the old value: SET uses the row as it was
        status=C.AWAITING_APPROVAL,
        review_reason=change_reason(changes),
        updated_at=timezone.now(),
    )
    campaign.refresh_from_db()
    return bool(moved)


@dataclass(frozen=True)
class SentBack:
    campaign: Campaign
    reason: str


def campaigns_recheck(*, campaigns: QuerySet[Campaign] | None = None) -> list[SentBack]:
    """Send back for approval every live campaign (of `campaigns`, or all) that no longer
    matches its approval. The admin calls it in the transaction of each change that can touch a
    definition (a segment, its list, the thresholds), so the change and the send-back commit
    together; beat's checks before each step catch changes made any other way."""
    sent: list[SentBack] = []
    with transaction.atomic():
        live = (campaigns if campaigns is not None else Campaign.objects.all()).filter(
            status__in=LIVE
        )
        for campaign in live.select_for_update().order_by("pk"):
            changes = approval_changes(campaign)
            if changes and campaign_back_for_approval(campaign=campaign, changes=changes):
                sent.append(SentBack(campaign=campaign, reason=campaign.review_reason))
    return sent


# --- Pausing, resuming, cancelling, moving the event -----------------------------------------


# Not sent yet, and not being sent: what pausing, cancelling or moving the event can still stop.
UNSENT = (S.PENDING, S.HELD, S.QUEUED)


def _campaign_deliveries(campaign: Campaign, statuses: Sequence[str]) -> Any:
    return Delivery.objects.filter(message__campaign_id=campaign.pk, status__in=statuses)


def campaign_pause(*, campaign: Campaign, by: User | None, reason: str = "") -> int:
    """Stop sending now. Queued deliveries (batches already handed to workers too) are held;
    deliveries being sent this instant finish. Returns how many were held. `reason` is shown
    to the marketer (an automatic pause says why); resuming clears it."""
    with transaction.atomic():
        _move(campaign, C.PAUSED, pause_reason=reason[:300])
        queued = _campaign_deliveries(campaign, [S.QUEUED])
        held = deliveries_move(
            list(queued.values_list("pk", flat=True)),
            sources=[S.QUEUED],
            to=S.HELD,
            kind=EventKind.MANUAL,
            at=timezone.now(),
            reason=Reason.CAMPAIGN_PAUSED,
            detail={"action": "campaign paused", "by": str(by or "")},
            next_attempt_at=None,
        )
    return len(held)


def skip_reason(now: datetime, start_at: datetime, status: str) -> str:
    late = now - start_at
    minutes = int(late.total_seconds() // 60)
    whys: dict[str, str] = {
        C.PAUSED: "the campaign was paused",
        C.AWAITING_APPROVAL: "the campaign was waiting for a lead to approve a change",
    }
    why = whys.get(status, "it could not start in time")
    return f"missed by {minutes} min: {why}; not sent late"


def steps_skip_missed(*, campaign: Campaign, now: datetime) -> list[int]:
    """Skip the campaign's pending steps whose moment passed while it was stopped (paused, or
    back for approval), saying so, before it carries on: once it is live again, beat could no
    longer tell why they were missed. Returns the steps skipped."""
    if campaign.kind != CampaignKind.ONE_OFF or campaign.event_at is None:
        return []
    skipped = []
    for step in campaign.steps.filter(status=StepStatus.PENDING):
        start_at = fanout_start(campaign.event_at, plan_of(step))
        if step_decision(now=now, start_at=start_at) is StepDecision.SKIP:
            CampaignStep.objects.filter(pk=step.pk, status=StepStatus.PENDING).update(
                status=StepStatus.SKIPPED,
                finished_at=now,
                skip_reason=skip_reason(now, start_at, campaign.status),
            )
            skipped.append(step.pk)
    return skipped


def campaign_resume(*, campaign: Campaign, by: User | None) -> int:
    """Carry on: held deliveries are released (stale ones are then suppressed, steps whose
    moment passed meanwhile are skipped), and unfinished fan-out walks the audience again
    (users who already have their message are skipped). Returns how many were released."""
    now = timezone.now()
    with transaction.atomic():
        steps_skip_missed(campaign=campaign, now=now)  # while it still says it was paused
        _move(campaign, C.RUNNING if campaign.started_at else C.SCHEDULED, pause_reason="")
        released = Delivery.objects.filter(
            message__campaign_id=campaign.pk,
            status=S.HELD,
            reason=Reason.CAMPAIGN_PAUSED,
        ).update(next_attempt_at=now, updated_at=now)
        _walks_restart(campaign, now)
    return released


def _walks_restart(campaign: Campaign, now: datetime) -> None:
    """Start the walks of its sending steps again, after they stopped (paused, or back for
    approval). walked_at is "now" so that, should this publish be lost, beat revives the walk
    once it is stale (NULL never is)."""
    walking = list(campaign.steps.filter(status=StepStatus.RUNNING).values_list("pk", flat=True))
    walks_start_over(step_ids=walking, now=now)
    for step_id in walking:
        transaction.on_commit(partial(campaign_dispatch.publish_walk, step_id), robust=True)


def campaign_cancel(*, campaign: Campaign, by: User | None) -> int:
    """Stop for good: pending steps are cancelled, queued and held deliveries cancelled."""
    now = timezone.now()
    with transaction.atomic():
        _move(campaign, C.CANCELLED, finished_at=now)
        campaign.steps.filter(status__in=[StepStatus.PENDING, StepStatus.RUNNING]).update(
            status=StepStatus.CANCELLED, finished_at=now
        )
        waiting = _campaign_deliveries(campaign, UNSENT)
        cancelled = deliveries_move(
            list(waiting.values_list("pk", flat=True)),
            sources=UNSENT,
            to=S.CANCELLED,
            kind=EventKind.MANUAL,
            at=now,
            reason=Reason.CANCELLED,
            detail={"action": "campaign cancelled", "by": str(by or "")},
            finished_at=now,
        )
    return len(cancelled)


@dataclass
class MoveReport:
    """What moving the event did to what was not yet sent."""

    moved: int = 0  # messages whose time and expiry moved with the event
    cancelled: int = 0  # deliveries cancelled: their step no longer fits the new event
    skipped_steps: list[int] = field(default_factory=list)  # pending steps whose moment passed


# Why a message of a step that had fanned out is cancelled when the event moves (support reads
# these on the timeline, in the event's detail; the reason is event_moved).
MOVE_WHY = {
    "stale": "the event moved earlier: this step's message would now go out too late",
    "after": "the event moved: this step's time is now at or after the event",
    "passed": "the event moved earlier: this step's time for this customer has already passed",
}


def campaign_move_event(*, campaign: Campaign, event_at: datetime, by: User | None) -> MoveReport:
    """Move the event: everything not yet sent moves with it (steps are offsets from the event).

    Pending steps simply start at their new moment; one whose moment has already passed is
    skipped with the reason. Steps that fanned out already have messages waiting (held for
    the user's local time or active hour, quiet hours or caps, or queued): each moves to its
    step's new time for its user (`send_time`) with the step's new expiry, or is cancelled with
    the reason where it no longer fits: its new time is at or after the event, or has passed
    while it was still waiting for its old one, or the event moved so early that it is stale.
    What was sent or is being sent stays as it was. Set-based: a step's million messages are
    a few statements, grouped by the users' (time zone, active hour)."""
    if timezone.is_naive(event_at):
        raise CampaignError("give the event time with its time zone")
    now = timezone.now()
    if event_at <= now:
        raise CampaignError("the new event time is in the past")
    report = MoveReport()
    with transaction.atomic():
        locked = Campaign.objects.select_for_update(of=("self",)).get(pk=campaign.pk)
        if locked.status in (C.DONE, C.CANCELLED):
            raise CampaignError("a finished or cancelled campaign cannot move")
        Campaign.objects.filter(pk=locked.pk).update(event_at=event_at, updated_at=now)
        for step in CampaignStep.objects.filter(campaign_id=locked.pk).order_by("pk"):
            plan = plan_of(step)
            if step.status == StepStatus.PENDING:
                start_at = fanout_start(event_at, plan)
                if step_decision(now=now, start_at=start_at) is StepDecision.SKIP:
                    CampaignStep.objects.filter(pk=step.pk, status=StepStatus.PENDING).update(
                        status=StepStatus.SKIPPED,
                        finished_at=now,
                        skip_reason=(
                            f"the event moved to {event_at:%Y-%m-%d %H:%M %Z}: this step's "
                            f"moment ({fanout_start(event_at, plan):%Y-%m-%d %H:%M %Z}) had "
                            "already passed; not sent"
                        )[:200],
                    )
                    report.skipped_steps.append(step.pk)
            elif step.status in (StepStatus.RUNNING, StepStatus.DONE):
                cancelled, moved = _step_messages_move(step, event_at, now, by)
                report.cancelled += cancelled
                report.moved += moved
    campaign.refresh_from_db()
    return report


def _step_messages_move(
    step: CampaignStep, event_at: datetime, now: datetime, by: User | None
) -> tuple[int, int]:
    """Move (or cancel) the step's messages not yet sent; returns (cancelled, moved)."""
    plan = plan_of(step)
    expiry = step_expiry(event_at, plan)
    message, delivery = table_name(Message), table_name(Delivery)
    profiles = table_name(Recipient)
    unsent = (
        Message.objects.filter(step_id=step.pk, is_test=False, deliveries__status__in=UNSENT)
        .values_list(
            "user__notifier_recipient__time_zone", "user__notifier_recipient__usual_active_hour"
        )
        .distinct()
    )
    # Each (time zone, active hour) of the users waiting: the step's new time for them.
    times: list[Any] = []
    for tz, hour in unsent:
        moment = send_time(event_at, plan, tz=ZoneInfo(tz or "UTC"), active_hour=hour)
        times += [tz, hour, moment or step_moment(event_at, plan)]
    if not times:
        return 0, 0
    values = ", ".join(["(%s, %s::integer, %s::timestamptz)"] * (len(times) // 3))
    matched = f"""
        WITH v (tz, hour, step_time) AS (VALUES {values})
        SELECT m.id, m.not_before, v.step_time
        FROM {message} AS m
        LEFT JOIN {profiles} AS u ON u.user_id = m.user_id
        JOIN v ON u.time_zone IS NOT DISTINCT FROM v.tz
              AND u.usual_active_hour IS NOT DISTINCT FROM v.hour
        WHERE m.step_id = %s AND NOT m.is_test AND EXISTS (
            SELECT 1 FROM {delivery} AS d WHERE d.message_id = m.id AND d.status = ANY(%s)
        )
    """
    base = [*times, step.pk, list(UNSENT)]
    who = {"action": "event moved", "by": str(by or ""), "event_at": event_at.isoformat()}
    doomed = f"""
        target AS ({matched}),
        doomed AS (
            SELECT id, step_time, CASE
                WHEN %s::timestamptz <= %s THEN %s
                WHEN step_time >= %s THEN %s
                ELSE %s END AS why
            FROM target
            WHERE %s::timestamptz <= %s OR step_time >= %s
               OR (step_time <= %s AND not_before > %s)
        )
    """
    doomed_params = [
        *base,
        expiry,
        now,
        MOVE_WHY["stale"],
        expiry,
        MOVE_WHY["after"],
        MOVE_WHY["passed"],
        expiry,
        now,
        expiry,
        now,
        now,
    ]
    cancelled = deliveries_move_joined(
        ctes=doomed,
        params=doomed_params,
        source="doomed",
        sources=UNSENT,
        to=S.CANCELLED,
        reason=Reason.EVENT_MOVED,
        kind=EventKind.MANUAL,
        at=now,
        detail=who,
        also_set=", finished_at = %s, next_attempt_at = NULL",
        also_set_params=[now],
        returning=", doomed.why, doomed.step_time",
        event_detail="'why', why, 'step_time', step_time",
    )
    # Messages of the cancelled deliveries have nothing unsent left, so they fall out of
    # `matched`; the rest move: not before the step's new time (when still ahead), new expiry.
    # Deliveries held or queued move to held until then, except those held for a pause, which
    # resuming releases (and admission then holds until the message's new time).
    with connection.cursor() as cursor:
        cursor.execute(f"WITH target AS ({matched}) SELECT count(*) FROM target", base)
        row = cursor.fetchone()
    moving = f"""
        target AS ({matched}),
        moving AS (
            UPDATE {message} AS m
            SET expires_at = %s,
                not_before = CASE WHEN t.step_time > %s THEN t.step_time ELSE m.not_before END
            FROM target AS t WHERE m.id = t.id
            RETURNING m.id, m.not_before, t.step_time > %s AS ahead
        )
    """
    deliveries_move_joined(
        ctes=moving,
        params=[*base, expiry, now, now],
        source="moving",
        sources=[S.QUEUED, S.HELD],
        to=S.HELD,
        reason=Reason.SCHEDULED,
        kind=EventKind.MANUAL,
        at=now,
        detail=who,
        also_set=", next_attempt_at = moving.not_before",
        where=" AND moving.ahead AND NOT (d.status = %s AND d.reason = %s)",
        where_params=[S.HELD, Reason.CAMPAIGN_PAUSED],
        returning=", d.next_attempt_at",
        event_detail="'until', next_attempt_at, 'expires_at', %s::timestamptz",
        event_detail_params=[expiry],
    )
    return cancelled, int(row[0]) if row else 0


def walk_again(now: datetime) -> dict[str, Any]:
    """The update that starts a step's walk over from the first recipient, as a new round: the
    batches of earlier rounds (queued while paused) no longer count, so the step closes once
    every batch of this round is written (see walks_start_over, which drops their rows)."""
    return {
        "cursor_recipient_id": 0,
        "walk_done": False,
        "walked_at": now,
        "walk_round": F("walk_round") + 1,
        "batches_total": 0,
        "batches_done": 0,
    }


def walks_start_over(*, step_ids: Sequence[int], now: datetime, **also: Any) -> None:
    """Start these steps' walks over as a new round (with `also` in the same update); the
    batches recorded for earlier rounds are dropped with it: they no longer count."""
    FanoutBatch.objects.filter(step_id__in=step_ids).delete()
    CampaignStep.objects.filter(pk__in=step_ids).update(**walk_again(now), **also)


def campaign_finish_if_done(*, campaign_id: int) -> bool:
    """A one-off campaign is done when none of its steps is pending or sending any more."""
    open_steps = CampaignStep.objects.filter(
        campaign_id=campaign_id, status__in=[StepStatus.PENDING, StepStatus.RUNNING]
    )
    if open_steps.exists():
        return False
    return bool(
        Campaign.objects.filter(
            pk=campaign_id,
            status=C.RUNNING,
            kind=CampaignKind.ONE_OFF,
        ).update(status=C.DONE, finished_at=timezone.now())
    )


def copy_variant(*, source: StepVariant, name: str) -> StepVariant:
    """A new variant of the same step starting from an existing one's copy (for A/B)."""
    with transaction.atomic():
        variant = StepVariant.objects.create(step=source.step, name=name, weight=source.weight)
        VariantTemplate.objects.bulk_create(
            [
                VariantTemplate(
                    variant=variant,
                    channel=t.channel,
                    locale=t.locale,
                    persona=t.persona,
                    subject=t.subject,
                    title=t.title,
                    body=t.body,
                    html=t.html,
                    link=t.link,
                )
                for t in source.templates.all()
            ]
        )
    return variant
