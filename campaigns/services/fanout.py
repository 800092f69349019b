"""Fan-out: starting due steps, walking the audience, and writing each batch of recipients.

- `steps_start_due` (beat): starts each pending step whose moment has come, exactly once (the
  step row is locked with skip_locked and moved pending -> running), and skips with a reason a
  step whose moment passed while the campaign was paused or late. It also revives walks whose
  task was lost and finishes steps and campaigns that are done.
- `step_walk`: hands the audience out in keyset batches of recipient profile ids (never
  loading it whole; the profile's integer id works whatever the user model's key is),
  while the bulk queues are below their high-water mark; it records its cursor and each batch
  (`FanoutBatch`) in PostgreSQL, one transaction per batch, and publishes a batch only once
  that commits, so a lost walk resumes where it was and a batch whose transaction died was
  published to no one. The step row is locked only to record a batch, not while the audience
  is read, so batches finishing meanwhile count themselves without waiting.
- `step_fanout_batch`: for one batch, keeps the hold-out aside, picks each user's variant,
  routes and renders the messages in memory, and writes messages, deliveries and their events
  by COPY in one transaction (`messages_write_routed`: idempotent per step x user). Its runs
  are counted (`FanoutAttempt`): a batch whose last run died, or ran out of time rendering,
  hands each message to the pipeline's own prepare task instead of dying again whole, where
  the one that kills its worker is set aside (notifier.services.quarantine). The first run
  to write a batch marks its `FanoutBatch` done and counts it; a copy counts nothing.

A step closes only when its walk is over and every batch of its round is marked done: a batch
published and lost (a broker wiped, a worker killed) is never assumed written; beat publishes
it again once the step has gone quiet.

Each of them first checks that the campaign still matches what a lead approved (its segment
and list, the thresholds, settings, steps and copy: campaigns.services.definitions), however
it was changed, admin or not: a step of a campaign that no longer matches does not start, its
walk stops, a queued batch writes nothing, and the campaign goes back for approval with the
reason on its page. The batch leaves out the member list's digest, which the walk checked.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from enum import StrEnum
from functools import partial
from zoneinfo import ZoneInfo

from django.conf import settings
from django.contrib.auth import get_user_model
from django.db import connection, transaction
from django.db.models import Exists, F, OuterRef, Q
from django.utils import timezone

from campaigns import dispatch as campaign_dispatch
from campaigns.models import (
    Campaign,
    CampaignKind,
    CampaignStatus,
    CampaignStep,
    FanoutAttempt,
    FanoutBatch,
    Holdout,
    StepStatus,
)
from campaigns.policies import (
    StepDecision,
    fanout_start,
    in_holdout,
    send_time,
    step_decision,
    step_expiry,
    variant_picker,
)
from campaigns.rendering import variant_cache_clear
from campaigns.services.definitions import approval_changes
from campaigns.services.lifecycle import (
    campaign_back_for_approval,
    campaign_finish_if_done,
    plan_of,
    skip_reason,
    walks_start_over,
)
from campaigns.services.segments import recipients_active, segment_walk
from campaigns.services.triggers import (
    entry_key,
    trigger_audience,
    trigger_entries_due,
    trigger_entries_update,
)
from notifier.backpressure import bulk_congested
from notifier.db import any_of, insert_rows, readable, table_name
from notifier.models import (
    Recipient,
    User,
    recipient_for,
    recipients_attach,
    recipients_backfill,
)
from notifier.queues import Lane
from notifier.selectors import recipient_unreadable_reason
from notifier.services.messages import NewMessage
from notifier.services.pipeline import (
    Failure,
    RenderTimedOut,
    bulk_statistics_refresh,
    messages_write_routed,
)
from notifier.services.quarantine import messages_prepare_one_by_one
from notifier.status import Reason
from notifier.user_keys import UserKey

log = logging.getLogger(__name__)
C = CampaignStatus

BATCH_USERS = settings.NOTIFIER_CAMPAIGN_BATCH_USERS
BATCHES_PER_WALK = 20
WALK_STALE = timedelta(minutes=2)  # a walk not heard from this long has lost its task
CONGESTED_WAIT_S = 5.0


@dataclass
class StartReport:
    started: list[int] = field(default_factory=list)
    skipped: list[int] = field(default_factory=list)
    revived: list[int] = field(default_factory=list)
    finished: list[int] = field(default_factory=list)
    sent_back: list[int] = field(default_factory=list)  # campaigns back for approval


def still_approved(campaign: Campaign, *, members: bool = True) -> bool:
    """Whether the campaign matches its approval; if not, it goes back for approval now."""
    changes = approval_changes(campaign, members=members)
    if not changes:
        return True
    if campaign_back_for_approval(campaign=campaign, changes=changes):
        log.warning("campaign %s goes back for approval: %s", campaign.pk, campaign.review_reason)
    return False


# The approval this process last rendered each campaign's copy for (campaign id -> approved_at).
_rendered_approval: dict[int, datetime | None] = {}


def _render_what_was_approved(campaign: Campaign) -> None:
    """Compiled copy is cached per process for half a minute (campaigns.rendering): the first
    batch of this process under an approval (a campaign's first, or a change a lead approved)
    compiles its copy afresh, so it renders what that approval covered."""
    if campaign.pk not in _rendered_approval or (
        _rendered_approval[campaign.pk] != campaign.approved_at
    ):
        variant_cache_clear()
        _rendered_approval[campaign.pk] = campaign.approved_at


def steps_start_due(*, now: datetime | None = None) -> StartReport:
    """Start, skip, revive and finish steps. Safe to run twice at once (two beat processes)."""
    now = now or timezone.now()
    report = StartReport()
    approved: dict[int, bool] = {}  # campaign id -> still matches its approval (this run)
    with transaction.atomic():
        # The campaign rows are locked too: the check of its approval and the start are one
        # moment for an admin save that re-checks it (which locks the row as well).
        pending = (
            CampaignStep.objects.select_for_update(skip_locked=True, of=("self", "campaign"))
            .filter(
                # Live campaigns, and live ones back for approval: those never start a step
                # here, but one whose moment passes meanwhile is skipped with the reason.
                Q(campaign__status__in=[C.SCHEDULED, C.RUNNING, C.PAUSED])
                | (Q(campaign__status=C.AWAITING_APPROVAL) & ~Q(campaign__status_before_review="")),
                status=StepStatus.PENDING,
                campaign__kind=CampaignKind.ONE_OFF,
                campaign__event_at__isnull=False,
            )
            .select_related("campaign")
        )
        for step in pending:
            campaign = step.campaign
            assert campaign.event_at is not None
            start_at = fanout_start(campaign.event_at, plan_of(step))
            decision = step_decision(now=now, start_at=start_at)
            if decision is StepDecision.SKIP:
                CampaignStep.objects.filter(pk=step.pk, status=StepStatus.PENDING).update(
                    status=StepStatus.SKIPPED,
                    finished_at=now,
                    skip_reason=skip_reason(now, start_at, campaign.status),
                )
                report.skipped.append(step.pk)
            elif decision is StepDecision.START and campaign.status in (C.SCHEDULED, C.RUNNING):
                if campaign.pk not in approved:
                    approved[campaign.pk] = still_approved(campaign)
                    if not approved[campaign.pk]:
                        report.sent_back.append(campaign.pk)
                if not approved[campaign.pk]:
                    continue  # it waits for a lead; the step stays pending
                CampaignStep.objects.filter(pk=step.pk, status=StepStatus.PENDING).update(
                    status=StepStatus.RUNNING, started_at=now, walked_at=now
                )
                Campaign.objects.filter(pk=campaign.pk, status=C.SCHEDULED).update(
                    status=C.RUNNING, started_at=now
                )
                report.started.append(step.pk)
        stale = list(
            CampaignStep.objects.filter(
                status=StepStatus.RUNNING,
                campaign__status=C.RUNNING,
                walked_at__lt=now - WALK_STALE,
            ).values_list("pk", "walk_done", "walk_round", "batches_done", "batches_total")
        )
        walks = list(report.started)
        for pk, walk_done, walk_round, done, total in stale:
            lost = batches_republish(step_id=pk, walk_round=walk_round, now=now)
            if walk_done and not lost:
                if done >= total:
                    continue  # every batch is written: steps_finish closes it
                # Counted by batches handed out before they were recorded (an upgrade):
                # nothing says which are missing, so the walk starts over as a new round.
                walks_start_over(step_ids=[pk], now=now)
                walks.append(pk)
            else:  # batches lost with the broker or a worker go again; a walk goes on
                CampaignStep.objects.filter(pk=pk).update(walked_at=now)
                if not walk_done:
                    walks.append(pk)
            report.revived.append(pk)
        for pk in walks:
            transaction.on_commit(partial(campaign_dispatch.publish_walk, pk), robust=True)
    report.finished = steps_finish(now=now)
    return report


def batches_republish(*, step_id: int, walk_round: int, now: datetime) -> int:
    """Publish again, after commit, the batches of the step's round not marked done: called for
    a step not heard from in WALK_STALE, whose open batches were lost (or, rarely, are still
    queued: a copy writes nothing twice and counts nothing). Returns how many."""
    lost = FanoutBatch.objects.select_for_update().filter(
        step_id=step_id, walk_round=walk_round, done_at__isnull=True
    )
    batches = list(lost.values_list("pk", "recipient_ids"))
    FanoutBatch.objects.filter(pk__in=[pk for pk, _ in batches]).update(published_at=now)
    for _, recipient_ids in batches:
        transaction.on_commit(
            partial(campaign_dispatch.publish_batch, step_id, recipient_ids, walk_round),
            robust=True,
        )
    if batches:
        log.warning("step %s: %d batches not written, published again", step_id, len(batches))
    return len(batches)


def steps_finish(*, now: datetime) -> list[int]:
    """Running one-off steps whose every batch is written are done; so may be their campaign.

    Every batch of the walk's round must be marked done (a batch published and lost never is),
    and the counters must agree; a batch counts once, however many times it ran."""
    open_batches = FanoutBatch.objects.filter(
        step_id=OuterRef("pk"), walk_round=OuterRef("walk_round"), done_at__isnull=True
    )
    done = list(
        CampaignStep.objects.filter(
            ~Exists(open_batches),
            status=StepStatus.RUNNING,
            walk_done=True,
            batches_done__gte=F("batches_total"),
            campaign__kind=CampaignKind.ONE_OFF,
        ).values_list("pk", "campaign_id")
    )
    for pk, campaign_id in done:
        if CampaignStep.objects.filter(pk=pk, status=StepStatus.RUNNING).update(
            status=StepStatus.DONE, finished_at=now
        ):
            campaign_finish_if_done(campaign_id=campaign_id)
    return [pk for pk, _ in done]


class Walk(StrEnum):
    CONTINUE = "continue"  # more to hand out: run again at once
    WAIT = "wait"  # the bulk lane is full: run again in a few seconds
    DONE = "done"  # everyone handed out
    STOPPED = "stopped"  # paused, cancelled, or another walk holds the step


WALK_LOCK_SPACE = 0x5741_4C4B << 32  # "WALK": advisory lock keys of walks, by step id


def _walk_lock(step_id: int) -> bool:
    """Only one walk of a step at a time, for the transaction (a PostgreSQL advisory lock).

    Not the step row's lock: every batch updates the row's counters as it finishes, and a walk
    that took such a moment for another walk would stop with no one to carry on. The row is
    still locked (waiting out those brief updates) to record each batch handed out, so that
    pause, resume and cancel serialize with the walk."""
    if connection.vendor != "postgresql":
        return True  # the embedded default: one process
    with connection.cursor() as cursor:
        cursor.execute("SELECT pg_try_advisory_xact_lock(%s)", [WALK_LOCK_SPACE | step_id])
        row = cursor.fetchone()
    return bool(row and row[0])


def step_walk(*, step_id: int, batches: int = BATCHES_PER_WALK) -> Walk:
    """Hand out up to `batches` batches of the step's audience, in recipient id order.

    Each batch is handed out in a transaction of its own (`_walk_one`), published once it
    commits; the campaign's approval is checked before the first. Before each, the tables the
    batches grow are analyzed if they outgrew their statistics (`bulk_statistics_refresh`)."""
    for index in range(batches):
        # Before the batch's transaction (an ANALYZE holds its table's lock until commit).
        bulk_statistics_refresh()
        outcome = _walk_one(step_id, check_approval=index == 0)
        if outcome is not Walk.CONTINUE:
            return outcome
    return Walk.CONTINUE


def _walk_one(step_id: int, *, check_approval: bool) -> Walk:
    """Hand out the step's next batch: read the audience after the cursor with no row lock held
    (on a large segment that query is the walk's slow part, and every batch that finishes
    meanwhile updates the step row), then lock the row, check that the step is still running
    where this walk read it, and record the batch with the cursor."""
    with transaction.atomic():
        if not _walk_lock(step_id):
            return Walk.STOPPED  # another walk of the same step is running, and goes on
        step = (
            CampaignStep.objects.filter(pk=step_id)
            .select_related("campaign", "campaign__segment")
            .first()
        )
        if step is None:
            return Walk.STOPPED  # the campaign was deleted
        campaign = step.campaign
        if step.status != StepStatus.RUNNING or campaign.status != C.RUNNING or step.walk_done:
            return Walk.STOPPED
        if check_approval and not still_approved(campaign):
            return Walk.STOPPED  # back for approval; approving it walks again
        if bulk_congested():
            CampaignStep.objects.filter(pk=step_id).update(walked_at=timezone.now())
            return Walk.WAIT
        ids, seen = _audience_after(campaign, step.cursor_recipient_id)
        # Paused, cancelled or started over (a new round) while the audience was read: this
        # walk hands out nothing; resuming walks again from where the step is then.
        # (`of`: the step's row alone; exists() would lock the campaign's too.)
        still_there = (
            CampaignStep.objects.select_for_update(of=("self",))
            .filter(
                pk=step_id,
                status=StepStatus.RUNNING,
                campaign__status=C.RUNNING,
                walk_done=False,
                walk_round=step.walk_round,
                cursor_recipient_id=step.cursor_recipient_id,
            )
            .order_by()
            .values_list("pk", flat=True)
        )
        if not list(still_there):
            return Walk.STOPPED
        if seen is None:
            CampaignStep.objects.filter(pk=step_id).update(walk_done=True, walked_at=timezone.now())
            return Walk.DONE
        # Recorded with the cursor, published once both commit: a walk whose transaction dies
        # (a restart, a kill) published nothing of this batch and the next one hands the same
        # batch out; a batch published and then lost is still recorded, not done. (A stretch
        # of only deactivated users moves the cursor and hands out nothing.)
        recorded = 0
        if ids:
            recorded = _batch_record(step_id, step.walk_round, ids)
            transaction.on_commit(
                partial(campaign_dispatch.publish_batch, step_id, ids, step.walk_round),
                robust=True,
            )
        CampaignStep.objects.filter(pk=step_id).update(
            cursor_recipient_id=seen,
            batches_total=F("batches_total") + recorded,
            walked_at=timezone.now(),
        )
    return Walk.CONTINUE


def _audience_after(campaign: Campaign, after: int) -> tuple[list[int], int | None]:
    """The next batch of the campaign's audience after recipient id `after` (see
    `segment_walk`): its segment's, or for a triggered campaign the users who entered it."""
    if campaign.kind == CampaignKind.TRIGGERED:
        if after == 0:
            recipients_backfill()
        audience = trigger_audience(campaign)  # the users who entered its segment
        return recipients_active(audience.filter(pk__gt=after).order_by("pk"), limit=BATCH_USERS)
    assert campaign.segment is not None
    return segment_walk(campaign.segment, after=after, limit=BATCH_USERS)


