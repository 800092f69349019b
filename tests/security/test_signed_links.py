"""Signed links, proven across purposes: every link endpoint refuses a tampered token, an
expired one, and a token signed for any other purpose, with a 4xx page that says so, and
writes nothing. The click redirect goes only to a URL recorded for that very message."""

from __future__ import annotations

import datetime as dt

import pytest
import time_machine
from django.test import Client

from campaigns.tracking import click_token, message_token, open_token
from channels.base import Channel
from notifier import dispatch
from notifier.api import notify
from notifier.links import preferences_token, unsubscribe_token
from notifier.models import Delivery, InboxItem
from notifier.services.deliveries import deliveries_deliver
from notifier.services.pipeline import messages_prepare
from tests.factories import UserFactory
from tests.security.test_bad_input import snapshot

pytestmark = pytest.mark.django_db
T0 = dt.datetime(2026, 1, 5, 12, 0, tzinfo=dt.UTC)
SALE_URL = "https://shop.example.com/sale"

# name -> (method, path template, form data): the signed-link pages, each way they take a token.
LINK_ENDPOINTS = {
    "unsubscribe GET": ("GET", "/unsubscribe/{}/", None),
    "unsubscribe POST": ("POST", "/unsubscribe/{}/", {"scope": "all"}),
    "one-click GET": ("GET", "/unsubscribe/{}/one-click/", None),
    "one-click POST": ("POST", "/unsubscribe/{}/one-click/", {"List-Unsubscribe": "One-Click"}),
    "preferences GET": ("GET", "/preferences/{}/", None),
    "preferences POST": ("POST", "/preferences/{}/", {"marketing_frequency": "off"}),
}
PURPOSE = {  # which token each endpoint is for
    "unsubscribe": "unsubscribe",
    "one-click": "unsubscribe",
    "preferences": "preferences",
}


@pytest.fixture
def world(monkeypatch, settings):
    settings.NOTIFIER_RATE_LIMIT_PUBLIC = False
    settings.NOTIFIER_MARKETING_CAP_DAY = settings.NOTIFIER_MARKETING_CAP_WEEK = 100
    monkeypatch.setattr(dispatch, "publish_prepare", lambda *args, **kwargs: None)
    monkeypatch.setattr(dispatch, "publish_deliver", lambda *args, **kwargs: None)
    user = UserFactory()
    message = notify(
        user,
        "promo.flash_sale",
        {"sale_name": "D11", "starts_at": "now", "headline": "Off", "sale_url": SALE_URL},
        channels=["inapp"],
    )
    messages_prepare(message_ids=[message.pk])
    deliveries_deliver(delivery_ids=list(message.deliveries.values_list("pk", flat=True)))
    # What campaigns.tracking.track_content records for a tracked message: its links, in order.
    delivery = Delivery.objects.get(message=message, channel="inapp")
    delivery.content = {**delivery.content, "links": [SALE_URL]}
    delivery.save(update_fields=["content"])
    tokens = {
        "unsubscribe": unsubscribe_token(
            user_id=user.pk, category="promo.flash_sale", channel="email"
        ),
        "preferences": preferences_token(user_id=user.pk),
        # A message's links and pixel share one token; links sent before had one each.
        "message": message_token(message_id=message.pk, channel=Channel.INAPP),
        "click": click_token(message_id=message.pk, channel=Channel.INAPP, index=0),
        "open": open_token(message_id=message.pk, channel=Channel.INAPP),
    }
    return user, message, tokens


def send(name: str, token: str):
    method, path, data = LINK_ENDPOINTS[name]
    client = Client()
    return (
        client.post(path.format(token), data)
        if method == "POST"
        else client.get(path.format(token))
    )


def tampered(token: str) -> str:
    """The same token with one character of its signature changed."""
    last = token[-1]
    return token[:-1] + ("A" if last != "A" else "B")


@pytest.mark.parametrize("name", list(LINK_ENDPOINTS))
def test_tampered_and_foreign_tokens_are_400_and_change_nothing(world, name):
    _, _, tokens = world
    own = PURPOSE[name.split(" ")[0]]
    wrong = {f"token for {k}": t for k, t in tokens.items() if k != own}
    for label, token in {"tampered": tampered(tokens[own]), **wrong}.items():
        before = snapshot()
        response = send(name, token)
        assert response.status_code == 400, f"{name} with {label}: {response.status_code}"
        assert b"not valid" in response.content, f"{name} with {label}: says nothing"
        assert snapshot() == before, f"{name} with {label}: rows were written"


