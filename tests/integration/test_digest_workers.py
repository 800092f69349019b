"""Digests through a real Celery worker on Redis and PostgreSQL: comments on one post within
the window reach the inbox as the first one, then one digest of the rest, sent by the beat
task's flush on the worker, updating the first's inbox item in place; a person's hourly cadence
holds the rest until their next whole hour, and two flushes at the due time send one."""

from __future__ import annotations

from datetime import timedelta
from zoneinfo import ZoneInfo

import pytest
from django.utils import timezone

from notifier.api import notify
from notifier.models import Digest, DigestState, InboxItem, Message
from notifier.models.recipients import recipient_for
from notifier.policies.digests import Cadence, CadenceChoice, digest_due_at
from notifier.queues import MAINTENANCE_QUEUE
from notifier.services.cadences import digest_cadence_set
from notifier.tasks import flush_digests_task
from tests.conftest import wait_until
from tests.factories import UserFactory

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
