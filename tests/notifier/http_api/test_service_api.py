"""The service API (`/api/v1/`) through Django's test client: API keys (made, scoped, revoked,
rate-limited), notify and notify in bulk with the same typed errors as notify(), the
Idempotency-Key, reading a message, and an OpenAPI document that lists every route."""

from __future__ import annotations

import json
import logging
from typing import Any

import pytest
from django.test import Client
from django.urls import URLPattern, URLResolver, reverse
from django.utils import timezone

from notifier.http_api.api import api
from notifier.models import ApiKey, Delivery, Message
from notifier.services.api_keys import api_key_create, api_key_revoke
from notifier.status import DeliveryStatus, Reason
from tests.factories import UserFactory, order_context

pytestmark = pytest.mark.django_db

NOTIFY = "/api/v1/notify"
BULK = "/api/v1/notify/bulk"


def token(*scopes: str, rate_limit: str = "") -> str:
    return api_key_create(
        name="checkout service", scopes=scopes or ["notify"], rate_limit=rate_limit
    ).token


def post(url: str, body: object, key: str | None, **headers: str) -> Any:
    extra = {f"HTTP_{name.upper().replace('-', '_')}": value for name, value in headers.items()}
    if key is not None:
        extra["HTTP_AUTHORIZATION"] = f"Bearer {key}"
    data = body if isinstance(body, (str, bytes)) else json.dumps(body)
    return Client().post(url, data=data, content_type="application/json", **extra)


def shipped(user_id: object, **changes: object) -> dict[str, object]:
    return {"user": user_id, "type": "order.shipped", "context": order_context(), **changes}


# --- Keys -------------------------------------------------------------------------------------


def test_without_a_key_the_answer_says_how_to_send_one():
    response = post(NOTIFY, shipped(UserFactory().pk), None)
    assert response.status_code == 401
    assert response.json()["type"] == "Unauthorized"
    assert "Authorization: Bearer" in response.json()["message"]
    assert response["WWW-Authenticate"] == "Bearer"
    assert not Message.objects.exists()


@pytest.mark.parametrize(
    "bad",
    ["ntf_", "ntf_abcdefghijkl_" + "x" * 43, "not-a-key", "ntf_" + "a" * 500],
)
def test_a_malformed_or_unknown_key_is_refused(bad):
    token("notify")
    response = post(NOTIFY, shipped(UserFactory().pk), bad)
    assert response.status_code == 401
    assert not Message.objects.exists()


def test_a_key_with_a_wrong_secret_is_refused():
    real = token("notify")
    forged = real[:-4] + ("AAAA" if not real.endswith("AAAA") else "BBBB")
    assert post(NOTIFY, shipped(UserFactory().pk), forged).status_code == 401


def test_a_revoked_key_is_refused_at_its_next_request():
    made = api_key_create(name="old app", scopes=["notify"])
    user = UserFactory()
    assert post(NOTIFY, shipped(user.pk), made.token).status_code == 202
    api_key_revoke(key=made.key)
    response = post(NOTIFY, shipped(user.pk, context=order_context(order_number="B2")), made.token)
    assert response.status_code == 401
    assert Message.objects.count() == 1


def test_a_key_without_the_scope_is_forbidden():
    response = post(NOTIFY, shipped(UserFactory().pk), token("read"))
    assert response.status_code == 403
    assert "'notify' scope" in response.json()["message"]
    assert not Message.objects.exists()


def test_only_a_hash_of_the_key_is_kept_and_its_use_is_recorded():
    made = api_key_create(name="app", scopes=["notify"])
    stored = ApiKey.objects.get(pk=made.key.pk)
    assert made.token not in json.dumps(
        {f.name: str(getattr(stored, f.name)) for f in ApiKey._meta.concrete_fields}
    )
    assert stored.last_used_at is None
    post(NOTIFY, shipped(UserFactory().pk), made.token)
    assert ApiKey.objects.get(pk=made.key.pk).last_used_at is not None


def test_a_key_over_its_rate_limit_gets_429_with_retry_after():
    key = token("notify", rate_limit="2/m")
    user = UserFactory()
    codes = [
        post(NOTIFY, shipped(user.pk, context=order_context(order_number=f"N{n}")), key)
        for n in range(3)
    ]
    assert [c.status_code for c in codes] == [202, 202, 429]
    assert int(codes[2]["Retry-After"]) >= 1
    assert codes[2].json()["type"] == "TooManyRequests"
    assert Message.objects.count() == 2


def test_the_key_never_reaches_a_log_line(caplog):
    key = token("notify")
    with caplog.at_level(logging.DEBUG):
        post(NOTIFY, {"user": "x"}, key)
        post(NOTIFY, shipped(UserFactory().pk), key + "tampered")
    assert key not in caplog.text
    assert key.split("_", 2)[2] not in caplog.text  # the secret, alone


# --- Notify -----------------------------------------------------------------------------------


