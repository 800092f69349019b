"""Preferences, consent and unsubscribe: a JSON API for the logged-in user, pages for signed links.

JSON (session-authenticated; PATCH and POST need the CSRF token like any Django form):

GET   /api/preferences/           every category's switches, marketing frequency, consent
PATCH /api/preferences/           {"preferences": [{"category": "marketing", "channel": "email",
                                   "enabled": false}], "marketing_frequency": "weekly",
                                   "digest_cadences": [{"type": null, "cadence": "daily",
                                   "at": "09:00"}, {"type": "social.new_comment",
                                   "cadence": null}]}  (null cadence: forget that choice)
POST  /api/preferences/consent/   {"channel": "email", "granted": true, "wording": "..."}

Pages behind a signed link (no login; the token names the user, nothing in the request can):

GET/POST /unsubscribe/<token>/             the three choices; POST applies one
GET/POST /unsubscribe/<token>/one-click/   RFC 8058: POST unsubscribes from this category;
                                           GET only shows the choices (link scanners follow GETs)
GET/POST /preferences/<token>/             the user's switches, frequency and consent

Errors: JSON {"error": "..."} with a 4xx status that says what to fix; a link that is not valid
gives a 400 page (410 when it has only expired), and nothing changes.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, replace
from datetime import datetime
from functools import wraps
from typing import Any, cast

from django.conf import settings
from django.contrib.auth import get_user_model
from django.db import transaction
from django.http import HttpRequest, HttpResponse, JsonResponse
from django.shortcuts import render
from django.urls import reverse
from django.utils.dates import WEEKDAYS
from django.utils.translation import gettext
from django.utils.translation import gettext_lazy as _
from django.views.decorators.cache import never_cache
from django.views.decorators.csrf import csrf_exempt
from django.views.decorators.http import require_http_methods, require_POST

from notifier.links import (
    BadLink,
    BadLinkReason,
    UnsubscribeClaim,
    preferences_url,
    read_preferences_token,
    read_unsubscribe_token,
)
from notifier.models import (
    ALL_CHANNELS,
    Kind,
    MarketingFrequency,
    Message,
    NotificationType,
    Priority,
)
from notifier.pages.inbox_api import BadRequest, error, json_object
from notifier.pages.language import finish, language_links, reader_for, speaking
from notifier.pages.words import (
    FREQUENCY_NAMES,
    TOPICS,
    Topic,
    by_channel,
    channel_name,
    kind_topic,
    topic_of,
    type_words,
)
from notifier.policies.digests import DEFAULT_AT, DEFAULT_WEEKDAY, Cadence
from notifier.policies.preferences import ConsentState, Preferences, can_switch_off, channel_enabled
from notifier.request_limits import request_ip
from notifier.selectors import consent_of, preferences_of
from notifier.services.cadences import (
    CadenceState,
    cadence_types,
    digest_cadence_clear,
    digest_cadence_set,
    digest_cadences_of,
)
from notifier.services.preferences import (
    CONCRETE_CHANNELS,
    Category,
    InvalidScope,
    PreferenceChange,
    PreferenceError,
    UnknownUser,
    UnsubscribeScope,
    check_category,
    check_channel,
    check_scope,
    consent_give,
    consent_withdraw,
    preferences_update,
    unsubscribe,
)
from notifier.user_keys import UserKey

# What the preference page shows next to a consent box, in the reader's language; stored
# verbatim (translated) as the consent wording: the exact words the customer agreed to.
CONSENT_WORDING = _("Yes, send me offers and promotions %(channel)s.")
JsonView = Callable[..., JsonResponse]
MAX_WORDING_LENGTH = 2000


def channel_label(channel: str) -> str:
    return "every channel" if channel == ALL_CHANNELS else CHANNEL_LABELS.get(channel, channel)


# The JSON API's and the plain-text answers' English words (the pages use notifier.pages.words).
CHANNEL_LABELS = {"inapp": "in the app", "email": "email", "sms": "SMS", "push": "push"}
KIND_DESCRIPTIONS = {
    Kind.TRANSACTIONAL: "Receipts, security notices and other messages about your account.",
    Kind.SERVICE: "Updates and reminders about things you use.",
    Kind.MARKETING: "Offers and promotions.",
    Kind.SOCIAL: "Follows, likes and comments.",
}


# --- What the user sees: one read, shared by the JSON API and the page ----------------------


@dataclass(frozen=True, slots=True)
class Switch:
    category: str
    channel: str
    enabled: bool
    locked: bool

    @property
    def field(self) -> str:
        return f"switch:{self.category}:{self.channel}"

    @property
    def label(self) -> str:
        return channel_name(self.channel)


@dataclass(frozen=True, slots=True)
class CategoryView:
    key: str
    name: str
    description: str
    locked: bool
    switches: tuple[Switch, ...]

    @property
    def cells(self) -> list[Switch | None]:
        """One per channel in CONCRETE_CHANNELS order; None where the category never sends."""
        by_channel = {switch.channel: switch for switch in self.switches}
        return [by_channel.get(channel) for channel in CONCRETE_CHANNELS]

    def as_json(self) -> dict[str, Any]:
        return {
            "category": self.key,
            "name": self.name,
            "description": self.description,
            "locked": self.locked,
            "channels": {switch.channel: switch.enabled for switch in self.switches},
        }


@dataclass(frozen=True, slots=True)
class Group:
    kind: CategoryView
    types: tuple[CategoryView, ...]


@dataclass(frozen=True, slots=True)
class ConsentView:
    channel: str
    granted: bool
    at: datetime | None

    @property
    def label(self) -> str:
        return channel_name(self.channel)

    @property
    def field(self) -> str:
        return f"consent:{self.channel}"

    @property
    def wording(self) -> str:
        return str(CONSENT_WORDING) % {"channel": by_channel(self.channel)}


@dataclass(frozen=True, slots=True)
class PreferenceCentre:
    groups: tuple[Group, ...]
    marketing_frequency: str
    consent: tuple[ConsentView, ...]
    # Digest cadence: the person's choices, and the types that come at it (key, name).
    cadences: tuple[CadenceState, ...] = ()
    cadence_types: tuple[tuple[str, str], ...] = ()

    def cadence_for(self, scope: str) -> CadenceState | None:
        return next((c for c in self.cadences if c.scope == scope), None)

    def categories(self) -> list[CategoryView]:
        return [c for group in self.groups for c in (group.kind, *group.types)]

    def as_json(self) -> dict[str, Any]:
        return {
            "channels": list(CONCRETE_CHANNELS),
            "categories": [
                {**group.kind.as_json(), "types": [t.as_json() for t in group.types]}
                for group in self.groups
            ],
            "marketing_frequency": self.marketing_frequency,
            "marketing_frequency_choices": list(MarketingFrequency.values),
            "consent": {
                c.channel: {"granted": c.granted, "at": c.at.isoformat() if c.at else None}
                for c in self.consent
            },
            "digest_cadences": [c.as_json() for c in self.cadences],
            "digest_cadence_types": [key for key, _ in self.cadence_types],
            "digest_cadence_choices": [str(c) for c in Cadence],
        }


def _category_view(
    prefs: Preferences,
    *,
    key: str,
    name: str,
    description: str,
    kind: str,
    priority: str,
    channels: tuple[str, ...],
) -> CategoryView:
    locked = not can_switch_off(kind, priority)
    return CategoryView(
        key=key,
        name=name,
        description=description,
        locked=locked,
        switches=tuple(
            Switch(
                category=key,
                channel=channel,
                # A locked category goes out whatever a stale row says: show what happens.
                enabled=locked or channel_enabled(prefs, kind=kind, type_key=key, channel=channel),
                locked=locked,
            )
            for channel in channels
        ),
    )


def _consent_view(state: ConsentState, channel: str) -> ConsentView:
    # The same rule as ConsentState.granted: the newer of the channel's and "all"'s records.
    records = [r for key in (channel, ALL_CHANNELS) if (r := state.latest.get(key))]
    newest = max(records, key=lambda r: r.at) if records else None
    return ConsentView(
        channel=channel,
        granted=newest.granted if newest else False,
        at=newest.at if newest else None,
    )


def preference_centre(*, user_id: UserKey) -> PreferenceCentre:
    """The four kinds, each with its active types, as this user's switches resolve today."""
    prefs = preferences_of(user_ids=[user_id])[user_id]
    consent = consent_of(user_ids=[user_id])[user_id]
    types = NotificationType.objects.filter(is_active=True).order_by("key")
    groups = []
    for kind in Kind:
        kind_view = _category_view(
            prefs,
            key=kind.value,
            name=str(kind.label),
            description=KIND_DESCRIPTIONS[kind],
            kind=kind.value,
            priority=Priority.NORMAL,
            channels=CONCRETE_CHANNELS,
        )
        type_views = tuple(
            _category_view(
                prefs,
                key=t.key,
                name=t.name,
                description=t.description,
                kind=t.kind,
                priority=t.priority,
                channels=tuple(c for c in CONCRETE_CHANNELS if c in t.channels),
            )
            for t in types
            if t.kind == kind
        )
        groups.append(Group(kind=kind_view, types=type_views))
    with_cadence = set(cadence_types())
    return PreferenceCentre(
        groups=tuple(groups),
        marketing_frequency=prefs.marketing_frequency,
        consent=tuple(_consent_view(consent, c) for c in settings.NOTIFIER_CONSENT_CHANNELS),
        cadences=tuple(digest_cadences_of(user_id=user_id)),
        cadence_types=tuple((t.key, t.name) for t in types if t.key in with_cadence),
    )


