"""The inbox JSON API: paginated list, unread count, read, read-all, archive, feedback."""

from __future__ import annotations

import json

import pytest
from django.test import Client
from django.urls import reverse
from django.utils import timezone

from notifier.api import notify
from notifier.models import Delivery, DeliveryEvent, InboxItem
from notifier.services.deliveries import deliveries_deliver
from notifier.services.pipeline import messages_prepare
from notifier.status import DeliveryStatus
from tests.factories import UserFactory

pytestmark = pytest.mark.django_db


@pytest.fixture(autouse=True)
def _no_broker(monkeypatch):
    from notifier import dispatch

    monkeypatch.setattr(dispatch, "publish_prepare", lambda *a, **k: None)
    monkeypatch.setattr(dispatch, "publish_deliver", lambda *a, **k: None)


def deliver_inbox(user, count: int) -> list[InboxItem]:
    ids = [
        notify(
            user,
            "social.new_follower",
            {"follower_name": f"Fan {n}", "follower_url": f"https://x.test/{n}"},
            channels=["inapp"],
        ).pk
        for n in range(count)
    ]
    messages_prepare(message_ids=ids)
    deliveries_deliver(
        delivery_ids=list(Delivery.objects.filter(message_id__in=ids).values_list("pk", flat=True))
    )
    return list(InboxItem.objects.filter(user=user).order_by("-created_at", "-id"))


@pytest.fixture
def user():
    return UserFactory()


@pytest.fixture
def client_for(user) -> Client:
    client = Client(enforce_csrf_checks=False)
    client.force_login(user)
    return client


def test_the_list_pages_newest_first_with_a_cursor(user, client_for):
    items = deliver_inbox(user, 5)
    first = client_for.get(reverse("notifier:inbox-list"), {"limit": 2}).json()
    assert [i["id"] for i in first["items"]] == [items[0].pk, items[1].pk]
    assert first["unread_count"] == 5
    assert first["items"][0]["title"] == "Fan 4 followed you"
    assert first["items"][0]["link"] == "https://x.test/4"
    second = client_for.get(
        reverse("notifier:inbox-list"), {"limit": 2, "cursor": first["next_cursor"]}
    )
    assert [i["id"] for i in second.json()["items"]] == [items[2].pk, items[3].pk]
    last = client_for.get(
        reverse("notifier:inbox-list"), {"limit": 2, "cursor": second.json()["next_cursor"]}
    ).json()
    assert [i["id"] for i in last["items"]] == [items[4].pk]
    assert last["next_cursor"] is None


def test_mark_one_read_moves_the_delivery_to_read(user, client_for):
    item = deliver_inbox(user, 2)[0]
    response = client_for.post(reverse("notifier:inbox-read", args=[item.pk]))
    assert response.status_code == 200
    assert response.json()["read_at"] is not None
    assert client_for.get(reverse("notifier:inbox-unread-count")).json() == {"unread_count": 1}
    delivery = Delivery.objects.get(pk=item.delivery_id)
    assert delivery.status == DeliveryStatus.READ and delivery.opened_at is not None
    # reading again changes nothing and writes no second event
    client_for.post(reverse("notifier:inbox-read", args=[item.pk]))
    assert DeliveryEvent.objects.filter(delivery=delivery, status="read").count() == 1


def test_mark_all_read(user, client_for):
    deliver_inbox(user, 3)
    response = client_for.post(reverse("notifier:inbox-read-all")).json()
    assert response == {"marked_read": 3, "unread_count": 0}
    assert set(Delivery.objects.values_list("status", flat=True)) == {"read"}
    assert client_for.get(reverse("notifier:inbox-list"), {"unread": 1}).json()["items"] == []


def test_archive_hides_the_item_from_the_list(user, client_for):
    items = deliver_inbox(user, 2)
    client_for.post(reverse("notifier:inbox-archive", args=[items[0].pk]))
    listed = client_for.get(reverse("notifier:inbox-list")).json()
    assert [i["id"] for i in listed["items"]] == [items[1].pk]
    archived = client_for.get(reverse("notifier:inbox-list"), {"archived": 1}).json()
    assert [i["id"] for i in archived["items"]] == [items[0].pk]


def test_feedback_is_stored_and_logged(user, client_for):
    item = deliver_inbox(user, 1)[0]
    response = client_for.post(
        reverse("notifier:inbox-feedback", args=[item.pk]),
        data=json.dumps({"feedback": "irrelevant"}),
        content_type="application/json",
    )
    assert response.json()["feedback"] == "irrelevant"
    assert InboxItem.objects.get(pk=item.pk).feedback == "irrelevant"
    event = DeliveryEvent.objects.filter(delivery_id=item.delivery_id).last()
    assert event.detail == {"feedback": "irrelevant"}


