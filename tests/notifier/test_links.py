"""Signed links: unsubscribe and preference tokens, their URLs, and the RFC 8058 headers."""

from __future__ import annotations

import datetime as dt

import pytest
import time_machine
from django.core import signing
from django.urls import resolve

from notifier.links import (
    PREFERENCES_SALT,
    UNSUBSCRIBE_SALT,
    BadLink,
    BadLinkReason,
    UnsubscribeClaim,
    one_click_unsubscribe_url,
    preferences_token,
    preferences_url,
    read_preferences_token,
    read_unsubscribe_token,
    unsubscribe_headers,
    unsubscribe_token,
    unsubscribe_url,
)

T0 = dt.datetime(2025, 3, 1, 12, 0, tzinfo=dt.UTC)


@pytest.fixture
def site(settings):
    settings.NOTIFIER_SITE_URL = "https://notify.example.com/"
    return "https://notify.example.com"


def test_an_unsubscribe_token_reads_back_as_its_claim():
    token = unsubscribe_token(user_id=42, category="promo.flash_sale", channel="email")
    assert read_unsubscribe_token(token) == UnsubscribeClaim(
        user_id=42, category="promo.flash_sale", channel="email"
    )


def test_a_preferences_token_reads_back_as_its_user_id():
    assert read_preferences_token(preferences_token(user_id=7)) == 7


def test_urls_are_absolute_on_the_site_url_and_route_to_their_views(site):
    page = unsubscribe_url(user_id=42, category="marketing", channel="sms")
    one_click = one_click_unsubscribe_url(user_id=42, category="marketing", channel="sms")
    prefs = preferences_url(user_id=42)

    assert page.startswith(f"{site}/unsubscribe/") and page.endswith("/")
    assert one_click.startswith(f"{site}/unsubscribe/") and one_click.endswith("/one-click/")
    assert prefs.startswith(f"{site}/preferences/")
    assert resolve(page.removeprefix(site)).url_name == "unsubscribe"
    match = resolve(one_click.removeprefix(site))
    assert match.url_name == "unsubscribe-one-click"
    assert read_unsubscribe_token(match.kwargs["token"]).channel == "sms"
    prefs_match = resolve(prefs.removeprefix(site))
    assert prefs_match.url_name == "preferences-page"
    assert read_preferences_token(prefs_match.kwargs["token"]) == 42


def test_unsubscribe_headers_are_exactly_rfc_8058(site):
    headers = unsubscribe_headers(user_id=42, category="promo.flash_sale", channel="email")

    assert set(headers) == {"List-Unsubscribe", "List-Unsubscribe-Post"}
    assert headers["List-Unsubscribe-Post"] == "List-Unsubscribe=One-Click"
    value = headers["List-Unsubscribe"]
    assert value.startswith(f"<{site}/unsubscribe/") and value.endswith("/one-click/>")
    assert "mailto:" not in value and "," not in value
    token = resolve(value[1:-1].removeprefix(site)).kwargs["token"]
    assert read_unsubscribe_token(token) == UnsubscribeClaim(42, "promo.flash_sale", "email")


def _flip_last_char(token: str) -> str:
    return token[:-1] + ("A" if token[-1] != "A" else "B")


def test_a_token_with_an_edited_signature_is_tampered():
    token = unsubscribe_token(user_id=1, category="marketing", channel="email")
    with pytest.raises(BadLink) as caught:
        read_unsubscribe_token(_flip_last_char(token))
    assert caught.value.reason is BadLinkReason.TAMPERED


def test_a_token_with_another_users_payload_and_the_old_signature_is_tampered():
    token = unsubscribe_token(user_id=1, category="marketing", channel="email")
    forged_payload = signing.b64_encode(
        b'{"user":2,"category":"marketing","channel":"email"}'
    ).decode()
    _, timestamp, signature = token.split(":")
    with pytest.raises(BadLink) as caught:
        read_unsubscribe_token(f"{forged_payload}:{timestamp}:{signature}")
    assert caught.value.reason is BadLinkReason.TAMPERED


