"""Inbound limits: how many requests we answer. Rate limits on the public endpoints, per client
IP, and per signed token or user where a token or a login identifies who is asking. (Outbound
limits on the providers we call are notifier.provider_limits.)

Every URL outside the admin is rate-limited. `ENDPOINTS` places each URL name in a group
whose limits fit it (signed links, tracking, the inbox API, ...); a URL not listed there gets
`DEFAULT_GROUP`'s limits, so a new public endpoint is never unlimited, and
tests/security/test_request_limits.py fails until it is placed on purpose. The admin is behind a
login and is not limited, except its login page (password guessing).

A request over a limit gets 429 with Retry-After (whole seconds until a slot frees up) and a
plain message; JSON endpoints answer {"error": "..."} like their other errors.

The counting is the token bucket of `notifier.provider_limits` (`take`: one Lua script on
Redis, Redis's clock, shared by every web process; in process in embedded mode): a limit of
"30/m" (`notifier.rates`' grammar) is a bucket of 30 refilled at one every two seconds, so
short bursts pass and a steady flood is cut to the rate. django-ratelimit would also do, but it
needs a Redis cache configured as Django's cache, counts in fixed windows (twice the limit can
pass across a window's edge) and answers 403 unless wrapped; the bucket here already exists, is
tested, tells the exact wait, and fails open (logged once) when Redis is down, so an outage
does not take the unsubscribe page with it.

Client IP: REMOTE_ADDR, unless it belongs to NOTIFIER_TRUSTED_PROXIES (addresses or CIDR
ranges of the load balancers in front of us); then the rightmost X-Forwarded-For entry that is
not a trusted proxy. X-Forwarded-For is never believed from anyone else: a client can write
anything there. IPv6 clients are counted per /64, the block one subscriber usually holds.

Tuning: NOTIFIER_PUBLIC_RATE_LIMITS overrides a group's limit per scope, e.g.
`NOTIFIER_PUBLIC_RATE_LIMITS=signed_link.ip=120/m,tracking.ip=off`; NOTIFIER_RATE_LIMIT_PUBLIC
=false switches every public limit off.
"""

from __future__ import annotations

import hashlib
import ipaddress
import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from enum import StrEnum
from functools import lru_cache

from django.conf import settings
from django.core.exceptions import ImproperlyConfigured
from django.http import HttpRequest, HttpResponse, JsonResponse
from django.urls import ResolverMatch

from notifier import provider_limits
from notifier.known_devices import account_key, known_device, set_known_device_cookie
from notifier.middleware import is_api_request
from notifier.rates import InvalidRate, Rate, parse_rate_text

Network = ipaddress.IPv4Network | ipaddress.IPv6Network

OFF = "off"


class Scope(StrEnum):
    IP = "ip"  # the client address (proxy-aware, see client_ip)
    TOKEN = "token"  # the signed token in the URL: one leaked link cannot be hammered
    USER = "user"  # the logged-in user: one account, whatever addresses it comes from
    # The account name a login form POSTs: guessing one account's password from many
    # addresses (a botnet) is cut off even though each address stays under its own limit. A
    # browser that logged in to the account before counts in a bucket of its own
    # (notifier/known_devices.py), so the flood cannot lock the owner out.
    ACCOUNT = "account"
    # The account name tried from one client address: what the owner's own guesses count in.
    ACCOUNT_IP = "account_ip"


# Each group's limits, per scope; overridable per "group.scope" in NOTIFIER_PUBLIC_RATE_LIMITS.
GROUPS: dict[str, dict[Scope, str]] = {
    # Pages and one-click POSTs behind signed links: people click a few times, mail scanners
    # a few more; nobody needs more than this, and guessing tokens needs far more.
    "signed_link": {Scope.IP: "60/m", Scope.TOKEN: "20/m"},
    # RFC 8058 one-click POSTs come from the mailbox provider's servers (Gmail, Yahoo), one
    # address for thousands of people unsubscribing after a campaign: a refused POST is an
    # unsubscribe lost, so the address limit only stops a flood and the link limit does the work.
    "one_click": {Scope.IP: "6000/m", Scope.TOKEN: "10/m"},
    # Click redirects and the open pixel: image proxies (Gmail's) and link scanners (Safe
    # Links) fetch for every reader from a few addresses, so again the link limit does the work.
    "tracking": {Scope.IP: "6000/m", Scope.TOKEN: "60/m"},
    # The inbox API, polled for the unread badge by each open tab.
    "inbox_api": {Scope.USER: "300/m", Scope.IP: "600/m"},
    # The inbox's live stream: one request per tab and (re)connect, which the stream's retry
    # hint spaces out; many people behind one office NAT reconnect at once after a restart.
    "inbox_stream": {Scope.USER: "60/m", Scope.IP: "6000/m"},
    "preferences_api": {Scope.USER: "60/m", Scope.IP: "300/m"},
    # Provider callbacks (delivery receipts, inbound SMS) arrive in bursts from few addresses.
    "webhook": {Scope.IP: "3000/m"},
    # Logins: per address; per account name and address (10 an hour: a person who forgot a
    # password is not locked out for long); per account name tried, from browsers that never
    # logged in to it (30 an hour, refilled one per two minutes), and per known browser.
    "admin_login": {Scope.IP: "20/m", Scope.ACCOUNT_IP: "10/h", Scope.ACCOUNT: "30/h"},
    # The service API: each API key has its own limit (NOTIFIER_API_KEY_RATE_LIMIT, checked
    # once the key is known); per address only a flood is stopped (a backend's calls come from
    # a few addresses).
    "service_api": {Scope.IP: "30000/m"},
    # Anything public not placed below.
    "default": {Scope.IP: "120/m"},
}
DEFAULT_GROUP = "default"

