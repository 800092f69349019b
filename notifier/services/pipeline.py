"""Generate and route: turn messages into one Delivery per channel, then publish the sends.

Both steps run in one task per batch of messages (see README, "Architecture"): the messages are
locked, each channel is decided by the route policy, the channels that will send are rendered,
and deliveries plus their first event are written in bulk, all in one transaction. Running it
twice is harmless: routed messages are skipped, and locked ones are left to their owner.
"""

from __future__ import annotations

import logging
from collections import Counter, defaultdict
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime
from functools import partial
from typing import Any

from django.db import transaction
from django.utils import timezone

from channels.base import Channel, Content
from notifier import dispatch
from notifier.db import insert_rows
from notifier.models import Delivery, DeliveryEvent, Device, EventKind, Message, User
from notifier.policies.routing import Recipient, RouteDecision, decide_channel
from notifier.queues import Lane
from notifier.rendering import RenderError, render, template_context
from notifier.selectors import type_info_get
from notifier.status import DeliveryStatus, Reason

log = logging.getLogger(__name__)


def recipient_of(user: User, active_devices: int) -> Recipient:
    return Recipient(
        is_active=user.is_active,
        email=user.email,
        phone=user.phone,
        active_devices=active_devices,
    )


def user_template_values(user: User) -> dict[str, Any]:
    return {
        "first_name": user.first_name,
        "last_name": user.last_name,
        "name": user.get_full_name() or user.first_name or user.username,
        "locale": user.locale,
    }


def message_route(message: Message, recipient: Recipient) -> dict[Channel, RouteDecision]:
    info = type_info_get(message.type_id)
    if info is None:  # deleted since notify(): PROTECT makes this near impossible
        raise LookupError(f"notification type {message.type_id!r} no longer exists")
    return {
        Channel(channel): decide_channel(
            Channel(channel),
            recipient,
            type_channels=frozenset(info.channels),
            type_active=info.is_active,
        )
        for channel in message.channels
    }


def message_generate(
    message: Message, channels: Sequence[Channel]
) -> dict[Channel, Content | RenderError]:
    context = template_context(message.context, user_template_values(message.user))
    rendered: dict[Channel, Content | RenderError] = {}
    for channel in channels:
        try:
            rendered[channel] = render(message.type_id, channel, context, message.user.locale)
        except RenderError as exc:
            log.warning("message %s: %s", message.pk, exc)
            rendered[channel] = exc
    return rendered


@dataclass(frozen=True, slots=True)
class Routed:
    """One delivery row as route decided it, before it is written."""

    message_id: int
    user_id: int
    channel: Channel
    status: DeliveryStatus
    reason: str = ""
    content: dict[str, str] = field(default_factory=dict)
    last_error: str = ""


def routed(
    message: Message,
    channel: Channel,
    decision: RouteDecision,
    content: Content | RenderError | None,
) -> Routed:
    row = partial(Routed, message.pk, message.user_id, channel)
    if not decision.sends:
        return row(DeliveryStatus.SUPPRESSED, reason=decision.reason or "")
    if isinstance(content, RenderError):
        return row(DeliveryStatus.FAILED, reason=Reason.RENDER_FAILED, last_error=str(content))
    assert content is not None
    return row(DeliveryStatus.QUEUED, content=content.as_dict())


DELIVERY_COLUMNS = (
    "message",
    "user",
    "channel",
    "status",
    "reason",
    "content",
    "last_error",
    "attempts",
    "provider",
    "provider_message_id",
    "created_at",
    "updated_at",
    "next_attempt_at",
    "finished_at",
)
EVENT_COLUMNS = ("delivery", "at", "kind", "status", "reason", "provider", "error", "detail")


def _write(rows: list[Routed], now: datetime) -> dict[tuple[int, str], int]:
    """Insert deliveries and their ROUTED events; returns (message id, channel) -> delivery id."""
    returned = insert_rows(
        Delivery,
        DELIVERY_COLUMNS,
        [
            (
                r.message_id,
                r.user_id,
                str(r.channel),
                str(r.status),
                r.reason,
                r.content,
                r.last_error,
                0,
                "",
                "",
                now,
                now,
                now if r.status == DeliveryStatus.QUEUED else None,
                None if r.status == DeliveryStatus.QUEUED else now,
            )
            for r in rows
        ],
        returning=("id", "message", "channel"),
    )
    ids = {(message_id, channel): pk for pk, message_id, channel in returned}
    insert_rows(
        DeliveryEvent,
        EVENT_COLUMNS,
        [
            (
                ids[(r.message_id, r.channel)],
                now,
                EventKind.ROUTED,
                str(r.status),
                r.reason,
                "",
                r.last_error,
                {},
            )
            for r in rows
        ],
    )
    return ids


def messages_prepare(*, message_ids: Sequence[int]) -> Counter[str]:
    """Generate and route a batch of messages. Returns counts of the statuses written."""
    now = timezone.now()
    written: Counter[str] = Counter()
    with transaction.atomic():
        messages = list(
            Message.objects.select_for_update(skip_locked=True, of=("self",))
            .filter(pk__in=message_ids, routed_at__isnull=True)
            .select_related("user")
            .order_by("pk")
        )
        if not messages:
            return written
        push_users = [m.user_id for m in messages if Channel.PUSH in m.channels]
        devices = (
            Counter(
                Device.objects.filter(user_id__in=push_users, active=True).values_list(
                    "user_id", flat=True
                )
            )
            if push_users
            else Counter()
        )

        rows: list[Routed] = []
        for message in messages:
            decisions = message_route(message, recipient_of(message.user, devices[message.user_id]))
            contents = message_generate(message, [c for c, d in decisions.items() if d.sends])
            rows += [
                routed(message, channel, decision, contents.get(channel))
                for channel, decision in decisions.items()
            ]
        ids = _write(rows, now)
        Message.objects.filter(pk__in=[m.pk for m in messages]).update(routed_at=now)

        lanes = {m.pk: Lane(m.lane) for m in messages}
        to_send: dict[tuple[Lane, Channel], list[int]] = defaultdict(list)
        for r in rows:
            written[r.status] += 1
            if r.status == DeliveryStatus.QUEUED:
                to_send[(lanes[r.message_id], r.channel)].append(ids[(r.message_id, r.channel)])
        for (lane, channel), delivery_ids in to_send.items():
            transaction.on_commit(
                partial(dispatch.publish_deliver, delivery_ids, lane, channel), robust=True
            )
    return written
