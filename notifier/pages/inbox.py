"""The end user's inbox page: server-rendered, with a little JavaScript on the inbox JSON API.

GET  /inbox/?cursor=...   the newest items (or the page after `cursor`) and the unread badge
POST /inbox/              action=read|archive|snooze|snooze-topic|useful|meh|irrelevant with
                          item=<id>, or
                          action=read-all: the inbox services the JSON API calls, for browsers
                          without JavaScript; answers with a redirect back to the page (303)

With JavaScript the page's script intercepts those forms and the "Load more" link, calls
/api/inbox/... and updates the list in place. Anonymous visitors are sent to LOGIN_URL.
Bad input is a 400 page and another user's item a 404, as in the JSON API.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, cast
from urllib.parse import urlencode

from django.conf import settings
from django.contrib.auth.decorators import login_required
from django.http import HttpRequest, HttpResponse, HttpResponseRedirect
from django.shortcuts import render
from django.urls import NoReverseMatch, reverse
from django.utils.functional import Promise
from django.utils.text import format_lazy
from django.utils.translation import gettext
from django.utils.translation import gettext_lazy as _
from django.views.decorators.cache import never_cache
from django.views.decorators.http import require_http_methods

from notifier.ids import parse_id
from notifier.links import preferences_url
from notifier.live_inbox import live_inbox_enabled
from notifier.models import Feedback, InboxItem, Kind, NotificationType
from notifier.pages.inbox_api import (
    BadRequest,
    decode_cursor,
    encode_cursor,
    inbox_item_topic,
    inbox_item_type,
    item_json,
)
from notifier.pages.language import finish, language_links, reader_for, speaking
from notifier.pages.words import FEEDBACK_WORDS, kind_topic, topic_of
from notifier.selectors import inbox_item_topics, inbox_page, inbox_unread_count
from notifier.services.inbox import (
    InboxItemNotFound,
    inbox_archive,
    inbox_feedback,
    inbox_mark_all_read,
    inbox_mark_read,
)
from notifier.services.snoozes import (
    SnoozeError,
    UnknownSnoozeTopic,
    snooze_set,
    topic_snooze_set,
)
from notifier.user_keys import UserKey

PAGE_SIZE = 20
# The feedback buttons: the word (notifier.pages.words) and a face drawn in SVG (the mouth's
# path), so the page needs no emoji font to look right.
FEEDBACK_FACES = {
    Feedback.USEFUL: "M6.5 12 Q10 15.5 13.5 12",
    Feedback.MEH: "M6.5 13 L13.5 13",
    Feedback.IRRELEVANT: "M6.5 14.5 Q10 11 13.5 14.5",
}
ITEM_ACTIONS = {"read", "archive", "snooze", "snooze-topic", *Feedback.values}


def category_labels() -> dict[str, str]:
    """Each kind's and type's name for customers, in the active language: the script names the
    items it loads with these (by type, then by kind)."""
    labels = {kind.value: str(kind_topic(kind).name) for kind in Kind}
    for key, kind in NotificationType.objects.values_list("key", "kind"):
        labels[key] = str(topic_of(type_key=key, kind=kind).name)
    return labels


def safe_link(link: str | None) -> str:
    """Only web links become anchors: a `javascript:` URL in a template never runs on tap."""
    return link if link and link.lower().startswith(("https://", "http://", "/")) else ""


def _item_view(
    item: InboxItem, labels: dict[str, str], topics: Mapping[int, str]
) -> dict[str, Any]:
    """What the JSON API says about the item, plus what only the template needs."""
    view = item_json(item, topics)
    return {
        **view,
        "link": safe_link(view["link"]),
        "created": item.created_at,
        "category_label": labels.get(item.type_key) or labels.get(item.category, item.category),
    }


# The blank item the page's script clones for items it loads (one markup for both).
PROTOTYPE: dict[str, Any] = {
    "id": "",
    "title": "",
    "body": "",
    "link": "#",
    "read_at": None,
    "feedback": "",
    "created_at": "",
    "created": None,
    "category_label": "",
    "unsubscribe_url": "#",
    "snoozable": True,
    "topic": "",
}


def _script_words() -> dict[str, str]:
    """What the page's script says, in the active language ({n} and {reason} filled in there)."""
    return {
        "read": gettext("Marked as read."),
        "archived": gettext("Archived."),
        "thanks": gettext("Thanks for telling us: {answer}."),
        "failed": gettext("Sorry, that did not work: {reason}"),
        "marked": gettext("Marked {n} as read."),
        "nothing_unread": gettext("Nothing was unread."),
        "snoozed": gettext("Snoozed for a week: these come to this inbox only until then."),
        "topic_snoozed": gettext(
            "Topic snoozed for a week: its messages come to this inbox only until then."
        ),
        "loaded": gettext("Loaded {n} older messages."),
        # Intl.DateTimeFormat's locale and how its parts make a time like the server's.
        "date_locale": gettext("en-US"),
        "date_pattern": gettext("{day} {month}, {hour}:{minute}"),
    }