# Every URL outside the admin, by name ("namespace:name" inside an included app's namespace)
# -> its group, or None for "not limited" (with the reason).
ENDPOINTS: dict[str, str | None] = {
    # Load balancers and orchestrators probe these every few seconds; they do no work a
    # flood could amplify (ready is a few pings).
    "notifier:health-live": None,
    "notifier:health-ready": None,
    "notifier:inbox-list": "inbox_api",
    "notifier:inbox-unread-count": "inbox_api",
    "notifier:inbox-stream": "inbox_stream",
    "notifier:inbox-read-all": "inbox_api",
    "notifier:inbox-read": "inbox_api",
    "notifier:inbox-archive": "inbox_api",
    "notifier:inbox-feedback": "inbox_api",
    "notifier:inbox-snooze": "inbox_api",
    "notifier:inbox-snoozes": "inbox_api",
    "notifier:inbox-snooze-lift": "inbox_api",
    "notifier:inbox-snooze-topic": "inbox_api",
    "notifier:inbox-topic-snoozes": "inbox_api",
    "notifier:inbox-topic-snooze-lift": "inbox_api",
    "notifier:preferences-api": "preferences_api",
    "notifier:preferences-consent": "preferences_api",
    "notifier:unsubscribe": "signed_link",
    "notifier:unsubscribe-one-click": "one_click",
    "notifier:preferences-page": "signed_link",
    "notifier:track-click": "tracking",
    "notifier:track-open": "tracking",
    # Provider callbacks: signed by the provider, bursty from few addresses.
    "notifier:email-tracking-webhook": "webhook",
    "notifier:twilio-status": "webhook",
    "notifier:twilio-inbound": "webhook",
    # The end user's inbox page, and signing in on the stand-alone site (password guessing:
    # the admin login's limits).
    "notifier:inbox-page": "inbox_api",
    "login": "admin_login",
    "logout": "signed_link",
    "notifier:api-v1:notify_one": "service_api",
    "notifier:api-v1:notify_bulk": "service_api",
    "notifier:api-v1:notify_cancel_route": "service_api",
    "notifier:api-v1:snoozes_read": "service_api",
    "notifier:api-v1:snooze_put": "service_api",
    "notifier:api-v1:snooze_delete": "service_api",
    "notifier:api-v1:topic_snoozes_read": "service_api",
    "notifier:api-v1:topic_snooze_put": "service_api",
    "notifier:api-v1:topic_snooze_delete": "service_api",
    "notifier:api-v1:dates_read": "service_api",
    "notifier:api-v1:date_put": "service_api",
    "notifier:api-v1:date_delete": "service_api",
    "notifier:api-v1:date_exit_route": "service_api",
    "notifier:api-v1:digest_cadence_read": "service_api",
    "notifier:api-v1:digest_cadence_put": "service_api",
    "notifier:api-v1:digest_cadence_delete": "service_api",
    "notifier:api-v1:topic_notify_route": "service_api",
    "notifier:api-v1:topics_read": "service_api",
    "notifier:api-v1:topic_follow": "service_api",
    "notifier:api-v1:topic_unfollow": "service_api",
    "notifier:api-v1:message_read": "service_api",
    "notifier:api-v1:recipient_save": "service_api",
    "notifier:api-v1:recipient_read": "service_api",
    "notifier:api-v1:recipient_message_list": "service_api",
    "notifier:api-v1:app_token_create": "service_api",
    "notifier:api-v1:recipient_delete": "service_api",
    "notifier:api-v1:recipient_data_export": "service_api",
    "notifier:api-v1:device_add": "service_api",
    "notifier:api-v1:device_list": "service_api",
    "notifier:api-v1:device_remove": "service_api",
    "notifier:api-v1:preferences_read": "service_api",
    "notifier:api-v1:preferences_change": "service_api",
    "notifier:api-v1:consent_read": "service_api",
    "notifier:api-v1:consent_record": "service_api",
    # Public (a web page reads it before anyone signs in), cheap, the same for everyone.
    "notifier:api-v1:push_vapid_public_key": "default",
    # The API's OpenAPI document and its browsable page: public, cheap, read by tools.
    "notifier:api-v1:api-root": "default",
    "notifier:api-v1:openapi-json": "default",
    "notifier:api-v1:openapi-view": "default",
    # Behind a bearer token; Prometheus scrapes every 15 s or so, far below the default limit,
    # which still stops anyone guessing the token.
    "notifier:metrics": "default",
}
ADMIN_NAMESPACE = "admin"
ADMIN_LIMITED = {"login": "admin_login"}