def test_notify_over_http_writes_the_message_notify_would():
    user = UserFactory()
    response = post(NOTIFY, shipped(user.pk, channels=["inapp", "email"]), token("notify"))
    assert response.status_code == 202, response.content
    message = Message.objects.get(pk=response.json()["message"])
    assert (message.user_id, message.type_id) == (user.pk, "order.shipped")
    assert message.context == order_context()
    assert message.channels == ["inapp", "email"]


BAD_BODIES = {
    "an unknown type": (lambda pk: {"user": pk, "type": "no.such"}, "UnknownNotificationType"),
    "a user who is not there": (lambda pk: shipped(10**9), "InvalidRecipient"),
    "a context short of a variable": (
        lambda pk: {"user": pk, "type": "order.shipped", "context": {"carrier": "SF"}},
        "MissingContextVariable",
    ),
    "a context that is a list": (
        lambda pk: {"user": pk, "type": "order.shipped", "context": [1]},
        "InvalidRequest",
    ),
    "a user that is a bool": (lambda pk: shipped(True), "InvalidRequest"),
    "a user that is a float": (lambda pk: shipped(1.0), "InvalidRequest"),
    "a channel the type does not have": (
        lambda pk: shipped(pk, channels=["pigeon"]),
        "ChannelNotAllowed",
    ),
    "an expiry in the past": (
        lambda pk: shipped(pk, expires_at="2001-01-01T00:00:00Z"),
        "InvalidExpiry",
    ),
}


@pytest.mark.parametrize("case", list(BAD_BODIES))
def test_bad_input_gets_a_422_naming_the_error_and_writes_nothing(case):
    make, error = BAD_BODIES[case]
    response = post(NOTIFY, make(UserFactory().pk), token("notify"))
    assert response.status_code == 422, response.content
    problem = response.json()
    assert set(problem) == {"type", "message"} and problem["message"]
    assert problem["type"] == error, problem
    assert not Message.objects.exists()


def test_a_body_that_is_not_json_is_a_4xx_in_json():
    response = post(NOTIFY, "{not json", token("notify"))
    assert 400 <= response.status_code < 500
    assert response.json()
    assert not Message.objects.exists()


def test_a_text_user_id_is_not_read_as_the_integer_id():
    user = UserFactory()
    response = post(NOTIFY, shipped(str(user.pk)), token("notify"))
    assert response.status_code == 422
    assert response.json()["type"] == "InvalidRecipient"
    assert not Message.objects.exists()


def test_the_same_idempotency_key_and_body_give_the_same_message():
    key, user = token("notify"), UserFactory()
    first = post(NOTIFY, shipped(user.pk), key, **{"Idempotency-Key": "ship-A1001"})
    again = post(NOTIFY, shipped(user.pk), key, **{"Idempotency-Key": "ship-A1001"})
    assert first.status_code == again.status_code == 202
    assert first.json() == again.json()
    assert Message.objects.count() == 1


def test_the_same_idempotency_key_with_another_body_is_a_conflict():
    key, user = token("notify"), UserFactory()
    post(NOTIFY, shipped(user.pk), key, **{"Idempotency-Key": "ship-A1001"})
    other = shipped(user.pk, context=order_context(eta="Friday"))
    response = post(NOTIFY, other, key, **{"Idempotency-Key": "ship-A1001"})
    assert response.status_code == 409
    assert response.json()["type"] == "IdempotencyKeyReused"
    assert Message.objects.count() == 1
    assert Message.objects.get().context["eta"] == "Tuesday"
    another_user = post(NOTIFY, shipped(UserFactory().pk), key, **{"Idempotency-Key": "ship-A1001"})
    assert another_user.status_code == 409


# --- Bulk -------------------------------------------------------------------------------------


def test_bulk_notifies_everyone_with_their_own_values():
    users = UserFactory.create_batch(3)
    body = {
        "users": [u.pk for u in users],
        "type": "order.shipped",
        "context": order_context(),
        "contexts": {str(users[1].pk): {"eta": "Friday"}},
    }
    response = post(BULK, body, token("notify"))
    assert response.status_code == 202, response.content
    ids = response.json()["messages"]
    assert response.json()["created"] == 3
    etas = [Message.objects.get(pk=pk).context["eta"] for pk in ids]
    assert etas == ["Tuesday", "Friday", "Tuesday"]


def test_bulk_over_the_maximum_is_refused_whole(settings):
    settings.NOTIFIER_API_BULK_MAX = 2
    users = UserFactory.create_batch(3)
    body = {"users": [u.pk for u in users], "type": "order.shipped", "context": order_context()}
    response = post(BULK, body, token("notify"))
    assert response.status_code == 422
    assert "at most 2" in response.json()["message"]
    assert not Message.objects.exists()


def test_bulk_with_one_bad_user_writes_nobody():
    users = UserFactory.create_batch(2)
    body = {
        "users": [users[0].pk, 10**9, users[1].pk],
        "type": "order.shipped",
        "context": order_context(),
    }
    response = post(BULK, body, token("notify"))
    assert response.status_code == 422
    assert response.json()["type"] == "InvalidRecipient"
    assert not Message.objects.exists()


