"""FcmWebPushProvider against faked FCM v1 and Web Push endpoints (the `responses` library).

firebase-admin 6.9's send_each posts one request per message to the FCM v1 `messages:send`
endpoint through `requests` (an AuthorizedSession, in a thread pool), after fetching an OAuth
token from the service account's token_uri; pywebpush posts through `requests` as well.
"""

from __future__ import annotations

import base64
import json
import os
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import firebase_admin
import http_ece
import pytest
import requests
import responses
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa

from channels.base import Channel, Content, ErrorCode, Outcome, Outgoing, PushTarget
from channels.push import FcmWebPushProvider, firebase_app

PROJECT = "notifier-test-project"
TOKEN_URL = "https://oauth2.googleapis.com/token"
FCM_URL = f"https://fcm.googleapis.com/v1/projects/{PROJECT}/messages:send"
ACCESS_TOKEN = "ya29.test-access-token"
WEB_ORIGIN = "https://push.example.net"
VAPID_SUBJECT = "mailto:ops@example.com"

CONTENT = Content(
    title="Order shipped", body="A1001 is on its way", link="https://example.com/orders/A1001"
)


def b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def b64url_decode(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


def outgoing(*devices: PushTarget, delivery_id: int = 1) -> Outgoing:
    return Outgoing(
        delivery_id=delivery_id,
        message_id=10 + delivery_id,
        user_id=4,
        channel=Channel.PUSH,
        type_key="order.shipped",
        content=CONTENT,
        attempt=1,
        devices=devices,
    )


def android(device_id: int, token: str | None = None) -> PushTarget:
    return PushTarget(device_id=device_id, platform="android", token=token or f"fcm-{device_id}")


# --- FCM --------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def rsa_private_key_pem() -> str:
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    return key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    ).decode()


@pytest.fixture
def api() -> Iterator[responses.RequestsMock]:
    # Unregistered URLs raise ConnectionError; tests assert which endpoints were called.
    with responses.RequestsMock(assert_all_requests_are_fired=False) as mock:
        yield mock


def fcm_error(status: int, grpc_status: str, fcm_code: str | None = None) -> dict[str, Any]:
    error: dict[str, Any] = {
        "code": status,
        "message": f"{grpc_status} from FCM",
        "status": grpc_status,
    }
    if fcm_code:
        error["details"] = [
            {"@type": "type.googleapis.com/google.firebase.fcm.v1.FcmError", "errorCode": fcm_code}
        ]
    return {"error": error}


UNREGISTERED = (404, fcm_error(404, "NOT_FOUND", "UNREGISTERED"))
UNAVAILABLE = (503, fcm_error(503, "UNAVAILABLE"))
QUOTA_EXCEEDED = (429, fcm_error(429, "RESOURCE_EXHAUSTED", "QUOTA_EXCEEDED"))
INVALID_ARGUMENT = (400, fcm_error(400, "INVALID_ARGUMENT", "INVALID_ARGUMENT"))


@dataclass
class FakeFcm:
    """The FCM v1 send endpoint: replies per registration token, success by default."""

    api: responses.RequestsMock
    replies: dict[str, tuple[int, dict[str, Any]]] = field(default_factory=dict)
    received: list[dict[str, Any]] = field(default_factory=list)
    authorizations: list[str] = field(default_factory=list)

    def reply(self, request: Any) -> tuple[int, dict[str, str], str]:
        body = json.loads(request.body)
        self.received.append(body)
        self.authorizations.append(request.headers.get("Authorization", ""))
        token = body["message"]["token"]
        status, payload = self.replies.get(
            token, (200, {"name": f"projects/{PROJECT}/messages/0:{token}"})
        )
        return status, {"Content-Type": "application/json"}, json.dumps(payload)

    def tokens_sent(self) -> list[str]:
        return [body["message"]["token"] for body in self.received]