# --- Pure parts -----------------------------------------------------------------------------


def parse_limit(text: str) -> Rate | None:
    """'30/m' -> a bucket of 30 refilled over a minute; 'off' -> None; InvalidRate otherwise."""
    if text.strip().lower() == OFF:
        return None
    try:
        rate = parse_rate_text(text, whole=True)
    except InvalidRate as exc:
        raise InvalidRate(f"{exc}; or '{OFF}' for no limit") from None
    return Rate(per_second=rate.per_second, burst=int(rate.amount))


def group_of(match: ResolverMatch) -> str | None:
    """The limit group of a resolved URL; None when it is not limited."""
    if ADMIN_NAMESPACE in match.namespaces:
        return ADMIN_LIMITED.get(match.url_name or "")
    if match.view_name in ENDPOINTS:  # "name", or "namespace:name" for included apps
        return ENDPOINTS[match.view_name]
    return DEFAULT_GROUP


def parse_networks(values: Sequence[str]) -> tuple[Network, ...]:
    networks = []
    for value in values:
        try:
            networks.append(ipaddress.ip_network(value.strip(), strict=False))
        except ValueError as exc:
            raise ImproperlyConfigured(
                f"NOTIFIER_TRUSTED_PROXIES: {value!r} is not an IP address or CIDR range"
            ) from exc
    return tuple(networks)


def _trusted(address: str, proxies: Sequence[Network]) -> bool:
    try:
        ip = ipaddress.ip_address(address)
    except ValueError:
        return False
    return any(ip in network for network in proxies)


def client_ip(remote_addr: str, forwarded_for: str, proxies: Sequence[Network]) -> str:
    """The client's address: REMOTE_ADDR, or, when that is a trusted proxy, the rightmost
    X-Forwarded-For hop that is not one (each proxy appends the address it saw; entries left
    of the first untrusted one are whatever the client wrote)."""
    if not proxies or not _trusted(remote_addr, proxies):
        return remote_addr
    hops = [hop.strip() for hop in forwarded_for.split(",") if hop.strip()]
    for hop in reversed(hops):
        if _trusted(hop, proxies):
            continue
        try:
            return str(ipaddress.ip_address(hop))
        except ValueError:
            return remote_addr  # a proxy of ours wrote garbage: count the proxy
    return remote_addr


def ip_key(address: str) -> str:
    """IPv4 as is; IPv6 per /64, which one subscriber usually holds whole."""
    try:
        ip = ipaddress.ip_address(address)
    except ValueError:
        return address or "unknown"
    if isinstance(ip, ipaddress.IPv6Address):
        if ip.ipv4_mapped is not None:  # ::ffff:198.51.100.7 is that IPv4 client
            return str(ip.ipv4_mapped)
        return str(ipaddress.ip_network(f"{ip}/64", strict=False))
    return str(ip)


@dataclass(frozen=True, slots=True)
class Decision:
    allowed: bool
    retry_after_s: int = 0
    scope: Scope | None = None  # which limit said no

    @property
    def reason(self) -> str:
        if self.allowed:
            return "within the limits"
        whom = {
            Scope.IP: "from your network",
            Scope.TOKEN: "for this link",
            Scope.USER: "for your account",
            Scope.ACCOUNT: "for this account name",
            Scope.ACCOUNT_IP: "for this account name from your network",
        }[self.scope or Scope.IP]
        return f"Too many requests {whom}. Try again in {self.retry_after_s} seconds."


def decide(grants: Sequence[tuple[Scope, provider_limits.Grant]]) -> Decision:
    """Refused by the first limit that granted nothing, with its wait in whole seconds."""
    for scope, grant in grants:
        if grant.granted < 1:
            return Decision(False, max(1, math.ceil(grant.retry_after_s)), scope)
    return Decision(True)


# --- Settings -------------------------------------------------------------------------------


def limits(group: str) -> list[tuple[Scope, Rate]]:
    """The group's limits with NOTIFIER_PUBLIC_RATE_LIMITS applied; "off" ones left out."""
    overrides = settings.NOTIFIER_PUBLIC_RATE_LIMITS
    return list(_limits(group, tuple(sorted(overrides.items()))))


