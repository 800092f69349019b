"""Hostile requests over real HTTP to a real gunicorn with DEBUG off, as an attacker sends them.

Each case was a 500 (or, for a NaN signed timestamp, an accepted webhook) on a server set up as
the README says. Every one must now be a 4xx that says what to fix and writes no row anywhere
(the digest of every table of `test_bad_input.snapshot`). The Django test client would hide
some of these: it re-raises instead of answering 500, and never runs the WSGI application.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import time
import uuid
from collections.abc import Callable
from typing import Any
from urllib.parse import quote, urlencode

import pytest
from django.test import Client
from twilio.request_validator import RequestValidator

from notifier.links import unsubscribe_token
from notifier.models import EventOutcome, ProviderEvent, User
from tests.factories import UserFactory
from tests.gunicorn import Answer, Browser, GunicornServer
from tests.security.corpus import HOSTILE_STRINGS, MALFORMED_BODIES
from tests.security.endpoints import METHODS, public_endpoints
from tests.security.test_bad_input import STATE_ANSWERS, snapshot

pytestmark = pytest.mark.django_db(transaction=True)

MAILGUN_KEY = "mailgun-webhook-signing-key-for-tests"
TWILIO_TOKEN = "twilio-auth-token-for-tests"
TWILIO_PUBLIC = "https://notify.example.com"
# The Mailgun webhook configured as the README documents; Twilio's callbacks with their token.
# (EMAIL_URL set: tests/settings.py then leaves EMAIL_BACKEND to the environment.)
SITE = {
    "EMAIL_URL": "smtp://127.0.0.1:1",
    "EMAIL_BACKEND": "anymail.backends.mailgun.EmailBackend",
    "ANYMAIL": f"MAILGUN_API_KEY=key-test,MAILGUN_WEBHOOK_SIGNING_KEY={MAILGUN_KEY}",
    "TWILIO_ACCOUNT_SID": "AC00000000000000000000000000000001",
    "TWILIO_AUTH_TOKEN": TWILIO_TOKEN,
    "TWILIO_FROM_NUMBER": "+15005550006",
    "TWILIO_WEBHOOK_BASE_URL": TWILIO_PUBLIC,
    # Hundreds of requests from one address: the limits have their own tests below.
    "NOTIFIER_RATE_LIMIT_PUBLIC": "false",
}
# Postmark signs nothing: its webhooks are accepted only with basic auth.
POSTMARK = {
    "EMAIL_URL": "smtp://127.0.0.1:1",
    "EMAIL_BACKEND": "anymail.backends.postmark.EmailBackend",
    "ANYMAIL": "POSTMARK_SERVER_TOKEN=server-token,WEBHOOK_SECRET=hook:s3cret",
    "NOTIFIER_RATE_LIMIT_PUBLIC": "false",
}


@pytest.fixture
def site(gunicorn_server: Callable[..., GunicornServer]) -> GunicornServer:
    return gunicorn_server(**SITE)


def refused(server: GunicornServer, answer: Answer, before: str, what: str) -> None:
    """A 4xx with words in it, and no row written."""
    assert 400 <= answer.status < 500, f"{what}: {answer.status}\n{server.tail()}"
    assert len(answer.body.strip()) > 5, f"{what}: {answer.status} says nothing"
    assert snapshot() == before, f"{what}: {answer.status} but rows were written"


def logged_in(server: GunicornServer, user: User) -> Browser:
    """A browser holding `user`'s session (made here, committed, read by the server)."""
    client = Client()
    client.force_login(user)
    browser = Browser(server)
    browser.cookies["sessionid"] = client.cookies["sessionid"].value
    return browser


def fullwidth(text: str) -> str:
    """ "victor" -> its fullwidth spelling (U+FF56 ...), which NFKC turns back into ASCII."""
    return "".join(chr(ord(ch) + 0xFEE0) for ch in text)


def math_letters(text: str, small_a: int) -> str:
    """Lowercase ASCII letters in a mathematical alphabet starting at `small_a`."""
    return "".join(chr(small_a + ord(ch) - ord("a")) for ch in text)


