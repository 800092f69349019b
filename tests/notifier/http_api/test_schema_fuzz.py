"""The service API's OpenAPI document, as the app serves it, fuzzed by Schemathesis against a
real gunicorn (DEBUG off, the test database): never a 5xx, every answer as the document
declares it, schema-invalid input refused, and a refused call writes nothing; without a valid
key (401), with a key lacking the route's scopes or another recipient's app token (403),
every call is refused and writes nothing.

Every operation of the document is a test of its own (the document the code builds names
them at collection; each test fuzzes that operation of the document the server serves), so a
route added to notifier/http_api/ is fuzzed without being listed here. Bounded and
reproducible: FUZZ_EXAMPLES valid and as many schema-invalid cases per operation,
derandomized, no example database.

Schemathesis' own pytest integration (`schemathesis.pytest.from_fixture(...).parametrize()`)
is not used: Schemathesis 4.32 reads `request.node._nodeid`, which pytest 9 no longer has. Its
strategies and checks are the same ones that integration runs.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable, Iterator
from typing import Any

import pytest
import requests
import schemathesis
from hypothesis import HealthCheck, given, settings
from hypothesis.errors import Unsatisfiable
from schemathesis import GenerationMode
from schemathesis.checks import not_a_server_error
from schemathesis.specs.openapi.checks import (
    content_type_conformance,
    negative_data_rejection,
    response_headers_conformance,
    response_schema_conformance,
    status_code_conformance,
)

from notifier import dispatch
from notifier.api import notify
from notifier.http_api.api import api
from notifier.models import ApiScope
from notifier.services.api_keys import api_key_create, api_key_revoke
from notifier.services.app_tokens import app_token_issue
from notifier.services.recipients import recipient_put
from tests.factories import UserFactory, order_context
from tests.gunicorn import API_SERVER_ENV, GunicornServer
from tests.notifier.http_api.routes import ApiRoute, api_routes
from tests.security.test_bad_input import snapshot

# Committed rows (the server's connection reads them), ids counted from 1 (`known_rows`).
pytestmark = pytest.mark.django_db(transaction=True, reset_sequences=True)

FUZZ_EXAMPLES = 25
FUZZ = settings(
    max_examples=FUZZ_EXAMPLES,
    derandomize=True,  # the same cases on every run: a failure is reproducible
    database=None,
    deadline=None,  # a real server on a shared 2-core machine
    suppress_health_check=list(HealthCheck),
)
# What every answer is held to; negative_data_rejection only judges schema-invalid cases.
CHECKS = [
    not_a_server_error,
    status_code_conformance,
    content_type_conformance,
    response_headers_conformance,
    response_schema_conformance,
]
HTTP_METHODS = {"get", "put", "post", "delete", "patch"}
DOCUMENT = api.get_openapi_schema()
# Every operation; those that need a key (test_openapi_document holds the document's
# `security` to what the code demands).
OPERATIONS = [
    pytest.param(method.upper(), path, id=f"{method.upper()} {path}")
    for path, operations in DOCUMENT["paths"].items()
    for method, operation in operations.items()
    if method in HTTP_METHODS
]
WITH_KEY = [
    pytest.param(method.upper(), path, id=f"{method.upper()} {path}")
    for path, operations in DOCUMENT["paths"].items()
    for method, operation in operations.items()
    if method in HTTP_METHODS and operation.get("security")
]


@pytest.fixture
def api_server(gunicorn_server: Callable[..., GunicornServer]) -> GunicornServer:
    return gunicorn_server(**API_SERVER_ENV)


@pytest.fixture(autouse=True)
def known_rows(monkeypatch: pytest.MonkeyPatch) -> None:
    """Users and messages numbered 1 to 3: the small ids cases are made of find something, so
    a 200 is checked against the document too, not only the refusals."""
    monkeypatch.setattr(dispatch, "publish_prepare", lambda *args, **kwargs: None)
    for _ in range(3):
        notify(UserFactory(), "order.shipped", order_context())


@pytest.fixture
def http() -> Iterator[requests.Session]:
    with requests.Session() as session:
        yield session


@pytest.fixture
def served(api_server: GunicornServer) -> Any:
    """The document the running server serves, not the one this process builds; cases carry
    no credentials of their own (each test sends its own)."""
    config = schemathesis.Config.from_dict(
        {"seed": 13, "generation": {"with-security-parameters": False}}
    )
    return schemathesis.openapi.from_url(
        f"{api_server.base_url}/api/v1/openapi.json", config=config
    )


def statuses(seen: Counter[int]) -> str:
    """What the cases reached, for the run's summary of figures."""
    return "answered " + ", ".join(f"{count}x {status}" for status, count in sorted(seen.items()))


def fuzz(
    operation: Any, mode: GenerationMode, call: Callable[[Any], int], seen: Counter[int]
) -> bool:
    """`call(case)` for FUZZ_EXAMPLES cases of `operation` in `mode`; `seen` counts the
    statuses it returns. False when not one case of that mode exists."""

    @FUZZ
    @given(case=operation.as_strategy(generation_mode=mode))
    def run(case: Any) -> None:
        seen[call(case)] += 1

    try:
        run()
    except Unsatisfiable:
        # Only when not one case could be made: an operation whose every input the document
        # leaves free (a bare string in the path, no body) has no schema-invalid form to send.
        if mode is not GenerationMode.NEGATIVE:
            raise
        return False
    return True


