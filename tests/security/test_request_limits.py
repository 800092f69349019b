"""Rate limits on the public endpoints: the pure parts, and the middleware on real Redis.

Every endpoint found in the URLconf must be placed in notifier.request_limits.ENDPOINTS (a new one
fails `test_every_public_endpoint_is_placed`), and every limited one answers 429 once over
its limit, whatever method it is called with.
"""

from __future__ import annotations

import ipaddress
import re
import time

import pytest
from django.conf import settings
from django.core.exceptions import ImproperlyConfigured
from django.test import Client
from django.urls import resolve

from notifier import provider_limits
from notifier.links import preferences_token, unsubscribe_token
from notifier.models import Consent, Preference
from notifier.rates import InvalidRate, Rate
from notifier.redis_client import redis_client
from notifier.request_limits import (
    ENDPOINTS,
    GROUPS,
    Decision,
    Scope,
    client_ip,
    decide,
    group_of,
    ip_key,
    limits,
    parse_limit,
)
from tests.factories import UserFactory
from tests.security.endpoints import METHODS, public_endpoints

PROXIES = (ipaddress.ip_network("10.0.0.0/8"), ipaddress.ip_network("fd00::/8"))


# --- Pure parts ------------------------------------------------------------------------------


def test_forwarded_for_is_ignored_from_a_client_that_is_not_a_trusted_proxy():
    assert client_ip("203.0.113.9", "198.51.100.1", PROXIES) == "203.0.113.9"
    assert client_ip("203.0.113.9", "198.51.100.1", ()) == "203.0.113.9"
    assert client_ip("10.0.0.2", "198.51.100.1", ()) == "10.0.0.2"  # no proxies configured


def test_behind_trusted_proxies_the_rightmost_untrusted_hop_is_the_client():
    # The client wrote "1.1.1.1" itself; our proxies appended what they saw.
    assert client_ip("10.0.0.2", "1.1.1.1, 198.51.100.7, 10.0.0.9", PROXIES) == "198.51.100.7"
    assert client_ip("fd00::1", "2001:db8::5", PROXIES) == "2001:db8::5"


def test_a_trusted_proxy_with_nothing_or_garbage_forwarded_counts_as_the_client():
    assert client_ip("10.0.0.2", "", PROXIES) == "10.0.0.2"
    assert client_ip("10.0.0.2", "10.0.0.3", PROXIES) == "10.0.0.2"
    assert client_ip("10.0.0.2", "not-an-ip", PROXIES) == "10.0.0.2"


def test_ipv6_clients_are_counted_per_64():
    assert ip_key("2001:db8:1:2:aaaa::1") == ip_key("2001:db8:1:2:bbbb::9") == "2001:db8:1:2::/64"
    assert ip_key("2001:db8:1:3::1") != ip_key("2001:db8:1:2::1")
    assert ip_key("::ffff:198.51.100.7") == "198.51.100.7"
    assert ip_key("198.51.100.7") == "198.51.100.7"


def test_limits_parse_to_a_bucket_of_that_many_over_the_period():
    rate = parse_limit("30/m")
    assert rate == Rate(per_second=0.5, burst=30)
    assert parse_limit("off") is None
    assert parse_limit(" OFF ") is None
    for bad in ("30", "0/m", "1.5/s", "ten/m", "30/d", "of"):
        with pytest.raises(InvalidRate, match=re.escape("use <whole number>/<s|m|h>")) as caught:
            parse_limit(bad)
        assert str(caught.value).endswith("; or 'off' for no limit")


def test_decide_names_the_first_limit_that_refused_and_rounds_the_wait_up():
    assert decide([(Scope.IP, provider_limits.Grant(1))]) == Decision(True)
    refused = decide(
        [(Scope.IP, provider_limits.Grant(1)), (Scope.TOKEN, provider_limits.Grant(0, 2.1))]
    )
    assert refused == Decision(False, 3, Scope.TOKEN)
    assert refused.reason == "Too many requests for this link. Try again in 3 seconds."
    assert decide([(Scope.USER, provider_limits.Grant(0, 0.01))]).retry_after_s == 1