def _batch_record(step_id: int, walk_round: int, recipient_ids: list[int]) -> int:
    """Record a batch handed out (under the walk's lock); 0 if this round already has it (a
    walk that went over the same users again), which then does not count twice."""
    if FanoutBatch.objects.filter(
        step_id=step_id, walk_round=walk_round, first_recipient_id=recipient_ids[0]
    ).exists():
        return 0
    FanoutBatch.objects.create(
        step_id=step_id,
        walk_round=walk_round,
        first_recipient_id=recipient_ids[0],
        recipient_ids=recipient_ids,
        published_at=timezone.now(),
    )
    return 1


def fanout_batch_done(*, step_id: int, walk_round: int, recipient_ids: Sequence[int]) -> bool:
    """Mark the batch written and count it towards closing the step, once: True for the run
    that does, False for a copy (re-delivered, published again, racing itself) or a batch of
    an earlier round. Either way the step has been heard from."""
    now = timezone.now()
    first = min(recipient_ids, default=0)
    batch = FanoutBatch.objects.filter(
        step_id=step_id, walk_round=walk_round, first_recipient_id=first
    )
    with transaction.atomic():
        step = CampaignStep.objects.filter(pk=step_id, walk_round=walk_round)
        marked = batch.filter(done_at__isnull=True).update(done_at=now) == 1
        if not marked and not batch.exists() and step.exists():
            # Handed out before batches were recorded (queued across an upgrade): that walk
            # counted it in batches_total already; recorded done here so it counts once.
            _, marked = FanoutBatch.objects.get_or_create(
                step_id=step_id,
                walk_round=walk_round,
                first_recipient_id=first,
                defaults={
                    "recipient_ids": sorted(recipient_ids),
                    "published_at": now,
                    "done_at": now,
                },
            )
        if marked:
            step.update(batches_done=F("batches_done") + 1, walked_at=now)
        else:
            step.update(walked_at=now)
    return marked


