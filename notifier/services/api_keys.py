"""API keys: made (shown once), checked on each request, rate-limited per key, revoked.

The key is `ntf_<prefix>_<secret>`: the prefix finds the row, a SHA-256 of the whole key is
compared in constant time, a revoked key is refused. Its use is recorded (`last_used_at`) at
most once a minute, so a busy key costs no write per request. Each key has its own token
bucket on the shared Redis limiter (notifier.provider_limits.take), at its own rate or
NOTIFIER_API_KEY_RATE_LIMIT.
"""

from __future__ import annotations

import hashlib
import hmac
import re
import secrets
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

from django.conf import settings
from django.db import IntegrityError, transaction
from django.utils import timezone

from notifier import provider_limits
from notifier.models.api_keys import ApiKey, ApiScope
from notifier.rates import InvalidRate, Rate, parse_rate_text

TOKEN_PREFIX = "ntf_"
_TOKEN_FORM = re.compile(r"ntf_([a-z0-9]{12})_([A-Za-z0-9_-]{43})")
_PREFIX_ALPHABET = "abcdefghijklmnopqrstuvwxyz0123456789"
TOUCH_EVERY = timedelta(minutes=1)


class InvalidApiKey(ValueError):
    """A scope, name or rate an API key cannot have; the message says which."""


@dataclass(frozen=True)
class NewApiKey:
    key: ApiKey
    token: str  # shown once; only its hash is kept


@dataclass(frozen=True)
class Throttled:
    retry_after_s: int


def _hash(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


def check_scopes(scopes: Iterable[Any]) -> list[str]:
    valid = set(ApiScope.values)
    chosen = list(dict.fromkeys(str(scope) for scope in scopes))
    unknown = [scope for scope in chosen if scope not in valid]
    if unknown:
        raise InvalidApiKey(
            f"unknown scope {', '.join(unknown)}; scopes are {', '.join(ApiScope.values)}"
        )
    if not chosen:
        raise InvalidApiKey(f"give the key at least one scope of {', '.join(ApiScope.values)}")
    return chosen


def parse_key_rate(text: str) -> Rate:
    """'50/s' or '3000/m' -> a bucket of that size refilled at that rate."""
    try:
        rate = parse_rate_text(text, whole=True)
    except InvalidRate as exc:
        raise InvalidApiKey(str(exc)) from None
    return Rate(per_second=rate.per_second, burst=int(rate.amount))


def api_key_create(
    *, name: str, scopes: Iterable[Any], created_by: Any = None, rate_limit: str = ""
) -> NewApiKey:
    """A new key with these scopes; the token is in the result and nowhere else."""
    name = str(name).strip()
    if not name or len(name) > 100:
        raise InvalidApiKey("name the key (1 to 100 characters): who will use it")
    chosen = check_scopes(scopes)
    if rate_limit:
        parse_key_rate(rate_limit)
    for _ in range(5):  # a prefix clash among 36^12 is a curiosity, not an error
        prefix = "".join(secrets.choice(_PREFIX_ALPHABET) for _ in range(12))
        token = f"{TOKEN_PREFIX}{prefix}_{secrets.token_urlsafe(32)}"
        try:
            with transaction.atomic():
                key = ApiKey.objects.create(
                    name=name,
                    prefix=prefix,
                    secret_hash=_hash(token),
                    scopes=chosen,
                    rate_limit=rate_limit,
                    created_by=created_by,
                )
        except IntegrityError:
            continue
        return NewApiKey(key=key, token=token)
    raise RuntimeError("could not find a free API key prefix")


def api_key_revoke(*, key: ApiKey) -> bool:
    """Revoke the key (at its next request it is refused); False if it already was."""
    return bool(
        ApiKey.objects.filter(pk=key.pk, revoked_at__isnull=True).update(revoked_at=timezone.now())
    )


def api_key_authenticate(token: str) -> ApiKey | None:
    """The live key this token is, or None (malformed, unknown, wrong secret, revoked)."""
    if not isinstance(token, str) or len(token) > 100:
        return None
    match = _TOKEN_FORM.fullmatch(token)
    if match is None:
        return None
    key = ApiKey.objects.filter(prefix=match.group(1)).first()
    if key is None or not hmac.compare_digest(key.secret_hash, _hash(token)):
        return None
    if key.revoked_at is not None:
        return None
    now = timezone.now()
    if key.last_used_at is None or key.last_used_at < now - TOUCH_EVERY:
        ApiKey.objects.filter(pk=key.pk).update(last_used_at=now)
        key.last_used_at = now
    return key


def api_key_throttle(key: ApiKey) -> Throttled | None:
    """Take one request from the key's bucket; how long to wait when it is empty."""
    rate = parse_key_rate(key.rate_limit or settings.NOTIFIER_API_KEY_RATE_LIMIT)
    grant = provider_limits.take(f"api-key:{key.prefix}", rate)
    if grant.granted >= 1:
        return None
    return Throttled(retry_after_s=max(1, int(grant.retry_after_s + 0.999)))
