"""Routing with the user's choices and the clock: preferences, consent, quiet hours, caps,
backpressure, fallback chains, and the release of held deliveries."""

from __future__ import annotations

import contextlib
import threading
from datetime import UTC, datetime, time, timedelta
from zoneinfo import ZoneInfo

import pytest
import time_machine
from django.conf import settings as django_settings
from django.db import connection
from django.utils import timezone

from notifier.api import notify
from notifier.models import (
    Consent,
    Delivery,
    DeliveryEvent,
    FrequencyCounter,
    InboxItem,
    Message,
    Preference,
)
from notifier.policies.quiet_hours import spread_offset_s
from notifier.services import release
from notifier.services.deliveries import deliveries_deliver
from notifier.services.pipeline import messages_prepare
from notifier.services.release import held_release
from notifier.status import DeliveryStatus, Reason
from tests.factories import DeviceFactory, UserFactory

pytestmark = pytest.mark.django_db
S = DeliveryStatus
SHANGHAI = ZoneInfo("Asia/Shanghai")
SALE = {
    "sale_name": "Double 11",
    "starts_at": "tonight",
    "headline": "Up to 50% off",
    "sale_url": "https://shop.example.com/sale",
}
RENEWAL = {"plan": "Pro", "renews_on": "1 December"}


def shanghai(*args) -> datetime:
    return datetime(*args, tzinfo=SHANGHAI)


def route(message: Message) -> dict[str, Delivery]:
    messages_prepare(message_ids=[message.pk])
    return {d.channel: d for d in Delivery.objects.filter(message=message)}


def consent(user, channel="all", granted=True, at=None):
    return Consent.objects.create(
        user=user,
        channel=channel,
        granted=granted,
        at=at or timezone.now(),
        source="test",
        wording="Send me offers",
    )


def sale(user, **kwargs) -> Message:
    return notify(user, "promo.flash_sale", SALE, **kwargs)


# --- Preferences and consent ------------------------------------------------------------------


def test_an_opted_out_channel_is_suppressed_with_its_reason(published):
    user = UserFactory()
    Preference.objects.create(user=user, category="service", channel="email", enabled=False)
    rows = route(
        notify(user, "subscription.renewal_reminder", RENEWAL, channels=["email", "inapp"])
    )
    assert (rows["email"].status, rows["email"].reason) == (S.SUPPRESSED, Reason.OPTED_OUT)
    assert rows["inapp"].status == S.SENT  # in-app goes out as it is routed


def test_marketing_without_consent_is_suppressed_on_email_but_not_in_app(published):
    user = UserFactory()
    rows = route(sale(user))  # low priority: the rule sends email and in-app
    assert (rows["email"].status, rows["email"].reason) == (S.SUPPRESSED, Reason.NO_CONSENT)
    assert rows["inapp"].status == S.SENT


def test_marketing_with_consent_goes_out(published):
    user = UserFactory()
    consent(user)
    rows = route(sale(user))
    assert rows["email"].status == S.QUEUED


def test_withdrawn_consent_suppresses_again(published):
    user = UserFactory()
    consent(user, at=timezone.now() - timedelta(days=1))
    consent(user, channel="email", granted=False)
    rows = route(sale(user))
    assert rows["email"].reason == Reason.NO_CONSENT


def test_opting_out_cannot_stop_a_transactional_message(published):
    user = UserFactory()
    Preference.objects.create(user=user, category="transactional", channel="all", enabled=False)
    rows = route(
        notify(user, "payment.succeeded", {"amount": "¥10", "order_number": "A1"}, channels=["sms"])
    )
    assert rows["sms"].status == S.QUEUED


# --- Routing rules and fallback ---------------------------------------------------------------


def test_normal_priority_uses_inapp_plus_the_first_chain_channel_that_reaches_the_user(published):
    user = UserFactory()  # no device: push cannot reach them, email can
    message = notify(user, "subscription.renewal_reminder", RENEWAL)
    rows = route(message)
    assert rows["push"].reason == Reason.NO_ACTIVE_DEVICE
    assert rows["email"].status == S.QUEUED
    assert rows["inapp"].status == S.SENT
    assert Message.objects.get(pk=message.pk).fallback_chain == []  # sms not in the type