def csrf_headers(browser: Browser) -> dict[str, str]:
    return {"X-CSRFToken": browser.cookies["csrftoken"]}


# --- Unauthenticated: bodies and charsets the server cannot read --------------------------------

# Every public URL (CSRF-exempt or not) and the admin's login page.
URLS = [e.url(token="x") for e in public_endpoints()] + ["/admin/login/"]


@pytest.mark.parametrize("charset", ["utf-16", "latin-1", "utf8"])
def test_a_form_post_in_a_charset_other_than_utf8_is_a_400_at_every_url(site, charset):
    before = snapshot()
    for url in URLS:
        answer = Browser(site).request(
            "POST",
            url,
            b"username=a&password=b",
            {"Content-Type": f"application/x-www-form-urlencoded; charset={charset}"},
        )
        if charset == "utf8":  # another name of UTF-8: read like it, never a 500
            assert answer.status < 500, f"POST {url}: {answer.status}\n{site.tail()}"
            continue
        refused(site, answer, before, f"POST {url} charset={charset}")
        assert b"UTF-8" in answer.body, answer.text


@pytest.mark.parametrize("method", ["GET", "POST"])
def test_a_charset_that_is_not_a_text_encoding_is_a_400_at_every_url(site, method):
    before = snapshot()
    for url in URLS:
        answer = Browser(site).request(
            method,
            f"{url}?next=%2Finbox%2F&beat=0",
            b"a=b",
            {"Content-Type": "text/plain; charset=hex"},
        )
        refused(site, answer, before, f"{method} {url} charset=hex")


def test_a_content_type_django_cannot_parse_is_a_400_not_a_500(site):
    before = snapshot()
    for url in ("/health/live/", "/login/", "/webhooks/twilio/status/"):
        answer = site.request(
            "POST", url, b"a=b", {"Content-Type": "text/plain; charset*=bogus''utf-8"}
        )
        refused(site, answer, before, f"POST {url} with an RFC 2231 charset nobody knows")


def test_a_deeply_nested_body_to_the_mailgun_webhook_is_a_400(site):
    before = snapshot()
    body = b'{"signature": ' + b"[" * 100_000 + b"]" * 100_000 + b"}"
    answer = site.request(
        "POST",
        "/webhooks/anymail/mailgun/tracking/",
        body,
        {"Content-Type": "application/json"},
    )
    refused(site, answer, before, "deep JSON to Mailgun")


# --- Webhooks with valid credentials and hostile content -----------------------------------------


def mailgun_post(
    server: GunicornServer,
    event_data: dict[str, Any],
    *,
    timestamp: str | None = None,
    number: bytes | None = None,
) -> Answer:
    """Signed as Mailgun signs: HMAC-SHA256 of timestamp + token with the signing key."""
    token = uuid.uuid4().hex
    timestamp = str(int(time.time())) if timestamp is None else timestamp
    digest = hmac.new(
        MAILGUN_KEY.encode(), f"{timestamp}{token}".encode(), hashlib.sha256
    ).hexdigest()
    body = {
        "signature": {"timestamp": timestamp, "token": token, "signature": digest},
        "event-data": event_data,
    }
    raw = json.dumps(body).encode()
    if number is not None:  # JSON that json.dumps would not write: NaN, 1e400
        raw = raw.replace(b'"NUMBER"', number)
    return server.request(
        "POST", "/webhooks/anymail/mailgun/tracking/", raw, {"Content-Type": "application/json"}
    )


def mailgun_event(event: str = "delivered", **fields: Any) -> dict[str, Any]:
    return {
        "event": event,
        "timestamp": time.time(),
        "id": uuid.uuid4().hex[:22],
        "recipient": "ada@example.com",
        "message": {"headers": {"message-id": f"{uuid.uuid4().hex}@mg.example.com"}},
        **fields,
    }


def test_a_well_formed_mailgun_event_is_taken(site):
    """The control: the cases below differ from this one in the field they name."""
    answer = mailgun_post(site, mailgun_event())
    assert answer.status == 200, f"{answer.status}\n{site.tail()}"
    assert ProviderEvent.objects.get().outcome == EventOutcome.UNKNOWN  # we never sent it