@dataclass
class BatchReport:
    messages: int = 0
    existing: int = 0
    held_out: int = 0
    one_by_one: int = 0  # handed to the prepare pipeline one message per task
    unreadable: int = 0  # users whose row cannot be read: their messages failed with the reason
    counted: bool = False  # this run marked the batch done (a copy of it finds it done)


def fanout_attempt_start(*, step_id: int, recipient_ids: Sequence[int]) -> tuple[int, int]:
    """Count a run of this batch, committed at once (the task runs in autocommit), before the
    work starts; returns (attempt row id, runs counted, this one included)."""
    table = table_name(FanoutAttempt)
    with connection.cursor() as cursor:
        cursor.execute(
            f"INSERT INTO {table} (step_id, first_recipient_id, users, attempts, started_at) "
            "VALUES (%s, %s, %s, 1, %s) ON CONFLICT (step_id, first_recipient_id, users) "
            f"DO UPDATE SET attempts = {table}.attempts + 1, started_at = EXCLUDED.started_at "
            "RETURNING id, attempts",
            [step_id, min(recipient_ids, default=0), len(recipient_ids), timezone.now()],
        )
        row = cursor.fetchone()
    assert row is not None
    return int(row[0]), int(row[1])


def step_fanout_batch(
    *, step_id: int, recipient_ids: Sequence[int], walk_round: int | None = None
) -> BatchReport:
    """Write and route one batch of a step's recipients; nothing if the campaign stopped.

    The batch counts towards closing the step only if it belongs to the step's current walk
    round (None: whatever round is current), and only once however often it runs. A batch that
    wrote nothing because the campaign was paused does not count either: resuming starts a new
    round that hands it out again."""
    report = BatchReport()
    step = CampaignStep.objects.select_related("campaign").get(pk=step_id)
    campaign = step.campaign
    if step.status != StepStatus.RUNNING or campaign.status != C.RUNNING:
        return report
    # Copy, settings and rules as approved (the walk checked the member list when it handed
    # this batch out); otherwise nothing is written and, like a paused batch, it does not count.
    if not still_approved(campaign, members=False):
        return report
    _render_what_was_approved(campaign)
    attempt_id, attempts = fanout_attempt_start(step_id=step_id, recipient_ids=recipient_ids)
    readable_users, unreadable = readable(
        get_user_model()
        ._default_manager.filter(
            any_of("pk", _user_keys(recipient_ids)),
            any_of("notifier_recipient__pk", recipient_ids),
            is_active=True,
        )
        .select_related("notifier_recipient")
        .order_by("pk")
    )
    # Profiles made on first use, for the whole batch at once (never a query per user).
    recipients_attach(readable_users)
    users = {user.pk: user for user in readable_users}
    rows, held_out = recipients(step, campaign, users.values())
    if held_out:
        insert_rows(
            Holdout,
            ("campaign", "user", "created_at"),
            [(campaign.pk, pk, timezone.now()) for pk in held_out],
            ignore_conflicts=True,
        )
    new_ids: list[int] = []
    if unreadable:
        new_ids += _fail_unreadable_users(step, campaign, unreadable)
        report.unreadable = len(unreadable)
    if attempts > 1:  # a run of this batch died: each message alone, or it dies again whole
        new_ids += messages_prepare_one_by_one(rows=rows)
        report.one_by_one = len(rows)
    else:
        try:
            new_ids += messages_write_routed(rows=rows, users=users)
        except RenderTimedOut as cut:  # rolled back: each message goes on alone
            # The time limit was the batch's: only a message alone in it is to blame; in a
            # batch of several, the one rendering when it struck may be innocent, and each is
            # prepared in a task of its own, where one too slow alone is failed.
            key = next((row.idempotency_key for row in rows if row.user_id == cut.user_id), None)
            blamed = (
                {key: Failure(Reason.RENDER_TIMEOUT, str(cut))} if key and len(rows) == 1 else {}
            )
            new_ids += messages_prepare_one_by_one(rows=rows, failures=blamed)
            report.one_by_one = len(rows)
    FanoutAttempt.objects.filter(pk=attempt_id).delete()
    # Heard from: a walk whose batches are still being written is not stale.
    report.counted = fanout_batch_done(
        step_id=step_id,
        walk_round=step.walk_round if walk_round is None else walk_round,
        recipient_ids=recipient_ids,
    )
    report.messages, report.existing, report.held_out = (
        len(new_ids),
        len(rows) - len(new_ids),
        len(held_out),
    )
    return report