def test_overrides_apply_per_group_and_scope_and_bad_ones_are_refused(settings):
    settings.NOTIFIER_PUBLIC_RATE_LIMITS = {"signed_link.token": "off", "signed_link.ip": "5/s"}
    assert limits("signed_link") == [(Scope.IP, Rate(5.0, 5))]
    settings.NOTIFIER_PUBLIC_RATE_LIMITS = {"signed_link.ip": "lots"}
    with pytest.raises(ImproperlyConfigured, match=r"signed_link\.ip: invalid rate 'lots'"):
        limits("signed_link")
    settings.NOTIFIER_PUBLIC_RATE_LIMITS = {"signed_links.ip": "5/s"}
    with pytest.raises(ImproperlyConfigured, match="names no known group"):
        limits("signed_link")


# --- Every endpoint is placed, and every limited one is limited ------------------------------


def test_every_public_endpoint_is_placed():
    """A new URL must be given a group (or None, with a reason) in ENDPOINTS on purpose; until
    then it gets the default group's limits, and this test fails."""
    names = {endpoint.name for endpoint in public_endpoints()}
    assert names - set(ENDPOINTS) == set(), "place these in notifier.request_limits.ENDPOINTS"
    assert set(ENDPOINTS) - names == set(), "ENDPOINTS lists URLs that no longer exist"
    assert {g for g in ENDPOINTS.values() if g is not None} <= set(GROUPS)


def test_the_admin_is_not_limited_except_its_login():
    assert group_of(resolve("/admin/login/")) == "admin_login"
    assert group_of(resolve("/admin/notifier/user/")) is None


@pytest.fixture
def tight(settings):
    """Every scope of every group down to 1 request an hour: the second request is over."""
    settings.NOTIFIER_PUBLIC_RATE_LIMITS = {
        f"{group}.{scope}": "1/h" for group, scopes in GROUPS.items() for scope in scopes
    }


LIMITED = [e for e in public_endpoints() if ENDPOINTS.get(e.name, "default") is not None]


@pytest.mark.django_db
@pytest.mark.parametrize("endpoint", LIMITED, ids=str)
def test_every_limited_endpoint_answers_429_over_its_limit_for_every_method(endpoint, tight):
    for n, method in enumerate(METHODS):
        # A fresh address, user and token per method: each starts with a full bucket.
        client = Client(REMOTE_ADDR=f"198.51.100.{n + 1}")
        client.force_login(UserFactory())
        url = endpoint.url(token=f"token{n}")
        first = client.generic(method, url)
        assert first.status_code != 429, f"{method} {url}: limited on the first request"
        second = client.generic(method, url)
        assert second.status_code == 429, f"{method} {url}: {second.status_code}, not limited"
        assert int(second["Retry-After"]) >= 1


def test_unlimited_endpoints_are_only_the_health_probes():
    assert {name for name, group in ENDPOINTS.items() if group is None} == {
        "notifier:health-live",
        "notifier:health-ready",
    }


# --- The middleware on real Redis -------------------------------------------------------------


@pytest.fixture
def redis_keys():
    client = redis_client(settings.NOTIFIER_REDIS_URL)

    def keys() -> list[str]:
        pattern = f"{provider_limits.KEY_PREFIX}:bucket:http:*"
        return sorted(k.decode() for k in client.scan_iter(match=pattern))

    return keys


@pytest.mark.django_db
def test_one_click_is_limited_per_link_in_redis_and_the_refused_post_writes_nothing(
    settings, redis_keys
):
    settings.NOTIFIER_PUBLIC_RATE_LIMITS = {"one_click.token": "2/m"}
    user = UserFactory()
    token = unsubscribe_token(user_id=user.pk, category="promo.flash_sale", channel="email")
    url = f"/unsubscribe/{token}/one-click/"
    for n in range(2):  # from two addresses: the per-link limit counts both
        response = Client(REMOTE_ADDR=f"198.51.100.{n + 1}").post(
            url, {"List-Unsubscribe": "One-Click"}
        )
        assert response.status_code == 200
    Preference.objects.all().delete()  # so the third, refused, request could only re-add it
    refused = Client(REMOTE_ADDR="198.51.100.3").post(url, {"List-Unsubscribe": "One-Click"})
    assert refused.status_code == 429
    assert refused["Content-Type"].startswith("text/plain")
    assert refused.content.decode() == (
        f"Too many requests for this link. Try again in {refused['Retry-After']} seconds.\n"
    )
    assert 25 <= int(refused["Retry-After"]) <= 30  # a token every 30 s
    assert not Preference.objects.exists()
    assert any(":one_click:token:" in key for key in redis_keys())
    # Another link of the same user is counted on its own.
    other = unsubscribe_token(user_id=user.pk, category="promo.flash_sale", channel="sms")
    assert Client().get(f"/unsubscribe/{other}/").status_code == 200


