"""`/api/v1/recipients/…` through Django's test client: recipients by external_id (made
without a user of the product, linked to one, updated idempotently, refused with what to fix
and nothing written), notify by external_id, push devices (registered, moved, unregistered,
the public VAPID key), preferences and consent with the preference centre's rules."""

from __future__ import annotations

import base64
import json
from typing import Any

import pytest
from django.test import Client, override_settings

from notifier.models import Consent, Device, Message, Preference, Recipient, User
from notifier.services.api_keys import api_key_create
from tests.factories import UserFactory, order_context

pytestmark = pytest.mark.django_db

ALL = ("notify", "recipients", "devices", "read")


def token(*scopes: str) -> str:
    return api_key_create(name="app backend", scopes=scopes or ALL).token


def call(method: str, url: str, body: object = None, key: str | None = None, **extra: str) -> Any:
    headers = {"HTTP_AUTHORIZATION": f"Bearer {key or token()}", **extra}
    data = json.dumps(body) if body is not None else None
    return getattr(Client(), method)(url, data=data, content_type="application/json", **headers)


def b64(size: int) -> str:
    return base64.urlsafe_b64encode(b"\x04" * size).rstrip(b"=").decode()


# --- Recipients -------------------------------------------------------------------------------


def test_put_makes_a_recipient_by_external_id_and_the_same_put_changes_nothing():
    body = {
        "email": "ana@example.com",
        "phone": "+8613800138000",
        "time_zone": "Asia/Shanghai",
        "locale": "zh-hans",
        "quiet_hours": {"enabled": True, "start": "23:00", "end": "07:30"},
        "attributes": {"yearly_spend": "1299.50", "interest_tags": ["shoes"], "points_balance": 40},
    }
    first = call("put", "/api/v1/recipients/cust-42", body)
    assert first.status_code == 201, first.json()
    made = first.json()
    assert made["external_id"] == "cust-42"
    assert made["phone"] == "+8613800138000"
    assert made["quiet_hours"] == {"enabled": True, "start": "23:00:00", "end": "07:30:00"}
    assert made["attributes"]["yearly_spend"] == "1299.50"
    profile = Recipient.objects.get(external_id="cust-42")
    assert profile.time_zone == "Asia/Shanghai"
    assert profile.interest_tags == ["shoes"]
    # The stand-alone site made one of its own people for them, who cannot log in.
    assert not profile.user.has_usable_password()

    updated_at = profile.updated_at
    again = call("put", "/api/v1/recipients/cust-42", body)
    assert again.status_code == 200
    assert Recipient.objects.filter(external_id="cust-42").count() == 1
    assert Recipient.objects.get(external_id="cust-42").updated_at == updated_at


def test_put_sets_only_the_fields_sent():
    call("put", "/api/v1/recipients/c1", {"email": "a@example.com", "locale": "fr"})
    response = call("put", "/api/v1/recipients/c1", {"phone": "+14155550123"})
    assert response.status_code == 200
    assert response.json()["email"] == "a@example.com"
    assert response.json()["locale"] == "fr"
    assert response.json()["phone"] == "+14155550123"
    cleared = call("put", "/api/v1/recipients/c1", {"email": None})
    assert cleared.json()["email"] == ""


def test_a_recipient_linked_to_a_user_of_the_product_is_that_users_profile():
    user = UserFactory()
    response = call("put", "/api/v1/recipients/shop-7", {"user": user.pk, "locale": "de"})
    assert response.status_code == 201
    assert response.json()["user"] == user.pk
    assert Recipient.objects.get(user=user).external_id == "shop-7"
    # Another external id for the same person is refused; so is the id for another user.
    other = call("put", "/api/v1/recipients/shop-8", {"user": user.pk})
    assert other.status_code == 409
    assert other.json()["type"] == "RecipientConflict"
    stolen = call("put", "/api/v1/recipients/shop-7", {"user": UserFactory().pk})
    assert stolen.status_code == 409
    assert Recipient.objects.filter(external_id="shop-8").count() == 0


