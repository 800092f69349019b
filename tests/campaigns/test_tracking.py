"""Click and open tracking: rewriting a message's links, the redirect, and the open pixel."""

from __future__ import annotations

import re
from collections.abc import Sequence
from urllib.parse import urlsplit

import pytest
from django.core import signing
from django.test import Client
from django.urls import reverse

from campaigns.models import Campaign, CampaignStatus, CampaignStep
from campaigns.services.tracking import record_click, record_open
from campaigns.tracking import (
    CLICK_SALT,
    MESSAGE_SALT,
    OPEN_SALT,
    BadToken,
    ClickClaim,
    OpenClaim,
    click_token,
    click_url,
    message_token,
    open_token,
    read_click,
    read_click_token,
    read_message_token,
    read_open_token,
    track_content,
)
from channels.base import Channel, Content
from notifier import dispatch
from notifier.api import notify
from notifier.links import preferences_url, unsubscribe_url
from notifier.models import Consent, Delivery, DeliveryEvent, EventKind, InboxItem, Message
from notifier.services.deliveries import deliveries_deliver
from notifier.services.pipeline import messages_prepare
from notifier.status import DeliveryStatus
from tests.factories import DeviceFactory, UserFactory

S = DeliveryStatus
SITE = "https://notify.example.com"
SALE_URL = "https://shop.example.com/sale?from=mail&utm=1"
SALE = {
    "sale_name": "Double 11",
    "starts_at": "tonight",
    "headline": "Up to 50% off",
    "sale_url": SALE_URL,
}
CLICK_PATH = re.compile(r"^/t/c/(?P<token>[^/]+)/(?P<index>[0-9]+)/$")
CLICK_URL = r"https://\S+?/t/c/[^/]+/[0-9]+/"


@pytest.fixture(autouse=True)
def site(settings):
    settings.NOTIFIER_SITE_URL = f"{SITE}/"
    return SITE


@pytest.fixture
def in_process(monkeypatch, settings):
    """The pipeline runs in the test: nothing is published, caps do not get in the way."""
    monkeypatch.setattr(dispatch, "publish_prepare", lambda *args, **kwargs: None)
    monkeypatch.setattr(dispatch, "publish_deliver", lambda *args, **kwargs: None)
    settings.NOTIFIER_MARKETING_CAP_DAY = settings.NOTIFIER_MARKETING_CAP_WEEK = 100


def a_campaign(**fields: object) -> Campaign:
    campaign = Campaign.objects.create(
        name=fields.pop("name", "Double 11"), status=CampaignStatus.RUNNING, **fields
    )
    CampaignStep.objects.create(campaign=campaign, name="last call", offset_minutes=-60)
    return campaign


def campaign_message(
    user, campaign: Campaign, channels: Sequence[str] = ("email",), **context: str
) -> dict[str, Delivery]:
    """A campaign message routed, tracked and sent in-process; its deliveries by channel."""
    Consent.objects.get_or_create(
        user=user,
        channel="all",
        defaults={"granted": True, "at": user.date_joined, "source": "test", "wording": "Offers"},
    )
    message = notify(user, "promo.flash_sale", {**SALE, **context}, channels=list(channels))
    Message.objects.filter(pk=message.pk).update(campaign=campaign, step=campaign.steps.first())
    messages_prepare(message_ids=[message.pk])
    deliveries = list(Delivery.objects.filter(message=message))
    for delivery in deliveries:  # tracking twice is harmless, whether the pipeline did or not
        tracked = track_content(
            Content.from_dict(delivery.content), message_id=message.pk, channel=delivery.channel
        )
        Delivery.objects.filter(pk=delivery.pk).update(content=tracked.as_dict())
    deliveries_deliver(delivery_ids=[d.pk for d in deliveries])
    return {d.channel: d for d in Delivery.objects.filter(message=message)}


def token_of(url: str) -> str:
    parts = urlsplit(url)
    assert f"{parts.scheme}://{parts.netloc}" == SITE
    match = CLICK_PATH.match(parts.path)
    assert match, url
    return match["token"]


def claim_of(url: str) -> ClickClaim:
    """What a tracked link claims: its message token's, at the index in its path."""
    match = CLICK_PATH.match(urlsplit(url).path)
    assert match, url
    return read_click(match["token"], int(match["index"]))