def _client_ip(request: HttpRequest) -> str | None:
    # REMOTE_ADDR, or X-Forwarded-For only when REMOTE_ADDR is one of NOTIFIER_TRUSTED_PROXIES:
    # otherwise it is whatever the client says.
    return request_ip(request) or None


# --- The JSON API for the logged-in user ----------------------------------------------------


def preferences_api(view: JsonView) -> JsonView:
    """Logged-in users only; bad input becomes a 400 that says what to fix."""

    @wraps(view)
    def wrapped(request: HttpRequest, *args: Any, **kwargs: Any) -> JsonResponse:
        if not request.user.is_authenticated:
            return error(401, "log in to see and change your preferences")
        try:
            return view(request, *args, **kwargs)
        except BadRequest as exc:
            return error(exc.status, str(exc))
        except PreferenceError as exc:
            return error(400, str(exc))

    return wrapped


def _user_id(request: HttpRequest) -> UserKey:
    assert request.user.pk is not None  # `preferences_api` let only logged-in users through
    return cast(UserKey, request.user.pk)


def _json_object(request: HttpRequest, example: str) -> dict[str, Any]:
    return json_object(request, example)


def _changes_from(items: object) -> list[PreferenceChange]:
    if not isinstance(items, list):
        raise BadRequest(
            'preferences must be a list such as [{"category": "marketing", "channel": "email", '
            '"enabled": false}]'
        )
    changes = []
    for n, item in enumerate(items):
        where = f"preferences[{n}]"
        if not isinstance(item, dict):
            raise BadRequest(f"{where} must be an object with category, channel and enabled")
        for name, kind, example in (
            ("category", str, '"marketing" or "promo.flash_sale"'),
            ("channel", str, f'one of {", ".join(CONCRETE_CHANNELS)} or "{ALL_CHANNELS}"'),
            ("enabled", bool, "true or false"),
        ):
            if not isinstance(item.get(name), kind):
                raise BadRequest(f"{where}.{name} must be {example}, got {item.get(name)!r}")
        changes.append(
            PreferenceChange(
                category=item["category"], channel=item["channel"], enabled=item["enabled"]
            )
        )
    return changes


