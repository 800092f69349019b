"""Signed links that act for a user without a login: unsubscribe (RFC 8058) and the preference page.

A link carries its claim (user, category, channel, and the message it came in, when known, so
an unsubscribe is counted against that message) signed with SECRET_KEY and a salt per
purpose, so a preference link cannot be replayed as an unsubscribe link or the other way round.
Links expire after NOTIFIER_LINK_MAX_AGE_DAYS; rotating SECRET_KEY (with the old key in
SECRET_KEY_FALLBACKS) keeps links already sent working.
"""

from __future__ import annotations

import functools
import json
import re
from dataclasses import dataclass
from datetime import timedelta
from enum import StrEnum
from typing import Any, TypeGuard

from django.conf import settings
from django.core import signing
from django.urls import reverse

from notifier import signing as fast_signing
from notifier.ids import MAX_ID
from notifier.text import text_problem
from notifier.user_keys import UserKey, user_key, user_key_json

UNSUBSCRIBE_SALT = "notifier.unsubscribe"
PREFERENCES_SALT = "notifier.preferences"

# What signing.dumps() gives out: payload (urlsafe base64, "." first when compressed),
# timestamp (base62) and signature (urlsafe base64). Anything else was cut or mangled in transit.
TOKEN_RE = re.compile(r"\.?[A-Za-z0-9_-]+:[0-9A-Za-z]+:[A-Za-z0-9_-]+")
MAX_TOKEN_LENGTH = 1000
MAX_CLAIM_TEXT = 200  # a category is a type key (at most 100 characters) or a kind


class BadLinkReason(StrEnum):
    TAMPERED = "tampered"  # the signature does not match: edited, or signed for another purpose
    EXPIRED = "expired"  # older than NOTIFIER_LINK_MAX_AGE_DAYS
    MALFORMED = "malformed"  # not a token at all, e.g. cut short by a mail client


class BadLink(ValueError):
    """A signed link that cannot be trusted; `reason` says why."""

    def __init__(self, reason: BadLinkReason, message: str) -> None:
        super().__init__(message)
        self.reason = reason


@dataclass(frozen=True, slots=True)
class UnsubscribeClaim:
    user_id: UserKey
    category: str
    channel: str
    message_id: int | None = None  # None for links made without one, and for older links


def _max_age() -> timedelta:
    return timedelta(days=settings.NOTIFIER_LINK_MAX_AGE_DAYS)


def _absolute(path: str) -> str:
    return f"{settings.NOTIFIER_SITE_URL.rstrip('/')}{path}"


_TOKEN_SLOT = "TOKENSLOT"


@functools.lru_cache(maxsize=32)
def _path_with_slot(name: str) -> str:
    return reverse(name, kwargs={"token": _TOKEN_SLOT})


def token_url(name: str, token: str) -> str:
    """The absolute URL of a route that takes a token. Campaign fan-out makes several links
    per recipient; resolving the route once per name instead of per link keeps that cheap."""
    return _absolute(_path_with_slot(name).replace(_TOKEN_SLOT, token))


def _load(token: str, *, salt: str) -> dict[str, Any]:
    if not isinstance(token, str) or len(token) > MAX_TOKEN_LENGTH or not TOKEN_RE.fullmatch(token):
        raise BadLink(BadLinkReason.MALFORMED, "the link is incomplete; open it from the message")
    try:
        payload = signing.loads(token, salt=salt, max_age=_max_age())
    except signing.SignatureExpired as exc:  # before BadSignature: it is a subclass
        raise BadLink(BadLinkReason.EXPIRED, "the link has expired") from exc
    except signing.BadSignature as exc:
        raise BadLink(BadLinkReason.TAMPERED, "the link is not valid") from exc
    except ValueError as exc:  # a valid signature over a payload that is not JSON
        raise BadLink(BadLinkReason.MALFORMED, "the link does not hold a claim") from exc
    if not isinstance(payload, dict):
        raise BadLink(BadLinkReason.MALFORMED, "the link does not hold a claim")
    return payload


def _is_id(value: object) -> TypeGuard[int]:
    return isinstance(value, int) and not isinstance(value, bool) and 0 < value <= MAX_ID


def _is_claim_text(value: object) -> TypeGuard[str]:
    # A valid signature vouches for who made the claim, not for its values: a NUL here would
    # reach a query (PostgreSQL refuses it: a 500), so it is no claim.
    return isinstance(value, str) and 0 < len(value) <= MAX_CLAIM_TEXT and not text_problem(value)


def _user_id_of(payload: dict[str, Any]) -> UserKey:
    user_id = user_key(payload.get("user"))
    if user_id is None:
        raise BadLink(BadLinkReason.MALFORMED, "the link does not name a user")
    return user_id


