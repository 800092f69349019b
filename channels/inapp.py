"""In-app channel: writes the inbox item. Runs in the pipeline's transaction (exactly once)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import ClassVar

from django.utils import timezone

from channels.base import Channel, Outgoing, SendResult


class InAppProvider:
    name: str = "inapp"
    channel: ClassVar[Channel] = Channel.INAPP
    in_database: ClassVar[bool] = True

    @classmethod
    def configuration_problems(cls) -> list[str]:
        return []

    def send_many(self, outgoings: Sequence[Outgoing]) -> list[SendResult]:
        from notifier.db import insert_rows
        from notifier.models import InboxItem

        now = timezone.now()
        insert_rows(
            InboxItem,
            (
                "user",
                "message",
                "delivery",
                "category",
                "type_key",
                "title",
                "body",
                "link",
                "created_at",
                "feedback",
            ),
            [
                (
                    o.user_id,
                    o.message_id,
                    o.delivery_id,
                    o.category,
                    o.type_key,
                    o.content.title[:300],
                    o.content.body,
                    o.content.link[:2000],
                    now,
                    "",
                )
                for o in outgoings
            ],
            ignore_conflicts=True,  # the delivery's inbox item exists already: nothing to add
        )
        return [SendResult.sent(self.name) for _ in outgoings]