def test_bulk_repeated_with_its_key_writes_nothing_twice():
    key, users = token("notify"), UserFactory.create_batch(2)
    body = {"users": [u.pk for u in users], "type": "order.shipped", "context": order_context()}
    first = post(BULK, body, key, **{"Idempotency-Key": "sale-1"})
    again = post(BULK, body, key, **{"Idempotency-Key": "sale-1"})
    assert first.json()["messages"] == again.json()["messages"]
    assert again.json()["created"] == 0
    changed = {**body, "context": order_context(eta="Friday")}
    assert post(BULK, changed, key, **{"Idempotency-Key": "sale-1"}).status_code == 409
    assert Message.objects.count() == 2


# --- Reading ----------------------------------------------------------------------------------


def test_a_message_reads_with_each_deliverys_status_and_reason_in_words():
    user = UserFactory()
    message_id = post(NOTIFY, shipped(user.pk), token("notify")).json()["message"]
    Delivery.objects.create(
        message_id=message_id,
        user=user,
        channel="sms",
        status=DeliveryStatus.SUPPRESSED,
        reason=Reason.NO_PHONE_NUMBER,
        created_at=timezone.now(),
        updated_at=timezone.now(),
    )
    response = Client().get(
        f"/api/v1/messages/{message_id}", HTTP_AUTHORIZATION=f"Bearer {token('read')}"
    )
    assert response.status_code == 200, response.content
    body = response.json()
    assert (body["id"], body["user"], body["type"]) == (message_id, user.pk, "order.shipped")
    [sms] = body["deliveries"]
    assert (sms["status"], sms["reason"]) == ("suppressed", str(Reason.NO_PHONE_NUMBER.label))


def test_reading_a_missing_message_is_a_404_in_json():
    response = Client().get("/api/v1/messages/999999", HTTP_AUTHORIZATION=f"Bearer {token('read')}")
    assert response.status_code == 404
    assert response.json()["type"] == "NotFound"


# --- The schema -------------------------------------------------------------------------------


def _routes(patterns: list[Any], prefix: str = "") -> set[str]:
    found = set()
    for pattern in patterns:
        if isinstance(pattern, URLResolver):
            found |= _routes(pattern.url_patterns, prefix + str(pattern.pattern))
        elif isinstance(pattern, URLPattern):
            found.add(prefix + str(pattern.pattern))
    return found


def test_every_route_of_the_api_is_in_its_openapi_document():
    schema = Client().get("/api/v1/openapi.json").json()
    assert schema["openapi"].startswith("3.")
    root = reverse("notifier:api-v1:api-root")  # where the app's URLconf mounts the API
    documented = {path.removeprefix(root).strip("/") for path in schema["paths"]}
    patterns, _, _ = api.urls
    served = {
        route.replace("<int:", "{").replace("<", "{").replace(">", "}").strip("/")
        for route in _routes(list(patterns))
    }
    served -= {"", "openapi.json", "docs"}  # the document itself and its page
    missing = {route for route in served if route not in documented}
    assert not missing, f"routes missing from the OpenAPI document: {sorted(missing)}"
    assert {"notify", "notify/bulk", "messages/{message_id}"} <= documented
    assert schema["components"]["securitySchemes"]


# --- The admin --------------------------------------------------------------------------------


def test_an_admin_creates_a_key_sees_it_once_and_revokes_it(admin_client):
    page = admin_client.post(
        "/admin/notifier/apikey/add/",
        {"name": "mobile app", "scopes": ["notify", "read"], "rate_limit": "100/s"},
    )
    assert page.status_code == 200, page.content
    assert "no-store" in page["Cache-Control"]
    shown = page.content.decode()
    [made] = ApiKey.objects.all()
    token_shown = shown.split('id="api-key"', 1)[1].split('value="', 1)[1].split('"', 1)[0]
    assert token_shown.startswith(f"ntf_{made.prefix}_")
    assert (made.name, made.scopes, made.rate_limit) == ("mobile app", ["notify", "read"], "100/s")
    assert post(NOTIFY, shipped(UserFactory().pk), token_shown).status_code == 202
    # Never again: not on the list, not on the key's page.
    secret = token_shown.split("_", 2)[2]
    for url in ("/admin/notifier/apikey/", f"/admin/notifier/apikey/{made.pk}/change/"):
        assert secret not in admin_client.get(url).content.decode()
    admin_client.post(
        "/admin/notifier/apikey/",
        {"action": "revoke", "_selected_action": [made.pk]},
    )
    assert ApiKey.objects.get().revoked_at is not None
    assert post(NOTIFY, shipped(UserFactory().pk), token_shown).status_code == 401


def test_the_admin_refuses_a_key_without_scopes_or_with_a_bad_rate(admin_client):
    for form in (
        {"name": "x", "scopes": [], "rate_limit": ""},
        {"name": "x", "scopes": ["notify"], "rate_limit": "lots"},
    ):
        page = admin_client.post("/admin/notifier/apikey/add/", form)
        assert page.status_code == 200
        assert "errornote" in page.content.decode()
    assert not ApiKey.objects.exists()
