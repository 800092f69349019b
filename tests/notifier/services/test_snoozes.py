"""Snooze, on PostgreSQL: a person mutes a type for a day, a week or until they unmute it;
meanwhile it reaches their inbox only, with the reason on every other channel; from the
service, the service API, the inbox JSON API and the inbox page."""

from __future__ import annotations

import json
from datetime import timedelta

import pytest
import time_machine
from django.test import Client
from django.urls import reverse
from django.utils import timezone

from notifier.api import notify
from notifier.models import Delivery, InboxItem, Snooze
from notifier.services.pipeline import messages_prepare
from notifier.services.recipients import recipient_put
from notifier.services.release import held_release
from notifier.services.snoozes import SnoozeError, snooze_lift, snooze_set, snoozes_list
from notifier.status import DeliveryStatus, Reason
from tests.factories import DeviceFactory, UserFactory, order_context
from tests.notifier.http_api.test_service_api import token

pytestmark = pytest.mark.django_db
S = DeliveryStatus
FOLLOWER = {"follower_name": "Fan", "follower_url": "https://x.test/fan"}


def follower(user):
    message = notify(user, "social.new_follower", FOLLOWER, channels=["inapp", "push"])
    messages_prepare(message_ids=[message.pk])
    return dict(Delivery.objects.filter(message=message).values_list("channel", "reason"))


def test_a_snoozed_type_reaches_the_inbox_only_with_the_reason_elsewhere(published):
    user = UserFactory()
    DeviceFactory(user=user)
    state = snooze_set(user_id=user.pk, type_key="social.new_follower", length="day")
    assert state.until is not None
    reasons = follower(user)
    assert reasons == {"inapp": "", "push": Reason.SNOOZED}
    assert InboxItem.objects.filter(user=user).count() == 1


def test_a_snooze_ends_on_its_own_and_until_unmuted_lasts_until_lifted(published):
    user = UserFactory()
    DeviceFactory(user=user)
    snooze_set(user_id=user.pk, type_key="social.new_follower", length="day")
    with time_machine.travel(timezone.now() + timedelta(days=1, minutes=1)):
        assert follower(user)["push"] == ""
        assert snoozes_list(user_id=user.pk) == []
    snooze_set(user_id=user.pk, type_key="social.new_follower", length="until_unmuted")
    with time_machine.travel(timezone.now() + timedelta(days=400)):
        assert follower(user)["push"] == Reason.SNOOZED
    assert snooze_lift(user_id=user.pk, type_key="social.new_follower") is True
    assert follower(user)["push"] == ""
    assert snooze_lift(user_id=user.pk, type_key="social.new_follower") is False


def test_snoozing_again_replaces_the_first(published):
    user = UserFactory()
    snooze_set(user_id=user.pk, type_key="social.new_follower", length="week")
    snooze_set(user_id=user.pk, type_key="social.new_follower", length="day")
    (only,) = snoozes_list(user_id=user.pk)
    assert only.until is not None and only.until < timezone.now() + timedelta(days=2)
    assert Snooze.objects.count() == 1


def test_a_message_held_before_the_snooze_is_checked_again_at_release(published):
    user = UserFactory()
    DeviceFactory(user=user)
    later = timezone.now() + timedelta(hours=1)
    message = notify(
        user, "social.new_follower", FOLLOWER, channels=["inapp", "push"], send_at=later
    )
    messages_prepare(message_ids=[message.pk])
    snooze_set(user_id=user.pk, type_key="social.new_follower", length="week")
    with time_machine.travel(later + timedelta(minutes=1)):
        held_release()
    rows = dict(Delivery.objects.filter(message=message).values_list("channel", "status"))
    assert rows == {"inapp": S.QUEUED, "push": S.SUPPRESSED}


@pytest.mark.parametrize(
    ("type_key", "length", "words"),
    [
        ("order.shipped", "day", "cannot be snoozed"),
        ("payment.succeeded", "week", "cannot be snoozed"),
        ("no.such.type", "day", "no notification type"),
        ("social.new_follower", "month", "snooze for one of"),
        ("", "day", "type must be"),
    ],
)
def test_a_snooze_that_cannot_be_made_says_why(type_key, length, words):
    with pytest.raises(SnoozeError, match=words):
        snooze_set(user_id=UserFactory().pk, type_key=type_key, length=length)
    assert not Snooze.objects.exists()


# --- From the service API ------------------------------------------------------------------


