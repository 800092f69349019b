"""The admin: support staff find a user and read everything sent to them; they change nothing."""

from __future__ import annotations

import importlib
import re

import pytest
from django.contrib.auth.models import Group, Permission
from django.urls import reverse

from campaigns.models import Campaign
from notifier import dispatch
from notifier.api import notify
from notifier.models import Delivery, DeliveryEvent, Message, NotificationType, User
from notifier.services.deliveries import deliveries_deliver
from notifier.services.pipeline import messages_prepare
from notifier.status import DeliveryStatus, Reason
from tests.factories import DeviceFactory, UserFactory, order_context

SUPPORT_MIGRATION = importlib.import_module("notifier.migrations.0002_support_group")
LATER_MIGRATIONS = [importlib.import_module("notifier.migrations.0005_default_routing_rules")]

pytestmark = pytest.mark.usefixtures("db")


# --- Fixtures and helpers -------------------------------------------------------------------


@pytest.fixture
def support_group() -> Group:
    """The group made by the data migration (re-made the same way if a flush removed it)."""
    group, created = Group.objects.get_or_create(name=SUPPORT_MIGRATION.SUPPORT_GROUP)
    if created:  # only after a transactional test's flush earlier in the session
        for app_label, models in SUPPORT_MIGRATION.VIEWABLE.items():
            group.permissions.add(
                *Permission.objects.filter(
                    content_type__app_label=app_label,
                    codename__in=[f"view_{model}" for model in models],
                )
            )
        later = [f"view_{m}" for m in LATER_MIGRATIONS[0].SUPPORT_VIEWS]
        group.permissions.add(
            *Permission.objects.filter(
                content_type__app_label="notifier",
                codename__in=[*later, "view_deadletter", "retry_delivery"],
            )
        )
    return group


@pytest.fixture
def support_user(support_group):
    user = UserFactory(username="support", email="support@example.com", is_staff=True)
    user.groups.add(support_group)
    return user


@pytest.fixture
def superuser():
    return UserFactory(username="root", email="root@example.com", is_staff=True, is_superuser=True)


@pytest.fixture
def support_client(client, support_user):
    client.force_login(support_user)
    return client


@pytest.fixture
def super_client(client, superuser):
    client.force_login(superuser)
    return client


@pytest.fixture
def pipeline(monkeypatch, settings):
    """Run prepare and deliver in-process, nothing to the broker, retries due at once."""
    monkeypatch.setattr(dispatch, "publish_prepare", lambda *args, **kwargs: None)
    monkeypatch.setattr(dispatch, "publish_deliver", lambda *args, **kwargs: None)
    settings.NOTIFIER_RETRY_BASE_S = 0.001
    settings.NOTIFIER_RETRY_MAX_S = 0.001

    def run(messages: list[Message]) -> None:
        ids = [m.pk for m in messages]
        messages_prepare(message_ids=ids)
        for _ in range(settings.NOTIFIER_MAX_ATTEMPTS):
            queued = list(
                Delivery.objects.filter(
                    message_id__in=ids, status=DeliveryStatus.QUEUED
                ).values_list("pk", flat=True)
            )
            if not queued:
                return
            deliveries_deliver(delivery_ids=queued)
        raise AssertionError("deliveries still queued after every attempt")

    return run


def history_url(user: User) -> str:
    """The customer page (the old "Delivery history" URL leads there)."""
    return reverse("admin:notifier_user_customer", args=[user.pk])


def change_url(user: User) -> str:
    return reverse("admin:notifier_user_change", args=[user.pk])


def changelist_ids(response) -> set[int]:
    return {row.pk for row in response.context["cl"].result_list}


def delivery_rows(html: str) -> dict[int, tuple[str, str]]:
    """delivery id -> (channel, status) for every delivery row the history page shows."""
    return {
        int(pk): (channel, status)
        for pk, channel, status in re.findall(
            r'id="delivery-(\d+)" data-channel="(\w+)" data-status="(\w+)"', html
        )
    }


