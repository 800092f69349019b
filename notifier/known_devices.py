"""Account names as the login limit counts them, and the "known device" cookie that keeps a
flood of guesses at an account from locking its owner out.

The per-account login limit (notifier/request_limits.py) stops a botnet guessing one account's
password from many addresses. Shared by everyone, it would also let anyone lock a known
account (an admin's) out by guessing on purpose. So a browser that has logged in to an account
before carries a signed, HttpOnly cookie naming that account (hashed) and a random device id;
its attempts at that account count in a bucket of their own (account + device), and the
flood's in the shared one. A stolen cookie gives one more bucket, not a way around the limit.
"""

from __future__ import annotations

import hashlib
import secrets
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

from django.conf import settings
from django.contrib.auth.forms import UsernameField
from django.core import signing
from django.http import HttpRequest, HttpResponse

KNOWN_DEVICE_COOKIE = "notifier_device"
KNOWN_DEVICE_SALT = "notifier.known_device"
KNOWN_DEVICE_MAX_AGE = timedelta(days=180)
MAX_ACCOUNTS_PER_DEVICE = 5  # the accounts most recently logged in to from this browser
_LOGGED_IN_AS = "_notifier_logged_in_account"  # set on the request by the login signal


def account_key(username: str) -> str | None:
    """The account a login form's username names, hashed (a Redis key must not list account
    names); None for a blank name. Normalised exactly as Django's login form does (strip, then
    NFKC: the fullwidth and mathematical-bold spellings of "victor" log in as "victor"), then
    case-folded ("Victor" is the same account to a guesser)."""
    normalised = UsernameField().to_python(username)
    if not normalised:
        return None
    folded = normalised.casefold().encode("utf-8", "surrogatepass")
    return hashlib.sha256(folded).hexdigest()[:32]


@dataclass(frozen=True, slots=True)
class KnownDevice:
    device_id: str
    accounts: tuple[str, ...]  # account_key()s, most recent first

    def knows(self, account: str) -> bool:
        return account in self.accounts


def known_device(request: HttpRequest) -> KnownDevice | None:
    """The request's known-device cookie, when it is one we signed and not too old."""
    value = request.COOKIES.get(KNOWN_DEVICE_COOKIE)
    if not value:
        return None
    try:
        payload = signing.loads(value, salt=KNOWN_DEVICE_SALT, max_age=KNOWN_DEVICE_MAX_AGE)
    except (signing.BadSignature, ValueError):
        return None
    if not isinstance(payload, dict):
        return None
    device_id, accounts = payload.get("d"), payload.get("a")
    if not isinstance(device_id, str) or not isinstance(accounts, list):
        return None
    return KnownDevice(device_id, tuple(a for a in accounts if isinstance(a, str)))


def remember_login(sender: Any, request: HttpRequest | None, user: Any, **kwargs: Any) -> None:
    """Receiver of `user_logged_in`: note which account this browser just logged in to (the name
    as typed, which is what the limit counts; the user's own name for other logins)."""
    if request is None:
        return
    typed = request.POST.get("username", "") if request.method == "POST" else ""
    account = account_key(typed) or account_key(user.get_username())
    if account is not None:
        setattr(request, _LOGGED_IN_AS, account)


def set_known_device_cookie(request: HttpRequest, response: HttpResponse) -> None:
    """After a successful login, (re)issue the cookie with that account first."""
    account = getattr(request, _LOGGED_IN_AS, None)
    if account is None:
        return
    device = known_device(request)
    device_id = device.device_id if device else secrets.token_hex(16)
    accounts = [account, *(a for a in (device.accounts if device else ()) if a != account)]
    value = signing.dumps(
        {"d": device_id, "a": accounts[:MAX_ACCOUNTS_PER_DEVICE]}, salt=KNOWN_DEVICE_SALT
    )
    response.set_cookie(
        KNOWN_DEVICE_COOKIE,
        value,
        max_age=int(KNOWN_DEVICE_MAX_AGE.total_seconds()),
        httponly=True,
        secure=settings.SESSION_COOKIE_SECURE,
        samesite="Lax",
    )
