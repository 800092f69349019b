"""The routes of `/api/v1/`: each checks its input the way `notify()` does (the same functions,
the same typed errors), answers a refused call with 4xx JSON naming the error's type and what
to fix, and writes nothing when it refuses."""

from __future__ import annotations

import json
from datetime import datetime
from typing import Any, Literal

from django.conf import settings
from django.db import transaction
from django.http import Http404, HttpRequest, HttpResponse
from django.views.decorators.http import require_safe
from ninja import NinjaAPI, Schema, Status
from ninja.errors import HttpError, ValidationError
from ninja.openapi.schema import OpenAPISchema
from ninja.parser import Parser
from pydantic import Field, StrictInt, StrictStr

from channels.push import vapid_public_key
from notifier.api import notify, notify_cancel, notify_many, notify_topic, same_call
from notifier.errors import IdempotencyKeyReused, InvalidRecipient, NotifyError
from notifier.http_api.auth import ApiError, ApiKeyAuth
from notifier.http_api.common import Problem, answers
from notifier.http_api.messages import router as messages_router
from notifier.http_api.recipients import router as recipients_router
from notifier.models import Message, Recipient, TopicSubscription
from notifier.models.api_keys import ApiScope
from notifier.services.devices import DeviceError, UnknownDevice
from notifier.services.erasure import ErasureError
from notifier.services.preferences import PreferenceError
from notifier.services.recipients import (
    EXTERNAL_ID_RULE,
    RecipientConflict,
    RecipientError,
    UnknownRecipient,
    check_external_id,
)
from notifier.services.snoozes import SnoozeError
from notifier.text import text_problem


class ObjectBodies(Parser):
    """A JSON body is an object: django-ninja would otherwise read an array, a number or a
    string as an empty object, and a PUT of `[]` would create a recipient."""

    def parse_body(self, request: HttpRequest) -> dict[str, Any]:
        data = json.loads(request.body)
        if not isinstance(data, dict):
            raise ValueError("not a JSON object")  # ninja answers 400, see _http_error
        return data


class Api(NinjaAPI):
    """The API, whose OpenAPI document is made once per process (it is derived from the code)
    and read only with GET or HEAD (anything else is a 405 saying so)."""

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(docs_decorator=require_safe, **kwargs)
        self._schemas: dict[str, OpenAPISchema] = {}

    def get_openapi_schema(
        self, *, path_prefix: str | None = None, path_params: dict[str, Any] | None = None
    ) -> OpenAPISchema:
        if path_prefix is None:
            path_prefix = self.get_root_path(path_params or {})
        if path_prefix not in self._schemas:
            self._schemas[path_prefix] = super().get_openapi_schema(path_prefix=path_prefix)
        return self._schemas[path_prefix]


api = Api(
    parser=ObjectBodies(),
    title="Notifier",
    version="1",
    description="Send notifications from another service or an app, and read what happened to "
    "them. Authenticate with an API key: `Authorization: Bearer ntf_…`.",
    urls_namespace="notifier:api-v1",  # inside the app's URLconf, namespaced "notifier"
)

# A user key as JSON carries it: an integer id, or the text of a UUID or text key.
UserKeyIn = StrictInt | StrictStr


class Workflow(Schema):
    """What /notify and /notify/bulk say beyond the message: when it goes, and the keys that
    cancel, throttle and digest it (see README, "Workflows")."""

    send_at: datetime | None = Field(
        default=None,
        description="Hold it until this moment (ISO 8601 with its time zone); "
        "cancel it meanwhile with its cancel_key",
    )
    send_at_local: datetime | None = Field(
        default=None,
        description="Or hold it until this wall-clock time in each recipient's own time zone "
        "(ISO 8601 without a zone, e.g. 2026-12-24T09:00:00)",
    )
    if_past: Literal["refuse", "send_now"] = Field(
        default="refuse",
        description="A send time already past (more than a minute): refuse the call (422), "
        "or send at once",
    )
    cancel_key: StrictStr | None = Field(
        default=None,
        description="Your name for it: POST /notify/cancel with it takes back what has not "
        "gone out. Any number of messages may share one",
    )
    throttle_key: StrictStr | None = Field(
        default=None,
        description="What the type's throttle (if it has one) counts it under, e.g. "
        "product:42 (default: the type itself)",
    )
    digest_key: StrictStr | None = Field(
        default=None,
        description="What the type's digest (if it has one) groups it under, e.g. post:42 "
        "(default: the type itself)",
    )


class NotifyIn(Workflow):
    user: UserKeyIn | None = Field(
        default=None, description="The recipient: the key (pk) of a user of the product"
    )
    recipient: StrictStr | None = Field(
        default=None, description="Or the recipient's external_id (see PUT /recipients/…)"
    )
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