@pytest.fixture
def alice(pipeline):
    """A customer with a realistic history over three types and all four channels.

    Her email fails once then goes (fail-transient-1), she has no phone (SMS suppressed), and
    her only push token is refused for good (push failed, the device deactivated, so the next
    messages' push is suppressed).
    """
    user = UserFactory(
        username="alice",
        email="alice.fail-transient-1@example.com",
        phone="",
    )  # in the factory's afternoon zone: her new-follower news is not held for the night
    DeviceFactory(user=user, token="fail-permanent-token-0001")
    shipped = notify(user, "order.shipped", order_context(), idempotency_key="ship:A1001")
    pipeline([shipped])
    paid = notify(user, "payment.succeeded", {"amount": "¥99.00", "order_number": "A1001"})
    followed = notify(
        user,
        "social.new_follower",
        {"follower_name": "Bob", "follower_url": "https://example.com/u/bob"},
    )
    pipeline([paid, followed])
    Message.objects.filter(pk=followed.pk).update(campaign=Campaign.objects.create(name="Spring"))
    return user


# --- The Support group ----------------------------------------------------------------------


def test_the_support_group_views_everything_and_may_only_retry_and_fix(support_group):
    codenames = set(support_group.permissions.values_list("codename", flat=True))
    assert {
        "view_user",
        "view_message",
        "view_delivery",
        "view_device",
        "view_deadletter",
    } <= codenames
    assert {c for c in codenames if not c.startswith("view_")} == {
        "retry_delivery",
        "fix_recipient",  # the customer page's audited fixes (notifier.services.support)
    }


# --- Finding a user -------------------------------------------------------------------------


def test_support_finds_a_user_by_email(support_client):
    target = UserFactory(email="carol.search@example.com")
    UserFactory(email="dave@example.com")
    url = reverse("admin:notifier_user_changelist")
    response = support_client.get(url, {"q": "carol.search@example.com"})
    assert response.status_code == 200
    assert changelist_ids(response) == {target.pk}
    assert "carol.search@example.com" in response.content.decode()


def test_support_finds_a_user_by_phone_as_stored_or_as_typed(support_client):
    target = UserFactory(phone="+8613912345678")
    UserFactory(phone="+8613800000001")
    url = reverse("admin:notifier_user_changelist")
    assert changelist_ids(support_client.get(url, {"q": "+8613912345678"})) == {target.pk}
    assert changelist_ids(support_client.get(url, {"q": "+86 139 1234 5678"})) == {target.pk}


def test_support_finds_a_user_by_exact_id(support_client):
    # Nothing in this user's text fields contains a digit, so only the id can match.
    target = UserFactory(username="erin", email="erin@example.com", phone="")
    other = UserFactory(username="frank", email="frank@example.com", phone="")
    response = support_client.get(reverse("admin:notifier_user_changelist"), {"q": str(target.pk)})
    assert response.status_code == 200
    assert target.pk in changelist_ids(response)
    assert other.pk not in changelist_ids(response)


def test_the_user_list_shows_email_phone_active_and_a_history_link(support_client):
    user = UserFactory(email="gina@example.com", phone="+8613700001111")
    response = support_client.get(
        reverse("admin:notifier_user_changelist"), {"q": "gina@example.com"}
    )
    html = response.content.decode()
    assert "gina@example.com" in html
    assert "+8613700001111" in html
    assert 'class="field-is_active"' in html
    assert f'href="{history_url(user)}"' in html


# --- The delivery history page --------------------------------------------------------------


def test_history_shows_contact_points_and_active_devices(support_client):
    user = UserFactory(email="hana@example.com", phone="+8613600002222", time_zone="Europe/Berlin")
    DeviceFactory(user=user, token="fcm-token-active-000042")
    DeviceFactory(
        user=user,
        token="fcm-token-gone-000043",
        active=False,
        deactivation_reason="provider: token unregistered",
    )
    html = support_client.get(history_url(user)).content.decode()
    contact = html[html.index('id="contact-points"') : html.index('id="history-filters"')]
    assert "hana@example.com" in contact
    assert "+8613600002222" in contact
    assert "Europe/Berlin" in contact
    active = contact[contact.index('id="devices"') : contact.index("Deactivated")]
    assert "…ctive-000042" in active  # the token's tail
    assert "gone-000043" not in active
    assert "provider: token unregistered" in contact[contact.index("Deactivated") :]