@pytest.fixture
def fcm(settings, tmp_path, rsa_private_key_pem, api) -> Iterator[FakeFcm]:
    path = tmp_path / "service-account.json"
    path.write_text(
        json.dumps(
            {
                "type": "service_account",
                "project_id": PROJECT,
                "private_key_id": "0123456789abcdef",
                "private_key": rsa_private_key_pem,
                "client_email": f"notifier@{PROJECT}.iam.gserviceaccount.com",
                "client_id": "123456789012345678901",
                "token_uri": TOKEN_URL,
            }
        )
    )
    settings.NOTIFIER_FCM_CREDENTIALS_FILE = str(path)
    settings.NOTIFIER_WEBPUSH_VAPID_PRIVATE_KEY = ""
    api.post(
        TOKEN_URL, json={"access_token": ACCESS_TOKEN, "expires_in": 3600, "token_type": "Bearer"}
    )
    fake = FakeFcm(api)
    api.add_callback(responses.POST, FCM_URL, callback=fake.reply)
    firebase_app.cache_clear()
    try:
        yield fake
    finally:
        firebase_app.cache_clear()
        try:
            app = firebase_admin.get_app("notifier")
        except ValueError:
            pass
        else:
            firebase_admin.delete_app(app)


def test_fcm_success_returns_the_message_name(fcm):
    [result] = FcmWebPushProvider().send_many([outgoing(android(1, "tok-a"))])

    assert result.outcome is Outcome.SENT
    assert result.provider == "push"
    assert result.provider_message_id == f"projects/{PROJECT}/messages/0:tok-a"
    assert result.deactivate_device_ids == ()
    assert result.detail["devices"] == [
        {"device_id": 1, "platform": "android", "outcome": "sent", "error": ""}
    ]


def test_fcm_request_carries_token_notification_data_and_oauth_token(fcm, api):
    FcmWebPushProvider().send_many([outgoing(android(1, "tok-a"), delivery_id=77)])

    [body] = fcm.received
    assert body["message"]["token"] == "tok-a"
    assert body["message"]["notification"] == {
        "title": "Order shipped",
        "body": "A1001 is on its way",
    }
    assert body["message"]["data"] == {
        "delivery_id": "77",
        "link": "https://example.com/orders/A1001",
    }
    assert "validate_only" not in body
    assert fcm.authorizations == [f"Bearer {ACCESS_TOKEN}"]
    token_calls = [c for c in api.calls if c.request.url == TOKEN_URL]
    assert token_calls
    assert "grant_type=urn" in str(token_calls[0].request.body)


def test_fcm_unregistered_is_permanent_and_deactivates_the_device(fcm):
    fcm.replies["dead-token"] = UNREGISTERED

    [result] = FcmWebPushProvider().send_many([outgoing(android(3, "dead-token"))])

    assert result.outcome is Outcome.PERMANENT
    assert result.error_code is ErrorCode.DEVICE_UNREGISTERED
    assert result.deactivate_device_ids == (3,)
    assert "UnregisteredError" in result.error


def test_fcm_unavailable_503_is_transient(fcm):
    fcm.replies["tok-a"] = UNAVAILABLE

    [result] = FcmWebPushProvider().send_many([outgoing(android(1, "tok-a"))])

    assert result.outcome is Outcome.TRANSIENT
    assert result.error_code is ErrorCode.PROVIDER_UNAVAILABLE
    assert result.deactivate_device_ids == ()
    # firebase-admin's own urllib3 policy retries 503 four times (`responses` skips the sleeps).
    assert fcm.tokens_sent() == ["tok-a"] * 5


def test_fcm_quota_exceeded_429_is_transient_rate_limited(fcm):
    fcm.replies["tok-a"] = QUOTA_EXCEEDED

    [result] = FcmWebPushProvider().send_many([outgoing(android(1, "tok-a"))])

    assert result.outcome is Outcome.TRANSIENT
    assert result.error_code is ErrorCode.RATE_LIMITED


