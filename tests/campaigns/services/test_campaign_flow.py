"""A campaign from draft to done: approval, 3-2-1 steps on the clock, fan-out, pause, cancel."""

from __future__ import annotations

import threading
import uuid
from datetime import UTC, datetime, time, timedelta

import pytest
import time_machine
from django.db import OperationalError, connection, transaction
from django.utils import timezone

from campaigns.models import (
    CampaignStatus,
    CampaignStep,
    Holdout,
    Segment,
    StepStatus,
    StepVariant,
    VariantTemplate,
)
from campaigns.services import fanout
from campaigns.services.fanout import steps_start_due
from campaigns.services.lifecycle import (
    CampaignError,
    campaign_approve,
    campaign_cancel,
    campaign_create,
    campaign_move_event,
    campaign_pause,
    campaign_problems,
    campaign_resume,
    campaign_submit,
    copy_variant,
)
from notifier.models import (
    Consent,
    Delivery,
    InboxItem,
    Message,
    NotificationType,
    User,
    recipient_ids_of,
)
from notifier.services.release import held_release
from notifier.status import DeliveryStatus, Reason
from tests.factories import UserFactory, staff_member
from tests.table_statistics import planner_rows_and_changes

pytestmark = pytest.mark.django_db
S = DeliveryStatus
NOW = datetime(2026, 11, 1, 9, 0, tzinfo=UTC)
EVENT = datetime(2026, 11, 11, 12, 0, tzinfo=UTC)


FANS = "sale-fans"


def audience(count: int, **fields) -> list[User]:
    # In UTC unless a test says otherwise: the steps start at 11:00-12:00 UTC (EVENT and the
    # days before it), in the day of users there, whatever the hour the tests are run at.
    fields.setdefault("time_zone", "UTC")
    users = UserFactory.create_batch(count, interest_tags=[FANS], **fields)
    Consent.objects.bulk_create(
        [
            Consent(
                user=u,
                channel="all",
                granted=True,
                at=timezone.now(),
                source="test",
                wording="offers",
            )
            for u in users
        ]
    )
    return users


def write_copy(
    variant: StepVariant,
    *,
    title: str = "{{ campaign.name }}: {{ headline }}",
    body: str = "Hi {{ user.first_name }}, {{ headline }}",
) -> None:
    VariantTemplate.objects.update_or_create(
        variant=variant,
        channel="inapp",
        locale="",
        defaults={"title": title, "body": body, "link": "https://shop.example.com/sale"},
    )
    VariantTemplate.objects.update_or_create(
        variant=variant,
        channel="email",
        locale="",
        defaults={"subject": title, "body": body + "\n{{ unsubscribe_url }}"},
    )


def make_campaign(
    creator,
    *,
    segment=None,
    event_at=EVENT,
    holdout=0,
    kind="one_off",
    priority="low",
    plan=None,
    at_ten_local: tuple[str, ...] = (),
):
    campaign = campaign_create(
        name="Double 11",
        category=NotificationType.objects.get(pk="promo.flash_sale"),
        created_by=creator,
        segment=segment or Segment.objects.create(name=uuid.uuid4().hex, tags_any=[FANS]),
        event_at=event_at,
        channels=["inapp", "email"],
        variables={"headline": "50% off"},
        holdout_percent=holdout,
        kind=kind,
        priority=priority,
        **({"plan": plan} if plan else {}),
    )
    for step in campaign.steps.all():
        for variant in step.variants.all():
            write_copy(variant)
    # Steps sent at 10:00 in each user's zone: part of what the lead approves.
    campaign.steps.filter(name__in=at_ten_local).update(timing="local_time", local_time=time(10))
    return campaign


def scheduled(creator, approver, **kwargs):
    with time_machine.travel(NOW):
        campaign = make_campaign(creator, **kwargs)
        campaign_submit(campaign=campaign, by=creator)
        campaign_approve(campaign=campaign, by=approver)
    return campaign


def start_step(campaign, name: str, published, at=None):
    step = campaign.steps.get(name=name)
    with time_machine.travel(at or step_start(campaign, step)):
        report = steps_start_due()
        assert step.pk in report.started
        published.run_walk(step.pk)
    return CampaignStep.objects.get(pk=step.pk)


