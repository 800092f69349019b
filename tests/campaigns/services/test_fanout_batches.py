"""A step closes only when every user of its audience is written, and each batch counts once.

Issue 11, item 1: a walk used to publish its batches inside its transaction, before the cursor
and the batch count were saved, so a walk whose transaction died (a PostgreSQL restart, a kill)
left batches running that no counter knew of; every run of a batch counted, copies included;
and the step closed on "batches done >= batches handed out". With one batch lost to the broker,
a step closed with users never written. In-process, as the other service tests: publishes are
recorded (tests/campaigns/conftest.py), a lost batch is one dropped from that record.
"""

from __future__ import annotations

import re
from datetime import timedelta

import pytest
import time_machine
from django.db import connection
from django.test import TestCase
from django.test.utils import CaptureQueriesContext
from django.utils import timezone

from campaigns.models import (
    Campaign,
    CampaignStatus,
    CampaignStep,
    FanoutBatch,
    Segment,
    StepStatus,
)
from campaigns.services import fanout
from campaigns.services.fanout import StartReport
from campaigns.tasks import fanout_batch
from notifier.models import Delivery, Message, Recipient
from notifier.services import pipeline
from notifier.status import DeliveryStatus
from tests.campaigns.approvals import FANS, NOTICE_AT, approved, audience, person

pytestmark = pytest.mark.django_db
USERS, PER_BATCH = 6, 2  # three batches
REVIVE_AFTER = fanout.WALK_STALE + timedelta(seconds=1)


class TransactionDied(Exception):
    """The walk's connection was dropped mid-walk: its transaction rolls back."""


@pytest.fixture
def step(roles, monkeypatch, published):
    """A campaign's "Notice" step, started, to a segment of six users in batches of two; its
    other steps are out of the way (skipped), so the campaign is done when this one is."""
    audience(USERS)
    monkeypatch.setattr(fanout, "BATCH_USERS", PER_BATCH)
    campaign = approved(
        person("Marketer"), person("Marketing lead"), Segment.objects.create(tags_any=[FANS])
    )
    campaign.steps.exclude(name="Notice").update(status=StepStatus.SKIPPED)
    traveller = time_machine.travel(NOTICE_AT)
    traveller.start()
    step = campaign.steps.get(name="Notice")
    assert beat().started == [step.pk]
    published.walks.clear()
    yield step
    traveller.stop()


def beat(*, minutes_later: bool = False) -> StartReport:
    """Beat's steps job (its publishes go out as it commits); `minutes_later`: WALK_STALE on."""
    with TestCase.captureOnCommitCallbacks(execute=True):
        return fanout.steps_start_due(
            now=timezone.now() + (REVIVE_AFTER if minutes_later else timedelta())
        )


def state(step: CampaignStep) -> CampaignStep:
    return CampaignStep.objects.get(pk=step.pk)


def run(published, batch: tuple[int, list[int]], times: int = 1) -> list[bool]:
    """Run a published batch `times` times (a broker re-delivery, a re-publish): which counted."""
    step_id, recipient_ids = batch
    counted = []
    for _ in range(times):
        before = CampaignStep.objects.get(pk=step_id).batches_done
        fanout.step_fanout_batch(step_id=step_id, recipient_ids=recipient_ids)
        counted.append(CampaignStep.objects.get(pk=step_id).batches_done > before)
    return counted


def messages_per_user(step: CampaignStep) -> dict[int, int]:
    per_user: dict[int, int] = {}
    for user_id in Message.objects.filter(step=step).values_list("user_id", flat=True):
        per_user[user_id] = per_user.get(user_id, 0) + 1
    return per_user


