"""Email tracking end to end through anymail's real Mailgun webhook view.

Sends go through anymail's Mailgun backend with Mailgun's HTTP API faked by `responses`, so the
message id stored on the delivery is the one Mailgun gave; the webhooks are Mailgun's JSON
payloads, signed as Mailgun signs them (HMAC-SHA256 of timestamp + token with the webhook
signing key), posted through Django's test client to /webhooks/anymail/mailgun/tracking/.
"""

from __future__ import annotations

import base64
import datetime as dt
import hashlib
import hmac
import json
import time
import uuid
from collections.abc import Iterator
from typing import Any

import pytest
import responses
import time_machine
from django.test import Client

from channels.registry import reset_providers
from notifier import dispatch
from notifier.api import notify
from notifier.models import (
    Consent,
    Delivery,
    DeliveryEvent,
    EventOutcome,
    Message,
    Preference,
    ProviderEvent,
    SuppressedAddress,
    SuppressionReason,
    Unsubscribe,
)
from notifier.services.deliveries import deliveries_deliver, requeue_stuck_work
from notifier.services.pipeline import messages_prepare
from notifier.services.preferences import consent_give
from notifier.services.release import held_release
from notifier.status import DeliveryStatus, Reason
from tests.factories import UserFactory, order_context

pytestmark = pytest.mark.django_db
S = DeliveryStatus

SIGNING_KEY = "mailgun-webhook-signing-key-for-tests"
DOMAIN = "mg.example.com"
MESSAGES_URL = f"https://api.mailgun.net/v3/{DOMAIN}/messages"
WEBHOOK = "/webhooks/anymail/mailgun/tracking/"
FLASH = {
    "headline": "Everything 20% off",
    "sale_url": "https://shop.example.com/sale",
    "sale_name": "Winter sale",
    "starts_at": "Friday 10:00",
}


@pytest.fixture
def no_broker(monkeypatch) -> None:
    """The pipeline runs in-process here: nothing is published to the broker."""
    monkeypatch.setattr(dispatch, "publish_prepare", lambda *args, **kwargs: None)
    monkeypatch.setattr(dispatch, "publish_deliver", lambda *args, **kwargs: None)


@pytest.fixture
def mailgun(settings, no_broker) -> Iterator[responses.RequestsMock]:
    """Email goes out through anymail's Mailgun backend to a faked Mailgun API."""
    settings.EMAIL_BACKEND = "anymail.backends.mailgun.EmailBackend"
    settings.ANYMAIL = {"MAILGUN_API_KEY": "key-test", "MAILGUN_WEBHOOK_SIGNING_KEY": SIGNING_KEY}
    settings.DEFAULT_FROM_EMAIL = f"Shop <noreply@{DOMAIN}>"
    settings.NOTIFIER_PROVIDERS = {**settings.NOTIFIER_PROVIDERS, "email": ["django"]}
    reset_providers()

    def accepted(request: Any) -> tuple[int, dict[str, str], str]:
        message_id = f"<{uuid.uuid4().hex}@{DOMAIN}>"
        return 200, {}, json.dumps({"id": message_id, "message": "Queued. Thank you."})

    with responses.RequestsMock(assert_all_requests_are_fired=False) as api:
        api.add_callback(responses.POST, MESSAGES_URL, callback=accepted)
        yield api
    reset_providers()


def sent_email(user=None, type_key: str = "order.shipped", context=None) -> Delivery:
    user = user or UserFactory()
    message = notify(user, type_key, context or order_context(), channels=["email"])
    messages_prepare(message_ids=[message.pk])
    delivery = Delivery.objects.get(message=message)
    deliveries_deliver(delivery_ids=[delivery.pk])
    delivery.refresh_from_db()
    assert (delivery.status, delivery.provider) == (S.SENT, "django"), delivery.last_error
    assert delivery.provider_message_id.startswith("<")
    return delivery


def signature(timestamp: int | str, token: str, key: str = SIGNING_KEY) -> dict[str, str]:
    digest = hmac.new(key.encode(), f"{timestamp}{token}".encode(), hashlib.sha256).hexdigest()
    return {"timestamp": str(timestamp), "token": token, "signature": digest}


