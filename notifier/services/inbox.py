"""Inbox actions for the logged-in user; reads move the in-app delivery to `read`."""

from __future__ import annotations

from django.db import transaction
from django.utils import timezone

from notifier.live_inbox import InboxChange, inbox_changed
from notifier.models import Delivery, EventKind, Feedback, InboxItem
from notifier.services.transitions import deliveries_move, delivery_advance, delivery_note
from notifier.status import DeliveryStatus, sources_of
from notifier.user_keys import UserKey


class InboxItemNotFound(LookupError):
    """No such item in this user's inbox (another user's item is 'not found' too)."""


def _item(user_id: UserKey, item_id: int) -> InboxItem:
    item = InboxItem.objects.filter(pk=item_id, user_id=user_id).first()
    if item is None:
        raise InboxItemNotFound(f"no inbox item {item_id}")
    return item


def inbox_mark_read(*, user_id: UserKey, item_id: int) -> InboxItem:
    now = timezone.now()
    item = _item(user_id, item_id)
    with transaction.atomic():
        if InboxItem.objects.filter(pk=item.pk, read_at__isnull=True).update(read_at=now):
            item.read_at = now
            delivery_advance(
                item.delivery_id, DeliveryStatus.READ, kind=EventKind.ENGAGEMENT, at=now
            )
            inbox_changed([user_id], InboxChange.READ, item_id=item.pk)
    return item


def inbox_mark_all_read(*, user_id: UserKey) -> int:
    now = timezone.now()
    with transaction.atomic():
        unread = InboxItem.objects.select_for_update().filter(
            user_id=user_id, read_at__isnull=True, archived_at__isnull=True
        )
        delivery_ids = list(unread.values_list("delivery_id", flat=True))
        count = InboxItem.objects.filter(delivery_id__in=delivery_ids).update(read_at=now)
        moving = list(
            Delivery.objects.filter(
                pk__in=delivery_ids, status__in=sources_of(DeliveryStatus.READ)
            ).values_list("pk", flat=True)
        )
        deliveries_move(
            moving,
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
