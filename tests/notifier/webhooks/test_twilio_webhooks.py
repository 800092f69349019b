"""Twilio's status callback and inbound-message webhooks, signed as Twilio signs them.

Sends go through the real Twilio SDK with the Messages API faked by `responses`; the webhook
requests are form posts signed with `twilio.request_validator.RequestValidator` over the URL
Twilio called (the public https URL, which behind a proxy is not the one Django sees).
"""

from __future__ import annotations

import sys
from collections.abc import Iterator
from typing import Any
from urllib.parse import parse_qs

import pytest
import responses
from django.test import Client
from twilio.request_validator import RequestValidator

from channels.registry import reset_providers
from channels.sms import twilio_client
from notifier import dispatch
from notifier.api import notify
from notifier.models import (
    Consent,
    Delivery,
    DeliveryEvent,
    EventOutcome,
    ProviderEvent,
    User,
)
from notifier.services.deliveries import deliveries_deliver
from notifier.services.pipeline import messages_prepare
from notifier.services.preferences import consent_give
from notifier.status import DeliveryStatus, Reason
from tests.factories import UserFactory, order_context

pytestmark = pytest.mark.django_db
S = DeliveryStatus

SID = "AC00000000000000000000000000000001"
TOKEN = "twilio-auth-token-for-tests"
FROM = "+15005550006"
MESSAGES_URL = f"https://api.twilio.com/2010-04-01/Accounts/{SID}/Messages.json"
PUBLIC = "https://notify.example.com"
STATUS_PATH = "/webhooks/twilio/status/"
INBOUND_PATH = "/webhooks/twilio/inbound/"
EMPTY_TWIML = '<?xml version="1.0" encoding="UTF-8"?><Response />'


@pytest.fixture
def twilio(settings, monkeypatch) -> Iterator[responses.RequestsMock]:
    monkeypatch.setattr(dispatch, "publish_prepare", lambda *args, **kwargs: None)
    monkeypatch.setattr(dispatch, "publish_deliver", lambda *args, **kwargs: None)
    settings.NOTIFIER_TWILIO_ACCOUNT_SID = SID
    settings.NOTIFIER_TWILIO_AUTH_TOKEN = TOKEN
    settings.NOTIFIER_TWILIO_FROM_NUMBER = FROM
    settings.NOTIFIER_TWILIO_MESSAGING_SERVICE_SID = ""
    settings.NOTIFIER_TWILIO_WEBHOOK_BASE_URL = PUBLIC
    settings.NOTIFIER_PROVIDERS = {**settings.NOTIFIER_PROVIDERS, "sms": ["twilio"]}
    twilio_client.cache_clear()
    reset_providers()
    counter = iter(range(1, 10_000))

    def created(request: Any) -> tuple[int, dict[str, str], str]:
        import json

        form = {k: v[0] for k, v in parse_qs(request.body).items()}
        sid = f"SM{next(counter):032x}"
        body = {"sid": sid, "status": "queued", "to": form["To"], "from": FROM, "error_code": None}
        return 201, {}, json.dumps(body)

    with responses.RequestsMock(assert_all_requests_are_fired=False) as api:
        api.add_callback(responses.POST, MESSAGES_URL, callback=created)
        yield api
    twilio_client.cache_clear()
    reset_providers()


def sent_sms(user: User | None = None) -> Delivery:
    message = notify(user or UserFactory(), "order.shipped", order_context(), channels=["sms"])
    messages_prepare(message_ids=[message.pk])
    delivery = Delivery.objects.get(message=message)
    deliveries_deliver(delivery_ids=[delivery.pk])
    delivery.refresh_from_db()
    assert (delivery.status, delivery.provider) == (S.SENT, "twilio"), delivery.last_error
    return delivery


def signed_post(
    client: Client,
    path: str,
    params: dict[str, str],
    *,
    url: str | None = None,
    token: str = TOKEN,
    **headers: str,
) -> Any:
    """Post as Twilio does: the signature covers the URL it called and every parameter."""
    signature = RequestValidator(token).compute_signature(url or f"{PUBLIC}{path}", params)
    return client.post(path, data=params, HTTP_X_TWILIO_SIGNATURE=signature, **headers)