@lru_cache(maxsize=64)
def _limits(group: str, overrides: tuple[tuple[str, str], ...]) -> tuple[tuple[Scope, Rate], ...]:
    given = dict(overrides)
    unknown = [key for key in given if key.partition(".")[0] not in GROUPS]
    if unknown:
        raise ImproperlyConfigured(
            f"NOTIFIER_PUBLIC_RATE_LIMITS names no known group in {unknown}; groups are "
            f"{', '.join(GROUPS)} and keys look like 'signed_link.ip'"
        )
    found = []
    for scope, default in GROUPS[group].items():
        text = str(given.get(f"{group}.{scope}", default))
        try:
            rate = parse_limit(text)
        except InvalidRate as exc:
            raise ImproperlyConfigured(
                f"NOTIFIER_PUBLIC_RATE_LIMITS {group}.{scope}: {exc}"
            ) from exc
        if rate is not None:
            found.append((scope, rate))
    return tuple(found)


@lru_cache(maxsize=8)
def _proxies(values: tuple[str, ...]) -> tuple[Network, ...]:
    return parse_networks(values)


def request_ip(request: HttpRequest) -> str:
    """The client address of a request, proxy-aware only for NOTIFIER_TRUSTED_PROXIES."""
    return client_ip(
        request.META.get("REMOTE_ADDR", ""),
        request.META.get("HTTP_X_FORWARDED_FOR", ""),
        _proxies(tuple(settings.NOTIFIER_TRUSTED_PROXIES)),
    )


# --- The middleware -------------------------------------------------------------------------


def _identity(scope: Scope, request: HttpRequest, kwargs: dict[str, object]) -> str | None:
    if scope is Scope.IP:
        return ip_key(request_ip(request))
    if scope is Scope.TOKEN:
        token = kwargs.get("token")
        if not isinstance(token, str):
            return None
        # A message's tracked links share one token and differ by their index after it
        # (/t/c/<token>/<index>/): each link is limited on its own, as when each had a token.
        index = kwargs.get("index")
        if isinstance(index, int):
            token = f"{token}/{index}"
        # Hashed: tokens are long, and a Redis key must not be a working link.
        return hashlib.sha256(token.encode("utf-8", "surrogatepass")).hexdigest()[:32]
    if scope in (Scope.ACCOUNT, Scope.ACCOUNT_IP):
        account = (
            account_key(request.POST.get("username", "")) if request.method == "POST" else None
        )
        if account is None:
            return None
        if scope is Scope.ACCOUNT_IP:
            return f"{account}:{ip_key(request_ip(request))}"
        device = known_device(request)
        return (
            f"{account}:device:{device.device_id}" if device and device.knows(account) else account
        )
    user = getattr(request, "user", None)
    return str(user.pk) if user is not None and user.is_authenticated else None


def too_many(request: HttpRequest, decision: Decision) -> HttpResponse:
    response: HttpResponse
    if is_api_request(request):
        response = JsonResponse({"error": decision.reason}, status=429)
    else:
        response = HttpResponse(
            decision.reason + "\n", status=429, content_type="text/plain; charset=utf-8"
        )
    response["Retry-After"] = str(decision.retry_after_s)
    return response


class PublicRateLimitMiddleware:
    """Counts each request against its URL's limits before the view runs (after the session
    and the user are known); over a limit, answers 429 and the view never runs."""

    def __init__(self, get_response: Callable[[HttpRequest], HttpResponse]) -> None:
        self.get_response = get_response

    def __call__(self, request: HttpRequest) -> HttpResponse:
        response = self.get_response(request)
        set_known_device_cookie(request, response)  # after a successful login only
        return response

    def process_view(
        self,
        request: HttpRequest,
        view_func: Callable[..., HttpResponse],
        view_args: tuple[object, ...],
        view_kwargs: dict[str, object],
    ) -> HttpResponse | None:
        if not settings.NOTIFIER_RATE_LIMIT_PUBLIC:
            return None
        match = request.resolver_match
        group = group_of(match) if match is not None else None
        if group is None:
            return None
        return self._check(request, group, view_kwargs)

    @staticmethod
    def _check(request: HttpRequest, group: str, kwargs: dict[str, object]) -> HttpResponse | None:
        grants = []
        for scope, rate in limits(group):
            identity = _identity(scope, request, kwargs)
            if identity is None:
                continue
            grant = provider_limits.take(f"http:{group}:{scope}:{identity}", rate)
            grants.append((scope, grant))
            if grant.granted < 1:
                break  # the other buckets keep their tokens
        decision = decide(grants)
        return None if decision.allowed else too_many(request, decision)