def test_fcm_invalid_argument_is_a_permanent_rejection(fcm):
    fcm.replies["tok-a"] = INVALID_ARGUMENT

    [result] = FcmWebPushProvider().send_many([outgoing(android(1, "tok-a"))])

    assert result.outcome is Outcome.PERMANENT
    assert result.error_code is ErrorCode.REJECTED
    assert result.deactivate_device_ids == ()


def test_fcm_results_map_back_to_their_outgoing_and_device(fcm):
    fcm.replies["dead"] = UNREGISTERED
    fcm.replies["busy"] = UNAVAILABLE
    ios = PushTarget(device_id=12, platform="ios", token="ios-ok")

    first, second, third = FcmWebPushProvider().send_many(
        [
            outgoing(android(11, "dead"), ios, delivery_id=1),
            outgoing(android(21, "busy"), delivery_id=2),
            outgoing(android(31, "fine"), delivery_id=3),
        ]
    )

    assert (first.outcome, first.provider_message_id, first.deactivate_device_ids) == (
        Outcome.SENT,
        f"projects/{PROJECT}/messages/0:ios-ok",
        (11,),
    )
    assert (second.outcome, second.error_code) == (
        Outcome.TRANSIENT,
        ErrorCode.PROVIDER_UNAVAILABLE,
    )
    assert third.provider_message_id == f"projects/{PROJECT}/messages/0:fine"
    assert {"dead", "busy", "ios-ok", "fine"} == set(fcm.tokens_sent())


def test_fcm_auth_failure_fails_every_device_of_the_batch(fcm, api):
    api.replace(
        responses.POST,
        TOKEN_URL,
        status=400,
        json={"error": "invalid_grant", "error_description": "Invalid JWT Signature."},
    )

    results = FcmWebPushProvider().send_many(
        [outgoing(android(1), delivery_id=1), outgoing(android(2), delivery_id=2)]
    )

    assert [r.outcome for r in results] == [Outcome.TRANSIENT, Outcome.TRANSIENT]
    assert fcm.received == []


def test_fcm_without_credentials_is_not_configured_and_sends_nothing(settings, api):
    settings.NOTIFIER_FCM_CREDENTIALS_FILE = ""

    [result] = FcmWebPushProvider().send_many([outgoing(android(1))])

    assert result.outcome is Outcome.PERMANENT
    assert result.error_code is ErrorCode.NOT_CONFIGURED
    assert len(api.calls) == 0


# --- Web Push ---------------------------------------------------------------------------------


@dataclass
class WebSubscription:
    target: PushTarget
    private_key: ec.EllipticCurvePrivateKey
    auth_secret: bytes


def web_subscription(device_id: int) -> WebSubscription:
    key = ec.generate_private_key(ec.SECP256R1())
    public = key.public_key().public_bytes(
        serialization.Encoding.X962, serialization.PublicFormat.UncompressedPoint
    )
    auth_secret = os.urandom(16)
    target = PushTarget(
        device_id=device_id,
        platform="web",
        token=f"{WEB_ORIGIN}/wpush/v2/sub-{device_id}",
        web_push_keys={"p256dh": b64url(public), "auth": b64url(auth_secret)},
    )
    return WebSubscription(target, key, auth_secret)


@pytest.fixture(scope="module")
def vapid_key() -> ec.EllipticCurvePrivateKey:
    return ec.generate_private_key(ec.SECP256R1())


@pytest.fixture
def webpush(settings, vapid_key) -> None:
    settings.NOTIFIER_WEBPUSH_VAPID_PRIVATE_KEY = b64url(
        vapid_key.private_numbers().private_value.to_bytes(32, "big")
    )
    settings.NOTIFIER_WEBPUSH_VAPID_SUBJECT = VAPID_SUBJECT
    settings.NOTIFIER_FCM_CREDENTIALS_FILE = ""