def status_params(delivery: Delivery, status: str, **extra: str) -> dict[str, str]:
    return {
        "AccountSid": SID,
        "MessageSid": delivery.provider_message_id,
        "SmsSid": delivery.provider_message_id,
        "MessageStatus": status,
        "SmsStatus": status,
        "To": delivery.user.notifier_recipient.phone,
        "From": FROM,
        "ApiVersion": "2010-04-01",
        **extra,
    }


def status_of(delivery: Delivery) -> tuple[str, str]:
    fresh = Delivery.objects.get(pk=delivery.pk)
    return fresh.status, fresh.reason


# --- Status callbacks -------------------------------------------------------------------------


def test_the_send_names_the_status_callback(twilio):
    sent_sms()

    form = parse_qs(twilio.calls[0].request.body)
    assert form["StatusCallback"] == [f"{PUBLIC}{STATUS_PATH}"]


def test_in_progress_statuses_leave_sent_and_delivered_moves_it(client, twilio):
    sms = sent_sms()

    for status in ("queued", "sending", "sent"):
        assert signed_post(client, STATUS_PATH, status_params(sms, status)).status_code == 200
        assert status_of(sms) == (S.SENT, "")
    signed_post(client, STATUS_PATH, status_params(sms, "delivered"))

    assert status_of(sms) == (S.DELIVERED, "")
    outcomes = list(ProviderEvent.objects.order_by("id").values_list("event_type", "outcome"))
    assert outcomes == [
        ("queued", EventOutcome.IGNORED),
        ("sending", EventOutcome.IGNORED),
        ("sent", EventOutcome.IGNORED),
        ("delivered", EventOutcome.MOVED),
    ]


@pytest.mark.parametrize(
    ("status", "reason"),
    [("undelivered", Reason.UNDELIVERED), ("failed", Reason.PROVIDER_REJECTED)],
)
def test_undelivered_and_failed_fail_the_delivery_with_twilios_error_code(
    client, twilio, status, reason
):
    sms = sent_sms()

    signed_post(client, STATUS_PATH, status_params(sms, status, ErrorCode="30005"))

    fresh = Delivery.objects.get(pk=sms.pk)
    assert (fresh.status, fresh.reason) == (S.FAILED, reason)
    assert "30005" in fresh.last_error
    event = DeliveryEvent.objects.get(delivery=sms, kind="callback")
    assert event.detail["error_code"] == "30005"


def test_a_late_delivered_after_a_failure_changes_nothing(client, twilio):
    sms = sent_sms()
    signed_post(client, STATUS_PATH, status_params(sms, "undelivered", ErrorCode="30003"))

    signed_post(client, STATUS_PATH, status_params(sms, "delivered"))

    assert status_of(sms) == (S.FAILED, Reason.UNDELIVERED)


def test_a_replayed_status_callback_changes_nothing(client, twilio):
    sms = sent_sms()
    params = status_params(sms, "undelivered", ErrorCode="30003")
    assert signed_post(client, STATUS_PATH, params).status_code == 200
    Delivery.objects.filter(pk=sms.pk).update(status=S.SENT, reason="")  # as if retried

    assert signed_post(client, STATUS_PATH, params).status_code == 200

    assert status_of(sms) == (S.SENT, "")
    assert ProviderEvent.objects.count() == 1


def test_an_unknown_message_sid_is_answered_and_recorded_as_unknown(client, twilio):
    sms = sent_sms()
    params = status_params(sms, "delivered", MessageSid="SM" + "f" * 32)

    assert signed_post(client, STATUS_PATH, params).status_code == 200

    assert status_of(sms) == (S.SENT, "")
    assert ProviderEvent.objects.get().outcome == EventOutcome.UNKNOWN


