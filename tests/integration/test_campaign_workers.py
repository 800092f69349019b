"""Campaign fan-out under real worker processes: pause, cancel, a step started twice, and a
worker SIGKILLed mid-batch, on real PostgreSQL and a private Redis per test.

Each test fans one step out to a few thousand users in batches of 100 (NOTIFIER_CAMPAIGN_BATCH_USERS
in the workers), so there is always work in flight to interrupt. What the providers saw is
counted in the sandbox ledger, as in test_faults.
"""

from __future__ import annotations

import bisect
import threading
import time
from collections.abc import Callable, Iterator
from datetime import timedelta
from typing import Any

import pytest
from django.db import connection
from django.db.models import Count
from django.utils import timezone

from campaigns import dispatch as campaign_dispatch
from campaigns.models import (
    Campaign,
    CampaignStatus,
    CampaignStep,
    Segment,
    SegmentMember,
    StepStatus,
    VariantTemplate,
)
from campaigns.services import fanout
from campaigns.services.definitions import campaign_definition
from campaigns.services.lifecycle import (
    campaign_approve,
    campaign_cancel,
    campaign_create,
    campaign_pause,
    campaign_resume,
)
from channels.models import SandboxSend
from notifier.models import Consent, Delivery, Message, NotificationType, Recipient, User
from notifier.queues import MAINTENANCE_QUEUE, Lane, prepare_queue
from notifier.services.deliveries import requeue_stuck_work
from notifier.status import TERMINAL, DeliveryStatus, Reason
from tests.conftest import WorkerProcess, wait_until
from tests.factories import UserFactory, daytime_zone
from tests.integration.conftest import worker_idle
from tests.integration.rig import RedisServer, Rig, ledger_for

pytestmark = [pytest.mark.integration, pytest.mark.django_db(transaction=True)]
S = DeliveryStatus

AUDIENCE = 3000
FANS = "fanout-fans"
WORKER_ENV = {
    # Thirty batches of 100 users: a fan-out that takes a few seconds, so a test can act on it
    # while batches are queued, running and written.
    "NOTIFIER_CAMPAIGN_BATCH_USERS": "100",
    # Backpressure would hold the bulk lane for a minute; these tests are about stopping.
    "NOTIFIER_BULK_HIGH_WATER": "100000",
    # A provider round trip, so deliveries wait queued while the fan-out goes on.
    "SANDBOX_LATENCY_MS": "2",
}
BULK_PREPARE = prepare_queue(Lane.BULK)


@pytest.fixture
def rig(monkeypatch) -> Iterator[Rig]:
    """The fault rig, with the fan-out's own publishes (walks, batches) pointed at it too."""
    rig = Rig(RedisServer(), monkeypatch)

    def publish_walk(step_id: int, countdown: float = 0.0) -> None:
        rig.send("campaigns.walk_step", (step_id,), BULK_PREPARE, countdown)

    def publish_batch(step_id: int, user_ids: list[int], walk_round: int) -> None:
        rig.send("campaigns.fanout_recipients", (step_id, list(user_ids), walk_round), BULK_PREPARE)

    monkeypatch.setattr(campaign_dispatch, "publish_walk", publish_walk)
    monkeypatch.setattr(campaign_dispatch, "publish_batch", publish_batch)
    try:
        yield rig
    finally:
        rig.close()


# --- Setting up ----------------------------------------------------------------------------


def fans(count: int = AUDIENCE) -> list[int]:
    """Users in the segment, reachable by email, with marketing consent, and with the default
    quiet hours where it is early afternoon: the workers run on the real clock."""
    zone = daytime_zone()
    User.objects.bulk_create(
        [
            User(
                username=f"fan-{i}",
                email=f"fan-{i}@example.com",
                first_name="Fan",
                password="!",
            )
            for i in range(count)
        ],
        batch_size=1000,
    )
    made = User.objects.filter(username__startswith="fan-").order_by("pk")
    ids = list(made.values_list("pk"))
    # bulk_create made no profiles: theirs, in the segment, quiet hours as the model has them.
    Recipient.objects.bulk_create(
        [
            Recipient(user_id=pk, email=email, time_zone=zone, interest_tags=[FANS])
            for pk, email in made.values_list("pk", "email")
        ],
        batch_size=1000,
    )
    now = timezone.now()
    Consent.objects.bulk_create(
        [
            Consent(
                user_id=pk, channel="all", granted=True, at=now, source="test", wording="offers"
            )
            for (pk,) in ids
        ],
        batch_size=1000,
    )
    return [pk for (pk,) in ids]