@pytest.mark.usefixtures("webpush")
def test_web_push_201_is_sent_with_the_location_as_message_id(api):
    sub = web_subscription(5)
    api.post(sub.target.token, status=201, headers={"Location": f"{WEB_ORIGIN}/m/msg-123"})

    [result] = FcmWebPushProvider().send_many([outgoing(sub.target, delivery_id=9)])

    assert result.outcome is Outcome.SENT
    assert result.provider_message_id == f"{WEB_ORIGIN}/m/msg-123"
    assert result.deactivate_device_ids == ()


@pytest.mark.usefixtures("webpush")
def test_web_push_payload_is_encrypted_for_the_subscription_and_vapid_signed(api, vapid_key):
    sub = web_subscription(5)
    api.post(sub.target.token, status=201)

    FcmWebPushProvider().send_many([outgoing(sub.target, delivery_id=9)])

    [call] = api.calls
    request = call.request
    assert request.headers["Content-Encoding"] == "aes128gcm"
    assert "TTL" in request.headers
    plaintext = http_ece.decrypt(
        request.body, private_key=sub.private_key, auth_secret=sub.auth_secret, version="aes128gcm"
    )
    assert json.loads(plaintext) == {
        "title": "Order shipped",
        "body": "A1001 is on its way",
        "link": "https://example.com/orders/A1001",
        "delivery_id": 9,
    }
    scheme, _, params = request.headers["Authorization"].partition(" ")
    assert scheme == "vapid"
    fields = dict(part.strip().split("=", 1) for part in params.split(","))
    public = vapid_key.public_key().public_bytes(
        serialization.Encoding.X962, serialization.PublicFormat.UncompressedPoint
    )
    assert fields["k"] == b64url(public)
    claims = json.loads(b64url_decode(fields["t"].split(".")[1]))
    assert claims["aud"] == WEB_ORIGIN
    assert claims["sub"] == VAPID_SUBJECT


@pytest.mark.usefixtures("webpush")
@pytest.mark.parametrize(
    "endpoint",
    [
        "https://169.254.169.254/latest/meta-data/",  # a cloud's metadata service
        "https://10.0.0.5/internal",
        "https://push.example.net.evil.test/x",
        "http://push.example.net/plain-http",
    ],
)
def test_a_web_push_endpoint_off_the_known_push_services_is_never_posted_to(api, endpoint):
    """An endpoint is a URL the worker POSTs to: one registered before the allow-list, or
    written into the table by hand, must not make it call an internal address."""
    sub = web_subscription(8)
    target = PushTarget(
        device_id=8, platform="web", token=endpoint, web_push_keys=sub.target.web_push_keys
    )

    [result] = FcmWebPushProvider().send_many([outgoing(target)])

    assert len(api.calls) == 0
    assert result.outcome is Outcome.PERMANENT
    assert result.deactivate_device_ids == (8,)
    assert "NOTIFIER_WEBPUSH_ENDPOINT_HOSTS" in result.error


@pytest.mark.usefixtures("webpush")
@pytest.mark.parametrize("status", [404, 410])
def test_web_push_gone_is_permanent_and_deactivates_the_device(api, status):
    sub = web_subscription(6)
    api.post(sub.target.token, status=status, body="subscription expired")

    [result] = FcmWebPushProvider().send_many([outgoing(sub.target)])

    assert result.outcome is Outcome.PERMANENT
    assert result.error_code is ErrorCode.DEVICE_UNREGISTERED
    assert result.deactivate_device_ids == (6,)
    assert f"web push {status}" in result.error


@pytest.mark.usefixtures("webpush")
@pytest.mark.parametrize(
    ("status", "code"),
    [
        (429, ErrorCode.RATE_LIMITED),
        (500, ErrorCode.PROVIDER_UNAVAILABLE),
        (503, ErrorCode.PROVIDER_UNAVAILABLE),
    ],
)
def test_web_push_429_and_5xx_are_transient(api, status, code):
    sub = web_subscription(7)
    api.post(sub.target.token, status=status)

    [result] = FcmWebPushProvider().send_many([outgoing(sub.target)])

    assert result.outcome is Outcome.TRANSIENT
    assert result.error_code is code
    assert result.deactivate_device_ids == ()