@pytest.mark.parametrize(
    ("body", "words"),
    [
        ({"email": "not-an-address"}, "not an email address"),
        ({"email": "a" * 250 + "@example.com"}, "at most 254"),
        ({"phone": "12345"}, "phone number"),
        ({"time_zone": "Mars/Olympus"}, "IANA"),
        ({"locale": "english please"}, "language tag"),
        ({"quiet_hours": {"start": "22:00"}}, "both start and end"),
        ({"attributes": {"yearly_spend": "-3"}}, "yearly_spend"),
        ({"attributes": {"last_active_at": "2026-01-01T10:00:00"}}, "with its zone"),
        ({"attributes": {"interest_tags": [""]}}, "interest_tags"),
        ({"user": 987654321}, "no user"),
    ],
)
def test_bad_fields_are_refused_saying_what_to_fix_and_nothing_is_written(body, words):
    users = User.objects.count()
    response = call("put", "/api/v1/recipients/bad-1", body)
    assert response.status_code == 422, response.json()
    assert words in response.json()["message"]
    assert not Recipient.objects.filter(external_id="bad-1").exists()
    assert User.objects.count() == users


def test_an_external_id_with_spaces_around_it_is_refused():
    response = call("put", "/api/v1/recipients/%20padded", {"locale": "en"})
    assert response.status_code == 422
    assert "spaces" in response.json()["message"]


def test_reading_an_unknown_recipient_is_a_404_saying_how_to_create_one():
    response = call("get", "/api/v1/recipients/nobody")
    assert response.status_code == 404
    assert response.json()["type"] == "UnknownRecipient"
    assert "PUT /recipients" in response.json()["message"]


@override_settings(NOTIFIER_RECIPIENT_USER_FACTORY="")
def test_a_host_that_makes_no_users_asks_for_the_user_to_link():
    response = call("put", "/api/v1/recipients/host-1", {"locale": "en"})
    assert response.status_code == 422
    assert response.json()["type"] == "RecipientNeedsUser"
    assert "send `user`" in response.json()["message"]
    assert not Recipient.objects.filter(external_id="host-1").exists()


def test_a_key_without_the_recipients_scope_cannot_write_one_but_a_read_key_can_read():
    call("put", "/api/v1/recipients/r-1", {"locale": "en"})
    refused = call("put", "/api/v1/recipients/r-2", {"locale": "en"}, key=token("read"))
    assert refused.status_code == 403
    assert not Recipient.objects.filter(external_id="r-2").exists()
    assert call("get", "/api/v1/recipients/r-1", key=token("read")).status_code == 200


def test_notify_by_external_id_reaches_the_recipient():
    call("put", "/api/v1/recipients/cust-9", {"email": "nine@example.com"})
    response = call(
        "post",
        "/api/v1/notify",
        {"recipient": "cust-9", "type": "order.shipped", "context": order_context()},
    )
    assert response.status_code == 202, response.json()
    message = Message.objects.get(pk=response.json()["message"])
    assert message.user_id == Recipient.objects.get(external_id="cust-9").user_id
    read = call("get", f"/api/v1/messages/{message.pk}")
    assert read.json()["recipient"] == "cust-9"


def test_notify_names_an_unknown_external_id_and_wants_user_or_recipient():
    unknown = call(
        "post",
        "/api/v1/notify",
        {"recipient": "ghost", "type": "order.shipped", "context": order_context()},
    )
    assert unknown.status_code == 422
    assert unknown.json()["type"] == "InvalidRecipient"
    assert "ghost" in unknown.json()["message"]
    neither = call("post", "/api/v1/notify", {"type": "order.shipped", "context": order_context()})
    assert neither.status_code == 422
    assert "either user" in neither.json()["message"]
    assert not Message.objects.exists()