class NotifyManyIn(Workflow):
    users: list[UserKeyIn] | None = Field(
        default=None, description="The recipients' user keys, each once"
    )
    recipients: list[StrictStr] | None = Field(
        default=None, description="Or their external_ids, each once"
    )
    type: StrictStr
    context: dict[str, Any] = Field(default_factory=dict, description="Shared by everyone")
    contexts: dict[str, dict[str, Any]] | None = Field(
        default=None,
        description="Per user key (as text) or external_id: values that override `context`",
    )
    channels: list[StrictStr] | None = None
    expires_at: datetime | None = None


class AcceptedMany(Schema):
    messages: list[int] = Field(description="One message id per user, in the order given")
    created: int = Field(description="How many of them this call created")


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


@api.exception_handler(RecipientError)
def _recipient_error(request: HttpRequest, exc: RecipientError) -> HttpResponse:
    status = (
        404
        if isinstance(exc, UnknownRecipient)
        else 409
        if isinstance(exc, RecipientConflict)
        else 422
    )
    return _problem(request, status, type(exc).__name__, str(exc))


@api.exception_handler(DeviceError)
def _device_error(request: HttpRequest, exc: DeviceError) -> HttpResponse:
    status = 404 if isinstance(exc, UnknownDevice) else 422
    return _problem(request, status, type(exc).__name__, str(exc))


@api.exception_handler(ErasureError)
def _erasure_error(request: HttpRequest, exc: ErasureError) -> HttpResponse:
    return _problem(request, 422, type(exc).__name__, str(exc))


@api.exception_handler(SnoozeError)
def _snooze_error(request: HttpRequest, exc: SnoozeError) -> HttpResponse:
    return _problem(request, 422, type(exc).__name__, str(exc))


@api.exception_handler(PreferenceError)
def _preference_error(request: HttpRequest, exc: PreferenceError) -> HttpResponse:
    return _problem(request, 422, type(exc).__name__, str(exc))


@api.exception_handler(HttpError)
def _http_error(request: HttpRequest, exc: HttpError) -> HttpResponse:
    """django-ninja's own refusals (a body it cannot parse as JSON: 400), in our shape."""
    status = exc.status_code
    message = str(exc)
    if status == 400 and message.startswith("Cannot parse request body"):
        message = 'the body must be a JSON object, e.g. {"name": "value"}'
    return _problem(request, status, HTTP_ERROR_TYPES.get(status, "InvalidRequest"), message)


HTTP_ERROR_TYPES = {401: "Unauthorized", 403: "Forbidden", 404: "NotFound"}


@api.exception_handler(Http404)
def _not_found(request: HttpRequest, exc: Http404) -> HttpResponse:
    return _problem(request, 404, "NotFound", str(exc) or "no such object")


@api.exception_handler(ValidationError)
def _validation_error(request: HttpRequest, exc: ValidationError) -> HttpResponse:
    problems = []
    for error in exc.errors[:10]:
        loc = tuple(error.get("loc", ()))
        if loc[-1:] == ("external_id",) and loc[:1] == ("path",):
            problems.append(EXTERNAL_ID_RULE)
            continue
        where = ".".join(str(part) for part in loc if part != "body")
        problems.append(f"{where or 'body'}: {error.get('msg', 'invalid')}")
    return _problem(request, 422, "InvalidRequest", "; ".join(problems) or "invalid request")


def _idempotency_key(request: HttpRequest) -> str | None:
    return request.headers.get("Idempotency-Key")


def _same_request(message: Message, *, context: dict[str, Any], body: Any) -> bool:
    return same_call(
        message,
        context=context,
        channels=body.channels,
        expires_at=body.expires_at,
        send_at=body.send_at,
        send_at_local=body.send_at_local,
        cancel_key=body.cancel_key,
        throttle_key=body.throttle_key,
        digest_key=body.digest_key,
    )