def _cadences_from(items: object) -> list[dict[str, Any]]:
    example = '[{"type": null, "cadence": "daily", "at": "09:00"}]'
    if not isinstance(items, list) or len(items) > 100:
        raise BadRequest(f"digest_cadences must be a list such as {example}")
    for n, item in enumerate(items):
        if not isinstance(item, dict) or set(item) - {"type", "cadence", "at", "weekday"}:
            raise BadRequest(
                f"digest_cadences[{n}] must be an object with type, cadence and optional at "
                "and weekday"
            )
    return items


def _cadence_apply(user_id: UserKey, item: dict[str, Any]) -> None:
    """One cadence choice from the API: set it, or (cadence null) forget it."""
    if item.get("cadence") is None:
        digest_cadence_clear(user_id=user_id, scope=item.get("type"))
    else:
        digest_cadence_set(
            user_id=user_id,
            scope=item.get("type"),
            cadence=item["cadence"],
            at=item.get("at"),
            weekday=item.get("weekday"),
        )


@require_http_methods(["GET", "PATCH"])
@preferences_api
def preferences_json(request: HttpRequest) -> JsonResponse:
    user_id = _user_id(request)
    if request.method == "PATCH":
        # Any user id in the body is ignored: these are always request.user's preferences.
        body = _json_object(
            request,
            '{"preferences": [{"category": "marketing", "channel": "email", '
            '"enabled": false}], "marketing_frequency": "weekly"}',
        )
        if not {"preferences", "marketing_frequency", "digest_cadences"} & set(body):
            raise BadRequest("send preferences, marketing_frequency, digest_cadences or some")
        changes = _changes_from(body.get("preferences", []))
        cadences = _cadences_from(body.get("digest_cadences", []))
        frequency = body.get("marketing_frequency")
        if frequency is not None and not isinstance(frequency, str):
            raise BadRequest(
                f"marketing_frequency must be one of {', '.join(MarketingFrequency.values)}"
            )
        with transaction.atomic():  # all of it, or none
            preferences_update(user_id=user_id, changes=changes, marketing_frequency=frequency)
            for item in cadences:
                _cadence_apply(user_id, item)
    return JsonResponse(preference_centre(user_id=user_id).as_json())


