"""Django's signers, made cheap enough for the fan-out.

A campaign recipient's message carries several signed links (unsubscribe, clicks, the open
pixel). `django.core.signing` derives the HMAC key from the salt and SECRET_KEY afresh for
every signature; here it is derived once per (salt, key) and the keyed HMAC copied for each
value. The tokens are byte for byte those of `django.core.signing` (`signing.loads` and
`Signer.unsign` read them), and rotating SECRET_KEY with SECRET_KEY_FALLBACKS works as usual.
"""

from __future__ import annotations

import functools
import hashlib
import hmac

from django.conf import settings
from django.core import signing
from django.utils.encoding import force_bytes


@functools.lru_cache(maxsize=64)
def _keyed(salt: bytes, key: bytes, algorithm: str) -> hmac.HMAC:
    """What `django.utils.crypto.salted_hmac` builds, before it sees the value."""
    hasher = getattr(hashlib, algorithm)
    return hmac.new(hasher(salt + key).digest(), digestmod=hasher)


def _signature(salt: str | bytes, key: str | bytes, algorithm: str, value: str | bytes) -> str:
    """`django.core.signing.base64_hmac(salt + "signer", value, key, algorithm)`."""
    mac = _keyed(force_bytes(salt) + b"signer", force_bytes(key), algorithm).copy()
    mac.update(force_bytes(value))
    return signing.b64_encode(mac.digest()).decode()


class FastSigner(signing.Signer):
    def signature(self, value: str | bytes, key: str | bytes | None = None) -> str:
        return _signature(self.salt, key or self.key, self.algorithm, value)


class FastTimestampSigner(signing.TimestampSigner):
    def signature(self, value: str | bytes, key: str | bytes | None = None) -> str:
        return _signature(self.salt, key or self.key, self.algorithm, value)


@functools.lru_cache(maxsize=64)
def _signer(
    kind: type[signing.Signer], salt: str, key: str, fallbacks: tuple[str, ...]
) -> signing.Signer:
    return kind(salt=salt, key=key, fallback_keys=list(fallbacks))


def signer(salt: str) -> signing.Signer:
    """A Signer for `salt` with the current SECRET_KEY (and its fallbacks)."""
    return _signer(FastSigner, salt, settings.SECRET_KEY, tuple(settings.SECRET_KEY_FALLBACKS))


def dumps(obj: object, *, salt: str) -> str:
    """`django.core.signing.dumps(obj, salt=salt)`, with the key derived once."""
    timestamped = _signer(
        FastTimestampSigner, salt, settings.SECRET_KEY, tuple(settings.SECRET_KEY_FALLBACKS)
    )
    return timestamped.sign_object(obj)


def dumps_json(text: str, *, salt: str) -> str:
    """`dumps(obj, salt=salt)` given the compact JSON of `obj` (what
    `json.dumps(obj, separators=(",", ":"))` writes), written directly by a caller that makes
    many of the same shape."""
    timestamped = _signer(
        FastTimestampSigner, salt, settings.SECRET_KEY, tuple(settings.SECRET_KEY_FALLBACKS)
    )
    return timestamped.sign(signing.b64_encode(text.encode("latin-1")).decode())
