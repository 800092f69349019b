"""Digests, on PostgreSQL: a type's messages per person and digest key are collected over the
window and sent as one message whose templates see the count and the messages; exactly one
digest per window when two flushes run at once or one dies half-way, and a message arriving
while a digest is being sent goes into the next one, never lost, never twice."""

from __future__ import annotations

import threading
from datetime import timedelta
from unittest import mock

import pytest
import time_machine
from django.db import connection, transaction
from django.test.utils import CaptureQueriesContext
from django.urls import reverse
from django.utils import timezone

from notifier.api import notify
from notifier.errors import InvalidDigestKey, InvalidIdempotencyKey
from notifier.models import Delivery, Digest, DigestState, InboxItem, Message, NotificationType
from notifier.selectors import type_cache_clear
from notifier.services import digests
from notifier.services.digests import digests_collect, digests_flush
from notifier.services.pipeline import messages_prepare
from notifier.status import DeliveryStatus
from tests.factories import UserFactory

pytestmark = pytest.mark.django_db
S = DeliveryStatus
D = DigestState


def comment(
    user,
    who: str,
    post: str = "post:42",
    text: str = "Nice!",
    channels: tuple[str, ...] | None = ("inapp",),  # None: the type's routing decides
) -> Message:
    return notify(
        user,
        "social.new_comment",
        {
            "commenter_name": who,
            "post_title": "My trip",
            "excerpt": text,
            "comment_url": f"https://x.test/{post}",
        },
        channels=list(channels) if channels else None,
        digest_key=post,
    )


def prepared(*messages: Message) -> dict[str, int]:
    return dict(messages_prepare(message_ids=[m.pk for m in messages]))


def test_the_first_goes_at_once_and_the_rest_of_the_window_comes_as_one(published):
    user = UserFactory()
    first = comment(user, "Ana")
    assert prepared(first) == {"sent": 1}  # digest_first_now: at once, alone
    more = [comment(user, name, text=f"{name} says hi") for name in ("Ben", "Cy", "Di")]
    assert prepared(*more) == {"collected": 3}
    assert not Delivery.objects.filter(message__in=more).exists()
    digest = Digest.objects.get()
    assert (digest.state, digest.count, digest.key) == (D.OPEN, 3, "post:42")
    assert digests_flush(now=digest.due_at - timedelta(seconds=1)).digests == 0
    report = digests_flush(now=digest.due_at)
    assert (report.sent, report.empty) == (1, 0)
    digest.refresh_from_db()
    assert digest.state == D.SENT and digest.message is not None
    sent = digest.message
    assert sent.context["digest"]["count"] == 3
    assert [m["commenter_name"] for m in sent.context["digest"]["messages"]] == ["Ben", "Cy", "Di"]
    assert prepared(sent) == {"sent": 1}
    item = InboxItem.objects.get(message=sent)
    assert item.title == "Di and 2 others commented on My trip"
    assert item.body.splitlines() == ["Ben: Ben says hi", "Cy: Cy says hi", "Di: Di says hi"]


def test_each_digest_key_and_each_person_has_its_own_digest(published):
    ann, bob = UserFactory(), UserFactory()
    messages = [
        comment(ann, "X", "post:1"),
        comment(ann, "Y", "post:2"),
        comment(bob, "Z", "post:1"),
    ]
    prepared(*messages)  # each the first of its window: all at once
    prepared(
        comment(ann, "X2", "post:1"), comment(ann, "Y2", "post:2"), comment(bob, "Z2", "post:1")
    )
    assert Digest.objects.filter(state=D.OPEN, count=1).count() == 3


def test_without_first_now_the_first_waits_too_and_an_empty_window_sends_nothing(published):
    NotificationType.objects.filter(pk="social.new_comment").update(digest_first_now=False)
    type_cache_clear()
    user = UserFactory()
    assert prepared(comment(user, "Ana")) == {"collected": 1}
    NotificationType.objects.filter(pk="social.new_comment").update(digest_first_now=True)
    type_cache_clear()
    other = UserFactory()
    prepared(comment(other, "Solo"))  # first at once: its digest opens empty
    later = timezone.now() + timedelta(minutes=11)
    report = digests_flush(now=later)
    assert (report.sent, report.empty) == (1, 1)