def test_history_shows_each_message_type_channel_status_and_reason(support_client, alice):
    response = support_client.get(history_url(alice))
    assert response.status_code == 200
    html = response.content.decode()
    for key in ("order.shipped", "payment.succeeded", "social.new_follower"):
        assert key in html
    rows = delivery_rows(html)
    expected = {(d.channel, d.status) for d in Delivery.objects.filter(user=alice)}
    assert set(rows.values()) == expected
    assert {channel for channel, _ in rows.values()} == {"inapp", "email", "sms", "push"}
    assert {status for _, status in rows.values()} == {"sent", "failed", "suppressed"}
    assert 'class="messagelist"' not in html  # rows are not mistaken for flash messages
    # Each status as a badge, and each reason in words.
    for status in ("sent", "failed", "suppressed"):
        assert f'class="status-badge status-{status}"' in html
    for reason in (Reason.NO_PHONE_NUMBER, Reason.DEVICE_UNREGISTERED, Reason.NO_ACTIVE_DEVICE):
        assert Reason(reason).label in html
    assert "No phone number on file" in html
    # Message facts: idempotency key, campaign, and the provider's id for a sent email.
    assert "ship:A1001" in html
    assert "Spring" in html
    sent_email = Delivery.objects.filter(user=alice, channel="email", status="sent").first()
    assert sent_email is not None and sent_email.provider_message_id in html


def test_history_lists_messages_newest_first(support_client, alice):
    html = support_client.get(history_url(alice)).content.decode()
    shown = [int(pk) for pk in re.findall(r'class="module message" id="message-(\d+)"', html)]
    newest_first = list(
        Message.objects.filter(user=alice)
        .order_by("-created_at", "-id")
        .values_list("pk", flat=True)
    )
    assert shown == newest_first


def test_history_shows_every_attempt_of_a_transient_then_successful_delivery(support_client, alice):
    email = Delivery.objects.get(user=alice, channel="email", message__type_id="order.shipped")
    assert email.status == DeliveryStatus.SENT and email.attempts == 2
    attempts = list(DeliveryEvent.objects.filter(delivery=email, kind="attempt").order_by("id"))
    assert [e.attempt for e in attempts] == [1, 2]
    html = support_client.get(history_url(alice)).content.decode()
    start = html.index(f'id="delivery-{email.pk}"')
    timeline = html[start : html.index("</table>", start)]
    assert "sandbox: timed out (attempt 1)" in timeline
    assert Reason.RETRY_SCHEDULED.label in timeline  # why it was queued again
    assert "error_code=timeout" in timeline  # the event's detail dict
    assert timeline.count('<tr class="event">') == 3  # routed, attempt 1, attempt 2


def test_the_not_sent_filter_hides_sent_deliveries(support_client, alice):
    html = support_client.get(history_url(alice), {"not_sent": "1"}).content.decode()
    rows = delivery_rows(html)
    assert rows
    assert {status for _, status in rows.values()} <= {"failed", "suppressed", "cancelled", "held"}
    not_sent = set(
        Delivery.objects.filter(user=alice)
        .exclude(status=DeliveryStatus.SENT)
        .values_list("pk", flat=True)
    )
    assert set(rows) == not_sent
    assert "No phone number on file" in html


def test_the_channel_filter_shows_only_that_channel(support_client, alice):
    html = support_client.get(history_url(alice), {"channel": "sms"}).content.decode()
    rows = delivery_rows(html)
    assert set(rows) == set(
        Delivery.objects.filter(user=alice, channel="sms").values_list("pk", flat=True)
    )
    # social.new_follower has no SMS delivery, so that message is left out.
    assert (
        'id="message-'
        + str(Message.objects.get(user=alice, type_id="social.new_follower").pk)
        + '"'
        not in html
    )