def mailgun_event(
    delivery: Delivery, event: str, *, at: float | None = None, **extra: Any
) -> dict[str, Any]:
    """Mailgun's event-data for a message we sent (its message-id header without brackets)."""
    return {
        "event": event,
        "timestamp": at or time.time(),
        "id": uuid.uuid4().hex[:22],
        "recipient": delivery.user.email,
        "log-level": "info",
        "message": {
            "headers": {
                "message-id": delivery.provider_message_id.strip("<>"),
                "to": delivery.user.email,
                "from": f"noreply@{DOMAIN}",
                "subject": "Your order is on its way",
            },
            "attachments": [],
            "size": 4111,
        },
        "tags": [],
        "user-variables": {},
        "flags": {"is-test-mode": False},
        **extra,
    }


def post(
    client: Client,
    event_data: dict[str, Any],
    *,
    token: str | None = None,
    timestamp: int | None = None,
    key: str = SIGNING_KEY,
) -> Any:
    token = token or uuid.uuid4().hex
    timestamp = timestamp or int(time.time())
    body = {"signature": signature(timestamp, token, key), "event-data": event_data}
    return client.post(WEBHOOK, data=json.dumps(body), content_type="application/json")


def status_of(delivery: Delivery) -> tuple[str, str]:
    fresh = Delivery.objects.get(pk=delivery.pk)
    return fresh.status, fresh.reason


# --- The message id matches, and statuses move -------------------------------------------------


def test_delivered_moves_the_delivery_found_by_mailguns_message_id(client, mailgun):
    email = sent_email()

    response = post(client, mailgun_event(email, "delivered"))

    assert response.status_code == 200
    assert status_of(email) == (S.DELIVERED, "")
    event = ProviderEvent.objects.get()
    assert (event.provider, event.event_type, event.outcome, event.delivery_id) == (
        "mailgun",
        "delivered",
        EventOutcome.MOVED,
        email.pk,
    )


def test_opened_and_clicked_move_forward(client, mailgun):
    email = sent_email()

    post(client, mailgun_event(email, "opened"))
    assert status_of(email)[0] == S.OPENED
    post(client, mailgun_event(email, "clicked", url="https://example.com/track/A1001"))

    assert status_of(email)[0] == S.CLICKED


@pytest.mark.parametrize("order", ["delivered-then-clicked", "clicked-then-delivered"])
def test_a_late_delivered_never_undoes_clicked_in_either_order(client, mailgun, order):
    email = sent_email()
    now = time.time()
    delivered = mailgun_event(email, "delivered", at=now - 60)
    clicked = mailgun_event(email, "clicked", at=now, url="https://example.com/track/A1001")
    first, second = (
        (delivered, clicked) if order == "delivered-then-clicked" else (clicked, delivered)
    )

    assert post(client, first).status_code == 200
    assert post(client, second).status_code == 200

    fresh = Delivery.objects.get(pk=email.pk)
    assert fresh.status == S.CLICKED
    assert fresh.delivered_at is not None and fresh.clicked_at is not None


def test_a_temporary_failure_is_a_note_and_the_delivery_stays_sent(client, mailgun):
    email = sent_email()
    deferred = mailgun_event(
        email,
        "failed",
        severity="temporary",
        reason="generic",
        **{"delivery-status": {"code": 452, "message": "4.2.2 Mailbox full", "description": ""}},
    )

    assert post(client, deferred).status_code == 200

    assert status_of(email) == (S.SENT, "")
    note = DeliveryEvent.objects.get(delivery=email, kind="callback")
    assert note.detail["provider_status"] == "deferred"
    assert "Mailbox full" in note.error
    assert not SuppressedAddress.objects.exists()


# --- Bounces and complaints suppress the address -----------------------------------------------


def hard_bounce(email: Delivery) -> dict[str, Any]:
    return mailgun_event(
        email,
        "failed",
        severity="permanent",
        reason="bounce",
        **{
            "delivery-status": {
                "code": 550,
                "message": "5.1.1 The email account that you tried to reach does not exist",
                "description": "",
                "attempt-no": 1,
            }
        },
    )


def test_a_hard_bounce_fails_the_delivery_and_suppresses_the_address(client, mailgun):
    user = UserFactory(email="Gone.Away@Example.com")
    email = sent_email(user)

    assert post(client, hard_bounce(email)).status_code == 200

    fresh = Delivery.objects.get(pk=email.pk)
    assert (fresh.status, fresh.reason) == (S.FAILED, Reason.INVALID_RECIPIENT)
    assert "does not exist" in fresh.last_error
    row = SuppressedAddress.objects.get()
    assert (row.channel, row.address, row.reason, row.source, row.delivery_id) == (
        "email",
        "gone.away@example.com",
        SuppressionReason.BOUNCED,
        "mailgun",
        email.pk,
    )


