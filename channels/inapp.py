"""In-app channel: writes the inbox item. Runs in the pipeline's transaction (exactly once)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import ClassVar

from django.utils import timezone

from channels.base import Channel, Outgoing, SendResult


class InAppProvider:
    name: ClassVar[str] = "inapp"
    channel: ClassVar[Channel] = Channel.INAPP
    in_database: ClassVar[bool] = True

    @classmethod
    def configuration_problems(cls) -> list[str]:
        return []

    def send_many(self, outgoings: Sequence[Outgoing]) -> list[SendResult]:
        from notifier.models import InboxItem

        now = timezone.now()
        InboxItem.objects.bulk_create(
            [
                InboxItem(
                    user_id=o.user_id,
                    message_id=o.message_id,
                    delivery_id=o.delivery_id,
                    category=o.category,
                    type_key=o.type_key,
                    title=o.content.title[:300],
                    body=o.content.body,
                    link=o.content.link[:2000],
                    created_at=now,
                )
                for o in outgoings
            ],
            ignore_conflicts=True,  # the delivery's inbox item already exists: nothing to add
        )
        return [SendResult.sent(self.name) for _ in outgoings]
