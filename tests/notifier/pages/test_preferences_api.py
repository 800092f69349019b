"""The preferences JSON API: read the grid, change switches and frequency, record consent."""

from __future__ import annotations

import json

import pytest
from django.test import Client
from django.urls import reverse

from notifier.models import Consent, Preference, Recipient
from tests.factories import UserFactory

pytestmark = pytest.mark.django_db

URL = "/api/preferences/"
CONSENT_URL = "/api/preferences/consent/"


@pytest.fixture
def user():
    return UserFactory()


@pytest.fixture
def client_for(user) -> Client:
    client = Client(enforce_csrf_checks=False)
    client.force_login(user)
    return client


def patch(client: Client, body: object) -> object:
    data = body if isinstance(body, (str, bytes)) else json.dumps(body)
    return client.patch(URL, data=data, content_type="application/json")


def post_consent(client: Client, body: object) -> object:
    data = body if isinstance(body, (str, bytes)) else json.dumps(body)
    return client.post(CONSENT_URL, data=data, content_type="application/json")


def category(state: dict, key: str) -> dict:
    for group in state["categories"]:
        if group["category"] == key:
            return group
        for type_state in group["types"]:
            if type_state["category"] == key:
                return type_state
    raise AssertionError(f"{key} not in the response")


def written(user) -> tuple:
    user.refresh_from_db()
    return (
        set(Preference.objects.filter(user=user).values_list("category", "channel", "enabled")),
        user.notifier_recipient.marketing_frequency,
        Consent.objects.filter(user=user).count(),
    )


def test_the_routes_are_named():
    assert reverse("notifier:preferences-api") == URL
    assert reverse("notifier:preferences-consent") == CONSENT_URL


def test_anonymous_requests_get_401_and_change_nothing(user):
    anonymous = Client()
    assert anonymous.get(URL).status_code == 401
    response = patch(anonymous, {"marketing_frequency": "off"})
    assert response.status_code == 401
    assert "log in" in response.json()["error"]
    consent = post_consent(anonymous, {"channel": "email", "granted": True, "wording": "yes"})
    assert consent.status_code == 401
    assert Preference.objects.count() == 0 and Consent.objects.count() == 0
    assert set(Recipient.objects.values_list("marketing_frequency", flat=True)) == {"as_sent"}


def test_with_no_rows_every_switch_shows_the_default_on(client_for):
    response = client_for.get(URL)
    assert response.status_code == 200
    state = response.json()

    assert state["channels"] == ["inapp", "email", "sms", "push"]
    assert [g["category"] for g in state["categories"]] == [
        "transactional",
        "service",
        "marketing",
        "social",
    ]
    for group in state["categories"]:
        assert group["channels"] == {"inapp": True, "email": True, "sms": True, "push": True}
        for type_state in group["types"]:
            assert all(type_state["channels"].values())
    assert state["marketing_frequency"] == "as_sent"
    assert state["marketing_frequency_choices"] == ["as_sent", "weekly", "off"]
    assert state["consent"] == {
        "email": {"granted": False, "at": None},
        "sms": {"granted": False, "at": None},
        "push": {"granted": False, "at": None},
    }


def test_types_are_grouped_under_their_kind_with_their_own_channels(client_for):
    state = client_for.get(URL).json()
    groups = {g["category"]: [t["category"] for t in g["types"]] for g in state["categories"]}
    assert groups["transactional"] == [
        "account.password_changed",
        "order.shipped",
        "payment.succeeded",
    ]
    assert groups["marketing"] == ["promo.flash_sale"]
    assert groups["social"] == ["social.new_comment", "social.new_follower"]
    assert set(category(state, "social.new_follower")["channels"]) == {"inapp", "push"}
    assert category(state, "promo.flash_sale")["name"] == "Flash sale"


def test_inactive_types_are_not_listed(client_for):
    from notifier.models import NotificationType

    NotificationType.objects.filter(kind="social").update(is_active=False)
    state = client_for.get(URL).json()
    social = category(state, "social")
    assert social["types"] == []


