"""What the end users' pages call things, in words a customer understands and in their language.

Inside, messages have a kind (transactional, service, marketing, social) and a type key
("promo.flash_sale"); a customer sees a few topics named for what they are about ("Orders and
payments", "Offers and promotions"), and each type by the name its catalog entry gives
customers. The internal keys stay what they are: preference rows, links and the API use them.
"""

from __future__ import annotations

from dataclasses import dataclass

from django.utils.functional import Promise
from django.utils.translation import gettext_lazy as _
from django.utils.translation import pgettext_lazy

from notifier.catalog import spec_of
from notifier.models import ALL_CHANNELS, Feedback, Kind, MarketingFrequency


@dataclass(frozen=True, slots=True)
class Topic:
    """A section of the preference centre: one or more types of one kind, named for people."""

    key: str
    kind: Kind
    name: Promise
    description: Promise
    # Why these cannot be switched off; "" for topics the customer can switch off.
    always_sent_because: Promise | str = ""


TOPICS: tuple[Topic, ...] = (
    Topic(
        "orders",
        Kind.TRANSACTIONAL,
        _("Orders and payments"),
        _("Receipts, payment confirmations and delivery updates for what you buy."),
        _("Always sent: you need them to keep track of your orders and payments."),
    ),
    Topic(
        "account",
        Kind.TRANSACTIONAL,
        _("Account and security"),
        _("Password changes, new sign-ins and other notices that keep your account safe."),
        _("Always sent: they protect your account."),
    ),
    Topic(
        "reminders",
        Kind.SERVICE,
        _("Reminders and updates"),
        _("Reminders about things you use, such as a plan about to renew."),
    ),
    Topic(
        "offers",
        Kind.MARKETING,
        _("Offers and promotions"),
        _("Sales, coupons and news about products you may like."),
    ),
    Topic(
        "social",
        Kind.SOCIAL,
        _("Social activity"),
        _("When someone follows you, or likes or comments on what you shared."),
    ),
)
TOPICS_BY_KEY = {topic.key: topic for topic in TOPICS}

# A channel as the name of a switch ("Email"), and inside a sentence ("by email").
CHANNEL_NAMES: dict[str, Promise] = {
    "inapp": _("In the app"),
    "email": _("Email"),
    "sms": _("Text message (SMS)"),
    "push": _("Push notifications"),
}
BY_CHANNEL: dict[str, Promise] = {
    "inapp": _("in the app"),
    "email": _("by email"),
    "sms": _("by text message"),
    "push": _("by push notification"),
    ALL_CHANNELS: _("on any channel"),
}
FREQUENCY_NAMES: dict[str, Promise] = {
    MarketingFrequency.AS_SENT: _("As they come"),
    MarketingFrequency.WEEKLY: _("At most one a week"),
    MarketingFrequency.OFF: _("None at all"),
}
FEEDBACK_WORDS: dict[str, Promise] = {
    Feedback.USEFUL: pgettext_lazy("inbox feedback", "Useful"),
    Feedback.MEH: pgettext_lazy("inbox feedback", "Meh"),
    Feedback.IRRELEVANT: pgettext_lazy("inbox feedback", "Irrelevant"),
}


def kind_topic(kind: str) -> Topic:
    """The first topic of a kind: where its types go unless their catalog entry says else."""
    return next(topic for topic in TOPICS if topic.kind == kind)


def topic_of(*, type_key: str, kind: str) -> Topic:
    spec = spec_of(type_key)
    chosen = TOPICS_BY_KEY.get(spec.topic) if spec and spec.topic else None
    return chosen if chosen is not None and chosen.kind == kind else kind_topic(kind)


def type_words(*, type_key: str, name: str, description: str) -> tuple[str, str]:
    """A type's name and description for customers: its catalog entry's customer words, else
    what the admin wrote (an admin-defined type's name is the one customers see)."""
    spec = spec_of(type_key)
    if spec is not None and spec.customer_name:
        return str(spec.customer_name), str(spec.customer_description)
    return name, description


def channel_name(channel: str) -> str:
    return str(CHANNEL_NAMES.get(channel, channel))


def by_channel(channel: str) -> str:
    return str(BY_CHANNEL.get(channel, channel))
