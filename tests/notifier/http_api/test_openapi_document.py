"""The OpenAPI document the app serves at /api/v1/openapi.json: valid OpenAPI 3 (the official
meta-schema, through Schemathesis), and every route the URLconf serves, with every method, in
it: a route added without a place in the document fails here."""

from __future__ import annotations

import json
from typing import Any

import pytest
import schemathesis
from django.core.serializers.json import DjangoJSONEncoder
from django.test import Client

from notifier.http_api.api import api
from tests.notifier.http_api.routes import api_routes

pytestmark = pytest.mark.django_db

METHODS = ("get", "put", "post", "delete", "options", "head", "patch", "trace")


@pytest.fixture
def served() -> dict[str, Any]:
    response = Client().get("/api/v1/openapi.json")
    assert response.status_code == 200
    assert response["Content-Type"].startswith("application/json")
    document: dict[str, Any] = response.json()
    return document


def test_the_served_document_is_valid_openapi_3(served: dict[str, Any]) -> None:
    assert served["openapi"].startswith("3.")
    schemathesis.openapi.from_dict(served).validate()  # raises naming what is invalid
    assert served["info"]["title"] and served["info"]["version"]


def test_the_served_document_is_the_one_the_code_builds(served: dict[str, Any]) -> None:
    built = json.loads(json.dumps(api.get_openapi_schema(), cls=DjangoJSONEncoder))
    assert served == built


def test_every_route_and_method_the_urlconf_serves_is_in_the_document(
    served: dict[str, Any],
) -> None:
    routes = api_routes()
    assert routes, "no route found under the notifier:api-v1 namespace"
    served_operations = {(route.method, route.openapi_path) for route in routes}
    documented = {
        (method.upper(), path)
        for path, operations in served["paths"].items()
        for method in operations
        if method in METHODS
    }
    missing = served_operations - documented
    assert not missing, f"served but missing from the OpenAPI document: {sorted(missing)}"
    phantom = documented - served_operations
    assert not phantom, f"in the OpenAPI document but not served: {sorted(phantom)}"


def test_every_route_needing_a_key_declares_it_and_its_refusals(
    served: dict[str, Any],
) -> None:
    """A client generated from the document knows which calls need the bearer key, and what a
    refusal looks like (the error's type and message)."""
    schemes = served["components"]["securitySchemes"]
    for route in api_routes():
        operation = served["paths"][route.openapi_path][route.method.lower()]
        where = f"{route.method} {route.openapi_path}"
        if not route.scopes:
            assert not operation.get("security"), f"{where} is public but declares a key"
            continue
        assert operation.get("security"), f"{where} needs a key but declares none"
        for requirement in operation["security"]:
            for scheme in requirement:
                assert schemes[scheme] == {"type": "http", "scheme": "bearer"}, where
        for status in ("401", "403"):
            assert status in operation["responses"], f"{where} does not declare its {status}"
