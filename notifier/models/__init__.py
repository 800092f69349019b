"""The core models: users and their contact points, notification types, the delivery log."""

from notifier.models.inbox import Feedback, InboxItem
from notifier.models.messages import Delivery, DeliveryEvent, EventKind, Message
from notifier.models.types import Kind, NotificationType, Priority
from notifier.models.users import Device, Platform, User

__all__ = [
    "Delivery",
    "DeliveryEvent",
    "Device",
    "EventKind",
    "Feedback",
    "InboxItem",
    "Kind",
    "Message",
    "NotificationType",
    "Platform",
    "Priority",
    "User",
]
