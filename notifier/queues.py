"""Every Celery queue the pipeline uses, declared once, with why it exists.

Two lanes keep bulk work from starving transactional traffic: a payment receipt must not wait
behind a million-recipient promotion. Within a lane, each channel has its own delivery queue so
a slow SMS gateway never blocks in-app delivery. Workers subscribe per lane (see deploy/).
"""

from __future__ import annotations

from collections.abc import Iterable
from enum import StrEnum

from kombu import Queue

from channels.base import Channel


class Lane(StrEnum):
    TRANSACTIONAL = "transactional"  # transactional and service notifications: latency matters
    BULK = "bulk"  # marketing and social notifications, notify_many and campaign fan-out


LANES_BY_NAME: dict[str, Lane] = {lane.value: lane for lane in Lane}


# Periodic jobs (re-queue stuck work, release held deliveries, roll-ups) run here, apart from
# the lanes, so a backlog never delays the job that recovers from it.
MAINTENANCE_QUEUE = "maintenance"

# Outbound webhooks' send runs (notifier.webhooks_send): each posts to a product's receiver and
# may wait NOTIFIER_WEBHOOK_TIMEOUT_S (5 s) per request, up to a 20 s run. A slow or dead
# receiver must not delay the maintenance jobs (the re-queue of stuck work, the release of held
# deliveries, the alerts) nor sending, so these runs have a queue and a small worker of their
# own. The webhooks' sweep and prune stay on maintenance: both are short database work, and the
# sweep, which re-publishes lost sends, must not wait behind the very backlog it recovers.
WEBHOOKS_QUEUE = "webhooks"


def prepare_queue(lane: Lane) -> str:
    """Queue of the generate + route step for one lane."""
    return f"{lane}.prepare"


def deliver_queue(lane: Lane, channel: Channel) -> str:
    """Queue of the deliver step for one lane and channel."""
    return f"{lane}.{channel}"


# Marketers' test sends are prepared on the bulk lane, so copy that burns CPU never runs where
# receipts and password resets do, in a queue of their own, so a test is not stuck behind a
# running campaign's fan-out batches in bulk.prepare (a worker takes from its queues in turn).
TEST_SENDS_QUEUE = f"{Lane.BULK}.tests"


def lane_queues(lane: Lane) -> list[str]:
    tests = [TEST_SENDS_QUEUE] if lane == Lane.BULK else []
    return [prepare_queue(lane), *tests] + [deliver_queue(lane, channel) for channel in Channel]


def lane_of_queue(name: str) -> Lane | None:
    """The lane a queue belongs to, by its name (`<lane>.<step or channel>`); None for the
    queues outside the lanes (maintenance, webhooks) and for queues Notifier does not know."""
    prefix, dot, _ = name.partition(".")
    return LANES_BY_NAME.get(prefix) if dot else None


def bulk_lane_only(queues: Iterable[str]) -> bool:
    """Whether a worker consuming `queues` does bulk-lane work only: nothing transactional,
    no maintenance job, nothing of the host's own (notifier.celery_config lowers its CPU
    priority)."""
    names = list(queues)
    return bool(names) and all(lane_of_queue(name) == Lane.BULK for name in names)


ALL_QUEUES: list[str] = [
    *lane_queues(Lane.TRANSACTIONAL),
    *lane_queues(Lane.BULK),
    MAINTENANCE_QUEUE,
    WEBHOOKS_QUEUE,
]

CELERY_QUEUES = [Queue(name, routing_key=name) for name in ALL_QUEUES]


BULK_KINDS = frozenset({"marketing", "social"})


def lane_for_kind(kind: str) -> Lane:
    """Marketing and social traffic rides the bulk lane; the rest is transactional."""
    return Lane.BULK if kind in BULK_KINDS else Lane.TRANSACTIONAL