# --- Unsubscribe ----------------------------------------------------------------------------


def unsubscribe_token(
    *, user_id: UserKey, category: str, channel: str, message_id: int | None = None
) -> str:
    user = user_key_json(user_id)
    if type(user) is int and (message_id is None or type(message_id) is int):
        # The fan-out signs one per recipient: the claim's JSON written directly, the same
        # text json.dumps writes (keys in this order, compact).
        text = f'{{"user":{user}{_claim_text(category, channel)}'
        text += "}" if message_id is None else f',"message":{message_id}}}'
        return fast_signing.dumps_json(text, salt=UNSUBSCRIBE_SALT)
    claim: dict[str, Any] = {"user": user, "category": category, "channel": channel}
    if message_id is not None:
        claim["message"] = message_id
    return fast_signing.dumps(claim, salt=UNSUBSCRIBE_SALT)


@functools.lru_cache(maxsize=1024)
def _claim_text(category: str, channel: str) -> str:
    return f',"category":{json.dumps(category)},"channel":{json.dumps(channel)}'


def read_unsubscribe_token(token: str) -> UnsubscribeClaim:
    """The claim in an unsubscribe token, or BadLink (tampered, expired or malformed)."""
    payload = _load(token, salt=UNSUBSCRIBE_SALT)
    category, channel = payload.get("category"), payload.get("channel")
    if not (_is_claim_text(category) and _is_claim_text(channel)):
        raise BadLink(BadLinkReason.MALFORMED, "the link does not name a category and channel")
    message_id = payload.get("message")
    if message_id is not None and not _is_id(message_id):
        raise BadLink(BadLinkReason.MALFORMED, "the link names no message")
    return UnsubscribeClaim(
        user_id=_user_id_of(payload), category=category, channel=channel, message_id=message_id
    )


@dataclass(frozen=True)
class UnsubscribeLinks:
    """The unsubscribe links of one message on one channel: the page in the footer and the
    RFC 8058 headers share one signed token, made when first needed."""

    user_id: UserKey
    category: str
    channel: str
    message_id: int | None = None

    @functools.cached_property
    def token(self) -> str:
        return unsubscribe_token(
            user_id=self.user_id,
            category=self.category,
            channel=self.channel,
            message_id=self.message_id,
        )

    def page_url(self) -> str:
        """The page that asks what to unsubscribe from: for the link in a message's footer."""
        return token_url("notifier:unsubscribe", self.token)

    def one_click_url(self) -> str:
        """The RFC 8058 endpoint mail clients POST to; a GET only shows the choices."""
        return token_url("notifier:unsubscribe-one-click", self.token)

    def headers(self) -> dict[str, str]:
        """RFC 2369 / RFC 8058 headers for an email: one-click unsubscribe from this category.

        URL only: a mailto: would need a mailbox that processes requests, and there is none.
        """
        return {
            "List-Unsubscribe": f"<{self.one_click_url()}>",
            "List-Unsubscribe-Post": "List-Unsubscribe=One-Click",
        }


def unsubscribe_url(
    *, user_id: UserKey, category: str, channel: str, message_id: int | None = None
) -> str:
    """The page that asks what to unsubscribe from: for the link in a message's footer."""
    return UnsubscribeLinks(user_id, category, channel, message_id).page_url()


def one_click_unsubscribe_url(
    *, user_id: UserKey, category: str, channel: str, message_id: int | None = None
) -> str:
    """The RFC 8058 endpoint mail clients POST to; a GET only shows the choices."""
    return UnsubscribeLinks(user_id, category, channel, message_id).one_click_url()


def unsubscribe_headers(
    *, user_id: UserKey, category: str, channel: str, message_id: int | None = None
) -> dict[str, str]:
    """RFC 2369 / RFC 8058 headers for an email: one-click unsubscribe from this category."""
    return UnsubscribeLinks(user_id, category, channel, message_id).headers()


# --- The preference page --------------------------------------------------------------------


def preferences_token(*, user_id: UserKey) -> str:
    user = user_key_json(user_id)
    if type(user) is int:  # as unsubscribe_token: the claim's JSON written directly
        return fast_signing.dumps_json(f'{{"user":{user}}}', salt=PREFERENCES_SALT)
    return fast_signing.dumps({"user": user}, salt=PREFERENCES_SALT)


def read_preferences_token(token: str) -> UserKey:
    """The user id in a preference-page token, or BadLink (tampered, expired or malformed)."""
    return _user_id_of(_load(token, salt=PREFERENCES_SALT))


def preferences_url(*, user_id: UserKey) -> str:
    """A page where the user sees and changes their preferences without logging in."""
    return token_url("notifier:preferences-page", preferences_token(user_id=user_id))