def test_notify_in_bulk_by_external_ids_with_contexts_keyed_by_them():
    for n in (1, 2):
        call("put", f"/api/v1/recipients/b-{n}", {"email": f"b{n}@example.com"})
    response = call(
        "post",
        "/api/v1/notify/bulk",
        {
            "recipients": ["b-1", "b-2"],
            "type": "order.shipped",
            "context": order_context(),
            "contexts": {"b-2": {"order_number": "B-2"}},
        },
    )
    assert response.status_code == 202, response.json()
    messages = Message.objects.in_bulk(response.json()["messages"])
    ids = response.json()["messages"]
    assert messages[ids[1]].context["order_number"] == "B-2"
    assert messages[ids[0]].user_id == Recipient.objects.get(external_id="b-1").user_id
    missing = call(
        "post",
        "/api/v1/notify/bulk",
        {"recipients": ["b-1", "nope"], "type": "order.shipped", "context": order_context()},
    )
    assert missing.status_code == 422
    assert "nope" in missing.json()["message"]
    assert Message.objects.count() == 2


# --- Devices ----------------------------------------------------------------------------------


def test_a_device_is_registered_then_moves_to_whoever_registers_it_next():
    call("put", "/api/v1/recipients/phone-a", {})
    call("put", "/api/v1/recipients/phone-b", {})
    body = {"platform": "android", "token": "fcm:token-123"}
    first = call("post", "/api/v1/recipients/phone-a/devices", body)
    assert first.status_code == 201, first.json()
    again = call("post", "/api/v1/recipients/phone-a/devices", body)
    assert again.status_code == 200
    moved = call("post", "/api/v1/recipients/phone-b/devices", body)
    assert moved.status_code == 200
    device = Device.objects.get(token="fcm:token-123")
    assert device.user_id == Recipient.objects.get(external_id="phone-b").user_id
    assert call("get", "/api/v1/recipients/phone-a/devices").json() == []
    assert len(call("get", "/api/v1/recipients/phone-b/devices").json()) == 1


def test_unregistering_deactivates_with_a_reason_and_registering_brings_it_back():
    call("put", "/api/v1/recipients/u-1", {})
    call("post", "/api/v1/recipients/u-1/devices", {"platform": "ios", "token": "apns-ish"})
    gone = call("delete", "/api/v1/recipients/u-1/devices?token=apns-ish")
    assert gone.status_code == 200
    assert gone.json()["active"] is False
    assert gone.json()["deactivation_reason"] == "unregistered by the app"
    assert call("delete", "/api/v1/recipients/u-1/devices?token=other").status_code == 404
    back = call("post", "/api/v1/recipients/u-1/devices", {"platform": "ios", "token": "apns-ish"})
    assert back.json()["active"] is True


def test_a_web_push_subscription_needs_an_https_endpoint_and_its_keys():
    call("put", "/api/v1/recipients/w-1", {})
    url = "/api/v1/recipients/w-1/devices"
    good = {
        "platform": "web",
        "token": "https://push.example.net/send/abc",
        "keys": {"p256dh": b64(65), "auth": b64(16)},
    }
    assert call("post", url, good).status_code == 201
    for bad, words in [
        ({**good, "token": "http://push.example.net/x"}, "https://"),
        ({**good, "token": "https://push.example.net/y", "keys": None}, "needs keys"),
        (
            {
                **good,
                "token": "https://push.example.net/z",
                "keys": {"p256dh": b64(3), "auth": b64(16)},
            },
            "65 bytes",
        ),
        ({"platform": "android", "token": "t", "keys": good["keys"]}, "Web Push"),
        ({**good, "token": "https://169.254.169.254/latest/"}, "not a browser push service"),
        ({**good, "token": "https://intranet.corp.example/hook"}, "not a browser push service"),
        ({"platform": "android", "token": "has space"}, "spaces"),
    ]:
        response = call("post", url, bad)
        assert response.status_code == 422, bad
        assert words in response.json()["message"]
    assert Device.objects.count() == 1