@pytest.mark.parametrize("problem", ["missing", "wrong token", "edited param", "other url"])
def test_a_bad_signature_gets_403_and_writes_nothing(client, twilio, problem):
    sms = sent_sms()
    params = status_params(sms, "undelivered", ErrorCode="30003")
    signature = RequestValidator("wrong" if problem == "wrong token" else TOKEN).compute_signature(
        f"{PUBLIC}/elsewhere/" if problem == "other url" else f"{PUBLIC}{STATUS_PATH}", params
    )
    headers = {} if problem == "missing" else {"HTTP_X_TWILIO_SIGNATURE": signature}
    if problem == "edited param":
        params = {**params, "ErrorCode": "30007"}

    response = client.post(STATUS_PATH, data=params, **headers)

    assert response.status_code == 403
    assert status_of(sms) == (S.SENT, "")
    assert not ProviderEvent.objects.exists()


def test_a_signed_request_without_the_fields_gets_400(client, twilio):
    response = signed_post(client, STATUS_PATH, {"AccountSid": SID})

    assert response.status_code == 400
    assert not ProviderEvent.objects.exists()


def test_a_get_is_refused(client, twilio):
    assert client.get(STATUS_PATH).status_code == 405


# --- The URL Twilio signed, behind a proxy ------------------------------------------------------


def test_without_a_base_url_proxy_headers_are_ignored_unless_trusted(client, twilio, settings):
    settings.NOTIFIER_TWILIO_WEBHOOK_BASE_URL = ""
    settings.ALLOWED_HOSTS = ["internal", "notify.example.com"]
    sms = sent_sms()
    params = status_params(sms, "delivered")
    proxied = {
        "HTTP_HOST": "internal",
        "HTTP_X_FORWARDED_PROTO": "https",
        "HTTP_X_FORWARDED_HOST": "notify.example.com",
    }

    refused = signed_post(client, STATUS_PATH, params, **proxied)
    assert refused.status_code == 403

    settings.USE_X_FORWARDED_HOST = True
    settings.SECURE_PROXY_SSL_HEADER = ("HTTP_X_FORWARDED_PROTO", "https")
    assert signed_post(client, STATUS_PATH, params, **proxied).status_code == 200
    assert status_of(sms)[0] == S.DELIVERED


def test_with_a_base_url_forged_proxy_headers_do_not_matter(client, twilio, settings):
    settings.USE_X_FORWARDED_HOST = True
    settings.SECURE_PROXY_SSL_HEADER = ("HTTP_X_FORWARDED_PROTO", "https")
    settings.ALLOWED_HOSTS = ["internal", "attacker.example.net"]
    sms = sent_sms()
    params = status_params(sms, "delivered")
    forged = {"HTTP_HOST": "internal", "HTTP_X_FORWARDED_HOST": "attacker.example.net"}

    # Signed for the attacker's URL: refused, the public base URL is what counts.
    url = f"https://attacker.example.net{STATUS_PATH}"
    assert signed_post(client, STATUS_PATH, params, url=url, **forged).status_code == 403
    assert signed_post(client, STATUS_PATH, params, **forged).status_code == 200


# --- Inbound messages: STOP and START -----------------------------------------------------------


def inbound(client: Client, phone: str, body: str, sid: str = "SM" + "a" * 32) -> Any:
    params = {
        "AccountSid": SID,
        "MessageSid": sid,
        "SmsSid": sid,
        "From": phone,
        "To": FROM,
        "Body": body,
        "NumMedia": "0",
    }
    return signed_post(client, INBOUND_PATH, params)


def sms_consent(user: User) -> list[tuple[bool, str]]:
    return list(
        Consent.objects.filter(user=user, channel="sms")
        .order_by("at", "id")
        .values_list("granted", "source")
    )


def consenting_user(phone: str = "+8613800138000") -> User:
    user = UserFactory(phone=phone)
    consent_give(user_id=user.pk, channel="sms", source="signup_form", wording="Texts with offers")
    return user