def test_transactional_and_critical_categories_are_marked_locked(client_for):
    state = client_for.get(URL).json()
    locked = {
        key: category(state, key)["locked"]
        for key in (
            "transactional",
            "order.shipped",
            "payment.succeeded",
            "account.password_changed",
            "service",
            "marketing",
            "social",
            "promo.flash_sale",
            "subscription.renewal_reminder",
        )
    }
    assert locked == {
        "transactional": True,
        "order.shipped": True,
        "payment.succeeded": True,
        "account.password_changed": True,
        "service": False,
        "marketing": False,
        "social": False,
        "promo.flash_sale": False,
        "subscription.renewal_reminder": False,
    }


def test_patch_applies_overrides_and_the_most_specific_wins(client_for, user):
    response = patch(
        client_for,
        {
            "preferences": [
                {"category": "marketing", "channel": "all", "enabled": False},
                {"category": "promo.flash_sale", "channel": "email", "enabled": True},
                {"category": "social", "channel": "push", "enabled": False},
            ]
        },
    )
    assert response.status_code == 200
    state = response.json()
    assert category(state, "marketing")["channels"] == {
        "inapp": False,
        "email": False,
        "sms": False,
        "push": False,
    }
    assert category(state, "promo.flash_sale")["channels"] == {
        "inapp": False,
        "email": True,
        "push": False,
    }
    assert category(state, "social")["channels"]["push"] is False
    assert category(state, "social.new_follower")["channels"] == {"inapp": True, "push": False}
    assert client_for.get(URL).json() == state  # the response is the stored state
    assert written(user)[0] == {
        ("marketing", "all", False),
        ("promo.flash_sale", "email", True),
        ("social", "push", False),
    }


def test_patch_sets_the_marketing_frequency(client_for, user):
    response = patch(client_for, {"marketing_frequency": "weekly"})
    assert response.status_code == 200
    assert response.json()["marketing_frequency"] == "weekly"
    assert written(user)[1] == "weekly"


@pytest.mark.parametrize(
    ("item", "needle"),
    [
        ({"category": "transactional", "channel": "email", "enabled": False}, "cannot be switched"),
        ({"category": "order.shipped", "channel": "all", "enabled": False}, "cannot be switched"),
        (
            {"category": "payment.succeeded", "channel": "sms", "enabled": False},
            "cannot be switched",
        ),
    ],
)
def test_switching_off_a_locked_category_is_400_and_nothing_is_written(
    client_for, user, item, needle
):
    response = patch(
        client_for,
        {
            "preferences": [{"category": "social", "channel": "all", "enabled": False}, item],
            "marketing_frequency": "off",
        },
    )
    assert response.status_code == 400
    assert needle in response.json()["error"]
    assert written(user) == (set(), "as_sent", 0)


@pytest.mark.parametrize(
    ("body", "needle"),
    [
        ("{not json", "send a JSON body"),
        ("[1, 2]", "JSON object"),
        ({}, "send preferences, marketing_frequency, digest_cadences or some"),
        ({"preferences": {"category": "social"}}, "preferences must be a list"),
        ({"preferences": ["social"]}, "preferences[0] must be an object"),
        ({"preferences": [{"channel": "all", "enabled": False}]}, "preferences[0].category"),
        (
            {"preferences": [{"category": "social", "channel": "all", "enabled": "no"}]},
            "preferences[0].enabled must be true or false",
        ),
        (
            {"preferences": [{"category": "social", "channel": 1, "enabled": False}]},
            "preferences[0].channel",
        ),
        (
            {"preferences": [{"category": "socials", "channel": "all", "enabled": False}]},
            "'socials' is not a category",
        ),
        (
            {"preferences": [{"category": "social", "channel": "fax", "enabled": False}]},
            "'fax' is not a channel",
        ),
        ({"marketing_frequency": "daily"}, "marketing_frequency must be one of"),
        ({"marketing_frequency": 7}, "marketing_frequency must be one of"),
    ],
)
def test_bad_input_is_400_saying_what_to_fix_and_nothing_changes(client_for, user, body, needle):
    if isinstance(body, dict) and "preferences" in body:
        # a valid change alongside: it must not be applied either
        body = {**body, "marketing_frequency": "weekly"}
    response = patch(client_for, body)
    assert response.status_code == 400
    assert needle in response.json()["error"]
    assert written(user) == (set(), "as_sent", 0)