@require_POST
@preferences_api
def consent_json(request: HttpRequest) -> JsonResponse:
    user_id = _user_id(request)
    body = _json_object(request, '{"channel": "email", "granted": true, "wording": "..."}')
    granted = body.get("granted")
    if not isinstance(granted, bool):
        raise BadRequest(f"granted must be true or false, got {granted!r}")
    channel, ip = body.get("channel"), _client_ip(request)
    if not isinstance(channel, str):
        raise BadRequest(f'channel must be a string such as "email", got {channel!r}')
    if granted:
        wording = body.get("wording")
        if not isinstance(wording, str) or not wording.strip():
            raise BadRequest("wording is required: the exact words the user agreed to")
        if len(wording) > MAX_WORDING_LENGTH:
            raise BadRequest(
                f"wording is {len(wording)} characters; the words shown next to a consent box "
                f"fit in {MAX_WORDING_LENGTH}"
            )
        consent_give(
            user_id=user_id,
            channel=channel,
            source="preference_centre",
            wording=wording,
            ip_address=ip,
        )
    else:
        consent_withdraw(
            user_id=user_id, channel=channel, source="preference_centre", ip_address=ip
        )
    return JsonResponse(preference_centre(user_id=user_id).as_json())


# --- Pages behind signed links --------------------------------------------------------------


def _page(
    request: HttpRequest,
    template: str,
    context: dict[str, Any],
    *,
    user_id: UserKey | None,
    status: int = 200,
) -> HttpResponse:
    """The page in the customer's language and zone (the link's customer, when it names one)."""
    reader = reader_for(request, user_id=user_id)
    with speaking(reader):
        context = {
            "site_name": settings.NOTIFIER_SITE_NAME,
            "language_links": language_links(request, reader.language),
            **context,
        }
        response = render(request, f"notifier/{template}", context, status=status)
    return finish(response, reader)


def _bad_link_page(request: HttpRequest, exc: BadLink | PreferenceError) -> HttpResponse:
    expired = isinstance(exc, BadLink) and exc.reason is BadLinkReason.EXPIRED
    return _page(
        request,
        "bad_link.html",
        {"expired": expired},
        user_id=None,
        status=410 if expired else 400,
    )


def _bad_link_text(exc: BadLink | PreferenceError) -> HttpResponse:
    if isinstance(exc, BadLink) and exc.reason is BadLinkReason.EXPIRED:
        return HttpResponse("This link has expired.\n", status=410, content_type="text/plain")
    return HttpResponse("This link is not valid.\n", status=400, content_type="text/plain")


def _check_user(user_id: UserKey) -> UserKey:
    # A valid signature for a user deleted since, or erased since (notifier.services.erasure):
    # the link points at nobody, and must not record choices or consent for them again.
    users = get_user_model()._default_manager.filter(pk=user_id)
    if not users.exclude(notifier_recipient__erased_at__isnull=False).exists():
        raise UnknownUser(f"no user {user_id}")
    return user_id


def _unsubscribe_claim(token: str) -> tuple[UnsubscribeClaim, Category]:
    """The link's claim, if it is signed, fresh, and still names a user, category and channel."""
    claim = read_unsubscribe_token(token)
    _check_user(claim.user_id)
    check_channel(claim.channel)
    return claim, check_category(claim.category)