def path_of(url: str) -> str:
    return url.removeprefix(SITE)


def first_click_path(delivery: Delivery) -> str:
    """The path of the first tracked link in the delivery's plain-text body."""
    urls = re.findall(CLICK_URL, delivery.content["body"])
    assert urls, delivery.content["body"]
    return path_of(urls[0])


def fresh(delivery: Delivery) -> Delivery:
    return Delivery.objects.get(pk=delivery.pk)


def engagement_events(delivery: Delivery) -> list[str]:
    return list(
        DeliveryEvent.objects.filter(delivery=delivery, kind=EventKind.ENGAGEMENT).values_list(
            "status", flat=True
        )
    )


def _forged(token: str, payload: object) -> str:
    """The token's signature over another payload: what someone without the key could try."""
    _, signature = token.split(":")
    body = signing.b64_encode(signing.JSONSerializer().dumps(payload)).decode()
    return f"{body}:{signature}"


# --- Rewriting ------------------------------------------------------------------------------


def test_html_hrefs_go_through_the_redirect_and_the_originals_are_recorded_in_order():
    html = (
        '<html><body><p><a href="https://shop.example.com/sale?a=1&amp;b=2">Sale</a> '
        "<a class='x' href='https://shop.example.com/shoes'>Shoes</a> "
        '<a href="https://shop.example.com/sale?a=1&amp;b=2">Sale again</a> '
        '<a href="mailto:help@example.com">Mail us</a> <a href="#top">Top</a> '
        '<a href="/relative">Relative</a></p></body></html>'
    )
    tracked = track_content(Content(html=html), message_id=7, channel=Channel.EMAIL)

    assert tracked.links == (
        "https://shop.example.com/sale?a=1&b=2",
        "https://shop.example.com/shoes",
    )
    hrefs = re.findall(r'href="([^"]*)"', tracked.html)
    claims = [claim_of(href) for href in [*hrefs[:3], hrefs[2]]]
    assert [c.index for c in claims] == [0, 1, 0, 0]  # one index per distinct URL
    assert len({token_of(href) for href in hrefs[:3]}) == 1  # one token for the message
    assert {(c.message_id, c.channel) for c in claims} == {(7, Channel.EMAIL)}
    assert hrefs[3:] == ["mailto:help@example.com", "#top", "/relative"]
    assert "shop.example.com" not in tracked.html


def test_the_same_link_tags_in_many_messages_each_get_that_messages_own_token_and_order():
    # The tags' cuts are kept per process: what one message's copy put in must never show in
    # another's, and each message numbers its own links in its own order.
    shoes = "<a class='x' href='https://shop.example.com/shoes'>Shoes</a>"
    sale = '<a style="color:red" href="https://shop.example.com/sale?a=1&amp;b=2">Sale</a>'
    untracked = '<a href="mailto:help@example.com">Mail us</a>'
    first = track_content(
        Content(html=f"<p>{sale} {shoes} {untracked}</p>"), message_id=11, channel=Channel.EMAIL
    )
    second = track_content(
        Content(html=f"<p>{shoes} {sale} {untracked}</p>"), message_id=12, channel=Channel.EMAIL
    )
    long_tag = f'<a title="{"x" * 3000}" href="https://shop.example.com/shoes">Shoes</a>'
    third = track_content(Content(html=long_tag), message_id=13, channel=Channel.EMAIL)

    sale_url, shoes_url = "https://shop.example.com/sale?a=1&b=2", "https://shop.example.com/shoes"
    assert (first.links, second.links, third.links) == (
        (sale_url, shoes_url),
        (shoes_url, sale_url),
        (shoes_url,),
    )
    for tracked, message_id in ((first, 11), (second, 12), (third, 13)):
        hrefs = re.findall(r'href="([^"]*)"', tracked.html)
        claims = [claim_of(href) for href in hrefs if "/t/c/" in href]
        assert [(c.message_id, c.index) for c in claims] == [
            (message_id, i) for i in range(len(tracked.links))
        ]
    assert ' href="mailto:help@example.com"' in second.html  # left as it was
    assert first.html.startswith('<p><a style="color:red" href="') and "class='x'" in first.html
    assert third.html.startswith(f'<a title="{"x" * 3000}" href="')