def test_a_walk_that_dies_mid_batch_publishes_nothing_of_it_and_the_next_hands_out_everyone_once(
    step, published, monkeypatch
):
    """Each batch is handed out in a transaction of its own: the walk dies while handing out
    its second batch, after the first committed. The first is recorded and published; of the
    second nothing survives, the publish included, and the next walk goes on from the cursor."""
    real = fanout.bulk_congested
    calls = {"n": 0}

    def dies_in_the_second_batch() -> bool:
        calls["n"] += 1
        if calls["n"] == 2:  # the first batch is committed, the second is being handed out
            raise TransactionDied
        return real()

    monkeypatch.setattr(fanout, "bulk_congested", dies_in_the_second_batch)
    with pytest.raises(TransactionDied):
        published.walk(step.pk)
    [(_, first)] = published.batches
    assert len(first) == PER_BATCH
    assert state(step).batches_total == 1
    assert state(step).cursor_recipient_id == max(first)
    assert FanoutBatch.objects.filter(step=step).count() == 1

    monkeypatch.setattr(fanout, "bulk_congested", real)
    assert published.walk(step.pk) is fanout.Walk.DONE
    handed_out = [pk for _, ids in published.batches for pk in ids]
    assert sorted(handed_out) == sorted(set(handed_out)) and len(handed_out) == USERS
    assert state(step).batches_total == FanoutBatch.objects.filter(step=step).count() == 3


def test_a_batch_that_runs_again_writes_nothing_and_counts_nothing(step, published):
    assert published.walk(step.pk) is fanout.Walk.DONE
    first, second, third = published.batches
    assert run(published, first, times=3) == [True, False, False]
    assert run(published, second, times=2) == [True, False]
    beat()
    # Two of three batches written, however often they ran: the step stays open.
    assert (state(step).batches_done, state(step).batches_total) == (2, 3)
    assert state(step).status == StepStatus.RUNNING

    assert run(published, third) == [True]
    assert beat().finished == [step.pk]
    assert (state(step).batches_done, state(step).batches_total) == (3, 3)
    assert set(messages_per_user(step).values()) == {1}
    assert len(messages_per_user(step)) == USERS


def test_a_step_closes_only_once_a_lost_batch_is_published_again_and_written(step, published):
    """The issue's run: a walk's transaction dies after handing out a batch, the walk is
    revived, a batch is lost to a broker wipe, and the copies run. The step stays open until
    beat finds the lost batch not done and publishes it again; then everyone has the step
    once and the step and campaign close."""
    assert published.walk(step.pk, batches=1) is fanout.Walk.CONTINUE
    assert published.walk(step.pk) is fanout.Walk.DONE
    first, lost, third = published.batches
    published.batches.clear()  # the broker was wiped: the middle batch is gone
    run(published, first, times=2)  # re-delivered after a worker died
    run(published, third, times=2)
    run(published, first)  # and a third copy
    assert beat().finished == []
    assert state(step).status == StepStatus.RUNNING
    assert (state(step).batches_done, state(step).batches_total) == (2, 3)

    # Minutes later nothing has been heard from the step: beat publishes the lost batch again.
    report = beat(minutes_later=True)
    assert report.revived == [step.pk]
    assert report.finished == []
    assert published.batches == [lost]
    assert published.walks == []  # the walk is over: it is not walked again
    run(published, published.batches.pop())

    assert beat().finished == [step.pk]
    assert state(step).status == StepStatus.DONE
    assert Campaign.objects.get(pk=step.campaign_id).status == CampaignStatus.DONE
    per_user = messages_per_user(step)
    assert len(per_user) == USERS and set(per_user.values()) == {1}
    assert (state(step).batches_done, state(step).batches_total) == (3, 3)


def test_a_revived_walk_goes_on_from_its_cursor_and_publishes_its_lost_batches(step, published):
    """The walk's task and the batch it had handed out were both lost (a broker wipe): beat
    publishes the batch again and the walk goes on from its cursor, in the same round."""
    assert published.walk(step.pk, batches=1) is fanout.Walk.CONTINUE
    [lost] = published.batches
    published.batches.clear()
    assert beat(minutes_later=True).revived == [step.pk]
    assert published.batches == [lost]
    assert published.walks == [step.pk]
    published.run_walk(step.pk)
    assert beat().finished == [step.pk]
    assert state(step).walk_round == 0
    per_user = messages_per_user(step)
    assert len(per_user) == USERS and set(per_user.values()) == {1}