# Each case is one request to a server shared by the module; looped, not parametrized, to
# spare a database flush per case. The message of a failure names the case.


def test_a_mailgun_event_time_out_of_range_is_refused(site):
    before = snapshot()
    for value in [1e20, -1e20, 1e12, "1e20"]:
        answer = mailgun_post(site, mailgun_event(timestamp=value))
        refused(site, answer, before, f"event timestamp {value!r}")


def test_a_signed_timestamp_that_is_not_a_time_is_refused(site):
    """`nan` compared as fresh (every comparison with NaN is false): it was accepted."""
    before = snapshot()
    for value in ["inf", "-inf", "nan", "NaN", "1e20", fullwidth("1700000000"), ""]:
        answer = mailgun_post(site, mailgun_event(), timestamp=value)
        refused(site, answer, before, f"signed timestamp {value!r}")


def test_mailgun_text_that_cannot_be_stored_is_refused(site):
    before = snapshot()
    for field, value in [
        ("recipient", "ada\x00@example.com"),
        ("recipient", "\ud800@example.com"),
        ("url", "https://example.com/\x00"),
        ("url", "https://example.com/\udfff"),
        ("description", "\x00"),
    ]:
        answer = mailgun_post(site, mailgun_event("clicked", **{field: value}))
        refused(site, answer, before, f"Mailgun {field}={value!r}")


def test_non_finite_numbers_in_a_webhook_body_are_refused(site):
    before = snapshot()
    for number in [b"1e400", b"-1e400", b"NaN", b"Infinity"]:
        event = mailgun_event(**{"user-variables": {"order": "NUMBER"}})
        answer = mailgun_post(site, event, number=number)
        refused(site, answer, before, f"the number {number!r}")


def twilio_post(server: GunicornServer, path: str, params: dict[str, str]) -> Answer:
    signature = RequestValidator(TWILIO_TOKEN).compute_signature(f"{TWILIO_PUBLIC}{path}", params)
    return server.request(
        "POST",
        path,
        urlencode(params).encode(),
        {
            "Content-Type": "application/x-www-form-urlencoded",
            "X-Twilio-Signature": signature,
        },
    )


TWILIO_STATUS = {"MessageSid": "SM" + "a" * 32, "MessageStatus": "undelivered", "To": "+1555"}
TWILIO_INBOUND = {"MessageSid": "SM" + "b" * 32, "From": "+8613800138000", "Body": "STOP"}


def test_well_formed_twilio_callbacks_are_taken(site):
    """The control: the cases below differ from these in one field."""
    for path, params in [
        ("/webhooks/twilio/status/", TWILIO_STATUS),
        ("/webhooks/twilio/inbound/", TWILIO_INBOUND),
    ]:
        answer = twilio_post(site, path, params)
        assert answer.status == 200, f"{path}: {answer.status}\n{site.tail()}"
    assert ProviderEvent.objects.count() == 2


def test_twilio_fields_that_cannot_be_stored_are_refused(site):
    before = snapshot()
    for path, params in [
        ("/webhooks/twilio/status/", {**TWILIO_STATUS, "MessageSid": "SM\x00"}),
        ("/webhooks/twilio/status/", {**TWILIO_STATUS, "ErrorCode": "300\x00"}),
        ("/webhooks/twilio/status/", {**TWILIO_STATUS, "To": "+1\x00"}),
        ("/webhooks/twilio/status/", {**TWILIO_STATUS, "MessageStatus": "fail\x00ed"}),
        ("/webhooks/twilio/inbound/", {**TWILIO_INBOUND, "From": "+86\x00"}),
        ("/webhooks/twilio/inbound/", {**TWILIO_INBOUND, "MessageSid": "SM\x00"}),
        ("/webhooks/twilio/inbound/", {**TWILIO_INBOUND, "MessageSid": "SM" + "x" * 5000}),
    ]:
        answer = twilio_post(site, path, params)
        refused(site, answer, before, f"Twilio {str(params)[:200]}")