@api.post(
    "/notify",
    auth=ApiKeyAuth(ApiScope.NOTIFY),
    response=answers({202: Accepted}, 409),
    summary="Notify one user",
)
def notify_one(request: HttpRequest, body: NotifyIn) -> Status[dict[str, int]]:
    """What `notify()` does in the product's own process. With an `Idempotency-Key` header,
    the same key and the same body give the same message (202 again); the same key with
    another body is refused (409)."""
    key = _idempotency_key(request)
    message = notify(
        _user_of(body),
        body.type,
        body.context,
        idempotency_key=key,
        channels=body.channels,
        expires_at=body.expires_at,
        send_at=body.send_at,
        send_at_local=body.send_at_local,
        if_past=body.if_past,
        cancel_key=body.cancel_key,
        throttle_key=body.throttle_key,
        digest_key=body.digest_key,
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
    response=answers({202: AcceptedMany}, 409),
    summary="Notify many users at once",
)
def notify_bulk(request: HttpRequest, body: NotifyManyIn) -> Status[dict[str, Any]]:
    """What `notify_many()` does: all or nothing, up to NOTIFIER_API_BULK_MAX users a call.
    With an `Idempotency-Key`, each user's message is keyed `<key>:<user>`."""
    most = settings.NOTIFIER_API_BULK_MAX
    named = _named(body)
    if len(named) > most:
        raise ApiError(
            422,
            "TooManyRecipients",
            f"{len(named)} recipients in one call; send at most {most} a call",
        )
    users = _users_of(body)
    contexts = _contexts_by_key(named, users, body.contexts)
    key = _idempotency_key(request)
    with transaction.atomic():  # a 409 below takes back the messages this call made
        result = notify_many(
            users,
            body.type,
            body.context,
            contexts=contexts,
            idempotency_key=key,
            channels=body.channels,
            expires_at=body.expires_at,
            send_at=body.send_at,
            send_at_local=body.send_at_local,
            if_past=body.if_past,
            cancel_key=body.cancel_key,
            throttle_key=body.throttle_key,
            digest_key=body.digest_key,
        )
        if key is not None and result.existing:
            _check_repeats(key, users, result.message_ids, contexts, body)
    return Status(202, {"messages": result.message_ids, "created": result.created})


class TopicNotifyIn(Schema):
    type: StrictStr = Field(description="A notification type's key")
    context: dict[str, Any] = Field(default_factory=dict, description="Shared by everyone")
    channels: list[StrictStr] | None = None
    exclude_users: list[UserKeyIn] = Field(
        default_factory=list, description="Leave these users out (e.g. whoever acted)"
    )
    exclude_recipients: list[StrictStr] = Field(
        default_factory=list, description="Or these recipients (external_ids)"
    )


class TopicSent(Schema):
    send: int = Field(description="The topic send's id; the same for a repeated call")
    subscribers: int = Field(description="How many follow the topic now")


@api.post(
    "/topics/{topic}/notify",
    auth=ApiKeyAuth(ApiScope.NOTIFY),
    response=answers({202: TopicSent}),
    summary="Notify everyone following a topic",
)
def topic_notify_route(
    request: HttpRequest, topic: str, body: TopicNotifyIn
) -> Status[dict[str, int]]:
    """Each follower gets the message (its preferences, quiet hours and caps applied), handed
    out by a worker a thousand at a time. With an `Idempotency-Key`, a repeated call gives back
    the first call's send."""
    exclude: list[Any] = list(body.exclude_users)
    if body.exclude_recipients:
        exclude += _known_users(body.exclude_recipients)
    send = notify_topic(
        topic,
        body.type,
        body.context,
        idempotency_key=_idempotency_key(request),
        channels=body.channels,
        exclude=exclude,
    )
    followers = TopicSubscription.objects.filter(topic_id=send.topic_id).count()
    return Status(202, {"send": send.pk, "subscribers": followers})


class CancelIn(Schema):
    cancel_key: StrictStr = Field(description="The cancel_key the messages were sent with")
    users: list[UserKeyIn] | None = Field(
        default=None, description="Only these users' messages (default: everyone's)"
    )
    recipients: list[StrictStr] | None = Field(
        default=None, description="Or only these recipients' (external_ids)"
    )


class Cancelled(Schema):
    messages: int = Field(description="Messages sent with the key (of those users)")
    cancelled: int = Field(description="Deliveries this call cancelled before they went out")
    too_late: int = Field(
        description="Deliveries that had gone out already, or were being handed to their "
        "provider: not taken back"
    )


@api.post(
    "/notify/cancel",
    auth=ApiKeyAuth(ApiScope.NOTIFY),
    response=answers({200: Cancelled}),
    summary="Cancel what was sent with a cancel key and has not gone out",
)
def notify_cancel_route(request: HttpRequest, body: CancelIn) -> Status[dict[str, int]]:
    """What `notify_cancel()` does: scheduled, held and queued deliveries of the messages sent
    with `cancel_key` are cancelled, each with the reason on its timeline; calling again
    cancels nothing more (200 with `cancelled: 0`). A key no message carries is not an error:
    the answer says `messages: 0`."""
    if body.users is not None and body.recipients is not None:
        raise InvalidRecipient(
            "send users (the users' keys) or recipients (external_ids), not both"
        )
    users: list[Any] | None = body.users
    if body.recipients is not None:
        users = _known_users(body.recipients)
    report = notify_cancel(body.cancel_key, users=users)
    return Status(
        200,
        {"messages": report.messages, "cancelled": report.cancelled, "too_late": report.too_late},
    )