def test_a_message_after_the_flush_opens_the_next_digest(published):
    user = UserFactory()
    prepared(comment(user, "Ana"))
    prepared(comment(user, "Ben"))
    with time_machine.travel(timezone.now() + timedelta(minutes=11)):
        digests_flush()
        late = comment(user, "Cy")
        assert prepared(late) == {"sent": 1}  # the first of a new window: at once again
        prepared(comment(user, "Di"))
    assert list(Digest.objects.order_by("pk").values_list("state", "count")) == [
        (D.SENT, 1),
        (D.OPEN, 1),
    ]


@pytest.mark.django_db(transaction=True)
def test_two_flushes_at_once_send_each_digest_once(published):
    users = UserFactory.create_batch(6)
    for user in users:
        prepared(comment(user, "Ana"))
        prepared(comment(user, "Ben"), comment(user, "Cy"))
    later = timezone.now() + timedelta(minutes=11)
    start = threading.Barrier(2)
    reports = []

    def run() -> None:
        try:
            start.wait()
            reports.append(digests_flush(now=later, limit=4))
            reports.append(digests_flush(now=later, limit=4))
        finally:
            connection.close()

    threads = [threading.Thread(target=run) for _ in range(2)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=60)
    assert sum(r.sent for r in reports) == 6
    assert Message.objects.filter(idempotency_key__startswith="digest:").count() == 6
    assert set(Digest.objects.values_list("state", flat=True)) == {D.SENT}


def test_a_flush_that_dies_half_way_leaves_the_digest_to_the_next_one_whole(published):
    user = UserFactory()
    prepared(comment(user, "Ana"))
    prepared(comment(user, "Ben"), comment(user, "Cy"))
    later = timezone.now() + timedelta(minutes=11)
    real = digests.messages_create

    def dies_after_writing(**kwargs):
        real(**kwargs)
        raise SystemExit("the worker is killed right after writing the digest's message")

    with (
        mock.patch.object(digests, "messages_create", dies_after_writing),
        pytest.raises(SystemExit),
    ):
        digests_flush(now=later)
    assert Digest.objects.get().state == D.OPEN  # rolled back whole
    assert not Message.objects.filter(idempotency_key__startswith="digest:").exists()
    assert digests_flush(now=later).sent == 1
    assert Message.objects.filter(idempotency_key__startswith="digest:").count() == 1


@pytest.mark.django_db(transaction=True)
def test_a_message_arriving_during_a_flush_goes_into_the_next_digest(published):
    user = UserFactory()
    prepared(comment(user, "Ana"))
    prepared(comment(user, "Ben"))
    digest = Digest.objects.get()
    writing, finish = threading.Event(), threading.Event()
    real = digests._digest_row

    def slow(*args, **kwargs):
        message = real(*args, **kwargs)
        writing.set()
        assert finish.wait(timeout=20)
        return message

    def flush() -> None:
        try:
            with mock.patch.object(digests, "_digest_row", slow):
                digests_flush(now=digest.due_at)
        finally:
            connection.close()

    flusher = threading.Thread(target=flush)
    flusher.start()
    assert writing.wait(timeout=20)  # the flush holds the digest, mid-way
    late = comment(user, "Cy")
    arrived: list[dict[str, int]] = []

    def collect() -> None:
        try:
            arrived.append(prepared(late))
        finally:
            connection.close()

    collector = threading.Thread(target=collect)
    collector.start()
    collector.join(timeout=1)
    assert collector.is_alive()  # it waits for the flush's lock
    finish.set()
    flusher.join(timeout=20)
    collector.join(timeout=20)
    assert arrived == [{"sent": 1}]  # the first of the next window (digest_first_now)
    sent = Digest.objects.get(pk=digest.pk)
    assert (sent.state, sent.count) == (D.SENT, 1)
    assert Message.objects.get(pk=late.pk).digest_id != digest.pk
    assert Digest.objects.filter(state=D.OPEN).count() == 1  # opened by the late one