def test_a_permanent_failure_falls_back_to_the_next_channel_in_the_chain(
    published, django_capture_on_commit_callbacks
):
    user = UserFactory(email="gone+fail-permanent@example.com")
    DeviceFactory(user=user)
    message = notify(user, "subscription.renewal_reminder", RENEWAL)
    rows = route(message)
    assert rows["push"].status == S.QUEUED
    assert "email" not in rows  # only tried if push cannot make it
    assert Message.objects.get(pk=message.pk).fallback_chain == ["email"]
    # The device is gone by the time we deliver: push fails for good, email takes over.
    user.devices.update(active=False)
    with django_capture_on_commit_callbacks(execute=True):
        report = deliveries_deliver(delivery_ids=[rows["push"].pk])
    assert report.fallbacks == 1
    email = Delivery.objects.get(message=message, channel="email")
    assert (email.status, email.fallback_of_id) == (S.QUEUED, rows["push"].pk)
    assert DeliveryEvent.objects.get(delivery=email).kind == "fallback"
    assert email.pk in published.delivered_ids()


# --- Quiet hours --------------------------------------------------------------------------------


def test_a_service_message_at_night_is_held_until_the_users_morning(published, settings):
    settings.NOTIFIER_QUIET_RELEASE_WINDOW_S = 1800
    user = UserFactory(quiet_hours_enabled=True, time_zone="Asia/Shanghai")
    with time_machine.travel(shanghai(2026, 11, 20, 23, 30)):
        message = notify(user, "subscription.renewal_reminder", RENEWAL, channels=["inapp"])
        rows = route(message)
    held = rows["inapp"]
    assert (held.status, held.reason) == (S.HELD, Reason.QUIET_HOURS)
    morning = shanghai(2026, 11, 21, 8, 0)
    assert morning <= held.next_attempt_at < morning + timedelta(minutes=30)
    assert published.deliver == []


def test_a_transactional_message_at_night_goes_out_at_once(published):
    user = UserFactory(quiet_hours_enabled=True, time_zone="Asia/Shanghai")
    with time_machine.travel(shanghai(2026, 11, 20, 23, 30)):
        rows = route(
            notify(
                user, "payment.succeeded", {"amount": "¥10", "order_number": "A1"}, channels=["sms"]
            )
        )
    assert rows["sms"].status == S.QUEUED


def test_a_users_own_window_is_respected(published):
    user = UserFactory(
        quiet_hours_enabled=True,
        time_zone="Asia/Shanghai",
        quiet_hours_start=time(13, 0),
        quiet_hours_end=time(14, 0),
    )
    with time_machine.travel(shanghai(2026, 11, 20, 23, 30)):
        assert (
            route(
                notify(
                    user,
                    "social.new_follower",
                    {"follower_name": "Bo", "follower_url": "https://x.test"},
                )
            )["inapp"].status
            == S.SENT  # outside their window: out at once
        )
    with time_machine.travel(shanghai(2026, 11, 21, 13, 15)):
        held = route(
            notify(
                user,
                "social.new_follower",
                {"follower_name": "Jo", "follower_url": "https://x.test"},
            )
        )["inapp"]
    assert held.next_attempt_at.astimezone(SHANGHAI).hour == 14


def test_held_deliveries_are_released_once_in_the_morning(
    published, django_capture_on_commit_callbacks
):
    user = UserFactory(quiet_hours_enabled=True, time_zone="Asia/Shanghai")
    with time_machine.travel(shanghai(2026, 11, 20, 23, 30)):
        held = route(
            notify(user, "subscription.renewal_reminder", RENEWAL, channels=["inapp", "email"])
        )
    due = max(d.next_attempt_at for d in held.values())
    with time_machine.travel(due - timedelta(seconds=1)):
        assert held_release().released == 0  # not yet
    with time_machine.travel(due), django_capture_on_commit_callbacks(execute=True):
        first = held_release()
        second = held_release()
    assert (first.released, second.released) == (2, 0)
    assert set(Delivery.objects.values_list("status", flat=True)) == {S.QUEUED}
    assert sorted(published.delivered_ids()) == sorted(d.pk for d in held.values())
    assert DeliveryEvent.objects.filter(kind="released").count() == 2