def _category_name(category: str) -> str:
    """What the customer calls the category, in the active language."""
    if category in Kind.values:
        return str(kind_topic(category).name)
    row = NotificationType.objects.filter(pk=category).values("name", "description").first()
    if row is None:
        return category
    return type_words(type_key=category, name=row["name"], description=row["description"])[0]


def _received(claim: UnsubscribeClaim) -> str:
    """What the customer actually got: the campaign's name, when the link's message belongs to
    one (read through the message's own foreign key), else the category's name."""
    if claim.message_id is not None:
        campaign = (
            Message.objects.filter(pk=claim.message_id, user_id=claim.user_id)
            .values_list("campaign__name", flat=True)
            .first()
        )
        if campaign:
            return campaign
    return _category_name(claim.category)


def unsubscribe_sentence(*, scope: str, claim: UnsubscribeClaim, category: Category) -> str:
    """What an unsubscribe stops, as the sentence the customer reads (active language)."""
    how = by_channel(claim.channel)
    if scope == UnsubscribeScope.CHANNEL:
        return gettext("You will no longer get offers or promotions %(channel)s.") % {
            "channel": how
        }
    if scope == UnsubscribeScope.ALL:
        return gettext("You will no longer get offers or promotions on any channel.")
    received = _received(claim)
    if category.kind == Kind.MARKETING and received != _category_name(claim.category):
        return gettext("You will no longer get offers like “%(received)s” %(channel)s.") % {
            "received": received,
            "channel": how,
        }
    return gettext("You will no longer get “%(received)s” %(channel)s.") % {
        "received": received,
        "channel": how,
    }


def _choices_page(
    request: HttpRequest,
    token: str,
    claim: UnsubscribeClaim,
    category: Category,
    *,
    problem: str = "",
) -> HttpResponse:
    reader = reader_for(request, user_id=claim.user_id)
    with speaking(reader):
        how = by_channel(claim.channel)
        name = _category_name(claim.category)
        choices = [
            (
                UnsubscribeScope.THIS.value,
                gettext("Only “%(name)s” %(channel)s")
                % {
                    "name": name,
                    "channel": how,
                },
            ),
            (
                UnsubscribeScope.CHANNEL.value,
                gettext("All offers and promotions %(channel)s") % {"channel": how},
            ),
            (UnsubscribeScope.ALL.value, gettext("All offers and promotions, on every channel")),
        ]
        if category.locked:  # "this" would be refused: it is always sent
            choices = choices[1:]
        context = {
            "received": _received(claim),
            "category_name": name,
            "channel_label": how,
            "choices": choices,
            "action": reverse("notifier:unsubscribe", kwargs={"token": token}),
            "problem": problem,
            "preferences_url": preferences_url(user_id=claim.user_id),
        }
    return _page(
        request,
        "unsubscribe.html",
        context,
        user_id=claim.user_id,
        status=400 if problem else 200,
    )


@never_cache
@require_http_methods(["GET", "POST"])
def unsubscribe_page(request: HttpRequest, token: str) -> HttpResponse:
    try:
        claim, category = _unsubscribe_claim(token)
    except (BadLink, PreferenceError) as exc:
        return _bad_link_page(request, exc)
    if request.method == "GET":
        return _choices_page(request, token, claim, category)
    try:
        scope = check_scope(request.POST.get("scope"))
        changed = unsubscribe(
            user_id=claim.user_id,
            category=claim.category,
            channel=claim.channel,
            scope=scope,
            source="unsubscribe_link",
            ip_address=_client_ip(request),
            message_id=claim.message_id,
        )
    except InvalidScope:
        with speaking(reader_for(request, user_id=claim.user_id)):
            problem = gettext("Choose one of the options.")
        return _choices_page(request, token, claim, category, problem=problem)
    except PreferenceError as exc:
        with speaking(reader_for(request, user_id=claim.user_id)):
            problem = gettext("Nothing was changed: %(reason)s.") % {"reason": exc}
        return _choices_page(request, token, claim, category, problem=problem)
    with speaking(reader_for(request, user_id=claim.user_id)):
        sentence = unsubscribe_sentence(scope=scope, claim=claim, category=category)
    return _page(
        request,
        "unsubscribed.html",
        {
            "scope": scope.value,
            "sentence": sentence,
            "changed": changed,
            "preferences_url": preferences_url(user_id=claim.user_id),
        },
        user_id=claim.user_id,
    )