def _user_keys(recipient_ids: Sequence[int]) -> list[UserKey]:
    """The users of a batch's profiles. The batch's read of its users and profiles names both
    sides of their join: bounded by the profiles alone, a planner costing an index look-up
    above a scan hashed the whole user table for each batch (14 ms at 100,000 users instead
    of 1.6, and ten times that at a million)."""
    return list(
        Recipient.objects.filter(any_of("pk", recipient_ids)).values_list("user_id", flat=True)
    )


def _fail_unreadable_users(
    step: CampaignStep, campaign: Campaign, user_ids: list[int]
) -> list[int]:
    """Users in the batch whose own row cannot be read get their message failed with the reason
    in words (on their support timeline) instead of taking the batch with them."""
    # Stand-ins with nothing but the id: the message needs no more, and that much always reads.
    # (One in the hold-out gets no message, as ever; the hold-out row can wait for a readable
    # record.)
    stand_ins = []
    for pk in user_ids:
        stand_in = get_user_model()(pk=pk)
        stand_in.notifier_recipient = Recipient(user_id=pk, time_zone="UTC")
        stand_ins.append(stand_in)
    rows, _ = recipients(step, campaign, stand_ins)
    failures = {
        row.idempotency_key: Failure(Reason.UNREADABLE, recipient_unreadable_reason(row.user_id))
        for row in rows
        if row.idempotency_key
    }
    return messages_prepare_one_by_one(rows=rows, failures=failures)