def step_start(campaign, step):
    return campaign.event_at + timedelta(minutes=step.offset_minutes)


# --- Creating and approving -------------------------------------------------------------------


def test_a_new_campaign_gets_the_3_2_1_plan_with_a_variant_each(marketer):
    campaign = make_campaign(marketer)
    steps = list(campaign.steps.order_by("offset_minutes"))
    assert [(s.name, s.offset_minutes) for s in steps] == [
        ("Notice", -4320),
        ("Reminder", -2880),
        ("Last call", -60),
    ]
    assert all(s.variants.count() == 1 for s in steps)
    assert campaign.status == CampaignStatus.DRAFT


def test_problems_say_what_is_missing(marketer):
    with time_machine.travel(NOW):
        campaign = make_campaign(marketer)
        assert campaign_problems(campaign) == []
        variant = campaign.steps.get(name="Notice").variants.get()
        VariantTemplate.objects.filter(variant=variant, channel="email").delete()
        VariantTemplate.objects.filter(variant=variant, channel="inapp").update(
            body="{{ coupon_code }}"
        )
        problems = campaign_problems(campaign)
    assert any("write the email copy" in p for p in problems)
    assert any("unknown variable coupon_code" in p for p in problems)
    with time_machine.travel(EVENT):
        assert any("has already passed" in p for p in campaign_problems(campaign))


def test_copy_is_checked_against_the_campaigns_own_values_when_submitted(marketer):
    """Copy that was light with the values it was saved with can become heavy when the campaign's
    variables change afterwards: submitting renders it with the values it will be sent with."""
    with time_machine.travel(NOW):
        campaign = make_campaign(marketer)
        variant = campaign.steps.get(name="Notice").variants.get()
        VariantTemplate.objects.filter(variant=variant, channel="inapp").update(
            body="{% for i in range(rows|int) %}{% for j in range(rows|int) %}.{% endfor %}"
            "{% endfor %}"
        )
        campaign.variables = {"headline": "50% off", "rows": "3"}
        campaign.save(update_fields=["variables"])
        assert campaign_problems(campaign) == []
        campaign.variables = {"headline": "50% off", "rows": "1000"}  # a million iterations
        campaign.save(update_fields=["variables"])
        problems = campaign_problems(campaign)
        with pytest.raises(CampaignError, match="steps to render"):
            campaign_submit(campaign=campaign, by=marketer)
    assert any("inapp body" in p and "steps to render" in p for p in problems)
    assert campaign.status == CampaignStatus.DRAFT


def test_approval_needs_a_second_person_with_the_permission(marketer, lead):
    with time_machine.travel(NOW):
        campaign = make_campaign(lead)
        campaign_submit(campaign=campaign, by=lead)
        with pytest.raises(CampaignError, match="permission"):
            campaign_approve(campaign=campaign, by=marketer)
        with pytest.raises(CampaignError, match="someone other than"):
            campaign_approve(campaign=campaign, by=lead)
        other_lead = staff_member("Marketing lead")
        campaign_approve(campaign=campaign, by=other_lead)
    campaign.refresh_from_db()
    assert campaign.status == CampaignStatus.SCHEDULED
    assert campaign.approved_by_id == other_lead.pk


def test_a_draft_with_problems_cannot_be_submitted(marketer):
    with time_machine.travel(NOW):
        campaign = make_campaign(marketer)
        VariantTemplate.objects.filter(variant__step__campaign=campaign).delete()
        with pytest.raises(CampaignError, match="write the inapp copy"):
            campaign_submit(campaign=campaign, by=marketer)
    assert campaign.status == CampaignStatus.DRAFT


# --- Steps on the clock ----------------------------------------------------------------------


def test_a_due_step_starts_once_even_when_the_job_runs_twice(
    marketer, lead, published, django_capture_on_commit_callbacks
):
    campaign = scheduled(marketer, lead)
    notice = campaign.steps.get(name="Notice")
    with time_machine.travel(step_start(campaign, notice) - timedelta(minutes=1)):
        assert steps_start_due().started == []
    with (
        time_machine.travel(step_start(campaign, notice)),
        django_capture_on_commit_callbacks(execute=True),
    ):
        first, second = steps_start_due(), steps_start_due()
    assert (first.started, second.started) == ([notice.pk], [])
    assert published.walks == [notice.pk]
    campaign.refresh_from_db()
    assert campaign.status == CampaignStatus.RUNNING