def test_another_users_item_is_not_found_and_unchanged(user, client_for):
    other_item = deliver_inbox(UserFactory(), 1)[0]
    for name in ("notifier:inbox-read", "notifier:inbox-archive"):
        response = client_for.post(reverse(name, args=[other_item.pk]))
        assert response.status_code == 404
        assert "error" in response.json()
    response = client_for.post(
        reverse("notifier:inbox-feedback", args=[other_item.pk]),
        data=json.dumps({"feedback": "useful"}),
        content_type="application/json",
    )
    assert response.status_code == 404
    fresh = InboxItem.objects.get(pk=other_item.pk)
    assert (fresh.read_at, fresh.archived_at, fresh.feedback) == (None, None, "")


@pytest.mark.parametrize(
    ("params", "needle"),
    [
        ({"limit": "many"}, "whole number"),
        ({"limit": "0"}, "between 1 and 100"),
        ({"limit": "1000"}, "between 1 and 100"),
        ({"cursor": "not-a-cursor"}, "cursor"),
        ({"unread": "maybe"}, "unread must be 1 or 0"),
    ],
)
def test_bad_list_parameters_get_a_400_that_says_what_to_fix(client_for, params, needle):
    response = client_for.get(reverse("notifier:inbox-list"), params)
    assert response.status_code == 400
    assert needle in response.json()["error"]


@pytest.mark.parametrize(
    "body",
    ["not json", json.dumps({"feedback": "love it"}), json.dumps(["useful"]), json.dumps({})],
)
def test_bad_feedback_gets_a_400_and_changes_nothing(user, client_for, body):
    item = deliver_inbox(user, 1)[0]
    response = client_for.post(
        reverse("notifier:inbox-feedback", args=[item.pk]),
        data=body,
        content_type="application/json",
    )
    assert response.status_code == 400
    assert "feedback" in response.json()["error"]
    assert InboxItem.objects.get(pk=item.pk).feedback == ""


def test_anonymous_users_get_401(client):
    assert client.get(reverse("notifier:inbox-list")).status_code == 401
    assert client.post(reverse("notifier:inbox-read-all")).status_code == 401


def test_wrong_methods_get_405(client_for):
    assert client_for.get(reverse("notifier:inbox-read-all")).status_code == 405
    assert client_for.post(reverse("notifier:inbox-list")).status_code == 405


def test_posts_need_the_csrf_token(user):
    strict = Client(enforce_csrf_checks=True)
    strict.force_login(user)
    assert strict.post(reverse("notifier:inbox-read-all")).status_code == 403


def test_marketing_items_carry_an_unsubscribe_link_and_others_do_not(user, client_for, client):
    from notifier.models import Consent

    Consent.objects.create(
        user=user, channel="all", granted=True, at=timezone.now(), source="test", wording="offers"
    )
    promo = notify(
        user,
        "promo.flash_sale",
        {"sale_name": "S", "starts_at": "now", "headline": "H", "sale_url": "https://x.test"},
        channels=["inapp"],
    )
    messages_prepare(message_ids=[promo.pk])
    deliveries_deliver(delivery_ids=[Delivery.objects.get(message=promo).pk])
    deliver_inbox(user, 1)
    items = {i["type"]: i for i in client_for.get(reverse("notifier:inbox-list")).json()["items"]}
    assert items["social.new_follower"]["unsubscribe_url"] is None
    link = items["promo.flash_sale"]["unsubscribe_url"]
    assert "/unsubscribe/" in link
    page = client.get(link)  # the signed link works without logging in
    assert page.status_code == 200


# --- The cursor: only what this API gave out ------------------------------------------------------


def test_a_cursor_reads_back_as_what_was_given_out():
    from notifier.pages.inbox_api import decode_cursor, encode_cursor

    moment = timezone.now()
    assert decode_cursor(encode_cursor((moment, 42)) or "") == (moment, 42)


@pytest.mark.parametrize(
    "text",
    [
        "2026-01-01T00:00:00+20:00|1",  # PostgreSQL refuses offsets past 15:59
        "2026-01-01T00:00:00+15:00|1",  # one it takes, but never one we give out
        "9999-12-31T23:59:59-15:00|1",  # past year 9999 in UTC
        "2026-01-01T00:00:00|1",
        "2026-01-01T00:00:00+00:00|-1",
        "2026-01-01T00:00:00+00:00|\u00b2",
        f"2026-01-01T00:00:00+00:00|{2**63}",
        "2026-01-01T00:00:00+00:00|" + "9" * 5000,
    ],
)
def test_a_forged_cursor_is_a_bad_request(text):
    import base64

    from notifier.pages.inbox_api import BadRequest, decode_cursor

    with pytest.raises(BadRequest, match="pass next_cursor as is"):
        decode_cursor(base64.urlsafe_b64encode(text.encode()).decode())


@pytest.mark.parametrize(
    "content_type", ["application/x-www-form-urlencoded", "multipart/form-data; boundary=xx"]
)
def test_a_body_that_is_not_json_is_a_415_that_says_to_send_json(user, client_for, content_type):
    [item] = deliver_inbox(user, 1)

    response = client_for.post(
        reverse("notifier:inbox-feedback", args=[item.pk]),
        b"feedback=useful",
        content_type=content_type,
    )

    assert response.status_code == 415
    assert response.json()["error"].startswith(
        "send the body as JSON with Content-Type: application/json"
    )
    item.refresh_from_db()
    assert item.feedback == ""