@pytest.mark.parametrize("key", ["", 5, "x" * 300])
def test_a_digest_key_that_is_not_plain_text_is_refused(key):
    with pytest.raises(InvalidDigestKey):
        comment(UserFactory(), "Ana", post=key)
    assert not Message.objects.exists()


def test_a_prepare_run_that_dies_collects_nothing(published):
    user = UserFactory()
    prepared(comment(user, "Ana"))
    message = comment(user, "Ben")

    def prepare_that_dies() -> None:
        with transaction.atomic():
            digests_collect([Message.objects.get(pk=message.pk)], timezone.now())
            raise RuntimeError("the prepare run dies")

    with pytest.raises(RuntimeError):
        prepare_that_dies()
    assert Digest.objects.get().count == 0
    assert Message.objects.get(pk=message.pk).routed_at is None


def test_support_sees_where_each_message_went(published, admin_client):
    user = UserFactory()
    prepared(comment(user, "Ana"))
    collected = [comment(user, "Ben"), comment(user, "Cy")]
    prepared(*collected)
    page = admin_client.get(
        reverse("admin:notifier_user_customer", args=[user.pk])
    ).content.decode()
    digest = Digest.objects.get()
    assert f"Collected into digest #{digest.pk}, which goes out at" in page
    digests_flush(now=digest.due_at)
    digest.refresh_from_db()
    page = admin_client.get(
        reverse("admin:notifier_user_customer", args=[user.pk])
    ).content.decode()
    assert f"Collected into digest #{digest.pk}, sent as message #{digest.message_id}" in page
    assert "The digest of 2 messages under key post:42" in page


def test_a_message_with_a_cancel_key_or_a_later_send_time_is_not_collected(published):
    user = UserFactory()
    prepared(comment(user, "Ana"))  # opens the window
    keyed = notify(
        user,
        "social.new_comment",
        {"commenter_name": "Ben", "post_title": "T", "excerpt": "x", "comment_url": "u"},
        channels=["inapp"],
        digest_key="post:42",
        cancel_key="comment:9",
    )
    later = notify(
        user,
        "social.new_comment",
        {"commenter_name": "Cy", "post_title": "T", "excerpt": "x", "comment_url": "u"},
        channels=["inapp"],
        digest_key="post:42",
        send_at=timezone.now() + timedelta(hours=1),
    )
    assert prepared(keyed, later) == {"sent": 1, "held": 1}
    assert Digest.objects.get().count == 0


def test_the_digest_goes_on_the_channels_its_newest_caller_named(published):
    user = UserFactory()
    prepared(comment(user, "Ana"))
    prepared(comment(user, "Ben"))  # channels=["inapp"]
    digest = Digest.objects.get()
    digests_flush(now=digest.due_at)
    digest.refresh_from_db()
    assert digest.message.channels == ["inapp"]


def test_a_callers_key_cannot_take_the_place_of_a_digests_or_a_topics():
    for key in ("digest:1", "topic:7"):
        with pytest.raises(InvalidIdempotencyKey, match="Notifier keys its own"):
            notify(
                UserFactory(),
                "social.new_comment",
                {"commenter_name": "A", "post_title": "T", "excerpt": "x", "comment_url": "u"},
                idempotency_key=key,
            )


def test_a_flush_writes_its_digests_messages_together_and_publishes_once(
    published, django_capture_on_commit_callbacks
):
    users = UserFactory.create_batch(5)
    for user in users:
        prepared(comment(user, "Ana"))
        prepared(comment(user, "Ben"), comment(user, "Cy"))
    later = timezone.now() + timedelta(minutes=11)
    published.prepare.clear()
    with (
        mock.patch.object(digests, "messages_create", wraps=digests.messages_create) as spy,
        django_capture_on_commit_callbacks(execute=True),
    ):
        report = digests_flush(now=later)
    assert (report.sent, report.digests) == (5, 5)
    assert spy.call_count == 1 and len(spy.call_args.kwargs["rows"]) == 5
    assert len(published.prepare) == 1 and sorted(published.prepare[0][0]) == sorted(
        Message.objects.filter(idempotency_key__startswith="digest:").values_list("pk", flat=True)
    )
    for digest in Digest.objects.all():
        assert (digest.state, digest.count) == (D.SENT, 2)
        assert digest.message.context["digest"]["count"] == 2
        assert digest.message.user_id == digest.user_id