def refused_wrote_nothing(before: dict[str, str], status: int, what: str) -> None:
    if 400 <= status < 500:
        changed = sorted(table for table, digest in snapshot().items() if before[table] != digest)
        assert not changed, f"{what}: answered {status} but wrote to {', '.join(changed)}"


def route_of(method: str, path: str) -> ApiRoute:
    """The route as its code declares it: the scopes it accepts, whether an app may call it."""
    routes = {(route.method, route.openapi_path): route for route in api_routes()}
    return routes[(method, path)]


@pytest.mark.parametrize(("method", "path"), OPERATIONS)
def test_fuzzed_with_a_key_of_every_scope(
    method: str,
    path: str,
    served: Any,
    api_server: GunicornServer,
    http: requests.Session,
    report_figure: Callable[[str], None],
) -> None:
    seen: Counter[int] = Counter()
    # Its rate limit out of the way: every case reaches the checks behind authentication.
    key = api_key_create(name="schemathesis", scopes=ApiScope.values, rate_limit="1000000/s")
    operation = served[path][method]

    def call(case: Any, checks: list[Any]) -> int:
        before = snapshot()
        response = case.call_and_validate(
            base_url=api_server.base_url,
            session=http,
            headers={"Authorization": f"Bearer {key.token}"},
            checks=checks,
        )
        refused_wrote_nothing(before, response.status_code, f"{method} {case.formatted_path}")
        return int(response.status_code)

    fuzz(operation, GenerationMode.POSITIVE, lambda case: call(case, CHECKS), seen)
    negated = fuzz(
        operation,
        GenerationMode.NEGATIVE,
        lambda case: call(case, [*CHECKS, negative_data_rejection]),
        seen,
    )
    report_figure(statuses(seen) + ("" if negated else "; no schema-invalid input exists"))


def wrong_credentials() -> dict[str, str | None]:
    """Authorization headers the API must refuse: none, not a bearer key, not a key, a forged
    key, a revoked key of every scope."""
    revoked = api_key_create(name="revoked", scopes=ApiScope.values)
    api_key_revoke(key=revoked.key)
    real = api_key_create(name="real", scopes=ApiScope.values).token
    forged = real[:-4] + ("AAAA" if not real.endswith("AAAA") else "BBBB")
    return {
        "no": None,
        "basic": "Basic dXNlcjpwYXNz",
        "not-a-key": "Bearer not-a-key",
        "forged": f"Bearer {forged}",
        "revoked": f"Bearer {revoked.token}",
    }


@pytest.mark.parametrize(("method", "path"), WITH_KEY)
def test_fuzzed_without_a_valid_key_is_refused_and_writes_nothing(
    method: str,
    path: str,
    served: Any,
    api_server: GunicornServer,
    http: requests.Session,
    report_figure: Callable[[str], None],
) -> None:
    seen: Counter[int] = Counter()
    credentials = wrong_credentials()

    def call(case: Any) -> int:
        for label, authorization in credentials.items():
            before = snapshot()
            response = case.call(
                base_url=api_server.base_url,
                session=http,
                headers={"Authorization": authorization} if authorization else {},
            )
            what = f"{method} {case.formatted_path} with {label} credentials"
            assert response.status_code == 401, f"{what}: {response.status_code} {response.text}"
            case.validate_response(response, checks=CHECKS)
            refused_wrote_nothing(before, response.status_code, what)
        return int(response.status_code)

    # Valid cases only: a schema-invalid path may not even reach the route.
    fuzz(served[path][method], GenerationMode.POSITIVE, call, seen)
    report_figure(statuses(seen))


@pytest.mark.parametrize(("method", "path"), WITH_KEY)
def test_fuzzed_with_a_key_lacking_the_routes_scope_is_forbidden_and_writes_nothing(
    method: str,
    path: str,
    served: Any,
    api_server: GunicornServer,
    http: requests.Session,
    report_figure: Callable[[str], None],
) -> None:
    seen: Counter[int] = Counter()
    route = route_of(method, path)
    assert route.scopes, f"{method} {path} declares a key in the document but needs none"
    # Every scope but those the route accepts.
    others = [other for other in ApiScope.values if other not in route.scopes]
    assert others, f"{method} {path} accepts every scope: no key lacks one"
    key = api_key_create(name="lacking", scopes=others, rate_limit="1000000/s").token
    # An app token may call a few routes, for its own recipient only: this one is nobody's
    # the cases name.
    owner = recipient_put("app-token-owner-not-generated", {}).recipient
    app = app_token_issue(owner).token
    callers = {f"a key without {' or '.join(route.scopes)}": key, "another recipient's app": app}

    def call(case: Any) -> int:
        for label, token in callers.items():
            before = snapshot()
            response = case.call(
                base_url=api_server.base_url,
                session=http,
                headers={"Authorization": f"Bearer {token}"},
            )
            what = f"{method} {case.formatted_path} with {label}"
            assert response.status_code == 403, f"{what}: {response.status_code} {response.text}"
            if token == key:
                assert all(scope in response.json()["message"] for scope in route.scopes), what
            case.validate_response(response, checks=CHECKS)
            refused_wrote_nothing(before, response.status_code, what)
        return int(response.status_code)

    fuzz(served[path][method], GenerationMode.POSITIVE, call, seen)
    report_figure(statuses(seen))