def _known_users(external_ids: list[str]) -> list[Any]:
    """The user keys of the recipients among `external_ids` (unknown ones are left out); each
    must be an external id as recipients have them (422 otherwise)."""
    for external_id in external_ids:
        problem = text_problem(external_id)
        if problem:
            raise InvalidRecipient(f"{EXTERNAL_ID_RULE}: one {problem}")
        check_external_id(external_id)
    return list(
        Recipient.objects.filter(external_id__in=set(external_ids)).values_list(
            "user_id", flat=True
        )
    )


def _check_repeats(
    key: str,
    users: list[Any],
    message_ids: list[int],
    contexts: dict[Any, dict[str, Any]] | None,
    body: NotifyManyIn,
) -> None:
    """A repeated bulk call must ask for what the first asked for, user by user."""
    messages = Message.objects.in_bulk(message_ids)
    for user, message_id in zip(users, message_ids, strict=True):
        own = {**body.context, **(contexts or {}).get(user, {})}
        if not _same_request(messages[message_id], context=own, body=body):
            raise ApiError(
                409,
                "IdempotencyKeyReused",
                f"Idempotency-Key {key!r} was used for another request; send a new key",
            )


def _user_of(body: NotifyIn) -> Any:
    """The user key to notify: `user` as given, or the user of the recipient `recipient`."""
    if (body.user is None) == (body.recipient is None):
        raise InvalidRecipient("send either user (a user's key) or recipient (an external_id)")
    if body.recipient is None:
        return body.user
    found = Recipient.objects.filter(external_id=body.recipient).values_list("user_id", flat=True)
    for user_id in found:
        return user_id
    raise InvalidRecipient(
        f"no recipient has external_id {body.recipient[:80]!r}; create them with "
        "PUT /recipients/{external_id}"
    )


def _named(body: NotifyManyIn) -> list[Any]:
    """The recipients as the call names them: user keys, or external ids."""
    if (body.users is None) == (body.recipients is None):
        raise InvalidRecipient(
            "send either users (the users' keys) or recipients (their external_ids)"
        )
    return list(body.users if body.users is not None else body.recipients or [])


def _users_of(body: NotifyManyIn) -> list[Any]:
    """The user keys to notify, in the order named: one query for external ids."""
    if body.recipients is None:
        return list(body.users or [])
    found = dict(
        Recipient.objects.filter(external_id__in=set(body.recipients)).values_list(
            "external_id", "user_id"
        )
    )
    unknown = [external for external in body.recipients if external not in found]
    if unknown:
        raise InvalidRecipient(
            f"no recipient has external_id {unknown[0][:80]!r}"
            + (f" (nor {len(unknown) - 1} more)" if len(unknown) > 1 else "")
        )
    return [found[external] for external in body.recipients]


def _contexts_by_key(
    named: list[Any], users: list[Any], contexts: dict[str, dict[str, Any]] | None
) -> dict[Any, dict[str, Any]] | None:
    """`contexts` is keyed by the recipients as named, as text (JSON object keys are text):
    each one to the user key it stands for."""
    if contexts is None:
        return None
    by_text = {str(name): user for name, user in zip(named, users, strict=True)}
    unknown = [text for text in contexts if text not in by_text]
    if unknown:
        raise ApiError(
            422,
            "InvalidContext",
            f"contexts names {unknown[0]!r}, which is not among the recipients",
        )
    return {by_text[text]: values for text, values in contexts.items()}


class VapidKey(Schema):
    public_key: str = Field(
        description="PushManager.subscribe's applicationServerKey (base64url P-256 public key)"
    )


@api.get(
    "/push/vapid-public-key",
    auth=None,
    response={200: VapidKey, 404: Problem},
    summary="The Web Push public key a browser subscribes with",
)
def push_vapid_public_key(request: HttpRequest) -> Status[dict[str, str]]:
    """Public: a web page needs it before anyone signs in. 404 when Web Push is not set up."""
    key = vapid_public_key()
    if not key:
        raise ApiError(
            404,
            "WebPushNotConfigured",
            "Web Push is not set up on this site (NOTIFIER_WEBPUSH_VAPID_PRIVATE_KEY)",
        )
    return Status(200, {"public_key": key})


api.add_router("/messages", messages_router)
api.add_router("/recipients", recipients_router)
