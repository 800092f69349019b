"""NOTIFIER_SITE_URL is where every link in messages points: with DEBUG off, a system check says
so while it is unset or names this machine (an independent review found every link in its
messages pointing at localhost, the default, and nothing had said a word)."""

from __future__ import annotations

import pytest
from django.core.management import call_command

from notifier.operations.checks import check_default_region, check_site_url, site_url_problem


def ids() -> list[str]:
    return [message.id or "" for message in check_site_url()]


@pytest.fixture
def production(settings):
    settings.DEBUG = False
    settings.NOTIFIER_EMBEDDED = False
    return settings


@pytest.mark.parametrize(
    "url",
    [
        "http://localhost:8000",  # the default
        "",
        "   ",
        "http://127.0.0.1:8000/",
        "http://127.0.1.1",
        "https://[::1]:8443",
        "http://0.0.0.0:8000",
        "http://notify.localhost",
        "notify.example.com",  # no scheme: not a link a mail client opens
        "ftp://notify.example.com",
        "https://",
        "http://[::1",
    ],
)
def test_a_site_url_customers_cannot_open_is_a_warning_with_debug_off(production, url):
    production.NOTIFIER_SITE_URL = url
    [warning] = check_site_url()
    assert warning.id == "notifier.W020"
    assert warning.msg.startswith("NOTIFIER_SITE_URL ")
    assert "every link in messages" in warning.msg
    assert "https://notify.example.com" in (warning.hint or "")


@pytest.mark.parametrize(
    "url",
    ["https://notify.example.com", "https://notify.example.com/", "http://10.0.0.5:8000/n/"],
)
def test_a_public_site_url_passes(production, url):
    production.NOTIFIER_SITE_URL = url
    assert ids() == []


def test_debug_and_the_embedded_demo_are_not_deployments(settings):
    settings.NOTIFIER_SITE_URL = "http://localhost:8000"
    settings.DEBUG, settings.NOTIFIER_EMBEDDED = True, False
    assert ids() == []
    settings.DEBUG, settings.NOTIFIER_EMBEDDED = False, True
    assert ids() == []


def test_the_problem_names_the_host(production):
    assert site_url_problem("http://localhost:8000") == (
        "is 'http://localhost:8000': localhost is the customer's own device, not this site"
    )
    assert site_url_problem("") == "is not set"


def test_manage_py_check_shows_it(production, capsys):
    production.NOTIFIER_SITE_URL = "http://localhost:8000"
    call_command("check")
    assert "notifier.W020" in capsys.readouterr().err


@pytest.mark.parametrize("region", ["cn", "CHN", "XX", "China"])
def test_a_default_region_phonenumbers_does_not_know_is_an_error(settings, region):
    settings.NOTIFIER_DEFAULT_REGION = region
    (error,) = check_default_region()
    assert error.id == "notifier.E021"
    assert repr(region) in error.msg


@pytest.mark.parametrize("region", ["", "CN", "US", "GB"])
def test_a_known_default_region_or_none_passes(settings, region):
    settings.NOTIFIER_DEFAULT_REGION = region
    assert check_default_region() == []