def campaign_due_now(channels: list[str], members: list[int] | None = None) -> CampaignStep:
    """A scheduled one-off campaign whose single step ("three days before") is due now; with
    `members`, its segment is those fans only (an imported list)."""
    segment = Segment.objects.create(
        name="Sale fans", tags_any=[FANS], use_member_list=members is not None
    )
    SegmentMember.objects.bulk_create(
        [SegmentMember(segment=segment, user_id=pk) for pk in members or []]
    )
    campaign = campaign_create(
        name="Double 11",
        category=NotificationType.objects.get(pk="promo.flash_sale"),
        created_by=None,
        segment=segment,
        # The step's moment is a minute ago: due, well inside its grace period.
        event_at=timezone.now() + timedelta(days=3, minutes=-1),
        channels=channels,
        variables={"headline": "50% off"},
        plan=[("Notice", -3 * 24 * 60)],
    )
    step = campaign.steps.get()
    variant = step.variants.get()
    VariantTemplate.objects.create(
        variant=variant,
        channel="inapp",
        title="{{ headline }}",
        body="Hi {{ user.first_name }}",
        link="https://shop.example.com/sale",
    )
    VariantTemplate.objects.create(
        variant=variant,
        channel="email",
        subject="{{ campaign.name }}: {{ headline }}",
        body="Hi {{ user.first_name }}, {{ headline }}\n{{ unsubscribe_url }}",
    )
    # Approval is not under test here: scheduled, as a marketing lead would leave it.
    Campaign.objects.filter(pk=campaign.pk).update(
        status=CampaignStatus.SCHEDULED, approved_definition=campaign_definition(campaign.pk)
    )
    return step


def start(step: CampaignStep) -> None:
    """What beat does: the due step starts, and its walk is published after commit."""
    assert fanout.steps_start_due().started == [step.pk]


# --- Reading what happened -----------------------------------------------------------------


def messages_of(step: CampaignStep) -> Any:
    return Message.objects.filter(step_id=step.pk)


def deliveries_of(step: CampaignStep) -> Any:
    return Delivery.objects.filter(message__step_id=step.pk)


def sends_of(step: CampaignStep) -> Any:
    return SandboxSend.objects.filter(message_id__in=messages_of(step).values("pk"), outcome="sent")


def progress(step: CampaignStep) -> tuple[int, int, int]:
    """Messages written, deliveries written, sends the provider accepted."""
    return messages_of(step).count(), deliveries_of(step).count(), sends_of(step).count()


def statuses(step: CampaignStep) -> dict[tuple[str, str], int]:
    return {
        (row["status"], row["reason"]): row["n"]
        for row in deliveries_of(step).values("status", "reason").annotate(n=Count("pk"))
    }


def settled(probe: Callable[[], Any], *, what: str, polls: int = 8, timeout: float = 20) -> Any:
    """Wait until probe() gives the same answer `polls` times in a row (0.25 s apart)."""
    seen: dict[str, Any] = {"value": None, "same": 0}

    def stable() -> bool:
        value = probe()
        seen["same"] = seen["same"] + 1 if value == seen["value"] else 1
        seen["value"] = value
        return seen["same"] >= polls

    wait_until(stable, timeout=timeout, interval=0.25, message=f"{what} to stay flat")
    return seen["value"]


def idle(rig: Rig, worker: WorkerProcess) -> None:
    """Nothing left in any queue of the private Redis, nothing running or reserved."""
    client = rig.server.client()
    wait_until(
        lambda: worker_idle(worker, client) and worker_idle(worker, client),
        timeout=20,
        message="the worker to go idle",
    )


def fanout_under_way(step: CampaignStep, at_least: int = 300) -> None:
    wait_until(
        lambda: messages_of(step).count() >= at_least,
        timeout=30,
        interval=0.02,
        message=f"{at_least} messages of the step to be written",
    )


def one_message_each(step: CampaignStep, users: list[int]) -> None:
    per_user = dict(
        messages_of(step).values("user_id").annotate(n=Count("pk")).values_list("user_id", "n")
    )
    assert set(per_user) == set(users)
    assert set(per_user.values()) == {1}