def test_history_is_paginated_25_per_page(support_client, pipeline):
    user = UserFactory()
    messages = [
        notify(
            user,
            "social.new_follower",
            {"follower_name": f"F{i}", "follower_url": "https://x.test"},
        )
        for i in range(27)
    ]
    pipeline(messages)
    first = support_client.get(history_url(user)).content.decode()
    second = support_client.get(history_url(user), {"page": "2"}).content.decode()
    assert first.count('class="module message"') == 25
    assert second.count('class="module message"') == 2
    assert "27 messages" in first


def test_history_makes_a_bounded_number_of_queries(
    support_client, pipeline, django_assert_max_num_queries
):
    def user_with(count):
        user = UserFactory(email=f"q{count}@example.com")
        DeviceFactory(user=user)
        pipeline([notify(user, "order.shipped", order_context()) for _ in range(count)])
        return user

    few, many = user_with(10), user_with(30)
    support_client.get(history_url(few))  # warm up the session and the type cache
    # The customer page's sections above the history (consent, preferences, digest cadences,
    # caps, suppressions, dates, support's fixes) are one query each, whatever the history's
    # length.
    with django_assert_max_num_queries(18) as ten:
        assert support_client.get(history_url(few)).status_code == 200
    with django_assert_max_num_queries(18) as thirty:
        html = support_client.get(history_url(many)).content.decode()
    assert html.count('class="module message"') == 25
    assert len(thirty) == len(ten)


def test_staff_without_the_support_group_gets_403_on_history(client, alice):
    staff = UserFactory(is_staff=True)
    client.force_login(staff)
    assert client.get(history_url(alice)).status_code == 403


def test_the_old_history_url_leads_to_the_customer_page(support_client, alice):
    old = reverse("admin:notifier_user_delivery_history", args=[alice.pk])
    response = support_client.get(old, {"channel": "sms"})
    assert response.status_code == 302
    assert response["Location"] == history_url(alice) + "?channel=sms"


def test_an_unknown_user_gives_404_on_history(support_client):
    url = reverse("admin:notifier_user_customer", args=[999_999_999])
    assert support_client.get(url).status_code == 404


def test_the_change_form_links_to_the_history(support_client, alice):
    html = support_client.get(change_url(alice)).content.decode()
    assert f'href="{history_url(alice)}"' in html
    assert "Open the customer page" in html


def test_the_admin_change_log_stays_reachable(support_client, alice):
    url = reverse("admin:notifier_user_admin_log", args=[alice.pk])
    response = support_client.get(url)
    assert response.status_code == 200
    assert "admin/object_history.html" in [t.name for t in response.templates]


# --- Support changes nothing ----------------------------------------------------------------


def test_support_gets_403_posting_to_the_user_change_page(support_client):
    user = UserFactory(email="ivan@example.com")
    response = support_client.post(
        change_url(user),
        {
            "username": user.username,
            "email": "hacked@example.com",
            "time_zone": "UTC",
            "locale": "en",
            "yearly_spend": "0",
            "interest_tags": "[]",
        },
    )
    assert response.status_code == 403
    user.refresh_from_db()
    assert user.email == "ivan@example.com"


def test_support_gets_403_on_the_user_add_page(support_client):
    url = reverse("admin:notifier_user_add")
    assert support_client.get(url).status_code == 403
    assert support_client.post(url, {"username": "mallory"}).status_code == 403
    assert not User.objects.filter(username="mallory").exists()


def test_support_sees_the_user_change_form_read_only(support_client):
    user = UserFactory(email="judy@example.com", phone="+8613500003333")
    DeviceFactory(user=user, token="fcm-token-judy-000001")
    response = support_client.get(change_url(user))
    assert response.status_code == 200
    assert response.context["has_change_permission"] is False
    html = response.content.decode()
    assert "judy@example.com" in html and "+8613500003333" in html
    assert 'name="email"' not in html
    assert 'name="phone"' not in html
    assert 'name="_save"' not in html
    assert "fcm-token-judy-000001" in html  # the devices inline, as text
    assert 'name="devices-0-token"' not in html


def test_support_opens_the_delivery_and_message_lists(support_client, alice):
    deliveries = support_client.get(reverse("admin:notifier_delivery_changelist"))
    messages = support_client.get(reverse("admin:notifier_message_changelist"))
    assert deliveries.status_code == 200
    assert messages.status_code == 200
    assert "No phone number on file" in deliveries.content.decode()
    assert "payment.succeeded" in messages.content.decode()


