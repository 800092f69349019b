"""The routes of `/api/v1/`: each checks its input the way `notify()` does (the same functions,
the same typed errors), answers a refused call with 4xx JSON naming the error's type and what
to fix, and writes nothing when it refuses."""

from __future__ import annotations

import json
from datetime import datetime
from typing import Any

from django.conf import settings
from django.http import Http404, HttpRequest, HttpResponse
from ninja import NinjaAPI, Schema, Status
from ninja.errors import HttpError, ValidationError
from pydantic import Field, StrictInt, StrictStr

from notifier.api import notify, notify_many
from notifier.errors import IdempotencyKeyReused, NotifyError
from notifier.http_api.auth import ApiError, ApiKeyAuth
from notifier.models import Delivery, Message
from notifier.models.api_keys import ApiScope
from notifier.status import Reason
from notifier.user_keys import user_key_json

api = NinjaAPI(
    title="Notifier",
    version="1",
    description="Send notifications from another service or an app, and read what happened to "
    "them. Authenticate with an API key: `Authorization: Bearer ntf_…`.",
    urls_namespace="notifier:api-v1",  # inside the app's URLconf, namespaced "notifier"
)

# A user key as JSON carries it: an integer id, or the text of a UUID or text key.
UserKeyIn = StrictInt | StrictStr


class Problem(Schema):
    type: str = Field(description="The error's name, e.g. InvalidRecipient")
    message: str = Field(description="What was wrong and what to send instead")


class NotifyIn(Schema):
    user: UserKeyIn = Field(description="The recipient: the key (pk) of a user of the product")
    type: StrictStr = Field(description="A notification type's key, e.g. order.shipped")
    context: dict[str, Any] = Field(
        default_factory=dict, description="The values the type's templates use"
    )
    channels: list[StrictStr] | None = Field(
        default=None, description="Only these of the type's channels (default: all of them)"
    )
    expires_at: datetime | None = Field(
        default=None, description="Not worth sending after this (with a time zone)"
    )


class Accepted(Schema):
    message: int = Field(description="The message's id; the same for a repeated call")


class NotifyManyIn(Schema):
    users: list[UserKeyIn] = Field(description="The recipients' keys, each once")
    type: StrictStr
    context: dict[str, Any] = Field(default_factory=dict, description="Shared by everyone")
    contexts: dict[str, dict[str, Any]] | None = Field(
        default=None, description="Per user key (as text): values that override `context`"
    )
    channels: list[StrictStr] | None = None
    expires_at: datetime | None = None


class AcceptedMany(Schema):
    messages: list[int] = Field(description="One message id per user, in the order given")
    created: int = Field(description="How many of them this call created")


class DeliveryOut(Schema):
    channel: str
    status: str
    reason: str = Field(description="Why it was not sent, in words; empty when it was")
    attempts: int
    provider: str
    updated_at: datetime


class MessageOut(Schema):
    id: int
    user: int | str
    type: str
    created_at: datetime
    deliveries: list[DeliveryOut]


def _problem(request: HttpRequest, status: int, type_: str, message: str) -> HttpResponse:
    return api.create_response(request, {"type": type_, "message": message}, status=status)


@api.exception_handler(ApiError)
def _api_error(request: HttpRequest, exc: ApiError) -> HttpResponse:
    response = _problem(request, exc.status, exc.type, exc.message)
    for name, value in exc.headers.items():
        response[name] = value
    return response


@api.exception_handler(NotifyError)
def _notify_error(request: HttpRequest, exc: NotifyError) -> HttpResponse:
    status = 409 if isinstance(exc, IdempotencyKeyReused) else 422
    return _problem(request, status, type(exc).__name__, str(exc))


@api.exception_handler(HttpError)
def _http_error(request: HttpRequest, exc: HttpError) -> HttpResponse:
    """django-ninja's own refusals (a body it cannot parse as JSON: 400), in our shape."""
    status = exc.status_code
    return _problem(request, status, HTTP_ERROR_TYPES.get(status, "InvalidRequest"), str(exc))


HTTP_ERROR_TYPES = {401: "Unauthorized", 403: "Forbidden", 404: "NotFound"}


@api.exception_handler(Http404)
def _not_found(request: HttpRequest, exc: Http404) -> HttpResponse:
    return _problem(request, 404, "NotFound", str(exc) or "no such object")


@api.exception_handler(ValidationError)
def _validation_error(request: HttpRequest, exc: ValidationError) -> HttpResponse:
    problems = []
    for error in exc.errors[:10]:
        where = ".".join(str(part) for part in error.get("loc", ()) if part != "body")
        problems.append(f"{where or 'body'}: {error.get('msg', 'invalid')}")
    return _problem(request, 422, "InvalidRequest", "; ".join(problems) or "invalid request")


def _idempotency_key(request: HttpRequest) -> str | None:
    return request.headers.get("Idempotency-Key")


