"""Recording engagement with campaign messages: clicks, opens, and the conversions they led to.

Opens and clicks arrive late, twice, and out of order (an image proxy fetches the pixel after
the reader already clicked). As with provider callbacks (`notifier.services.callbacks`), a
status only moves forward along the engagement order, through `delivery_advance`, with one
engagement event per move; a repeat or a late arrival changes no status and writes no event,
and only fills the milestone's time if it is still missing (a late open after a click records
when the message was opened; a second click keeps the first click's time).

Conversions are attributed by `conversion_attribution` to the campaign message clicked, else
opened, else sent most recently within its campaign's window, else to the campaign a held-out
user was kept out of; `campaigns.api` validates the input and documents the rule in full.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from decimal import Decimal
from enum import StrEnum
from urllib.parse import urlsplit

from django.db import transaction
from django.db.models import DateTimeField, DurationField, ExpressionWrapper, F, Func
from django.db.models.functions import Coalesce
from django.utils import timezone

from campaigns.models import Conversion, Holdout
from channels.base import Channel
from notifier.models import Delivery, EventKind
from notifier.services.transitions import delivery_advance
from notifier.status import ENGAGEMENT_RANK, DeliveryStatus
from notifier.user_keys import UserKey

S = DeliveryStatus
STAMPS: dict[DeliveryStatus, str] = {S.OPENED: "opened_at", S.CLICKED: "clicked_at"}
# Went out and was not bounced afterwards: sent, delivered, opened, read, clicked.
SENT_OR_BEYOND = tuple(ENGAGEMENT_RANK)


def _engage(
    delivery_id: int, target: DeliveryStatus, at: datetime, detail: dict[str, object]
) -> bool:
    """Move forward to `target`, or else fill its missing timestamp. Returns whether it moved."""
    with transaction.atomic():
        moved = delivery_advance(
            delivery_id, target, kind=EventKind.ENGAGEMENT, at=at, detail=detail
        )
        if not moved:
            stamp = STAMPS[target]
            Delivery.objects.filter(pk=delivery_id).update(**{stamp: Coalesce(stamp, at)})
    return moved


def is_safe_redirect(url: object) -> bool:
    """An absolute http(s) URL with a host, and nothing a header could be split on."""
    if not isinstance(url, str) or not url or any(ch.isspace() or ord(ch) < 32 for ch in url):
        return False
    parts = urlsplit(url)
    return parts.scheme.lower() in ("http", "https") and bool(parts.hostname)


def _recorded(*, message_id: int, channel: Channel | str, index: int) -> tuple[int, str] | None:
    row = (
        Delivery.objects.filter(message_id=message_id, channel=str(channel))
        .values_list("pk", "content__links")
        .first()
    )
    if row is None:
        return None
    delivery_id, links = row
    if not isinstance(links, list) or not 0 <= index < len(links):
        return None
    url = links[index]
    return (delivery_id, url) if is_safe_redirect(url) else None


def recorded_link(*, message_id: int, channel: Channel | str, index: int) -> str | None:
    """The URL recorded at `index` for the message's delivery on `channel`, or None when there
    is no such delivery or index, or what is stored there is not an http(s) URL."""
    found = _recorded(message_id=message_id, channel=channel, index=index)
    return found[1] if found else None


def record_click(
    *, message_id: int, channel: Channel | str, index: int, at: datetime | None = None
) -> str | None:
    """Record a click on link `index` of the message's delivery on `channel`; returns the URL
    recorded there, or None as `recorded_link` does (and then records nothing).

    The first click moves the delivery to clicked (from sent, delivered, opened or read) with
    one engagement event; later clicks change nothing and only return the URL.
    """
    found = _recorded(message_id=message_id, channel=channel, index=index)
    if found is None:
        return None
    delivery_id, url = found
    detail: dict[str, object] = {"via": "click", "link": index, "url": url}
    _engage(delivery_id, S.CLICKED, at or timezone.now(), detail)
    return url


def record_open(*, message_id: int, channel: Channel | str, at: datetime | None = None) -> bool:
    """Record that the message was opened on `channel` (the email open pixel was fetched).

    Returns whether the delivery moved to opened: False for an unknown delivery, a repeat, or a
    delivery that is already further along (clicked) or not sent.
    """
    delivery_id = (
        Delivery.objects.filter(message_id=message_id, channel=str(channel))
        .values_list("pk", flat=True)
        .first()
    )
    if delivery_id is None:
        return False
    return _engage(delivery_id, S.OPENED, at or timezone.now(), {"via": "open_pixel"})


# --- Conversions ----------------------------------------------------------------------------


class AttributedBy(StrEnum):
    CLICKED = "clicked"
    OPENED = "opened"  # opened or read
    SENT = "sent"
    HOLDOUT = "holdout"  # the control group of the campaign
    NOTHING = ""


@dataclass(frozen=True, slots=True)
class Attribution:
    campaign_id: int | None = None
    message_id: int | None = None
    by: AttributedBy = AttributedBy.NOTHING


def _hours(field_name: str) -> Func:
    """An integer column of hours as a PostgreSQL interval."""
    return Func(
        F(field_name),
        template="make_interval(hours => %(expressions)s)",
        output_field=DurationField(),
    )


def _latest_delivery(
    user_id: UserKey, occurred_at: datetime, stamp: str, **conditions: object
) -> tuple[int, int] | None:
    """(message id, campaign id) of the user's campaign delivery with the newest `stamp` that
    falls inside its campaign's attribution window before `occurred_at`."""
    return (
        Delivery.objects.filter(
            user_id=user_id,
            message__campaign__isnull=False,
            message__is_test=False,
            **{f"{stamp}__lte": occurred_at},
            **conditions,
        )
        .alias(
            window_end=ExpressionWrapper(
                F(stamp) + _hours("message__campaign__attribution_hours"),
                output_field=DateTimeField(),
            )
        )
        .filter(window_end__gte=occurred_at)
        .order_by(f"-{stamp}", "-pk")
        .values_list("message_id", "message__campaign_id")
        .first()
    )