def test_support_filters_and_searches_the_delivery_list(support_client, alice):
    url = reverse("admin:notifier_delivery_changelist")
    response = support_client.get(url, {"channel": "sms", "status": "suppressed"})
    pks = {d.pk for d in response.context["cl"].result_list}
    assert pks == set(
        Delivery.objects.filter(user=alice, channel="sms").values_list("pk", flat=True)
    )
    sent = Delivery.objects.filter(user=alice, status="sent").exclude(provider_message_id="")
    one = sent.first()
    assert one is not None
    response = support_client.get(url, {"q": one.provider_message_id})
    assert {d.pk for d in response.context["cl"].result_list} == {one.pk}


def test_support_opens_a_delivery_with_its_timeline_read_only(support_client, alice):
    email = Delivery.objects.get(user=alice, channel="email", message__type_id="order.shipped")
    response = support_client.get(reverse("admin:notifier_delivery_change", args=[email.pk]))
    assert response.status_code == 200
    html = response.content.decode()
    assert "sandbox: timed out (attempt 1)" in html
    assert 'name="_save"' not in html


# --- Operators: the delivery log is read-only even for superusers ---------------------------


def test_superuser_cannot_change_a_delivery_status_in_the_admin(super_client, alice):
    delivery = Delivery.objects.filter(user=alice, status=DeliveryStatus.FAILED).first()
    assert delivery is not None
    url = reverse("admin:notifier_delivery_change", args=[delivery.pk])
    response = super_client.get(url)
    assert response.status_code == 200
    assert 'name="status"' not in response.content.decode()
    assert super_client.post(url, {"status": "sent"}).status_code == 403
    assert super_client.get(reverse("admin:notifier_delivery_add")).status_code == 403
    delivery.refresh_from_db()
    assert delivery.status == DeliveryStatus.FAILED


def test_superuser_may_only_switch_a_code_defined_type_on_or_off(super_client):
    url = reverse("admin:notifier_notificationtype_change", args=["promo.flash_sale"])
    html = super_client.get(url).content.decode()
    assert 'name="is_active"' in html
    assert 'name="priority"' not in html and 'name="channels"' not in html
    response = super_client.post(url, {"priority": "critical"})  # is_active unticked
    assert response.status_code == 302
    promo = NotificationType.objects.get(pk="promo.flash_sale")
    assert promo.is_active is False
    assert promo.priority == "low"


def test_the_type_list_shows_kind_priority_channels_and_active(super_client):
    html = super_client.get(reverse("admin:notifier_notificationtype_changelist")).content.decode()
    assert "order.shipped" in html
    assert "inapp, email, sms, push" in html
    assert 'class="field-kind"' in html and 'class="field-priority"' in html


def test_superuser_sees_the_user_change_form_with_the_profile_fields(super_client):
    user = UserFactory()
    html = super_client.get(change_url(user)).content.decode()
    # On the recipient profile's inline.
    for name in ("phone", "time_zone", "locale", "yearly_spend", "last_active_at", "interest_tags"):
        assert f'name="notifier_recipient-0-{name}' in html  # a date-time is two inputs: _0, _1


def test_admin_lists_make_a_bounded_number_of_queries(
    super_client, pipeline, django_assert_max_num_queries
):
    for _ in range(4):
        user = UserFactory()
        pipeline([notify(user, "order.shipped", order_context()) for _ in range(3)])
    super_client.get(reverse("admin:notifier_delivery_changelist"))  # warm up
    for name in ("delivery", "message", "device", "inboxitem", "user"):
        with django_assert_max_num_queries(10):
            response = super_client.get(reverse(f"admin:notifier_{name}_changelist"))
        assert response.status_code == 200


# --- Dead letters -----------------------------------------------------------------------------


@pytest.fixture
def failed_email(pipeline):
    message = notify(
        UserFactory(email="gone+fail-permanent@example.com"),
        "order.shipped",
        order_context(),
        channels=["email"],
    )
    messages_prepare(message_ids=[message.pk])
    delivery = Delivery.objects.get(message=message)
    deliveries_deliver(delivery_ids=[delivery.pk])
    return Delivery.objects.get(pk=delivery.pk)


