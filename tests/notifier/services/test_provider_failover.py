"""Failover between configured provider instances, with the providers faked at the HTTP layer.

Two Twilio accounts (and two anymail ESPs for email), each its own instance with its own
credentials: the next one takes over on an open circuit, on exhausted tokens, and on a 429 or
5xx, whose Retry-After keeps every worker off the first for that long.
"""

from __future__ import annotations

import base64
from collections.abc import Iterator
from datetime import timedelta

import pytest
import responses
from django.core.management import call_command
from django.core.management.base import SystemCheckError
from django.utils import timezone

from channels.base import Channel
from channels.registry import (
    provider_named,
    providers_for,
    reset_providers,
)
from channels.sms import TwilioSmsProvider, twilio_client
from notifier.api import notify
from notifier.models import Delivery, DeliveryEvent
from notifier.provider_limits import State, breaker_allows, breaker_record, breaker_state
from notifier.services.deliveries import deliveries_deliver
from notifier.services.pipeline import messages_prepare
from notifier.status import DeliveryStatus, Reason
from tests.factories import UserFactory, order_context

pytestmark = pytest.mark.django_db
S = DeliveryStatus

SID_A, TOKEN_A = "AC" + "a" * 32, "token-a"
SID_B, TOKEN_B = "AC" + "b" * 32, "token-b"
URL_A = f"https://api.twilio.com/2010-04-01/Accounts/{SID_A}/Messages.json"
URL_B = f"https://api.twilio.com/2010-04-01/Accounts/{SID_B}/Messages.json"


def message_json(sid: str, account: str) -> dict[str, object]:
    return {
        "sid": sid,
        "account_sid": account,
        "status": "queued",
        "to": "+8613800138000",
        "from": "+15005550006",
        "body": "x",
        "num_segments": "1",
        "direction": "outbound-api",
        "api_version": "2010-04-01",
        "price": None,
        "error_code": None,
        "error_message": None,
        "date_created": "Thu, 01 May 2025 10:00:00 +0000",
        "date_updated": "Thu, 01 May 2025 10:00:00 +0000",
        "date_sent": None,
        "uri": f"/2010-04-01/Accounts/{account}/Messages/{sid}.json",
    }


def twilio_error(status: int, code: int) -> dict[str, object]:
    return {"code": code, "message": "Too Many Requests", "status": status}


def account_of(call: responses.Call) -> str:
    header = call.request.headers["Authorization"].split()[1]
    return base64.b64decode(header).decode().split(":")[0]


@pytest.fixture
def two_twilio_accounts(settings) -> Iterator[None]:
    settings.NOTIFIER_PROVIDER_INSTANCES = {
        "twilio_a": {
            "class": "twilio",
            "account_sid": SID_A,
            "auth_token": TOKEN_A,
            "from_number": "+15005550006",
        },
        "twilio_b": {
            "class": "twilio",
            "account_sid": SID_B,
            "auth_token": TOKEN_B,
            "messaging_service_sid": "MG" + "0" * 32,
        },
    }
    settings.NOTIFIER_PROVIDERS = {**settings.NOTIFIER_PROVIDERS, "sms": ["twilio_a", "twilio_b"]}
    settings.NOTIFIER_TWILIO_ACCOUNT_SID = settings.NOTIFIER_TWILIO_AUTH_TOKEN = ""
    twilio_client.cache_clear()
    reset_providers()
    yield
    twilio_client.cache_clear()


@pytest.fixture
def api() -> Iterator[responses.RequestsMock]:
    with responses.RequestsMock(assert_all_requests_are_fired=False) as mock:
        yield mock


def texts(count: int) -> list[int]:
    ids = [
        notify(UserFactory(), "order.shipped", order_context(), channels=["sms"]).pk
        for _ in range(count)
    ]
    messages_prepare(message_ids=ids)
    return list(Delivery.objects.filter(message_id__in=ids).values_list("pk", flat=True))


def sent_through(ids: list[int]) -> dict[str, int]:
    rows = Delivery.objects.filter(pk__in=ids, status=S.SENT).values_list("provider", flat=True)
    counted: dict[str, int] = {}
    for name in rows:
        counted[name] = counted.get(name, 0) + 1
    return counted