def _plain(value: Any) -> Any:
    """As JSON holds it (what a message stores), to compare a repeated call's body."""
    return json.loads(json.dumps(value, default=str))


def _same_request(message: Message, *, context: dict[str, Any], body: Any) -> bool:
    return bool(
        message.context == _plain(context)
        and (body.channels is None or message.channels == list(body.channels))
        and message.expires_at == body.expires_at
    )


@api.post(
    "/notify",
    auth=ApiKeyAuth(ApiScope.NOTIFY),
    response={202: Accepted, 401: Problem, 403: Problem, 409: Problem, 422: Problem, 429: Problem},
    summary="Notify one user",
)
def notify_one(request: HttpRequest, body: NotifyIn) -> Status[dict[str, int]]:
    """What `notify()` does in the product's own process. With an `Idempotency-Key` header,
    the same key and the same body give the same message (202 again); the same key with
    another body is refused (409)."""
    key = _idempotency_key(request)
    message = notify(
        body.user,
        body.type,
        body.context,
        idempotency_key=key,
        channels=body.channels,
        expires_at=body.expires_at,
    )
    if key is not None and not _same_request(message, context=body.context, body=body):
        raise ApiError(
            409,
            "IdempotencyKeyReused",
            f"Idempotency-Key {key!r} was used for another request; send a new key",
        )
    return Status(202, {"message": message.pk})


@api.post(
    "/notify/bulk",
    auth=ApiKeyAuth(ApiScope.NOTIFY),
    response={
        202: AcceptedMany,
        401: Problem,
        403: Problem,
        409: Problem,
        422: Problem,
        429: Problem,
    },
    summary="Notify many users at once",
)
def notify_bulk(request: HttpRequest, body: NotifyManyIn) -> Status[dict[str, Any]]:
    """What `notify_many()` does: all or nothing, up to NOTIFIER_API_BULK_MAX users a call.
    With an `Idempotency-Key`, each user's message is keyed `<key>:<user>`."""
    most = settings.NOTIFIER_API_BULK_MAX
    if len(body.users) > most:
        raise ApiError(
            422,
            "TooManyRecipients",
            f"{len(body.users)} users in one call; send at most {most} a call",
        )
    contexts = _contexts_by_key(body)
    key = _idempotency_key(request)
    result = notify_many(
        body.users,
        body.type,
        body.context,
        contexts=contexts,
        idempotency_key=key,
        channels=body.channels,
        expires_at=body.expires_at,
    )
    if key is not None and result.existing:
        messages = Message.objects.in_bulk(result.message_ids)
        for user, message_id in zip(body.users, result.message_ids, strict=True):
            own = {**body.context, **(contexts or {}).get(user, {})}
            if not _same_request(messages[message_id], context=own, body=body):
                raise ApiError(
                    409,
                    "IdempotencyKeyReused",
                    f"Idempotency-Key {key!r} was used for another request; send a new key",
                )
    return Status(202, {"messages": result.message_ids, "created": result.created})


def _reason_in_words(reason: str) -> str:
    return str(Reason(reason).label) if reason in Reason.values else reason


def _contexts_by_key(body: NotifyManyIn) -> dict[Any, dict[str, Any]] | None:
    """`contexts` is keyed by the users' keys as text (JSON object keys are text): each one
    back to the key as given in `users`."""
    if body.contexts is None:
        return None
    by_text = {str(user): user for user in body.users}
    unknown = [text for text in body.contexts if text not in by_text]
    if unknown:
        raise ApiError(
            422,
            "InvalidContext",
            f"contexts names {unknown[0]!r}, which is not in users",
        )
    return {by_text[text]: values for text, values in body.contexts.items()}


@api.get(
    "/messages/{message_id}",
    auth=ApiKeyAuth(ApiScope.READ),
    response={200: MessageOut, 401: Problem, 403: Problem, 404: Problem, 429: Problem},
    summary="A message and what happened on each channel",
)
def message_read(request: HttpRequest, message_id: int) -> Status[dict[str, Any]]:
    """Each delivery's status and, for one not sent, the reason in words: what support sees
    on the timeline."""
    message = Message.objects.filter(pk=message_id).first()
    if message is None:
        raise ApiError(404, "NotFound", f"no message {message_id}")
    deliveries = Delivery.objects.filter(message_id=message.pk).order_by("channel")
    return Status(
        200,
        {
            "id": message.pk,
            "user": user_key_json(message.user_id),
            "type": message.type_id,
            "created_at": message.created_at,
            "deliveries": [
                {
                    "channel": d.channel,
                    "status": d.status,
                    "reason": _reason_in_words(d.reason),
                    "attempts": d.attempts,
                    "provider": d.provider or "",
                    "updated_at": d.updated_at,
                }
                for d in deliveries
            ],
        },
    )
