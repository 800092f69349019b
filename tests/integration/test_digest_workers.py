"""Digests through a real Celery worker on Redis and PostgreSQL: comments on one post within
the window reach the inbox as the first one, then one digest of the rest, sent by the beat
task's flush on the worker, updating the first's inbox item in place; a person's hourly cadence
holds the rest until their next whole hour, and two flushes at the due time send one."""

from __future__ import annotations

import threading
import time
from collections import Counter
from datetime import timedelta
from unittest import mock
from zoneinfo import ZoneInfo

import psycopg2
import pytest
from django.db import connection
from django.db.models import Count
from django.utils import timezone

from notifier import dispatch
from notifier.api import notify, notify_many
from notifier.models import Digest, DigestState, InboxItem, Message, Recipient, User
from notifier.models.recipients import recipient_for
from notifier.policies.digests import Cadence, CadenceChoice, digest_due_at
from notifier.queues import MAINTENANCE_QUEUE
from notifier.services.cadences import digest_cadence_set
from notifier.services.pipeline import messages_prepare
from notifier.tasks import flush_digests_task
from tests.conftest import wait_until
from tests.factories import UserFactory, daytime_zone

pytestmark = pytest.mark.integration


def comment(user, who: str) -> Message:
    return notify(
        user,
        "social.new_comment",
        {
            "commenter_name": who,
            "post_title": "My trip",
            "excerpt": f"{who} was here",
            "comment_url": "https://x.test/p/42",
        },
        channels=["inapp"],
        digest_key="post:42",
    )


def test_a_burst_of_comments_reaches_the_inbox_as_the_first_and_one_digest(worker):
    user = UserFactory()
    comment(user, "Ana")
    wait_until(lambda: InboxItem.objects.filter(user=user).count() == 1, message="the first")
    rest = [comment(user, name) for name in ("Ben", "Cy", "Di")]
    wait_until(
        lambda: (
            Message.objects.filter(pk__in=[m.pk for m in rest], digest__isnull=False).count() == 3
        ),
        message="the rest to be collected",
    )
    assert InboxItem.objects.filter(user=user).count() == 1
    digest = Digest.objects.get(user=user)
    Digest.objects.filter(pk=digest.pk).update(due_at=timezone.now())  # its window is over
    flush_digests_task.apply_async(queue=MAINTENANCE_QUEUE)  # beat's tick
    wait_until(
        lambda: InboxItem.objects.filter(user=user, message__digest=digest).exists(),
        message="the digest",
    )
    # One item for the post, updated in place: the digest's words and count.
    item = InboxItem.objects.get(user=user)
    assert item.title == "Di and 2 others commented on My trip"
    assert (item.group_key, item.group_count, item.read_at) == ("post:42", 3, None)
    digest.refresh_from_db()
    assert (digest.state, digest.count) == (DigestState.SENT, 3)


def test_an_hourly_cadence_holds_the_rest_until_the_hour_and_sends_one(worker, wait_idle):
    user = UserFactory()
    digest_cadence_set(user_id=user.pk, scope="", cadence="hourly")
    comment(user, "Ana")  # the type's first of a window goes at once
    wait_until(lambda: InboxItem.objects.filter(user=user).count() == 1, message="the first")
    rest = [comment(user, name) for name in ("Ben", "Cy")]
    wait_until(
        lambda: (
            Message.objects.filter(pk__in=[m.pk for m in rest], digest__isnull=False).count() == 2
        ),
        message="the rest to be collected",
    )
    digest = Digest.objects.get(user=user)
    zone = ZoneInfo(recipient_for(user).time_zone)
    expected = digest_due_at(CadenceChoice(Cadence.HOURLY), zone, digest.opened_at)
    assert digest.due_at == expected and digest.due_at.minute == 0
    assert digest.due_at - digest.opened_at <= timedelta(hours=1)
    # A tick while the hour is still ahead (kept ahead, however near the hour the test runs):
    # nothing goes.
    Digest.objects.filter(pk=digest.pk).update(due_at=timezone.now() + timedelta(minutes=10))
    flush_digests_task.apply_async(queue=MAINTENANCE_QUEUE)
    wait_idle()
    digest.refresh_from_db()
    assert digest.state == DigestState.OPEN
    # The hour comes (moved here rather than waited for): two beat ticks at once send one.
    Digest.objects.filter(pk=digest.pk).update(due_at=timezone.now())
    flush_digests_task.apply_async(queue=MAINTENANCE_QUEUE)
    flush_digests_task.apply_async(queue=MAINTENANCE_QUEUE)
    wait_until(
        lambda: InboxItem.objects.filter(user=user, message__digest=digest).exists(),
        message="the digest in the inbox",
    )
    wait_idle()
    assert Message.objects.filter(idempotency_key=f"digest:{digest.pk}").count() == 1
    digest.refresh_from_db()
    assert (digest.state, digest.count) == (DigestState.SENT, 2)
    item = InboxItem.objects.get(user=user)
    assert item.title == "Cy and 1 other commented on My trip"


