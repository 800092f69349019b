"""The service API's routes as Django serves them: every URL pattern under the "notifier:api-v1"
namespace of the URLconf, with the methods its view answers (read from the `Allow` header of
its 405, not from the OpenAPI document they are checked against) and the API key scope each
method needs. Shared by the schema tests and the fuzz tests, so a new route is found by both.
"""

from __future__ import annotations

import inspect
import uuid
from dataclasses import dataclass
from typing import Any

from django.test import Client
from django.urls import get_resolver
from django.urls.converters import IntConverter, UUIDConverter

from tests.security.endpoints import _walk

API_NAMESPACE = ("notifier", "api-v1")
# The API's own furniture, not routes: its root, the document and the document's page.
NOT_ROUTES = {"api-root", "openapi-json", "openapi-view"}
# A method no route of the API answers: its 405 lists the ones the route does.
PROBE_METHOD = "TRACE"


@dataclass(frozen=True)
class ApiRoute:
    method: str
    openapi_path: str  # as the document writes it: /api/v1/messages/{message_id}
    url: str  # callable: each parameter filled with a value of its converter's type
    scopes: tuple[str, ...]  # an API key needs one of these scopes; none: a public route
    app: bool  # an app token may call it too (for its own recipient)
    name: str


def _openapi_path(route: str) -> str:
    """api/v1/messages/<int:message_id> -> /api/v1/messages/{message_id}"""
    parts = []
    for part in route.split("/"):
        if part.startswith("<") and part.endswith(">"):
            part = "{" + part[1:-1].split(":")[-1] + "}"
        parts.append(part)
    return "/" + "/".join(parts)


def _sample(converter: Any) -> str:
    if isinstance(converter, IntConverter):
        return "1"
    if isinstance(converter, UUIDConverter):
        return str(uuid.uuid4())
    return "x"


def _url(route: str, converters: dict[str, Any]) -> str:
    url = "/" + route
    for name, converter in converters.items():
        for written in (f"<{name}>", *(f"<{kind}:{name}>" for kind in ("int", "str", "uuid"))):
            url = url.replace(written, _sample(converter))
    return url


def _auth(callback: Any, method: str) -> tuple[tuple[str, ...], bool]:
    """The scopes an API key may hold to call the django-ninja operation behind `callback` for
    `method` (its view closes over the operations' PathView), and whether an app token may;
    no scopes for a public route."""
    path_view = inspect.getclosurevars(callback).nonlocals.get("self")
    operations = [op for op in getattr(path_view, "operations", []) if method in op.methods]
    assert len(operations) == 1, f"{callback}: {len(operations)} operations for {method}"
    auths = operations[0].auth_callbacks
    assert len(auths) <= 1, f"{method} {callback}: several auths {auths}"
    if not auths:
        return (), False
    scopes = getattr(auths[0], "scopes", None)
    assert scopes, f"{method} {callback}: an auth without API key scopes ({auths[0]!r})"
    return tuple(str(scope) for scope in scopes), bool(getattr(auths[0], "app", False))


def api_routes(client: Client | None = None) -> list[ApiRoute]:
    """Every (method, path) the API serves, once each (django-ninja names one URL pattern per
    operation of a path, each answering all of the path's methods), in URLconf order."""
    client = client or Client()
    routes: dict[tuple[str, str], ApiRoute] = {}
    for pattern, route, namespaces, converters in _walk(get_resolver().url_patterns):
        if namespaces[-2:] != API_NAMESPACE or pattern.name in NOT_ROUTES:
            continue
        url = _url(route, converters)
        answer = client.generic(PROBE_METHOD, url)
        assert answer.status_code == 405, f"{PROBE_METHOD} {url}: {answer.status_code}"
        methods = sorted(m.strip() for m in answer["Allow"].split(",") if m.strip())
        for method in methods:
            scopes, app = _auth(pattern.callback, method)
            found = ApiRoute(
                method=method,
                openapi_path=_openapi_path(route),
                url=url,
                scopes=scopes,
                app=app,
                name=pattern.name or "",
            )
            routes.setdefault((found.method, found.openapi_path), found)
    return list(routes.values())