@pytest.mark.django_db
def test_signed_link_pages_are_limited_per_address_and_forwarded_for_is_not_believed(settings):
    settings.NOTIFIER_PUBLIC_RATE_LIMITS = {"signed_link.ip": "3/m", "signed_link.token": "off"}
    settings.NOTIFIER_TRUSTED_PROXIES = []
    token = preferences_token(user_id=UserFactory().pk)
    for n in range(3):
        # A client rotating X-Forwarded-For does not become someone else.
        response = Client(REMOTE_ADDR="203.0.113.5").get(
            f"/preferences/{token}/", HTTP_X_FORWARDED_FOR=f"192.0.2.{n}"
        )
        assert response.status_code == 200
    refused = Client(REMOTE_ADDR="203.0.113.5").get(
        f"/preferences/{token}/", HTTP_X_FORWARDED_FOR="192.0.2.99"
    )
    assert refused.status_code == 429
    assert "from your network" in refused.content.decode()
    assert Client(REMOTE_ADDR="203.0.113.6").get(f"/preferences/{token}/").status_code == 200


@pytest.mark.django_db
def test_behind_a_trusted_proxy_each_forwarded_client_has_its_own_limit(settings):
    settings.NOTIFIER_PUBLIC_RATE_LIMITS = {"tracking.ip": "2/m", "tracking.token": "off"}
    settings.NOTIFIER_TRUSTED_PROXIES = ["10.0.0.0/8"]
    proxy = Client(REMOTE_ADDR="10.0.0.2")
    for _ in range(2):
        assert proxy.get("/t/o/x.gif", HTTP_X_FORWARDED_FOR="198.51.100.1").status_code == 200
    assert proxy.get("/t/o/x.gif", HTTP_X_FORWARDED_FOR="198.51.100.1").status_code == 429
    assert proxy.get("/t/o/x.gif", HTTP_X_FORWARDED_FOR="198.51.100.2").status_code == 200


@pytest.mark.django_db
def test_consent_records_the_proxy_aware_client_address(settings):
    settings.NOTIFIER_TRUSTED_PROXIES = ["10.0.0.0/8"]
    user = UserFactory()
    client = Client(REMOTE_ADDR="10.0.0.2")
    client.force_login(user)
    response = client.post(
        "/api/preferences/consent/",
        {"channel": "email", "granted": True, "wording": "Yes"},
        content_type="application/json",
        HTTP_X_FORWARDED_FOR="1.1.1.1, 198.51.100.8",
    )
    assert response.status_code == 200
    assert Consent.objects.get(user=user).ip_address == "198.51.100.8"


@pytest.mark.django_db
def test_the_inbox_api_is_limited_per_user_with_a_json_error(settings):
    settings.NOTIFIER_PUBLIC_RATE_LIMITS = {"inbox_api.user": "2/m", "inbox_api.ip": "off"}
    user = UserFactory()
    for n in range(2):
        client = Client(REMOTE_ADDR=f"198.51.100.{n + 1}")
        client.force_login(user)
        assert client.get("/api/inbox/unread-count/").status_code == 200
    client = Client(REMOTE_ADDR="198.51.100.9")
    client.force_login(user)
    refused = client.get("/api/inbox/unread-count/")
    assert refused.status_code == 429
    assert refused.json() == {
        "error": f"Too many requests for your account. Try again in {refused['Retry-After']} "
        "seconds."
    }
    other = Client(REMOTE_ADDR="198.51.100.9")
    other.force_login(UserFactory())
    assert other.get("/api/inbox/unread-count/").status_code == 200


@pytest.mark.django_db
def test_a_slot_frees_up_after_retry_after(settings):
    settings.NOTIFIER_PUBLIC_RATE_LIMITS = {"tracking.ip": "1/s", "tracking.token": "off"}
    client = Client(REMOTE_ADDR="198.51.100.1")
    assert client.get("/t/o/x.gif").status_code == 200
    refused = client.get("/t/o/x.gif")
    assert refused.status_code == 429
    assert refused["Retry-After"] == "1"
    time.sleep(1.05)
    assert client.get("/t/o/x.gif").status_code == 200