def test_a_complaint_suppresses_the_address_and_keeps_the_status(client, mailgun):
    email = sent_email()
    post(client, mailgun_event(email, "delivered"))

    assert post(client, mailgun_event(email, "complained")).status_code == 200

    assert status_of(email)[0] == S.DELIVERED
    assert SuppressedAddress.objects.get().reason == SuppressionReason.COMPLAINED
    complaint = DeliveryEvent.objects.filter(delivery=email, kind="callback").last()
    assert complaint is not None and complaint.detail["complaint"] is True


def test_later_email_to_a_suppressed_address_is_suppressed_with_a_readable_reason(client, mailgun):
    user = UserFactory()
    email = sent_email(user)
    post(client, hard_bounce(email))

    again = notify(user, "order.shipped", order_context(order_number="A1002"))
    messages_prepare(message_ids=[again.pk])

    by_channel = {d.channel: d for d in Delivery.objects.filter(message=again)}
    assert (by_channel["email"].status, by_channel["email"].reason) == (
        S.SUPPRESSED,
        Reason.ADDRESS_SUPPRESSED,
    )
    assert by_channel["email"].get_reason_display() == (
        "The address bounced or complained; suppressed"
    )
    assert by_channel["inapp"].status == S.SENT  # the other channels still go
    assert len(mailgun.calls) == 1  # only the first email reached Mailgun


def test_a_rejection_for_a_previous_bounce_suppresses_but_a_generic_one_does_not(client, mailgun):
    bounced_before = sent_email()
    blocked = sent_email()

    post(
        client,
        mailgun_event(
            bounced_before, "rejected", reason="suppress-bounce", reject={"reason": "bounced"}
        ),
    )
    post(client, mailgun_event(blocked, "rejected", reject={"reason": "Sandbox subdomain"}))

    assert status_of(bounced_before) == (S.FAILED, Reason.INVALID_RECIPIENT)
    assert status_of(blocked) == (S.FAILED, Reason.PROVIDER_REJECTED)
    assert list(SuppressedAddress.objects.values_list("address", flat=True)) == [
        bounced_before.user.email.lower()
    ]


# --- Unsubscribed at the ESP -------------------------------------------------------------------


def test_unsubscribed_at_the_esp_records_an_unsubscribe_through_preferences(client, mailgun):
    user = UserFactory()
    consent_give(user_id=user.pk, channel="email", source="signup_form", wording="Send me offers")
    email = sent_email(user, "promo.flash_sale", FLASH)

    assert post(client, mailgun_event(email, "unsubscribed")).status_code == 200

    assert Preference.objects.filter(
        user=user, category="marketing", channel="email", enabled=False
    ).exists()
    assert Consent.objects.filter(user=user, channel="email").latest("at").granted is False
    unsubscribe = Unsubscribe.objects.get(user=user)
    assert (unsubscribe.source, unsubscribe.channel, unsubscribe.message_id) == (
        "mailgun-unsubscribe",
        "email",
        email.message_id,
    )
    again = notify(user, "promo.flash_sale", FLASH, channels=["email"])
    messages_prepare(message_ids=[again.pk])
    assert Delivery.objects.get(message=again).status == S.SUPPRESSED


# --- Replays, bad signatures, old timestamps, unknown ids ---------------------------------------


def test_a_replayed_webhook_is_answered_and_changes_nothing(client, mailgun):
    email = sent_email()
    event = hard_bounce(email)
    token, timestamp = uuid.uuid4().hex, int(time.time())
    assert post(client, event, token=token, timestamp=timestamp).status_code == 200
    # An operator retries the delivery; the same bounce arrives again.
    Delivery.objects.filter(pk=email.pk).update(status=S.SENT, reason="")
    SuppressedAddress.objects.all().delete()

    again = post(client, event, token=token, timestamp=timestamp)

    assert again.status_code == 200
    assert status_of(email) == (S.SENT, "")
    assert not SuppressedAddress.objects.exists()
    assert ProviderEvent.objects.count() == 1


