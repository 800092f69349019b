"""Topics: follow an object, and notify everyone following it.

`topic_subscribe` / `topic_unsubscribe` keep who follows what (one row per person and topic;
doing it twice changes nothing). `topic_send_start` records one notification to a topic (a
`TopicSend`) and, once that commits, starts its walk; `topic_send_walk` hands the subscribers
out in keyset batches of a thousand by subscription id: each batch's messages (through the
same insert as `notify_many`, keyed `topic:<send>:<user>`, digest key `topic:<topic id>`) and
the walk's cursor are written in one transaction, so a walk that dies resumes where it was,
a walk that runs twice writes nothing twice, and memory holds one batch whatever the topic's
size. Every message then takes the pipeline as any other: preferences, consent, quiet hours,
caps, snoozes, throttles.

A walk runs for up to `WALK_BUDGET_S` and publishes its next run; beat revives a walk whose
task was lost (`topic_sends_revive`).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from functools import partial
from typing import Any

from django.contrib.auth import get_user_model
from django.db import IntegrityError, transaction
from django.utils import timezone

from notifier import dispatch
from notifier.db import insert_rows
from notifier.errors import IdempotencyKeyReused
from notifier.models import (
    Recipient,
    Topic,
    TopicSend,
    TopicSendStatus,
    TopicSnooze,
    TopicSubscription,
)
from notifier.queues import Lane, prepare_queue
from notifier.selectors import TypeInfo, type_info_get
from notifier.services.messages import NewMessage, messages_create
from notifier.user_keys import UserKey

log = logging.getLogger(__name__)
T = TopicSendStatus
BATCH = 1000
WALK_BUDGET_S = 20.0
WALK_STALE = timedelta(minutes=2)
WALK_TASK = "notifier.walk_topic_send"


@dataclass(frozen=True)
class WalkReport:
    batches: int
    written: int
    done: bool


def topic_get_or_create(key: str, *, name: str = "") -> Topic:
    topic, _ = Topic.objects.get_or_create(
        key=key, defaults={"name": name, "created_at": timezone.now()}
    )
    return topic


def topic_subscribe(*, topic_key: str, user_ids: Iterable[UserKey]) -> int:
    """Subscribe these users; returns how many were not subscribed yet."""
    topic = topic_get_or_create(topic_key)
    now = timezone.now()
    made = insert_rows(
        TopicSubscription,
        ("topic", "user", "at"),
        [(topic.pk, user_id, now) for user_id in dict.fromkeys(user_ids)],
        returning=("id",),
        ignore_conflicts=True,
    )
    return len(made)


def topic_unsubscribe(*, topic_key: str, user_ids: Iterable[UserKey]) -> int:
    """Unsubscribe these users; their snoozes of the topic go with it (following it again
    later starts unmuted). Returns how many were subscribed."""
    users = list(user_ids)
    with transaction.atomic():
        # The subscriptions first: deleting them waits for a snooze being made (it locks the
        # subscription), so the snoozes' delete after it sees that snooze and ends it too.
        deleted, _ = TopicSubscription.objects.filter(
            topic__key=topic_key, user_id__in=users
        ).delete()
        TopicSnooze.objects.filter(topic__key=topic_key, user_id__in=users).delete()
    return deleted


def topics_of(*, user_id: UserKey) -> list[str]:
    return list(
        TopicSubscription.objects.filter(user_id=user_id)
        .order_by("topic__key")
        .values_list("topic__key", flat=True)
    )


def topic_send_start(
    *,
    topic_key: str,
    info: TypeInfo,
    context: dict[str, Any],
    channels: Sequence[str],
    exclude: Sequence[UserKey],
    idempotency_key: str | None,
) -> TopicSend:
    """Record a notification to the topic and start its walk once this commits. The same
    idempotency key gives back the first call's send."""
    now = timezone.now()
    if idempotency_key is not None:
        found = _same_send(idempotency_key, topic_key, info)
        if found is not None:
            return found
    try:
        with transaction.atomic():
            return _send_create(topic_key, info, context, channels, exclude, idempotency_key, now)
    except IntegrityError:
        # The same key, at the same moment, from another request: the first one's send.
        found = _same_send(idempotency_key, topic_key, info) if idempotency_key else None
        if found is None:
            raise
        return found


def _same_send(idempotency_key: str, topic_key: str, info: TypeInfo) -> TopicSend | None:
    found = (
        TopicSend.objects.filter(idempotency_key=idempotency_key).select_related("topic").first()
    )
    if found is not None and (found.topic.key, found.type_id) != (topic_key, info.key):
        raise IdempotencyKeyReused(
            f"idempotency key {idempotency_key!r} already belongs to a send of "
            f"{found.type_id} to {found.topic.key}; use a key unique to this one"
        )
    return found


