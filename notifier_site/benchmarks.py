"""The naive baselines for `manage.py bench`: one Celery task per recipient.

Two of them, both rendering each channel's copy per recipient with the project's own templates:

- heavy (`naive_notify`): writes the same rows as the pipeline (message, deliveries, events,
  inbox item, sandbox ledger) one INSERT or UPDATE at a time through the ORM, the way a first
  version of this project would;
- thin (`thin_naive_notify`): reads the user, renders, and writes one log row (one INSERT into
  `bench_thin_log`, a table the bench makes itself): the pipeline a typical team writes first,
  with no consent, preferences, caps, statuses or ledger.

Only bench workers load this module (`celery worker -I`).
"""

from __future__ import annotations

import json
from typing import Any

from celery import shared_task
from django.db import connection
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
THIN_LOG_TABLE = "bench_thin_log"
THIN_LOG_CREATE = (
    f"CREATE TABLE IF NOT EXISTS {THIN_LOG_TABLE} ("
    "id bigserial PRIMARY KEY, user_id bigint NOT NULL, type_key text NOT NULL, "
    "content jsonb NOT NULL, created_at timestamptz NOT NULL)"
)


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


@shared_task(name="bench.thin_naive_notify", acks_late=True, ignore_result=True)
def thin_naive_notify(
    user_id: int, type_key: str, context: dict[str, Any], channels: list[str]
) -> None:
    """One SELECT of the user with its profile, each channel rendered, one INSERT."""
    user = User.objects.select_related("notifier_recipient").get(pk=user_id)
    values = template_context(context, user_template_values(user))
    locale = recipient_for(user).locale
    content = {
        channel: render(type_key, Channel(channel), values, locale).as_dict()
        for channel in channels
    }
    with connection.cursor() as cursor:
        cursor.execute(
            f"INSERT INTO {THIN_LOG_TABLE} (user_id, type_key, content, created_at) "
            "VALUES (%s, %s, %s, %s)",
            [user_id, type_key, json.dumps(content), timezone.now()],
        )
