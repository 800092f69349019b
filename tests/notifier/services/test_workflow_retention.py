"""Retention of the workflows' rows, on PostgreSQL: the nightly job prunes closed digests and
finished topic sends past the retention window, ended snoozes and throttle slots out of their
window, in batches; it keeps open digests, walking topic sends, running snoozes and slots still
counted, and a digest as long as any message points at it."""

from __future__ import annotations

import threading
from datetime import timedelta

import pytest
import time_machine
from django.db import connection, transaction
from django.utils import timezone

from notifier.api import topic_subscribe
from notifier.models import (
    Digest,
    DigestState,
    Message,
    NotificationType,
    Snooze,
    ThrottleSlot,
    Topic,
    TopicSend,
    TopicSendStatus,
    TopicSnooze,
)
from notifier.services.retention import retention_run
from tests.factories import UserFactory
from tests.notifier.services.test_retention import DAYS, OLD, made_long_ago, make_message

pytestmark = pytest.mark.django_db


def digest(user, *, state: str, age: timedelta) -> Digest:
    at = timezone.now() - age
    return Digest.objects.create(
        user=user,
        type_id="social.new_comment",
        key=f"post:{age.days}:{state}",
        state=state,
        opened_at=at,
        due_at=at,
        flushed_at=None if state == DigestState.OPEN else at,
    )


def topic_send(*, status: str, age: timedelta) -> TopicSend:
    at = timezone.now() - age
    return TopicSend.objects.create(
        topic=Topic.objects.get_or_create(key="card:42", defaults={"created_at": at})[0],
        type_id="social.new_follower",
        status=status,
        created_at=at,
        updated_at=at,
    )


def alive(row) -> bool:
    return type(row).objects.filter(pk=row.pk).exists()


def test_closed_digests_past_the_window_go_once_no_message_points_at_them(published, tmp_path):
    user = UserFactory()
    empty_old = digest(user, state=DigestState.EMPTY, age=OLD)
    sent_old = digest(user, state=DigestState.SENT, age=OLD)
    still_pointed_at = digest(user, state=DigestState.SENT, age=OLD)
    open_old = digest(user, state=DigestState.OPEN, age=OLD)
    sent_recent = digest(user, state=DigestState.SENT, age=timedelta(days=3))
    # sent_old's message and collected message are old and finished: they go this run, then it.
    own = made_long_ago(user, channels=("email",))
    collected = made_long_ago(user, channels=("email",))
    Message.objects.filter(pk__in=[own.pk, collected.pk]).update(digest=sent_old)
    Digest.objects.filter(pk=sent_old.pk).update(message=own)
    # still_pointed_at collected a message that is recent: it stays, and so does the digest.
    Message.objects.filter(pk=make_message(user, channels=("email",)).pk).update(
        digest=still_pointed_at
    )
    report = retention_run(days=DAYS, archive_dir=tmp_path)
    assert report.messages == 2
    assert report.workflows.counts["digests"] == 2
    assert [alive(d) for d in (empty_old, sent_old)] == [False, False]
    assert [alive(d) for d in (still_pointed_at, open_old, sent_recent)] == [True, True, True]
    connection.check_constraints()  # no message points at a digest that is gone


def test_a_digest_kept_loses_only_the_link_to_its_own_message_when_that_goes(published, tmp_path):
    user = UserFactory()
    kept = digest(user, state=DigestState.SENT, age=timedelta(days=3))
    own = made_long_ago(user, channels=("email",))
    Digest.objects.filter(pk=kept.pk).update(message=own)
    retention_run(days=DAYS, archive_dir=tmp_path)
    kept.refresh_from_db()
    assert not Message.objects.filter(pk=own.pk).exists()
    assert kept.message_id is None
    connection.check_constraints()


def test_finished_topic_sends_past_the_window_go_and_walking_ones_stay(published, tmp_path):
    done_old = topic_send(status=TopicSendStatus.DONE, age=OLD)
    walking_old = topic_send(status=TopicSendStatus.WALKING, age=OLD)
    done_recent = topic_send(status=TopicSendStatus.DONE, age=timedelta(days=3))
    report = retention_run(days=DAYS, archive_dir=tmp_path)
    assert report.workflows.counts["topic_sends"] == 1
    assert [alive(s) for s in (done_old, walking_old, done_recent)] == [False, True, True]


