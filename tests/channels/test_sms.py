"""TwilioSmsProvider against a faked Twilio Messages API (the `responses` library)."""

from __future__ import annotations

import base64
from collections.abc import Iterator
from urllib.parse import parse_qs

import pytest
import requests
import responses

from channels.base import Channel, Content, ErrorCode, Outcome, Outgoing
from channels.sms import TwilioSmsProvider, classify_twilio_error, twilio_client

SID = "AC00000000000000000000000000000001"
TOKEN = "test-auth-token"
FROM = "+15005550006"
MESSAGES_URL = f"https://api.twilio.com/2010-04-01/Accounts/{SID}/Messages.json"


def outgoing(
    phone: str = "+8613800138000", body: str = "Your code is 123456", delivery_id: int = 5
) -> Outgoing:
    return Outgoing(
        delivery_id=delivery_id,
        message_id=50,
        user_id=2,
        channel=Channel.SMS,
        type_key="auth.code",
        content=Content(body=body),
        attempt=1,
        phone=phone,
    )


def message_json(sid: str = "SM0123456789abcdef0123456789abcdef", **extra: str) -> dict:
    return {
        "sid": sid,
        "account_sid": SID,
        "status": "queued",
        "to": "+8613800138000",
        "from": FROM,
        "body": "Your code is 123456",
        "num_segments": "1",
        "direction": "outbound-api",
        "api_version": "2010-04-01",
        "price": None,
        "error_code": None,
        "error_message": None,
        "date_created": "Thu, 01 May 2025 10:00:00 +0000",
        "date_updated": "Thu, 01 May 2025 10:00:00 +0000",
        "date_sent": None,
        "uri": f"/2010-04-01/Accounts/{SID}/Messages/{sid}.json",
        **extra,
    }


def twilio_error(status: int, code: int, message: str) -> dict:
    return {
        "code": code,
        "message": message,
        "status": status,
        "more_info": f"https://www.twilio.com/docs/errors/{code}",
    }


@pytest.fixture(autouse=True)
def twilio(settings) -> Iterator[None]:
    settings.NOTIFIER_TWILIO_ACCOUNT_SID = SID
    settings.NOTIFIER_TWILIO_AUTH_TOKEN = TOKEN
    settings.NOTIFIER_TWILIO_FROM_NUMBER = FROM
    settings.NOTIFIER_TWILIO_MESSAGING_SERVICE_SID = ""
    twilio_client.cache_clear()
    yield
    twilio_client.cache_clear()


@pytest.fixture
def api() -> Iterator[responses.RequestsMock]:
    with responses.RequestsMock(assert_all_requests_are_fired=True) as mock:
        yield mock


def sent_form(api: responses.RequestsMock, index: int = 0) -> dict[str, str]:
    body = api.calls[index].request.body
    text = body.decode() if isinstance(body, bytes) else str(body)
    return {key: values[0] for key, values in parse_qs(text).items()}


def test_success_returns_the_message_sid(api):
    api.post(MESSAGES_URL, json=message_json(), status=201)

    [result] = TwilioSmsProvider().send_many([outgoing()])

    assert result.outcome is Outcome.SENT
    assert result.provider == "twilio"
    assert result.provider_message_id == "SM0123456789abcdef0123456789abcdef"
    assert result.detail == {"status": "queued"}


def test_success_posts_to_body_from_and_status_callback_with_basic_auth(api, settings):
    settings.NOTIFIER_TWILIO_WEBHOOK_BASE_URL = "https://notify.example.com/"
    api.post(MESSAGES_URL, json=message_json(), status=201)

    TwilioSmsProvider().send_many([outgoing("+8613800138000", "Your code is 123456")])

    assert len(api.calls) == 1
    assert sent_form(api) == {
        "To": "+8613800138000",
        "Body": "Your code is 123456",
        "From": FROM,
        "StatusCallback": "https://notify.example.com/webhooks/twilio/status/",
    }
    expected = base64.b64encode(f"{SID}:{TOKEN}".encode()).decode()
    assert api.calls[0].request.headers["Authorization"] == f"Basic {expected}"


def test_a_messaging_service_sid_replaces_the_from_number(api, settings):
    settings.NOTIFIER_TWILIO_MESSAGING_SERVICE_SID = "MG00000000000000000000000000000001"
    api.post(MESSAGES_URL, json=message_json(), status=201)

    TwilioSmsProvider().send_many([outgoing()])

    form = sent_form(api)
    assert form["MessagingServiceSid"] == "MG00000000000000000000000000000001"
    assert "From" not in form


def test_each_outgoing_is_one_request_with_its_own_result(api):
    api.post(MESSAGES_URL, json=message_json("SM1"), status=201)
    api.post(MESSAGES_URL, json=twilio_error(400, 21211, "Invalid 'To' Phone Number"), status=400)

    results = TwilioSmsProvider().send_many(
        [outgoing("+15550001", delivery_id=1), outgoing("+1nonsense", delivery_id=2)]
    )

    assert [(r.outcome, r.provider_message_id) for r in results] == [
        (Outcome.SENT, "SM1"),
        (Outcome.PERMANENT, ""),
    ]
    assert [sent_form(api, i)["To"] for i in range(2)] == ["+15550001", "+1nonsense"]