@pytest.mark.usefixtures("webpush")
@pytest.mark.parametrize("status", [400, 403, 413])
def test_web_push_other_4xx_are_permanent_rejections(api, status):
    sub = web_subscription(7)
    api.post(sub.target.token, status=status)

    [result] = FcmWebPushProvider().send_many([outgoing(sub.target)])

    assert result.outcome is Outcome.PERMANENT
    assert result.error_code is ErrorCode.REJECTED
    assert result.deactivate_device_ids == ()


@pytest.mark.usefixtures("webpush")
@pytest.mark.parametrize(
    ("exc", "code"),
    [
        (requests.ConnectionError("Connection refused"), ErrorCode.CONNECTION),
        (requests.ReadTimeout("read timed out"), ErrorCode.TIMEOUT),
    ],
)
def test_web_push_network_failures_are_transient(api, exc, code):
    sub = web_subscription(8)
    api.post(sub.target.token, body=exc)

    [result] = FcmWebPushProvider().send_many([outgoing(sub.target)])

    assert result.outcome is Outcome.TRANSIENT
    assert result.error_code is code


def test_web_push_without_a_vapid_key_is_not_configured(settings, api):
    settings.NOTIFIER_WEBPUSH_VAPID_PRIVATE_KEY = ""

    [result] = FcmWebPushProvider().send_many([outgoing(web_subscription(1).target)])

    assert result.outcome is Outcome.PERMANENT
    assert result.error_code is ErrorCode.NOT_CONFIGURED
    assert len(api.calls) == 0


# --- devices of several kinds -----------------------------------------------------------------


@pytest.fixture
def fcm_and_webpush(fcm, settings, vapid_key) -> FakeFcm:
    settings.NOTIFIER_WEBPUSH_VAPID_PRIVATE_KEY = b64url(
        vapid_key.private_numbers().private_value.to_bytes(32, "big")
    )
    settings.NOTIFIER_WEBPUSH_VAPID_SUBJECT = VAPID_SUBJECT
    return fcm


def test_one_fcm_success_and_one_dead_web_device_is_sent_and_deactivates_it(fcm_and_webpush, api):
    web = web_subscription(2)
    api.post(web.target.token, status=410)

    [result] = FcmWebPushProvider().send_many([outgoing(android(1, "tok-a"), web.target)])

    assert result.outcome is Outcome.SENT
    assert result.provider_message_id == f"projects/{PROJECT}/messages/0:tok-a"
    assert result.deactivate_device_ids == (2,)
    assert [(d["device_id"], d["outcome"]) for d in result.detail["devices"]] == [
        (1, "sent"),
        (2, "permanent"),
    ]


def test_every_device_dead_is_permanent_device_unregistered(fcm_and_webpush, api):
    fcm_and_webpush.replies["dead"] = UNREGISTERED
    web = web_subscription(2)
    api.post(web.target.token, status=404)

    [result] = FcmWebPushProvider().send_many([outgoing(android(1, "dead"), web.target)])

    assert result.outcome is Outcome.PERMANENT
    assert result.error_code is ErrorCode.DEVICE_UNREGISTERED
    assert set(result.deactivate_device_ids) == {1, 2}


def test_a_transient_device_makes_the_delivery_retry_but_dead_ones_still_go(fcm_and_webpush, api):
    fcm_and_webpush.replies["busy"] = UNAVAILABLE
    web = web_subscription(2)
    api.post(web.target.token, status=410)

    [result] = FcmWebPushProvider().send_many([outgoing(android(1, "busy"), web.target)])

    assert result.outcome is Outcome.TRANSIENT
    assert result.error_code is ErrorCode.PROVIDER_UNAVAILABLE
    assert result.deactivate_device_ids == (2,)