# --- A worker killed mid-flush ----------------------------------------------------------------

COMMENT = {
    "post_title": "My trip",
    "excerpt": "Nice!",
    "comment_url": "https://x.test/p/42",
}
PEOPLE = 1000  # two flush runs of 500 (the flush's limit) in one beat tick
# A thousand digests sent at once would otherwise hold the bulk lane for its backpressure
# minute (the release job lets them out then): this test is about the flush.
NO_BACKPRESSURE = {"NOTIFIER_BULK_HIGH_WATER": "1000000"}


def comments_by(users: list[int], who: str) -> list[int]:
    """One comment on each user's post:42 by `who`, prepared here (collected, or sent first)."""
    context = {**COMMENT, "commenter_name": who}
    ids = notify_many(
        users, "social.new_comment", context, channels=["inapp"], digest_key="post:42"
    ).message_ids
    for start in range(0, len(ids), 500):
        messages_prepare(message_ids=ids[start : start + 500])
    return ids


def waiting_on_locks() -> list[int]:
    """The pids of this database's other backends waiting on a lock."""
    with connection.cursor() as cursor:
        cursor.execute(
            "SELECT pid FROM pg_stat_activity WHERE datname = current_database() "
            "AND wait_event_type = 'Lock' AND pid <> pg_backend_pid()"
        )
        return [int(pid) for (pid,) in cursor.fetchall()]


def flush_waiting_on_a_lock() -> int | None:
    """The pid of the one backend waiting on a lock (the flush's commit), if there is one."""
    waiting = waiting_on_locks()
    return waiting[0] if len(waiting) == 1 else None