def test_the_morning_release_is_paced_across_the_window(published, settings):
    settings.NOTIFIER_QUIET_RELEASE_WINDOW_S = 1800
    users = UserFactory.create_batch(60, quiet_hours_enabled=True, time_zone="Asia/Shanghai")
    with time_machine.travel(shanghai(2026, 11, 20, 23, 30)):
        for user in users:
            route(
                notify(
                    user,
                    "social.new_follower",
                    {"follower_name": "Bo", "follower_url": "https://x.test"},
                    channels=["inapp"],
                )
            )
    released_by_minute = []
    for minute in (0, 10, 20, 30):
        with time_machine.travel(shanghai(2026, 11, 21, 8, minute)):
            released_by_minute.append(held_release().released)
    assert sum(released_by_minute) == 60
    assert max(released_by_minute) < 60  # not everyone at 08:00:00
    assert all(n > 0 for n in released_by_minute[1:])


def test_a_user_who_opts_out_overnight_gets_nothing_in_the_morning(published):
    user = UserFactory(quiet_hours_enabled=True, time_zone="Asia/Shanghai")
    with time_machine.travel(shanghai(2026, 11, 20, 23, 30)):
        held = route(
            notify(
                user,
                "social.new_follower",
                {"follower_name": "Bo", "follower_url": "https://x.test"},
                channels=["inapp"],
            )
        )["inapp"]
    Preference.objects.create(user=user, category="social", channel="all", enabled=False)
    with time_machine.travel(held.next_attempt_at):
        report = held_release()
    assert report.suppressed == 1
    assert Delivery.objects.get(pk=held.pk).reason == Reason.OPTED_OUT


@pytest.mark.django_db(transaction=True)
def test_two_release_jobs_at_once_release_each_delivery_once(published):
    users = UserFactory.create_batch(40, quiet_hours_enabled=True, time_zone="Asia/Shanghai")
    with time_machine.travel(shanghai(2026, 11, 20, 23, 30)):
        for user in users:
            route(
                notify(
                    user,
                    "social.new_follower",
                    {"follower_name": "Bo", "follower_url": "https://x.test"},
                    channels=["inapp"],
                )
            )
    start = threading.Barrier(2)
    reports = []

    def job() -> None:
        try:
            start.wait()
            with time_machine.travel(shanghai(2026, 11, 21, 9, 0)):
                reports.append(held_release(limit=25))
                reports.append(held_release(limit=25))
        finally:
            connection.close()

    threads = [threading.Thread(target=job) for _ in range(2)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=60)
    assert sum(r.released for r in reports) == 40
    assert DeliveryEvent.objects.filter(kind="released").count() == 40
    assert len(published.delivered_ids()) == len(set(published.delivered_ids())) == 40


# --- Frequency caps -----------------------------------------------------------------------------


def test_over_the_daily_cap_a_sale_waits_for_tomorrow(published, settings):
    settings.NOTIFIER_MARKETING_CAP_DAY, settings.NOTIFIER_MARKETING_CAP_WEEK = 1, 3
    user = UserFactory(time_zone="Asia/Shanghai")
    consent(user)
    with time_machine.travel(shanghai(2026, 11, 18, 10, 0)):
        first = route(sale(user))
        second = route(sale(user))
    assert first["email"].status == S.QUEUED
    assert (second["email"].status, second["email"].reason) == (S.HELD, Reason.FREQUENCY_CAP)
    assert second["email"].next_attempt_at == shanghai(2026, 11, 19, 0, 0)
    assert Message.objects.get(pk=first["email"].message_id).cap_day.isoformat() == "2026-11-18"
    with time_machine.travel(shanghai(2026, 11, 19, 0, 0)):
        report = held_release()  # tomorrow's slot, but midnight is in her quiet hours
    assert (report.released, report.held_again) == (0, 2)
    second["email"].refresh_from_db()
    assert second["email"].reason == Reason.QUIET_HOURS
    assert shanghai(2026, 11, 19, 8, 0) <= second["email"].next_attempt_at
    with time_machine.travel(shanghai(2026, 11, 19, 8, 30)):  # past the release window
        assert held_release().released == 2  # its email and in-app
    assert Message.objects.get(pk=second["email"].message_id).cap_day.isoformat() == "2026-11-19"


def test_a_sale_that_would_be_stale_by_tomorrow_is_suppressed(published, settings):
    settings.NOTIFIER_MARKETING_CAP_DAY = 1
    user = UserFactory(time_zone="Asia/Shanghai")
    consent(user)
    with time_machine.travel(shanghai(2026, 11, 18, 10, 0)):
        route(sale(user))
        late = route(sale(user, expires_at=shanghai(2026, 11, 18, 20, 0)))
    assert (late["email"].status, late["email"].reason) == (S.SUPPRESSED, Reason.STALE)


