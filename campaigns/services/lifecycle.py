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
from dataclasses import dataclass
from datetime import datetime
from functools import partial
from typing import Any

from django.conf import settings
from django.db import transaction
from django.db.models import F, QuerySet
from django.utils import timezone

from campaigns.models import (
    Campaign,
    CampaignKind,
    CampaignStatus,
    CampaignStep,
    FanoutBatch,
    StepStatus,
    StepVariant,
    VariantTemplate,
)
from campaigns.personas import persona_label, persona_problem
from campaigns.policies import DEFAULT_PLAN, StepPlan, Timing, fanout_start
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
from notifier.db import insert_rows
from notifier.models import Delivery, DeliveryEvent, EventKind, Kind, NotificationType, User
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


def _campaign_deliveries(campaign: Campaign, statuses: Sequence[str]) -> Any:
    return Delivery.objects.filter(message__campaign_id=campaign.pk, status__in=statuses)


def _log(ids: Sequence[int], status: str, reason: str, by: User | None, action: str) -> None:
    now = timezone.now()
    insert_rows(
        DeliveryEvent,
        ("delivery", "at", "kind", "status", "reason", "detail"),
        [
            (pk, now, EventKind.MANUAL, status, reason, {"action": action, "by": str(by or "")})
            for pk in ids
        ],
    )


def campaign_pause(*, campaign: Campaign, by: User | None, reason: str = "") -> int:
    """Stop sending now. Queued deliveries (batches already handed to workers too) are held;
    deliveries being sent this instant finish. Returns how many were held. `reason` is shown
    to the marketer (an automatic pause says why); resuming clears it."""
    with transaction.atomic():
        _move(campaign, C.PAUSED, pause_reason=reason[:300])
        queued = _campaign_deliveries(campaign, [S.QUEUED])
        ids = list(queued.values_list("pk", flat=True))
        Delivery.objects.filter(pk__in=ids, status=S.QUEUED).update(
            status=S.HELD,
            reason=Reason.CAMPAIGN_PAUSED,
            next_attempt_at=None,
            updated_at=timezone.now(),
        )
        _log(ids, S.HELD, Reason.CAMPAIGN_PAUSED, by, "campaign paused")
    return len(ids)


def campaign_resume(*, campaign: Campaign, by: User | None) -> int:
    """Carry on: held deliveries are released (stale ones are then suppressed, steps whose
    moment passed meanwhile are skipped), and unfinished fan-out walks the audience again
    (users who already have their message are skipped). Returns how many were released."""
    from campaigns.services.fanout import steps_skip_missed  # fanout imports this module

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
    from campaigns.services import fanout  # fanout imports this module

    walking = list(campaign.steps.filter(status=StepStatus.RUNNING).values_list("pk", flat=True))
    walks_start_over(step_ids=walking, now=now)
    for step_id in walking:
        transaction.on_commit(partial(fanout.publish_walk, step_id), robust=True)


def campaign_cancel(*, campaign: Campaign, by: User | None) -> int:
    """Stop for good: pending steps are cancelled, queued and held deliveries cancelled."""
    now = timezone.now()
    with transaction.atomic():
        _move(campaign, C.CANCELLED, finished_at=now)
        campaign.steps.filter(status__in=[StepStatus.PENDING, StepStatus.RUNNING]).update(
            status=StepStatus.CANCELLED, finished_at=now
        )
        waiting = _campaign_deliveries(campaign, [S.QUEUED, S.HELD, S.PENDING])
        ids = list(waiting.values_list("pk", flat=True))
        Delivery.objects.filter(pk__in=ids, status__in=[S.QUEUED, S.HELD, S.PENDING]).update(
            status=S.CANCELLED, reason=Reason.CANCELLED, finished_at=now, updated_at=now
        )
        _log(ids, S.CANCELLED, Reason.CANCELLED, by, "campaign cancelled")
    return len(ids)


def campaign_move_event(*, campaign: Campaign, event_at: datetime, by: User | None) -> None:
    """Move the event: every pending step moves with it (steps are offsets from the event).
    Steps already sent or sending stay as they were."""
    if campaign.status in (C.DONE, C.CANCELLED):
        raise CampaignError("a finished or cancelled campaign cannot move")
    if timezone.is_naive(event_at):
        raise CampaignError("give the event time with its time zone")
    if event_at <= timezone.now():
        raise CampaignError("the new event time is in the past")
    Campaign.objects.filter(pk=campaign.pk).update(event_at=event_at, updated_at=timezone.now())
    campaign.event_at = event_at


def walk_again(now: datetime) -> dict[str, Any]:
    """The update that starts a step's walk over from the first user, as a new round: the
    batches of earlier rounds (queued while paused) no longer count, so the step closes once
    every batch of this round is written (see walks_start_over, which drops their rows)."""
    return {
        "cursor_user_id": 0,
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
