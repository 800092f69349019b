"""Topics, on PostgreSQL: people follow an object; notifying the topic hands its followers out
in keyset batches, each written with the walk's cursor in one transaction, so a walk that dies
resumes where it was, two at once write nothing twice, and memory stays flat at 200,000."""

from __future__ import annotations

import json
import threading
import tracemalloc
from datetime import timedelta
from unittest import mock

import pytest
from django.contrib.auth.hashers import make_password
from django.db import connection
from django.test import Client
from django.utils import timezone

from notifier import dispatch
from notifier.api import notify_topic, topic_subscribe, topic_unsubscribe
from notifier.errors import (
    IdempotencyKeyReused,
    InvalidRecipient,
    InvalidTopic,
    MissingContextVariable,
)
from notifier.models import Message, Topic, TopicSend, TopicSendStatus, TopicSubscription, User
from notifier.services import topics
from notifier.services.erasure import recipient_erase
from notifier.services.recipients import recipient_put
from notifier.services.topics import topic_send_walk, topic_sends_revive
from tests.factories import UserFactory
from tests.notifier.http_api.test_service_api import post, token

pytestmark = pytest.mark.django_db
FOLLOWER = {"follower_name": "Fan", "follower_url": "https://x.test/fan"}


def follow(count: int, topic: str = "product:42") -> list[User]:
    users = UserFactory.create_batch(count)
    topic_subscribe(topic, users)
    return users


def sent_to(send: TopicSend) -> list[object]:
    return sorted(
        Message.objects.filter(idempotency_key__startswith=f"topic:{send.pk}:").values_list(
            "user_id", flat=True
        )
    )


def test_following_twice_counts_once_and_unfollowing_removes_it():
    user = UserFactory()
    assert topic_subscribe("product:42", [user]) == 1
    assert topic_subscribe("product:42", [user]) == 0
    assert topic_unsubscribe("product:42", [user]) == 1
    assert not TopicSubscription.objects.exists()


def test_notifying_a_topic_writes_one_message_per_follower_but_the_excluded(published):
    users = follow(5)
    actor = users[0]
    send = notify_topic("product:42", "social.new_follower", FOLLOWER, exclude=[actor])
    report = topic_send_walk(send_id=send.pk)
    assert (report.written, report.done) == (4, True)
    assert sent_to(send) == sorted(u.pk for u in users[1:])
    send.refresh_from_db()
    assert (send.status, send.sent) == (TopicSendStatus.DONE, 4)
    assert topic_send_walk(send_id=send.pk).batches == 0  # done: a copy writes nothing
    assert len(sent_to(send)) == 4


def test_inactive_and_erased_followers_are_left_out(published):
    users = follow(4)
    User.objects.filter(pk=users[0].pk).update(is_active=False)
    recipient_erase(users[1].notifier_recipient, by="test", reason="T-1")
    send = notify_topic("product:42", "social.new_follower", FOLLOWER)
    topic_send_walk(send_id=send.pk)
    assert sent_to(send) == sorted(u.pk for u in users[2:])


def test_the_walk_goes_in_batches_and_a_batch_that_dies_is_written_whole_later(published):
    users = follow(7)
    send = notify_topic("product:42", "social.new_follower", FOLLOWER)
    real = topics.messages_create
    calls = {"n": 0}

    def dies_on_the_second_batch(**kwargs):
        calls["n"] += 1
        written = real(**kwargs)
        if calls["n"] == 2:
            raise SystemExit("the worker is killed after writing its second batch")
        return written

    with mock.patch.object(topics, "BATCH", 3):
        with (
            mock.patch.object(topics, "messages_create", dies_on_the_second_batch),
            pytest.raises(SystemExit),
        ):
            topic_send_walk(send_id=send.pk)
        assert len(sent_to(send)) == 3  # the first batch stands; the second rolled back
        send.refresh_from_db()
        assert send.cursor > 0 and send.status == TopicSendStatus.WALKING
        report = topic_send_walk(send_id=send.pk)
    assert (report.batches, report.written, report.done) == (2, 4, True)
    assert sent_to(send) == sorted(u.pk for u in users)


def test_a_walk_out_of_time_publishes_its_next_run(
    published, monkeypatch, django_capture_on_commit_callbacks
):
    follow(5)
    walks: list[tuple[object, ...]] = []
    monkeypatch.setattr(dispatch, "publish", lambda name, **o: walks.append((name, o["args"])))
    send = notify_topic("product:42", "social.new_follower", FOLLOWER)
    with (
        mock.patch.object(topics, "BATCH", 2),
        django_capture_on_commit_callbacks(execute=True),
    ):
        report = topic_send_walk(send_id=send.pk, budget_s=0)
    assert (report.batches, report.done) == (1, False)
    assert walks[-1] == ("notifier.walk_topic_send", (send.pk,))