@pytest.mark.django_db(transaction=True)
def test_two_beat_processes_start_a_step_once(marketer, lead, published):
    campaign = scheduled(marketer, lead)
    notice = campaign.steps.get(name="Notice")
    barrier = threading.Barrier(4)
    started: list[int] = []

    def beat() -> None:
        try:
            barrier.wait()
            with time_machine.travel(step_start(campaign, notice)):
                started.extend(steps_start_due().started)
        finally:
            connection.close()

    threads = [threading.Thread(target=beat) for _ in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=30)
    assert started == [notice.pk]


def test_a_step_whose_moment_passed_is_skipped_with_a_reason_not_sent_late(
    marketer, lead, published
):
    campaign = scheduled(marketer, lead)
    notice = campaign.steps.get(name="Notice")
    with time_machine.travel(step_start(campaign, notice) + timedelta(hours=2)):
        report = steps_start_due()
    notice.refresh_from_db()
    assert report.skipped == [notice.pk]
    assert notice.status == StepStatus.SKIPPED
    assert "missed by 120 min" in notice.skip_reason
    assert Message.objects.filter(step=notice).count() == 0


def test_moving_the_event_moves_the_pending_steps(marketer, lead, published):
    campaign = scheduled(marketer, lead)
    notice = campaign.steps.get(name="Notice")
    old_start = step_start(campaign, notice)
    with time_machine.travel(NOW):
        campaign_move_event(campaign=campaign, event_at=EVENT + timedelta(days=2), by=marketer)
    with time_machine.travel(old_start):
        assert steps_start_due().started == []  # no longer due
    with time_machine.travel(old_start + timedelta(days=2)):
        assert steps_start_due().started == [notice.pk]


def test_a_step_due_while_paused_waits_and_is_skipped_once_its_moment_passed(
    marketer, lead, published
):
    campaign = scheduled(marketer, lead)
    notice = campaign.steps.get(name="Notice")
    with time_machine.travel(NOW):
        campaign_pause(campaign=campaign, by=marketer)
    with time_machine.travel(step_start(campaign, notice)):
        assert steps_start_due().started == []
    with time_machine.travel(step_start(campaign, notice) + timedelta(hours=1)):
        campaign_resume(campaign=campaign, by=marketer)
        report = steps_start_due()
    notice.refresh_from_db()
    assert report.skipped == []  # resuming skipped it, while the campaign still said why
    assert notice.status == StepStatus.SKIPPED
    assert notice.skip_reason == "missed by 60 min: the campaign was paused; not sent late"


# --- Fan-out -------------------------------------------------------------------------------------


def test_fanout_writes_one_message_per_recipient_and_routes_it(marketer, lead, published):
    users = audience(25)
    campaign = scheduled(marketer, lead)
    step = start_step(campaign, "Notice", published)
    messages = Message.objects.filter(step=step)
    assert messages.count() == 25
    assert set(messages.values_list("user_id", flat=True)) == {u.pk for u in users}
    assert step.walk_done is True
    assert step.batches_done == step.batches_total == 1
    inapp = Delivery.objects.filter(message__step=step, channel="inapp")
    assert set(inapp.values_list("status", flat=True)) == {S.SENT}  # written with the batch
    assert InboxItem.objects.filter(delivery__in=inapp).count() == 25
    content = inapp.first().content
    assert content["title"] == "Double 11: 50% off"
    assert content["body"].startswith("Hi ")


def test_walking_the_audience_again_writes_nothing_twice(marketer, lead, published):
    audience(12)
    campaign = scheduled(marketer, lead)
    step = start_step(campaign, "Notice", published)
    CampaignStep.objects.filter(pk=step.pk).update(cursor_recipient_id=0, walk_done=False)
    published.run_walk(step.pk)
    assert Message.objects.filter(step=step).count() == 12