def recipients(
    step: CampaignStep, campaign: Campaign, users: Iterable[User]
) -> tuple[list[NewMessage], list[int]]:
    """The messages for a batch (one per user, keyed by step and user) and the held-out users."""
    assert campaign.category_id is not None
    variants = list(step.variants.values_list("pk", "weight"))
    plan = plan_of(step)
    expiry = step_expiry(campaign.event_at, plan) if campaign.event_at else None
    triggered = campaign.kind == CampaignKind.TRIGGERED
    users = list(users)
    # Triggered: only users still due after entering the segment (trigger_entries_update
    # decided, re-entry days included), one message per entry.
    entered = (
        trigger_entries_due(campaign_id=campaign.pk, user_ids=[user.pk for user in users])
        if triggered
        else {}
    )
    rows: list[NewMessage] = []
    held_out: list[int] = []
    pick = variant_picker(step_id=step.pk, variants=variants)
    # The send time depends only on the zone and usual hour, which many users share.
    send_times: dict[tuple[str, int | None], datetime | None] = {}
    event_at, percent = campaign.event_at, campaign.holdout_percent
    # One context and one channel list for the batch's messages: nothing changes a message's
    # own in place, and COPY writes a value its rows share once.
    variables, channels = dict(campaign.variables), list(campaign.channels)
    for user in users:
        profile = recipient_for(user)
        pk, tz, hour = user.pk, profile.time_zone, profile.usual_active_hour
        if triggered and pk not in entered:
            continue
        if percent > 0 and in_holdout(campaign_id=campaign.pk, user_id=pk, percent=percent):
            held_out.append(pk)
            continue
        key = (
            entry_key(campaign_id=campaign.pk, user_id=pk, entered_at=entered[pk])
            if triggered
            else f"step:{step.pk}:user:{pk}"
        )
        if event_at is None:
            not_before = None
        elif (tz, hour) in send_times:
            not_before = send_times[(tz, hour)]
        else:
            not_before = send_times[(tz, hour)] = send_time(
                event_at, plan, tz=ZoneInfo(tz or "UTC"), active_hour=hour
            )
        rows.append(
            NewMessage(
                user_id=pk,
                type_key=campaign.category_id,
                context=variables,
                channels=channels,
                lane=Lane.BULK,
                idempotency_key=key,
                priority=campaign.priority,
                expires_at=expiry,
                campaign_id=campaign.pk,
                step_id=step.pk,
                variant_id=pick(pk),
                not_before=not_before,
            )
        )
    return rows, held_out


