"""The fan-out's signers give exactly Django's tokens, only cheaper."""

from __future__ import annotations

import pytest
from django.core import signing
from django.test import override_settings

from notifier import signing as fast_signing


@pytest.mark.parametrize("payload", [[1, "email", 0], {"user": 7, "category": "promo"}, "plain"])
def test_signer_gives_djangos_token(payload: object) -> None:
    assert fast_signing.signer("s").sign_object(payload) == signing.Signer(salt="s").sign_object(
        payload
    )


def test_dumps_reads_back_with_djangos_loads() -> None:
    token = fast_signing.dumps({"user": 3}, salt="notifier.unsubscribe")
    assert signing.loads(token, salt="notifier.unsubscribe") == {"user": 3}
    with pytest.raises(signing.BadSignature):
        signing.loads(token, salt="notifier.preferences")


def test_the_salt_and_key_are_part_of_the_signature() -> None:
    token = fast_signing.signer("a").sign_object([1])
    with pytest.raises(signing.BadSignature):
        signing.Signer(salt="b").unsign_object(token)
    with (
        override_settings(SECRET_KEY="another-key-entirely-" * 3),
        pytest.raises(signing.BadSignature),
    ):
        fast_signing.signer("a").unsign_object(token)


def test_a_rotated_key_still_reads_old_tokens() -> None:
    old = fast_signing.signer("a").sign_object([1])
    with override_settings(SECRET_KEY="the-new-key-" * 4, SECRET_KEY_FALLBACKS=[_current_key()]):
        assert fast_signing.signer("a").unsign_object(old) == [1]
        assert fast_signing.signer("a").sign_object([1]) != old


def _current_key() -> str:
    from django.conf import settings

    return str(settings.SECRET_KEY)
