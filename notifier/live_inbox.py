"""Tells a user's open inbox pages that their inbox changed: a Redis PUBLISH per user, on commit.

The events are hints, not the record: a page that gets one reads the unread count (the stream
does, notifier.pages.inbox_stream) and refetches what it shows, and every (re)connect starts
with the count read afresh. So a publish that fails (Redis down) costs a late badge, never a
wrong one for long, and must never fail or roll back what it tells of: it is logged and
counted (notifier_live_inbox_publish_failures), and the delivery goes on.

Pub/sub channels are server-wide, not per Redis database, so the channel names carry the
database number of the state Redis: two deployments on one server with their own databases
(or two test runs) never hear each other.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Iterable
from enum import StrEnum
from functools import partial

import redis
from django.conf import settings
from django.db import transaction
from redis.connection import parse_url

from notifier.operations.metrics import record_live_publish_failure
from notifier.redis_client import state_client, state_redis_url
from notifier.user_keys import UserKey

log = logging.getLogger(__name__)


class InboxChange(StrEnum):
    NEW = "new"  # new items (their ids are not known to a bulk COPY: refetch the newest)
    READ = "read"  # one item read
    READ_ALL = "read_all"
    ARCHIVED = "archived"


def live_inbox_enabled() -> bool:
    """Whether changes are published and the stream served: on, with a state Redis."""
    return bool(settings.NOTIFIER_LIVE_INBOX) and state_client() is not None


def inbox_channel_prefix() -> str:
    """The channels' common prefix, with the state Redis's database number."""
    url = state_redis_url()
    database = parse_url(url).get("db", 0) if url else 0
    return f"notifier:inbox:{database}:"


def inbox_channel(user_id: UserKey) -> str:
    return f"{inbox_channel_prefix()}{user_id}"


def inbox_changed(
    user_ids: Iterable[UserKey], change: InboxChange, *, item_id: int | None = None
) -> None:
    """Tell these users' open inbox pages of `change` once the current transaction commits (at
    once outside one); nothing when it rolls back."""
    if not settings.NOTIFIER_LIVE_INBOX:
        return
    users = list(dict.fromkeys(user_ids))  # one event per user, however many items
    if not users:
        return
    event: dict[str, str | int] = {"change": str(change)}
    if item_id is not None:
        event["item"] = item_id
    payload = json.dumps(event, separators=(",", ":"))
    transaction.on_commit(partial(_publish, users, payload, change))


def _publish(user_ids: list[UserKey], payload: str, change: InboxChange) -> None:
    client = state_client()
    if client is None:  # embedded mode: no Redis, the page polls
        return
    prefix = inbox_channel_prefix()
    try:
        # One round trip for a fan-out batch's thousand users.
        with client.pipeline(transaction=False) as pipe:
            for user_id in user_ids:
                pipe.publish(f"{prefix}{user_id}", payload)
            pipe.execute()
    except redis.RedisError:
        log.warning("could not publish %d inbox change(s)", len(user_ids), exc_info=True)
        record_live_publish_failure(len(user_ids), str(change))