def test_devices_need_the_devices_scope():
    call("put", "/api/v1/recipients/s-1", {})
    response = call(
        "post",
        "/api/v1/recipients/s-1/devices",
        {"platform": "android", "token": "t1"},
        key=token("notify"),
    )
    assert response.status_code == 403
    assert not Device.objects.exists()


def test_the_vapid_public_key_is_public_and_derived_from_the_private_key(settings):
    from py_vapid import Vapid

    assert Client().get("/api/v1/push/vapid-public-key").status_code == 404
    vapid = Vapid()
    vapid.generate_keys()
    from cryptography.hazmat.primitives import serialization

    der = vapid.private_key.private_bytes(
        serialization.Encoding.DER,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )
    settings.NOTIFIER_WEBPUSH_VAPID_PRIVATE_KEY = (
        base64.urlsafe_b64encode(der).rstrip(b"=").decode()
    )
    response = Client().get("/api/v1/push/vapid-public-key")
    assert response.status_code == 200
    raw = vapid.public_key.public_bytes(
        serialization.Encoding.X962, serialization.PublicFormat.UncompressedPoint
    )
    assert response.json()["public_key"] == base64.urlsafe_b64encode(raw).rstrip(b"=").decode()


# --- Preferences and consent ------------------------------------------------------------------


def test_preferences_are_read_and_changed_with_the_preference_centres_rules():
    call("put", "/api/v1/recipients/p-1", {})
    url = "/api/v1/recipients/p-1/preferences"
    before = call("get", url, key=token("read"))
    assert before.status_code == 200
    assert {c["category"] for c in before.json()["categories"]} >= {"marketing", "transactional"}
    changed = call(
        "patch",
        url,
        {
            "preferences": [{"category": "marketing", "channel": "email", "enabled": False}],
            "marketing_frequency": "weekly",
        },
    )
    assert changed.status_code == 200, changed.json()
    marketing = next(c for c in changed.json()["categories"] if c["category"] == "marketing")
    assert marketing["channels"]["email"] is False
    assert changed.json()["marketing_frequency"] == "weekly"

    locked = call(
        "patch",
        url,
        {
            "preferences": [
                {"category": "marketing", "channel": "sms", "enabled": False},
                {"category": "transactional", "channel": "all", "enabled": False},
            ]
        },
    )
    assert locked.status_code == 422
    assert locked.json()["type"] == "CategoryLocked"
    user_id = Recipient.objects.get(external_id="p-1").user_id
    # All or nothing: the marketing switch sent with the refused one was not written either.
    assert not Preference.objects.filter(user_id=user_id, channel="sms").exists()


def test_consent_keeps_where_and_what_wording_and_a_grant_needs_the_words():
    call("put", "/api/v1/recipients/k-1", {})
    url = "/api/v1/recipients/k-1/consent"
    no_words = call("post", url, {"channel": "email", "granted": True, "source": "app_settings"})
    assert no_words.status_code == 422
    assert "wording" in no_words.json()["message"]
    given = call(
        "post",
        url,
        {
            "channel": "email",
            "granted": True,
            "source": "app_settings",
            "wording": "Send me offers by email",
            "ip_address": "203.0.113.9",
        },
    )
    assert given.status_code == 200, given.json()
    assert given.json()["current"]["email"]["granted"] is True
    assert given.json()["history"][0]["wording"] == "Send me offers by email"
    record = Consent.objects.get()
    assert (record.source, record.ip_address) == ("app_settings", "203.0.113.9")
    withdrawn = call("post", url, {"channel": "email", "granted": False, "source": "app_settings"})
    assert withdrawn.json()["current"]["email"]["granted"] is False
    assert [r["granted"] for r in withdrawn.json()["history"]] == [False, True]
    bad_channel = call("post", url, {"channel": "fax", "granted": False, "source": "x"})
    assert bad_channel.status_code == 422
    assert Consent.objects.count() == 2