def test_irrelevant_feedback_on_a_type_lowers_its_cap(published, settings):
    settings.NOTIFIER_MARKETING_CAP_DAY, settings.NOTIFIER_MARKETING_CAP_WEEK = 1, 1
    user = UserFactory()
    consent(user)
    earlier = route(sale(user))["inapp"]
    deliveries_deliver(delivery_ids=[earlier.pk])
    InboxItem.objects.filter(delivery=earlier).update(
        feedback="irrelevant", feedback_at=timezone.now()
    )
    rows = route(sale(user))
    assert (rows["email"].status, rows["email"].reason) == (S.SUPPRESSED, Reason.FREQUENCY_CAP)


def test_marketing_frequency_weekly_allows_one_a_week(published, settings):
    settings.NOTIFIER_MARKETING_CAP_DAY, settings.NOTIFIER_MARKETING_CAP_WEEK = 3, 5
    user = UserFactory(marketing_frequency="weekly", time_zone="UTC")
    consent(user)
    with time_machine.travel(datetime(2026, 11, 17, 9, 0, tzinfo=UTC)):  # a Tuesday
        assert route(sale(user))["email"].status == S.QUEUED
        # Fresh for two weeks, so it is worth waiting (a default 72 h sale would be stale).
        again = route(sale(user, expires_at=timezone.now() + timedelta(days=14)))["email"]
    assert again.reason == Reason.FREQUENCY_CAP
    assert again.next_attempt_at == datetime(2026, 11, 23, 0, 0, tzinfo=UTC)  # next Monday


@pytest.mark.django_db(transaction=True)
def test_concurrent_routing_cannot_exceed_the_cap(published, settings):
    settings.NOTIFIER_MARKETING_CAP_DAY, settings.NOTIFIER_MARKETING_CAP_WEEK = 2, 2
    user = UserFactory()
    consent(user)
    # Fresh for ten days: held for the next window whatever the weekday (from a Monday the
    # next week's window is seven days off, past marketing's default 72 hours).
    fresh = timezone.now() + timedelta(days=10)
    messages = [sale(user, expires_at=fresh).pk for _ in range(12)]
    start = threading.Barrier(4)

    def worker(ids: list[int]) -> None:
        try:
            start.wait()
            for pk in ids:
                messages_prepare(message_ids=[pk])
        finally:
            connection.close()

    threads = [threading.Thread(target=worker, args=(messages[i::4],)) for i in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=60)
    queued = Message.objects.filter(
        deliveries__channel="email", deliveries__status=S.QUEUED
    ).count()
    assert queued == 2
    assert Delivery.objects.filter(channel="email", reason=Reason.FREQUENCY_CAP).count() == 10


# --- Backpressure -------------------------------------------------------------------------------


def test_deep_bulk_queues_hold_marketing_but_never_transactional(published, monkeypatch):
    from notifier.services import pipeline

    monkeypatch.setattr(pipeline, "bulk_congested", lambda: True)
    user = UserFactory()
    consent(user)
    promo = route(sale(user))
    receipt = route(
        notify(user, "payment.succeeded", {"amount": "¥1", "order_number": "A"}, channels=["sms"])
    )
    assert (promo["email"].status, promo["email"].reason) == (S.HELD, Reason.BACKPRESSURE)
    assert receipt["sms"].status == S.QUEUED
    with time_machine.travel(promo["email"].next_attempt_at):
        assert held_release().held_again == 2  # still deep
    monkeypatch.setattr(pipeline, "bulk_congested", lambda: False)
    with time_machine.travel(promo["email"].next_attempt_at + timedelta(minutes=2)):
        assert held_release().released == 2


# --- Unsubscribe links in marketing -------------------------------------------------------------


def test_marketing_email_carries_one_click_unsubscribe_that_works(published, client, settings):
    settings.NOTIFIER_MARKETING_CAP_DAY = settings.NOTIFIER_MARKETING_CAP_WEEK = 10
    user = UserFactory()
    consent(user)
    email = route(sale(user))["email"]
    headers = email.content["headers"]
    assert headers["List-Unsubscribe-Post"] == "List-Unsubscribe=One-Click"
    one_click = headers["List-Unsubscribe"].strip("<>")
    assert "/unsubscribe/" in email.content["body"]
    assert "/preferences/" in email.content["body"]
    response = client.post(
        one_click,
        data="List-Unsubscribe=One-Click",
        content_type="application/x-www-form-urlencoded",
    )
    assert response.status_code == 200
    again = route(sale(user))
    assert (again["email"].status, again["email"].reason) == (S.SUPPRESSED, Reason.OPTED_OUT)
    assert again["inapp"].status == S.SENT  # only that category on that channel


