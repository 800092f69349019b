"""The suppression list and provider events in the admin; phone numbers typed any way."""

from __future__ import annotations

import pytest
from django.contrib.auth.models import Group, Permission
from django.urls import reverse
from django.utils import timezone

from notifier import dispatch
from notifier.api import notify
from notifier.models import Delivery, ProviderEvent, SuppressedAddress, User
from notifier.services.pipeline import messages_prepare
from notifier.status import DeliveryStatus, Reason
from tests.factories import UserFactory, order_context

pytestmark = pytest.mark.django_db
S = DeliveryStatus


@pytest.fixture
def support_client(client):
    group, _ = Group.objects.get_or_create(name="Support")
    group.permissions.add(
        *Permission.objects.filter(
            content_type__app_label="notifier",
            codename__in=["view_suppressedaddress", "view_providerevent", "view_user"],
        )
    )
    user = UserFactory(username="support", is_staff=True)
    user.groups.add(group)
    client.force_login(user)
    return client


@pytest.fixture
def super_client(client):
    client.force_login(UserFactory(username="root", is_staff=True, is_superuser=True))
    return client


def suppressed(address: str = "gone@example.com") -> SuppressedAddress:
    return SuppressedAddress.objects.create(
        channel="email",
        address=address,
        reason="bounced",
        source="mailgun",
        detail="550 5.1.1 no such user",
        at=timezone.now(),
    )


def test_the_migration_lets_support_view_the_suppression_list_and_events():
    group = Group.objects.get(name="Support")
    codenames = set(group.permissions.values_list("codename", flat=True))
    assert {"view_suppressedaddress", "view_providerevent"} <= codenames
    assert "delete_suppressedaddress" not in codenames


def test_support_finds_an_address_typed_any_way_but_cannot_remove_it(support_client):
    row = suppressed()
    url = reverse("admin:notifier_suppressedaddress_changelist")

    response = support_client.get(url, {"q": "  Gone@Example.COM "})

    assert response.status_code == 200
    assert list(response.context["cl"].result_list) == [row]
    assert "Hard bounce" in response.content.decode()
    delete = reverse("admin:notifier_suppressedaddress_delete", args=[row.pk])
    assert support_client.post(delete, {"post": "yes"}).status_code == 403
    assert SuppressedAddress.objects.filter(pk=row.pk).exists()


def test_nobody_adds_or_edits_a_suppression_by_hand(super_client):
    row = suppressed()
    assert super_client.get(reverse("admin:notifier_suppressedaddress_add")).status_code == 403
    change = reverse("admin:notifier_suppressedaddress_change", args=[row.pk])
    assert super_client.post(change, {"address": "other@example.com"}).status_code == 403
    assert SuppressedAddress.objects.get(pk=row.pk).address == "gone@example.com"


def test_an_admin_removes_a_suppression_and_email_goes_out_again(super_client, monkeypatch):
    monkeypatch.setattr(dispatch, "publish_prepare", lambda *args, **kwargs: None)
    monkeypatch.setattr(dispatch, "publish_deliver", lambda *args, **kwargs: None)
    user = UserFactory(email="gone@example.com")
    row = suppressed()
    before = notify(user, "order.shipped", order_context(), channels=["email"])
    messages_prepare(message_ids=[before.pk])
    assert Delivery.objects.get(message=before).reason == Reason.ADDRESS_SUPPRESSED

    delete = reverse("admin:notifier_suppressedaddress_delete", args=[row.pk])
    assert super_client.post(delete, {"post": "yes"}).status_code == 302

    after = notify(user, "order.shipped", order_context(order_number="A2"), channels=["email"])
    messages_prepare(message_ids=[after.pk])
    assert Delivery.objects.get(message=after).status == S.QUEUED


def test_support_reads_provider_events_and_nobody_deletes_them(support_client, super_client):
    event = ProviderEvent.objects.create(
        provider="twilio",
        event_id="SM1:delivered",
        event_type="delivered",
        outcome="unknown",
        received_at=timezone.now(),
    )
    assert support_client.get(reverse("admin:notifier_providerevent_changelist")).status_code == 200
    delete = reverse("admin:notifier_providerevent_delete", args=[event.pk])
    assert super_client.post(delete, {"post": "yes"}).status_code == 403
    assert ProviderEvent.objects.filter(pk=event.pk).exists()


# --- Phone numbers in the admin ------------------------------------------------------------------


def add_user(client, phone: str):
    return client.post(
        reverse("admin:notifier_user_add"),
        {
            "username": "mei",
            "email": "mei@example.com",
            "phone": phone,
            "usable_password": "false",
            "devices-TOTAL_FORMS": "0",
            "devices-INITIAL_FORMS": "0",
        },
    )


def test_a_phone_typed_with_spaces_and_dashes_is_stored_in_e164(super_client):
    response = add_user(super_client, "+86 138-0013-8000")

    assert response.status_code == 302, response.context["adminform"].form.errors
    assert User.objects.get(username="mei").notifier_recipient.phone == "+8613800138000"


@pytest.mark.parametrize("phone", ["138 0013 8000", "+86 123", "call me"])
def test_a_phone_that_is_no_number_is_refused_with_the_fix_and_nothing_saved(super_client, phone):
    response = add_user(super_client, phone)

    assert response.status_code == 200
    errors = response.context["adminform"].form.errors["phone"]
    assert "country code" in errors[0]
    assert not User.objects.filter(username="mei").exists()