@csrf_exempt  # RFC 8058: the mail provider POSTs without a session or a CSRF token
@never_cache
@require_http_methods(["GET", "POST"])
def unsubscribe_one_click(request: HttpRequest, token: str) -> HttpResponse:
    try:
        claim, category = _unsubscribe_claim(token)
    except (BadLink, PreferenceError) as exc:
        return _bad_link_page(request, exc) if request.method == "GET" else _bad_link_text(exc)
    if request.method == "GET":
        # Link scanners and previews follow GETs: show the choices, change nothing.
        return _choices_page(request, token, claim, category)
    if request.POST.get("List-Unsubscribe") != "One-Click":
        return HttpResponse(
            "Send the body List-Unsubscribe=One-Click (RFC 8058).\n",
            status=400,
            content_type="text/plain",
        )
    try:
        unsubscribe(
            user_id=claim.user_id,
            category=claim.category,
            channel=claim.channel,
            scope=UnsubscribeScope.THIS,
            source="one_click",
            ip_address=_client_ip(request),
            message_id=claim.message_id,
        )
    except PreferenceError as exc:  # e.g. a transactional category: it cannot be switched off
        return HttpResponse(f"{exc}.\n", status=400, content_type="text/plain")
    # Read by the mail provider, not by the customer: plain English, the team's names.
    if claim.category in Kind.values:
        name = f"{Kind(claim.category).label} messages"
    else:
        name = category.key
        name = (
            NotificationType.objects.filter(pk=name).values_list("name", flat=True).first() or name
        )
    return HttpResponse(
        f"Unsubscribed from {name} by {channel_label(claim.channel)}.\n",
        content_type="text/plain",
    )


# --- The preference centre page: a few sections named for people, channels inside ----------


@dataclass(frozen=True, slots=True)
class ChannelBox:
    """One box in a section: a channel switch, or (offers on a channel that needs consent) the
    consent itself, asked once per channel: ticked means agreed and switched on."""

    field: str
    channel: str
    label: str
    checked: bool
    consent: ConsentView | None = None
    switched_on: bool = True  # the channel's switch, under a consent box


@dataclass(frozen=True, slots=True)
class Section:
    topic: Topic
    locked: bool
    boxes: tuple[ChannelBox, ...]
    consent_boxes: tuple[ChannelBox, ...]
    types: tuple[CategoryView, ...]  # message by message, folded away
    channels_used: tuple[str, ...]  # a locked section's channels, in words

    @property
    def name(self) -> str:
        return str(self.topic.name)

    @property
    def description(self) -> str:
        return str(self.topic.description)

    @property
    def always_sent_because(self) -> str:
        return str(self.topic.always_sent_because) or gettext("Always sent.")

    @property
    def offers(self) -> bool:
        return self.topic.kind == Kind.MARKETING


def _customer_view(category: CategoryView) -> CategoryView:
    name, description = type_words(
        type_key=category.key, name=category.name, description=category.description
    )
    return replace(category, name=name, description=description)


def page_sections(centre: PreferenceCentre) -> list[Section]:
    """The preference centre as a customer reads it: each topic with its types, the kind's
    switches as the topic's channels, and marketing consent once per channel in the offers."""
    consent = {c.channel: c for c in centre.consent}
    sections = []
    for topic in TOPICS:
        group = next(g for g in centre.groups if g.kind.key == topic.kind)
        types = tuple(
            _customer_view(t)
            for t in group.types
            if topic_of(type_key=t.key, kind=topic.kind) is topic
        )
        if not types:
            continue
        used = {s.channel for t in types for s in t.switches}
        locked = group.kind.locked or bool(topic.always_sent_because)
        boxes, consent_boxes = [], []
        for switch in group.kind.switches:
            if locked or switch.channel not in used | (
                set(consent) if topic.kind == Kind.MARKETING else set()
            ):
                continue
            if topic.kind == Kind.MARKETING and switch.channel in consent:
                agreed = consent[switch.channel]
                consent_boxes.append(
                    ChannelBox(
                        field=agreed.field,
                        channel=switch.channel,
                        label=agreed.wording,
                        checked=agreed.granted and switch.enabled,
                        consent=agreed,
                        switched_on=switch.enabled,
                    )
                )
            else:
                boxes.append(
                    ChannelBox(
                        field=switch.field,
                        channel=switch.channel,
                        label=switch.label,
                        checked=switch.enabled,
                    )
                )
        sections.append(
            Section(
                topic=topic,
                locked=locked,
                boxes=tuple(boxes),
                consent_boxes=tuple(consent_boxes),
                types=types,
                channels_used=tuple(channel_name(c) for c in CONCRETE_CHANNELS if c in used),
            )
        )
    return sections