def test_transactional_email_has_no_unsubscribe_header(published):
    rows = route(
        notify(
            UserFactory(),
            "payment.succeeded",
            {"amount": "¥1", "order_number": "A"},
            channels=["email"],
        )
    )
    assert "headers" not in rows["email"].content


def _a_pair_by_release_order(user, **kwargs) -> tuple[Message, Message]:
    """Two sales for `user`: (the one released earlier in the morning window, the later one);
    a message's place in the window is a hash of its id."""
    window = django_settings.NOTIFIER_QUIET_RELEASE_WINDOW_S
    one, two = sale(user, **kwargs), sale(user, **kwargs)
    if spread_offset_s(one.pk, window) > spread_offset_s(two.pk, window):
        one, two = two, one
    return one, two


def _make_high(message: Message) -> Message:
    Message.objects.filter(pk=message.pk).update(priority="high")  # e.g. a campaign's
    return Message.objects.get(pk=message.pk)


def release_at(moment: datetime) -> None:
    with time_machine.travel(moment):
        held_release()


def test_when_held_messages_compete_for_one_slot_the_higher_priority_wins(published, settings):
    """Across the whole morning window: the low-priority sale comes due first (its offset in
    the window is earlier) and must not take the slot the high-priority one comes for later."""
    settings.NOTIFIER_MARKETING_CAP_DAY, settings.NOTIFIER_MARKETING_CAP_WEEK = 1, 5
    user = UserFactory(quiet_hours_enabled=True, time_zone="Asia/Shanghai")
    consent(user)
    with time_machine.travel(shanghai(2026, 11, 20, 23, 0)):
        early, late = _a_pair_by_release_order(user, channels=["email"])
        low = route(early)["email"]
        high = route(_make_high(late))["email"]
    assert (low.status, high.status) == (S.HELD, S.HELD)
    assert low.next_attempt_at < high.next_attempt_at  # the low one is due first
    release_at(low.next_attempt_at)  # the low one's turn: it yields to the one still to come
    yielded = Delivery.objects.get(pk=low.pk)
    assert (yielded.status, yielded.reason) == (S.HELD, Reason.OUTRANKED)
    assert yielded.next_attempt_at > high.next_attempt_at
    release_at(high.next_attempt_at)
    assert Delivery.objects.get(pk=high.pk).status == S.QUEUED
    release_at(yielded.next_attempt_at)
    deferred = Delivery.objects.get(pk=low.pk)
    assert (deferred.status, deferred.reason) == (S.HELD, Reason.FREQUENCY_CAP)
    assert deferred.next_attempt_at == shanghai(2026, 11, 22, 0, 0)


def test_cap_deferred_messages_due_at_midnight_still_go_by_priority(published, settings):
    """The review's timing: over the cap at 10:00, both are deferred to local midnight, held
    there for quiet hours until 08:00 plus their offsets, and released one at a time."""
    settings.NOTIFIER_MARKETING_CAP_DAY, settings.NOTIFIER_MARKETING_CAP_WEEK = 1, 5
    user = UserFactory(quiet_hours_enabled=True, time_zone="Asia/Shanghai")
    consent(user)
    with time_machine.travel(shanghai(2026, 11, 20, 10, 0)):
        assert route(sale(user, channels=["email"]))["email"].status == S.QUEUED
        early, late = _a_pair_by_release_order(user, channels=["email"])
        low = route(early)["email"]
        high = route(_make_high(late))["email"]
    assert {low.reason, high.reason} == {Reason.FREQUENCY_CAP}
    assert low.next_attempt_at == high.next_attempt_at == shanghai(2026, 11, 21, 0, 0)
    release_at(shanghai(2026, 11, 21, 0, 0, 5))  # midnight: quiet hours now
    low, high = Delivery.objects.get(pk=low.pk), Delivery.objects.get(pk=high.pk)
    assert {low.reason, high.reason} == {Reason.QUIET_HOURS}
    assert shanghai(2026, 11, 21, 8, 0) <= low.next_attempt_at < high.next_attempt_at
    for _ in range(3):  # the morning's ticks, each at the next held delivery's time
        due = Delivery.objects.filter(status=S.HELD).order_by("next_attempt_at").first()
        if due is None or due.next_attempt_at >= shanghai(2026, 11, 21, 12, 0):
            break
        release_at(due.next_attempt_at)
    assert Delivery.objects.get(pk=high.pk).status == S.QUEUED
    deferred = Delivery.objects.get(pk=low.pk)
    assert (deferred.status, deferred.reason) == (S.HELD, Reason.FREQUENCY_CAP)


