"""Who is calling: an API key in `Authorization: Bearer ntf_…`, live, with the scope the route
needs, within its rate limit. The key itself never reaches a log line or Sentry: only its
public prefix is kept on the request (`request.api_key`)."""

from __future__ import annotations

from typing import Any

from django.http import HttpRequest
from ninja.security import HttpBearer

from notifier.models.api_keys import ApiKey, ApiScope
from notifier.services.api_keys import api_key_authenticate, api_key_throttle
from notifier.services.app_tokens import (
    TOKEN_PREFIX as APP_TOKEN_PREFIX,
)
from notifier.services.app_tokens import (
    AppCaller,
    InvalidAppToken,
    app_token_read,
    app_token_throttle,
)


class ApiError(Exception):
    """An answer other than 2xx: `status`, and a body of {"type": ..., "message": ...}."""

    def __init__(self, status: int, type_: str, message: str, **headers: str) -> None:
        super().__init__(message)
        self.status = status
        self.type = type_
        self.message = message
        self.headers = headers


class ApiKeyAuth(HttpBearer):
    """A bearer API key holding `scope` (or any of `also`: a read that a key for reading and a
    key for writing may both make). With `app=True`, an app token (`ntr_…`) may call the
    route too, for its own recipient only (the route's `external_id`)."""

    def __init__(self, scope: ApiScope, *also: ApiScope, app: bool = False) -> None:
        super().__init__()
        self.scope = scope
        self.scopes = (scope, *also)
        self.app = app

    def __call__(self, request: HttpRequest) -> Any:
        found = super().__call__(request)
        if found is None:
            raise ApiError(
                401,
                "Unauthorized",
                "send an API key as 'Authorization: Bearer ntf_…'; an admin creates keys "
                "under API keys in the admin",
                **{"WWW-Authenticate": "Bearer"},
            )
        return found

    def authenticate(self, request: HttpRequest, token: str) -> ApiKey | AppCaller | None:
        if token.startswith(APP_TOKEN_PREFIX):
            return self._app(request, token)
        key = api_key_authenticate(token)
        if key is None:
            raise ApiError(
                401,
                "Unauthorized",
                "this API key is unknown or revoked",
                **{"WWW-Authenticate": 'Bearer error="invalid_token"'},
            )
        if not any(scope in key.scopes for scope in self.scopes):
            needed = " or ".join(repr(scope.value) for scope in self.scopes)
            raise ApiError(
                403,
                "Forbidden",
                f"this API key lacks the {needed} scope; its scopes are "
                f"{', '.join(key.scopes) or 'none'}",
            )
        throttled = api_key_throttle(key)
        if throttled is not None:
            raise ApiError(
                429,
                "TooManyRequests",
                f"this API key is over its rate limit; try again in {throttled.retry_after_s} s",
                **{"Retry-After": str(throttled.retry_after_s)},
            )
        request.api_key = key  # type: ignore[attr-defined]
        return key

    def _app(self, request: HttpRequest, token: str) -> AppCaller:
        try:
            caller = app_token_read(token)
        except InvalidAppToken as exc:
            raise ApiError(
                401,
                "Unauthorized",
                str(exc),
                **{"WWW-Authenticate": 'Bearer error="invalid_token"'},
            ) from None
        if not self.app:
            raise ApiError(
                403,
                "Forbidden",
                "an app token may only register its recipient's devices and read or change "
                "their preferences and consent; this route needs an API key",
            )
        match = request.resolver_match
        if match is None or match.kwargs.get("external_id") != caller.external_id:
            raise ApiError(403, "Forbidden", "this app token is for another recipient")
        throttled = app_token_throttle(caller)
        if throttled is not None:
            raise ApiError(
                429,
                "TooManyRequests",
                f"too many requests for this recipient; try again in {throttled.retry_after_s} s",
                **{"Retry-After": str(throttled.retry_after_s)},
            )
        request.app_caller = caller  # type: ignore[attr-defined]
        return caller
