"""In-app channel: writes the inbox item, in the caller's transaction (exactly once).

Routing writes most in-app deliveries' items itself, as it writes the deliveries
(notifier.services.pipeline, `inapp_sent_now`): our own database is the provider, so there is
nothing to wait for. The deliver task calls `send_many` for the rest (released from a hold,
paced by a campaign's send rate or a rate limit, retried).
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from typing import Any, ClassVar, NamedTuple

from django.utils import timezone

from channels.base import Channel, Outgoing, SendResult


class InboxEntry(NamedTuple):
    """One inbox item to write (a plain tuple: a fan-out batch writes a thousand)."""

    user_id: Any  # the project's user key
    message_id: int
    delivery_id: int
    category: str  # the notification kind
    type_key: str
    title: str
    body: str
    link: str


INBOX_COLUMNS = (
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
)


class InAppProvider:
    name: str = "inapp"
    channel: ClassVar[Channel] = Channel.INAPP
    in_database: ClassVar[bool] = True

    @classmethod
    def configuration_problems(cls) -> list[str]:
        return []

    def send_many(self, outgoings: Sequence[Outgoing]) -> list[SendResult]:
        self.inbox_write(
            [
                InboxEntry(
                    o.user_id,
                    o.message_id,
                    o.delivery_id,
                    o.category,
                    o.type_key,
                    o.content.title,
                    o.content.body,
                    o.content.link,
                )
                for o in outgoings
            ]
        )
        return [SendResult.sent(self.name) for _ in outgoings]

    @staticmethod
    def inbox_write(
        entries: Sequence[InboxEntry], *, at: datetime | None = None, new_deliveries: bool = False
    ) -> None:
        """Insert the entries' inbox items; a delivery that has its item already keeps it.
        With `new_deliveries` (written in this transaction: none can have an item yet) by
        COPY, as the fan-out writes its other rows."""
        from notifier.db import copy_rows, insert_rows
        from notifier.live_inbox import InboxChange, inbox_changed
        from notifier.models import InboxItem

        now = at or timezone.now()
        rows = [
            (
                e.user_id,
                e.message_id,
                e.delivery_id,
                e.category,
                e.type_key,
                e.title[:300],
                e.body,
                e.link[:2000],
                now,
                "",
            )
            for e in entries
        ]
        if new_deliveries:
            copy_rows(InboxItem, INBOX_COLUMNS, rows)
        else:  # the delivery's inbox item may exist already: nothing to add then
            insert_rows(InboxItem, INBOX_COLUMNS, rows, ignore_conflicts=True)
        # Open inbox pages hear of it after commit (an item that existed already costs its
        # user one needless refetch, not a wrong badge).
        inbox_changed((e.user_id for e in entries), InboxChange.NEW)