@pytest.mark.parametrize(
    "tamper",
    ["wrong key", "edited token", "edited timestamp", "no signature"],
)
def test_a_bad_signature_gets_403_and_writes_nothing(client, mailgun, tamper):
    email = sent_email()
    token, timestamp = uuid.uuid4().hex, int(time.time())
    sig = signature(timestamp, token, "another-key" if tamper == "wrong key" else SIGNING_KEY)
    if tamper == "edited token":
        sig["token"] = uuid.uuid4().hex
    if tamper == "edited timestamp":
        sig["timestamp"] = str(timestamp + 1)
    body: dict[str, Any] = {"event-data": hard_bounce(email)}
    if tamper != "no signature":
        body["signature"] = sig

    response = client.post(WEBHOOK, data=json.dumps(body), content_type="application/json")

    assert response.status_code == 403
    assert response.content.startswith(b"Refused: ")
    assert status_of(email) == (S.SENT, "")
    assert not SuppressedAddress.objects.exists()
    assert not ProviderEvent.objects.exists()


def test_a_correctly_signed_but_old_request_is_refused(client, mailgun, settings):
    settings.NOTIFIER_WEBHOOK_MAX_AGE_S = 3600
    email = sent_email()

    response = post(client, hard_bounce(email), timestamp=int(time.time()) - 3601)

    assert response.status_code == 403
    assert status_of(email) == (S.SENT, "")
    assert not ProviderEvent.objects.exists()
    assert post(client, hard_bounce(email), timestamp=int(time.time()) - 60).status_code == 200


def test_an_unknown_message_id_is_answered_and_recorded_as_unknown(client, mailgun):
    email = sent_email()
    event = mailgun_event(email, "delivered")
    event["message"]["headers"]["message-id"] = f"someone-else@{DOMAIN}"

    assert post(client, event).status_code == 200

    assert status_of(email) == (S.SENT, "")
    unknown = ProviderEvent.objects.get()
    assert (unknown.outcome, unknown.delivery_id) == (EventOutcome.UNKNOWN, None)
    assert not DeliveryEvent.objects.filter(kind="callback").exists()


def test_sent_stays_sent_without_a_callback(mailgun):
    """Nothing moves a delivery by elapsed time: the periodic jobs leave a sent one alone."""
    email = sent_email()
    with time_machine.travel(dt.datetime.now(dt.UTC) + dt.timedelta(days=3)):
        requeue_stuck_work()
        held_release()

    assert status_of(email) == (S.SENT, "")
    assert Message.objects.count() == 1


# --- Only our ESP, and only authenticated -------------------------------------------------------

POSTMARK = "/webhooks/anymail/postmark/tracking/"


def postmark_bounce(delivery: Delivery, bounce_type: str) -> dict[str, Any]:
    """Postmark's bounce webhook payload."""
    return {
        "RecordType": "Bounce",
        "ID": 4323372036854775807,
        "Type": bounce_type,
        "TypeCode": 1 if bounce_type == "HardBounce" else 4096,
        "Name": "Hard bounce" if bounce_type == "HardBounce" else "Soft bounce",
        "MessageID": delivery.provider_message_id,
        "MessageStream": "outbound",
        "Description": "The server was unable to deliver your message",
        "Details": "smtp;550 5.1.1 The email account does not exist",
        "Email": delivery.user.email,
        "From": "noreply@example.com",
        "BouncedAt": dt.datetime.now(dt.UTC).isoformat(),
        "Inactive": bounce_type == "HardBounce",
        "CanActivate": True,
        "Subject": "Your order is on its way",
        "Metadata": {},
        "Tag": "",
        "ServerID": 23,
    }


def post_postmark(client: Client, payload: dict[str, Any], auth: str | None = None) -> Any:
    headers = {}
    if auth:
        headers["HTTP_AUTHORIZATION"] = "Basic " + base64.b64encode(auth.encode()).decode()
    return client.post(
        POSTMARK, data=json.dumps(payload), content_type="application/json", **headers
    )


@pytest.mark.filterwarnings("ignore::anymail.exceptions.AnymailInsecureWebhookWarning")
def test_another_esps_webhook_is_refused_while_we_send_through_mailgun(client, mailgun):
    email = sent_email()

    response = post_postmark(client, postmark_bounce(email, "HardBounce"))

    assert response.status_code == 404  # not routed: only our ESP's tracking view is
    assert b"Accepted ESPs: mailgun" in response.content
    assert status_of(email) == (S.SENT, "")
    assert not SuppressedAddress.objects.exists()
    assert not ProviderEvent.objects.exists()


