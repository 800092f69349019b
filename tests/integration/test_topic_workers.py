"""A topic with 200,000 followers, notified through real Celery workers on a private Redis and
PostgreSQL (Novu's topic fan-out broke near two million subscribers): the worker walking it is
SIGKILLed a tenth of the way in, beat revives the walk, and every follower gets exactly one
message in their inbox, written by workers whose memory stays flat while the walk goes on.
"""

from __future__ import annotations

from typing import Any

import psutil
import pytest
from django.contrib.auth.hashers import make_password
from django.db.models import Count
from django.utils import timezone

from notifier import dispatch
from notifier.api import notify_topic
from notifier.models import InboxItem, Message, Recipient, Topic, TopicSubscription, User
from notifier.models import TopicSendStatus as T
from notifier.services.topics import WALK_STALE, topic_sends_revive
from tests.conftest import WorkerProcess, wait_until
from tests.factories import daytime_zone
from tests.integration.rig import Rig

pytestmark = [pytest.mark.integration, pytest.mark.django_db(transaction=True)]

FOLLOWERS = 200_000
FOLLOWER = {"follower_name": "Fan", "follower_url": "https://x.test/fan"}


def followers(count: int) -> None:
    """`count` active users with profiles in their afternoon, all following `game:7`."""
    password, zone = make_password(None), daytime_zone()
    User.objects.bulk_create(
        (User(username=f"f{i}", email=f"f{i}@x.test", password=password) for i in range(count)),
        batch_size=5000,
    )
    ids = list(User.objects.filter(username__startswith="f").values_list("pk", flat=True))
    Recipient.objects.bulk_create(
        (Recipient(user_id=pk, email=f"u{pk}@x.test", time_zone=zone) for pk in ids),
        batch_size=5000,
    )
    topic = Topic.objects.create(key="game:7", created_at=timezone.now())
    now = timezone.now()
    TopicSubscription.objects.bulk_create(
        (TopicSubscription(topic=topic, user_id=pk, at=now) for pk in ids), batch_size=5000
    )


def pool_rss(worker: WorkerProcess) -> int:
    """The largest resident set among the worker's pool processes, in bytes."""
    children = psutil.Process(worker.process.pid).children(recursive=True)
    return max((child.memory_info().rss for child in children), default=0)


def test_a_topic_of_200000_followers_survives_a_killed_walker_and_reaches_each_once(
    rig: Rig, monkeypatch: Any
) -> None:
    # The test process's own publishes (the walk, started on commit) go to the rig's Redis too.
    monkeypatch.setattr(
        dispatch,
        "publish",
        lambda name, *, args=(), queue, **_: rig.send(name, tuple(args), queue),
    )
    followers(FOLLOWERS)
    env = {"NOTIFIER_BULK_HIGH_WATER": "1000000"}  # no backpressure pause: this is the walk
    first = rig.worker(**env)
    send = notify_topic("game:7", "social.new_follower", FOLLOWER, channels=["inapp"])

    # A tenth of the way in, the machine walking it dies (worker and pool, SIGKILL).
    wait_until(
        lambda: Message.objects.filter(topic_id=send.topic_id).count() >= FOLLOWERS // 10,
        timeout=120,
        interval=0.05,
        message="the walk to write a tenth of the followers' messages",
    )
    first.kill()
    send.refresh_from_db()
    assert send.status == T.WALKING, "the walk finished before the kill"
    written_at_kill = Message.objects.filter(topic_id=send.topic_id).count()
    assert written_at_kill < FOLLOWERS

    # Its walk task died unacknowledged: nothing runs it until beat finds it stale.
    second = rig.worker(**env)
    assert topic_sends_revive(now=timezone.now()) == []  # heard from just now: not revived
    assert topic_sends_revive(now=timezone.now() + WALK_STALE) == [send.pk]

    samples: list[int] = []

    def everyone_in_their_inbox() -> bool:
        samples.append(pool_rss(second))
        return InboxItem.objects.filter(message__topic_id=send.topic_id).count() >= FOLLOWERS

    rig.drain(everyone_in_their_inbox, timeout=900, requeue_every=5.0)

    send.refresh_from_db()
    assert (send.status, send.sent) == (T.DONE, FOLLOWERS)
    messages = Message.objects.filter(topic_id=send.topic_id)
    assert messages.count() == FOLLOWERS
    assert not messages.values("user_id").annotate(n=Count("id")).filter(n__gt=1).exists()
    items = InboxItem.objects.filter(message__topic_id=send.topic_id)
    assert items.count() == items.values("user_id").distinct().count() == FOLLOWERS
    # Flat memory: the largest pool process once the revived walk had run a while, against
    # the largest at any point up to the 200,000th follower.
    settled = samples[len(samples) // 10]
    assert max(samples) < 1.3 * settled, (settled, max(samples))