def test_urls_in_plain_text_are_rewritten_on_email_and_sms_without_their_punctuation():
    body = (
        "Sale: https://shop.example.com/sale. Shoes (https://shop.example.com/shoes)\n"
        "详情见https://shop.example.com/cn。回复TD退订"
    )
    for channel in (Channel.EMAIL, Channel.SMS):
        tracked = track_content(Content(body=body), message_id=3, channel=channel)
        assert tracked.links == (
            "https://shop.example.com/sale",
            "https://shop.example.com/shoes",
            "https://shop.example.com/cn",
        )
        urls = re.findall(CLICK_URL, tracked.body)
        assert [claim_of(u).index for u in urls] == [0, 1, 2]
        assert re.fullmatch(r"Sale: \S+/\. Shoes \(\S+/\)\n详情见\S+/。回复TD退订", tracked.body), (
            tracked.body
        )


def test_the_link_field_of_inapp_and_push_goes_through_the_redirect():
    for channel in (Channel.INAPP, Channel.PUSH):
        content = Content(title="Sale", body="Up to 50% off https://x.example.com", link=SALE_URL)
        tracked = track_content(content, message_id=5, channel=channel)
        assert tracked.links == (SALE_URL,)
        assert claim_of(tracked.link) == ClickClaim(5, channel, 0)
        assert tracked.body == content.body  # shown as text in the app, not a link


def test_email_html_gets_one_open_pixel_before_the_end_of_its_body():
    tracked = track_content(
        Content(html="<html><body><p>Hi</p></body></html>"), message_id=9, channel=Channel.EMAIL
    )
    pixel = re.search(
        r'<img src="([^"]+)" width="1" height="1" alt=""[^>]*/></body></html>$', tracked.html
    )
    assert pixel, tracked.html
    token = urlsplit(pixel[1]).path.removeprefix("/t/o/").removesuffix(".gif")
    assert read_open_token(token) == OpenClaim(9, Channel.EMAIL)
    assert token == message_token(message_id=9, channel=Channel.EMAIL)

    bare = track_content(Content(html="<p>Hi</p>"), message_id=9, channel=Channel.EMAIL)
    assert bare.html.startswith("<p>Hi</p><img src=") and bare.html.endswith("/>")
    assert bare.links == ()
    for channel in (Channel.INAPP, Channel.PUSH, Channel.SMS):
        assert (
            "<img"
            not in track_content(Content(html="<p>x</p>"), message_id=9, channel=channel).html
        )


def test_tracking_twice_changes_nothing():
    content = Content(body=f"Go: {SALE_URL}", html=f'<a href="{SALE_URL}">Go</a>')
    once = track_content(content, message_id=1, channel=Channel.EMAIL)
    assert track_content(once, message_id=1, channel=Channel.EMAIL) == once
    no_links = track_content(Content(html="<p>Hi</p>"), message_id=1, channel=Channel.EMAIL)
    assert track_content(no_links, message_id=1, channel=Channel.EMAIL) == no_links


def test_unsubscribe_and_preference_links_are_left_untracked():
    unsubscribe = unsubscribe_url(user_id=1, category="promo.flash_sale", channel="email")
    preferences = preferences_url(user_id=1)
    content = Content(
        body=f"Sale: {SALE_URL}\nUnsubscribe: {unsubscribe}\nChoose: {preferences}",
        html=(
            f'<a href="{SALE_URL}">Sale</a> <a href="{unsubscribe}">Unsubscribe</a> '
            f'<a href="{preferences}">Choose</a>'
        ),
        headers={"List-Unsubscribe": f"<{unsubscribe}>"},
    )
    tracked = track_content(content, message_id=1, channel=Channel.EMAIL)

    assert tracked.links == (SALE_URL,)
    assert f"Unsubscribe: {unsubscribe}\nChoose: {preferences}" in tracked.body
    assert f'<a href="{unsubscribe}">Unsubscribe</a>' in tracked.html
    assert f'<a href="{preferences}">Choose</a>' in tracked.html
    assert tracked.headers == content.headers


def test_links_survive_the_round_trip_through_the_delivery_row():
    tracked = track_content(Content(body=SALE_URL), message_id=1, channel=Channel.SMS)
    assert tracked.as_dict()["links"] == [SALE_URL]
    assert Content.from_dict(tracked.as_dict()) == tracked
    assert "links" not in Content(body="x").as_dict()