def test_a_postmark_inbound_body_at_the_tracking_webhook_is_a_400(gunicorn_server):
    server = gunicorn_server(**POSTMARK)
    before = snapshot()
    inbound = {
        "FromName": "Ada",
        "MessageID": str(uuid.uuid4()),
        "From": "ada@example.com",
        "FromFull": {"Email": "ada@example.com", "Name": "Ada", "MailboxHash": ""},
        "To": "inbox@example.com",
        "Subject": "Hello",
        "TextBody": "Hi",
        "Headers": [],
    }
    answer = server.request(
        "POST",
        "/webhooks/anymail/postmark/tracking/",
        json.dumps(inbound).encode(),
        {
            "Content-Type": "application/json",
            "Authorization": "Basic " + base64.b64encode(b"hook:s3cret").decode(),
        },
    )
    refused(server, answer, before, "Postmark inbound body")
    assert answer.status == 400


@pytest.mark.parametrize("field", ["category", "channel"])
def test_a_signed_unsubscribe_claim_with_nul_is_a_bad_link(site, field):
    user = UserFactory()
    claim = {"user_id": user.pk, "category": "promo.flash_sale", "channel": "email"}
    claim[field] += "\x00"
    token = quote(unsubscribe_token(**claim), safe="")
    before = snapshot()
    for method, path in [
        ("GET", f"/unsubscribe/{token}/"),
        ("POST", f"/unsubscribe/{token}/"),
        ("POST", f"/unsubscribe/{token}/one-click/"),
    ]:
        browser = Browser(site)
        answer = (
            browser.post_form(path, {"scope": "this", "List-Unsubscribe": "One-Click"})
            if (method == "POST")
            else browser.request("GET", path)
        )
        refused(site, answer, before, f"{method} {path}")
        assert answer.status == 400


# --- Any logged-in end user -------------------------------------------------------------------


def _cursor(text: str) -> str:
    return base64.urlsafe_b64encode(text.encode()).decode().rstrip("=")


FORGED_CURSORS = [
    "2026-01-01T00:00:00+20:00|1",  # an offset PostgreSQL refuses (it stops at ±15:59)
    "9999-12-31T23:59:59-15:00|1",  # past year 9999 in UTC
    "0001-01-01T00:00:00+15:00|1",  # before year 1 in UTC
    "2026-01-01T00:00:00+00:00|²",
    "2026-01-01T00:00:00+00:00|" + "9" * 25,  # past bigint
    "2026-01-01T00:00:00+00:00|-1",
]


@pytest.mark.parametrize("path", ["/api/inbox/", "/inbox/"])
def test_a_forged_inbox_cursor_is_a_400(site, path):
    browser = logged_in(site, UserFactory())
    before = snapshot()
    for cursor in FORGED_CURSORS:
        answer = browser.request("GET", f"{path}?cursor={_cursor(cursor)}")
        refused(site, answer, before, f"cursor {cursor[:40]!r}")


JSON_ENDPOINTS = [
    ("POST", "/api/inbox/1/feedback/"),
    ("POST", "/api/preferences/consent/"),
    ("PATCH", "/api/preferences/"),
]


@pytest.mark.parametrize(("method", "path"), JSON_ENDPOINTS)
def test_a_body_that_is_not_json_at_a_json_endpoint_is_a_415_that_says_to_send_json(
    site, method, path
):
    """A multipart POST was a 500: the CSRF check had consumed the body the view then read."""
    browser = logged_in(site, UserFactory())
    body = b'--xx\r\nContent-Disposition: form-data; name="feedback"\r\n\r\nuseful\r\n--xx--\r\n'
    before = snapshot()
    for content_type in [
        "multipart/form-data; boundary=xx",
        "application/x-www-form-urlencoded",
        "text/plain",
    ]:
        answer = browser.request(
            method, path, body, {"Content-Type": content_type, **csrf_headers(browser)}
        )
        refused(site, answer, before, f"{method} {path} as {content_type}")
        assert answer.status == 415
        assert "application/json" in json.loads(answer.body)["error"]