def test_a_rejected_and_a_dead_device_is_a_permanent_rejection(fcm_and_webpush, api):
    fcm_and_webpush.replies["bad"] = INVALID_ARGUMENT
    web = web_subscription(2)
    api.post(web.target.token, status=410)

    [result] = FcmWebPushProvider().send_many([outgoing(android(1, "bad"), web.target)])

    assert result.outcome is Outcome.PERMANENT
    assert result.error_code is ErrorCode.REJECTED
    assert result.deactivate_device_ids == (2,)


# --- configuration ----------------------------------------------------------------------------


def test_configuration_needs_fcm_or_vapid(settings):
    settings.NOTIFIER_FCM_CREDENTIALS_FILE = ""
    settings.NOTIFIER_WEBPUSH_VAPID_PRIVATE_KEY = ""

    [problem] = FcmWebPushProvider.configuration_problems()

    assert "FCM_CREDENTIALS_FILE" in problem
    assert "WEBPUSH_VAPID_PRIVATE_KEY" in problem


def test_a_vapid_key_needs_a_subject(settings):
    settings.NOTIFIER_FCM_CREDENTIALS_FILE = ""
    settings.NOTIFIER_WEBPUSH_VAPID_PRIVATE_KEY = "key"
    settings.NOTIFIER_WEBPUSH_VAPID_SUBJECT = ""

    assert any("WEBPUSH_VAPID_SUBJECT" in p for p in FcmWebPushProvider.configuration_problems())


def test_fcm_credentials_alone_are_enough(settings):
    settings.NOTIFIER_FCM_CREDENTIALS_FILE = "/etc/notifier/fcm.json"
    settings.NOTIFIER_WEBPUSH_VAPID_PRIVATE_KEY = ""

    assert FcmWebPushProvider.configuration_problems() == []


def test_a_web_push_error_before_any_request_is_permanent_not_retried():
    from pywebpush import WebPushException

    from channels.push import classify_webpush_error

    outcome, code, text = classify_webpush_error(WebPushException("invalid p256dh key"))
    assert (outcome, code) == (Outcome.PERMANENT, ErrorCode.REJECTED)
    assert "invalid p256dh key" in text


# --- One multicast per delivery ----------------------------------------------------------------


def test_fcm_sends_one_multicast_per_outgoing_never_more_than_the_batch(fcm, monkeypatch):
    from firebase_admin import messaging

    from channels import push

    assert push.FCM_BATCH == 500  # FCM's own limit per multicast
    calls: list[list[str]] = []
    real = messaging.send_each_for_multicast

    def spy(multicast: Any, app: Any = None, dry_run: bool = False) -> Any:
        calls.append(list(multicast.tokens))
        return real(multicast, app=app, dry_run=dry_run)

    monkeypatch.setattr(messaging, "send_each_for_multicast", spy)
    monkeypatch.setattr(push, "FCM_BATCH", 3)  # the same split as at 500, on a small scale
    fcm.replies["t3"] = UNREGISTERED
    many = [android(i, f"t{i}") for i in range(1, 8)]

    first, second = FcmWebPushProvider().send_many(
        [outgoing(*many, delivery_id=1), outgoing(android(8, "t8"), delivery_id=2)]
    )

    assert calls == [["t1", "t2", "t3"], ["t4", "t5", "t6"], ["t7"], ["t8"]]
    assert sorted(fcm.tokens_sent()) == sorted(f"t{i}" for i in range(1, 9))
    assert (first.outcome, first.deactivate_device_ids) == (Outcome.SENT, (3,))
    assert [d["outcome"] for d in first.detail["devices"]] == [
        "sent",
        "sent",
        "permanent",
        "sent",
        "sent",
        "sent",
        "sent",
    ]
    assert second.provider_message_id == f"projects/{PROJECT}/messages/0:t8"


# --- Through the pipeline: dead devices are deactivated ----------------------------------------