# --- Tokens ---------------------------------------------------------------------------------


def test_a_message_signs_one_token_for_all_its_links_and_its_pixel():
    content = Content(
        body="Sale https://shop.example.com/sale, shoes https://shop.example.com/shoes",
        html='<html><body><a href="https://shop.example.com/hats">Hats</a></body></html>',
    )
    tracked = track_content(content, message_id=21, channel=Channel.EMAIL)
    token = message_token(message_id=21, channel=Channel.EMAIL)
    assert tracked.body == (f"Sale {SITE}/t/c/{token}/0/, shoes {SITE}/t/c/{token}/1/")
    assert f'<a href="{SITE}/t/c/{token}/2/">Hats</a>' in tracked.html
    assert f'<img src="{SITE}/t/o/{token}.gif"' in tracked.html
    # The route reversed with its index is the one the rewriter writes.
    path = reverse("notifier:track-click", kwargs={"token": token, "index": 2})
    assert f"{SITE}{path}" == click_url(token=token, index=2)


def test_a_message_token_is_djangos_signed_object_and_reads_back():
    for message_id, channel in ((1, Channel.EMAIL), (2**62, Channel.INAPP), (7, Channel.SMS)):
        token = message_token(message_id=message_id, channel=channel)
        assert token == signing.Signer(salt=MESSAGE_SALT).sign_object([message_id, channel.value])
        assert read_message_token(token) == OpenClaim(message_id, channel)
        assert read_open_token(token) == OpenClaim(message_id, channel)
        assert read_click(token, 4) == ClickClaim(message_id, channel, 4)

    token = message_token(message_id=12, channel=Channel.PUSH)
    bad = [
        token[:-1] + ("A" if token[-1] != "A" else "B"),
        _forged(token, [13, "push"]),
        click_token(message_id=12, channel=Channel.PUSH, index=0),  # the old kind
        open_token(message_id=12, channel=Channel.PUSH),  # opens, never clicks
        "",
        "a" * 400,
        signing.Signer(salt=MESSAGE_SALT).sign_object([12, "fax"]),
        signing.Signer(salt=MESSAGE_SALT).sign_object([0, "push"]),
        signing.Signer(salt=MESSAGE_SALT).sign_object([12, "push", 0]),
        signing.Signer(salt=OPEN_SALT).sign_object([12, "push", 0]),
    ]
    for candidate in bad:
        with pytest.raises(BadToken):
            read_click(candidate, 0)
    with pytest.raises(BadToken):
        read_click(token, -1)
    with pytest.raises(BadToken):
        read_message_token(token.replace(":", ".", 1))


def test_tokens_read_back_and_refuse_tampering_and_the_wrong_purpose():
    click = click_token(message_id=12, channel=Channel.PUSH, index=3)
    opened = open_token(message_id=12, channel=Channel.EMAIL)
    assert read_click_token(click) == ClickClaim(12, Channel.PUSH, 3)
    assert read_open_token(opened) == OpenClaim(12, Channel.EMAIL)

    bad = [
        click[:-1] + ("A" if click[-1] != "A" else "B"),
        _forged(click, [13, "push", 3]),
        opened,  # an open token is not a click token
        "not-a-token",
        "",
        "a" * 400,
        signing.Signer(salt=CLICK_SALT).sign_object([12, "fax", 0]),
        signing.Signer(salt=CLICK_SALT).sign_object([12, "push", -1]),
        signing.Signer(salt=CLICK_SALT).sign_object({"m": 12}),
    ]
    for token in bad:
        with pytest.raises(BadToken):
            read_click_token(token)
    with pytest.raises(BadToken):
        read_open_token(click)


# --- Clicks ---------------------------------------------------------------------------------


