"""The request-encoding checks: the pure rules, the Django middleware a product's own WSGI app
relies on (the test client builds requests like any WSGI server), and the WSGI guard."""

from __future__ import annotations

from typing import Any

import pytest
from django.test import Client

from notifier.middleware import charset_problem, content_type_problem, refuse_unreadable_requests

pytestmark = pytest.mark.django_db


@pytest.mark.parametrize("charset", [None, "utf-8", "UTF-8", "utf8", "UTF_8", "u8", "us-ascii"])
def test_utf8_under_any_of_its_names_and_ascii_are_read(charset):
    assert charset_problem(charset) is None


@pytest.mark.parametrize("charset", ["utf-16", "latin-1", "cp1252", "hex", "zlib", "nonsense", ""])
def test_any_other_charset_is_a_problem_that_names_the_fix(charset):
    assert "send charset=utf-8" in (charset_problem(charset) or "")


def test_a_header_django_cannot_parse_is_a_problem():
    assert "cannot be read" in (content_type_problem("text/plain; charset*=bogus''utf-8") or "")
    assert content_type_problem("application/json; charset=utf-8") is None
    assert content_type_problem("") is None


def form_post(path: str, body: str, charset: str) -> Any:
    client = Client(enforce_csrf_checks=True)
    client.cookies["csrftoken"] = "a" * 32
    return client.post(
        path,
        body.encode(),
        content_type=f"application/x-www-form-urlencoded; charset={charset}",
    )


@pytest.mark.parametrize("path", ["/login/", "/admin/login/", "/webhooks/twilio/status/"])
def test_a_form_in_another_charset_is_a_400_before_csrf_or_the_view_reads_it(path):
    """Django refuses such a form by raising, and its 400 handler reads the body again for the
    CSRF token: the second raise was a 500."""
    response = form_post(path, "username=a&password=b", "utf-16")

    assert response.status_code == 400
    assert b"this site reads requests as UTF-8; send charset=utf-8" in response.content


def test_under_api_the_refusal_is_json():
    client = Client()
    response = client.post(
        "/api/preferences/consent/", b"{}", content_type="application/json; charset=latin-1"
    )

    assert response.status_code == 400
    assert "UTF-8" in response.json()["error"]


def test_a_form_declared_utf8_by_another_name_is_read():
    """Django's form parser accepts only the spelling "utf-8"; "utf8" was a 500."""
    response = form_post("/login/", f"csrfmiddlewaretoken={'a' * 32}&username=x&password=y", "utf8")

    assert response.status_code == 400  # the login form again: wrong password
    assert b"Please enter a correct username and password" in response.content


def test_the_wsgi_guard_answers_before_django_builds_the_request():
    called: list[dict[str, Any]] = []
    started: list[str] = []

    def app(environ: dict[str, Any], start_response: Any) -> list[bytes]:
        called.append(environ)
        return [b"ok"]

    guarded = refuse_unreadable_requests(app)
    body = guarded(
        {"REQUEST_METHOD": "GET", "PATH_INFO": "/", "CONTENT_TYPE": "text/plain; charset=hex"},
        lambda status, headers: started.append(status),
    )

    assert started == ["400 Bad Request"]
    assert b"send charset=utf-8" in b"".join(body)
    assert not called
    assert guarded({"CONTENT_TYPE": "application/json"}, lambda *a: None) == [b"ok"]