@pytest.mark.parametrize(
    "body",
    [
        "STOP",
        "stop",
        "  Stop  ",
        "Stop.",
        "STOPALL",
        "stop all",
        "unsubscribe",
        "Cancel",
        "END",
        "quit",
    ],
)
def test_stop_keywords_withdraw_sms_consent_and_reply_with_empty_twiml(client, twilio, body):
    user = consenting_user()

    response = inbound(client, user.notifier_recipient.phone, body)

    assert response.status_code == 200
    assert response["Content-Type"].startswith("text/xml")
    assert response.content.decode() == EMPTY_TWIML
    assert sms_consent(user) == [(True, "signup_form"), (False, "sms-stop")]


def test_any_other_text_changes_nothing(client, twilio):
    user = consenting_user()

    response = inbound(client, user.notifier_recipient.phone, "please stop sending me so many")

    assert response.status_code == 200
    assert sms_consent(user) == [(True, "signup_form")]
    assert ProviderEvent.objects.get().outcome == EventOutcome.IGNORED


def test_the_sender_is_matched_in_e164_however_twilio_wrote_it(client, twilio):
    user = consenting_user("+8613800138000")

    inbound(client, "+86 138 0013 8000", "STOP")

    assert sms_consent(user)[-1] == (False, "sms-stop")


def test_start_restores_what_stop_withdrew_and_nothing_more(client, twilio):
    stopped = consenting_user("+8613800138000")
    never_consented = UserFactory(phone="+8613800138001")
    inbound(client, stopped.notifier_recipient.phone, "STOP", sid="SM" + "1" * 32)

    inbound(client, stopped.notifier_recipient.phone, "start", sid="SM" + "2" * 32)
    inbound(client, never_consented.notifier_recipient.phone, "UNSTOP", sid="SM" + "3" * 32)

    assert sms_consent(stopped) == [(True, "signup_form"), (False, "sms-stop"), (True, "sms-start")]
    assert sms_consent(never_consented) == []


def test_a_replayed_stop_after_start_changes_nothing(client, twilio):
    user = consenting_user()
    inbound(client, user.notifier_recipient.phone, "STOP", sid="SM" + "1" * 32)
    inbound(client, user.notifier_recipient.phone, "START", sid="SM" + "2" * 32)

    assert (
        inbound(client, user.notifier_recipient.phone, "STOP", sid="SM" + "1" * 32).status_code
        == 200
    )

    assert sms_consent(user)[-1] == (True, "sms-start")


def test_stop_from_an_unknown_number_is_answered_and_recorded(client, twilio):
    assert inbound(client, "+14155550100", "STOP").status_code == 200

    assert ProviderEvent.objects.get().outcome == EventOutcome.NO_USER
    assert not Consent.objects.exists()


def test_stop_from_a_short_code_matches_no_user(client, twilio):
    UserFactory(phone="")  # a user without a phone must never be matched

    assert inbound(client, "89757", "STOP").status_code == 200

    assert ProviderEvent.objects.get().outcome == EventOutcome.NO_USER
    assert not Consent.objects.exists()


def test_an_unsigned_stop_gets_403_and_writes_nothing(client, twilio):
    user = consenting_user()

    response = client.post(
        INBOUND_PATH,
        data={"MessageSid": "SM" + "9" * 32, "From": user.notifier_recipient.phone, "Body": "STOP"},
    )

    assert response.status_code == 403
    assert sms_consent(user) == [(True, "signup_form")]
    assert not ProviderEvent.objects.exists()


# --- Signed, but values Twilio never sends: 400, nothing written -------------------------------


@pytest.mark.parametrize(
    "overrides",
    [
        {"MessageSid": "SM\x00"},
        {"MessageSid": "SM" + "a" * 100},
        {"MessageSid": "SM-1; DROP"},
        {"ErrorCode": "30003\x00"},
        {"ErrorCode": "thirty"},
        {"MessageStatus": "deliv\x00ered"},
        {"To": "+1\x1b[31m"},
    ],
    ids=repr,
)
def test_a_status_callback_with_values_twilio_never_sends_is_a_400(client, twilio, overrides):
    sms = sent_sms()

    response = signed_post(client, STATUS_PATH, {**status_params(sms, "undelivered"), **overrides})

    assert response.status_code == 400
    assert response.content.startswith(b"Refused: ")
    assert status_of(sms) == (S.SENT, "")
    assert not ProviderEvent.objects.exists()


