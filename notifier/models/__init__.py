"""The core models: users and their contact points, notification types, the delivery log."""

from notifier.models.api_keys import ApiKey, ApiScope, RefusedCall
from notifier.models.digests import Digest, DigestState
from notifier.models.erasure import ErasedIdentifier, ErasureRecord, IdentifierKind
from notifier.models.inbox import Feedback, InboxItem
from notifier.models.messages import (
    DeadLetter,
    Delivery,
    DeliveryEvent,
    EventKind,
    Message,
    PrepareRun,
)
from notifier.models.outbound import (
    WebhookAttempt,
    WebhookEndpoint,
    WebhookEvent,
    WebhookEventState,
    WebhookEventType,
)
from notifier.models.preferences import (
    ALL_CHANNELS,
    CapPeriod,
    Consent,
    ConsentPurpose,
    DigestCadence,
    FrequencyCounter,
    Preference,
    Snooze,
    ThrottleSlot,
    Unsubscribe,
)
from notifier.models.providers import (
    EventOutcome,
    ProviderEvent,
    SuppressedAddress,
    SuppressionReason,
    normalize_email,
)
from notifier.models.recipients import (
    Recipient,
    recipient_for,
    recipient_ids_of,
    recipient_update,
    recipients_attach,
    recipients_backfill,
    recipients_for,
)
from notifier.models.routing import RoutingRule
from notifier.models.series import DateSeries, DateState, RecipientDate, SeriesExit
from notifier.models.support import SupportAction, SupportActionKind
from notifier.models.topics import (
    Topic,
    TopicSend,
    TopicSendStatus,
    TopicSnooze,
    TopicSubscription,
)
from notifier.models.types import Kind, NotificationType, Priority, ThrottleOver
from notifier.models.users import Device, MarketingFrequency, Platform, User

__all__ = [
    "ALL_CHANNELS",
    "ApiKey",
    "ApiScope",
    "CapPeriod",
    "Consent",
    "ConsentPurpose",
    "DateSeries",
    "DateState",
    "DeadLetter",
    "Delivery",
    "DeliveryEvent",
    "Device",
    "Digest",
    "DigestCadence",
    "DigestState",
    "ErasedIdentifier",
    "ErasureRecord",
    "EventKind",
    "EventOutcome",
    "Feedback",
    "FrequencyCounter",
    "IdentifierKind",
    "InboxItem",
    "Kind",
    "MarketingFrequency",
    "Message",
    "NotificationType",
    "Platform",
    "Preference",
    "PrepareRun",
    "Priority",
    "ProviderEvent",
    "Recipient",
    "RecipientDate",
    "RefusedCall",
    "RoutingRule",
    "SeriesExit",
    "Snooze",
    "SupportAction",
    "SupportActionKind",
    "SuppressedAddress",
    "SuppressionReason",
    "ThrottleOver",
    "ThrottleSlot",
    "Topic",
    "TopicSend",
    "TopicSendStatus",
    "TopicSnooze",
    "TopicSubscription",
    "Unsubscribe",
    "User",
    "WebhookAttempt",
    "WebhookEndpoint",
    "WebhookEvent",
    "WebhookEventState",
    "WebhookEventType",
    "normalize_email",
    "recipient_for",
    "recipient_ids_of",
    "recipient_update",
    "recipients_attach",
    "recipients_backfill",
    "recipients_for",
]
