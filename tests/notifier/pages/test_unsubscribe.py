"""Pages behind signed links: unsubscribe (with RFC 8058 one-click) and the preference page."""

from __future__ import annotations

import datetime as dt
from html.parser import HTMLParser

import pytest
import time_machine
from django.core import signing
from django.test import Client
from django.urls import reverse

from notifier.api import notify
from notifier.links import (
    preferences_token,
    unsubscribe_headers,
    unsubscribe_token,
)
from notifier.models import Consent, Message, Preference, Unsubscribe, User
from notifier.services.preferences import (
    PreferenceError,
    consent_give,
    preference_set,
    unsubscribe,
)
from tests.factories import UserFactory

pytestmark = pytest.mark.django_db

T0 = dt.datetime(2025, 3, 1, 12, 0, tzinfo=dt.UTC)
TRANSACTIONAL_TYPES = {"order.shipped", "payment.succeeded", "account.password_changed"}


class FormInputs(HTMLParser):
    """The inputs of the first form on a page, as a browser would submit them."""

    def __init__(self) -> None:
        super().__init__()
        self.fields: list[tuple[str, str]] = []
        self.checkboxes: dict[str, bool] = {}
        self.disabled: int = 0
        self.radios: list[str] = []
        self.selects: dict[str, str] = {}
        self._select: str | None = None

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        a = dict(attrs)
        if tag == "select":
            self._select = a["name"]
        elif tag == "option" and self._select and "selected" in a:
            self.selects[self._select] = a["value"] or ""
        elif tag == "input":
            kind, name = a.get("type"), a.get("name")
            if "disabled" in a:
                self.disabled += 1
            elif kind == "checkbox" and name:
                self.checkboxes[name] = "checked" in a
            elif kind == "radio" and name:
                self.radios.append(a["value"] or "")
            elif kind == "hidden" and name:
                self.fields.append((name, a.get("value") or ""))

    def handle_endtag(self, tag: str) -> None:
        if tag == "select":
            self._select = None

    def submission(self, **changes: bool | str) -> dict[str, list[str]]:
        """The form as submitted after ticking/unticking boxes (True/False) or picking values."""
        data: dict[str, list[str]] = {}
        for name, value in self.fields:
            data.setdefault(name, []).append(value)
        ticks = {k: v for k, v in changes.items() if isinstance(v, bool)}
        picks = {k: v for k, v in changes.items() if isinstance(v, str)}
        for name, checked in {**self.checkboxes, **ticks}.items():
            if checked:
                data[name] = ["on"]
        for name, picked in {**self.selects, **picks}.items():
            data[name] = [picked]
        return data


def form_of(response) -> FormInputs:
    parser = FormInputs()
    parser.feed(response.content.decode())
    return parser


def state(user) -> tuple:
    user.refresh_from_db()
    return (
        set(Preference.objects.filter(user=user).values_list("category", "channel", "enabled")),
        user.notifier_recipient.marketing_frequency,
        list(Consent.objects.filter(user=user).order_by("id").values_list("channel", "granted")),
    )


@pytest.fixture
def user():
    user = UserFactory()
    consent_give(user_id=user.pk, channel="email", source="signup_form", wording="Email offers")
    return user


@pytest.fixture
def browser() -> Client:
    """No login, and CSRF enforced as for a real browser."""
    return Client(enforce_csrf_checks=True)


def page_url(user, category="promo.flash_sale", channel="email", message_id=None) -> str:
    token = unsubscribe_token(
        user_id=user.pk, category=category, channel=channel, message_id=message_id
    )
    return reverse("notifier:unsubscribe", kwargs={"token": token})


def one_click_path(user, category="promo.flash_sale", channel="email", message_id=None) -> str:
    token = unsubscribe_token(
        user_id=user.pk, category=category, channel=channel, message_id=message_id
    )
    return reverse("notifier:unsubscribe-one-click", kwargs={"token": token})


def prefs_url(user) -> str:
    return reverse(
        "notifier:preferences-page", kwargs={"token": preferences_token(user_id=user.pk)}
    )


ONE_CLICK_BODY = {"List-Unsubscribe": "One-Click"}
UNCHANGED: tuple[set[tuple[str, str, bool]], str, list[tuple[str, bool]]] = (
    set(),
    "as_sent",
    [("email", True)],
)


# --- The unsubscribe page -------------------------------------------------------------------


