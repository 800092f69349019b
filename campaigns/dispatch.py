"""Publishing the campaign fan-out's tasks, by name (campaigns/tasks.py declares them), so the
services that publish them need not import the tasks that call them back. Tests replace these
two functions to run walks and batches where they want them."""

from __future__ import annotations

from notifier.dispatch import publish
from notifier.queues import Lane

WALK_TASK = "campaigns.walk_step"
BATCH_TASK = "campaigns.fanout_recipients"


def publish_walk(step_id: int, countdown: float = 0.0) -> None:
    publish(WALK_TASK, args=(step_id,), queue=f"{Lane.BULK}.prepare", countdown=countdown or None)


def publish_batch(step_id: int, recipient_ids: list[int], walk_round: int) -> None:
    publish(BATCH_TASK, args=(step_id, recipient_ids, walk_round), queue=f"{Lane.BULK}.prepare")