@pytest.mark.django_db(transaction=True)
def test_two_walks_at_once_write_each_follower_once(published):
    users = follow(25)
    send = notify_topic("product:42", "social.new_follower", FOLLOWER)
    start = threading.Barrier(2)

    def run() -> None:
        try:
            start.wait()
            for _ in range(10):
                topic_send_walk(send_id=send.pk)
        finally:
            connection.close()

    threads = [threading.Thread(target=run) for _ in range(2)]
    with mock.patch.object(topics, "BATCH", 4):  # for both threads, the whole time
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(timeout=60)
    assert sent_to(send) == sorted(u.pk for u in users)
    assert TopicSend.objects.get(pk=send.pk).sent == 25


def test_the_same_key_gives_back_the_first_send_and_a_lost_walk_is_revived(published):
    follow(2)
    first = notify_topic("product:42", "social.new_follower", FOLLOWER, idempotency_key="drop:1")
    again = notify_topic("product:42", "social.new_follower", FOLLOWER, idempotency_key="drop:1")
    assert again.pk == first.pk
    with pytest.raises(IdempotencyKeyReused):  # the same key for another topic
        notify_topic("product:43", "social.new_follower", FOLLOWER, idempotency_key="drop:1")
    TopicSend.objects.filter(pk=first.pk).update(updated_at=timezone.now() - timedelta(minutes=5))
    assert topic_sends_revive() == [first.pk]
    assert topic_sends_revive() == []  # its clock restarted: not twice


@pytest.mark.parametrize(
    ("call", "error"),
    [
        (lambda: notify_topic("", "social.new_follower", FOLLOWER), InvalidTopic),
        (lambda: notify_topic("t", "social.new_follower", {}), MissingContextVariable),
        (lambda: topic_subscribe("t", [10**12]), InvalidRecipient),
    ],
)
def test_bad_input_is_refused_and_writes_nothing(call, error):
    with pytest.raises(error):
        call()
    assert not TopicSend.objects.exists() and not TopicSubscription.objects.exists()


def test_the_service_api_follows_and_notifies_a_topic(published):
    recipient_put("cust-1", {"email": "one@example.com"})
    recipient_put("cust-2", {"email": "two@example.com"})
    key = token("recipients", "notify")
    auth = {"HTTP_AUTHORIZATION": f"Bearer {key}"}
    client = Client()
    for who in ("cust-1", "cust-2"):
        response = client.put(f"/api/v1/recipients/{who}/topics/game:7", **auth)
        assert response.json() == {"topics": ["game:7"]}
    response = post(
        "/api/v1/topics/game:7/notify",
        {"type": "social.new_follower", "context": FOLLOWER, "exclude_recipients": ["cust-1"]},
        key,
    )
    assert response.status_code == 202, response.json()
    assert response.json()["subscribers"] == 2
    send = TopicSend.objects.get(pk=response.json()["send"])
    topic_send_walk(send_id=send.pk)
    assert len(sent_to(send)) == 1
    assert client.delete("/api/v1/recipients/cust-1/topics/game:7", **auth).json() == {"topics": []}
    bad = post("/api/v1/topics/game:7/notify", json.loads('{"type": 5}'), key)
    assert bad.status_code == 422


@pytest.mark.django_db(transaction=True)  # each batch commits, as in a worker
def test_a_topic_of_200000_followers_is_walked_in_flat_memory(monkeypatch):
    """Novu's topic fan-out broke near two million subscribers: here the walk holds one batch
    of a thousand whatever the topic's size, measured as the walk's peak traced memory at
    20,000 and at 200,000 followers."""
    monkeypatch.setattr(dispatch, "publish_prepare", lambda *a, **k: None)
    # Only this test walks: the session's worker must not take the send (its walk, published
    # on commit, would hold the send and write the messages meanwhile).
    monkeypatch.setattr(dispatch, "publish", lambda *a, **k: None)
    password = make_password(None)
    User.objects.bulk_create(
        (User(username=f"t{i}", email=f"t{i}@x.test", password=password) for i in range(200_000)),
        batch_size=5000,
    )
    ids = list(User.objects.filter(username__startswith="t").values_list("pk", flat=True))
    big, small = Topic.objects.create(key="big", created_at=timezone.now()), None
    small = Topic.objects.create(key="small", created_at=timezone.now())
    now = timezone.now()
    for topic, members in ((big, ids), (small, ids[:20_000])):
        TopicSubscription.objects.bulk_create(
            (TopicSubscription(topic=topic, user_id=pk, at=now) for pk in members),
            batch_size=5000,
        )

    def peak(topic_key: str) -> int:
        send = notify_topic(topic_key, "social.new_follower", FOLLOWER)
        tracemalloc.start()
        report = topic_send_walk(send_id=send.pk, budget_s=600)
        _, top = tracemalloc.get_traced_memory()
        tracemalloc.stop()
        assert report.done
        return top

    small_peak, big_peak = peak("small"), peak("big")
    assert Message.objects.count() == 220_000
    assert big_peak < 1.5 * small_peak, (small_peak, big_peak)