def test_a_recipients_messages_newest_first_in_pages_with_the_reasons():
    call("put", "/api/v1/recipients/m-1", {"email": ""})
    ids = [
        call(
            "post",
            "/api/v1/notify",
            {
                "recipient": "m-1",
                "type": "order.shipped",
                "context": order_context(order_number=f"N{n}"),
            },
        ).json()["message"]
        for n in range(3)
    ]
    first = call("get", "/api/v1/recipients/m-1/messages?limit=2", key=token("read"))
    assert first.status_code == 200
    assert [m["id"] for m in first.json()] == [ids[2], ids[1]]
    rest = call("get", f"/api/v1/recipients/m-1/messages?limit=2&before={ids[1]}")
    assert [m["id"] for m in rest.json()] == [ids[0]]
    assert rest.json()[0]["recipient"] == "m-1"
    assert call("get", "/api/v1/recipients/m-1/messages?limit=500").status_code == 422
    assert call("get", "/api/v1/recipients/nobody/messages").status_code == 404


# --- App tokens -------------------------------------------------------------------------------


def app_token(external_id: str) -> str:
    response = call("post", f"/api/v1/recipients/{external_id}/app-token", key=token("recipients"))
    assert response.status_code == 201, response.json()
    return response.json()["token"]


def test_an_app_token_registers_its_own_recipients_device_and_changes_their_preferences():
    call("put", "/api/v1/recipients/app-1", {})
    call("put", "/api/v1/recipients/app-2", {})
    app = app_token("app-1")
    assert app.startswith("ntr_")
    added = call(
        "post", "/api/v1/recipients/app-1/devices", {"platform": "ios", "token": "t-app"}, key=app
    )
    assert added.status_code == 201
    switched = call(
        "patch",
        "/api/v1/recipients/app-1/preferences",
        {"preferences": [{"category": "marketing", "channel": "push", "enabled": False}]},
        key=app,
    )
    assert switched.status_code == 200
    consent = call(
        "post",
        "/api/v1/recipients/app-1/consent",
        {"channel": "push", "granted": True, "source": "app_onboarding", "wording": "Offers"},
        key=app,
        REMOTE_ADDR="198.51.100.7",
    )
    assert consent.status_code == 200
    assert Consent.objects.get().ip_address == "198.51.100.7"


@pytest.mark.parametrize(
    ("method", "url", "body"),
    [
        ("get", "/api/v1/recipients/app-2/preferences", None),  # somebody else's
        ("post", "/api/v1/recipients/app-2/devices", {"platform": "ios", "token": "x"}),
        ("put", "/api/v1/recipients/app-1", {"phone": "+14155550123"}),  # contact points
        ("post", "/api/v1/notify", {"recipient": "app-1", "type": "order.shipped"}),
        ("post", "/api/v1/recipients/app-1/app-token", None),
        # Its own profile and messages too: segment data and content stay with the backend.
        ("get", "/api/v1/recipients/app-1", None),
        ("get", "/api/v1/recipients/app-1/messages", None),
        ("get", "/api/v1/recipients/app-1/export", None),
        ("delete", "/api/v1/recipients/app-1", None),
    ],
)
def test_an_app_token_can_do_nothing_else_and_nothing_for_anyone_else(method, url, body):
    call("put", "/api/v1/recipients/app-1", {})
    call("put", "/api/v1/recipients/app-2", {})
    app = app_token("app-1")
    response = call(method, url, body, key=app)
    assert response.status_code == 403, response.json()
    assert not Device.objects.exists()
    assert not Message.objects.exists()
    assert Recipient.objects.get(external_id="app-1").phone == ""


