"""`track_conversion()`: validation, idempotency by reference, and attribution to a campaign."""

from __future__ import annotations

from datetime import datetime, timedelta
from decimal import Decimal

import pytest
import time_machine
from django.utils import timezone

from campaigns.api import (
    ConversionError,
    InvalidConversionName,
    InvalidConversionTime,
    InvalidConversionUser,
    InvalidConversionValue,
    InvalidReference,
    track_conversion,
)
from campaigns.models import Campaign, Conversion, Holdout
from campaigns.services.tracking import record_click, record_open
from notifier import dispatch
from notifier.models import Delivery, InboxItem, Message, User
from notifier.services.inbox import inbox_mark_read
from notifier.status import DeliveryStatus
from tests.campaigns.test_tracking import a_campaign, campaign_message
from tests.factories import UserFactory, daytime_zone

pytestmark = pytest.mark.django_db
S = DeliveryStatus
# A day ago, so that conversions a few hours after it are not in the future.
T = (timezone.now() - timedelta(days=1)).replace(microsecond=0)
H = timedelta(hours=1)
# Where the sends, T-11h to T-1h, fall in the customers' day (08:xx to 18:xx): quiet hours hold
# marketing at night.
ZONE = daytime_zone(T - 6 * H)


@pytest.fixture(autouse=True)
def in_process(monkeypatch, settings):
    monkeypatch.setattr(dispatch, "publish_prepare", lambda *args, **kwargs: None)
    monkeypatch.setattr(dispatch, "publish_deliver", lambda *args, **kwargs: None)
    settings.NOTIFIER_MARKETING_CAP_DAY = settings.NOTIFIER_MARKETING_CAP_WEEK = 100


@pytest.fixture
def user() -> User:
    return UserFactory(time_zone=ZONE)


def sent(user: User, campaign: Campaign, at: datetime, channel: str = "inapp") -> Delivery:
    """A campaign message sent to the user at `at`: its delivery on `channel`."""
    with time_machine.travel(at, tick=False):
        delivery = campaign_message(user, campaign, channels=[channel])[channel]
    assert (delivery.status, delivery.sent_at) == (S.SENT, at)
    return delivery


def clicked(delivery: Delivery, at: datetime) -> Delivery:
    assert record_click(message_id=delivery.message_id, channel=delivery.channel, index=0, at=at)
    return delivery


def opened(delivery: Delivery, at: datetime) -> Delivery:
    assert record_open(message_id=delivery.message_id, channel=delivery.channel, at=at)
    return delivery


def attributed(conversion: Conversion) -> tuple[int | None, int | None]:
    return conversion.campaign_id, conversion.message_id


def of(delivery: Delivery) -> tuple[int | None, int | None]:
    campaign_id = Message.objects.values_list("campaign_id", flat=True).get(pk=delivery.message_id)
    return campaign_id, delivery.message_id


# --- Attribution ----------------------------------------------------------------------------


def test_clicked_beats_opened_beats_sent(user):
    campaign = a_campaign(attribution_hours=72)
    by_click = clicked(sent(user, campaign, T - 5 * H), T - 4 * H)
    by_open = opened(sent(user, campaign, T - 3 * H), T - 2 * H)
    by_send = sent(user, campaign, T - 1 * H)

    assert attributed(track_conversion(user, occurred_at=T)) == of(by_click)
    Delivery.objects.filter(pk=by_click.pk).update(status=S.SENT, clicked_at=None)
    assert attributed(track_conversion(user, occurred_at=T)) == of(by_open)
    Delivery.objects.filter(pk=by_open.pk).update(status=S.SENT, opened_at=None)
    assert attributed(track_conversion(user, occurred_at=T)) == of(by_send)


def test_reading_an_inbox_item_counts_as_opening_it(user):
    campaign = a_campaign()
    read = sent(user, campaign, T - 3 * H)
    later = sent(user, campaign, T - 1 * H)
    with time_machine.travel(T - 2 * H, tick=False):
        inbox_mark_read(user_id=user.pk, item_id=InboxItem.objects.get(delivery_id=read.pk).pk)
    assert Delivery.objects.get(pk=read.pk).status == S.READ
    assert attributed(track_conversion(user, occurred_at=T)) == of(read)
    assert of(later) != of(read)


def test_the_newest_wins_within_a_tier(user):
    first, second = a_campaign(name="first"), a_campaign(name="second")
    older = clicked(sent(user, first, T - 6 * H), T - 5 * H)
    newer = clicked(sent(user, second, T - 6 * H), T - 2 * H)
    assert attributed(track_conversion(user, occurred_at=T)) == of(newer)
    assert of(older) != of(newer)


def test_outside_the_attribution_window_nothing_counts(user):
    campaign = a_campaign(attribution_hours=2)
    clicked(sent(user, campaign, T - 4 * H), T - 3 * H)
    conversion = track_conversion(user, occurred_at=T)
    assert attributed(conversion) == (None, None)
    # the window's edge is inside it
    assert attributed(track_conversion(user, occurred_at=T - H)) != (None, None)


def test_each_campaign_has_its_own_window(user):
    short, long = a_campaign(attribution_hours=1), a_campaign(attribution_hours=24)
    clicked(sent(user, short, T - 3 * H), T - 2 * H)  # newer, but out of its 1 hour
    in_window = clicked(sent(user, long, T - 11 * H), T - 10 * H)
    assert attributed(track_conversion(user, occurred_at=T)) == of(in_window)


