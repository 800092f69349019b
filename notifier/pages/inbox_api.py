"""The inbox JSON API. Session-authenticated; POSTs need the CSRF token like any Django form.

GET  /api/inbox/                     ?limit=20&cursor=...&unread=1&archived=1
GET  /api/inbox/unread-count/
POST /api/inbox/<id>/read/
POST /api/inbox/read-all/
POST /api/inbox/<id>/archive/
POST /api/inbox/<id>/feedback/       {"feedback": "useful" | "meh" | "irrelevant"}
POST /api/inbox/<id>/snooze/         {"for": "day" | "week" | "until_unmuted"}: mute its type
GET  /api/inbox/snoozes/
POST /api/inbox/snoozes/<type>/lift/
POST /api/inbox/<id>/snooze-topic/   {"for": ...}: mute the topic it was sent to ("topic" set)
GET  /api/inbox/topic-snoozes/
POST /api/inbox/topic-snoozes/<topic>/lift/

Errors are JSON {"error": "..."} with a 4xx status that says what to fix.
"""

from __future__ import annotations

import base64
from collections.abc import Callable, Mapping
from datetime import datetime, timedelta
from functools import wraps
from typing import Any, cast

from django.http import HttpRequest, JsonResponse
from django.views.decorators.http import require_GET, require_POST

from notifier.ids import parse_id
from notifier.links import unsubscribe_url
from notifier.models import Feedback, InboxItem, Kind
from notifier.selectors import inbox_item_topics, inbox_page, inbox_unread_count
from notifier.services.inbox import (
    InboxItemNotFound,
    inbox_archive,
    inbox_feedback,
    inbox_mark_all_read,
    inbox_mark_read,
)
from notifier.services.snoozes import (
    LENGTHS,
    SnoozeError,
    SnoozeState,
    TopicSnoozeState,
    UnknownSnoozeTopic,
    snoozable,
    snooze_lift,
    snooze_set,
    snoozes_list,
    topic_snooze_lift,
    topic_snooze_set,
    topic_snoozes_list,
)
from notifier.text import json_value_problem, strict_json_loads
from notifier.user_keys import UserKey

MAX_LIMIT = 100
MAX_CURSOR_LENGTH = 200  # a cursor given out is about 60 characters
View = Callable[..., JsonResponse]


class BadRequest(ValueError):
    status = 400


class UnsupportedMediaType(BadRequest):
    """A body in another format than the endpoint reads (a form, a multipart upload)."""

    status = 415


def error(status: int, text: str) -> JsonResponse:
    return JsonResponse({"error": text}, status=status)


def _is_json(content_type: str) -> bool:
    return content_type == "application/json" or (
        content_type.startswith("application/") and content_type.endswith("+json")
    )


def json_object(request: HttpRequest, example: str) -> dict[str, Any]:
    """The request's JSON object; BadRequest naming the fix for anything else: not JSON, not
    UTF-8, nested past the parser's depth, NaN or Infinity, or text PostgreSQL cannot store.

    A body declared as anything but JSON is refused (415) before it is read: a form or a
    multipart upload may already have been consumed by the CSRF check, and is not JSON anyway.
    """
    if not _is_json(request.content_type or "") and request.META.get("CONTENT_LENGTH") not in (
        None,
        "",
        "0",
    ):
        raise UnsupportedMediaType(
            f"send the body as JSON with Content-Type: application/json, such as {example}"
        )
    try:
        body = strict_json_loads(request.body or b"{}")
    except (ValueError, RecursionError):  # JSONDecodeError and UnicodeDecodeError included
        raise BadRequest(f"send a JSON body such as {example}") from None
    if not isinstance(body, dict):
        raise BadRequest(f"send a JSON object such as {example}")
    if problem := json_value_problem(body):
        raise BadRequest(f"the body {problem}; send plain text and finite numbers")
    return body


def api(view: View) -> View:
    """Logged-in users only; turns bad input and missing items into clear 4xx answers."""

    @wraps(view)
    def wrapped(request: HttpRequest, *args: Any, **kwargs: Any) -> JsonResponse:
        if not request.user.is_authenticated:
            return error(401, "log in to read your inbox")
        try:
            return view(request, *args, **kwargs)
        except BadRequest as exc:
            return error(exc.status, str(exc))
        except InboxItemNotFound as exc:
            return error(404, str(exc))
        except SnoozeError as exc:
            return error(422, str(exc))

    return wrapped


def _user_id(request: HttpRequest) -> UserKey:
    assert request.user.pk is not None  # `api` let only logged-in users through
    return cast(UserKey, request.user.pk)