def triggers_evaluate(*, now: datetime | None = None) -> list[int]:
    """For each live triggered campaign, record who entered and left its segment since the last
    evaluation (campaigns.services.triggers) and walk the users who entered (and had not had it
    within the re-entry days): they get its message. Returns the steps walked."""
    now = now or timezone.now()
    walked: list[int] = []
    with transaction.atomic():
        campaigns = Campaign.objects.select_for_update(skip_locked=True).filter(
            kind=CampaignKind.TRIGGERED, status__in=[C.SCHEDULED, C.RUNNING]
        )
        for campaign in campaigns:
            step = campaign.steps.order_by("offset_minutes", "pk").first()
            if step is None or not still_approved(campaign):
                continue
            entries = trigger_entries_update(campaign=campaign, now=now)
            log.info("campaign %s: segment entries %s", campaign.pk, entries)
            Campaign.objects.filter(pk=campaign.pk, status=C.SCHEDULED).update(
                status=C.RUNNING, started_at=now
            )
            walks_start_over(
                step_ids=[step.pk],
                now=now,
                status=StepStatus.RUNNING,
                started_at=F("started_at") if step.started_at else now,
            )
            walked.append(step.pk)
            transaction.on_commit(partial(campaign_dispatch.publish_walk, step.pk), robust=True)
    return walked


def walk_continue(step_id: int, outcome: Walk) -> None:
    """What a walk task does next: go on at once, or after the bulk lane has drained a bit."""
    if outcome is Walk.CONTINUE:
        campaign_dispatch.publish_walk(step_id)
    elif outcome is Walk.WAIT:
        campaign_dispatch.publish_walk(step_id, countdown=CONGESTED_WAIT_S)