def test_one_digest_that_cannot_be_sent_holds_up_no_other(published, caplog):
    users = UserFactory.create_batch(3)
    for user in users:
        prepared(comment(user, "Ana"))
        prepared(comment(user, "Ben"))
    broken = Digest.objects.get(user=users[1])
    real = digests._digest_row

    def row(digest, items):
        if digest.pk == broken.pk:
            raise ValueError("this digest's context cannot be built")
        return real(digest, items)

    later = timezone.now() + timedelta(minutes=11)
    with mock.patch.object(digests, "_digest_row", row):
        report = digests_flush(now=later)
    assert report.sent == 2
    assert Digest.objects.get(pk=broken.pk).state == D.OPEN  # the next flush tries again
    assert set(Digest.objects.exclude(pk=broken.pk).values_list("state", flat=True)) == {D.SENT}
    assert f"digest {broken.pk} could not be sent" in caplog.text
    assert digests_flush(now=later).sent == 1


def test_one_batch_collects_many_people_and_keys_in_a_few_statements(published):
    """A prepare batch is collected together: the first of a new window goes alone, the rest
    of it and those of digests already open are attached and counted, whatever the batch's
    size (three statements for the batch, not a few per message)."""
    ann, bob = UserFactory(), UserFactory()
    prepared(comment(bob, "Ana", post="post:7"), comment(bob, "Ben", post="post:7"))
    burst = [comment(ann, who) for who in ("Ana", "Ben", "Cy")]  # a new window for ann
    burst += [comment(bob, "Cy", post="post:7"), comment(bob, "Di", post="post:8")]
    batch = list(Message.objects.filter(pk__in=[m.pk for m in burst]))
    with CaptureQueriesContext(connection) as queries:
        collected = digests_collect(batch, timezone.now())
    assert collected == {burst[1].pk, burst[2].pk, burst[3].pk}
    # The people's cadences, the digests opened or locked, their counts, the messages.
    assert len(queries) == 4, [q["sql"][:80] for q in queries]
    counts = dict(Digest.objects.values_list("key", "count").filter(user__in=[ann, bob]))
    assert Digest.objects.get(user=ann).count == 2
    assert Digest.objects.get(user=bob, key="post:7").count == 2
    assert Digest.objects.get(user=bob, key="post:8").count == 0  # its first goes alone
    assert counts.keys() == {"post:42", "post:7", "post:8"}
    assert Message.objects.get(pk=burst[1].pk).digest == Digest.objects.get(user=ann)


@pytest.mark.django_db(transaction=True)
def test_two_batches_crossing_the_same_digests_at_once_collect_each_message_once(published):
    """Two prepare runs whose batches hold the same people's comments in either order: every
    run locks and opens digests in one order, so neither waits for the other crosswise, and
    each message is collected once into the one open digest of its post."""
    users = UserFactory.create_batch(20)
    for user in users:
        prepared(comment(user, "Ana"))  # the first of each window goes at once
    left = [comment(user, "Ben") for user in users]
    right = [comment(user, "Cy") for user in reversed(users)]
    start = threading.Barrier(2)
    results: list[dict[str, int]] = []

    def run(batch: list[Message]) -> None:
        try:
            start.wait()
            results.append(prepared(*batch))
        finally:
            connection.close()

    threads = [threading.Thread(target=run, args=(batch,)) for batch in (left, right)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=60)
    assert results == [{"collected": 20}, {"collected": 20}]
    assert set(Digest.objects.values_list("state", "count")) == {(D.OPEN, 2)}
    assert Digest.objects.count() == 20