@pytest.mark.django_db
def test_a_click_redirects_to_the_recorded_url_and_moves_the_delivery_to_clicked_once(in_process):
    user = UserFactory()
    email = campaign_message(user, a_campaign())["email"]
    assert email.status == S.SENT
    assert email.content["links"] == [SALE_URL]

    client = Client()
    first = client.get(first_click_path(email))
    assert first.status_code == 302
    assert first["Location"] == SALE_URL
    assert "no-cache" in first["Cache-Control"]
    clicked_at = fresh(email).clicked_at
    second = client.get(first_click_path(email))
    assert second.status_code == 302 and second["Location"] == SALE_URL

    after = fresh(email)
    assert after.status == S.CLICKED
    assert after.clicked_at == clicked_at is not None
    assert engagement_events(email) == [S.CLICKED]


@pytest.mark.django_db
def test_the_html_link_and_the_text_link_lead_to_the_same_place(in_process):
    email = campaign_message(UserFactory(), a_campaign())["email"]
    hrefs = re.findall(r'href="(https://notify\.example\.com/t/c/[^"]+)"', email.content["html"])
    assert len(hrefs) == 1
    response = Client().get(path_of(hrefs[0]))
    assert (response.status_code, response["Location"]) == (302, SALE_URL)


@pytest.mark.django_db
def test_an_inapp_click_goes_through_the_link_field(in_process):
    user = UserFactory()
    inapp = campaign_message(user, a_campaign(), channels=["inapp"])["inapp"]
    item = InboxItem.objects.get(user=user)
    assert item.link == inapp.content["link"]  # the inbox shows the tracked link
    response = Client().get(path_of(item.link))
    assert (response.status_code, response["Location"]) == (302, SALE_URL)
    assert fresh(inapp).status == S.CLICKED


@pytest.mark.django_db
def test_head_answers_the_redirect_without_counting_a_click(in_process):
    email = campaign_message(UserFactory(), a_campaign())["email"]
    url = path_of(
        reverse(
            "notifier:track-click",
            kwargs={
                "token": click_token(message_id=email.message_id, channel=Channel.EMAIL, index=0)
            },
        )
    )
    response = Client().head(url)
    assert (response.status_code, response["Location"]) == (302, SALE_URL)
    assert fresh(email).status == S.SENT


@pytest.mark.django_db
def test_a_click_service_call_for_nothing_recorded_returns_none(in_process):
    email = campaign_message(UserFactory(), a_campaign())["email"]
    assert record_click(message_id=email.message_id, channel="email", index=1) is None
    assert record_click(message_id=email.message_id, channel="push", index=0) is None
    assert record_click(message_id=email.message_id + 1000, channel="email", index=0) is None
    assert fresh(email).status == S.SENT
    assert record_click(message_id=email.message_id, channel="email", index=0) == SALE_URL


# --- Opens ----------------------------------------------------------------------------------


def pixel_path(html: str) -> str:
    match = re.search(r'<img src="https://notify\.example\.com(/t/o/[^"]+\.gif)"', html)
    assert match, html
    return match[1]


def assert_is_the_pixel(response) -> None:
    assert response.status_code == 200
    assert response["Content-Type"] == "image/gif"
    assert response.content.startswith(b"GIF89a") and len(response.content) == 42
    assert "no-cache" in response["Cache-Control"] and "no-store" in response["Cache-Control"]


@pytest.mark.django_db
def test_the_open_pixel_moves_the_email_to_opened(in_process):
    email = campaign_message(UserFactory(), a_campaign())["email"]
    client = Client()
    assert_is_the_pixel(client.get(pixel_path(email.content["html"])))
    assert_is_the_pixel(client.get(pixel_path(email.content["html"])))

    after = fresh(email)
    assert after.status == S.OPENED and after.opened_at is not None
    assert engagement_events(email) == [S.OPENED]


@pytest.mark.django_db
def test_a_late_open_after_a_click_changes_nothing(in_process):
    email = campaign_message(UserFactory(), a_campaign())["email"]
    client = Client()
    assert client.get(first_click_path(email)).status_code == 302
    clicked = fresh(email)

    assert_is_the_pixel(client.get(pixel_path(email.content["html"])))
    assert record_open(message_id=email.message_id, channel="email") is False

    after = fresh(email)
    assert (after.status, after.clicked_at) == (S.CLICKED, clicked.clicked_at)
    assert engagement_events(email) == [S.CLICKED]
    # Only the missing time is noted, as for a late provider callback.
    assert after.opened_at is not None


