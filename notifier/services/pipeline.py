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
from datetime import datetime
from functools import partial
from typing import Any

from django.db import transaction
from django.utils import timezone

from channels.base import Channel, Content
from notifier import dispatch
from notifier.models import Delivery, DeliveryEvent, Device, EventKind, Message, User
from notifier.policies.routing import Recipient, RouteDecision, decide_channel
from notifier.queues import Lane
from notifier.rendering import RenderError, render, template_context
from notifier.selectors import TypeInfo
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
    info = TypeInfo.of(message.type)
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


def _delivery_for(
    message: Message,
    channel: Channel,
    decision: RouteDecision,
    content: Content | RenderError | None,
    now: datetime,
) -> Delivery:
    delivery = Delivery(
        message_id=message.pk,
        user_id=message.user_id,
        channel=channel,
        created_at=now,
        updated_at=now,
    )
    if not decision.sends:
        delivery.status, delivery.reason, delivery.finished_at = (
            DeliveryStatus.SUPPRESSED,
            decision.reason or "",
            now,
        )
    elif isinstance(content, RenderError):
        delivery.status, delivery.reason, delivery.finished_at = (
            DeliveryStatus.FAILED,
            Reason.RENDER_FAILED,
            now,
        )
        delivery.last_error = str(content)
    else:
        assert content is not None
        delivery.status, delivery.next_attempt_at = DeliveryStatus.QUEUED, now
        delivery.content = content.as_dict()
    return delivery


def messages_prepare(*, message_ids: Sequence[int]) -> Counter[str]:
    """Generate and route a batch of messages. Returns counts of the statuses written."""
    now = timezone.now()
    written: Counter[str] = Counter()
    with transaction.atomic():
        messages = list(
            Message.objects.select_for_update(skip_locked=True, of=("self",))
            .filter(pk__in=message_ids, routed_at__isnull=True)
            .select_related("user", "type")
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

        deliveries: list[Delivery] = []
        for message in messages:
            decisions = message_route(message, recipient_of(message.user, devices[message.user_id]))
            contents = message_generate(message, [c for c, d in decisions.items() if d.sends])
            deliveries += [
                _delivery_for(message, channel, decision, contents.get(channel), now)
                for channel, decision in decisions.items()
            ]
        Delivery.objects.bulk_create(deliveries)
        DeliveryEvent.objects.bulk_create(
            [
                DeliveryEvent(
                    delivery_id=d.pk,
                    at=now,
                    kind=EventKind.ROUTED,
                    status=d.status,
                    reason=d.reason,
                    error=d.last_error,
                )
                for d in deliveries
            ]
        )
        Message.objects.filter(pk__in=[m.pk for m in messages]).update(routed_at=now)

        lanes = {m.pk: Lane(m.lane) for m in messages}
        to_send: dict[tuple[Lane, Channel], list[int]] = defaultdict(list)
        for d in deliveries:
            written[d.status] += 1
            if d.status == DeliveryStatus.QUEUED:
                to_send[(lanes[d.message_id], Channel(d.channel))].append(d.pk)
        for (lane, channel), ids in to_send.items():
            transaction.on_commit(
                partial(dispatch.publish_deliver, ids, lane, channel), robust=True
            )
    return written