@pytest.mark.django_db
def test_admin_login_is_limited_per_address(settings):
    settings.NOTIFIER_PUBLIC_RATE_LIMITS = {"admin_login.ip": "2/m"}
    client = Client(REMOTE_ADDR="198.51.100.1")
    for _ in range(2):
        response = client.post("/admin/login/", {"username": "x", "password": "guess"})
        assert response.status_code == 200  # the form again: wrong password
    assert client.post("/admin/login/", {"username": "x", "password": "guess"}).status_code == 429


@pytest.mark.django_db
@pytest.mark.parametrize("path", ["/admin/login/", "/login/"])
def test_login_is_limited_per_account_name_across_addresses(settings, path):
    settings.NOTIFIER_PUBLIC_RATE_LIMITS = {"admin_login.account": "2/h"}
    guesses = [
        Client(REMOTE_ADDR=f"198.51.100.{n}").post(path, {"username": name, "password": "guess"})
        for n, name in enumerate(["ada", "Ada", " ada "], start=1)
    ]

    assert all(r.status_code != 429 for r in guesses[:2])  # the form again: wrong password
    assert guesses[2].status_code == 429  # a third address, the same account name
    assert "for this account name" in guesses[2].content.decode()
    other = Client(REMOTE_ADDR="198.51.100.9").post(path, {"username": "bo", "password": "x"})
    assert other.status_code != 429


@pytest.mark.django_db
def test_switching_public_limits_off(settings, tight):
    settings.NOTIFIER_RATE_LIMIT_PUBLIC = False
    client = Client()
    assert [client.get("/t/o/x.gif").status_code for _ in range(3)] == [200, 200, 200]


def test_a_bad_setting_fails_the_system_check(settings):
    from notifier.operations.checks import check_public_rate_limits

    assert check_public_rate_limits() == []
    settings.NOTIFIER_PUBLIC_RATE_LIMITS = {"tracking.ip": "fast"}
    [error] = check_public_rate_limits()
    assert error.id == "notifier.E010"
    assert "tracking.ip: invalid rate 'fast'" in error.msg
    settings.NOTIFIER_PUBLIC_RATE_LIMITS = {}
    settings.NOTIFIER_TRUSTED_PROXIES = ["10.0.0.0/33"]
    [error] = check_public_rate_limits()
    assert "'10.0.0.0/33' is not an IP address or CIDR range" in error.msg


@pytest.mark.django_db
@pytest.mark.parametrize("path", ["/admin/login/", "/login/"])
def test_login_is_limited_per_account_name_and_address(settings, path):
    settings.NOTIFIER_PUBLIC_RATE_LIMITS = {"admin_login.account_ip": "2/h"}
    one = Client(REMOTE_ADDR="198.51.100.1")
    tries = [one.post(path, {"username": "ada", "password": "guess"}) for _ in range(3)]

    assert [r.status_code == 429 for r in tries] == [False, False, True]
    assert "for this account name from your network" in tries[2].content.decode()
    other_account = one.post(path, {"username": "bo", "password": "guess"})
    other_address = Client(REMOTE_ADDR="198.51.100.2").post(
        path, {"username": "ada", "password": "x"}
    )
    assert other_account.status_code != 429
    assert other_address.status_code != 429


@pytest.mark.django_db
def test_each_tracked_link_of_a_message_is_limited_on_its_own(settings):
    """A message's links share one token and differ by the index after it: a scanner that
    fetches one link many times uses up that link's limit, not the customer's click on another."""
    settings.NOTIFIER_PUBLIC_RATE_LIMITS = {"tracking.ip": "off", "tracking.token": "2/m"}
    token = "a-message-token"  # unknown: the view answers 404, the limit counts it all the same
    for _ in range(2):
        assert Client().get(f"/t/c/{token}/0/").status_code == 404
    assert Client().get(f"/t/c/{token}/0/").status_code == 429
    assert Client().get(f"/t/c/{token}/1/").status_code == 404  # another link: its own limit
    assert Client().get(f"/t/c/{token}/").status_code == 404  # a link of the older form too
