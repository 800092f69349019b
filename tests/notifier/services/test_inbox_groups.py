"""The inbox shows a digest group (person, type, digest key) as one item that updates: the
group's next in-app message updates its live item in place (new words and count, at the top,
unread again), an archived one is left alone, and two deliveries of one group at once leave
one item, the newer message's, with the unread count right."""

from __future__ import annotations

import threading
from datetime import timedelta
from unittest import mock

import pytest
import time_machine
from django.db import connection
from django.utils import timezone

import channels.inapp as inapp
import notifier.services.inbox as inbox_service
from notifier.api import notify
from notifier.models import Delivery, Digest, Feedback, InboxItem, Message, NotificationType
from notifier.pages.inbox_api import item_json
from notifier.selectors import inbox_unread_count, type_cache_clear
from notifier.services.deliveries import deliveries_deliver
from notifier.services.digests import digests_flush
from notifier.services.inbox import (
    inbox_archive,
    inbox_feedback,
    inbox_mark_all_read,
    inbox_mark_read,
)
from notifier.services.release import held_release
from tests.factories import DeviceFactory, UserFactory
from tests.notifier.services.test_digests import comment, prepared

pytestmark = pytest.mark.django_db


def digest_of(user, *names: str, post: str = "post:42", **kwargs) -> Message:
    """A digest's own message carrying `names`' comments (not yet prepared)."""
    messages = [comment(user, name, post, **kwargs) for name in names]
    prepared(*messages)
    digest = Digest.objects.get(user=user, state="open", key=post)
    digests_flush(now=digest.due_at)
    digest.refresh_from_db()
    assert digest.message is not None
    return digest.message


def all_wait():
    NotificationType.objects.filter(pk="social.new_comment").update(digest_first_now=False)
    type_cache_clear()


def test_the_groups_digest_updates_the_item_of_its_first_in_place(published):
    user = UserFactory()
    other = comment(user, "Zed", "post:7")
    prepared(comment(user, "Ana"), other)  # each the first of its window: at once, alone
    first = InboxItem.objects.get(message__digest_key="post:42")
    assert (first.group_key, first.group_count) == ("post:42", 1)
    inbox_mark_read(user_id=user.pk, item_id=first.pk)
    sent = digest_of(user, "Ben", "Cy")
    assert prepared(sent) == {"sent": 1}
    item = InboxItem.objects.get(user=user, group_key="post:42")  # still one
    assert item.pk == first.pk and item.message_id == sent.pk
    assert item.title == "Cy and 1 other commented on My trip"
    assert item.group_count == 2
    assert item.read_at is None  # unread again
    assert item.created_at > first.created_at  # at the top again
    assert InboxItem.objects.filter(user=user).count() == 2  # post:7 has its own
    assert inbox_unread_count(user_id=user.pk) == 2
    assert item_json(item)["group"] == {"key": "post:42", "count": 2}


def test_an_archived_group_item_is_not_brought_back(published):
    user = UserFactory()
    prepared(comment(user, "Ana"))
    first = InboxItem.objects.get(user=user)
    inbox_archive(user_id=user.pk, item_id=first.pk)
    sent = digest_of(user, "Ben")
    prepared(sent)
    first.refresh_from_db()
    assert first.archived_at is not None and first.message.pk != sent.pk
    new = InboxItem.objects.get(user=user, archived_at__isnull=True)
    assert new.pk != first.pk and new.message_id == sent.pk
    assert inbox_unread_count(user_id=user.pk) == 1


def test_an_older_digest_delivered_late_does_not_replace_a_newer_one(published):
    all_wait()
    user = UserFactory()
    older = digest_of(user, "Ana")
    newer = digest_of(user, "Ben", "Cy")
    prepared(newer)
    prepared(older)
    item = InboxItem.objects.get(user=user)
    assert (item.message_id, item.group_count) == (newer.pk, 2)


def test_a_message_of_a_type_that_does_not_digest_gets_an_item_of_its_own(published):
    user = UserFactory()
    prepared(comment(user, "Ana"))
    NotificationType.objects.filter(pk="social.new_comment").update(
        digest_window_s=None, digest_first_now=False, digest_cadence=False
    )
    type_cache_clear()
    prepared(comment(user, "Ben"))
    items = InboxItem.objects.filter(user=user).order_by("pk")
    assert [i.group_key for i in items] == ["post:42", None]


@pytest.mark.django_db(transaction=True)
def test_two_deliveries_of_one_group_at_once_leave_one_item(published):
    all_wait()
    user = UserFactory()
    first, second = digest_of(user, "Ana"), digest_of(user, "Ben", "Cy")
    wrote, finish = threading.Event(), threading.Event()
    real = inapp._group_write

    def holds_its_transaction(*args, **kwargs):
        real(*args, **kwargs)
        wrote.set()
        assert finish.wait(timeout=20)

    def deliver(message: Message, slow: bool) -> None:
        try:
            if slow:
                with mock.patch.object(inapp, "_group_write", holds_its_transaction):
                    prepared(message)
            else:
                prepared(message)
        finally:
            connection.close()

    a = threading.Thread(target=deliver, args=(first, True))
    a.start()
    assert wrote.wait(timeout=20)  # the first has inserted the group's item, uncommitted
    b = threading.Thread(target=deliver, args=(second, False))
    b.start()
    b.join(timeout=1)
    assert b.is_alive()  # it waits for the first's insert to commit or roll back
    finish.set()
    a.join(timeout=20)
    b.join(timeout=20)
    items = list(InboxItem.objects.filter(user=user))
    assert len(items) == 1
    assert (items[0].message_id, items[0].group_count) == (second.pk, 2)
    assert inbox_unread_count(user_id=user.pk) == 1
    assert timezone.now() - items[0].created_at < timedelta(minutes=1)