def test_an_app_token_that_is_forged_expired_or_whose_recipient_is_gone_is_refused(settings):
    call("put", "/api/v1/recipients/app-3", {})
    app = app_token("app-3")
    url = "/api/v1/recipients/app-3/preferences"
    assert call("get", url, key=app).status_code == 200
    forged = app[:-3] + ("aaa" if not app.endswith("aaa") else "bbb")
    assert call("get", url, key=forged).status_code == 401
    settings.NOTIFIER_APP_TOKEN_MAX_AGE_S = -1
    expired = call("get", url, key=app)
    assert expired.status_code == 401
    assert "expired" in expired.json()["message"]
    settings.NOTIFIER_APP_TOKEN_MAX_AGE_S = 3600
    Recipient.objects.filter(external_id="app-3").update(external_id="someone-else")
    assert call("get", "/api/v1/recipients/someone-else/preferences", key=app).status_code == 401


# --- Erasure and export -----------------------------------------------------------------------


def test_export_then_erase_over_the_api_and_the_person_does_not_come_back():
    call("put", "/api/v1/recipients/gone-1", {"email": "gone@example.com", "phone": "+14155550199"})
    call("post", "/api/v1/recipients/gone-1/devices", {"platform": "android", "token": "tok-gone"})
    call(
        "post",
        "/api/v1/notify",
        {"recipient": "gone-1", "type": "order.shipped", "context": order_context()},
    )
    exported = call("get", "/api/v1/recipients/gone-1/export")
    assert exported.status_code == 200
    assert "gone@example.com" in json.dumps(exported.json())
    assert call("get", "/api/v1/recipients/gone-1/export", key=token("read")).status_code == 403

    erased = call("delete", "/api/v1/recipients/gone-1?reason=ticket-1234")
    assert erased.status_code == 200, erased.json()
    assert erased.json()["erased"] is True and erased.json()["already"] is False
    assert erased.json()["rows"] > 0
    assert not Recipient.objects.filter(email="gone@example.com").exists()
    assert not Device.objects.filter(token="tok-gone").exists()
    assert Message.objects.get().context == {}

    again = call("delete", "/api/v1/recipients/gone-1")
    assert again.status_code == 200 and again.json()["already"] is True
    back = call("put", "/api/v1/recipients/gone-1", {"locale": "en"})
    assert back.status_code == 422
    assert back.json()["type"] == "RecipientErased"
    assert call("get", "/api/v1/recipients/gone-1").status_code == 404


def test_a_bulk_call_refused_for_a_reused_key_takes_back_what_it_made():
    first, second = UserFactory(), UserFactory()
    body = {"users": [first.pk], "type": "order.shipped", "context": order_context()}
    headers = {"HTTP_IDEMPOTENCY_KEY": "bulk-1"}
    assert call("post", "/api/v1/notify/bulk", body, **headers).status_code == 202
    changed = {**body, "users": [second.pk, first.pk], "context": order_context(eta="Friday")}
    refused = call("post", "/api/v1/notify/bulk", changed, **headers)
    assert refused.status_code == 409
    # The second user's message, written before the first's was compared, is gone again.
    assert not Message.objects.filter(user=second).exists()
    assert Message.objects.count() == 1


@pytest.mark.parametrize("body", ["[]", "[1]", '"x"', "3", "null", '[{"email": "a@b.cc"}]'])
def test_a_body_that_is_not_a_json_object_is_refused_everywhere(body):
    key = token()
    for method, url in [
        ("put", "/api/v1/recipients/arr-1"),
        ("patch", "/api/v1/recipients/arr-1/preferences"),
        ("post", "/api/v1/notify"),
    ]:
        response = getattr(Client(), method)(
            url, data=body, content_type="application/json", HTTP_AUTHORIZATION=f"Bearer {key}"
        )
        assert response.status_code == 400, (method, url, response.content)
        assert "must be a JSON object" in response.json()["message"]
    assert not Recipient.objects.filter(external_id="arr-1").exists()