def accept_all(api: responses.RequestsMock, url: str, account: str) -> None:
    counter = iter(range(10_000))

    def reply(request):
        import json

        sid = f"SM{account[2:6]}{next(counter):028d}"
        return 201, {}, json.dumps(message_json(sid, account))

    api.add_callback(responses.POST, url, callback=reply, content_type="application/json")


def test_two_instances_of_one_class_each_use_their_own_account(two_twilio_accounts, api):
    a, b = providers_for(Channel.SMS)
    assert (a.name, b.name) == ("twilio_a", "twilio_b")
    assert isinstance(a, TwilioSmsProvider) and isinstance(b, TwilioSmsProvider)
    assert (a.account(), b.account()) == ((SID_A, TOKEN_A), (SID_B, TOKEN_B))


def test_an_open_circuit_on_the_first_account_sends_everything_through_the_second(
    two_twilio_accounts, api, published, settings
):
    settings.NOTIFIER_CIRCUIT_MIN_CALLS = 3
    for _ in range(3):
        breaker_record("sms:twilio_a", success=False)
    assert breaker_state("sms:twilio_a") is State.OPEN
    accept_all(api, URL_B, SID_B)
    ids = texts(4)

    report = deliveries_deliver(delivery_ids=ids)

    assert report.sent == 4
    assert sent_through(ids) == {"twilio_b": 4}
    assert [account_of(c) for c in api.calls] == [SID_B] * 4


def test_exhausted_tokens_on_the_first_account_send_the_rest_through_the_second(
    two_twilio_accounts, api, published, settings
):
    settings.NOTIFIER_RATE_LIMITS = {"sms:twilio_a": "1/h"}
    accept_all(api, URL_A, SID_A)
    accept_all(api, URL_B, SID_B)
    ids = texts(4)

    report = deliveries_deliver(delivery_ids=ids)

    assert report.sent == 4
    assert sent_through(ids) == {"twilio_a": 1, "twilio_b": 3}


def test_rate_limited_then_the_next_provider_and_the_retry_after_is_honoured(
    two_twilio_accounts, api, published
):
    """Account A answers 429 with Retry-After: 120. That message goes through B in the same
    attempt, A is not called again for the rest of the batch, and the next batch (another
    worker's, say) goes straight to B while A's Retry-After runs."""
    api.post(URL_A, json=twilio_error(429, 20429), status=429, headers={"Retry-After": "120"})
    accept_all(api, URL_B, SID_B)
    ids = texts(3)

    report = deliveries_deliver(delivery_ids=ids)

    assert (report.sent, report.retried, report.failed, report.deferred) == (3, 0, 0, [])
    assert sent_through(ids) == {"twilio_b": 3}
    assert [account_of(c) for c in api.calls] == [SID_A, SID_B, SID_B, SID_B]
    assert set(Delivery.objects.filter(pk__in=ids).values_list("attempts", flat=True)) == {1}
    paused = breaker_allows("sms:twilio_a")
    assert (paused.allowed, paused.paused) == (False, True)
    assert 100 < paused.retry_after_s <= 120

    later = texts(2)
    deliveries_deliver(delivery_ids=later)

    assert sent_through(later) == {"twilio_b": 2}
    assert [account_of(c) for c in api.calls].count(SID_A) == 1  # A left alone


def test_a_5xx_with_retry_after_fails_over_and_pauses_the_first(
    two_twilio_accounts, api, published
):
    api.post(URL_A, json=twilio_error(503, 20503), status=503, headers={"Retry-After": "30"})
    accept_all(api, URL_B, SID_B)
    ids = texts(2)

    deliveries_deliver(delivery_ids=ids)

    assert sent_through(ids) == {"twilio_b": 2}
    assert [account_of(c) for c in api.calls] == [SID_A, SID_B, SID_B]
    assert breaker_allows("sms:twilio_a").paused


