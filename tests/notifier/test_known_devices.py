"""Account names as the login limit counts them, and the known-device cookie."""

from __future__ import annotations

import pytest
from django.core import signing
from django.http import HttpResponse
from django.test import RequestFactory

from notifier.known_devices import (
    KNOWN_DEVICE_COOKIE,
    KNOWN_DEVICE_SALT,
    MAX_ACCOUNTS_PER_DEVICE,
    account_key,
    known_device,
    remember_login,
    set_known_device_cookie,
)


def spelled(text: str, first: int) -> str:
    return "".join(chr(first + ord(ch) - ord("a")) for ch in text)


@pytest.mark.parametrize(
    "spelling",
    [
        "victor",
        " Victor ",
        "VICTOR",
        spelled("victor", 0xFF41),  # fullwidth
        spelled("victor", 0x1D41A),  # mathematical bold
        spelled("victor", 0x1D5BA),  # mathematical sans-serif
        "\u3000victor",  # an ideographic space, stripped like any other
    ],
)
def test_every_spelling_the_login_form_reads_as_victor_is_one_account(spelling):
    assert account_key(spelling) == account_key("victor")


def test_other_names_and_blanks():
    assert account_key("victor2") != account_key("victor")
    assert account_key("") is None
    assert account_key("   ") is None
    assert len(account_key("x" * 100_000) or "") == 32  # hashed: no name in a Redis key


def login_response(cookies: dict[str, str] | None = None, username: str = "victor"):
    request = RequestFactory().post("/login/", {"username": username, "password": "pw"})
    request.COOKIES.update(cookies or {})
    remember_login(sender=None, request=request, user=None)
    response = HttpResponse()
    set_known_device_cookie(request, response)
    return response.cookies[KNOWN_DEVICE_COOKIE]


def device_of(value: str):
    request = RequestFactory().get("/")
    request.COOKIES[KNOWN_DEVICE_COOKIE] = value
    return known_device(request)


def test_a_login_issues_an_httponly_cookie_that_knows_the_account_typed():
    morsel = login_response(username=" VICTOR ")

    assert morsel["httponly"] and morsel["samesite"] == "Lax"
    device = device_of(morsel.value)
    assert device is not None and device.knows(account_key("victor") or "")
    assert not device.knows(account_key("mallory") or "")


def test_the_device_keeps_its_id_and_its_latest_accounts():
    first = login_response(username="a")
    second = login_response({KNOWN_DEVICE_COOKIE: first.value}, username="b")

    one, two = device_of(first.value), device_of(second.value)
    assert one and two and one.device_id == two.device_id
    assert two.accounts[:2] == (account_key("b"), account_key("a"))
    latest = second
    for n in range(10):
        latest = login_response({KNOWN_DEVICE_COOKIE: latest.value}, username=f"u{n}")
    assert len(device_of(latest.value).accounts) == MAX_ACCOUNTS_PER_DEVICE  # type: ignore[union-attr]


def test_no_login_no_cookie():
    request = RequestFactory().post("/login/", {"username": "victor"})
    response = HttpResponse()
    set_known_device_cookie(request, response)
    assert KNOWN_DEVICE_COOKIE not in response.cookies


@pytest.mark.parametrize(
    "value",
    [
        "forged",
        signing.dumps({"d": "x", "a": ["y"]}, salt="another.purpose"),
        signing.dumps(["not", "a", "device"], salt=KNOWN_DEVICE_SALT),
        signing.dumps({"d": 1, "a": "y"}, salt=KNOWN_DEVICE_SALT),
    ],
)
def test_a_cookie_we_did_not_sign_for_this_is_no_device(value):
    assert device_of(value) is None