@pytest.mark.parametrize(
    "next_url", ["/login/", "/login/?next=/login/", "http://127.0.0.1/login/", "//127.0.0.1/login/"]
)
def test_the_login_page_while_logged_in_never_redirects_to_itself(site, next_url):
    browser = logged_in(site, UserFactory())
    answer = browser.request("GET", f"/login/?{urlencode({'next': next_url})}")
    assert answer.status == 302, f"{answer.status}\n{site.tail()}"
    assert answer.header("location") == "/inbox/"


# --- Staff ------------------------------------------------------------------------------------


ODD_NUMBERS = {
    "superscript_two": lambda pk: "²",  # a digit to isdigit(), not to int()
    "past_bigint": lambda pk: "9" * 20,
    "arabic_indic_digits_of_the_id": lambda pk: str(pk).translate(
        str.maketrans("0123456789", "٠١٢٣٤٥٦٧٨٩")
    ),
    "bold_digits_of_the_id": lambda pk: "".join(chr(0x1D7CE + int(d)) for d in str(pk)),
}


def test_the_admin_user_search_reads_only_ascii_digits_as_an_id(site):
    staff = UserFactory(is_staff=True, is_superuser=True)
    target = UserFactory()
    browser = logged_in(site, staff)
    for name, spell in ODD_NUMBERS.items():
        term = spell(target.pk)
        answer = browser.request("GET", f"/admin/notifier/user/?{urlencode({'q': term})}")
        assert answer.status == 200, f"{name}: {answer.status}\n{site.tail()}"
        assert target.email not in answer.text, f"{name}: only ASCII digits are an id"
    found = browser.request("GET", f"/admin/notifier/user/?q={target.pk}")
    assert target.email in found.text


# --- The login limit: one bucket per account however it is spelled, and no lock-out -------------

PASSWORD = "correct horse battery staple"
# Behind a load balancer on the same box: each Browser's address arrives in X-Forwarded-For.
LOGIN = {
    "NOTIFIER_TRUSTED_PROXIES": "127.0.0.1",
    "NOTIFIER_PUBLIC_RATE_LIMITS": "admin_login.account=5/h",
}
LOGIN_PAGES = ["/login/", "/admin/login/"]


@pytest.fixture
def login_site(gunicorn_server: Callable[..., GunicornServer]) -> GunicornServer:
    return gunicorn_server(**LOGIN)


def account(username: str = "victor") -> User:
    user = UserFactory(username=username, is_staff=True)
    user.set_password(PASSWORD)
    user.save()
    return user


def guesses(
    server: GunicornServer, path: str, username: str, count: int, first: int = 1
) -> list[int]:
    """Wrong passwords for `username`, each from an address of its own (a botnet)."""
    return [
        Browser(server, f"198.51.100.{n}").log_in(path, username, f"guess-{n}").status
        for n in range(first, first + count)
    ]


@pytest.mark.parametrize("path", LOGIN_PAGES)
@pytest.mark.parametrize(
    "spelling",
    [
        fullwidth("victor"),
        math_letters("victor", 0x1D41A),  # mathematical bold
        math_letters("victor", 0x1D4EA),  # mathematical bold script
        " VICTOR ",
    ],
)
def test_every_spelling_of_an_account_name_counts_against_the_same_limit(
    login_site, path, spelling
):
    """The login form NFKC-normalises the name: these all log in to `victor`."""
    account()
    assert 429 not in guesses(login_site, path, "victor", 5)

    answer = Browser(login_site, "198.51.100.99").log_in(path, spelling, PASSWORD)

    assert answer.status == 429, f"{spelling!r} got {answer.status}: a fresh bucket"
    assert "sessionid" not in answer.cookies