def test_with_every_provider_rate_limited_the_last_one_retries_after_its_retry_after(
    two_twilio_accounts, api, published, settings
):
    """A hands over to B; B, the last of the chain, answers 429 too: a retry no sooner than
    B's Retry-After, and both accounts are left alone meanwhile."""
    api.post(URL_A, json=twilio_error(429, 20429), status=429, headers={"Retry-After": "40"})
    api.post(URL_B, json=twilio_error(429, 20429), status=429, headers={"Retry-After": "20"})
    settings.NOTIFIER_RETRY_MAX_S = 300  # the production default (tests run with 2)
    ids = texts(2)
    before = timezone.now()

    report = deliveries_deliver(delivery_ids=ids)

    assert (report.sent, report.retried) == (0, 2)
    assert [account_of(c) for c in api.calls] == [SID_A, SID_B]
    rows = Delivery.objects.filter(pk__in=ids)
    assert set(rows.values_list("status", flat=True)) == {S.QUEUED}
    assert all(
        due >= before + timedelta(seconds=20)
        for due in rows.values_list("next_attempt_at", flat=True)
    )
    assert breaker_allows("sms:twilio_a").paused and breaker_allows("sms:twilio_b").paused


def test_a_timeout_is_not_handed_on_it_may_have_been_sent(two_twilio_accounts, api, published):
    """A provider that went quiet may have accepted the message: it retries on the same
    provider later rather than risk a second text through the next one."""
    import requests

    api.post(URL_A, body=requests.exceptions.ReadTimeout("read timed out"))
    ids = texts(1)

    report = deliveries_deliver(delivery_ids=ids)

    assert (report.sent, report.retried) == (0, 1)
    assert [account_of(c) for c in api.calls] == [SID_A]
    row = Delivery.objects.get(pk=ids[0])
    assert (row.status, row.reason, row.provider) == (S.QUEUED, Reason.RETRY_SCHEDULED, "twilio_a")


def test_an_instance_without_its_credentials_is_named_at_start_up(settings):
    from django.core.exceptions import ImproperlyConfigured

    from channels.registry import check_providers_configured

    settings.NOTIFIER_PROVIDER_INSTANCES = {"twilio_b": {"class": "twilio", "account_sid": "AC1"}}
    settings.NOTIFIER_PROVIDERS = {**settings.NOTIFIER_PROVIDERS, "sms": ["twilio_b"]}
    with pytest.raises(ImproperlyConfigured) as excinfo:
        check_providers_configured()
    assert "sms provider 'twilio_b': give it account_sid and auth_token" in str(excinfo.value)

    settings.NOTIFIER_PROVIDER_INSTANCES = {"twilio_b": {"class": "twilio", "sid": "AC1"}}
    with pytest.raises(ImproperlyConfigured, match="unknown option"):
        check_providers_configured()


# --- Email: two anymail ESPs ---------------------------------------------------------------

MAILGUN_URL = "https://api.mailgun.net/v3/mg.example.com/messages"
POSTMARK_URL = "https://api.postmarkapp.com/email"


@pytest.fixture
def two_esps(settings) -> None:
    settings.NOTIFIER_PROVIDER_INSTANCES = {
        "mailgun": {
            "class": "django",
            "backend": "anymail.backends.mailgun.EmailBackend",
            "backend_options": {"api_key": "mg-key"},
            "from_email": "shop@mg.example.com",
        },
        "postmark": {
            "class": "django",
            "backend": "anymail.backends.postmark.EmailBackend",
            "backend_options": {"server_token": "pm-token"},
            "from_email": "shop@pm.example.com",
        },
    }
    settings.NOTIFIER_PROVIDERS = {**settings.NOTIFIER_PROVIDERS, "email": ["mailgun", "postmark"]}
    reset_providers()


def emails(count: int) -> list[int]:
    ids = [
        notify(UserFactory(), "order.shipped", order_context(), channels=["email"]).pk
        for _ in range(count)
    ]
    messages_prepare(message_ids=ids)
    return list(Delivery.objects.filter(message_id__in=ids).values_list("pk", flat=True))


