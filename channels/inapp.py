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
    # A digest group (its digest key; None: not a digest type's message) and how many
    # messages this one stands for: the group's live item is updated in place, not added to.
    group_key: str | None = None
    group_count: int = 1


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
        from notifier.selectors import inbox_groups

        groups = inbox_groups({o.message_id: o.type_key for o in outgoings})
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
                    *groups.get(o.message_id, (None, 1)),
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
        COPY, as the fan-out writes its other rows. An entry of a digest group updates the
        group's live item instead, when it has one (`_group_write`)."""
        from notifier.db import copy_rows, insert_rows
        from notifier.live_inbox import InboxChange, inbox_changed
        from notifier.models import InboxItem

        now = at or timezone.now()
        users = [e.user_id for e in entries]  # a group's item updated in place is news too
        grouped = [e for e in entries if e.group_key is not None]
        if grouped:
            _group_write(grouped, now)
            entries = [e for e in entries if e.group_key is None]
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
        inbox_changed(users, InboxChange.NEW)


def _group_write(entries: Sequence[InboxEntry], now: datetime) -> None:
    """Each entry updates its group's live (not archived) item in place: the new title, body,
    link and count, at the top again and unread again; with none live, it is inserted. Race
    safe: the live item is locked first (groups in one order, so two batches never wait for
    each other crosswise), and two inserts of one group meet at the partial unique index
    `inbox_one_live_group` (the loser waits for the winner's commit, then updates its item).
    An entry older than the item's message (a late retry) leaves it as it is; a delivery that
    has its item already (a retried send) keeps it. The delivery an unread item showed before
    is kept in its `superseded`, for the read to come."""
    from notifier.db import insert_rows
    from notifier.models import InboxItem

    entries = sorted(
        entries, key=lambda e: (str(e.user_id), e.type_key, e.group_key or "", e.message_id)
    )
    done = set(
        InboxItem.objects.filter(delivery_id__in=[e.delivery_id for e in entries]).values_list(
            "delivery_id", flat=True
        )
    )
    for entry in entries:
        if entry.delivery_id in done:
            continue
        fields = {
            "message_id": entry.message_id,
            "delivery_id": entry.delivery_id,
            "category": entry.category,
            "title": entry.title[:300],
            "body": entry.body,
            "link": entry.link[:2000],
            "created_at": now,
            "read_at": None,
            "group_count": entry.group_count,
            # A 👎 was about the words replaced: the new ones start with none.
            "feedback": "",
            "feedback_at": None,
        }
        for _ in range(3):
            live = (
                InboxItem.objects.select_for_update()
                .filter(
                    user_id=entry.user_id,
                    type_key=entry.type_key,
                    group_key=entry.group_key,
                    archived_at__isnull=True,
                )
                .values_list("pk", "message_id", "delivery_id", "read_at", "superseded")
                .first()
            )
            if live is not None:
                pk, message_id, replaced, read_at, superseded = live
                if message_id < entry.message_id:
                    # The replaced delivery has no item of its own any more: reading this one
                    # reads it too (`inbox_mark_read`). One read already reads what it showed.
                    kept = None if read_at is not None else [*(superseded or ()), replaced]
                    InboxItem.objects.filter(pk=pk).update(**fields, superseded=kept)
                elif read_at is None and entry.delivery_id not in (superseded or ()):
                    # A late older one (or a retry of one replaced), shown by no item: it is
                    # read with this one.
                    InboxItem.objects.filter(pk=pk).update(
                        superseded=[*(superseded or ()), entry.delivery_id]
                    )
                break
            columns = (*INBOX_COLUMNS, "group_key", "group_count")
            made = insert_rows(
                InboxItem,
                columns,
                [
                    (
                        entry.user_id,
                        entry.message_id,
                        entry.delivery_id,
                        entry.category,
                        entry.type_key,
                        entry.title[:300],
                        entry.body,
                        entry.link[:2000],
                        now,
                        "",
                        entry.group_key,
                        entry.group_count,
                    )
                ],
                returning=("id",),
                ignore_conflicts=True,
            )
            if made:
                break
        else:
            raise RuntimeError(f"no inbox item could be written for delivery {entry.delivery_id}")