def item_json(item: InboxItem, topics: Mapping[int, str] | None = None) -> dict[str, Any]:
    """The item as the API shows it; `topics` (message id -> topic key) saves a page of items
    a query each (inbox_item_topics), and without it the item's own topic is looked up."""
    if topics is None:
        topics = inbox_item_topics(message_ids=[item.message_id])
    return {
        "id": item.pk,
        "category": item.category,
        "type": item.type_key,
        "title": item.title,
        "body": item.body,
        "link": item.link or None,
        "created_at": item.created_at.isoformat(),
        "read_at": item.read_at.isoformat() if item.read_at else None,
        "archived_at": item.archived_at.isoformat() if item.archived_at else None,
        "feedback": item.feedback or None,
        # A digest's group, one item that updates: its digest key and how many it stands for.
        "group": {"key": item.group_key, "count": item.group_count}
        if item.group_key is not None
        else None,
        # Whether its type may be snoozed (POST .../snooze/): what may be switched off.
        "snoozable": snoozable(item.type_key),
        # The topic whose send it came from (POST .../snooze-topic/ mutes it), or null.
        "topic": topics.get(item.message_id),
        # Marketing in the inbox carries its way out, like marketing anywhere else.
        "unsubscribe_url": unsubscribe_url(
            user_id=item.user_id,
            category=item.type_key,
            channel="inapp",
            message_id=item.message_id,
        )
        if item.category == Kind.MARKETING
        else None,
    }


def encode_cursor(cursor: tuple[datetime, int] | None) -> str | None:
    if cursor is None:
        return None
    raw = f"{cursor[0].isoformat()}|{cursor[1]}".encode()
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


def decode_cursor(value: str) -> tuple[datetime, int]:
    """The (created_at, id) of a cursor this API gave out; BadRequest for anything else.

    Cursors given out hold a UTC time and an id, so any other offset (PostgreSQL refuses those
    past ±15:59, Python takes up to ±23:59:59.999999), a naive time, or an id that is not 1 to
    19 ASCII digits within bigint is a forgery or a mangled copy, never a query.
    """
    problem = "cursor is not one this API gave out; pass next_cursor as is"
    if len(value) > MAX_CURSOR_LENGTH:
        raise BadRequest(problem)
    try:
        raw = base64.urlsafe_b64decode(value + "=" * (-len(value) % 4)).decode()
        created, pk = raw.split("|")
        moment = datetime.fromisoformat(created)
    except (ValueError, UnicodeDecodeError) as exc:
        raise BadRequest(problem) from exc
    item_id = parse_id(pk)
    if moment.utcoffset() != timedelta(0) or item_id is None:
        raise BadRequest(problem)
    return moment, item_id


def _flag(request: HttpRequest, name: str) -> bool:
    value = request.GET.get(name, "0").lower()
    if value not in ("0", "1", "true", "false", ""):
        raise BadRequest(f"{name} must be 1 or 0")
    return value in ("1", "true")


@require_GET
@api
def inbox_list(request: HttpRequest) -> JsonResponse:
    limit = parse_id(request.GET.get("limit", "20"))
    if limit is None or limit > MAX_LIMIT:
        raise BadRequest(f"limit must be a whole number between 1 and {MAX_LIMIT}")
    cursor = decode_cursor(request.GET["cursor"]) if request.GET.get("cursor") else None
    user_id = _user_id(request)
    items, next_cursor = inbox_page(
        user_id=user_id,
        limit=limit,
        before=cursor,
        unread_only=_flag(request, "unread"),
        archived=_flag(request, "archived"),
    )
    topics = inbox_item_topics(message_ids=[item.message_id for item in items])
    return JsonResponse(
        {
            "items": [item_json(item, topics) for item in items],
            "next_cursor": encode_cursor(next_cursor),
            "unread_count": inbox_unread_count(user_id=user_id),
        }
    )


@require_GET
@api
def inbox_unread(request: HttpRequest) -> JsonResponse:
    return JsonResponse({"unread_count": inbox_unread_count(user_id=_user_id(request))})


@require_POST
@api
def inbox_read(request: HttpRequest, item_id: int) -> JsonResponse:
    return JsonResponse(item_json(inbox_mark_read(user_id=_user_id(request), item_id=item_id)))


@require_POST
@api
def inbox_read_all(request: HttpRequest) -> JsonResponse:
    user_id = _user_id(request)
    count = inbox_mark_all_read(user_id=user_id)
    return JsonResponse({"marked_read": count, "unread_count": inbox_unread_count(user_id=user_id)})


