"""`/api/v1/messages/…` and a recipient's messages: each message with what happened on each
channel, and for what was not sent, the reason in the words support reads on the timeline."""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable
from datetime import datetime
from typing import Any

from django.http import HttpRequest
from ninja import Router, Schema, Status
from pydantic import Field

from notifier.http_api.auth import ApiError, ApiKeyAuth
from notifier.http_api.common import answers
from notifier.models import Delivery, Message, Recipient
from notifier.models.api_keys import ApiScope
from notifier.status import Reason
from notifier.user_keys import user_key_json

router = Router(tags=["messages"])

MAX_PAGE = 100


class DeliveryOut(Schema):
    channel: str
    status: str
    reason: str = Field(description="Why it was not sent, in words; empty when it was")
    attempts: int
    provider: str
    updated_at: datetime


class MessageOut(Schema):
    id: int
    user: int | str
    recipient: str | None = Field(description="The recipient's external_id, if they have one")
    type: str
    created_at: datetime
    deliveries: list[DeliveryOut]


def _reason_in_words(reason: str) -> str:
    return str(Reason(reason).label) if reason in Reason.values else reason


def messages_json(messages: Iterable[Message]) -> list[dict[str, Any]]:
    """Each message with its deliveries: two queries, whatever the number of messages."""
    messages = list(messages)
    deliveries: dict[int, list[Delivery]] = defaultdict(list)
    for d in Delivery.objects.filter(message_id__in=[m.pk for m in messages]).order_by(
        "channel", "pk"
    ):
        deliveries[d.message_id].append(d)
    externals = dict(
        Recipient.objects.filter(user_id__in={m.user_id for m in messages}).values_list(
            "user_id", "external_id"
        )
    )
    return [
        {
            "id": m.pk,
            "user": user_key_json(m.user_id),
            "recipient": externals.get(m.user_id),
            "type": m.type_id,
            "created_at": m.created_at,
            "deliveries": [
                {
                    "channel": d.channel,
                    "status": d.status,
                    "reason": _reason_in_words(d.reason),
                    "attempts": d.attempts,
                    "provider": d.provider or "",
                    "updated_at": d.updated_at,
                }
                for d in deliveries[m.pk]
            ],
        }
        for m in messages
    ]


@router.get(
    "/{message_id}",
    auth=ApiKeyAuth(ApiScope.READ),
    response=answers({200: MessageOut}, 404),
    summary="A message and what happened on each channel",
)
def message_read(request: HttpRequest, message_id: int) -> Status[dict[str, Any]]:
    """Each delivery's status and, for one not sent, the reason in words: what support sees
    on the timeline."""
    message = Message.objects.filter(pk=message_id).first()
    if message is None:
        raise ApiError(404, "NotFound", f"no message {message_id}")
    return Status(200, messages_json([message])[0])


def recipient_messages(
    recipient: Recipient, *, limit: int, before: int | None
) -> list[dict[str, Any]]:
    """The recipient's newest messages first, `limit` of them, older than message `before`."""
    if not 1 <= limit <= MAX_PAGE:
        raise ApiError(422, "InvalidRequest", f"limit must be from 1 to {MAX_PAGE}, got {limit}")
    rows = Message.objects.filter(user_id=recipient.user_id)
    if before is not None:
        rows = rows.filter(pk__lt=before)
    return messages_json(rows.order_by("-pk")[:limit])