@pytest.fixture
def postmark_too(settings, mailgun) -> None:
    """Postmark's webhooks accepted too (as when sending through its SMTP relay)."""
    settings.NOTIFIER_EMAIL_WEBHOOK_ESPS = ["mailgun", "postmark"]


@pytest.mark.filterwarnings("ignore::anymail.exceptions.AnymailInsecureWebhookWarning")
def test_an_esp_without_signatures_is_refused_unless_basic_auth_is_set(
    client, postmark_too, settings
):
    email = sent_email()

    assert post_postmark(client, postmark_bounce(email, "HardBounce")).status_code == 403
    assert not ProviderEvent.objects.exists()

    settings.ANYMAIL = {**settings.ANYMAIL, "WEBHOOK_SECRET": "hook:s3cret"}
    wrong = post_postmark(client, postmark_bounce(email, "HardBounce"), auth="hook:guess")
    assert wrong.status_code == 403
    assert not ProviderEvent.objects.exists()
    right = post_postmark(client, postmark_bounce(email, "HardBounce"), auth="hook:s3cret")
    assert right.status_code == 200
    assert status_of(email) == (S.FAILED, Reason.INVALID_RECIPIENT)
    assert SuppressedAddress.objects.get().source == "postmark"


def test_a_soft_bounce_fails_the_delivery_but_keeps_the_address(client, postmark_too, settings):
    settings.ANYMAIL = {**settings.ANYMAIL, "WEBHOOK_SECRET": "hook:s3cret"}
    email = sent_email()

    response = post_postmark(client, postmark_bounce(email, "SoftBounce"), auth="hook:s3cret")

    assert response.status_code == 200
    assert status_of(email) == (S.FAILED, Reason.UNDELIVERED)
    assert not SuppressedAddress.objects.exists()


HOSTILE_BODIES = [
    "{",
    "[]",
    "null",
    '{"event-data": 1}',
    '{"RecordType": "Bounce", "MessageID": []}',
    "x" * 100_000,
    '{"signature": {"token": 1, "timestamp": "a", "signature": []}}',
]


@pytest.mark.filterwarnings("ignore::anymail.exceptions.AnymailInsecureWebhookWarning")
@pytest.mark.parametrize("body", HOSTILE_BODIES, ids=range(len(HOSTILE_BODIES)))
def test_a_body_anymail_cannot_parse_is_a_4xx_with_its_reason_and_writes_nothing(
    client, postmark_too, settings, body
):
    """Past authentication (Postmark's basic auth) or not (Mailgun signs inside the body)."""
    settings.ANYMAIL = {**settings.ANYMAIL, "WEBHOOK_SECRET": "hook:s3cret"}
    email = sent_email()
    auth = "Basic " + base64.b64encode(b"hook:s3cret").decode()

    for url in (WEBHOOK, POSTMARK):
        response = client.post(
            url, data=body, content_type="application/json", HTTP_AUTHORIZATION=auth
        )

        assert response.status_code in (200, 400, 403), (url, response.status_code)
        if response.status_code != 200:  # 200: valid JSON holding no event anymail knows
            assert response.content.strip(), "a refusal says why"
    assert status_of(email) == (S.SENT, "")
    # An authenticated body anymail turns into an event of no known type or message is only
    # recorded as such; nothing else is written.
    assert set(ProviderEvent.objects.values_list("outcome", flat=True)) <= {
        EventOutcome.UNKNOWN,
        EventOutcome.IGNORED,
    }
    assert not SuppressedAddress.objects.exists()


# --- Authenticated, but values no ESP sends: 400, nothing written --------------------------------


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("recipient", "ada\x00@example.com"),
        ("recipient", "ada\ud800@example.com"),
        ("delivery-status", {"message": "550 \x00", "code": 550}),
        ("timestamp", 10**11),  # the year 5138
        ("timestamp", 1e20),  # past what a datetime holds
    ],
)
def test_a_signed_hard_bounce_with_values_we_cannot_store_is_a_400_and_changes_nothing(
    client, mailgun, field, value
):
    email = sent_email()

    response = post(client, {**hard_bounce(email), field: value})

    assert response.status_code == 400
    assert b"Refused" in response.content or b"not a mailgun tracking webhook" in response.content
    assert status_of(email) == (S.SENT, "")
    assert not ProviderEvent.objects.exists()
    assert not SuppressedAddress.objects.exists()