def every_delivery_sent_once(step: CampaignStep, channels: list[str], users: list[int]) -> None:
    assert statuses(step) == {(S.SENT, ""): len(users) * len(channels)}
    ledger = ledger_for(list(messages_of(step).values_list("pk", flat=True)), channels)
    assert ledger.expected == len(users) * len(channels)
    assert (ledger.lost, ledger.duplicated) == (0, 0), ledger


def beat_until(
    rig: Rig,
    step: CampaignStep,
    done: Callable[[], bool],
    *,
    timeout: float = 60.0,
    minutes_later: bool = False,
    quiet_for: float | None = None,
) -> None:
    """Run beat's jobs every second until `done()` holds: release held deliveries and re-queue
    stuck work (in the worker), start, revive and close steps (here). With `minutes_later`,
    every fifth run of the steps job is told it is WALK_STALE later, as if beat had run on
    for minutes, so walks that lost batches are revived. With `quiet_for`, only a run that
    finds the step not heard from (walked_at unchanged) for that many seconds is: WALK_STALE
    in small, so a step whose batches are still running is never taken for stale."""
    runs: dict[str, Any] = {"n": 0, "at": 0.0, "heard": None, "heard_at": time.monotonic()}

    def check() -> bool:
        if done():
            return True
        if time.monotonic() - runs["at"] > 1.0:
            rig.send("notifier.release_held", (), MAINTENANCE_QUEUE)
            rig.send("notifier.requeue_stuck_work", (), MAINTENANCE_QUEUE)
            runs["n"] += 1
            heard = CampaignStep.objects.get(pk=step.pk).walked_at
            if heard != runs["heard"]:
                runs["heard"], runs["heard_at"] = heard, time.monotonic()
            quiet = quiet_for is not None and time.monotonic() - runs["heard_at"] > quiet_for
            later = (minutes_later and runs["n"] % 5 == 0) or quiet
            fanout.steps_start_due(now=timezone.now() + (REVIVE_AFTER if later else timedelta()))
            runs["at"] = time.monotonic()
        return False

    try:
        wait_until(check, timeout=timeout, interval=0.2, message="every recipient to be sent")
    except AssertionError as timed_out:
        raise AssertionError(f"{timed_out}; {where(step)}") from None


REVIVE_AFTER = fanout.WALK_STALE + timedelta(seconds=1)


def where(step: CampaignStep) -> str:
    row = CampaignStep.objects.filter(pk=step.pk).values(
        "status", "cursor_recipient_id", "walk_done", "batches_total", "batches_done"
    )[0]
    unrouted = messages_of(step).filter(routed_at__isnull=True).count()
    return (
        f"step {row}; {messages_of(step).count()} messages, {unrouted} unrouted; {statuses(step)}"
    )


def everyone_sent(step: CampaignStep, users: list[int]) -> bool:
    """Everyone has the step's message, routed, and every delivery is final."""
    return (
        messages_of(step).count() == len(users)
        and not messages_of(step).filter(routed_at__isnull=True).exists()
        and not deliveries_of(step).exclude(status__in=TERMINAL).exists()
    )


def closed(step: CampaignStep) -> bool:
    """The step is done (beat's job closes it once every batch of its walk round counted)."""
    return CampaignStep.objects.get(pk=step.pk).status == StepStatus.DONE


# --- The tests -----------------------------------------------------------------------------


def test_pausing_mid_fanout_stops_writes_and_sends_and_resuming_sends_each_user_once(rig):
    users = fans()
    step = campaign_due_now(["email"])
    campaign = step.campaign
    worker = rig.worker(**WORKER_ENV)
    start(step)
    fanout_under_way(step)

    held = campaign_pause(campaign=campaign, by=None)
    at_pause = CampaignStep.objects.get(pk=step.pk)
    queued_batches = rig.server.client().llen(BULK_PREPARE)

    # Within a few seconds nothing more is written or sent, and nothing is left to send.
    messages, deliveries, sends = settled(lambda: progress(step), what="writes and sends")
    idle(rig, worker)
    assert progress(step) == (messages, deliveries, sends)
    assert messages < len(users), "the fan-out finished before the pause"
    left = statuses(step)
    assert set(left) <= {(S.SENT, ""), (S.HELD, Reason.CAMPAIGN_PAUSED)}, left
    assert left.get((S.HELD, Reason.CAMPAIGN_PAUSED), 0) >= held > 0, left

    # The batches still queued when it paused were run, and wrote nothing: users already
    # handed out to a batch have no message.
    assert queued_batches > 0
    recipient_of = dict(Recipient.objects.filter(user_id__in=users).values_list("user_id", "pk"))
    handed_out = [pk for pk in users if recipient_of[pk] <= at_pause.cursor_recipient_id]
    assert messages_of(step).filter(user_id__in=handed_out).count() < len(handed_out)

    released = campaign_resume(campaign=campaign, by=None)
    assert released == left[(S.HELD, Reason.CAMPAIGN_PAUSED)]
    beat_until(rig, step, lambda: everyone_sent(step, users) and closed(step))
    one_message_each(step, users)
    every_delivery_sent_once(step, ["email"], users)


