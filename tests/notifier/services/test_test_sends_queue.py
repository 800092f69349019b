"""Marketers' test sends are published to their own queue of the bulk lane, on the real broker:
never where receipts are prepared, and never behind a running campaign's fan-out batches."""

from __future__ import annotations

import pytest

from notifier.queues import TEST_SENDS_QUEUE, Lane, lane_queues, prepare_queue
from notifier.services.messages import NewMessage, messages_create
from tests.factories import UserFactory

pytestmark = pytest.mark.django_db(transaction=True)


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


def test_test_sends_go_to_their_own_bulk_queue_and_campaign_messages_do_not(redis_client):
    user = UserFactory()
    queues = [TEST_SENDS_QUEUE, prepare_queue(Lane.BULK), prepare_queue(Lane.TRANSACTIONAL)]
    redis_client.delete(*queues)

    messages_create(rows=[row(user.pk, is_test=True)])
    assert [redis_client.llen(q) for q in queues] == [1, 0, 0]

    messages_create(rows=[row(user.pk, is_test=False), row(user.pk, is_test=True)])
    assert [redis_client.llen(q) for q in queues] == [2, 1, 0]
    redis_client.delete(*queues)


def test_the_bulk_workers_consume_the_test_sends_queue():
    assert TEST_SENDS_QUEUE in lane_queues(Lane.BULK)
    assert TEST_SENDS_QUEUE not in lane_queues(Lane.TRANSACTIONAL)