def test_reading_the_group_item_stops_the_escalation_of_the_message_it_replaced(published):
    NotificationType.objects.filter(pk="social.new_comment").update(
        escalation=[{"channel": "inapp", "after_s": 0}, {"channel": "push", "after_s": 3600}]
    )
    type_cache_clear()
    user = UserFactory()
    DeviceFactory(user=user)
    first = comment(user, "Ana", channels=None)
    prepared(first)  # its item at once, its push held for an hour
    sent = digest_of(user, "Ben", "Cy", channels=None)
    prepared(sent)
    item = InboxItem.objects.get(user=user)
    assert item.message_id == sent.pk  # the first's item now shows the digest
    inbox_mark_read(user_id=user.pk, item_id=item.pk)
    with time_machine.travel(timezone.now() + timedelta(hours=2)):
        held_release()
    push = Delivery.objects.get(message=first, channel="push")
    assert (push.status, push.reason) == ("suppressed", "escalation_stopped")
    replaced = Delivery.objects.get(message=first, channel="inapp")
    assert replaced.status == "read"


def test_mark_all_read_reads_the_deliveries_the_group_item_replaced(published):
    user = UserFactory()
    first = comment(user, "Ana")
    prepared(first)
    prepared(digest_of(user, "Ben"))
    assert inbox_mark_all_read(user_id=user.pk) == 1
    statuses = set(Delivery.objects.filter(message__user=user).values_list("status", flat=True))
    assert statuses == {"read"}


def test_a_read_item_updated_again_does_not_read_the_next_content(published):
    user = UserFactory()
    prepared(comment(user, "Ana"))
    item = InboxItem.objects.get(user=user)
    inbox_mark_read(user_id=user.pk, item_id=item.pk)
    sent = digest_of(user, "Ben")
    prepared(sent)
    item.refresh_from_db()
    assert item.read_at is None
    assert Delivery.objects.get(message=sent).status == "sent"  # not read with the old one


def test_feedback_on_a_group_item_is_cleared_when_its_content_is_replaced(published):
    user = UserFactory()
    prepared(comment(user, "Ana"))
    item = InboxItem.objects.get(user=user)
    inbox_feedback(user_id=user.pk, item_id=item.pk, feedback=Feedback.IRRELEVANT)
    prepared(digest_of(user, "Ben"))
    item.refresh_from_db()
    assert (item.feedback, item.feedback_at) == ("", None)


@pytest.mark.django_db(transaction=True)
def test_a_read_racing_a_group_update_reads_what_it_marks(published):
    """The read of the old content and the group's update in place at once: whichever goes
    first, the item marked read is the delivery marked read (never the new content marked read
    while its delivery stays unread)."""
    user = UserFactory()
    first = comment(user, "Ana")
    prepared(first)
    item = InboxItem.objects.get(user=user)
    sent = digest_of(user, "Ben")
    real = inbox_service._item
    updater = threading.Thread(target=lambda: (prepared(sent), connection.close()))

    def the_group_updates_meanwhile(*args, **kwargs):
        found = real(*args, **kwargs)
        updater.start()
        updater.join(timeout=2)  # done, unless the read holds the item's lock
        return found

    with mock.patch.object(inbox_service, "_item", the_group_updates_meanwhile):
        inbox_mark_read(user_id=user.pk, item_id=item.pk)
    updater.join(timeout=20)
    assert not updater.is_alive()
    item.refresh_from_db()
    assert item.message_id == sent.pk
    shown = Delivery.objects.get(pk=item.delivery_id)
    assert (item.read_at is not None) == (shown.status == "read")
    assert Delivery.objects.get(message=first).status == "read"


def _sent_alone(user, **kwargs) -> Message:
    message = notify(
        user,
        "social.new_comment",
        {
            "commenter_name": "Bo",
            "post_title": "My trip",
            "excerpt": "!",
            "comment_url": "https://x.test/1",
        },
        channels=["inapp"],
        digest_key="post:42",
        **kwargs,
    )
    return message


@pytest.mark.parametrize("how", ["cancel_key", "critical", "scheduled"])
def test_a_message_its_type_never_collects_does_not_replace_the_group_item(published, how):
    user = UserFactory()
    prepared(comment(user, "Ana"))
    group = InboxItem.objects.get(user=user)
    if how == "cancel_key":
        alone = _sent_alone(user, cancel_key="reminder:1")
    elif how == "critical":
        alone = _sent_alone(user)
        Message.objects.filter(pk=alone.pk).update(priority="critical")
    else:
        with time_machine.travel(timezone.now() - timedelta(hours=1)):
            alone = _sent_alone(user, send_at=timezone.now() + timedelta(minutes=30))
            prepared(alone)  # held for its time
        held_release()  # its time has come: the deliver task writes its item
        queued = Delivery.objects.filter(message=alone).values_list("pk", flat=True)
        deliveries_deliver(delivery_ids=list(queued))
    prepared(Message.objects.get(pk=alone.pk))
    items = {i.message_id: i for i in InboxItem.objects.filter(user=user)}
    assert set(items) == {group.message_id, alone.pk}  # the group's item kept its content
    assert items[alone.pk].group_key is None
    assert inbox_unread_count(user_id=user.pk) == 2


def test_reading_the_group_item_reads_an_older_delivery_that_came_late(published):
    all_wait()
    user = UserFactory()
    older = digest_of(user, "Ana")
    newer = digest_of(user, "Ben", "Cy")
    prepared(newer)
    prepared(older)  # a late retry: it leaves the newer item as it is, with no item of its own
    item = InboxItem.objects.get(user=user)
    inbox_mark_read(user_id=user.pk, item_id=item.pk)
    assert Delivery.objects.get(message=older).status == "read"
