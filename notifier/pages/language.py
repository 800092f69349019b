"""Which language and time zone an end user's page speaks: the customer's, not the server's.

The language is, in order: the one the visitor just picked with the page's language switch
(`?lang=zh-hans`, remembered in Django's language cookie), the customer's own locale from
their recipient profile (a signed link names the customer even without a session), and
otherwise what the browser asks for (Accept-Language, negotiated the way LocaleMiddleware
does, over the pages' languages). Only languages in NOTIFIER_PAGE_LANGUAGES (those with
translations shipped) and in the host's LANGUAGES are offered. Times are shown in the
profile's time zone, UTC without one.

The pages activate the language themselves, so a host needs no LocaleMiddleware for them.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from urllib.parse import urlencode
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from django.conf import settings
from django.http import HttpRequest, HttpResponse
from django.utils import timezone, translation
from django.utils.cache import patch_vary_headers
from django.utils.translation.trans_real import parse_accept_lang_header

from notifier.models import Recipient
from notifier.user_keys import UserKey

LANGUAGE_PARAM = "lang"
MAX_ACCEPT_LANGUAGE = 500  # Django's own limit on the header it parses
# What the switch calls each language: in that language, so a reader finds their own.
LANGUAGE_NAMES = {"en": "English", "zh-hans": "简体中文"}


@dataclass(frozen=True, slots=True)
class Reader:
    """The language and time zone a page is written for."""

    language: str
    zone: ZoneInfo
    picked: bool = False  # chosen with the switch on this request: remember it in the cookie


@dataclass(frozen=True, slots=True)
class LanguageLink:
    code: str
    name: str
    url: str
    current: bool


def page_languages() -> list[str]:
    offered = {code.lower() for code, _ in settings.LANGUAGES}
    return [code for code in settings.NOTIFIER_PAGE_LANGUAGES if code.lower() in offered]


def supported(code: object) -> str | None:
    """The page language that serves `code` ("zh-CN" -> "zh-hans", "en-GB" -> "en"), if any."""
    if not isinstance(code, str) or not code or len(code) > 32:
        return None
    try:
        variant = translation.get_supported_language_variant(code.strip().replace("_", "-").lower())
    except LookupError:
        return None
    return variant if variant in page_languages() else None


def _zone(name: str | None) -> ZoneInfo:
    try:
        return ZoneInfo(name or "UTC")
    except (ZoneInfoNotFoundError, ValueError):
        return ZoneInfo("UTC")


def reader_for(request: HttpRequest, *, user_id: UserKey | None) -> Reader:
    """The language and zone for this request's page about `user_id` (None: nobody known)."""
    profile = (
        Recipient.objects.filter(user_id=user_id).values("locale", "time_zone").first()
        if user_id is not None
        else None
    )
    zone = _zone(profile["time_zone"] if profile else None)
    picked = supported(request.GET.get(LANGUAGE_PARAM))
    if picked:
        return Reader(language=picked, zone=zone, picked=True)
    remembered = supported(request.COOKIES.get(settings.LANGUAGE_COOKIE_NAME))
    if remembered:
        return Reader(language=remembered, zone=zone)
    known = supported(profile["locale"]) if profile else None
    if known:
        return Reader(language=known, zone=zone)
    fallback = supported(settings.LANGUAGE_CODE) or (page_languages() or ["en"])[0]
    return Reader(language=_asked(request) or fallback, zone=zone)


def _asked(request: HttpRequest) -> str | None:
    """The first language in Accept-Language, by preference, that the pages speak: as
    LocaleMiddleware negotiates, but over the pages' languages, not all of the host's (a
    browser asking for French first and Chinese second gets Chinese, not the default)."""
    header = request.headers.get("Accept-Language", "")
    for code, _quality in parse_accept_lang_header(header[:MAX_ACCEPT_LANGUAGE]):
        if code != "*" and (found := supported(code)):
            return found
    return None


def language_links(request: HttpRequest, current: str) -> list[LanguageLink]:
    """The switch: this page again in each language (plain links, no JavaScript needed)."""
    query = request.GET.copy()
    links = []
    for code in page_languages():
        query[LANGUAGE_PARAM] = code
        links.append(
            LanguageLink(
                code=code,
                name=LANGUAGE_NAMES.get(code, code),
                url=f"{request.path}?{urlencode(sorted(query.items()))}",
                current=code == current,
            )
        )
    return links if len(links) > 1 else []


@contextmanager
def speaking(reader: Reader) -> Iterator[None]:
    """Render in the reader's language and zone."""
    with translation.override(reader.language), timezone.override(reader.zone):
        yield


def finish(response: HttpResponse, reader: Reader) -> HttpResponse:
    """Say which language the page is in, that it depends on who asks, and remember a pick."""
    response.headers.setdefault("Content-Language", reader.language)
    patch_vary_headers(response, ("Accept-Language", "Cookie"))
    if reader.picked:
        response.set_cookie(
            settings.LANGUAGE_COOKIE_NAME,
            reader.language,
            max_age=settings.LANGUAGE_COOKIE_AGE,
            path=settings.LANGUAGE_COOKIE_PATH,
            domain=settings.LANGUAGE_COOKIE_DOMAIN,
            secure=settings.LANGUAGE_COOKIE_SECURE,
            httponly=settings.LANGUAGE_COOKIE_HTTPONLY,
            samesite=settings.LANGUAGE_COOKIE_SAMESITE,
        )
    return response
