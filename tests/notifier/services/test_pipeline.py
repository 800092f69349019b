"""Generate + route: one delivery per channel, suppressed with reasons, rendered per locale."""

from __future__ import annotations

import threading
from collections import Counter
from datetime import datetime
from zoneinfo import ZoneInfo

import pytest
import time_machine
from django.db import connection
from django.utils import timezone

from channels.base import Channel
from notifier.api import notify
from notifier.models import (
    Delivery,
    DeliveryEvent,
    EventKind,
    InboxItem,
    Message,
    NotificationType,
)
from notifier.provider_limits import State, breaker_outcomes, breaker_state
from notifier.services import pipeline
from notifier.services.deliveries import deliveries_deliver
from notifier.services.pipeline import messages_prepare
from notifier.status import DeliveryStatus, Reason
from tests.factories import DeviceFactory, UserFactory, order_context
from tests.table_statistics import planner_rows_and_changes

pytestmark = pytest.mark.django_db
S = DeliveryStatus


def deliveries(message: Message) -> dict[str, Delivery]:
    return {d.channel: d for d in Delivery.objects.filter(message=message)}


def test_a_reachable_user_gets_three_queued_deliveries_and_the_inbox_item_at_once(
    published, django_capture_on_commit_callbacks
):
    user = UserFactory(first_name="Ann")
    DeviceFactory(user=user)
    message = notify(user, "order.shipped", order_context())
    with django_capture_on_commit_callbacks(execute=True):
        counts = messages_prepare(message_ids=[message.pk])
    assert counts == {"queued": 3, "sent": 1}
    rows = deliveries(message)
    assert {c: d.status for c, d in rows.items()} == {
        "inapp": "sent",
        "email": "queued",
        "sms": "queued",
        "push": "queued",
    }
    assert InboxItem.objects.get(delivery=rows["inapp"]).title == "Your order A1001 is on its way"
    assert rows["email"].content["subject"] == "Order A1001 has shipped"
    assert "Hi Ann," in rows["email"].content["body"]
    assert '<a href="https://example.com/track/A1001">' in rows["email"].content["html"]
    assert rows["inapp"].content["link"] == "https://example.com/track/A1001"
    assert Message.objects.get(pk=message.pk).routed_at is not None
    # in-app needs no deliver task; each other channel goes to its own queue of the lane
    assert sorted(published.delivered_ids()) == sorted(
        d.pk for c, d in rows.items() if c != "inapp"
    )
    assert {(lane, channel) for _, lane, channel, _ in published.deliver} == {
        ("transactional", c) for c in Channel if c is not Channel.INAPP
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
    assert rows["inapp"].status == "sent"  # written to the inbox as it was routed
    assert rows["sms"].finished_at is not None
    event = DeliveryEvent.objects.get(delivery=rows["sms"])
    assert (event.kind, event.status, event.reason) == (
        EventKind.ROUTED,
        "suppressed",
        Reason.NO_PHONE_NUMBER,
    )
    assert published.delivered_ids() == []


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
    assert DeliveryEvent.objects.count() == 4  # three routed, and the in-app one sent on route
    assert InboxItem.objects.count() == 1


def test_a_batch_is_prepared_with_a_bounded_number_of_queries(
    published, django_assert_max_num_queries
):
    users = UserFactory.create_batch(40)
    ids = [notify(u, "order.shipped", order_context()).pk for u in users]
    # 13: the in-app deliveries are sent, and who wants to hear of sends is read once per
    # NOTIFIER_WEBHOOK_ENDPOINTS_CACHE_S (0.2 s in the tests; a slow run reads it again)
    with django_assert_max_num_queries(13):
        counts = messages_prepare(message_ids=ids)
    # no devices: push suppressed; in-app sent as it was routed
    assert (counts[DeliveryStatus.QUEUED], counts[DeliveryStatus.SENT]) == (40 * 2, 40)


# --- In-app sent as it is routed ----------------------------------------------------------------


def test_an_inapp_delivery_due_now_is_sent_in_the_routing_transaction(
    published, django_capture_on_commit_callbacks, monkeypatch
):
    counted: list[dict[str, object]] = []
    monkeypatch.setattr(pipeline, "record_send", lambda **kw: counted.append(kw))
    user = UserFactory()
    message = notify(user, "order.shipped", order_context(), channels=["inapp"])
    with django_capture_on_commit_callbacks(execute=True):
        assert messages_prepare(message_ids=[message.pk]) == {"sent": 1}
    delivery = deliveries(message)["inapp"]
    # as a recorded first attempt leaves it
    assert (delivery.status, delivery.attempts, delivery.provider, delivery.reason) == (
        S.SENT,
        1,
        "inapp",
        "",
    )
    assert delivery.sent_at == delivery.finished_at == delivery.created_at
    assert (delivery.claimed_at, delivery.next_attempt_at) == (None, None)
    item = InboxItem.objects.get(delivery=delivery)
    assert (item.user_id, item.message_id, item.title) == (
        user.pk,
        message.pk,
        "Your order A1001 is on its way",
    )
    assert item.category == "transactional" and item.type_key == "order.shipped"
    # the timeline support reads: one event, the attempt, saying it was sent as it was routed
    events = list(DeliveryEvent.objects.filter(delivery=delivery).order_by("at", "id"))
    assert [(e.kind, e.status, e.reason, e.attempt, e.provider, e.detail) for e in events] == [
        (EventKind.ATTEMPT, S.SENT, "", 1, "inapp", {"outcome": "sent", "on_route": "routed"}),
    ]
    assert published.deliver == []  # no second hop
    assert [(c["channel"], c["provider"], c["sent"], c["failed"]) for c in counted] == [
        ("inapp", "inapp", 1, 0)
    ]


def test_the_reason_routing_gave_stays_on_the_sent_event_not_the_sent_row(published):
    message = notify(UserFactory(), "order.shipped", order_context(), channels=["inapp"])
    # a marketing lead let it go out in quiet hours: routing says so on a queued row
    rows = [
        pipeline.Routed(
            message.pk, message.user_id, Channel.INAPP, S.QUEUED, Reason.QUIET_HOURS_ALLOWED
        )
    ]
    now = timezone.now()
    Message.objects.filter(pk=message.pk).update(routed_at=now)
    sent = pipeline.inapp_sent_now(rows, {message.pk: message}, now)
    ids = pipeline.write_routed(sent, now)
    delivery = Delivery.objects.get(pk=ids[(message.pk, "inapp")])
    assert (delivery.status, delivery.reason) == (S.SENT, "")
    event = DeliveryEvent.objects.get(delivery=delivery)
    assert (event.kind, event.status, event.reason, event.detail["on_route"]) == (
        EventKind.ATTEMPT,
        S.SENT,
        Reason.QUIET_HOURS_ALLOWED,
        EventKind.ROUTED,
    )


def test_inapp_takes_the_queue_when_its_provider_has_a_rate_limit(
    published, inapp_through_the_queue, django_capture_on_commit_callbacks
):
    message = notify(UserFactory(), "order.shipped", order_context(), channels=["inapp"])
    with django_capture_on_commit_callbacks(execute=True):
        assert messages_prepare(message_ids=[message.pk]) == {"queued": 1}
    delivery = deliveries(message)["inapp"]
    assert published.delivered_ids() == [delivery.pk]
    assert not InboxItem.objects.exists()
    assert deliveries_deliver(delivery_ids=[delivery.pk]).sent == 1
    assert InboxItem.objects.get(delivery=delivery)


def test_inapp_takes_the_queue_while_its_circuit_is_open(
    published, settings, django_capture_on_commit_callbacks
):
    settings.NOTIFIER_CIRCUIT_MIN_CALLS = 2
    breaker_outcomes("inapp:inapp", successes=0, failures=2)
    assert breaker_state("inapp:inapp") is State.OPEN
    message = notify(UserFactory(), "order.shipped", order_context(), channels=["inapp"])
    with django_capture_on_commit_callbacks(execute=True):
        assert messages_prepare(message_ids=[message.pk]) == {"queued": 1}
    assert published.delivered_ids() == [deliveries(message)["inapp"].pk]
    assert not InboxItem.objects.exists()


def test_a_held_inapp_delivery_is_not_sent_at_once(published):
    user = UserFactory(quiet_hours_enabled=True, time_zone="Asia/Shanghai")
    night = datetime(2026, 11, 20, 23, 30, tzinfo=ZoneInfo("Asia/Shanghai"))
    with time_machine.travel(night):
        message = notify(
            user, "subscription.renewal_reminder", {"plan": "Pro", "renews_on": "1 December"}
        )
        messages_prepare(message_ids=[message.pk])
    assert (deliveries(message)["inapp"].status, published.deliver) == (S.HELD, [])
    assert not InboxItem.objects.exists()


@pytest.mark.django_db(transaction=True)
def test_two_prepares_at_once_write_each_inapp_delivery_and_inbox_item_once(published):
    users = UserFactory.create_batch(20)
    ids = [notify(u, "order.shipped", order_context(), channels=["inapp"]).pk for u in users]
    start = threading.Barrier(2)
    counts: list[Counter[str]] = []

    def run() -> None:
        try:
            start.wait()
            counts.append(messages_prepare(message_ids=ids))
            counts.append(messages_prepare(message_ids=list(reversed(ids))))  # and again
        finally:
            connection.close()

    threads = [threading.Thread(target=run) for _ in range(2)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=60)
    assert sum(c["sent"] for c in counts) == 20
    assert Delivery.objects.filter(status=S.SENT, channel="inapp").count() == 20
    assert InboxItem.objects.count() == 20
    # each delivery's one event (sent as it was routed), written once
    assert DeliveryEvent.objects.filter(kind=EventKind.ATTEMPT).count() == 20
    assert DeliveryEvent.objects.count() == 20


@pytest.mark.django_db(transaction=True)
def test_a_bulk_prepare_batch_of_many_analyzes_the_deliveries_it_outgrew_and_no_other_does(
    published, monkeypatch
):
    """`notify_many` to many people on a delivery log analyzed nearly empty: its bulk-lane
    prepare batches analyze the tables they grew past their statistics, as a campaign's walk
    does (autovacuum comes a minute later, or never). One message alone never pays for the
    look, nor does a batch on the transactional lane, however large."""
    from notifier.api import notify_many
    from notifier.services.quarantine import messages_prepare_guarded

    monkeypatch.setattr(pipeline, "BULK_STATISTICS_MINIMUM", 5)
    monkeypatch.setattr(pipeline, "REFRESH_FROM_BATCH", 3)
    users = UserFactory.create_batch(9)
    promo = {"sale_name": "S", "starts_at": "now", "headline": "H", "sale_url": "https://x.test"}
    with connection.cursor() as cursor:
        cursor.execute("SELECT pg_stat_force_next_flush()")  # earlier writes counted first
        cursor.execute("ANALYZE notifier_delivery")  # empty, as on day one
    assert planner_rows_and_changes("notifier_delivery") == (0.0, 0)
    first = notify_many(users[:3], "promo.flash_sale", promo, channels=["inapp", "email"])
    messages_prepare_guarded(message_ids=first.message_ids)  # nothing written before it
    assert planner_rows_and_changes("notifier_delivery") == (0.0, 6)

    alone = notify_many(users[3:4], "promo.flash_sale", promo, channels=["inapp", "email"])
    messages_prepare_guarded(message_ids=alone.message_ids)  # one message: no look
    shipped = notify_many(users[4:7], "order.shipped", order_context(), channels=["inapp"])
    messages_prepare_guarded(message_ids=shipped.message_ids)  # transactional: no look
    assert planner_rows_and_changes("notifier_delivery") == (0.0, 11)

    rest = notify_many(users[7:], "promo.flash_sale", promo, channels=["inapp", "email"])
    messages_prepare_guarded(message_ids=[*rest.message_ids, first.message_ids[0]])
    # Analyzed before the batch wrote (eleven changed, at least five, as many as it held).
    assert planner_rows_and_changes("notifier_delivery") == (11.0, 4)