def test_invalid_number_21211_is_a_permanent_invalid_recipient(api):
    api.post(MESSAGES_URL, json=twilio_error(400, 21211, "Invalid 'To' Phone Number"), status=400)

    [result] = TwilioSmsProvider().send_many([outgoing("+1nonsense")])

    assert result.outcome is Outcome.PERMANENT
    assert result.error_code is ErrorCode.INVALID_RECIPIENT
    assert "21211" in result.error


def test_opted_out_21610_is_a_permanent_rejection(api):
    api.post(
        MESSAGES_URL,
        json=twilio_error(400, 21610, "Attempt to send to unsubscribed recipient"),
        status=400,
    )

    [result] = TwilioSmsProvider().send_many([outgoing()])

    assert result.outcome is Outcome.PERMANENT
    assert result.error_code is ErrorCode.REJECTED
    assert "21610" in result.error


def test_an_unknown_400_error_is_a_permanent_rejection(api):
    api.post(MESSAGES_URL, json=twilio_error(400, 21602, "Message body is required"), status=400)

    [result] = TwilioSmsProvider().send_many([outgoing(body="")])

    assert result.outcome is Outcome.PERMANENT
    assert result.error_code is ErrorCode.REJECTED


def test_429_is_transient_rate_limited(api):
    api.post(MESSAGES_URL, json=twilio_error(429, 20429, "Too Many Requests"), status=429)

    [result] = TwilioSmsProvider().send_many([outgoing()])

    assert result.outcome is Outcome.TRANSIENT
    assert result.error_code is ErrorCode.RATE_LIMITED


def test_503_is_transient_provider_unavailable(api):
    api.post(
        MESSAGES_URL, body="<html>Service Unavailable</html>", status=503, content_type="text/html"
    )

    [result] = TwilioSmsProvider().send_many([outgoing()])

    assert result.outcome is Outcome.TRANSIENT
    assert result.error_code is ErrorCode.PROVIDER_UNAVAILABLE
    assert "503" in result.error


def test_500_with_a_twilio_error_body_is_transient(api):
    api.post(MESSAGES_URL, json=twilio_error(500, 20500, "Internal Server Error"), status=500)

    [result] = TwilioSmsProvider().send_many([outgoing()])

    assert result.outcome is Outcome.TRANSIENT
    assert result.error_code is ErrorCode.PROVIDER_UNAVAILABLE


def test_a_connection_error_is_transient(api):
    api.post(MESSAGES_URL, body=requests.ConnectionError("Connection refused"))

    [result] = TwilioSmsProvider().send_many([outgoing()])

    assert result.outcome is Outcome.TRANSIENT
    assert result.error_code is ErrorCode.CONNECTION


@pytest.mark.parametrize("exc", [requests.Timeout, requests.ReadTimeout, requests.ConnectTimeout])
def test_a_timeout_is_transient(api, exc):
    api.post(MESSAGES_URL, body=exc("timed out"))

    [result] = TwilioSmsProvider().send_many([outgoing()])

    assert result.outcome is Outcome.TRANSIENT
    assert result.error_code is ErrorCode.TIMEOUT


def test_the_client_is_built_once_and_rebuilt_after_cache_clear(settings):
    first = twilio_client()
    assert twilio_client() is first
    settings.NOTIFIER_TWILIO_ACCOUNT_SID = "AC00000000000000000000000000000002"
    twilio_client.cache_clear()

    assert twilio_client().username == "AC00000000000000000000000000000002"


@pytest.mark.parametrize(
    ("overrides", "problem"),
    [
        ({"NOTIFIER_TWILIO_ACCOUNT_SID": ""}, "TWILIO_ACCOUNT_SID"),
        ({"NOTIFIER_TWILIO_AUTH_TOKEN": ""}, "TWILIO_AUTH_TOKEN"),
        ({"NOTIFIER_TWILIO_FROM_NUMBER": ""}, "TWILIO_FROM_NUMBER"),
    ],
)
def test_configuration_problems_name_the_missing_setting(settings, overrides, problem):
    for name, value in overrides.items():
        setattr(settings, name, value)

    problems = TwilioSmsProvider.configuration_problems()

    assert any(problem in p for p in problems)


def test_complete_credentials_have_no_configuration_problems():
    assert TwilioSmsProvider.configuration_problems() == []


@pytest.mark.parametrize(
    ("status", "code", "outcome", "error_code"),
    [
        (400, 21211, Outcome.PERMANENT, ErrorCode.INVALID_RECIPIENT),
        (429, 20429, Outcome.TRANSIENT, ErrorCode.RATE_LIMITED),
        (503, 20503, Outcome.TRANSIENT, ErrorCode.PROVIDER_UNAVAILABLE),
    ],
)
def test_rfc9457_problem_errors_are_classified_like_classic_ones(status, code, outcome, error_code):
    from twilio.base.exceptions import TwilioServiceException

    problem = TwilioServiceException(
        type_uri="https://www.twilio.com/docs/errors",
        title="Problem",
        status=status,
        code=code,
        detail="the 'To' number is not valid",
    )
    result = classify_twilio_error("twilio", problem)
    assert (result.outcome, result.error_code) == (outcome, error_code)
    assert f"code {code}" in result.error