def test_support_sees_dead_letters_with_their_reason_and_error(support_client, failed_email):
    page = support_client.get(reverse("admin:notifier_deadletter_changelist"))
    assert page.status_code == 200
    body = page.content.decode()
    assert "The provider rejected the address or number" in body
    assert "does not exist" in body


def test_support_can_retry_a_failed_delivery_now(support_client, failed_email):
    response = support_client.post(
        reverse("admin:notifier_deadletter_changelist"),
        {"action": "retry_now", "_selected_action": [failed_email.pk]},
        follow=True,
    )
    assert response.status_code == 200
    retried = Delivery.objects.get(pk=failed_email.pk)
    assert (retried.status, retried.attempts, retried.reason) == ("queued", 0, "")
    event = DeliveryEvent.objects.filter(delivery=retried, kind="manual").get()
    assert event.detail == {
        "action": "retry now",
        "by": "support@example.com",
        "previous_attempts": 1,
    }


def test_staff_without_the_permission_cannot_retry(client, failed_email):
    clerk = UserFactory(username="clerk", is_staff=True)
    clerk.user_permissions.add(Permission.objects.get(codename="view_deadletter"))
    client.force_login(clerk)
    response = client.post(
        reverse("admin:notifier_deadletter_changelist"),
        {"action": "retry_now", "_selected_action": [failed_email.pk]},
    )
    assert Delivery.objects.get(pk=failed_email.pk).status == "failed"
    assert response.status_code in (200, 302)  # the admin refuses the unknown action


def test_retrying_something_not_failed_changes_nothing(pipeline, failed_email):
    from notifier.services.deliveries import deliveries_retry_now

    assert deliveries_retry_now(delivery_ids=[failed_email.pk], actor="a") == 1
    assert deliveries_retry_now(delivery_ids=[failed_email.pk], actor="b") == 0
    assert DeliveryEvent.objects.filter(delivery=failed_email, kind="manual").count() == 1


@pytest.mark.parametrize(
    ("send_all", "complaint"),
    [
        pytest.param("[" * 5000 + "]" * 5000, "nests deeper", id="5000-deep"),
        pytest.param('["' + "x" * 70_000 + '"]', "over 64 KB", id="70-KB"),
        pytest.param("[NaN]", "not finite", id="NaN"),
    ],
)
def test_json_typed_in_the_admin_is_a_field_error_not_a_500(super_client, send_all, complaint):
    """Django's JSON form field parses with recursion (a 500 past about a thousand levels, also
    when the form is shown again) and takes NaN: every JSON field staff edit is bounded."""
    from notifier.models import RoutingRule

    before = RoutingRule.objects.count()
    response = super_client.post(
        "/admin/notifier/routingrule/add/",
        {"name": "deep", "send_all": send_all, "fallback_chain": "[]", "is_active": "on"},
    )
    assert response.status_code == 200
    errors = " ".join(response.context["adminform"].form.errors["send_all"])
    assert complaint in errors
    assert RoutingRule.objects.count() == before


def test_the_dead_letter_list_is_short_and_cuts_long_errors(support_client, failed_email):
    """Four filters (channel, provider, why, when); the error is one line with the whole of it
    in its tooltip; the message id links to the message."""
    long_error = "SMTPRecipientsRefused: " + "mailbox-unavailable-" * 30
    Delivery.objects.filter(pk=failed_email.pk).update(last_error=long_error)
    response = support_client.get(reverse("admin:notifier_deadletter_changelist"))
    assert len(response.context["cl"].filter_specs) == 4
    body = response.content.decode()
    assert f'title="{long_error}"' in body
    message_url = reverse("admin:notifier_message_change", args=[failed_email.message_id])
    assert f'href="{message_url}"' in body
    for window in ("1h", "24h", "7d", "older"):
        listed = support_client.get(
            reverse("admin:notifier_deadletter_changelist"), {"failed": window}
        )
        ids = changelist_ids(listed)
        assert (failed_email.pk in ids) == (window != "older"), window