def test_a_batch_queued_by_user_id_before_the_upgrade_makes_missing_profiles_in_bulk(
    step, published
):
    """A batch handed out by user id, before walks went by recipient profile (campaigns
    migration 0015), still runs from the queue (task `campaigns.fanout_batch`): on its users'
    profiles, the missing ones made in bulk (a host's users from before the install), a fixed
    handful of statements on the profile table whatever its size, and everyone written once."""
    assert published.walk(step.pk) is fanout.Walk.DONE
    handed_out = [pk for _, ids in published.batches for pk in ids]
    everyone = sorted(Recipient.objects.filter(pk__in=handed_out).values_list("user_id", flat=True))
    assert len(everyone) == USERS
    Recipient.objects.filter(user_id__in=everyone).delete()

    with CaptureQueriesContext(connection) as queries:
        fanout_batch(step.pk, everyone, state(step).walk_round)

    on_profiles = [q["sql"] for q in queries.captured_queries if "notifier_recipient" in q["sql"]]
    # The missing profiles read, one insert, read back; the profiles' users, then the users
    # with their profiles (a join); the batch's marketing frequencies: each for the whole
    # batch, none for one user.
    assert len(on_profiles) <= 7, on_profiles
    # (`user_id = ANY(array)` is the whole batch's: notifier.db.any_of.)
    one_user = re.compile(r'"user_id" = (?!ANY\()')
    assert not [sql for sql in on_profiles if one_user.search(sql)], on_profiles
    assert Recipient.objects.filter(user_id__in=everyone).count() == USERS
    assert sorted(messages_per_user(step)) == everyone
    assert set(messages_per_user(step).values()) == {1}


def test_a_deep_bulk_lane_pauses_the_walk_not_the_batches_it_handed_out(
    step, published, monkeypatch
):
    """The walk looks at the bulk lane's depth before each batch and waits while it is deep;
    the batches it handed out before are routed as usual, not held for the lane (held, they
    would wait for the release job, a few thousand recipients every 15 s: a million-user run
    stalled on it)."""
    assert published.walk(step.pk, batches=1) is fanout.Walk.CONTINUE
    monkeypatch.setattr(fanout, "bulk_congested", lambda: True)
    monkeypatch.setattr(pipeline, "bulk_congested", lambda: True)
    assert published.walk(step.pk) is fanout.Walk.WAIT
    [handed_out] = published.batches
    assert run(published, handed_out) == [True]
    statuses = set(
        Delivery.objects.filter(message__step=step).values_list("status", "reason").distinct()
    )
    assert statuses and all(status != DeliveryStatus.HELD for status, _ in statuses), statuses
    assert len(messages_per_user(step)) == PER_BATCH

    monkeypatch.setattr(fanout, "bulk_congested", lambda: False)
    assert published.walk(step.pk) is fanout.Walk.DONE  # the lane drained: the walk goes on
    assert len(published.batches) == USERS // PER_BATCH


def test_a_batch_reads_its_users_by_their_keys_whatever_the_planner_prefers(step, published):
    """A batch reads its users with their profiles. Bounded by the profiles' ids alone, a
    planner that costs an index look-up above a scan hashed the whole user table for each
    batch (14 ms at 100,000 users, where looking the thousand up took 1.6). The read names
    the users' keys too: even a planner made to hash the join looks the users up by key."""
    assert published.walk(step.pk) is fanout.Walk.DONE
    (_, first), *_ = published.batches
    with CaptureQueriesContext(connection) as queries:
        fanout.step_fanout_batch(step_id=step.pk, recipient_ids=first)
    (read,) = [
        q["sql"]
        for q in queries.captured_queries
        if q["sql"].startswith('SELECT "notifier_user"."id"') and "JOIN" in q["sql"]
    ]
    with connection.cursor() as cursor:
        cursor.execute("SET enable_nestloop = off")  # the hash join the planner chose
        cursor.execute("SET enable_mergejoin = off")
        cursor.execute("SET enable_seqscan = off")  # a tiny table would be scanned anyway
        cursor.execute("SET enable_bitmapscan = off")
        try:
            cursor.execute(f"EXPLAIN {read}")
            plan = "\n".join(row[0] for row in cursor.fetchall())
        finally:
            cursor.execute("RESET enable_nestloop")
            cursor.execute("RESET enable_mergejoin")
            cursor.execute("RESET enable_seqscan")
            cursor.execute("RESET enable_bitmapscan")
    assert "Hash Join" in plan, plan
    on_users = plan[plan.index("on notifier_user ") :].splitlines()
    assert "Index Cond: (id = ANY (" in on_users[1], plan