@pytest.mark.django_db(transaction=True)
def test_a_worker_killed_mid_flush_loses_and_doubles_no_digest(rig):
    """A beat tick's flush runs on a worker: its first run of 500 digests commits, and the
    second is caught with its digests' messages written but not committed (its commit waits
    for a lock this test holds on one person's row) when the machine dies: the worker is
    SIGKILLed and its connection dropped. A comment arriving meanwhile for a person in that
    run waits for the digest, then joins it. Ticks on a new worker send each digest exactly
    once, with everything it collected, and every person's inbox shows one item for the post."""
    zone = daytime_zone()
    User.objects.bulk_create(
        [User(username=f"p{i}", email=f"p{i}@x.test", password="!") for i in range(PEOPLE)]
    )
    users = list(User.objects.filter(username__startswith="p").order_by("pk").values_list("pk"))
    users = [pk for (pk,) in users]
    Recipient.objects.bulk_create(
        [Recipient(user_id=pk, email=f"p{pk}@x.test", time_zone=zone) for pk in users]
    )
    # Routed here, not by a worker: their prepare tasks are not published.
    with mock.patch.object(dispatch, "publish_prepare", return_value=None):
        comments_by(users, "Ana")  # the first of each post's window goes at once
        comments_by(users, "Ben")
        comments_by(users, "Cy")
    assert Digest.objects.filter(state=DigestState.OPEN, count=2).count() == PEOPLE
    Digest.objects.update(due_at=timezone.now())  # every window ends now
    digests = list(Digest.objects.order_by("pk").values_list("pk", "user_id"))
    _, late_user = digests[750]  # in the tick's second run (pk order, due together)

    # A comment for that person, written now and routed only once the flush holds their digest
    # (writing it then would wait for this test's own lock).
    with mock.patch.object(dispatch, "publish_prepare", return_value=None):
        [dee] = notify_many(
            [late_user],
            "social.new_comment",
            {**COMMENT, "commenter_name": "Dee"},
            channels=["inapp"],
            digest_key="post:42",
        ).message_ids
    locker = psycopg2.connect(
        dbname=connection.settings_dict["NAME"],
        user=connection.settings_dict["USER"],
        host=connection.settings_dict["HOST"] or "127.0.0.1",
        port=connection.settings_dict["PORT"] or 5432,
    )
    late: list[Counter[str]] = []
    try:
        with locker.cursor() as cursor:
            # A deferred foreign-key check at the flush's commit takes a share lock on each
            # of its digests' people: holding this one's row stops that commit mid-way.
            cursor.execute(
                f'SELECT 1 FROM "{User._meta.db_table}" WHERE id = %s FOR UPDATE', [late_user]
            )
        worker = rig.worker(**NO_BACKPRESSURE)
        rig.send("notifier.flush_digests", (), MAINTENANCE_QUEUE)
        wait_until(
            lambda: (
                Digest.objects.filter(state=DigestState.SENT).count() == 500
                and flush_waiting_on_a_lock() is not None
            ),
            timeout=60,
            interval=0.01,
            message="the first run committed and the second waiting at its commit",
        )
        flushing = flush_waiting_on_a_lock()

        def collect() -> None:
            try:
                late.append(messages_prepare(message_ids=[dee]))
            finally:
                connection.close()

        collector = threading.Thread(target=collect)
        collector.start()
        wait_until(
            lambda: len(waiting_on_locks()) == 2,
            timeout=30,
            interval=0.01,
            message="the late comment to wait for the flush's digest",
        )
        assert collector.is_alive()
        # The machine dies: worker and pool at once, and its connection with it.
        worker.kill()
        with connection.cursor() as cursor:
            cursor.execute("SELECT pg_terminate_backend(%s)", [flushing])
    finally:
        locker.rollback()
        locker.close()
    collector.join(timeout=30)
    assert late == [Counter({"collected": 1})]
    assert Digest.objects.filter(state=DigestState.SENT).count() == 500  # rolled back whole

    rig.worker(**NO_BACKPRESSURE)
    last_tick = [0.0]

    def all_sent_and_delivered() -> bool:
        if time.monotonic() - last_tick[0] > 2:
            rig.send("notifier.flush_digests", (), MAINTENANCE_QUEUE)
            last_tick[0] = time.monotonic()
        return (
            not Digest.objects.exclude(state=DigestState.SENT).exists()
            and InboxItem.objects.filter(message__idempotency_key__startswith="digest:").count()
            == PEOPLE
        )

    rig.drain(all_sent_and_delivered, timeout=120)
    digest_messages = Message.objects.filter(idempotency_key__startswith="digest:")
    assert digest_messages.count() == PEOPLE == Digest.objects.count()
    # What each digest collected, against its count (its own message belongs to it too).
    collected = Counter(
        Message.objects.filter(digest__isnull=False)
        .exclude(idempotency_key__startswith="digest:")
        .values_list("digest_id", flat=True)
    )
    assert collected == Counter(dict(Digest.objects.values_list("pk", "count")))
    late_digest = Digest.objects.get(user_id=late_user)
    assert late_digest.count == 3 and Message.objects.get(pk=dee).digest_id == late_digest.pk
    # One item for the post per person, updated in place by their digest.
    items = InboxItem.objects.filter(user_id__in=users)
    assert items.count() == items.values("user_id").distinct().count() == PEOPLE
    counts = (
        items.values_list("group_count").annotate(n=Count("id")).values_list("group_count", "n")
    )
    assert dict(counts) == {2: PEOPLE - 1, 3: 1}