def test_the_unsubscribe_page_says_what_the_link_is_for_and_offers_three_choices(user, browser):
    response = browser.get(page_url(user))
    html = response.content.decode()

    assert response.status_code == 200
    assert '<meta name="viewport"' in html
    assert "Flash sale" in html and "email" in html
    form = form_of(response)
    assert form.radios == ["this", "channel", "all"]
    assert "csrfmiddlewaretoken" in dict(form.fields)
    assert "no-cache" in response["Cache-Control"]
    assert state(user) == UNCHANGED


def test_the_page_for_a_locked_category_does_not_offer_this(user, browser):
    response = browser.get(page_url(user, category="order.shipped"))
    assert form_of(response).radios == ["channel", "all"]


@pytest.mark.parametrize(
    ("scope", "expected"),
    [
        ("this", ({("promo.flash_sale", "email", False)}, "as_sent", [("email", True)])),
        (
            "channel",
            ({("marketing", "email", False)}, "as_sent", [("email", True), ("email", False)]),
        ),
        ("all", (set(), "off", [("email", True), ("all", False)])),
    ],
)
def test_posting_a_choice_applies_that_scope_and_confirms_with_an_undo_link(
    user, browser, scope, expected
):
    url = page_url(user)
    form = form_of(browser.get(url))
    response = browser.post(url, form.submission(scope=scope))

    assert response.status_code == 200
    html = response.content.decode()
    assert "You are unsubscribed" in html
    assert "undo" in html and "/preferences/" in html
    assert state(user) == expected
    if scope != "this":
        assert Consent.objects.filter(user=user).latest("id").source == "unsubscribe_link"


def test_posting_the_same_choice_twice_changes_nothing_more(user, browser):
    url = page_url(user)
    data = form_of(browser.get(url)).submission(scope="channel")
    browser.post(url, data)
    after_first = state(user)
    response = browser.post(url, data)
    assert response.status_code == 200
    assert "already unsubscribed" in response.content.decode()
    assert state(user) == after_first


def test_posting_no_or_an_unknown_choice_shows_the_choices_again_and_changes_nothing(user, browser):
    url = page_url(user)
    form = form_of(browser.get(url))
    for scope in ("", "everything"):
        response = browser.post(url, form.submission(scope=scope))
        assert response.status_code == 400
        assert "Choose one of the options" in response.content.decode()
    assert state(user) == UNCHANGED


def test_the_unsubscribe_form_needs_its_csrf_token(user, browser):
    response = browser.post(page_url(user), {"scope": "all"})
    assert response.status_code == 403
    assert state(user) == UNCHANGED


# --- One-click (RFC 8058) -------------------------------------------------------------------


def test_one_click_post_works_without_csrf_token_or_login(user, browser):
    response = browser.post(one_click_path(user), ONE_CLICK_BODY)
    assert response.status_code == 200
    assert response["Content-Type"].startswith("text/plain")
    assert response.content.decode() == "Unsubscribed from Flash sale by email.\n"
    assert state(user) == ({("promo.flash_sale", "email", False)}, "as_sent", [("email", True)])


def test_one_click_post_to_the_url_in_the_header_as_a_mail_provider_sends_it(user, settings):
    headers = unsubscribe_headers(user_id=user.pk, category="promo.flash_sale", channel="email")
    path = headers["List-Unsubscribe"][1:-1].removeprefix(settings.NOTIFIER_SITE_URL)
    response = Client(enforce_csrf_checks=True).post(
        path,
        data=headers["List-Unsubscribe-Post"],
        content_type="application/x-www-form-urlencoded",
    )
    assert response.status_code == 200
    assert state(user)[0] == {("promo.flash_sale", "email", False)}


def test_one_click_twice_changes_nothing_more(user, browser):
    browser.post(one_click_path(user), ONE_CLICK_BODY)
    after_first = state(user)
    assert browser.post(one_click_path(user), ONE_CLICK_BODY).status_code == 200
    assert state(user) == after_first


def test_one_click_post_without_the_rfc_8058_body_is_refused(user, browser):
    for body in ({}, {"List-Unsubscribe": "yes"}):
        response = browser.post(one_click_path(user), body)
        assert response.status_code == 400
        assert "List-Unsubscribe=One-Click" in response.content.decode()
    assert state(user) == UNCHANGED


def test_a_get_on_the_one_click_url_only_shows_the_choices(user, browser):
    response = browser.get(one_click_path(user))
    assert response.status_code == 200
    form = form_of(response)
    assert form.radios == ["this", "channel", "all"]
    assert state(user) == UNCHANGED
    # the choices post to the ordinary page, with the CSRF token the GET handed out
    response = browser.post(page_url(user), form.submission(scope="this"))
    assert response.status_code == 200
    assert state(user)[0] == {("promo.flash_sale", "email", False)}