def conversion_attribution(*, user_id: UserKey, occurred_at: datetime) -> Attribution:
    """Which campaign message a conversion at `occurred_at` counts for; see `campaigns.api`."""
    tiers: tuple[tuple[AttributedBy, str, dict[str, object]], ...] = (
        (AttributedBy.CLICKED, "clicked_at", {}),
        (AttributedBy.OPENED, "opened_at", {}),
        (AttributedBy.SENT, "sent_at", {"status__in": SENT_OR_BEYOND}),
    )
    for by, stamp, conditions in tiers:
        found = _latest_delivery(user_id, occurred_at, stamp, **conditions)
        if found is not None:
            message_id, campaign_id = found
            return Attribution(campaign_id=campaign_id, message_id=message_id, by=by)
    held_out_of = (
        Holdout.objects.filter(user_id=user_id, campaign__started_at__lte=occurred_at)
        .alias(
            window_end=ExpressionWrapper(
                F("campaign__started_at") + _hours("campaign__attribution_hours"),
                output_field=DateTimeField(),
            )
        )
        .filter(window_end__gte=occurred_at)
        .order_by("-campaign__started_at", "-campaign_id")
        .values_list("campaign_id", flat=True)
        .first()
    )
    if held_out_of is not None:
        return Attribution(campaign_id=held_out_of, by=AttributedBy.HOLDOUT)
    return Attribution()


def conversion_record(
    *, user_id: UserKey, name: str, value: Decimal, reference: str, occurred_at: datetime
) -> Conversion:
    """Write a validated conversion with its attribution. With a reference, the first record
    of (user, name, reference) wins and is returned as it is on every later call."""
    if reference:
        existing = Conversion.objects.filter(user_id=user_id, name=name, reference=reference)
        if (found := existing.first()) is not None:
            return found
    attribution = conversion_attribution(user_id=user_id, occurred_at=occurred_at)
    fields = {
        "value": value,
        "occurred_at": occurred_at,
        "campaign_id": attribution.campaign_id,
        "message_id": attribution.message_id,
    }
    if not reference:
        return Conversion.objects.create(user_id=user_id, name=name, reference="", **fields)
    # get_or_create retries the read when a concurrent call inserted the same reference first.
    conversion, _ = Conversion.objects.get_or_create(
        user_id=user_id, name=name, reference=reference, defaults=fields
    )
    return conversion
