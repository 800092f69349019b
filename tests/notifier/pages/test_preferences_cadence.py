"""Choosing a digest cadence: on the preference page (translated), through its JSON API, and
through the service API; bad input says what to fix and saves nothing; support sees it."""

from __future__ import annotations

import json
from datetime import time

import pytest
from django.test import Client
from django.urls import reverse

from notifier.models import DigestCadence
from notifier.services.api_keys import api_key_create
from notifier.services.cadences import digest_cadence_set
from tests.factories import UserFactory
from tests.notifier.pages.test_unsubscribe import form_of, prefs_url

pytestmark = pytest.mark.django_db


def chosen(user) -> set[tuple[str, str, time, int]]:
    return set(
        DigestCadence.objects.filter(user=user).values_list("scope", "cadence", "at", "weekday")
    )


def test_the_page_offers_the_cadence_and_saves_a_daily_choice_at_a_time():
    user, browser = UserFactory(), Client(enforce_csrf_checks=True)
    url = prefs_url(user)
    form = form_of(browser.get(url))
    assert form.selects["digest_cadence"] == ""
    assert "digest_cadence:social.new_comment" in form.selects
    data = form.submission(digest_cadence="daily", digest_weekday="0")
    data["digest_at"] = ["08:15"]
    response = browser.post(url, data)
    assert response.status_code == 200
    assert "Summaries: Together, once a day" in [str(x) for x in response.context["changed"]]
    assert chosen(user) == {("", "daily", time(8, 15), 0)}
    assert form_of(response).selects["digest_cadence"] == "daily"


def test_the_page_saves_a_choice_for_one_type_and_like_the_rest_forgets_it():
    user, browser = UserFactory(), Client(enforce_csrf_checks=True)
    url = prefs_url(user)
    data = form_of(browser.get(url)).submission(**{"digest_cadence:social.new_comment": "hourly"})
    browser.post(url, data)
    assert {(s, c) for s, c, _, _ in chosen(user)} == {("social.new_comment", "hourly")}
    data = form_of(browser.get(url)).submission(**{"digest_cadence:social.new_comment": ""})
    browser.post(url, data)
    assert chosen(user) == set()


def test_a_bad_cadence_on_the_page_saves_nothing():
    user, browser = UserFactory(), Client(enforce_csrf_checks=True)
    url = prefs_url(user)
    data = form_of(browser.get(url)).submission(
        digest_cadence="fortnightly", marketing_frequency="weekly"
    )
    response = browser.post(url, data)
    assert response.status_code == 400
    assert "Nothing was saved: cadence is one of" in response.content.decode()
    assert chosen(user) == set()


def test_the_cadence_section_reads_in_chinese():
    user = UserFactory(locale="zh-hans")
    page = Client().get(prefs_url(user)).content.decode()
    assert "汇总" in page and "每天一次" in page and "与其他相同" in page


def test_the_json_api_reads_and_changes_cadences_all_or_nothing():
    user = UserFactory()
    client = Client()
    client.force_login(user)
    body = {
        "digest_cadences": [
            {"type": None, "cadence": "weekly", "at": "07:00", "weekday": "sunday"},
            {"type": "social.new_comment", "cadence": "immediately"},
        ]
    }
    response = client.patch("/api/preferences/", json.dumps(body), "application/json")
    assert response.status_code == 200, response.json()
    state = response.json()
    assert state["digest_cadences"] == [
        {"type": None, "cadence": "weekly", "at": "07:00", "weekday": "sunday"},
        {
            "type": "social.new_comment",
            "cadence": "immediately",
            "at": "09:00",
            "weekday": "monday",
        },
    ]
    assert state["digest_cadence_types"] == ["social.new_comment"]
    bad = {
        "digest_cadences": [
            {"type": "social.new_comment", "cadence": None},
            {"type": "order.shipped", "cadence": "daily"},
        ]
    }
    response = client.patch("/api/preferences/", json.dumps(bad), "application/json")
    assert response.status_code == 400
    assert "order.shipped does not come as a digest" in response.json()["error"]
    assert len(chosen(user)) == 2  # the forget before it was rolled back too


def test_the_service_api_reads_puts_and_deletes_a_recipients_cadence():
    key = api_key_create(name="backend", scopes=("recipients", "read")).token
    auth = {"HTTP_AUTHORIZATION": f"Bearer {key}"}
    client = Client()
    made = client.put(
        "/api/v1/recipients/cust-7",
        json.dumps({"email": "c7@example.com"}),
        "application/json",
        **auth,
    )
    assert made.status_code in (200, 201), made.json()
    url = "/api/v1/recipients/cust-7/digest-cadence"
    put = client.put(
        url, json.dumps({"cadence": "daily", "at": "21:30"}), "application/json", **auth
    )
    assert put.status_code == 200, put.json()
    assert put.json()["cadences"] == [
        {"type": None, "cadence": "daily", "at": "21:30", "weekday": "monday"}
    ]
    refused = client.put(
        url, json.dumps({"cadence": "daily", "at": "25:00"}), "application/json", **auth
    )
    assert refused.status_code == 422
    assert refused.json()["type"] == "CadenceError"
    assert "at is a local time of day" in refused.json()["message"]
    assert client.get(url, **auth).json()["cadences"][0]["at"] == "21:30"
    gone = client.delete(url, **auth)
    assert gone.status_code == 200 and gone.json()["cadences"] == []


def test_support_sees_the_cadence_on_the_customer_page(admin_client):
    user = UserFactory()
    digest_cadence_set(user_id=user.pk, scope="", cadence="weekly", at="07:00", weekday="friday")
    page = admin_client.get(reverse("admin:notifier_user_customer", args=[user.pk]))
    assert "all types: weekly, friday at 07:00 their time" in page.content.decode()


def test_saving_the_page_keeps_a_types_own_time():
    user, browser = UserFactory(), Client(enforce_csrf_checks=True)
    digest_cadence_set(user_id=user.pk, scope="", cadence="daily", at="09:00")
    digest_cadence_set(user_id=user.pk, scope="social.new_comment", cadence="weekly", at="18:00")
    url = prefs_url(user)
    response = browser.post(url, form_of(browser.get(url)).submission())
    assert response.status_code == 200
    assert ("social.new_comment", "weekly", time(18, 0), 0) in chosen(user)


@pytest.mark.parametrize("weekday", ["\u00b2", "7", "-1", "mon day"])
def test_a_bad_weekday_on_the_page_says_what_to_fix_and_saves_nothing(weekday):
    user, browser = UserFactory(), Client(enforce_csrf_checks=True)
    url = prefs_url(user)
    data = form_of(browser.get(url)).submission(digest_cadence="weekly", digest_weekday=weekday)
    response = browser.post(url, data)
    assert response.status_code == 400
    assert "Nothing was saved: weekday is one of" in response.content.decode()
    assert chosen(user) == set()