def test_one_click_on_a_locked_category_is_refused(user, browser):
    response = browser.post(one_click_path(user, category="order.shipped"), ONE_CLICK_BODY)
    assert response.status_code == 400
    assert "cannot be switched off" in response.content.decode()
    assert state(user) == UNCHANGED


# --- Links that cannot be trusted -----------------------------------------------------------


def _tampered(token: str) -> str:
    return token[:-1] + ("A" if token[-1] != "A" else "B")


def _forged_for(token: str, user_id: int) -> str:
    """The token's signature over a payload naming another user."""
    _, timestamp, signature = token.split(":")
    payload = signing.b64_encode(
        f'{{"user":{user_id},"category":"promo.flash_sale","channel":"email"}}'.encode()
    ).decode()
    return f"{payload}:{timestamp}:{signature}"


def bad_tokens(user) -> dict[str, str]:
    token = unsubscribe_token(user_id=user.pk, category="promo.flash_sale", channel="email")
    return {
        "tampered": _tampered(token),
        "forged-user": _forged_for(token, user.pk + 1),
        "malformed": "not-a-token",
        "cut-short": token.rsplit(":", 1)[0],
        "foreign-salt": preferences_token(user_id=user.pk),
    }


@pytest.mark.parametrize(
    "kind", ["tampered", "forged-user", "malformed", "cut-short", "foreign-salt"]
)
def test_an_untrustworthy_unsubscribe_link_is_400_and_changes_nothing(user, kind):
    token = bad_tokens(user)[kind]
    client = Client()  # CSRF not enforced: only the token stands in the way
    page = reverse("notifier:unsubscribe", kwargs={"token": token})
    one_click = reverse("notifier:unsubscribe-one-click", kwargs={"token": token})

    get = client.get(page)
    assert get.status_code == 400
    assert "This link is not valid" in get.content.decode()
    assert client.post(page, {"scope": "all"}).status_code == 400
    assert client.get(one_click).status_code == 400
    post = client.post(one_click, ONE_CLICK_BODY)
    assert post.status_code == 400
    assert post.content.decode() == "This link is not valid.\n"
    assert state(user) == UNCHANGED


@pytest.mark.parametrize("kind", ["tampered", "malformed", "foreign-salt"])
def test_an_untrustworthy_preference_link_is_400_and_changes_nothing(user, kind):
    token = {
        "tampered": _tampered(preferences_token(user_id=user.pk)),
        "malformed": "abc:def",
        "foreign-salt": unsubscribe_token(user_id=user.pk, category="marketing", channel="all"),
    }[kind]
    client = Client()
    url = reverse("notifier:preferences-page", kwargs={"token": token})
    assert client.get(url).status_code == 400
    response = client.post(url, {"marketing_frequency": "off"})
    assert response.status_code == 400
    assert "This link is not valid" in response.content.decode()
    assert state(user) == UNCHANGED


def test_an_expired_link_is_410_and_changes_nothing(user):
    with time_machine.travel(T0, tick=False):
        unsubscribe = unsubscribe_token(
            user_id=user.pk, category="promo.flash_sale", channel="email"
        )
        prefs = preferences_token(user_id=user.pk)
    client = Client()
    with time_machine.travel(T0 + dt.timedelta(days=366), tick=False):
        page = reverse("notifier:unsubscribe", kwargs={"token": unsubscribe})
        one_click = reverse("notifier:unsubscribe-one-click", kwargs={"token": unsubscribe})
        prefs_page = reverse("notifier:preferences-page", kwargs={"token": prefs})

        response = client.get(page)
        assert response.status_code == 410
        assert "This link has expired" in response.content.decode()
        assert client.post(page, {"scope": "all"}).status_code == 410
        assert client.post(one_click, ONE_CLICK_BODY).status_code == 410
        assert client.get(prefs_page).status_code == 410
        assert client.post(prefs_page, {"marketing_frequency": "off"}).status_code == 410
    assert state(user) == UNCHANGED


def test_a_link_for_a_deleted_user_is_400(user):
    url, prefs = page_url(user), prefs_url(user)
    User.objects.filter(pk=user.pk).delete()
    client = Client()
    assert client.get(url).status_code == 400
    assert client.post(url, {"scope": "all"}).status_code == 400
    assert client.get(prefs).status_code == 400