def test_at_first_routing_a_known_higher_priority_message_later_that_day_wins(published, settings):
    """A high-priority campaign's message for 11:00 is already written (held until then); a
    low-priority one routed at 09:00 must leave it the day's slot."""
    settings.NOTIFIER_MARKETING_CAP_DAY, settings.NOTIFIER_MARKETING_CAP_WEEK = 1, 5
    user = UserFactory(time_zone="Asia/Shanghai")
    consent(user)
    with time_machine.travel(shanghai(2026, 11, 20, 8, 30)):
        important = _make_high(sale(user, channels=["email"]))
        Message.objects.filter(pk=important.pk).update(not_before=shanghai(2026, 11, 20, 11, 0))
        high = route(important)["email"]
    assert (high.status, high.reason) == (S.HELD, Reason.SCHEDULED)
    with time_machine.travel(shanghai(2026, 11, 20, 9, 0)):
        low = route(sale(user, channels=["email"]))["email"]
    assert (low.status, low.reason) == (S.HELD, Reason.OUTRANKED)
    release_at(shanghai(2026, 11, 20, 11, 0))
    assert Delivery.objects.get(pk=high.pk).status == S.QUEUED
    release_at(low.next_attempt_at)
    deferred = Delivery.objects.get(pk=low.pk)
    assert (deferred.status, deferred.reason) == (S.HELD, Reason.FREQUENCY_CAP)


def test_a_higher_priority_message_on_another_day_does_not_hold_one_back(published, settings):
    settings.NOTIFIER_MARKETING_CAP_DAY, settings.NOTIFIER_MARKETING_CAP_WEEK = 1, 5
    user = UserFactory(time_zone="Asia/Shanghai")
    consent(user)
    with time_machine.travel(shanghai(2026, 11, 20, 9, 0)):
        tomorrow = _make_high(sale(user, channels=["email"]))
        Message.objects.filter(pk=tomorrow.pk).update(not_before=shanghai(2026, 11, 21, 11, 0))
        route(tomorrow)
        assert route(sale(user, channels=["email"]))["email"].status == S.QUEUED


@pytest.mark.django_db(transaction=True)
def test_two_release_runs_at_once_never_split_a_message_or_charge_its_cap_twice(
    published, monkeypatch, settings
):
    """Two real runs, each on its own connection, both inside their transaction at once (they
    meet after taking their locks): a message's email and in-app go out together, on one slot."""
    settings.NOTIFIER_MARKETING_CAP_DAY, settings.NOTIFIER_MARKETING_CAP_WEEK = 1, 2
    user = UserFactory(quiet_hours_enabled=True, time_zone="Asia/Shanghai")
    consent(user)
    with time_machine.travel(shanghai(2026, 11, 20, 23, 30)):
        held = route(sale(user, channels=["email", "inapp"]))
    assert {d.status for d in held.values()} == {S.HELD}
    both_locked = threading.Barrier(2)
    real_audience_of = release.audience_of

    def audience_after_meeting(*args, **kwargs):
        # A run that found nothing to lock never comes here: it breaks the barrier on its way out.
        with contextlib.suppress(threading.BrokenBarrierError):
            both_locked.wait(timeout=30)
        return real_audience_of(*args, **kwargs)

    monkeypatch.setattr(release, "audience_of", audience_after_meeting)
    reports = []

    def job() -> None:
        try:
            with time_machine.travel(shanghai(2026, 11, 21, 9, 0)):
                reports.append(held_release(limit=1))
        finally:
            both_locked.abort()
            connection.close()

    threads = [threading.Thread(target=job) for _ in range(2)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=60)
    assert len(reports) == 2
    assert {d.status for d in Delivery.objects.filter(message_id=held["email"].message_id)} == {
        S.QUEUED
    }
    assert sum(r.released for r in reports) == 2
    assert sorted(r.released for r in reports) == [0, 2]  # one run took the whole message
    counters = FrequencyCounter.objects.filter(user=user).values_list("period", "count")
    assert sorted(counters) == [("day", 1), ("week", 1)]