def test_patch_ignores_a_user_id_in_the_body(client_for, user):
    other = UserFactory()
    response = patch(
        client_for,
        {
            "user_id": other.pk,
            "user": other.pk,
            "preferences": [
                {"category": "social", "channel": "all", "enabled": False, "user_id": other.pk}
            ],
            "marketing_frequency": "off",
        },
    )
    assert response.status_code == 200
    assert written(user) == ({("social", "all", False)}, "off", 0)
    assert written(other) == (set(), "as_sent", 0)


def test_consent_post_gives_consent_with_wording_source_and_ip(client_for, user):
    response = post_consent(
        client_for,
        {"channel": "email", "granted": True, "wording": "Send me offers by email"},
    )
    assert response.status_code == 200
    row = Consent.objects.get(user=user)
    assert (row.channel, row.granted, row.source, row.wording, row.ip_address) == (
        "email",
        True,
        "preference_centre",
        "Send me offers by email",
        "127.0.0.1",
    )
    assert response.json()["consent"]["email"] == {"granted": True, "at": row.at.isoformat()}
    assert response.json()["consent"]["sms"] == {"granted": False, "at": None}


def test_consent_post_withdraws_and_the_state_shows_it(client_for, user):
    post_consent(client_for, {"channel": "sms", "granted": True, "wording": "Texts with offers"})
    response = post_consent(client_for, {"channel": "sms", "granted": False})
    assert response.status_code == 200
    withdrawal = Consent.objects.filter(user=user).latest("id")
    assert (withdrawal.granted, withdrawal.source) == (False, "preference_centre")
    assert response.json()["consent"]["sms"] == {
        "granted": False,
        "at": withdrawal.at.isoformat(),
    }
    assert list(
        Consent.objects.filter(user=user).order_by("id").values_list("granted", flat=True)
    ) == [
        True,
        False,
    ]


@pytest.mark.parametrize(
    ("body", "needle"),
    [
        ({"channel": "email", "granted": True}, "wording is required"),
        ({"channel": "email", "granted": True, "wording": "  "}, "wording is required"),
        (
            {"channel": "inapp", "granted": True, "wording": "yes"},
            "not a channel that asks for consent",
        ),
        ({"channel": "email", "granted": "yes", "wording": "yes"}, "granted must be true or false"),
        ({"granted": True, "wording": "yes"}, "channel must be a string"),
        ("nope", "send a JSON body"),
    ],
)
def test_bad_consent_input_is_400_and_nothing_written(client_for, user, body, needle):
    response = post_consent(client_for, body)
    assert response.status_code == 400
    assert needle in response.json()["error"]
    assert not Consent.objects.exists()


def test_consent_post_ignores_a_user_id_in_the_body(client_for, user):
    other = UserFactory()
    post_consent(
        client_for, {"user_id": other.pk, "channel": "email", "granted": True, "wording": "yes"}
    )
    assert Consent.objects.get().user_id == user.pk


def test_other_methods_are_not_allowed(client_for):
    assert client_for.delete(URL).status_code == 405
    assert client_for.post(URL).status_code == 405
    assert client_for.get(CONSENT_URL).status_code == 405


def test_patch_needs_the_csrf_token_like_any_session_write(user):
    client = Client(enforce_csrf_checks=True)
    client.force_login(user)
    response = client.patch(
        URL, data=json.dumps({"marketing_frequency": "off"}), content_type="application/json"
    )
    assert response.status_code == 403
    assert written(user) == (set(), "as_sent", 0)
