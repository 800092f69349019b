"""Inbox actions for the logged-in user; reads move the in-app delivery to `read`."""

from __future__ import annotations

from datetime import datetime

from django.db import transaction
from django.db.models import F
from django.db.models.functions import Collate
from django.utils import timezone

from notifier.live_inbox import InboxChange, inbox_changed
from notifier.models import EventKind, Feedback, InboxItem
from notifier.services.transitions import deliveries_move, delivery_advance, delivery_note
from notifier.status import DeliveryStatus, sources_of
from notifier.user_keys import UserKey


class InboxItemNotFound(LookupError):
    """No such item in this user's inbox (another user's item is 'not found' too)."""


def _item(user_id: UserKey, item_id: int, *, lock: bool = False) -> InboxItem:
    items = InboxItem.objects.select_for_update() if lock else InboxItem.objects
    item = items.filter(pk=item_id, user_id=user_id).first()
    if item is None:
        raise InboxItemNotFound(f"no inbox item {item_id}")
    return item


def _superseded_read(delivery_ids: list[int], now: datetime) -> None:
    """The in-app deliveries a group's item showed before (they have no item of their own any
    more) are read with it: their escalation stops, and a date series sees them seen."""
    deliveries_move(
        delivery_ids,
        sources=sources_of(DeliveryStatus.READ),
        to=DeliveryStatus.READ,
        kind=EventKind.ENGAGEMENT,
        at=now,
        detail={"via": "its inbox group's item"},
        opened_at=now,
    )


def inbox_mark_read(*, user_id: UserKey, item_id: int) -> InboxItem:
    now = timezone.now()
    with transaction.atomic():
        # Locked from the read on: a digest group's update in place in between would have the
        # new content marked read and the delivery it replaced moved instead.
        item = _item(user_id, item_id, lock=True)
        if item.read_at is None:
            InboxItem.objects.filter(pk=item.pk).update(read_at=now, superseded=None)
            delivery_advance(
                item.delivery_id, DeliveryStatus.READ, kind=EventKind.ENGAGEMENT, at=now
            )
            _superseded_read(item.superseded or [], now)
            item.read_at, item.superseded = now, None
            inbox_changed([user_id], InboxChange.READ, item_id=item.pk)
    return item


def inbox_mark_all_read(*, user_id: UserKey) -> int:
    now = timezone.now()
    with transaction.atomic():
        # Locked in the order a digest group's update in place locks its item (type, group,
        # byte order), so the two never wait for each other crosswise.
        unread = (
            InboxItem.objects.select_for_update()
            .filter(user_id=user_id, read_at__isnull=True, archived_at__isnull=True)
            .order_by(Collate(F("type_key"), "C"), Collate(F("group_key"), "C"), "pk")
        )
        rows = list(unread.values_list("pk", "delivery_id", "superseded"))
        count = InboxItem.objects.filter(pk__in=[pk for pk, _, _ in rows]).update(
            read_at=now, superseded=None
        )
        delivery_ids = [d for _, delivery_id, older in rows for d in (delivery_id, *(older or ()))]
        deliveries_move(
            delivery_ids,
            sources=sources_of(DeliveryStatus.READ),
            to=DeliveryStatus.READ,
            kind=EventKind.ENGAGEMENT,
            at=now,
            detail={"via": "mark all read"},
            opened_at=now,
        )
        if count:
            inbox_changed([user_id], InboxChange.READ_ALL)
    return count


def inbox_archive(*, user_id: UserKey, item_id: int) -> InboxItem:
    item = _item(user_id, item_id)
    if item.archived_at is None:
        item.archived_at = timezone.now()
        if InboxItem.objects.filter(pk=item.pk, archived_at__isnull=True).update(
            archived_at=item.archived_at
        ):
            inbox_changed([user_id], InboxChange.ARCHIVED, item_id=item.pk)
    return item


def inbox_feedback(*, user_id: UserKey, item_id: int, feedback: Feedback) -> InboxItem:
    """Record 👍/😕/👎. Changing one's mind overwrites; the delivery log keeps each answer."""
    now = timezone.now()
    item = _item(user_id, item_id)
    with transaction.atomic():
        InboxItem.objects.filter(pk=item.pk).update(feedback=feedback, feedback_at=now)
        delivery_note(
            item.delivery_id,
            kind=EventKind.ENGAGEMENT,
            at=now,
            detail={"feedback": str(feedback)},
        )
    item.feedback, item.feedback_at = feedback, now
    return item