def _page(
    request: HttpRequest, template: str, context: dict[str, Any], *, status: int = 200
) -> HttpResponse:
    reader = reader_for(request, user_id=_user_id(request))
    with speaking(reader):  # words in the customer's language, times in their own zone
        context = {
            "site_name": settings.NOTIFIER_SITE_NAME,
            "logout_url": _logout_url(),
            "language_links": language_links(request, reader.language),
            "time_zone": str(reader.zone),
            **{key: value() if callable(value) else value for key, value in context.items()},
        }
        response = render(request, f"notifier/{template}", context, status=status)
    return finish(response, reader)


def _logout_url() -> str | None:
    """The project's page named "logout" (the stand-alone site's; a host's, if it names one)."""
    try:
        return reverse("logout")
    except NoReverseMatch:
        return None


def _problem(
    request: HttpRequest, status: int, title: str | Promise, text: str | Promise
) -> HttpResponse:
    return _page(request, "inbox_problem.html", {"title": title, "text": text}, status=status)


def _user_id(request: HttpRequest) -> UserKey:
    assert request.user.pk is not None  # login_required let only logged-in users through
    return cast(UserKey, request.user.pk)


def _item_id(raw: str | None) -> int:
    item_id = parse_id(raw or "")
    if item_id is None:
        raise BadRequest("item must be the number of an item in your inbox")
    return item_id


def _back_to(cursor: str) -> str:
    """The page the form was sent from: its cursor if it is one we gave out, else the top."""
    url = reverse("notifier:inbox-page")
    try:
        decode_cursor(cursor)
    except BadRequest:
        return url
    return f"{url}?{urlencode({'cursor': cursor})}"


@require_http_methods(["GET", "POST"])
@never_cache
@login_required
def inbox_page_view(request: HttpRequest) -> HttpResponse:
    if request.method == "POST":
        return _act(request)
    raw_cursor = request.GET.get("cursor", "")
    try:
        cursor = decode_cursor(raw_cursor) if raw_cursor else None
    except BadRequest:
        return _problem(
            request,
            400,
            _("This page of your inbox does not exist"),
            _("The link may have been cut short. Start again from your newest messages."),
        )
    user_id = _user_id(request)
    items, next_cursor = inbox_page(user_id=user_id, limit=PAGE_SIZE, before=cursor)

    def labelled_items() -> list[dict[str, Any]]:  # in the page's language: called inside it
        labels = category_labels()
        topics = inbox_item_topics(message_ids=[item.message_id for item in items])
        return [_item_view(item, labels, topics) for item in items]

    return _page(
        request,
        "inbox.html",
        {
            "items": labelled_items,
            "cursor": raw_cursor if cursor else "",
            "next_cursor": encode_cursor(next_cursor),
            "unread_count": inbox_unread_count(user_id=user_id),
            "page_size": PAGE_SIZE,
            "feedback_choices": lambda: [
                (choice.value, str(FEEDBACK_WORDS[choice]), FEEDBACK_FACES[choice])
                for choice in Feedback
            ],
            "prototype": PROTOTYPE,
            "category_labels": category_labels,
            "script_words": _script_words,
            "preferences_url": preferences_url(user_id=user_id),
            # The live badge and list (notifier/pages/inbox_stream.py): the stream, or polling.
            "live_stream": live_inbox_enabled(),
            "poll_ms": int(float(settings.NOTIFIER_LIVE_POLL_S) * 1000),
        },
    )


def _act(request: HttpRequest) -> HttpResponse:
    """One action from the page's forms, through the same services as the JSON API."""
    user_id = _user_id(request)
    action = request.POST.get("action", "")
    back = HttpResponseRedirect(_back_to(request.POST.get("cursor", "")), status=303)
    if action == "read-all":
        inbox_mark_all_read(user_id=user_id)
        return back
    if action not in ITEM_ACTIONS:
        choices = ", ".join(["read-all", *sorted(ITEM_ACTIONS)])
        return _problem(
            request,
            400,
            _("Nothing was changed"),
            format_lazy(_("Choose one of: {choices}."), choices=choices),
        )
    try:
        item_id = _item_id(request.POST.get("item"))
        if action == "read":
            inbox_mark_read(user_id=user_id, item_id=item_id)
        elif action == "archive":
            inbox_archive(user_id=user_id, item_id=item_id)
        elif action == "snooze":  # the page offers a week; the JSON API any length
            type_key = inbox_item_type(user_id=user_id, item_id=item_id)
            snooze_set(user_id=user_id, type_key=type_key, length="week")
        elif action == "snooze-topic":
            topic_key = inbox_item_topic(user_id=user_id, item_id=item_id)
            topic_snooze_set(user_id=user_id, topic_key=topic_key, length="week")
        else:
            inbox_feedback(user_id=user_id, item_id=item_id, feedback=Feedback(action))
    except BadRequest as exc:
        return _problem(
            request, 400, _("Nothing was changed"), format_lazy(_("The {problem}."), problem=exc)
        )
    except InboxItemNotFound:
        return _problem(
            request, 404, _("That message is not in your inbox"), _("Nothing was changed.")
        )
    except UnknownSnoozeTopic:
        return _problem(
            request,
            400,
            _("Nothing was changed"),
            _("This message did not come from a topic you follow: snooze its kind instead."),
        )
    except SnoozeError:
        return _problem(
            request,
            400,
            _("Nothing was changed"),
            _("Messages of this kind always go out: they cannot be snoozed."),
        )
    return back