def test_a_link_for_user_a_cannot_change_user_b(user, browser):
    other = UserFactory()
    consent_give(user_id=other.pk, channel="email", source="signup_form", wording="Email offers")
    url = page_url(user)
    data = form_of(browser.get(url)).submission(scope="all")
    browser.post(url, {**data, "user_id": str(other.pk), "user": str(other.pk)})
    browser.post(one_click_path(user), {**ONE_CLICK_BODY, "user_id": str(other.pk)})

    assert state(user)[1] == "off"
    assert state(other) == UNCHANGED


# --- The preference page --------------------------------------------------------------------


def test_the_preference_page_shows_the_users_switches_frequency_and_consent(user, browser):
    preference_set(user_id=user.pk, category="social", channel="push", enabled=False)
    response = browser.get(prefs_url(user))
    assert response.status_code == 200
    assert '<meta name="viewport"' in response.content.decode()
    form = form_of(response)

    assert form.checkboxes["switch:social:push"] is False
    assert form.checkboxes["switch:social:inapp"] is True
    assert form.checkboxes["switch:promo.flash_sale:email"] is True
    assert "switch:social.new_follower:email" not in form.checkboxes  # it never sends email
    assert not any(name.startswith("switch:transactional") for name in form.checkboxes)
    # Orders and account are sections that say they are always sent, with no switch at all.
    assert not any(
        ".".join(name.split(":")[1:2]) in TRANSACTIONAL_TYPES for name in form.checkboxes
    )
    assert form.disabled == 0
    # Offers on a channel that needs consent is one box, the consent: no second switch.
    assert "switch:marketing:email" not in form.checkboxes
    assert form.checkboxes["switch:marketing:inapp"] is True
    assert form.selects["marketing_frequency"] == "as_sent"
    assert form.checkboxes["consent:email"] is True
    assert form.checkboxes["consent:sms"] is False
    assert state(user) == ({("social", "push", False)}, "as_sent", [("email", True)])


def test_the_preference_page_saves_switches_frequency_and_consent(user, browser):
    url = prefs_url(user)
    form = form_of(browser.get(url))
    data = form.submission(
        **{
            "switch:marketing:inapp": False,
            "switch:social.new_follower:push": False,
            "consent:sms": True,
            "consent:email": False,
            "marketing_frequency": "weekly",
        }
    )
    response = browser.post(url, data, REMOTE_ADDR="192.0.2.7")

    assert response.status_code == 200
    assert "Saved." in response.content.decode()
    # The confirmation says what changed, in words.
    assert [str(line) for line in response.context["changed"]] == [
        "Offers and promotions in the app: off",
        "New followers by push notification: off",
        "How often we send offers: At most one a week",
        "Offers and promotions by email: agreement withdrawn",
        "Offers and promotions by text message: you agreed",
    ]
    prefs, frequency, consents = state(user)
    assert prefs == {("marketing", "inapp", False), ("social.new_follower", "push", False)}
    assert frequency == "weekly"
    assert consents == [("email", True), ("email", False), ("sms", True)]
    given = Consent.objects.get(user=user, channel="sms")
    assert (given.source, given.wording, given.ip_address) == (
        "preference_link",
        "Yes, send me offers and promotions by text message.",
        "192.0.2.7",
    )
    # the page now shows what was saved
    saved = form_of(response)
    assert saved.checkboxes["switch:marketing:inapp"] is False
    assert saved.checkboxes["consent:email"] is False
    assert saved.checkboxes["consent:sms"] is True
    assert saved.selects["marketing_frequency"] == "weekly"


def test_saving_the_page_unchanged_writes_nothing(user, browser):
    preference_set(user_id=user.pk, category="social", channel="push", enabled=False)
    before = state(user)
    url = prefs_url(user)
    response = browser.post(url, form_of(browser.get(url)).submission())
    assert response.status_code == 200
    assert state(user) == before
    assert "Nothing had changed." in response.content.decode()


def test_the_preference_page_post_needs_the_csrf_token(user, browser):
    url = prefs_url(user)
    data = form_of(browser.get(url)).submission(marketing_frequency="off")
    data.pop("csrfmiddlewaretoken")
    response = browser.post(url, data)
    assert response.status_code == 403
    assert state(user) == UNCHANGED


def test_a_bad_value_on_the_preference_page_saves_nothing(user, browser):
    url = prefs_url(user)
    data = form_of(browser.get(url)).submission(
        **{"switch:social:push": False, "marketing_frequency": "hourly"}
    )
    response = browser.post(url, data)
    assert response.status_code == 400
    assert "Nothing was saved" in response.content.decode()
    assert state(user) == UNCHANGED