@pytest.mark.parametrize(
    ("reader", "token"),
    [
        (read_unsubscribe_token, lambda: preferences_token(user_id=1)),
        (read_preferences_token, lambda: unsubscribe_token(user_id=1, category="x", channel="y")),
        (read_unsubscribe_token, lambda: signing.dumps({"user": 1}, salt="another.purpose")),
        (read_preferences_token, lambda: signing.dumps({"user": 1})),
    ],
    ids=["preferences-as-unsubscribe", "unsubscribe-as-preferences", "other-salt", "no-salt"],
)
def test_a_token_signed_for_another_purpose_is_tampered(reader, token):
    with pytest.raises(BadLink) as caught:
        reader(token())
    assert caught.value.reason is BadLinkReason.TAMPERED


@pytest.mark.parametrize(
    "token",
    ["", "not-a-token", "abc:def", "a:b:c:d", "eyJ1IjoxfQ:1tXyZ", "with space:1tX:sig", "é:1:2"],
)
def test_a_string_that_is_not_a_token_is_malformed(token):
    with pytest.raises(BadLink) as caught:
        read_unsubscribe_token(token)
    assert caught.value.reason is BadLinkReason.MALFORMED


def test_a_token_cut_short_by_a_mail_client_is_malformed():
    token = unsubscribe_token(user_id=1, category="marketing", channel="email")
    with pytest.raises(BadLink) as caught:
        read_unsubscribe_token(token.rsplit(":", 1)[0])
    assert caught.value.reason is BadLinkReason.MALFORMED


def test_a_signed_payload_without_a_claim_is_malformed():
    for payload in (
        [1, 2],
        {"user": "1", "category": "marketing", "channel": "email"},
        {"user": 1},
    ):
        with pytest.raises(BadLink) as caught:
            read_unsubscribe_token(signing.dumps(payload, salt=UNSUBSCRIBE_SALT))
        assert caught.value.reason is BadLinkReason.MALFORMED
    with pytest.raises(BadLink) as caught:
        read_preferences_token(signing.dumps({"user": True}, salt=PREFERENCES_SALT))
    assert caught.value.reason is BadLinkReason.MALFORMED


@pytest.mark.parametrize(
    "claim",
    [
        {"user": 1, "category": "promo\x00", "channel": "email"},
        {"user": 1, "category": "marketing", "channel": "email\ud800"},
        {"user": 1, "category": "", "channel": "email"},
        {"user": 1, "category": "x" * 201, "channel": "email"},
        {"user": 2**63, "category": "marketing", "channel": "email"},
        {"user": 1, "category": "marketing", "channel": "email", "message": 2**63},
    ],
    ids=["nul", "surrogate", "empty", "long", "user_past_bigint", "message_past_bigint"],
)
def test_a_signed_claim_with_values_no_link_of_ours_holds_is_malformed(claim):
    """Signed is not sane: a NUL in the category reached a query, and PostgreSQL refused it."""
    with pytest.raises(BadLink) as caught:
        read_unsubscribe_token(signing.dumps(claim, salt=UNSUBSCRIBE_SALT))
    assert caught.value.reason is BadLinkReason.MALFORMED


def test_tokens_expire_after_the_configured_days(settings):
    settings.NOTIFIER_LINK_MAX_AGE_DAYS = 30
    with time_machine.travel(T0, tick=False):
        unsubscribe = unsubscribe_token(user_id=1, category="marketing", channel="email")
        prefs = preferences_token(user_id=1)
    with time_machine.travel(T0 + dt.timedelta(days=29), tick=False):
        assert read_unsubscribe_token(unsubscribe).user_id == 1
        assert read_preferences_token(prefs) == 1
    with time_machine.travel(T0 + dt.timedelta(days=30, seconds=1), tick=False):
        for reader, token in (
            (read_unsubscribe_token, unsubscribe),
            (read_preferences_token, prefs),
        ):
            with pytest.raises(BadLink) as caught:
                reader(token)
            assert caught.value.reason is BadLinkReason.EXPIRED


def test_the_default_lifetime_is_a_year():
    with time_machine.travel(T0, tick=False):
        token = unsubscribe_token(user_id=1, category="marketing", channel="email")
    with time_machine.travel(T0 + dt.timedelta(days=364), tick=False):
        assert read_unsubscribe_token(token).user_id == 1
    with time_machine.travel(T0 + dt.timedelta(days=366), tick=False):
        with pytest.raises(BadLink) as caught:
            read_unsubscribe_token(token)
        assert caught.value.reason is BadLinkReason.EXPIRED


