"""The naive baseline for `manage.py bench`: one Celery task per recipient, one INSERT per row.

It writes the same rows as the pipeline (message, deliveries, events, inbox item, ledger) the
way a first version usually does. Only bench workers load this module (`celery worker -I`).
"""

from __future__ import annotations

from typing import Any

from celery import shared_task
from django.utils import timezone

from channels.base import Channel
from channels.models import SandboxSend
from notifier.models import (
    Delivery,
    DeliveryEvent,
    EventKind,
    InboxItem,
    Message,
    User,
    recipient_for,
)
from notifier.rendering import render, template_context
from notifier.services.pipeline import user_template_values
from notifier.status import DeliveryStatus

NAIVE_QUEUE = "bench.naive"


@shared_task(name="bench.naive_notify", acks_late=True, ignore_result=True)
def naive_notify(user_id: int, type_key: str, context: dict[str, Any], channels: list[str]) -> None:
    now = timezone.now()
    user = User.objects.get(pk=user_id)
    message = Message.objects.create(
        user=user,
        type_id=type_key,
        context=context,
        channels=channels,
        lane="bulk",
        created_at=now,
        routed_at=now,
    )
    values = template_context(context, user_template_values(user))
    for channel in channels:
        content = render(type_key, Channel(channel), values, recipient_for(user).locale)
        delivery = Delivery.objects.create(
            message=message,
            user=user,
            channel=channel,
            status=DeliveryStatus.QUEUED,
            content=content.as_dict(),
            created_at=now,
            updated_at=now,
            next_attempt_at=now,
        )
        DeliveryEvent.objects.create(
            delivery=delivery, at=now, kind=EventKind.ROUTED, status=DeliveryStatus.QUEUED
        )
        delivery.status, delivery.attempts = DeliveryStatus.SENDING, 1
        delivery.save(update_fields=["status", "attempts"])
        if channel == Channel.INAPP:
            InboxItem.objects.create(
                user=user,
                message=message,
                delivery=delivery,
                category="transactional",
                type_key=type_key,
                title=content.title,
                body=content.body,
                link=content.link,
                created_at=timezone.now(),
            )
        else:
            SandboxSend.objects.create(
                channel=channel,
                provider="sandbox",
                delivery_id=delivery.pk,
                message_id=message.pk,
                attempt=1,
                recipient=recipient_for(user).email,
                outcome="sent",
                payload={"content": content.as_dict()},
            )
        delivery.status, delivery.sent_at = DeliveryStatus.SENT, timezone.now()
        delivery.save(update_fields=["status", "sent_at"])
        DeliveryEvent.objects.create(
            delivery=delivery,
            at=timezone.now(),
            kind=EventKind.ATTEMPT,
            status=DeliveryStatus.SENT,
            attempt=1,
        )