@pytest.fixture
def push_pipeline(fcm, settings, monkeypatch) -> FakeFcm:
    """notify() -> prepare -> deliver in-process, push through the real provider to fake FCM."""
    from channels.registry import reset_providers
    from notifier import dispatch

    monkeypatch.setattr(dispatch, "publish_prepare", lambda *args, **kwargs: None)
    monkeypatch.setattr(dispatch, "publish_deliver", lambda *args, **kwargs: None)
    settings.NOTIFIER_PROVIDERS = {**settings.NOTIFIER_PROVIDERS, "push": ["push"]}
    reset_providers()
    return fcm


def push_once(user: Any) -> Any:
    from notifier.api import notify
    from notifier.models import Delivery
    from notifier.services.deliveries import deliveries_deliver
    from notifier.services.pipeline import messages_prepare
    from tests.factories import order_context

    message = notify(user, "order.shipped", order_context(), channels=["push"])
    messages_prepare(message_ids=[message.pk])
    delivery = Delivery.objects.get(message=message)
    if delivery.status == "queued":
        deliveries_deliver(delivery_ids=[delivery.pk])
    delivery.refresh_from_db()
    return delivery


@pytest.mark.django_db
def test_an_unregistered_token_is_deactivated_and_the_live_one_still_gets_it(push_pipeline):
    from notifier.models import Device
    from tests.factories import DeviceFactory, UserFactory

    user = UserFactory()
    live = DeviceFactory(user=user, token="live-token")
    dead = DeviceFactory(user=user, token="dead-token")
    push_pipeline.replies["dead-token"] = UNREGISTERED

    delivery = push_once(user)

    assert delivery.status == "sent"
    dead.refresh_from_db()
    live.refresh_from_db()
    assert (dead.active, dead.deactivation_reason) == (False, "provider: token unregistered")
    assert dead.deactivated_at is not None
    assert live.active
    push_pipeline.received.clear()
    push_once(user)
    assert push_pipeline.tokens_sent() == ["live-token"]  # the dead token is never tried again
    assert Device.objects.filter(user=user, active=True).count() == 1


@pytest.mark.django_db
def test_when_every_token_is_dead_the_delivery_fails_and_the_next_is_suppressed(push_pipeline):
    from tests.factories import DeviceFactory, UserFactory

    user = UserFactory()
    DeviceFactory(user=user, token="dead-1")
    DeviceFactory(user=user, token="dead-2")
    push_pipeline.replies.update({"dead-1": UNREGISTERED, "dead-2": UNREGISTERED})

    failed = push_once(user)

    assert (failed.status, failed.reason) == ("failed", "device_unregistered")
    assert not user.devices.filter(active=True).exists()
    push_pipeline.received.clear()
    later = push_once(user)
    assert (later.status, later.reason) == ("suppressed", "no_active_device")
    assert push_pipeline.received == []


@pytest.mark.django_db
@pytest.mark.usefixtures("webpush")
def test_a_gone_web_push_subscription_is_deactivated_through_the_pipeline(
    api, settings, monkeypatch
):
    from channels.registry import reset_providers
    from notifier import dispatch
    from notifier.models import Device
    from tests.factories import UserFactory

    monkeypatch.setattr(dispatch, "publish_prepare", lambda *args, **kwargs: None)
    monkeypatch.setattr(dispatch, "publish_deliver", lambda *args, **kwargs: None)
    settings.NOTIFIER_PROVIDERS = {**settings.NOTIFIER_PROVIDERS, "push": ["push"]}
    reset_providers()
    user = UserFactory()
    sub = web_subscription(0)
    device = Device.objects.create(
        user=user, platform="web", token=sub.target.token, web_push_keys=sub.target.web_push_keys
    )
    api.post(sub.target.token, status=410, body="push subscription has unsubscribed or expired")

    delivery = push_once(user)

    assert (delivery.status, delivery.reason) == ("failed", "device_unregistered")
    device.refresh_from_db()
    assert not device.active