@pytest.mark.django_db(transaction=True)
def test_a_walk_waits_out_a_batch_counting_itself_but_stops_for_another_walk(
    marketer, lead, published
):
    """A batch finishing updates the step row's counters; a walk that ran into that row lock
    used to take it for another walk and stop with no one to carry on (found by the 100k
    benchmark: the fan-out stalled at 60,000). Only a real second walk stops it."""
    audience(3)
    campaign = scheduled(marketer, lead)
    step = campaign.steps.get(name="Notice")
    with time_machine.travel(step_start(campaign, step)):
        steps_start_due()
    holding, release = threading.Event(), threading.Event()

    def hold(sql: str) -> None:  # another connection holds a lock for a moment
        try:
            with transaction.atomic():
                with connection.cursor() as cursor:
                    cursor.execute(sql, [step.pk])
                holding.set()
                release.wait(timeout=10)
        finally:
            connection.close()

    counter = threading.Thread(
        target=hold,
        args=("UPDATE campaigns_campaignstep SET batches_done = batches_done + 1 WHERE id = %s",),
    )
    counter.start()
    assert holding.wait(timeout=10)
    threading.Timer(0.3, release.set).start()
    assert fanout.step_walk(step_id=step.pk) is fanout.Walk.DONE  # waited, then walked
    counter.join(timeout=10)
    assert len(published.batches) == 1

    holding.clear()
    release.clear()
    CampaignStep.objects.filter(pk=step.pk).update(walk_done=False, cursor_recipient_id=0)
    walker = threading.Thread(
        target=hold, args=(f"SELECT pg_advisory_xact_lock({fanout.WALK_LOCK_SPACE} | %s)",)
    )
    walker.start()
    assert holding.wait(timeout=10)
    try:
        assert fanout.step_walk(step_id=step.pk) is fanout.Walk.STOPPED
    finally:
        release.set()
        walker.join(timeout=10)
    assert len(published.batches) == 1


@pytest.mark.django_db(transaction=True)
def test_a_batch_finishing_does_not_wait_for_a_walk_reading_the_audience(
    marketer, lead, published, monkeypatch
):
    """On a large segment, reading the next batch of the audience is the walk's slow part. A
    walk used to lock the step row before it, for all its batches, and every batch finishing
    meanwhile waited to count itself (the million-user bench: two workers, one in a walk, the
    other stuck behind it). The row is locked only to record the batch, after the read."""
    audience(3)
    campaign = scheduled(marketer, lead)
    step = campaign.steps.get(name="Notice")
    with time_machine.travel(step_start(campaign, step)):
        steps_start_due()
    counted: list[bool] = []

    def batch_counts_itself() -> None:  # another worker's batch, finishing now
        try:
            with transaction.atomic(), connection.cursor() as cursor:
                cursor.execute("SET LOCAL lock_timeout = '2s'")
                cursor.execute(
                    "UPDATE campaigns_campaignstep SET batches_done = batches_done + 1 "
                    "WHERE id = %s",
                    [step.pk],
                )
            counted.append(True)
        except OperationalError:  # lock_timeout: it waited on the walk
            counted.append(False)
        finally:
            connection.close()

    reading = fanout.segment_walk

    def read_while_a_batch_finishes(*args, **kwargs):
        other = threading.Thread(target=batch_counts_itself)
        other.start()
        other.join(timeout=10)
        return reading(*args, **kwargs)

    monkeypatch.setattr(fanout, "segment_walk", read_while_a_batch_finishes)
    assert fanout.step_walk(step_id=step.pk) is fanout.Walk.DONE
    assert counted and all(counted)
    assert len(published.batches) == 1
    assert CampaignStep.objects.get(pk=step.pk).batches_done == len(counted)