def test_links_signed_with_a_rotated_key_keep_working(settings):
    token = preferences_token(user_id=5)
    settings.SECRET_KEY_FALLBACKS = [settings.SECRET_KEY]
    settings.SECRET_KEY = "a-brand-new-secret-key-for-the-rotation-test-0123456789"
    assert read_preferences_token(token) == 5


# --- The message an unsubscribe link came in -------------------------------------------------


def test_an_unsubscribe_token_can_name_the_message_it_came_in(site):
    token = unsubscribe_token(user_id=42, category="marketing", channel="sms", message_id=901)
    assert read_unsubscribe_token(token) == UnsubscribeClaim(42, "marketing", "sms", 901)

    page = unsubscribe_url(user_id=42, category="marketing", channel="sms", message_id=901)
    one_click = one_click_unsubscribe_url(
        user_id=42, category="marketing", channel="sms", message_id=901
    )
    header = unsubscribe_headers(
        user_id=42, category="promo.flash_sale", channel="email", message_id=901
    )["List-Unsubscribe"][1:-1]
    for url in (page, one_click, header):
        claim = read_unsubscribe_token(resolve(url.removeprefix(site)).kwargs["token"])
        assert claim.message_id == 901


def test_a_token_without_a_message_reads_as_none_and_old_tokens_still_work():
    assert read_unsubscribe_token(
        unsubscribe_token(user_id=1, category="marketing", channel="email")
    ) == UnsubscribeClaim(1, "marketing", "email", None)
    # as every link sent before messages were named in them was signed
    old = signing.dumps(
        {"user": 1, "category": "marketing", "channel": "email"},
        salt=UNSUBSCRIBE_SALT,
        compress=True,
    )
    assert read_unsubscribe_token(old).message_id is None


def test_a_message_that_is_not_an_id_is_malformed():
    for message in ("7", 0, -3, True, 1.5, [7]):
        payload = {"user": 1, "category": "marketing", "channel": "email", "message": message}
        with pytest.raises(BadLink) as caught:
            read_unsubscribe_token(signing.dumps(payload, salt=UNSUBSCRIBE_SALT))
        assert caught.value.reason is BadLinkReason.MALFORMED


def test_the_message_cannot_be_swapped_without_the_key():
    token = unsubscribe_token(user_id=1, category="marketing", channel="email", message_id=5)
    _, timestamp, signature = token.split(":")
    forged = signing.b64_encode(
        b'{"user":1,"category":"marketing","channel":"email","message":6}'
    ).decode()
    with pytest.raises(BadLink) as caught:
        read_unsubscribe_token(f"{forged}:{timestamp}:{signature}")
    assert caught.value.reason is BadLinkReason.TAMPERED


@pytest.mark.parametrize(
    ("user_id", "category", "channel", "message_id"),
    [
        (42, "promo.flash_sale", "email", None),
        (42, "promo.flash_sale", "email", 2**62),
        (7, 'quote"and\\back slash', "sms", 1),
        (7, "促销", "push", 3),
        ("b9c6e1d0-5f2a-4d8e-9a1b-3c4d5e6f7a8b", "marketing", "email", 5),
        ("alice", "marketing", "email", None),
    ],
)
def test_tokens_are_byte_for_byte_djangos_signing_dumps(user_id, category, channel, message_id):
    """The fan-out writes the claim's JSON itself: the same token django.core.signing makes."""
    claim: dict[str, object] = {"user": user_id, "category": category, "channel": channel}
    if message_id is not None:
        claim["message"] = message_id
    with time_machine.travel(T0, tick=False):
        made = unsubscribe_token(
            user_id=user_id, category=category, channel=channel, message_id=message_id
        )
        assert made == signing.dumps(claim, salt=UNSUBSCRIBE_SALT)
        assert preferences_token(user_id=user_id) == signing.dumps(
            {"user": user_id}, salt=PREFERENCES_SALT
        )
        if isinstance(user_id, int):  # the site's user keys are integers
            assert read_unsubscribe_token(made) == UnsubscribeClaim(
                user_id=user_id, category=category, channel=channel, message_id=message_id
            )