def test_an_esp_answering_503_with_retry_after_hands_over_to_the_second_esp(
    two_esps, api, published
):
    api.post(MAILGUN_URL, json={"message": "busy"}, status=503, headers={"Retry-After": "60"})
    api.post(
        POSTMARK_URL,
        json={
            "To": "x@example.com",
            "SubmittedAt": "2025-05-01T10:00:00Z",
            "MessageID": "0a129aee-e1cd-480d-b08d-4f48548ff48d",
            "ErrorCode": 0,
            "Message": "OK",
        },
    )
    ids = emails(2)

    report = deliveries_deliver(delivery_ids=ids)

    assert report.sent == 2
    assert sent_through(ids) == {"postmark": 2}
    assert [c.request.url for c in api.calls] == [MAILGUN_URL, POSTMARK_URL, POSTMARK_URL]
    assert api.calls[1].request.headers["X-Postmark-Server-Token"] == "pm-token"
    assert 50 < breaker_allows("email:mailgun").retry_after_s <= 60
    assert provider_named(Channel.EMAIL, "postmark") is not None


# --- Never the sandbox in production ----------------------------------------------------------


def test_a_sandbox_behind_a_real_provider_is_a_system_check_error_with_debug_off(settings):
    settings.DEBUG = False
    settings.NOTIFIER_ALLOW_SANDBOX_FAILOVER = False
    settings.EMAIL_BACKEND = "django.core.mail.backends.locmem.EmailBackend"
    settings.NOTIFIER_PROVIDERS = {**settings.NOTIFIER_PROVIDERS, "email": ["django", "sandbox"]}
    reset_providers()

    with pytest.raises(SystemCheckError, match=r"notifier\.E201"):
        call_command("check")
    # ...and a process that skipped the check does not use it either.
    assert [p.name for p in providers_for(Channel.EMAIL)] == ["django"]


@pytest.mark.parametrize(("debug", "allowed"), [(True, False), (False, True)])
def test_a_sandbox_in_the_chain_is_accepted_in_debug_or_when_explicitly_allowed(
    settings, debug, allowed
):
    settings.DEBUG = debug
    settings.NOTIFIER_ALLOW_SANDBOX_FAILOVER = allowed
    settings.EMAIL_BACKEND = "django.core.mail.backends.locmem.EmailBackend"
    settings.NOTIFIER_PROVIDERS = {**settings.NOTIFIER_PROVIDERS, "email": ["django", "sandbox"]}
    reset_providers()

    call_command("check")
    assert [p.name for p in providers_for(Channel.EMAIL)] == ["django", "sandbox"]


def test_a_sandbox_alone_is_no_failover_and_passes(settings):
    settings.DEBUG = False
    settings.NOTIFIER_PROVIDERS = {**settings.NOTIFIER_PROVIDERS, "email": ["sandbox"]}
    call_command("check")


def test_each_esp_instances_webhooks_are_accepted_and_find_its_deliveries(two_esps, settings):
    from notifier.webhooks.views import email_provider_of_esp, email_webhook_esps

    settings.NOTIFIER_EMAIL_WEBHOOK_ESPS = []
    settings.EMAIL_BACKEND = "django.core.mail.backends.smtp.EmailBackend"

    assert email_webhook_esps() == ["mailgun", "postmark"]
    assert email_provider_of_esp("postmark") == "postmark"
    assert email_provider_of_esp("mailgun") == "mailgun"
    assert email_provider_of_esp("sendgrid") == "django"


# --- Twilio, then Plivo (a second SMS provider through its own SDK) --------------------------

PLIVO_ID, PLIVO_TOKEN = "MA" + "P" * 18, "plivo-token"
PLIVO_URL = f"https://api.plivo.com/v1/Account/{PLIVO_ID}/Message/"