def test_cancelling_mid_fanout_cancels_what_was_not_sent_and_sends_nothing_more(rig):
    users = fans()
    step = campaign_due_now(["email"])
    campaign = step.campaign
    worker = rig.worker(**WORKER_ENV)
    start(step)
    fanout_under_way(step)

    cancelled = campaign_cancel(campaign=campaign, by=None)
    assert cancelled > 0

    messages, deliveries, sends = settled(lambda: progress(step), what="writes and sends")
    idle(rig, worker)
    assert progress(step) == (messages, deliveries, sends)
    assert messages < len(users), "the fan-out finished before the cancel"
    # Every message was routed; what had not gone out is cancelled (or, routed after the
    # cancel, suppressed), each with the reason; the rest went out once.
    assert not messages_of(step).filter(routed_at__isnull=True).exists()
    left = statuses(step)
    assert set(left) <= {
        (S.SENT, ""),
        (S.CANCELLED, Reason.CANCELLED),
        (S.SUPPRESSED, Reason.CANCELLED),
    }, left
    assert left[(S.CANCELLED, Reason.CANCELLED)] >= cancelled
    assert sum(left.values()) == deliveries == messages
    assert sends == left.get((S.SENT, ""), 0)
    ledger = ledger_for(list(messages_of(step).values_list("pk", flat=True)), ["email"])
    assert (ledger.distinct, ledger.duplicated) == (sends, 0)
    assert CampaignStep.objects.get(pk=step.pk).status == StepStatus.CANCELLED
    assert Campaign.objects.get(pk=campaign.pk).status == CampaignStatus.CANCELLED

    # Beat, minutes later, with the re-queue and release jobs: nothing starts, nothing goes.
    report = fanout.steps_start_due(now=timezone.now() + REVIVE_AFTER)
    assert (report.started, report.revived) == ([], [])
    rig.send("notifier.requeue_stuck_work", (), MAINTENANCE_QUEUE)
    rig.send("notifier.release_held", (), MAINTENANCE_QUEUE)
    idle(rig, worker)
    assert progress(step) == (messages, deliveries, sends)


def test_a_step_started_twice_at_once_and_walked_three_times_sends_each_user_once(rig):
    users = fans()
    step = campaign_due_now(["email"])
    barrier = threading.Barrier(2)
    started: list[int] = []

    def beat() -> None:  # a second beat process: its own thread, its own connection
        try:
            barrier.wait(timeout=10)
            started.extend(fanout.steps_start_due().started)
        finally:
            connection.close()

    beats = [threading.Thread(target=beat) for _ in range(2)]
    for thread in beats:
        thread.start()
    for thread in beats:
        thread.join(timeout=30)
    assert started == [step.pk]
    # Two more walks of the same step, as a re-published or re-delivered task would be.
    campaign_dispatch.publish_walk(step.pk)
    campaign_dispatch.publish_walk(step.pk)
    rig.worker(**WORKER_ENV)

    beat_until(
        rig,
        step,
        lambda: (
            everyone_sent(step, users)
            and CampaignStep.objects.get(pk=step.pk).status == StepStatus.DONE
        ),
    )
    one_message_each(step, users)
    every_delivery_sent_once(step, ["email"], users)
    step.refresh_from_db()
    assert step.batches_done == step.batches_total == len(users) // 100
    assert Campaign.objects.get(pk=step.campaign_id).status == CampaignStatus.DONE


