"""Digests through a real Celery worker on Redis and PostgreSQL: comments on one post within
the window reach the inbox as the first one, then one digest of the rest, sent by the beat
task's flush on the worker."""

from __future__ import annotations

import pytest
from django.utils import timezone

from notifier.api import notify
from notifier.models import Digest, DigestState, InboxItem, Message
from notifier.queues import MAINTENANCE_QUEUE
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
    wait_until(lambda: InboxItem.objects.filter(user=user).count() == 2, message="the digest")
    newest = InboxItem.objects.filter(user=user).latest("created_at")
    assert newest.title == "Di and 2 others commented on My trip"
    digest.refresh_from_db()
    assert (digest.state, digest.count) == (DigestState.SENT, 3)