@require_POST
@api
def inbox_archive_item(request: HttpRequest, item_id: int) -> JsonResponse:
    return JsonResponse(item_json(inbox_archive(user_id=_user_id(request), item_id=item_id)))


@require_POST
@api
def inbox_give_feedback(request: HttpRequest, item_id: int) -> JsonResponse:
    body = json_object(request, '{"feedback": "useful"}')
    value = body.get("feedback")
    if value not in Feedback.values:
        raise BadRequest(f"feedback must be one of: {', '.join(Feedback.values)}")
    item = inbox_feedback(user_id=_user_id(request), item_id=item_id, feedback=Feedback(value))
    return JsonResponse(item_json(item))


def snooze_json(snooze: SnoozeState) -> dict[str, Any]:
    return {"type": snooze.type_key, "until": snooze.until.isoformat() if snooze.until else None}


def inbox_item_type(*, user_id: UserKey, item_id: int) -> str:
    """The type of one of the user's inbox items (InboxItemNotFound for anyone else's)."""
    type_key = (
        InboxItem.objects.filter(pk=item_id, user_id=user_id)
        .values_list("type_key", flat=True)
        .first()
    )
    if type_key is None:
        raise InboxItemNotFound(f"inbox item {item_id} not found")
    return type_key


@require_POST
@api
def inbox_snooze(request: HttpRequest, item_id: int) -> JsonResponse:
    """Mute the item's type for a while: it keeps reaching the inbox, nothing else."""
    type_key = inbox_item_type(user_id=_user_id(request), item_id=item_id)  # 404 first
    body = json_object(request, '{"for": "week"}')
    length = body.get("for")
    if not isinstance(length, str) or length not in LENGTHS:
        raise BadRequest(f"for must be one of: {', '.join(LENGTHS)}")
    return JsonResponse(
        snooze_json(snooze_set(user_id=_user_id(request), type_key=type_key, length=length))
    )


@require_GET
@api
def inbox_snoozes(request: HttpRequest) -> JsonResponse:
    return JsonResponse(
        {"snoozes": [snooze_json(s) for s in snoozes_list(user_id=_user_id(request))]}
    )


@require_POST
@api
def inbox_snooze_lift(request: HttpRequest, type_key: str) -> JsonResponse:
    return JsonResponse({"lifted": snooze_lift(user_id=_user_id(request), type_key=type_key)})


def topic_snooze_json(snooze: TopicSnoozeState) -> dict[str, Any]:
    return {"topic": snooze.topic_key, "until": snooze.until.isoformat() if snooze.until else None}


def inbox_item_topic(*, user_id: UserKey, item_id: int) -> str:
    """The topic one of the user's inbox items was sent to (InboxItemNotFound for anyone
    else's item; UnknownSnoozeTopic, a 422, for an item no topic's send handed out)."""
    message_id = (
        InboxItem.objects.filter(pk=item_id, user_id=user_id)
        .values_list("message_id", flat=True)
        .first()
    )
    if message_id is None:
        raise InboxItemNotFound(f"inbox item {item_id} not found")
    topic = inbox_item_topics(message_ids=[message_id]).get(message_id)
    if topic is None:
        raise UnknownSnoozeTopic(f"inbox item {item_id} was not sent to a topic; snooze its type")
    return topic


@require_POST
@api
def inbox_snooze_topic(request: HttpRequest, item_id: int) -> JsonResponse:
    """Mute the topic the item was sent to for a while: its sends reach the inbox only."""
    topic_key = inbox_item_topic(user_id=_user_id(request), item_id=item_id)  # 404 first
    body = json_object(request, '{"for": "week"}')
    length = body.get("for")
    if not isinstance(length, str) or length not in LENGTHS:
        raise BadRequest(f"for must be one of: {', '.join(LENGTHS)}")
    snooze = topic_snooze_set(user_id=_user_id(request), topic_key=topic_key, length=length)
    return JsonResponse(topic_snooze_json(snooze))


@require_GET
@api
def inbox_topic_snoozes(request: HttpRequest) -> JsonResponse:
    snoozes = topic_snoozes_list(user_id=_user_id(request))
    return JsonResponse({"snoozes": [topic_snooze_json(s) for s in snoozes]})


@require_POST
@api
def inbox_topic_snooze_lift(request: HttpRequest, topic_key: str) -> JsonResponse:
    lifted = topic_snooze_lift(user_id=_user_id(request), topic_key=topic_key)
    return JsonResponse({"lifted": lifted})