@pytest.mark.django_db
def test_a_bad_pixel_token_still_gets_the_gif_and_records_nothing(in_process):
    email = campaign_message(UserFactory(), a_campaign())["email"]
    good = open_token(message_id=email.message_id, channel=Channel.EMAIL)
    client = Client()
    for token in (good[:-1] + ("A" if good[-1] != "A" else "B"), "nonsense", "a:b"):
        assert_is_the_pixel(client.get(f"/t/o/{token}.gif"))
    click = click_token(message_id=email.message_id, channel=Channel.EMAIL, index=0)
    assert_is_the_pixel(client.get(f"/t/o/{click}.gif"))  # a click token opens nothing
    assert (fresh(email).status, fresh(email).opened_at) == (S.SENT, None)


@pytest.mark.django_db
def test_links_sent_with_a_token_each_still_lead_where_they_did(in_process):
    """Messages sent before one token per message carry a token per link, and their own open
    token: both keep working."""
    email = campaign_message(UserFactory(), a_campaign())["email"]
    client = Client()
    old_click = click_token(message_id=email.message_id, channel=Channel.EMAIL, index=0)
    response = client.get(f"/t/c/{old_click}/")
    assert (response.status_code, response["Location"]) == (302, SALE_URL)
    old_open = open_token(message_id=email.message_id, channel=Channel.EMAIL)
    assert_is_the_pixel(client.get(f"/t/o/{old_open}.gif"))
    after = fresh(email)
    assert after.status == S.CLICKED and after.opened_at is not None


# --- No open redirect -----------------------------------------------------------------------


def assert_not_found(response) -> None:
    assert response.status_code == 404
    assert "Location" not in response


@pytest.mark.django_db
def test_a_tampered_or_forged_click_token_is_404_and_records_nothing(in_process):
    email = campaign_message(UserFactory(), a_campaign())["email"]
    token = click_token(message_id=email.message_id, channel=Channel.EMAIL, index=0)
    client = Client()
    for bad in (
        token[:-1] + ("A" if token[-1] != "A" else "B"),
        _forged(token, [email.message_id, "email", 1]),
        _forged(token, [email.message_id + 1, "email", 0]),
        open_token(message_id=email.message_id, channel=Channel.EMAIL),
        "evil.com",
        "http:evil.com",
    ):
        assert_not_found(client.get(f"/t/c/{bad}/"))
    assert fresh(email).status == S.SENT
    assert engagement_events(email) == []


@pytest.mark.django_db
def test_a_valid_token_with_an_index_that_was_not_recorded_is_404(in_process):
    email = campaign_message(UserFactory(), a_campaign())["email"]
    client = Client()
    for index in (1, 99):
        token = click_token(message_id=email.message_id, channel=Channel.EMAIL, index=index)
        assert_not_found(client.get(f"/t/c/{token}/"))
    for channel in (Channel.PUSH, Channel.SMS):  # no delivery on that channel
        token = click_token(message_id=email.message_id, channel=channel, index=0)
        assert_not_found(client.get(f"/t/c/{token}/"))
    token = click_token(message_id=email.message_id + 10_000, channel=Channel.EMAIL, index=0)
    assert_not_found(client.get(f"/t/c/{token}/"))
    assert fresh(email).status == S.SENT


@pytest.mark.django_db
def test_a_token_leads_only_to_its_own_messages_urls(in_process):
    user, campaign = UserFactory(), a_campaign()
    shoes = campaign_message(user, campaign, sale_url="https://shop.example.com/shoes")["email"]
    hats = campaign_message(user, campaign, sale_url="https://shop.example.com/hats")["email"]
    client = Client()
    for delivery, url in (
        (shoes, "https://shop.example.com/shoes"),
        (hats, "https://shop.example.com/hats"),
    ):
        token = click_token(message_id=delivery.message_id, channel=Channel.EMAIL, index=0)
        response = client.get(f"/t/c/{token}/")
        assert (response.status_code, response["Location"]) == (302, url)
    assert fresh(shoes).status == fresh(hats).status == S.CLICKED