def test_ended_snoozes_go_and_running_ones_stay_even_with_retention_off(published, settings):
    settings.NOTIFIER_RETENTION_DAYS = 0
    user, other = UserFactory(), UserFactory()
    now = timezone.now()
    ended = Snooze.objects.create(
        user=user, type_id="social.new_follower", until=now - timedelta(minutes=1), at=now
    )
    running = Snooze.objects.create(
        user=other, type_id="social.new_follower", until=now + timedelta(hours=1), at=now
    )
    forever = Snooze.objects.create(user=user, type_id="social.new_comment", until=None, at=now)
    topic_subscribe("card:42", [user, other])
    topic = Topic.objects.get(key="card:42")
    topic_ended = TopicSnooze.objects.create(
        user=user, topic=topic, until=now - timedelta(seconds=1), at=now
    )
    topic_forever = TopicSnooze.objects.create(user=other, topic=topic, until=None, at=now)
    old_send = topic_send(status=TopicSendStatus.DONE, age=OLD)
    report = retention_run()
    assert report.cutoff is None  # the log is kept whole
    assert (report.workflows.counts["snoozes"], report.workflows.counts["topic_snoozes"]) == (1, 1)
    assert [alive(s) for s in (ended, running, forever)] == [False, True, True]
    assert [alive(s) for s in (topic_ended, topic_forever)] == [False, True]
    assert alive(old_send)  # a record: kept while retention is off


def test_throttle_slots_go_once_out_of_their_types_window(published):
    NotificationType.objects.filter(pk="social.new_follower").update(
        throttle_limit=1, throttle_window_s=86400
    )
    user = UserFactory()
    now = timezone.now()

    def slot(type_key: str, age: timedelta) -> ThrottleSlot:
        return ThrottleSlot.objects.create(
            user=user, type_key=type_key, key="", at=now - age, message_id=1
        )

    outside = slot("social.new_follower", timedelta(days=1, minutes=1))
    inside = slot("social.new_follower", timedelta(hours=23))
    no_throttle_now = slot("social.new_comment", timedelta(minutes=5))
    report = retention_run(days=0)
    assert report.workflows.counts["throttle_slots"] == 2
    assert [alive(s) for s in (outside, inside, no_throttle_now)] == [False, True, False]
    # The slot left is pruned once it too is out of the window, not before.
    with time_machine.travel(now + timedelta(hours=1, minutes=1)):
        assert retention_run(days=0).workflows.counts["throttle_slots"] == 1
    assert not ThrottleSlot.objects.exists()


@pytest.mark.django_db(transaction=True)
def test_a_row_locked_by_someone_snoozing_again_is_skipped_not_waited_for(published):
    user, other = UserFactory(), UserFactory()
    ended = timezone.now() - timedelta(minutes=1)
    locked = Snooze.objects.create(user=user, type_id="social.new_follower", until=ended, at=ended)
    free = Snooze.objects.create(user=other, type_id="social.new_follower", until=ended, at=ended)
    holding, release = threading.Event(), threading.Event()

    def snoozing_again() -> None:
        try:
            with transaction.atomic():
                Snooze.objects.select_for_update().filter(pk=locked.pk).update(
                    until=timezone.now() + timedelta(days=7)
                )
                holding.set()
                release.wait(timeout=30)
        finally:
            connection.close()

    thread = threading.Thread(target=snoozing_again)
    thread.start()
    try:
        assert holding.wait(timeout=10)
        report = retention_run(days=0)
        assert release.is_set() is False  # the run did not wait for the lock
    finally:
        release.set()
        thread.join(timeout=30)
    assert report.workflows.counts["snoozes"] == 1
    assert alive(locked) and not alive(free)
    locked.refresh_from_db()
    assert locked.until is not None and locked.until > timezone.now()  # the new snooze stands


def test_pruning_goes_in_batches_and_a_dry_run_only_counts(published, tmp_path):
    now = timezone.now()
    users = UserFactory.create_batch(5)
    for user in users:
        Snooze.objects.create(
            user=user, type_id="social.new_follower", until=now - timedelta(hours=1), at=now
        )
        digest(user, state=DigestState.EMPTY, age=OLD)
    dry = retention_run(days=DAYS, archive_dir=tmp_path, dry_run=True)
    assert (dry.workflows.counts["snoozes"], dry.workflows.counts["digests"]) == (5, 5)
    assert Snooze.objects.count() == 5 and Digest.objects.count() == 5
    assert "would prune" in dry.summary()

    # A spent budget still gives every kind one batch; the next run finishes.
    first = retention_run(days=DAYS, archive_dir=tmp_path, batch_size=2, budget_s=0)
    assert (first.workflows.counts["snoozes"], first.workflows.counts["digests"]) == (2, 2)
    assert first.finished is False
    rest = retention_run(days=DAYS, archive_dir=tmp_path, batch_size=2)
    assert (rest.workflows.counts["snoozes"], rest.workflows.counts["digests"]) == (3, 3)
    assert rest.finished is True
    assert not Snooze.objects.exists() and not Digest.objects.exists()
