"""Small HTTP middleware of the public surface: a 405 that says which methods to use."""

from __future__ import annotations

import json
from collections.abc import Callable

from django.http import HttpRequest, HttpResponse


class ExplainMethodNotAllowedMiddleware:
    """Django's 405 (require_http_methods) has an Allow header and an empty body; a client
    reading the body sees nothing. Say it in words: JSON under /api/, plain text elsewhere."""

    def __init__(self, get_response: Callable[[HttpRequest], HttpResponse]) -> None:
        self.get_response = get_response

    def __call__(self, request: HttpRequest) -> HttpResponse:
        response = self.get_response(request)
        if response.status_code != 405 or getattr(response, "streaming", False):
            return response
        if response.content:
            return response
        allowed = response.get("Allow", "")
        text = f"{request.method} is not allowed here; use {allowed or 'another method'}."
        if request.path.startswith("/api/"):
            response.content = json.dumps({"error": text}).encode()
            response["Content-Type"] = "application/json"
        else:
            response.content = (text + "\n").encode()
            response["Content-Type"] = "text/plain; charset=utf-8"
        return response
