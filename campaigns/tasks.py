"""Campaign tasks: thin, each calls one service. Periodic ones are declared in notifier.periodic."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from celery import shared_task

from campaigns.services.fanout import (
    Walk,
    step_fanout_batch,
    step_walk,
    steps_start_due,
    triggers_evaluate,
    walk_continue,
)
from campaigns.services.stats import learn_active_hours, stats_rollup
from notifier.logcontext import bound
from notifier.models import recipient_ids_of
from notifier.tasks import PREPARE_TIME_LIMITS

# The fan-out renders every recipient's copy: the prepare tasks' time limits (see settings).
FANOUT_OPTIONS: dict[str, Any] = {
    "acks_late": True,
    "reject_on_worker_lost": True,
    "ignore_result": True,
    **PREPARE_TIME_LIMITS,
}


@contextmanager
def step_logged(step_id: int) -> Iterator[None]:
    """The task's log lines (and the tasks it publishes) name the campaign and the step."""
    from campaigns.models import CampaignStep

    campaign_id = (
        CampaignStep.objects.filter(pk=step_id).values_list("campaign_id", flat=True).first()
    )
    with bound(step_id=step_id, campaign_id=campaign_id):
        yield


@shared_task(name="campaigns.start_due_steps", ignore_result=True)
def start_due_steps() -> dict[str, list[int]]:
    """Beat: start the steps whose moment has come, skip missed ones, revive lost walks."""
    return steps_start_due().__dict__


@shared_task(name="campaigns.walk_step", **FANOUT_OPTIONS)
def walk_step(step_id: int) -> str:
    """Hand out the next batches of a step's audience; continues itself until done."""
    with step_logged(step_id):
        outcome: Walk = step_walk(step_id=step_id)
        walk_continue(step_id, outcome)
    return str(outcome)


@shared_task(name="campaigns.fanout_recipients", **FANOUT_OPTIONS)
def fanout_recipients(step_id: int, recipient_ids: list[int], walk_round: int) -> dict[str, int]:
    """Write and route one batch of recipients (profile ids) of a step, handed out in a walk's
    round."""
    with step_logged(step_id):
        report = step_fanout_batch(
            step_id=step_id, recipient_ids=recipient_ids, walk_round=walk_round
        )
    return report.__dict__


@shared_task(name="campaigns.fanout_batch", **FANOUT_OPTIONS)
def fanout_batch(step_id: int, user_ids: list[int], walk_round: int) -> dict[str, int]:
    """A batch handed out by user id, before walks went by recipient profile (queued across
    the upgrade to campaigns migration 0015): the same batch, by its users' profiles."""
    with step_logged(step_id):
        report = step_fanout_batch(
            step_id=step_id,
            recipient_ids=recipient_ids_of(user_ids),
            walk_round=walk_round,
        )
    return report.__dict__


@shared_task(name="campaigns.evaluate_triggers", ignore_result=True)
def evaluate_triggers() -> list[int]:
    """Beat: send triggered campaigns to users who entered their segment."""
    return triggers_evaluate()


@shared_task(name="campaigns.rollup_stats", ignore_result=True)
def rollup_stats() -> int:
    """Beat: recompute the funnels of live and recent campaigns for the admin page."""
    return stats_rollup()


@shared_task(name="campaigns.learn_active_hours", ignore_result=True)
def learn_active_hours_task() -> int:
    """Beat, nightly: each user's usual local hour of reading, for active-hour steps."""
    return learn_active_hours()