def test_engagement_after_the_conversion_does_not_count(user):
    campaign = a_campaign()
    delivery = clicked(sent(user, campaign, T - 2 * H), T + H)
    # sent before it, so it counts as sent, not as clicked: the click came too late
    assert attributed(track_conversion(user, occurred_at=T)) == of(delivery)
    assert attributed(track_conversion(user, occurred_at=T - 3 * H)) == (None, None)


def test_a_bounced_or_test_message_does_not_count(user):
    campaign = a_campaign()
    bounced = sent(user, campaign, T - 2 * H, channel="email")
    Delivery.objects.filter(pk=bounced.pk).update(status=S.FAILED)
    test_send = sent(user, campaign, T - H)
    Message.objects.filter(pk=test_send.message_id).update(is_test=True)
    assert attributed(track_conversion(user, occurred_at=T)) == (None, None)


def test_another_users_messages_never_count(user):
    campaign = a_campaign()
    clicked(sent(UserFactory(time_zone=ZONE), campaign, T - 2 * H), T - H)
    assert attributed(track_conversion(user, occurred_at=T)) == (None, None)


def test_a_held_out_user_counts_for_the_campaign_she_was_held_out_of(user):
    held_out_of = a_campaign(attribution_hours=24, started_at=T - 5 * H)
    Holdout.objects.create(campaign=held_out_of, user=user)
    conversion = track_conversion(user, value=Decimal("10"), occurred_at=T)
    assert attributed(conversion) == (held_out_of.pk, None)
    # before the campaign started, or after its window: not the control group's conversion
    assert attributed(track_conversion(user, occurred_at=T - 6 * H)) == (None, None)
    assert attributed(track_conversion(user, occurred_at=T + 20 * H)) == (None, None)


def test_a_holdout_of_a_campaign_not_started_counts_for_nothing(user):
    Holdout.objects.create(campaign=a_campaign(), user=user)
    assert attributed(track_conversion(user, occurred_at=T)) == (None, None)


def test_a_message_the_user_engaged_with_comes_before_a_holdout(user):
    Holdout.objects.create(campaign=a_campaign(started_at=T - 5 * H), user=user)
    other = clicked(sent(user, a_campaign(), T - 3 * H), T - 2 * H)
    assert attributed(track_conversion(user, occurred_at=T)) == of(other)


# --- Idempotency ----------------------------------------------------------------------------


def test_a_reference_counts_once(user):
    campaign = a_campaign()
    delivery = clicked(sent(user, campaign, T - 2 * H), T - H)
    first = track_conversion(user, value=Decimal("99.50"), reference="order:A1", occurred_at=T)
    again = track_conversion(user, value=Decimal("1"), reference="order:A1")

    assert again.pk == first.pk
    assert again.value == Decimal("99.50") and again.occurred_at == T
    assert attributed(again) == of(delivery)
    assert Conversion.objects.count() == 1
    # the reference is per user and name; without one every call counts
    track_conversion(user, "signup", reference="order:A1")
    track_conversion(UserFactory(), reference="order:A1")
    track_conversion(user)
    track_conversion(user)
    assert Conversion.objects.count() == 5


def test_the_value_is_kept_in_cents(user):
    assert track_conversion(user, value=Decimal("19.995")).value == Decimal("20.00")
    assert track_conversion(user, value=0.1 + 0.2).value == Decimal("0.30")
    assert track_conversion(user, value="12").value == Decimal("12.00")
    assert track_conversion(user.pk, value=3).value == Decimal("3.00")


# --- Bad input ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("kwargs", "error", "says"),
    [
        ({"user": None}, InvalidConversionUser, "user is required"),
        ({"user": "unsaved"}, InvalidConversionUser, "not saved"),
        ({"user": 10**9}, InvalidConversionUser, "no user with id"),
        ({"user": True}, InvalidConversionUser, "User or a user id"),
        ({"name": ""}, InvalidConversionName, "what happened"),
        ({"name": "x" * 101}, InvalidConversionName, "at most 100"),
        ({"value": Decimal("-1")}, InvalidConversionValue, "cannot be negative"),
        ({"value": float("nan")}, InvalidConversionValue, "finite"),
        ({"value": Decimal("Infinity")}, InvalidConversionValue, "finite"),
        ({"value": "ten"}, InvalidConversionValue, "must be a number"),
        ({"value": True}, InvalidConversionValue, "must be a number"),
        ({"value": Decimal("1e12")}, InvalidConversionValue, "too large"),
        # A naive datetime is the bad input under test.
        ({"occurred_at": datetime(2025, 1, 1, 12)}, InvalidConversionTime, "timezone-aware"),  # noqa: DTZ001
        ({"occurred_at": "2025-01-01"}, InvalidConversionTime, "timezone-aware"),
        ({"occurred_at": "future"}, InvalidConversionTime, "in the future"),
        ({"reference": "r" * 201}, InvalidReference, "keep it to 200"),
        ({"reference": None}, InvalidReference, "must be a string"),
    ],
)
def test_bad_input_raises_a_typed_error_and_writes_nothing(user, kwargs, error, says):
    arguments = {"user": user, **kwargs}
    if arguments["user"] == "unsaved":
        arguments["user"] = User(username="not-saved")
    if arguments.get("occurred_at") == "future":
        arguments["occurred_at"] = timezone.now() + timedelta(hours=1)
    with pytest.raises(error, match=says) as raised:
        track_conversion(**arguments)
    assert isinstance(raised.value, ConversionError)
    assert Conversion.objects.count() == 0