def test_boxes_the_page_did_not_show_are_left_alone(user, browser):
    preference_set(user_id=user.pk, category="social", channel="push", enabled=False)
    url = prefs_url(user)
    # a form with only the frequency: no box was shown, so none counts as unticked
    browser.get(url)
    token = browser.cookies["csrftoken"].value
    response = browser.post(url, {"csrfmiddlewaretoken": token, "marketing_frequency": "weekly"})
    assert response.status_code == 200
    assert state(user) == ({("social", "push", False)}, "weekly", [("email", True)])


def test_the_preference_page_undoes_an_unsubscribe(user, browser):
    browser.post(one_click_path(user), ONE_CLICK_BODY)
    url = page_url(user)
    browser.post(url, form_of(browser.get(url)).submission(scope="all"))
    assert not Consent.objects.filter(user=user).latest("id").granted

    prefs = prefs_url(user)
    form = form_of(browser.get(prefs))
    assert form.checkboxes["consent:email"] is False
    browser.post(
        prefs,
        form.submission(
            **{
                "switch:promo.flash_sale:email": True,
                "consent:email": True,
                "marketing_frequency": "as_sent",
            }
        ),
    )
    prefs_rows, frequency, consents = state(user)
    assert prefs_rows == set()
    assert frequency == "as_sent"
    assert consents[-1] == ("email", True)


# --- Which message an unsubscribe came through ------------------------------------------------


SALE = {
    "sale_name": "Double 11",
    "starts_at": "tonight",
    "headline": "Up to 50% off",
    "sale_url": "https://shop.example.com/sale",
}


def a_message(user) -> Message:
    return notify(user, "promo.flash_sale", SALE)


def logged(user) -> list[tuple]:
    return list(
        Unsubscribe.objects.filter(user=user)
        .order_by("id")
        .values_list("message_id", "category", "channel", "scope", "source")
    )


def test_the_page_logs_the_unsubscribe_against_the_message_whose_link_was_used(user, browser):
    message = a_message(user)
    url = page_url(user, message_id=message.pk)
    browser.post(url, form_of(browser.get(url)).submission(scope="channel"))

    assert logged(user) == [
        (message.pk, "promo.flash_sale", "email", "channel", "unsubscribe_link")
    ]
    row = Unsubscribe.objects.get(user=user)
    assert row.at is not None
    assert list(message.unsubscribes.all()) == [row]


def test_one_click_logs_the_message_too(user, browser):
    message = a_message(user)
    assert (
        browser.post(one_click_path(user, message_id=message.pk), ONE_CLICK_BODY).status_code == 200
    )
    assert logged(user) == [(message.pk, "promo.flash_sale", "email", "this", "one_click")]


def test_an_unsubscribe_that_changes_nothing_is_not_logged_again(user, browser):
    message = a_message(user)
    path = one_click_path(user, message_id=message.pk)
    browser.post(path, ONE_CLICK_BODY)
    browser.post(path, ONE_CLICK_BODY)
    url = page_url(user, message_id=message.pk)
    data = form_of(browser.get(url)).submission(scope="all")
    browser.post(url, data)  # "all" still changes something: logged
    browser.post(url, data)  # now it does not
    assert [row[3] for row in logged(user)] == ["this", "all"]


def test_a_link_without_a_message_is_logged_without_one(user, browser):
    browser.post(one_click_path(user), ONE_CLICK_BODY)
    assert logged(user) == [(None, "promo.flash_sale", "email", "this", "one_click")]


def test_a_message_deleted_since_or_of_another_user_is_not_attributed(user):
    other_users = a_message(UserFactory())
    gone = a_message(user)
    gone_id = gone.pk
    gone.delete()
    for message_id, scope in ((other_users.pk, "this"), (gone_id, "all")):
        assert unsubscribe(
            user_id=user.pk,
            category="promo.flash_sale",
            channel="email",
            scope=scope,
            source="unsubscribe_link",
            message_id=message_id,
        )
    assert [row[0] for row in logged(user)] == [None, None]


@pytest.mark.parametrize("message_id", ["12", 0, -1, True])
def test_a_message_id_that_is_not_one_is_refused(user, message_id):
    with pytest.raises(PreferenceError, match="message_id"):
        unsubscribe(
            user_id=user.pk,
            category="promo.flash_sale",
            channel="email",
            scope="this",
            source="unsubscribe_link",
            message_id=message_id,
        )
    assert state(user) == UNCHANGED
    assert logged(user) == []