@pytest.mark.django_db(transaction=True)
def test_a_walk_analyzes_the_delivery_log_its_batches_outgrew(
    marketer, lead, published, monkeypatch
):
    """A table analyzed nearly empty tells the planner it is empty while a campaign writes into
    it (a new install; autovacuum comes a minute later, or never where it is off): the deliver
    step's claim then joined its messages by scanning them all. Before each batch, the walk
    analyzes the tables the batches grew beyond what they held at their last analyze."""
    from notifier.services import pipeline

    monkeypatch.setattr(fanout, "BATCH_USERS", 10)
    monkeypatch.setattr(pipeline, "BULK_STATISTICS_MINIMUM", 15)
    audience(30)
    campaign = scheduled(marketer, lead)
    step = campaign.steps.get(name="Notice")
    with connection.cursor() as cursor:
        cursor.execute("SELECT pg_stat_force_next_flush()")  # earlier writes counted first
        cursor.execute("ANALYZE notifier_message, notifier_delivery")  # empty, as on day one
    assert planner_rows_and_changes("notifier_delivery") == (0.0, 0)
    with time_machine.travel(step_start(campaign, step)):
        steps_start_due()
        assert published.walk(step.pk, batches=1) is fanout.Walk.CONTINUE
        (batch,) = published.batches
        fanout.step_fanout_batch(step_id=step.pk, recipient_ids=batch[1])
        # Ten messages, twenty deliveries (in-app and email) written since the analyze.
        assert planner_rows_and_changes("notifier_delivery") == (0.0, 20)
        assert planner_rows_and_changes("notifier_message") == (0.0, 10)
        published.walk(step.pk, batches=1)
    # The deliveries outgrew their statistics (20 changed, at least 15, and as many as they
    # held): analyzed. Ten messages are under the minimum: left to autovacuum.
    assert planner_rows_and_changes("notifier_delivery") == (20.0, 0)
    assert planner_rows_and_changes("notifier_message") == (0.0, 10)
    assert len(published.batches) == 2


def test_a_batch_racing_another_run_of_itself_starts_over_and_writes_nothing_twice(
    marketer, lead, published, monkeypatch
):
    """Two runs of one batch at once: both see the keys free, one COPY meets the other's rows
    at the unique key, and that run starts over, skipping what the other wrote."""
    from campaigns.services import fanout
    from notifier.services import pipeline

    users = audience(6)
    campaign = scheduled(marketer, lead)
    step = campaign.steps.get(name="Notice")
    with time_machine.travel(step_start(campaign, step)):
        steps_start_due()
        ids = sorted(u.pk for u in users)
        fanout.step_fanout_batch(
            step_id=step.pk, recipient_ids=recipient_ids_of(ids[:4])
        )  # the other run, done
        real = pipeline.messages_unwritten
        stale = iter([lambda rows: list(rows)])  # the first look predates the other's commit
        monkeypatch.setattr(pipeline, "messages_unwritten", lambda rows: next(stale, real)(rows))
        report = fanout.step_fanout_batch(step_id=step.pk, recipient_ids=recipient_ids_of(ids))
    assert (report.messages, report.existing) == (2, 4)
    assert sorted(Message.objects.filter(step=step).values_list("user_id", flat=True)) == ids
    assert Delivery.objects.filter(message__step=step).count() == 6 * 2
    assert InboxItem.objects.filter(message__step=step).count() == 6  # none twice


def test_the_holdout_gets_nothing_and_is_recorded(marketer, lead, published):
    users = audience(200)
    campaign = scheduled(marketer, lead, holdout=20)
    step = start_step(campaign, "Notice", published)
    held = set(Holdout.objects.filter(campaign=campaign).values_list("user_id", flat=True))
    reached = set(Message.objects.filter(step=step).values_list("user_id", flat=True))
    assert 20 < len(held) < 60
    assert held.isdisjoint(reached)
    assert held | reached == {u.pk for u in users}


def test_each_variant_renders_its_own_copy_for_its_share(marketer, lead, published):
    audience(120)
    with time_machine.travel(NOW):
        campaign = make_campaign(marketer)
        notice = campaign.steps.get(name="Notice")
        variant_b = copy_variant(source=notice.variants.get(), name="B")
        write_copy(variant_b, title="Last chance: {{ headline }}")
        campaign_submit(campaign=campaign, by=marketer)
        campaign_approve(campaign=campaign, by=UserFactory(is_superuser=True))
    start_step(campaign, "Notice", published)
    b_messages = Message.objects.filter(step=notice, variant=variant_b)
    assert 30 < b_messages.count() < 90
    b_title = Delivery.objects.filter(message__in=b_messages, channel="inapp").first()
    assert b_title.content["title"] == "Last chance: 50% off"