def test_a_worker_sigkilled_mid_batch_loses_and_doubles_no_recipient(rig, settings):
    users = fans()
    channels = ["inapp", "email"]
    step = campaign_due_now(channels)
    worker = rig.worker(**WORKER_ENV)
    start(step)
    fanout_under_way(step, at_least=600)
    worker.kill()

    at_kill = CampaignStep.objects.get(pk=step.pk)
    assert messages_of(step).count() < len(users), "the fan-out finished before the kill"
    assert at_kill.batches_done < at_kill.batches_total  # batches were in flight

    # Beat, minutes later, while no worker is up: the walk has not been heard from, so it is
    # revived; the re-queue job publishes again the messages the dead worker left unrouted
    # and the deliveries it had claimed or not yet sent (no worker is alive to be sending).
    assert fanout.steps_start_due(now=timezone.now() + REVIVE_AFTER).revived == [step.pk]
    settings.NOTIFIER_REQUEUE_AFTER_S = 0
    # Every lease the dead worker held has run out (as its minutes would have let it), and the
    # re-queue job runs at the real time: rows it re-queues are due now, not minutes ahead.
    Delivery.objects.filter(status=S.SENDING).update(
        claimed_until=timezone.now() - timedelta(seconds=1)
    )
    requeue_stuck_work()
    rig.worker(**WORKER_ENV)
    beat_until(rig, step, lambda: everyone_sent(step, users) and closed(step), minutes_later=True)

    one_message_each(step, users)
    every_delivery_sent_once(step, channels, users)


# --- Closing: a step whose batches did not all count in their round still closes ------------
# A batch run while the campaign was paused writes nothing and does not count; a batch lost
# with the broker or a worker never counts. Resuming or reviving starts a new walk round, and
# the step closes once every batch of that round is written.


def test_a_step_paused_with_batches_queued_closes_once_resumed_and_sent(rig, monkeypatch):
    users = fans(300)
    step = campaign_due_now(["email"])
    monkeypatch.setattr(fanout, "BATCH_USERS", 100)
    start(step)
    assert fanout.step_walk(step_id=step.pk) is fanout.Walk.DONE  # three batches queued
    campaign_pause(campaign=step.campaign, by=None)
    worker = rig.worker(**WORKER_ENV)
    idle(rig, worker)  # the three batches ran while paused, and wrote nothing
    assert messages_of(step).count() == 0

    campaign_resume(campaign=step.campaign, by=None)
    beat_until(rig, step, lambda: everyone_sent(step, users))
    every_delivery_sent_once(step, ["email"], users)
    fanout.steps_start_due()
    assert CampaignStep.objects.get(pk=step.pk).status == StepStatus.DONE, where(step)


def test_a_step_that_lost_a_batch_closes_once_revived_and_sent(rig, monkeypatch):
    users = fans(300)
    step = campaign_due_now(["email"])
    monkeypatch.setattr(fanout, "BATCH_USERS", 100)
    start(step)
    handed_out: list[int] = []

    def lose_the_second(step_id: int, user_ids: list[int], walk_round: int) -> None:
        handed_out.append(step_id)
        if len(handed_out) != 2:  # the broker lost the second
            rig.send(
                "campaigns.fanout_recipients", (step_id, list(user_ids), walk_round), BULK_PREPARE
            )

    with monkeypatch.context() as patch:
        patch.setattr(campaign_dispatch, "publish_batch", lose_the_second)
        assert fanout.step_walk(step_id=step.pk) is fanout.Walk.DONE
    worker = rig.worker(**WORKER_ENV)
    idle(rig, worker)
    assert messages_of(step).count() == 200

    assert fanout.steps_start_due(now=timezone.now() + REVIVE_AFTER).revived == [step.pk]
    beat_until(rig, step, lambda: everyone_sent(step, users))
    every_delivery_sent_once(step, ["email"], users)
    fanout.steps_start_due()
    assert CampaignStep.objects.get(pk=step.pk).status == StepStatus.DONE, where(step)


def test_a_segment_changed_behind_the_admins_back_reaches_nobody_until_approved_again(rig):
    """The issue's attack without the admin: after approval the segment stops using its list
    (a shell, a script). The worker's walk finds the campaign no longer matches its approval:
    the 3,000 fans get nothing, the campaign goes back for approval with the reason, and once
    a lead approves the change every one of them gets it once."""
    users = fans()
    step = campaign_due_now(["email"], members=users[:100])
    campaign = step.campaign
    start(step)  # beat: the campaign still matches its approval; the walk is queued
    Segment.objects.filter(pk=campaign.segment_id).update(use_member_list=False)
    worker = rig.worker(**WORKER_ENV)

    wait_until(
        lambda: Campaign.objects.get(pk=campaign.pk).status == CampaignStatus.AWAITING_APPROVAL,
        timeout=30,
        message="the walk to send the campaign back for approval",
    )
    idle(rig, worker)
    assert progress(step) == (0, 0, 0)
    assert Campaign.objects.get(pk=campaign.pk).review_reason == (
        "its segment changed: Segment “Sale fans”: use member list: yes → no"
    )

    lead = UserFactory(is_staff=True, is_superuser=True)
    campaign_approve(campaign=campaign, by=lead)  # returns it to running: the walk goes again
    beat_until(rig, step, lambda: everyone_sent(step, users) and closed(step))
    one_message_each(step, users)
    every_delivery_sent_once(step, ["email"], users)