@pytest.mark.parametrize("path", LOGIN_PAGES)
def test_a_flood_from_many_addresses_is_cut_off_but_the_real_user_still_logs_in(login_site, path):
    account()
    usual = Browser(login_site, "203.0.113.7")
    first = usual.log_in(path, "victor", PASSWORD)  # last week, from the usual browser
    assert first.status == 302
    assert "httponly" in first.header("set-cookie").lower()
    del usual.cookies["sessionid"]  # the session has since expired

    flood = guesses(login_site, path, "victor", 30)

    assert 429 in flood, "guessing from many addresses is limited"
    cut = flood.index(429)
    assert cut <= 5 and set(flood[cut:]) == {429}, flood
    during = usual.log_in(path, "victor", PASSWORD)
    assert during.status == 302, f"the real user was locked out: {during.status}"
    assert "sessionid" in during.cookies
    # Anyone else, even with the right password, waits like the botnet.
    stranger = Browser(login_site, "192.0.2.50").log_in(path, "victor", PASSWORD)
    assert stranger.status == 429


@pytest.mark.parametrize("path", LOGIN_PAGES)
def test_a_device_cookie_of_another_account_or_a_forged_one_does_not_lift_the_limit(
    login_site, path
):
    account("victor")
    account("mallory")
    attacker = Browser(login_site, "198.51.100.200")
    assert attacker.log_in(path, "mallory", PASSWORD).status == 302  # their own account
    del attacker.cookies["sessionid"]
    assert 429 in guesses(login_site, path, "victor", 10)

    assert attacker.log_in(path, "victor", "guess").status == 429
    forged = Browser(login_site, "198.51.100.201")
    forged.cookies.update({name: "forged" for name in attacker.cookies if name != "csrftoken"})
    assert forged.log_in(path, "victor", PASSWORD).status == 429


# --- The bad-input corpus, anonymously, over HTTP -----------------------------------------------

CARRIED = {k: v for k, v in HOSTILE_STRINGS.items() if "surrogate" not in k}


def corpus_requests(method: str, url: str) -> dict[str, tuple[str, bytes, dict[str, str]]]:
    """A bounded slice of tests/security/corpus.py: every malformed JSON body, and every hostile
    string as a form field and as a query parameter (the full cross product runs in-process in
    test_bad_input.py)."""
    cases: dict[str, tuple[str, bytes, dict[str, str]]] = {}
    for name, value in CARRIED.items():
        if "huge" not in name:  # past gunicorn's 4 KB request line: gunicorn's own 400
            cases[f"?q={name}"] = (f"{url}?{urlencode({'q': value, 'next': value})}", b"", {})
    if method in ("GET", "HEAD"):
        return cases
    for name, body in MALFORMED_BODIES.items():
        cases[f"json {name}"] = (url, body, {"Content-Type": "application/json"})
    form = {"Content-Type": "application/x-www-form-urlencoded"}
    for name, value in CARRIED.items():
        # One field when huge: a body past DATA_UPLOAD_MAX_MEMORY_SIZE is refused before it is
        # read, and the connection reset under a client still sending.
        names = ["username"] if "huge" in name else ["username", "password", "scope", "feedback"]
        fields = dict.fromkeys(names, value)
        cases[f"form {name}"] = (url, urlencode(fields).encode(), form)
    return cases


@pytest.mark.parametrize("endpoint", public_endpoints(), ids=str)
def test_the_bad_input_corpus_anonymously_over_http(site, endpoint):
    """Never a 5xx; a 4xx says something; nothing written (a token "x" is valid for nothing, so
    no request here may write)."""
    url = endpoint.url(token="x")
    before, log_offset = snapshot(), site.log_size()
    problems = []
    for method in METHODS:
        if Browser(site).request(method, url).status == 405:
            continue
        for name, (target, body, headers) in corpus_requests(method, url).items():
            answer = Browser(site).request(method, target, body, headers)
            if answer.status >= 500 and (endpoint.name, answer.status) not in STATE_ANSWERS:
                problems.append(f"{method} {name}: {answer.status}")
            elif 400 <= answer.status < 500 and method != "HEAD" and len(answer.body.strip()) < 5:
                problems.append(f"{method} {name}: {answer.status} says nothing")
    assert not problems, "\n".join(problems) + "\n" + site.tail()
    # Status 0 (closed before answering a body it would not read) must not hide a 500.
    assert not site.errors_since(log_offset), "\n".join(site.errors_since(log_offset))
    assert snapshot() == before