@pytest.mark.parametrize("body", ["START\x00", "STOP\x00"])
def test_an_inbound_text_that_cannot_be_stored_is_a_400_and_changes_no_consent(
    client, twilio, body
):
    """START's text is kept as the consent's wording: a NUL there was a 500."""
    user = consenting_user()
    inbound(client, user.notifier_recipient.phone, "STOP")

    response = inbound(client, user.notifier_recipient.phone, body, sid="SM" + "c" * 32)

    assert response.status_code == 400
    assert sms_consent(user) == [(True, "signup_form"), (False, "sms-stop")]
    assert ProviderEvent.objects.count() == 1  # the first STOP only


SID_B, TOKEN_B = "AC" + "b" * 32, "second-account-token"
MESSAGES_URL_B = f"https://api.twilio.com/2010-04-01/Accounts/{SID_B}/Messages.json"


def test_a_second_twilio_account_names_itself_in_its_callbacks_and_is_checked_with_its_token(
    twilio, settings, client
):
    """A configured instance's status callback URL names it: the callback is checked with that
    account's token and finds the delivery sent through it."""
    settings.NOTIFIER_PROVIDER_INSTANCES = {
        "twilio_b": {
            "class": "twilio",
            "account_sid": SID_B,
            "auth_token": TOKEN_B,
            "from_number": FROM,
        }
    }
    settings.NOTIFIER_PROVIDERS = {**settings.NOTIFIER_PROVIDERS, "sms": ["twilio_b"]}
    reset_providers()
    twilio.add(
        responses.POST,
        MESSAGES_URL_B,
        json={"sid": "SM" + "b" * 32, "status": "queued", "to": "+1", "from": FROM},
        status=201,
    )
    message = notify(UserFactory(), "order.shipped", order_context(), channels=["sms"])
    messages_prepare(message_ids=[message.pk])
    delivery = Delivery.objects.get(message=message)
    deliveries_deliver(delivery_ids=[delivery.pk])
    delivery.refresh_from_db()
    assert (delivery.status, delivery.provider) == (S.SENT, "twilio_b")
    form = {k: v[0] for k, v in parse_qs(twilio.calls[-1].request.body).items()}
    path = f"{STATUS_PATH}?provider=twilio_b"
    assert form["StatusCallback"] == f"{PUBLIC}{path}"
    params = {**status_params(delivery, "delivered"), "AccountSid": SID_B}

    # The first account's token does not sign for the second.
    assert signed_post(client, path, params, url=f"{PUBLIC}{path}").status_code == 403
    response = signed_post(client, path, params, url=f"{PUBLIC}{path}", token=TOKEN_B)

    assert response.status_code == 200
    assert status_of(delivery) == (S.DELIVERED, "")


# --- Without the twilio SDK (the `sms` extra not installed) ------------------------------------


@pytest.mark.parametrize("path", [STATUS_PATH, INBOUND_PATH])
def test_without_the_twilio_sdk_a_signed_webhook_is_refused_not_a_server_error(
    client, twilio, monkeypatch, path
):
    user = consenting_user()
    monkeypatch.setitem(sys.modules, "twilio.request_validator", None)
    monkeypatch.setitem(sys.modules, "twilio.twiml.messaging_response", None)

    params = {
        "AccountSid": SID,
        "MessageSid": "SM" + "a" * 32,
        "From": user.notifier_recipient.phone,
        "To": FROM,
    }
    response = signed_post(client, path, {**params, "Body": "STOP", "MessageStatus": "sent"})

    assert response.status_code == 403
    assert sms_consent(user) == [(True, "signup_form")]  # nothing written