# --- Closing only when everyone is written: the walk's connection killed, the broker wiped ---
# Issue 11, item 1. A walk that published its batches inside its transaction left them running
# when a dead connection rolled the cursor and the count back; their runs counted, copies too;
# so with a batch lost to a Redis wipe after the revive the step closed with users never
# written. Batches are now recorded with the cursor, published after commit, marked done once,
# and a lost one is published again by beat.

WALK_BATCH = 10
WALK_HELD = """
    SELECT activity.pid FROM pg_locks AS lock
    JOIN pg_stat_activity AS activity ON activity.pid = lock.pid
    WHERE lock.locktype = 'advisory' AND lock.granted AND lock.objsubid = 1
      AND lock.classid = %s AND lock.objid = %s
"""


def kill_the_walk_mid_walk(step: CampaignStep, recipients: list[int], *, batches: int) -> bool:
    """pg_terminate_backend on the worker connection holding the step's walk lock, once at
    least `batches` batches were handed out and committed: the walk holds the lock for one
    batch's transaction at a time, so the one it is in dies with its batch unrecorded and
    unpublished. True once it did."""
    with connection.cursor() as cursor:
        cursor.execute(WALK_HELD, [fanout.WALK_LOCK_SPACE >> 32, step.pk])
        held = [pid for (pid,) in cursor.fetchall()]
        saved = CampaignStep.objects.get(pk=step.pk).cursor_recipient_id
        if held and bisect.bisect_right(recipients, saved) >= batches * WALK_BATCH:
            cursor.execute("SELECT pg_terminate_backend(%s)", [held[0]])
            return bool(cursor.fetchone()[0])
    return False


def test_a_walk_killed_mid_walk_and_a_broker_wipe_still_reach_everyone_once(rig):
    """The walker's PostgreSQL connection is terminated in the middle of a walk task, five
    batches in, in the transaction handing out the next; beat revives the walk; the broker is
    wiped (FLUSHDB) with a few batches and the walk's next task queued. Every user gets the
    step exactly once, and the step and the campaign close only then."""
    users = fans(1200)
    recipients = sorted(Recipient.objects.filter(user_id__in=users).values_list("pk", flat=True))
    step = campaign_due_now(["inapp"])
    env = {**WORKER_ENV, "NOTIFIER_CAMPAIGN_BATCH_USERS": str(WALK_BATCH)}
    worker = rig.worker(**env)
    start(step)
    wait_until(
        lambda: kill_the_walk_mid_walk(step, recipients, batches=5),
        timeout=30,
        interval=0.002,
        message="the walk to be caught handing out a batch, five batches in",
    )
    idle(rig, worker)  # the walk task died with its connection; what it published ran
    assert messages_of(step).count() < len(users), "the fan-out finished before the kill"
    assert CampaignStep.objects.get(pk=step.pk).walk_done is False

    # Beat, minutes later: the walk has not been heard from, and is revived.
    assert fanout.steps_start_due(now=timezone.now() + REVIVE_AFTER).revived == [step.pk]
    client = rig.server.client()
    wait_until(
        lambda: 1 <= client.llen(BULK_PREPARE) <= 4,
        timeout=30,
        interval=0.002,
        message="the last batches of a walk task and its next task to be queued",
    )
    client.flushdb()  # the broker is wiped: those batches and the walk's next task are gone
    assert messages_of(step).count() < len(users), "the fan-out finished before the wipe"

    def everyone_and_only_then_closed() -> bool:
        sent = everyone_sent(step, users)
        assert sent or not closed(step), f"closed before everyone was written: {where(step)}"
        return sent and closed(step)

    beat_until(rig, step, everyone_and_only_then_closed, timeout=60, quiet_for=3.0)
    one_message_each(step, users)
    every_delivery_sent_once(step, ["inapp"], users)
    step.refresh_from_db()
    assert step.batches_done == step.batches_total == len(users) // WALK_BATCH
    assert Campaign.objects.get(pk=step.campaign_id).status == CampaignStatus.DONE