@pytest.fixture
def twilio_then_plivo(settings) -> Iterator[None]:
    settings.NOTIFIER_PROVIDER_INSTANCES = {
        "twilio_a": {
            "class": "twilio",
            "account_sid": SID_A,
            "auth_token": TOKEN_A,
            "from_number": "+15005550006",
        },
    }
    settings.NOTIFIER_PLIVO_AUTH_ID, settings.NOTIFIER_PLIVO_AUTH_TOKEN = PLIVO_ID, PLIVO_TOKEN
    settings.NOTIFIER_PLIVO_FROM_NUMBER, settings.NOTIFIER_PLIVO_POWERPACK_UUID = "+14155550100", ""
    settings.NOTIFIER_PROVIDERS = {**settings.NOTIFIER_PROVIDERS, "sms": ["twilio_a", "plivo"]}
    twilio_client.cache_clear()
    reset_providers()
    yield
    twilio_client.cache_clear()


def plivo_accepts(api: responses.RequestsMock) -> None:
    counter = iter(range(10_000))

    def reply(request):
        import json

        uuid = f"00000000-0000-4000-8000-{next(counter):012d}"
        body = {"api_id": "x", "message": "message(s) queued", "message_uuid": [uuid]}
        return 202, {}, json.dumps(body)

    api.add_callback(responses.POST, PLIVO_URL, callback=reply, content_type="application/json")


def test_twilio_rate_limited_then_plivo_takes_the_texts(twilio_then_plivo, api, published):
    api.post(URL_A, json=twilio_error(429, 20429), status=429, headers={"Retry-After": "30"})
    plivo_accepts(api)
    ids = texts(3)

    report = deliveries_deliver(delivery_ids=ids)

    assert report.sent == 3
    assert sent_through(ids) == {"plivo": 3}
    assert [c.request.url for c in api.calls] == [URL_A, PLIVO_URL, PLIVO_URL, PLIVO_URL]
    import json

    sent = json.loads(api.calls[1].request.body)
    assert (sent["src"], sent["text"]) == (
        "+14155550100",
        Delivery.objects.get(pk=ids[0]).content["body"],
    )
    ids_at_plivo = set(
        Delivery.objects.filter(pk__in=ids).values_list("provider_message_id", flat=True)
    )
    assert len(ids_at_plivo) == 3 and all(i.startswith("00000000-") for i in ids_at_plivo)


@pytest.mark.parametrize(
    ("status", "headers", "outcome", "code", "retry_after"),
    [
        (429, {"Retry-After": "7"}, "transient", "rate_limited", 7.0),
        (503, {}, "transient", "provider_unavailable", None),
        (400, {}, "permanent", "invalid_recipient", None),
        (401, {}, "permanent", "rejected", None),
    ],
)
def test_plivo_errors_are_read_from_the_status_it_answered(
    twilio_then_plivo, api, status, headers, outcome, code, retry_after
):
    from channels.base import Content, Outgoing
    from channels.sms import PlivoSmsProvider

    api.post(PLIVO_URL, json={"api_id": "x", "error": "nope"}, status=status, headers=headers)
    outgoing = Outgoing(
        delivery_id=1,
        message_id=1,
        user_id=1,
        channel=Channel.SMS,
        type_key="t",
        content=Content(body="hi"),
        attempt=1,
        phone="+8613800138000",
    )

    [result] = PlivoSmsProvider().send_many([outgoing])

    assert (str(result.outcome), str(result.error_code), result.retry_after_s) == (
        outcome,
        code,
        retry_after,
    )
    assert result.provider == "plivo"


def test_a_429_pauses_a_lone_provider_without_opening_its_circuit(
    two_twilio_accounts, api, published, settings
):
    """One account only: a 429 on the first text of 25 is a pause, not ill health. Twilio is
    not called for the other 24 (recorded as not attempted), and the breaker stays closed."""
    settings.NOTIFIER_PROVIDERS = {**settings.NOTIFIER_PROVIDERS, "sms": ["twilio_a"]}
    reset_providers()
    api.post(URL_A, json=twilio_error(429, 20429), status=429, headers={"Retry-After": "5"})
    ids = texts(25)

    report = deliveries_deliver(delivery_ids=ids)

    assert (report.sent, report.retried) == (0, 25)
    assert len(api.calls) == 1
    assert breaker_state("sms:twilio_a") is State.CLOSED
    assert breaker_allows("sms:twilio_a").paused
    events = DeliveryEvent.objects.filter(delivery_id__in=ids, detail__not_attempted=True)
    assert events.count() == 24