def test_the_service_api_snoozes_lists_and_unmutes():
    saved = recipient_put("cust-9", {"email": "nine@example.com"})
    key = token("recipients")
    client, auth = Client(), {"HTTP_AUTHORIZATION": f"Bearer {key}"}
    url = "/api/v1/recipients/cust-9/snoozes"
    response = client.put(
        f"{url}/social.new_follower",
        data=json.dumps({"for": "week"}),
        content_type="application/json",
        **auth,
    )
    assert response.status_code == 200, response.json()
    (snooze,) = response.json()["snoozes"]
    assert snooze["type"] == "social.new_follower" and snooze["until"]
    assert Snooze.objects.get().user_id == saved.recipient.user_id
    refused = client.put(
        f"{url}/order.shipped",
        data=json.dumps({"for": "day"}),
        content_type="application/json",
        **auth,
    )
    assert (refused.status_code, refused.json()["type"]) == (422, "SnoozeError")
    assert client.delete(f"{url}/social.new_follower", **auth).json() == {"snoozes": []}


def test_the_service_api_refuses_an_unknown_length():
    recipient_put("cust-10", {"email": "ten@example.com"})
    key = token("recipients")
    response = Client().put(
        "/api/v1/recipients/cust-10/snoozes/social.new_follower",
        data=json.dumps({"for": "forever"}),
        content_type="application/json",
        HTTP_AUTHORIZATION=f"Bearer {key}",
    )
    assert response.status_code == 422
    assert not Snooze.objects.exists()


# --- From the inbox ---------------------------------------------------------------------------


def logged_in(user) -> Client:
    client = Client()
    client.force_login(user)
    return client


def test_the_inbox_api_snoozes_an_items_type_and_lifts_it(published):
    user = UserFactory()
    follower(user)
    item = InboxItem.objects.get(user=user)
    client = logged_in(user)
    response = client.post(
        reverse("notifier:inbox-snooze", args=[item.pk]),
        data=json.dumps({"for": "day"}),
        content_type="application/json",
    )
    assert response.status_code == 200
    assert response.json()["type"] == "social.new_follower"
    listed = client.get(reverse("notifier:inbox-snoozes")).json()["snoozes"]
    assert [s["type"] for s in listed] == ["social.new_follower"]
    lifted = client.post(reverse("notifier:inbox-snooze-lift", args=["social.new_follower"]))
    assert lifted.json() == {"lifted": True}


def test_the_inbox_api_refuses_another_users_item_and_a_type_that_cannot_be_snoozed(published):
    owner, stranger = UserFactory(), UserFactory()
    follower(owner)
    item = InboxItem.objects.get(user=owner)
    response = logged_in(stranger).post(
        reverse("notifier:inbox-snooze", args=[item.pk]),
        data=json.dumps({"for": "day"}),
        content_type="application/json",
    )
    assert response.status_code == 404
    shipped = notify(owner, "order.shipped", order_context(), channels=["inapp"])
    messages_prepare(message_ids=[shipped.pk])
    receipt = InboxItem.objects.get(message=shipped)
    refused = logged_in(owner).post(
        reverse("notifier:inbox-snooze", args=[receipt.pk]),
        data=json.dumps({"for": "day"}),
        content_type="application/json",
    )
    assert refused.status_code == 422
    for body in ('{"for": []}', '{"for": "month"}', "[]"):
        bad = logged_in(owner).post(
            reverse("notifier:inbox-snooze", args=[item.pk]),
            data=body,
            content_type="application/json",
        )
        assert bad.status_code == 400, body
    assert not Snooze.objects.exists()


def test_the_inbox_page_offers_snooze_where_it_can_be_made_and_makes_it(published):
    user = UserFactory()
    follower(user)
    shipped = notify(user, "order.shipped", order_context(), channels=["inapp"])
    messages_prepare(message_ids=[shipped.pk])
    client = logged_in(user)
    html = client.get(reverse("notifier:inbox-page")).content.decode()
    social = InboxItem.objects.get(user=user, type_key="social.new_follower")
    receipt = InboxItem.objects.get(message=shipped)

    def snooze_button(item_id: int) -> str:
        start = html.index(f'data-id="{item_id}"')
        chunk = html[start : html.index("</li>", start)]
        return chunk[chunk.index('value="snooze"') :].split(">", 1)[0]

    assert "hidden" not in snooze_button(social.pk)
    assert "hidden" in snooze_button(receipt.pk)
    response = client.post(
        reverse("notifier:inbox-page"), {"action": "snooze", "item": social.pk, "cursor": ""}
    )
    assert response.status_code == 303
    assert Snooze.objects.get(user=user).type_id == "social.new_follower"
    refused = client.post(
        reverse("notifier:inbox-page"), {"action": "snooze", "item": receipt.pk, "cursor": ""}
    )
    assert refused.status_code == 400
