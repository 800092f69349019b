"""Generate + route: one delivery per channel, suppressed with reasons, rendered per locale."""

from __future__ import annotations

import pytest

from channels.base import Channel
from notifier.api import notify
from notifier.models import Delivery, DeliveryEvent, EventKind, Message, NotificationType
from notifier.services.pipeline import messages_prepare
from notifier.status import DeliveryStatus, Reason
from tests.factories import DeviceFactory, UserFactory, order_context

pytestmark = pytest.mark.django_db


def deliveries(message: Message) -> dict[str, Delivery]:
    return {d.channel: d for d in Delivery.objects.filter(message=message)}


def test_a_reachable_user_gets_four_queued_deliveries_with_rendered_content(
    published, django_capture_on_commit_callbacks
):
    user = UserFactory(first_name="Ann")
    DeviceFactory(user=user)
    message = notify(user, "order.shipped", order_context())
    with django_capture_on_commit_callbacks(execute=True):
        counts = messages_prepare(message_ids=[message.pk])
    assert counts == {"queued": 4}
    rows = deliveries(message)
    assert {c: d.status for c, d in rows.items()} == {c.value: "queued" for c in Channel}
    assert rows["email"].content["subject"] == "Order A1001 has shipped"
    assert "Hi Ann," in rows["email"].content["body"]
    assert '<a href="https://example.com/track/A1001">' in rows["email"].content["html"]
    assert rows["inapp"].content["link"] == "https://example.com/track/A1001"
    assert Message.objects.get(pk=message.pk).routed_at is not None
    assert sorted(published.delivered_ids()) == sorted(d.pk for d in rows.values())
    # each channel goes to its own queue of the transactional lane
    assert {(lane, channel) for _, lane, channel, _ in published.deliver} == {
        ("transactional", c) for c in Channel
    }


def test_missing_contact_points_are_suppressed_with_a_reason_and_an_event(
    published, django_capture_on_commit_callbacks
):
    user = UserFactory(phone="", email="")
    message = notify(user, "order.shipped", order_context())
    with django_capture_on_commit_callbacks(execute=True):
        messages_prepare(message_ids=[message.pk])
    rows = deliveries(message)
    assert (rows["email"].status, rows["email"].reason) == ("suppressed", Reason.NO_EMAIL_ADDRESS)
    assert (rows["sms"].status, rows["sms"].reason) == ("suppressed", Reason.NO_PHONE_NUMBER)
    assert (rows["push"].status, rows["push"].reason) == ("suppressed", Reason.NO_ACTIVE_DEVICE)
    assert rows["inapp"].status == "queued"
    assert rows["sms"].finished_at is not None
    event = DeliveryEvent.objects.get(delivery=rows["sms"])
    assert (event.kind, event.status, event.reason) == (
        EventKind.ROUTED,
        "suppressed",
        Reason.NO_PHONE_NUMBER,
    )
    assert published.delivered_ids() == [rows["inapp"].pk]


def test_an_inactive_device_does_not_count(published):
    user = UserFactory()
    DeviceFactory(user=user, active=False)
    message = notify(user, "order.shipped", order_context(), channels=["push"])
    messages_prepare(message_ids=[message.pk])
    assert deliveries(message)["push"].reason == Reason.NO_ACTIVE_DEVICE


def test_a_user_deactivated_after_notify_gets_nothing(published):
    user = UserFactory()
    message = notify(user, "order.shipped", order_context())
    user.is_active = False
    user.save()
    messages_prepare(message_ids=[message.pk])
    assert {d.reason for d in deliveries(message).values()} == {Reason.USER_INACTIVE}


def test_a_type_switched_off_after_notify_is_suppressed(published):
    message = notify(UserFactory(), "order.shipped", order_context(), channels=["inapp"])
    switched_off = NotificationType.objects.get(pk="order.shipped")
    switched_off.is_active = False
    switched_off.save()  # as the admin does; other processes see it within the cache TTL
    messages_prepare(message_ids=[message.pk])
    assert deliveries(message)["inapp"].reason == Reason.TYPE_INACTIVE


def test_the_users_locale_picks_the_template_and_falls_back_per_part(published):
    user = UserFactory(locale="zh-hans")
    message = notify(
        user, "order.shipped", order_context(carrier="顺丰"), channels=["inapp", "email"]
    )
    messages_prepare(message_ids=[message.pk])
    rows = deliveries(message)
    assert rows["inapp"].content["title"] == "您的订单 A1001 已发货"
    # no Chinese email template: the default-locale one is used
    assert rows["email"].content["subject"] == "Order A1001 has shipped"


def test_a_template_that_fails_for_this_context_fails_the_delivery_with_its_reason(published):
    # {{ user.first_name or "there" }} is fine, but a value that breaks a filter is not
    # caught by validation: simulate a template error with a context value of the wrong shape.
    user = UserFactory()
    message = notify(user, "order.shipped", order_context(), channels=["inapp"])
    Message.objects.filter(pk=message.pk).update(context={"order_number": "A1"})  # lost keys
    messages_prepare(message_ids=[message.pk])
    delivery = deliveries(message)["inapp"]
    assert (delivery.status, delivery.reason) == ("failed", Reason.RENDER_FAILED)
    assert "carrier" in delivery.last_error


def test_preparing_twice_writes_nothing_more(published):
    message = notify(UserFactory(), "order.shipped", order_context())
    messages_prepare(message_ids=[message.pk])
    assert messages_prepare(message_ids=[message.pk]) == {}
    assert Delivery.objects.filter(message=message).count() == 4
    assert DeliveryEvent.objects.count() == 4


def test_a_batch_is_prepared_with_a_bounded_number_of_queries(
    published, django_assert_max_num_queries
):
    users = UserFactory.create_batch(40)
    ids = [notify(u, "order.shipped", order_context()).pk for u in users]
    with django_assert_max_num_queries(12):
        counts = messages_prepare(message_ids=ids)
    assert counts[DeliveryStatus.QUEUED] == 40 * 3  # no devices: push suppressed
