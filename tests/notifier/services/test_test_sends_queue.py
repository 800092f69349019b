"""Marketers' test sends are published to their own queue of the bulk lane: never where
receipts are prepared, and never behind a running campaign's fan-out batches."""

from __future__ import annotations

import pytest

from notifier import dispatch
from notifier.queues import TEST_SENDS_QUEUE, Lane, lane_queues, prepare_queue
from notifier.services.messages import NewMessage, messages_create
from notifier.tasks import prepare_messages
from tests.factories import UserFactory

pytestmark = pytest.mark.django_db


def row(user_id: int, *, is_test: bool) -> NewMessage:
    return NewMessage(
        user_id=user_id,
        type_key="promo.flash_sale",
        context={},
        channels=["inapp"],
        lane=Lane.BULK,
        idempotency_key=None,
        is_test=is_test,
    )


@pytest.fixture
def published(monkeypatch) -> list[tuple[list[int], str]]:
    """Each prepare task as the broker would get it: its message ids and its queue (the
    session's shared worker would take it from Redis before a test could look)."""
    sent: list[tuple[list[int], str]] = []

    def publish(task_name: str, *, args, queue, **options) -> None:
        assert task_name == prepare_messages.name
        sent.append((list(args[0]), queue))

    monkeypatch.setattr(dispatch, "publish", publish)
    return sent


def test_test_sends_go_to_their_own_bulk_queue_and_campaign_messages_do_not(
    published, django_capture_on_commit_callbacks
):
    user = UserFactory()
    with django_capture_on_commit_callbacks(execute=True):
        (test,) = messages_create(rows=[row(user.pk, is_test=True)]).messages
    assert published == [([test.pk], TEST_SENDS_QUEUE)]

    published.clear()
    with django_capture_on_commit_callbacks(execute=True):
        campaign, second = messages_create(
            rows=[row(user.pk, is_test=False), row(user.pk, is_test=True)]
        ).messages
    assert sorted(published) == sorted(
        [([campaign.pk], prepare_queue(Lane.BULK)), ([second.pk], TEST_SENDS_QUEUE)]
    )


def test_the_bulk_workers_consume_the_test_sends_queue():
    assert TEST_SENDS_QUEUE in lane_queues(Lane.BULK)
    assert TEST_SENDS_QUEUE not in lane_queues(Lane.TRANSACTIONAL)
