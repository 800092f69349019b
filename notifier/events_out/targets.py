"""Where a webhook may be posted: the URL's host resolved once, every address checked, and the
connection made to a checked address.

Unless NOTIFIER_WEBHOOK_ALLOW_PRIVATE_NETWORKS is on, Notifier posts only to public addresses:
an endpoint URL must not turn the workers into a way into the network they run in (the cloud
metadata service at 169.254.169.254, the database, an admin page on loopback). The check is
made where the connection is made, on the addresses it connects to: the host is resolved once
per request, each address it resolves to is checked (one bad one refuses the request), and the
socket is opened to those addresses, never to the name, so a DNS answer that changes between
the check and the connection (DNS rebinding) changes nothing. The request still carries the
name: in the Host header, and for https in the TLS server name (SNI) and the certificate check.
"""

from __future__ import annotations

import http.client
import socket
from dataclasses import dataclass
from urllib.parse import urlsplit

from django.conf import settings

from notifier.policies.webhooks import address_problem, url_problem

ALLOW_SETTING = "NOTIFIER_WEBHOOK_ALLOW_PRIVATE_NETWORKS"


class TargetRefused(ValueError):
    """Notifier will not call this URL: its form, or an address its host resolves to. The same
    answer on every retry, until an Admin changes the URL or the setting."""


@dataclass(frozen=True, slots=True)
class Target:
    """A URL, split, with the addresses its host resolved to (each one checked, unless the site
    allows private networks)."""

    https: bool
    host: str
    port: int
    path: str
    addresses: tuple[str, ...]


def private_networks_allowed() -> bool:
    return bool(getattr(settings, ALLOW_SETTING, False))


def resolve(host: str, port: int) -> list[str]:
    """Every address `host` resolves to for a TCP connection, in the resolver's order, once each.
    Raises OSError (socket.gaierror) when it does not resolve."""
    found = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    return list(dict.fromkeys(str(info[4][0]) for info in found))


def refusal(host: str, addresses: list[str]) -> str | None:
    """Why a host that resolved to `addresses` must not be called, or None."""
    for address in addresses:
        problem = address_problem(address)
        if problem:
            via = "" if host.strip("[]") == address else f"{host} resolves to {address}: "
            return (
                f"{via}{problem}; Notifier calls only public addresses "
                f"(set {ALLOW_SETTING}=true for receivers on an internal network)"
            )
    return None


def target_for(url: str) -> Target:
    """The URL, resolved and checked, ready to connect to. Raises TargetRefused for a URL or an
    address that is not allowed, OSError when the host does not resolve (which may pass: it is
    retried like a connection that fails)."""
    problem = url_problem(url)
    if problem:
        raise TargetRefused(problem)
    parts = urlsplit(url.strip())
    https = parts.scheme.lower() == "https"
    host = parts.hostname or ""
    port = parts.port or (443 if https else 80)
    addresses = resolve(host, port)
    if not addresses:
        raise OSError(f"{host} resolves to no address")
    if not private_networks_allowed():
        refused = refusal(host, addresses)
        if refused:
            raise TargetRefused(refused)
    path = (parts.path or "/") + (f"?{parts.query}" if parts.query else "")
    return Target(https, host, port, path, tuple(addresses))


def target_problem(url: str) -> str | None:
    """What is wrong with an endpoint URL when an Admin saves it, or None: its form, a literal
    address that is not allowed, or a name that resolves to one. A name that does not resolve
    (yet) passes: the check is made again before every request."""
    try:
        target_for(url)
    except TargetRefused as exc:
        return str(exc)
    except OSError:
        return None
    return None


# --- Connections pinned to the checked addresses ----------------------------------------------


class PinnedHTTPConnection(http.client.HTTPConnection):
    """An HTTP connection to `addresses` (tried in order), never to a new lookup of the host
    name, which it still sends as the Host header."""

    addresses: tuple[str, ...] = ()

    def connect(self) -> None:
        error: OSError = OSError(f"{self.host} has no address to connect to")
        for address in self.addresses:
            try:
                self.sock = socket.create_connection((address, self.port), self.timeout)
                break
            except OSError as exc:
                error = exc
        else:
            raise error
        self.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)


class PinnedHTTPSConnection(http.client.HTTPSConnection, PinnedHTTPConnection):
    """HTTPS to the checked addresses: HTTPSConnection.connect opens the socket through
    PinnedHTTPConnection.connect (next in the method order), then wraps it with TLS for the
    host name (SNI, and the certificate checked against the name)."""


def connection(target: Target, *, timeout: float) -> http.client.HTTPConnection:
    connection_class = PinnedHTTPSConnection if target.https else PinnedHTTPConnection
    conn = connection_class(target.host, target.port, timeout=timeout)
    conn.addresses = target.addresses
    return conn