@pytest.mark.parametrize("name", list(LINK_ENDPOINTS))
def test_expired_tokens_are_410_and_change_nothing(world, settings, name):
    user, _, _ = world
    with time_machine.travel(T0, tick=False):
        token = {
            "unsubscribe": unsubscribe_token(
                user_id=user.pk, category="promo.flash_sale", channel="email"
            ),
            "preferences": preferences_token(user_id=user.pk),
        }[PURPOSE[name.split(" ")[0]]]
    later = T0 + dt.timedelta(days=settings.NOTIFIER_LINK_MAX_AGE_DAYS, seconds=1)
    with time_machine.travel(later, tick=False):
        before = snapshot()
        response = send(name, token)
        assert response.status_code == 410
        assert b"expired" in response.content
        assert snapshot() == before


@pytest.mark.parametrize("name", list(LINK_ENDPOINTS))
def test_the_right_token_works_on_each_endpoint(world, name):
    """The control: the refusals above are about the token, not the endpoint."""
    _, _, tokens = world
    response = send(name, tokens[PURPOSE[name.split(" ")[0]]])
    assert response.status_code in (200, 302), response.status_code


# --- The click redirect: no open redirect ------------------------------------------------------


@pytest.mark.parametrize("form", ["/t/c/{message}/0/", "/t/c/{click}/"])
def test_a_click_goes_to_the_recorded_url_whatever_the_query_says(world, form):
    _, _, tokens = world
    response = Client().get(
        form.format(**tokens),
        {"url": "https://evil.example", "next": "https://evil.example", "to": "//evil.example"},
    )
    assert response.status_code == 302
    assert response["Location"] == SALE_URL


@pytest.mark.parametrize(
    ("which", "form"),
    [
        ("tampered", "/t/c/{}/0/"),
        ("open", "/t/c/{}/0/"),
        ("click", "/t/c/{}/0/"),
        ("unsubscribe", "/t/c/{}/0/"),
        ("preferences", "/t/c/{}/0/"),
        ("tampered", "/t/c/{}/"),
        ("open", "/t/c/{}/"),
        ("message", "/t/c/{}/"),
        ("unsubscribe", "/t/c/{}/"),
        ("preferences", "/t/c/{}/"),
    ],
)
def test_a_click_with_a_token_not_signed_for_clicks_is_404_and_records_nothing(world, which, form):
    _, _, tokens = world
    if which == "tampered":
        token = tampered(tokens["message" if form.endswith("/0/") else "click"])
    else:
        token = tokens[which]
    before = snapshot()
    response = Client().get(form.format(token))
    assert response.status_code == 404
    assert "Location" not in response
    assert b"This link is not valid" in response.content
    assert snapshot() == before


def test_a_valid_token_for_a_link_that_was_never_recorded_is_404(world):
    _, message, _ = world
    for index, channel in ((7, Channel.INAPP), (0, Channel.SMS)):
        token = click_token(message_id=message.pk, channel=channel, index=index)
        assert Client().get(f"/t/c/{token}/").status_code == 404
        token = message_token(message_id=message.pk, channel=channel)
        assert Client().get(f"/t/c/{token}/{index}/").status_code == 404


def test_a_recorded_url_that_is_not_http_is_never_redirected_to(world):
    """Defence in depth: even a javascript: URL that got stored is not followed."""
    _, message, tokens = world
    delivery = Delivery.objects.get(message=message, channel="inapp")
    delivery.content = {**delivery.content, "links": ["javascript:alert(document.cookie)"]}
    delivery.save(update_fields=["content"])
    assert Client().get(f"/t/c/{tokens['click']}/").status_code == 404
    assert Client().get(f"/t/c/{tokens['message']}/0/").status_code == 404


def test_the_open_pixel_with_a_bad_token_is_a_gif_that_records_nothing(world):
    _, message, tokens = world
    before = snapshot()
    for token in (
        tampered(tokens["open"]),
        tampered(tokens["message"]),
        tokens["click"],
        tokens["unsubscribe"],
    ):
        response = Client().get(f"/t/o/{token}.gif")
        assert response.status_code == 200
        assert response["Content-Type"] == "image/gif"
    assert snapshot() == before
    assert InboxItem.objects.get(message=message).read_at is None