def _send_create(
    topic_key: str,
    info: TypeInfo,
    context: dict[str, Any],
    channels: Sequence[str],
    exclude: Sequence[UserKey],
    idempotency_key: str | None,
    now: datetime,
) -> TopicSend:
    with transaction.atomic():
        send = TopicSend.objects.create(
            topic=topic_get_or_create(topic_key),
            type_id=info.key,
            context=context,
            channels=list(channels),
            exclude=[str(user_id) for user_id in exclude],
            idempotency_key=idempotency_key,
            created_at=now,
            updated_at=now,
        )
        transaction.on_commit(partial(publish_walk, send.pk), robust=True)
    return send


def publish_walk(send_id: int) -> None:
    try:
        dispatch.publish(WALK_TASK, args=(send_id,), queue=prepare_queue(Lane.BULK))
    except Exception:
        log.exception("could not publish the walk of topic send %s; beat revives it", send_id)


def topic_send_walk(*, send_id: int, budget_s: float = WALK_BUDGET_S) -> WalkReport:
    """Hand out the send's subscribers, a batch per transaction, for up to `budget_s`; then,
    if there are more, publish the next run. A run that finds the send held by another
    (a copy of this task) leaves it to that one."""
    started = time.monotonic()
    batches = written = 0
    while True:
        step = _walk_one(send_id)
        if step is None:  # held by another run, or gone
            return WalkReport(batches, written, done=False)
        count, done = step
        batches, written = batches + 1, written + count
        if done:
            return WalkReport(batches, written, done=True)
        if time.monotonic() - started >= budget_s:
            transaction.on_commit(partial(publish_walk, send_id), robust=True)
            return WalkReport(batches, written, done=False)


def _walk_one(send_id: int) -> tuple[int, bool] | None:
    with transaction.atomic():
        send = (
            TopicSend.objects.select_for_update(skip_locked=True)
            .filter(pk=send_id, status=T.WALKING)
            .first()
        )
        if send is None:
            return None
        info = type_info_get(send.type_id)
        now = timezone.now()
        batch = list(_next_subscribers(send))
        excluded = set(send.exclude)
        users = [user_id for _, user_id in batch if str(user_id) not in excluded]
        if users and info is not None and info.is_active:
            messages_create(
                rows=[
                    NewMessage(
                        user_id=user_id,
                        type_key=send.type_id,
                        context=send.context,
                        channels=list(send.channels),
                        lane=info.lane,
                        idempotency_key=f"topic:{send.pk}:{user_id}",
                        priority=info.priority,
                        topic_id=send.topic_id,
                        # A digesting type collects a topic's messages apart from others' (a
                        # person's comments on two cards are two digests, each its topic's,
                        # so a topic snooze still applies to its digest).
                        digest_key=f"topic:{send.topic_id}",
                    )
                    for user_id in users
                ]
            )
        done = len(batch) < BATCH
        TopicSend.objects.filter(pk=send.pk).update(
            cursor=batch[-1][0] if batch else send.cursor,
            sent=send.sent + len(users),
            status=T.DONE if done else T.WALKING,
            updated_at=now,
        )
    return len(users), done


def _next_subscribers(send: TopicSend) -> Iterable[tuple[int, UserKey]]:
    """The next batch of (subscription id, user key) after the cursor: people whose account is
    active and whose data was not erased (the others would only be suppressed)."""
    user_model = get_user_model()
    rows = TopicSubscription.objects.filter(topic_id=send.topic_id, id__gt=send.cursor)
    if any(f.name == "is_active" for f in user_model._meta.concrete_fields):
        rows = rows.filter(user__is_active=True)
    erased = Recipient.objects.filter(erased_at__isnull=False).values("user_id")
    return rows.exclude(user_id__in=erased).order_by("id").values_list("id", "user_id")[:BATCH]


def topic_sends_revive(*, now: datetime | None = None) -> list[int]:
    """Beat: publish again the walks not heard from in WALK_STALE (their task was lost)."""
    now = now or timezone.now()
    stale = list(
        TopicSend.objects.filter(status=T.WALKING, updated_at__lt=now - WALK_STALE).values_list(
            "pk", flat=True
        )[:100]
    )
    for send_id in stale:
        TopicSend.objects.filter(pk=send_id).update(updated_at=now)
        transaction.on_commit(partial(publish_walk, send_id), robust=True)
    return stale
