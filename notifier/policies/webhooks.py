"""Outbound webhook policies: which URLs and addresses may be called, when to retry, when to
stop calling.

Pure functions over plain values (times, counts, settings), each returning a decision with the
reason an operator reads in the admin.
"""

from __future__ import annotations

import ipaddress
import random
from dataclasses import dataclass
from datetime import datetime, timedelta
from urllib.parse import urlsplit

from notifier.policies.retry import RetryPolicy, backoff_delay

ALLOWED_SCHEMES = ("http", "https")


def url_problem(url: object) -> str | None:
    """What is wrong with an endpoint URL, or None: http(s) only, with a host, no credentials
    (a secret in a URL ends up in every log line that prints it)."""
    if not isinstance(url, str) or not url.strip():
        return "a URL is required, e.g. https://example.com/hooks/notifier"
    try:
        parts = urlsplit(url.strip())
        port = parts.port
    except ValueError as exc:
        return f"{url!r} is not a URL: {exc}"
    if parts.scheme.lower() not in ALLOWED_SCHEMES:
        return f"only http:// and https:// URLs are called, not {parts.scheme or 'no scheme'}://"
    if not parts.hostname:
        return "the URL names no host"
    if parts.username or parts.password:
        return "put no credentials in the URL: requests are signed with the endpoint's secret"
    if port == 0:
        return "port 0 is not a port"
    return None


# IPv6 forms that carry an IPv4 address, which is what a packet to them reaches: mapped
# (::ffff:a.b.c.d) and NAT64's well-known prefix (64:ff9b::a.b.c.d); 6to4 (2002::/16) below.
_NAT64 = ipaddress.ip_network("64:ff9b::/96")


def address_problem(address: str) -> str | None:
    """What kind of non-public address this IP address is, or None for a public one: loopback,
    private (RFC 1918, fc00::/7), link-local (169.254/16 with the cloud metadata services,
    fe80::/10), unspecified, multicast, reserved, or another special-purpose range (shared
    100.64/10, documentation, benchmarking). An IPv6 address carrying an IPv4 one is judged by
    the IPv4 address."""
    try:
        ip = ipaddress.ip_address(address.split("%", 1)[0])  # fe80::1%eth0: a zone, not an IP
    except ValueError:
        return f"{address!r} is not an IP address"
    if isinstance(ip, ipaddress.IPv6Address):
        embedded = ip.ipv4_mapped or ip.sixtofour
        if embedded is None and ip in _NAT64:
            embedded = ipaddress.IPv4Address(int(ip) & 0xFFFFFFFF)
        if embedded is not None:
            kind = _kind(embedded)
            return f"{address} carries {embedded}, {kind}" if kind else None
    kind = _kind(ip)
    return f"{ip} is {kind}" if kind else None


def _kind(ip: ipaddress.IPv4Address | ipaddress.IPv6Address) -> str | None:
    kinds = (
        (ip.is_unspecified, "an unspecified address"),
        (ip.is_loopback, "a loopback address"),
        (ip.is_link_local, "a link-local address (where cloud metadata services answer)"),
        (ip.is_multicast, "a multicast address"),
        (ip.is_reserved, "a reserved address"),
        (ip.is_private, "a private address"),
        (not ip.is_global, "a special-purpose address"),
    )
    return next((kind for matches, kind in kinds if matches), None)


@dataclass(frozen=True, slots=True)
class Retry:
    """After a failed request: try again at `at`, or give up (`at` is None)."""

    at: datetime | None
    reason: str


def after_failure(
    *,
    attempt: int,
    first_at: datetime,
    now: datetime,
    retry_for_s: float,
    base_s: float,
    max_s: float,
    rng: random.Random | None = None,
) -> Retry:
    """Exponential backoff with jitter (as deliveries retry), for `retry_for_s` after the
    event: a retry that would fall after that is not made."""
    deadline = first_at + timedelta(seconds=retry_for_s)
    delay = backoff_delay(attempt, RetryPolicy(base_delay_s=base_s, max_delay_s=max_s), rng)
    at = now + timedelta(seconds=delay)
    if at > deadline:
        return Retry(None, f"given up after {attempt} attempts over {_span(retry_for_s)}")
    return Retry(at, f"attempt {attempt} failed; next in {delay:.0f} s")


@dataclass(frozen=True, slots=True)
class Disable:
    act: bool
    reason: str


def endpoint_disable(
    *,
    failing_since: datetime | None,
    failures: int,
    now: datetime,
    after_s: float,
    after_failures: int,
    refused: str = "",
) -> Disable:
    """Disable an endpoint whose every request failed for `after_s`, at least
    `after_failures` times in a row: one bad minute never disables it, nor does a slow trickle
    of events that happened to fail twice a day apart. A request Notifier `refused` to make
    (its URL, or the address its host resolves to, is not allowed) disables it at once: every
    retry would be refused the same way, and only an Admin can change that."""
    if refused:
        return Disable(True, f"refused to call it: {refused}; fix its URL, then re-enable it")
    if failing_since is None or failures < after_failures:
        return Disable(False, f"{failures} failed requests in a row")
    failing_for = (now - failing_since).total_seconds()
    if failing_for < after_s:
        return Disable(False, f"failing for {_span(failing_for)}, under {_span(after_s)}")
    return Disable(
        True,
        f"every request failed for {_span(failing_for)} ({failures} in a row) since "
        f"{failing_since:%Y-%m-%d %H:%M} UTC; fix the receiver, then re-enable it",
    )


def _span(seconds: float) -> str:
    if seconds >= 2 * 86400:
        return f"{seconds / 86400:.1f}".removesuffix(".0") + " days"
    if seconds >= 2 * 3600:
        return f"{seconds / 3600:.1f}".removesuffix(".0") + " hours"
    if seconds >= 120:
        return f"{seconds / 60:.0f} minutes"
    return f"{seconds:.0f} s"