@pytest.mark.django_db
def test_nothing_in_the_request_but_the_token_can_choose_where_it_goes(in_process):
    email = campaign_message(UserFactory(), a_campaign())["email"]
    token = click_token(message_id=email.message_id, channel=Channel.EMAIL, index=0)
    client = Client()
    for query in ("?next=https://evil.com", "?url=//evil.com", "?redirect=http://evil.com"):
        response = client.get(f"/t/c/{token}/{query}")
        assert (response.status_code, response["Location"]) == (302, SALE_URL)
    for path in (
        "/t/c///evil.com/",
        "/t/c/%2F%2Fevil.com/",
        "/t/c/http://evil.com/",
        "/t/c/https%3A%2F%2Fevil.com/",
        f"/t/c/{token}//evil.com",
        "/t/c/?next=http://evil.com",
    ):
        assert_not_found(client.get(path))


@pytest.mark.django_db
def test_an_edited_index_or_token_leads_only_to_the_messages_own_urls_or_404(in_process):
    user, campaign = UserFactory(), a_campaign()
    email = campaign_message(user, campaign)["email"]
    other = campaign_message(user, campaign, sale_url="https://shop.example.com/hats")["email"]
    token = token_of(re.findall(CLICK_URL, email.content["body"])[0])
    assert token == message_token(message_id=email.message_id, channel=Channel.EMAIL)
    client = Client()
    for path in (
        f"/t/c/{token}/1/",  # an index the message does not have
        f"/t/c/{token}/99/",
        f"/t/c/{token}/{'9' * 5000}/",
        f"/t/c/{token}/-1/",
        f"/t/c/{token}/0x0/",
        f"/t/c/{token}/0/evil.com/",
        f"/t/c/{token}/0//evil.com",
        f"/t/c/{token}/https://evil.com/",
        f"/t/c/{token}/https%3A%2F%2Fevil.com/",
        f"/t/c/{token[:-1] + ('A' if token[-1] != 'A' else 'B')}/0/",
        f"/t/c/{_forged(token, [other.message_id, 'email'])}/0/",
        f"/t/c/{_forged(token, [email.message_id, 'push'])}/0/",
        f"/t/c/{message_token(message_id=email.message_id, channel=Channel.PUSH)}/0/",
        f"/t/c/{message_token(message_id=email.message_id + 10_000, channel=Channel.EMAIL)}/0/",
        f"/t/c/{click_token(message_id=email.message_id, channel=Channel.EMAIL, index=0)}/0/",
        f"/t/c/{open_token(message_id=email.message_id, channel=Channel.EMAIL)}/0/",
        f"/t/c/{message_token(message_id=email.message_id, channel=Channel.EMAIL)}/",
    ):
        assert_not_found(client.get(path))
    assert fresh(email).status == S.SENT and engagement_events(email) == []
    for query in ("?next=https://evil.com", "?url=//evil.com", "?index=1"):
        response = client.get(f"/t/c/{token}/0/{query}")
        assert (response.status_code, response["Location"]) == (302, SALE_URL)
    other_token = message_token(message_id=other.message_id, channel=Channel.EMAIL)
    response = client.get(f"/t/c/{other_token}/0/")
    assert (response.status_code, response["Location"]) == (302, "https://shop.example.com/hats")


@pytest.mark.django_db
def test_a_stored_url_that_is_not_http_is_never_redirected_to(in_process):
    email = campaign_message(UserFactory(), a_campaign())["email"]
    content = {**email.content, "links": ["javascript:alert(1)", "//evil.com", "http://"]}
    Delivery.objects.filter(pk=email.pk).update(content=content)
    client = Client()
    for index in range(3):
        token = click_token(message_id=email.message_id, channel=Channel.EMAIL, index=index)
        assert_not_found(client.get(f"/t/c/{token}/"))
        token = message_token(message_id=email.message_id, channel=Channel.EMAIL)
        assert_not_found(client.get(f"/t/c/{token}/{index}/"))
    assert fresh(email).status == S.SENT


@pytest.mark.django_db
def test_a_push_click_moves_only_the_push_delivery(in_process):
    user = UserFactory()
    DeviceFactory(user=user)
    rows = campaign_message(user, a_campaign(), channels=["push", "email"])
    assert rows["push"].status == S.SENT, rows["push"].last_error
    response = Client().get(path_of(rows["push"].content["link"]))
    assert (response.status_code, response["Location"]) == (302, SALE_URL)
    assert (fresh(rows["push"]).status, fresh(rows["email"]).status) == (S.CLICKED, S.SENT)