def triggered_campaign(reentry_days: int) -> CampaignStep:
    """A live triggered campaign on the fans' segment, as a lead would leave it approved."""
    campaign = campaign_create(
        name="Welcome back",
        category=NotificationType.objects.get(pk="promo.flash_sale"),
        created_by=None,
        segment=Segment.objects.create(name="Sale fans", tags_any=[FANS]),
        kind="triggered",
        channels=["email"],
        variables={"headline": "50% off"},
    )
    step = campaign.steps.get()
    VariantTemplate.objects.create(
        variant=step.variants.get(),
        channel="email",
        subject="{{ campaign.name }}: {{ headline }}",
        body="Hi {{ user.first_name }}, {{ headline }}\n{{ unsubscribe_url }}",
    )
    Campaign.objects.filter(pk=campaign.pk).update(reentry_days=reentry_days)
    Campaign.objects.filter(pk=campaign.pk).update(
        status=CampaignStatus.SCHEDULED, approved_definition=campaign_definition(campaign.pk)
    )
    return step


def test_a_triggered_campaign_reaches_who_entered_once_and_who_came_back_again(rig):
    """Real workers walk and write each evaluation's entrants: everyone in the segment at the
    first; at the next ones only the 100 who left and came back (re-entry days 0), never the
    900 who stayed. Each message reaches the provider once."""
    users = fans(1000)
    step = triggered_campaign(reentry_days=0)
    # Two messages of one campaign on one day: room under the daily cap for both.
    worker = rig.worker(
        **WORKER_ENV, NOTIFIER_MARKETING_CAP_DAY="5", NOTIFIER_MARKETING_CAP_WEEK="10"
    )

    def evaluated(expected: int) -> None:
        assert fanout.triggers_evaluate() == [step.pk]
        beat_until(
            rig,
            step,
            lambda: (
                messages_of(step).count() == expected
                and not deliveries_of(step).exclude(status__in=TERMINAL).exists()
            ),
        )
        idle(rig, worker)

    evaluated(1000)
    one_message_each(step, users)
    movers = users[:100]
    Recipient.objects.filter(user__in=movers).update(interest_tags=[])
    evaluated(1000)  # they left: nothing to send
    Recipient.objects.filter(user__in=movers).update(interest_tags=[FANS])
    evaluated(1100)  # they came back
    evaluated(1100)  # everyone stays: nothing more
    per_user = dict(
        messages_of(step).values("user_id").annotate(n=Count("pk")).values_list("user_id", "n")
    )
    assert {pk: per_user[pk] for pk in movers} == dict.fromkeys(movers, 2)
    assert set(per_user[pk] for pk in users[100:]) == {1}
    assert statuses(step) == {(S.SENT, ""): 1100}
    ledger = ledger_for(list(messages_of(step).values_list("pk", flat=True)), ["email"])
    assert (ledger.expected, ledger.lost, ledger.duplicated) == (1100, 0, 0), ledger


def test_a_campaigns_send_rate_paces_its_sends_and_loses_or_doubles_none(rig):
    """300 a minute (five a second, five at once): 40 emails cannot all go out in less than
    (40 - 5) / 5 = 7 seconds by the bucket's own clock (Redis TIME), however fast the worker;
    what the bucket refused went back to the queue and went out later, each exactly once."""
    users = fans(40)
    step = campaign_due_now(["email"])
    campaign = step.campaign
    Campaign.objects.filter(pk=campaign.pk).update(send_rate_per_minute=300)
    Campaign.objects.filter(pk=campaign.pk).update(
        approved_definition=campaign_definition(campaign.pk)
    )
    rig.worker(**WORKER_ENV)
    start(step)
    beat_until(rig, step, lambda: everyone_sent(step, users) and closed(step), timeout=90)
    one_message_each(step, users)
    every_delivery_sent_once(step, ["email"], users)
    times = sorted(sends_of(step).values_list("at", flat=True))
    # Database clock and Redis clock are one machine's: allow a second for the rest.
    assert times[-1] - times[0] >= timedelta(seconds=6), (times[0], times[-1])