def _page_changes(
    request: HttpRequest, centre: PreferenceCentre, shown: set[str]
) -> list[PreferenceChange]:
    """Only the boxes the user flipped. Saving every box would pin each type to what its kind
    said at that moment, so unticking "Offers by email" would leave every offers type's
    email box ticked and sending. Only boxes the page listed count: a box that is not in the
    form was unticked, and a category that appeared since the page loaded is left alone."""
    return [
        PreferenceChange(category=switch.category, channel=switch.channel, enabled=wanted)
        for category in centre.categories()
        if not category.locked
        for switch in category.switches
        if switch.field in shown and (wanted := switch.field in request.POST) != switch.enabled
    ]


def _consent_changes(
    request: HttpRequest, sections: list[Section], shown: set[str]
) -> tuple[list[tuple[ConsentView, bool]], list[PreferenceChange]]:
    """The consent boxes flipped, in the page's order: (consent, agreed) for each agreement to
    record or withdraw, and the offers switches an agreement turns back on (ticking "yes, by
    email" means send them)."""
    flips, switch_on = [], []
    for section in sections:
        for box in section.consent_boxes:
            assert box.consent is not None
            wanted = box.field in request.POST
            if wanted and not box.checked:
                if not box.consent.granted:
                    flips.append((box.consent, True))
                if not box.switched_on:
                    switch_on.append(
                        PreferenceChange(category=Kind.MARKETING, channel=box.channel, enabled=True)
                    )
            elif not wanted and box.checked and box.field in shown:
                flips.append((box.consent, False))
    return flips, switch_on


def _switch_line(change: PreferenceChange) -> str:
    words = {"what": _category_name(change.category), "channel": by_channel(change.channel)}
    if change.enabled:
        return gettext("%(what)s %(channel)s: on") % words
    return gettext("%(what)s %(channel)s: off") % words


def _page_save(request: HttpRequest, *, user_id: UserKey, centre: PreferenceCentre) -> list[str]:
    """Save the form; what changed, in words for the confirmation (active language)."""
    shown = set(request.POST.getlist("shown"))
    ip = _client_ip(request)
    flips, switch_on = _consent_changes(request, page_sections(centre), shown)
    changes = _page_changes(request, centre, shown)
    changes += [c for c in switch_on if c not in changes]
    frequency = request.POST.get("marketing_frequency")
    offers = str(kind_topic(Kind.MARKETING).name)
    done: list[str] = []
    with transaction.atomic():  # switches, frequency and consent: all saved, or none
        preferences_update(user_id=user_id, changes=changes, marketing_frequency=frequency)
        for consent, agreed in flips:
            words = {"what": offers, "channel": by_channel(consent.channel)}
            if agreed:
                consent_give(
                    user_id=user_id,
                    channel=consent.channel,
                    source="preference_link",
                    wording=consent.wording,
                    ip_address=ip,
                )
                done.append(gettext("%(what)s %(channel)s: you agreed") % words)
            else:
                consent_withdraw(
                    user_id=user_id,
                    channel=consent.channel,
                    source="preference_link",
                    ip_address=ip,
                )
                done.append(gettext("%(what)s %(channel)s: agreement withdrawn") % words)
        done += _page_cadences_save(request, user_id=user_id, centre=centre)
    switched = [_switch_line(change) for change in changes]
    if frequency and frequency != centre.marketing_frequency:
        label = str(FREQUENCY_NAMES.get(frequency, frequency))
        switched.append(gettext("How often we send offers: %(choice)s") % {"choice": label})
    return switched + done


# How often digests come, as the page names the choices ("": the type's own way).
CADENCE_NAMES: dict[str, Any] = {
    "": _("As each kind of message usually comes"),
    "immediately": _("Each one as it happens"),
    "hourly": _("Together, once an hour"),
    "daily": _("Together, once a day"),
    "weekly": _("Together, once a week"),
}
SAME_AS_ALL = _("Like the rest")


