"""Outbound webhook policies, pure: which addresses are not public (refused unless the site
allows private networks), and a refused request disabling its endpoint at once."""

from __future__ import annotations

import datetime as dt

import pytest

from notifier.policies.webhooks import address_problem, endpoint_disable


@pytest.mark.parametrize(
    ("address", "kind"),
    [
        ("127.0.0.1", "loopback"),
        ("127.8.9.10", "loopback"),
        ("::1", "loopback"),
        ("10.0.0.1", "private"),
        ("172.16.5.4", "private"),
        ("192.168.0.1", "private"),
        ("fc00::1", "private"),
        ("fd12:3456::1", "private"),
        ("169.254.169.254", "link-local"),
        ("fe80::1%eth0", "link-local"),
        ("0.0.0.0", "unspecified"),
        ("::", "unspecified"),
        ("224.0.0.251", "multicast"),
        ("ff02::1", "multicast"),
        ("240.0.0.1", "reserved"),
        ("100.64.0.1", "special-purpose"),
        ("::ffff:10.0.0.1", "private"),  # IPv4-mapped
        ("2002:a9fe:a9fe::", "link-local"),  # 6to4 of 169.254.169.254
        ("64:ff9b::7f00:1", "loopback"),  # NAT64 of 127.0.0.1
        ("93.184.215.14", None),
        ("2606:4700:4700::1111", None),
        ("::ffff:8.8.8.8", None),
    ],
)
def test_which_addresses_are_not_public(address, kind):
    problem = address_problem(address)
    assert (problem is None) if kind is None else (problem and f" {kind} address" in problem)


def test_a_refused_request_disables_at_once_whatever_the_counts():
    now = dt.datetime(2026, 12, 6, 10, tzinfo=dt.UTC)
    decision = endpoint_disable(
        failing_since=now,
        failures=1,
        now=now,
        after_s=86400,
        after_failures=20,
        refused="10.0.0.1 is a private address",
    )
    assert decision.act
    assert decision.reason == (
        "refused to call it: 10.0.0.1 is a private address; fix its URL, then re-enable it"
    )
