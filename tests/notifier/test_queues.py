"""Which lane a queue is on, by its name, and which workers do bulk-lane work only."""

from __future__ import annotations

from notifier.queues import (
    ALL_QUEUES,
    MAINTENANCE_QUEUE,
    TEST_SENDS_QUEUE,
    WEBHOOKS_QUEUE,
    Lane,
    bulk_lane_only,
    lane_of_queue,
    lane_queues,
)


def test_every_lane_queue_is_on_its_lane_and_the_others_on_none():
    for lane in Lane:
        assert {lane_of_queue(queue) for queue in lane_queues(lane)} == {lane}
    assert lane_of_queue(TEST_SENDS_QUEUE) == Lane.BULK
    assert lane_of_queue(MAINTENANCE_QUEUE) is None
    assert lane_of_queue(WEBHOOKS_QUEUE) is None
    assert lane_of_queue("bulk") is None  # a name, not a queue of the lane
    assert lane_of_queue("celery") is None


def test_only_a_worker_on_bulk_lane_queues_alone_is_bulk_only():
    assert bulk_lane_only(lane_queues(Lane.BULK))
    assert bulk_lane_only(["bulk.email"])
    assert not bulk_lane_only(lane_queues(Lane.TRANSACTIONAL))
    assert not bulk_lane_only(ALL_QUEUES)
    assert not bulk_lane_only([*lane_queues(Lane.BULK), MAINTENANCE_QUEUE])
    assert not bulk_lane_only([*lane_queues(Lane.BULK), "celery"])  # the host's own work too
    assert not bulk_lane_only([])