@dataclass(frozen=True, slots=True)
class CadenceRow:
    """One cadence select on the page: for all types (`scope` "") or one type."""

    field: str
    scope: str
    name: str
    chosen: str  # a cadence, or "" for no choice


def cadence_rows(centre: PreferenceCentre) -> list[CadenceRow]:
    """The page's cadence selects: the one for all types, then one per type."""
    if not centre.cadence_types:
        return []
    rows = [CadenceRow("digest_cadence", "", "", _chosen(centre, ""))]
    for key, name in centre.cadence_types:
        # The customer's words for the type, in the language being spoken.
        name = type_words(type_key=key, name=name, description="")[0]
        rows.append(CadenceRow(f"digest_cadence:{key}", key, name, _chosen(centre, key)))
    return rows


def _chosen(centre: PreferenceCentre, scope: str) -> str:
    state = centre.cadence_for(scope)
    return str(state.cadence) if state is not None else ""


def _page_cadences_save(
    request: HttpRequest, *, user_id: UserKey, centre: PreferenceCentre
) -> list[str]:
    """Save the cadence selects that changed (and the time and day, when they changed for a
    choice that uses them); what changed, in words. Inside the page's transaction."""
    rows = cadence_rows(centre)
    if not rows or "digest_cadence" not in request.POST:
        return []  # the page showed no cadences (or an older page posted): leave them be
    overall = centre.cadence_for("")
    at = request.POST.get("digest_at") or (overall.at.strftime("%H:%M") if overall else None)
    weekday = request.POST.get("digest_weekday") or None
    done = []
    for row in rows:
        wanted = request.POST.get(row.field, row.chosen)
        state = centre.cadence_for(row.scope)
        # The page's one time and day are the all-types choice's: a type's own daily or weekly
        # choice keeps its time unless that type's choice itself changes.
        moved = (
            row.scope == ""
            and state is not None
            and (
                (at is not None and state.at.strftime("%H:%M") != at)
                or (weekday is not None and str(state.weekday) != weekday)
            )
        )
        if wanted == row.chosen and not (wanted in ("daily", "weekly") and moved):
            continue
        if wanted:
            digest_cadence_set(
                user_id=user_id,
                scope=row.scope,
                cadence=wanted,
                at=at,
                weekday=weekday,  # check_weekday takes the form's "0".."6"
            )
        else:
            digest_cadence_clear(user_id=user_id, scope=row.scope)
        choice = str(CADENCE_NAMES.get(wanted, wanted)) if wanted or row.scope == "" else ""
        words = {"what": row.name or gettext("Summaries"), "choice": choice or str(SAME_AS_ALL)}
        done.append(gettext("%(what)s: %(choice)s") % words)
    return done


@never_cache
@require_http_methods(["GET", "POST"])
def preferences_page(request: HttpRequest, token: str) -> HttpResponse:
    try:
        user_id = _check_user(read_preferences_token(token))
    except (BadLink, PreferenceError) as exc:
        return _bad_link_page(request, exc)
    reader = reader_for(request, user_id=user_id)
    centre = preference_centre(user_id=user_id)
    problem, saved, changed = "", False, []
    with speaking(reader):
        if request.method == "POST":
            try:
                changed = _page_save(request, user_id=user_id, centre=centre)
            except PreferenceError as exc:
                problem = gettext("Nothing was saved: %(reason)s.") % {"reason": exc}
            else:
                centre, saved = preference_centre(user_id=user_id), True
        context = {
            "sections": page_sections(centre),
            "centre": centre,
            "frequencies": [(v, str(n)) for v, n in FREQUENCY_NAMES.items()],
            "cadence_rows": cadence_rows(centre),
            "cadence_names": [(v, str(n)) for v, n in CADENCE_NAMES.items()],
            "cadence_at": _cadence_at(centre),
            "cadence_weekday": (c.weekday if (c := centre.cadence_for("")) else DEFAULT_WEEKDAY),
            "weekdays": list(WEEKDAYS.items()),
            "same_as_all": str(SAME_AS_ALL),
            "saved": saved,
            "changed": changed,
            "problem": problem,
        }
    return _page(
        request,
        "preferences.html",
        context,
        user_id=user_id,
        status=400 if problem else 200,
    )


def _cadence_at(centre: PreferenceCentre) -> str:
    state = centre.cadence_for("")
    return (state.at if state is not None else DEFAULT_AT).strftime("%H:%M")
