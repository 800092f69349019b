"""App tokens: what a mobile app or a web page holds instead of an API key.

The product's backend, which holds an API key, asks for a token for the person signed in
(`POST /api/v1/recipients/{external_id}/app-token`) and hands it to the app. The token is
signed with the site's SECRET_KEY, names that one recipient, and expires
(NOTIFIER_APP_TOKEN_MAX_AGE_S); with it the app may register and unregister that person's
devices and read and change that person's preferences and consent, nothing else and nobody
else's. Nothing is stored: a token stops working when it expires, when the recipient is erased,
or when SECRET_KEY changes.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta

from django.conf import settings
from django.core import signing
from django.utils import timezone

from notifier import provider_limits
from notifier.models import Recipient
from notifier.services.api_keys import Throttled, parse_key_rate

TOKEN_PREFIX = "ntr_"
SALT = "notifier.app-token"


class InvalidAppToken(ValueError):
    pass


@dataclass(frozen=True, slots=True)
class IssuedAppToken:
    token: str
    expires_at: datetime


@dataclass(frozen=True, slots=True)
class AppCaller:
    """Who an app token speaks for."""

    recipient_id: int
    external_id: str


def app_token_issue(recipient: Recipient) -> IssuedAppToken:
    if not recipient.external_id:
        raise InvalidAppToken("the recipient has no external_id to issue an app token for")
    signed = signing.TimestampSigner(salt=SALT).sign_object(
        {"r": recipient.pk, "x": recipient.external_id}, compress=True
    )
    max_age = settings.NOTIFIER_APP_TOKEN_MAX_AGE_S
    return IssuedAppToken(
        token=TOKEN_PREFIX + signed, expires_at=timezone.now() + timedelta(seconds=max_age)
    )


def app_token_read(token: str) -> AppCaller:
    """The recipient an app token speaks for, or InvalidAppToken (forged, expired, erased)."""
    if not token.startswith(TOKEN_PREFIX) or len(token) > 1000:
        raise InvalidAppToken("not an app token")
    try:
        claims = signing.TimestampSigner(salt=SALT).unsign_object(
            token[len(TOKEN_PREFIX) :], max_age=settings.NOTIFIER_APP_TOKEN_MAX_AGE_S
        )
    except signing.SignatureExpired:
        raise InvalidAppToken(
            "this app token has expired; ask your backend for a new one"
        ) from None
    except (signing.BadSignature, ValueError):
        raise InvalidAppToken("this app token is not valid") from None
    if not isinstance(claims, dict) or not isinstance(claims.get("r"), int):
        raise InvalidAppToken("this app token is not valid")
    external_id = claims.get("x")
    # The same person still: erased, or the external id given to someone else, and it stops.
    if not Recipient.objects.filter(pk=claims["r"], external_id=external_id).exists():
        raise InvalidAppToken("this app token's recipient no longer exists")
    return AppCaller(recipient_id=claims["r"], external_id=str(external_id))


def app_token_throttle(caller: AppCaller) -> Throttled | None:
    """One request from the recipient's bucket (every app token of theirs shares it)."""
    grant = provider_limits.take(
        f"app-token:{caller.recipient_id}", parse_key_rate(settings.NOTIFIER_APP_TOKEN_RATE_LIMIT)
    )
    if grant.granted >= 1:
        return None
    return Throttled(retry_after_s=max(1, int(grant.retry_after_s + 0.999)))
