"""Small HTTP middleware of the public surface: requests in an encoding we cannot read are a 400,
and a 405 says which methods to use."""

from __future__ import annotations

import codecs
import json
import logging
from collections.abc import Callable, Iterable
from typing import Any

from django.http import HttpRequest, HttpResponse
from django.urls import Resolver404, resolve
from django.utils.http import parse_header_parameters

log = logging.getLogger(__name__)

# codecs' canonical names of the charsets read as UTF-8 ("utf8", "UTF_8", "u8"; ASCII is a subset).
UTF8_CODECS = frozenset({"utf-8", "ascii"})
WsgiApp = Callable[[dict[str, Any], Callable[..., Any]], Iterable[bytes]]


# Notifier's JSON endpoints (its routes under api/, wherever the host mounts the URLconf); a
# test checks this against notifier/urls.py.
# The service API (notifier.http_api): every route of it answers JSON.
SERVICE_API_NAMESPACE = "api-v1"
API_URL_NAMES = frozenset(
    {
        "inbox-list",
        "inbox-unread-count",
        "inbox-read-all",
        "inbox-read",
        "inbox-archive",
        "inbox-feedback",
        "preferences-api",
        "preferences-consent",
    }
)


def is_service_api_request(request: HttpRequest) -> bool:
    """Whether the request is for the service API (notifier.http_api)."""
    match = getattr(request, "resolver_match", None)
    if match is None:
        try:
            match = resolve(request.path_info)
        except Resolver404:
            return False
    return SERVICE_API_NAMESPACE in match.namespaces


def is_api_request(request: HttpRequest) -> bool:
    """Whether the request is for one of Notifier's JSON endpoints: its errors are JSON (also
    before Django has resolved the URL, as when the encoding check refuses a request)."""
    match = getattr(request, "resolver_match", None)
    if match is None:
        try:
            match = resolve(request.path_info)
        except Resolver404:
            return False
    return (
        match is not None
        and "notifier" in match.namespaces
        and ((match.url_name or "") in API_URL_NAMES or SERVICE_API_NAMESPACE in match.namespaces)
    )


def _explained(
    request: HttpRequest, response: HttpResponse, text: str, kind: str = "BadRequest"
) -> HttpResponse:
    """`text` as the body: JSON from the JSON APIs (the service API's {"type", "message"}, the
    inbox and preference APIs' {"error": ...}), plain text elsewhere."""
    if is_service_api_request(request):
        response.content = json.dumps({"type": kind, "message": text}).encode()
        response["Content-Type"] = "application/json"
    elif is_api_request(request):
        response.content = json.dumps({"error": text}).encode()
        response["Content-Type"] = "application/json"
    else:
        response.content = (text + "\n").encode()
        response["Content-Type"] = "text/plain; charset=utf-8"
    return response


class ExplainMethodNotAllowedMiddleware:
    """Django's 405 (require_http_methods) has an Allow header and an empty body; a client
    reading the body sees nothing. Say it in words: JSON from the API, plain text elsewhere."""

    def __init__(self, get_response: Callable[[HttpRequest], HttpResponse]) -> None:
        self.get_response = get_response

    def __call__(self, request: HttpRequest) -> HttpResponse:
        response = self.get_response(request)
        if response.status_code != 405 or getattr(response, "streaming", False):
            return response
        if response.content and b"use " in response.content.lower():
            return response  # it says already (django-ninja's "Method not allowed" does not)
        allowed = response.get("Allow", "")
        text = f"{request.method} is not allowed here; use {allowed or 'another method'}."
        return _explained(request, response, text, "MethodNotAllowed")


def charset_problem(charset: str | None) -> str | None:
    """Why a body or query string declared in `charset` cannot be read here; None for UTF-8
    (under any of its names), ASCII, or no charset at all."""
    if charset is None:
        return None
    try:
        name = codecs.lookup(charset).name
    except LookupError:
        name = ""
    if name in UTF8_CODECS:
        return None
    return f"this site reads requests as UTF-8; send charset=utf-8 (or none), not {charset[:40]!r}"


class RequestEncodingMiddleware:
    """Refuses, with a 400 that says so, a request whose Content-Type names a charset other than
    UTF-8, before anything reads its body (Django refuses a form in another charset by raising,
    and its own 400 handler reads the body again for the CSRF token: a 500); a UTF-8 alias
    ("utf8") is read as "utf-8", the only spelling Django's form parser accepts. Placed before
    CSRF and sessions. The stand-alone site's WSGI application (notifier.wsgi) refuses these
    even earlier, with `refuse_unreadable_requests`; this covers a product's own WSGI app."""

    def __init__(self, get_response: Callable[[HttpRequest], HttpResponse]) -> None:
        self.get_response = get_response

    def __call__(self, request: HttpRequest) -> HttpResponse:
        charset = request.content_params.get("charset") if request.content_params else None
        problem = charset_problem(charset)
        if problem is not None:
            log.info("refused %s %s: %s", request.method, request.path, problem)
            return _explained(request, HttpResponse(status=400), f"Bad request: {problem}.")
        if charset is not None:
            request.encoding = "utf-8"
        return self.get_response(request)


def content_type_problem(header: str) -> str | None:
    """Why a request with this Content-Type header cannot be read, in words; None when it can:
    a header Django cannot parse (an RFC 2231 parameter in a charset Python does not know), or
    a charset other than UTF-8."""
    try:
        _, params = parse_header_parameters(header)
    except ValueError as exc:
        return f"the Content-Type header cannot be read ({exc}); send e.g. application/json"
    return charset_problem(params.get("charset"))


def refuse_unreadable_requests(application: WsgiApp) -> WsgiApp:
    """Wraps the WSGI application: a request whose Content-Type has a `content_type_problem`
    gets a 400 here. Django trips on some while it builds the request, before any middleware
    runs: it parses the header (ValueError), and decodes the query string in the charset
    ("hex" is a codec but not a text encoding: LookupError)."""

    def guarded(environ: dict[str, Any], start_response: Callable[..., Any]) -> Iterable[bytes]:
        problem = content_type_problem(environ.get("CONTENT_TYPE", ""))
        if problem is None:
            return application(environ, start_response)
        log.info(
            "refused %s %s: %s", environ.get("REQUEST_METHOD"), environ.get("PATH_INFO"), problem
        )
        body = f"Bad request: {problem}.\n".encode()
        start_response(
            "400 Bad Request",
            [("Content-Type", "text/plain; charset=utf-8"), ("Content-Length", str(len(body)))],
        )
        return [body]

    return guarded