def test_a_local_time_step_holds_each_message_until_the_users_hour(marketer, lead, published):
    shanghai, new_york = (
        audience(1, time_zone="Asia/Shanghai")[0],
        audience(1, time_zone="America/New_York")[0],
    )
    campaign = scheduled(marketer, lead, at_ten_local=("Reminder",))
    reminder = campaign.steps.get(name="Reminder")
    start = step_start(campaign, reminder) - timedelta(hours=26)
    start_step(campaign, "Reminder", published, at=start)
    for user, tz in ((shanghai, "Asia/Shanghai"), (new_york, "America/New_York")):
        delivery = Delivery.objects.get(message__step=reminder, message__user=user, channel="inapp")
        assert (delivery.status, delivery.reason) == (S.HELD, Reason.SCHEDULED)
        local = delivery.next_attempt_at.astimezone(__import__("zoneinfo").ZoneInfo(tz))
        assert (local.date().isoformat(), local.hour) == ("2026-11-09", 10)


# --- Pause, resume, cancel -----------------------------------------------------------------------


def test_pausing_holds_what_is_queued_and_stops_pending_batches(
    marketer, lead, published, inapp_through_the_queue
):
    audience(30)
    campaign = scheduled(marketer, lead)
    notice = campaign.steps.get(name="Notice")
    from campaigns.services.fanout import step_fanout_batch

    with time_machine.travel(step_start(campaign, notice)):
        steps_start_due()
        published.walk(notice.pk)
        first_batch = published.batches.pop(0)
        step_fanout_batch(step_id=first_batch[0], recipient_ids=first_batch[1][:10])
        held = campaign_pause(campaign=campaign, by=marketer)
        assert held == 20  # ten recipients x in-app and email were queued
        assert set(
            Delivery.objects.filter(message__campaign=campaign).values_list("reason", flat=True)
        ) == {Reason.CAMPAIGN_PAUSED}
        report = step_fanout_batch(step_id=first_batch[0], recipient_ids=first_batch[1][10:])
        assert report.messages == 0  # a batch already queued writes nothing while paused
        released = campaign_resume(campaign=campaign, by=marketer)
        assert released == 20
        assert held_release().released == 20


def test_cancelling_cancels_pending_steps_and_everything_not_yet_sent(marketer, lead, published):
    audience(10)
    campaign = scheduled(marketer, lead)
    start_step(campaign, "Notice", published)
    cancelled = campaign_cancel(campaign=campaign, by=marketer)
    assert cancelled == 10  # the emails; the in-app items went out with the batch
    assert set(
        Delivery.objects.filter(message__campaign=campaign).values_list("channel", "status")
    ) == {("email", S.CANCELLED), ("inapp", S.SENT)}
    assert set(campaign.steps.values_list("status", flat=True)) == {StepStatus.CANCELLED}
    with time_machine.travel(EVENT):
        assert steps_start_due().started == []


def test_a_finished_campaign_is_done(marketer, lead, published):
    audience(3)
    campaign = scheduled(marketer, lead)
    for name in ("Notice", "Reminder", "Last call"):
        step = start_step(campaign, name, published)
        with time_machine.travel(step_start(campaign, step)):
            steps_start_due()
    campaign.refresh_from_db()
    assert campaign.status == CampaignStatus.DONE
    assert set(campaign.steps.values_list("status", flat=True)) == {StepStatus.DONE}


# --- Competing campaigns and triggered campaigns -------------------------------------------------


def test_when_two_campaigns_compete_for_the_cap_the_higher_priority_wins(
    marketer, lead, published, settings
):
    settings.NOTIFIER_MARKETING_CAP_DAY, settings.NOTIFIER_MARKETING_CAP_WEEK = 1, 5
    user = audience(1, time_zone="UTC")[0]
    low = scheduled(marketer, lead, priority="low", at_ten_local=("Reminder",))
    high = scheduled(marketer, lead, priority="high", at_ten_local=("Reminder",))
    reminders = [campaign.steps.get(name="Reminder") for campaign in (low, high)]
    with time_machine.travel(step_start(low, reminders[0]) - timedelta(hours=26)):
        assert sorted(steps_start_due().started) == sorted(step.pk for step in reminders)
        for step in reminders:
            published.run_walk(step.pk)
    with time_machine.travel(datetime(2026, 11, 9, 10, 1, tzinfo=UTC)):
        held_release()
    winner = Delivery.objects.filter(message__campaign=high, message__user=user)
    loser = Delivery.objects.filter(message__campaign=low, message__user=user)
    assert set(winner.values_list("status", flat=True)) == {S.QUEUED}
    assert set(loser.values_list("reason", flat=True)) == {Reason.FREQUENCY_CAP}