@pytest.mark.parametrize("timestamp", ["nan", "inf", "1e9", "", "17e8", "-1"])
def test_a_signed_timestamp_that_is_not_whole_seconds_is_refused(client, mailgun, timestamp):
    """float() took "nan", which compares as neither old nor new: it passed as fresh."""
    email = sent_email()
    token = uuid.uuid4().hex
    body = {"signature": signature(timestamp, token), "event-data": hard_bounce(email)}

    response = client.post(WEBHOOK, data=json.dumps(body), content_type="application/json")

    assert response.status_code == 400
    assert b"not a Unix time in whole seconds" in response.content
    assert status_of(email) == (S.SENT, "")
    assert not ProviderEvent.objects.exists()


def test_a_body_nested_deeper_than_any_esps_events_is_refused_before_anymail_parses_it(
    client, mailgun
):
    """anymail's own parse raised RecursionError (a 500), unauthenticated."""
    deep = b'{"signature": ' + b"[" * 100_000 + b"]" * 100_000 + b"}"
    assert client.post(WEBHOOK, data=deep, content_type="application/json").status_code == 400
    nested: Any = "x"
    for _ in range(40):
        nested = [nested]
    response = post(client, {"event": "delivered", "deep": nested})
    assert response.status_code == 400
    assert b"nests deeper than 32 levels" in response.content
    assert not ProviderEvent.objects.exists()


@pytest.fixture
def sendgrid_too(settings, mailgun) -> None:
    """SendGrid's webhooks accepted too: it posts several events in one request."""
    settings.NOTIFIER_EMAIL_WEBHOOK_ESPS = ["mailgun", "sendgrid"]
    settings.ANYMAIL = {**settings.ANYMAIL, "WEBHOOK_SECRET": "hook:s3cret"}


@pytest.mark.filterwarnings("ignore::anymail.exceptions.AnymailNotSupportedWarning")
def test_a_batch_with_one_event_we_cannot_take_writes_none_of_them(client, sendgrid_too):
    email = sent_email()
    event = {"email": email.user.email, "smtp-id": email.provider_message_id}
    batch = [
        {**event, "event": "delivered", "timestamp": int(time.time()), "sg_event_id": "e1"},
        {**event, "event": "open", "timestamp": 10**11, "sg_event_id": "e2"},  # year 5138
    ]

    response = client.post(
        "/webhooks/anymail/sendgrid/tracking/",
        data=json.dumps(batch),
        content_type="application/json",
        HTTP_AUTHORIZATION="Basic " + base64.b64encode(b"hook:s3cret").decode(),
    )

    assert response.status_code == 400
    assert b"more than a year ago or a day from now" in response.content
    assert status_of(email) == (S.SENT, "")  # the first event, valid, was rolled back too
    assert not ProviderEvent.objects.exists()


def test_a_postmark_inbound_body_at_the_tracking_url_is_a_400_not_a_503(
    client, postmark_too, settings
):
    """anymail says "you pointed Postmark's inbound webhook here" with a configuration error;
    the site is configured, the body is wrong."""
    settings.ANYMAIL = {**settings.ANYMAIL, "WEBHOOK_SECRET": "hook:s3cret"}
    inbound = {"From": "ada@example.com", "FromFull": {"Email": "ada@example.com"}, "To": "x"}

    response = post_postmark(client, inbound, auth="hook:s3cret")

    assert response.status_code == 400
    assert b"inbound" in response.content
    assert not ProviderEvent.objects.exists()


def test_a_failure_of_our_own_in_applying_an_event_is_a_500_so_the_esp_retries(
    client, mailgun, monkeypatch
):
    """A bug of ours (or the database) while applying an authenticated event is not the ESP's
    fault: a 400 would tell the ESP to give up, losing the event. It answers 500, so the ESP
    retries, and nothing is written."""
    from notifier.webhooks import views as webhooks

    email = sent_email()

    def broken(*args: Any, **kwargs: Any) -> None:
        raise TypeError("a bug in our callback code")

    monkeypatch.setattr(webhooks, "provider_event_apply", broken)
    client.raise_request_exception = False
    response = post(client, mailgun_event(email, "delivered"))

    assert response.status_code == 500
    assert status_of(email) == (S.SENT, "")
    assert not ProviderEvent.objects.exists()
