"""Per-recipient dates over the service API: PUT sets or moves a date (its steps move with
it), DELETE removes it, POST .../exit stops the rest, GET lists them; bad input is a 422
saying what to fix, with nothing written."""

from __future__ import annotations

from datetime import timedelta
from urllib.parse import urlencode

import pytest
from django.utils import timezone

from notifier.models import Delivery, Message, RecipientDate
from notifier.status import DeliveryStatus, Reason
from tests.notifier.http_api.test_recipients_api import call, token

pytestmark = pytest.mark.django_db
S = DeliveryStatus
URL = "/api/v1/recipients/cust-7/dates/subscription.renewal/plan:42"
CONTEXT = {"plan": "Pro", "renews_on": "10 June"}


@pytest.fixture
def recipient(db) -> None:
    made = call("put", "/api/v1/recipients/cust-7", {"time_zone": "Asia/Shanghai"})
    assert made.status_code == 201  # with a user of its own, whose dates these are


def in_days(days: float) -> str:
    return (timezone.now().replace(microsecond=0) + timedelta(days=days)).isoformat()


def test_put_sets_a_date_and_its_steps_and_a_second_put_moves_them(recipient):
    first = call("put", URL, {"at": in_days(10), "context": CONTEXT})
    assert first.status_code == 200, first.json()
    (date,) = first.json()["dates"]
    assert (date["series"], date["key"], date["state"], date["version"]) == (
        "subscription.renewal",
        "plan:42",
        "active",
        1,
    )
    old_ids = [step["message_id"] for step in date["steps"]]
    assert len(old_ids) == 3 and all(old_ids)
    moved = call("put", URL, {"at": in_days(20), "context": CONTEXT})
    assert moved.status_code == 200
    assert moved.json()["dates"][0]["version"] == 2
    assert set(Delivery.objects.filter(message_id__in=old_ids).values_list("status", "reason")) == {
        (S.CANCELLED, Reason.SERIES_MOVED)
    }
    assert call("get", "/api/v1/recipients/cust-7/dates").json() == moved.json()


def test_delete_removes_the_date_and_cancels_its_steps(recipient):
    ids = [
        step["message_id"]
        for step in call("put", URL, {"at": in_days(10), "context": CONTEXT}).json()["dates"][0][
            "steps"
        ]
    ]
    response = call("delete", URL)
    assert response.status_code == 200
    assert response.json()["dates"][0]["state"] == "removed"
    assert set(Delivery.objects.filter(message_id__in=ids).values_list("reason", flat=True)) == {
        Reason.SERIES_REMOVED
    }


def test_exit_stops_the_rest_with_the_reason_given(recipient):
    call("put", URL, {"at": in_days(10), "context": CONTEXT})
    response = call("post", f"{URL}/exit", {"reason": "renewed"})
    assert response.status_code == 200
    date = response.json()["dates"][0]
    assert (date["state"], date["note"]) == ("exited", "renewed")
    assert not Delivery.objects.exclude(reason=Reason.SERIES_EXITED).exists()


@pytest.mark.parametrize(
    ("url", "body", "status", "words"),
    [
        (URL, {"at": "2027-06-10T12:00:00", "context": CONTEXT}, 422, "no UTC offset"),
        (URL, {"at": "2099-06-10T12:00:00Z", "context": CONTEXT}, 422, "ten years"),
        (URL, {"at": "__SOON__", "context": {"plan": "Pro"}}, 422, "renews_on"),
        (URL.replace("subscription.renewal", "no.such"), {"at": "__SOON__", "context": CONTEXT},
         422, "no date series"),
        (URL.replace("cust-7", "nobody"), {"at": "__SOON__", "context": CONTEXT}, 404, "nobody"),
    ],
)  # fmt: skip
def test_bad_input_is_a_4xx_saying_what_to_fix_and_writes_nothing(
    recipient, url, body, status, words
):
    if body["at"] == "__SOON__":
        body = {**body, "at": in_days(10)}
    response = call("put", url, body)
    assert response.status_code == status, response.json()
    assert words in response.json()["message"]
    assert not RecipientDate.objects.exists() and not Message.objects.exists()


def hours_ago(hours: float) -> str:
    return (timezone.now() - timedelta(hours=hours)).isoformat()


def test_a_put_retried_behind_a_newer_one_leaves_the_newer_date(recipient):
    t1, t2 = hours_ago(2), hours_ago(1)
    newer = call("put", URL, {"at": in_days(20), "context": CONTEXT, "as_of": t2})
    assert newer.status_code == 200, newer.json()
    late = call("put", URL, {"at": in_days(10), "context": CONTEXT, "as_of": t1})
    assert late.status_code == 200, late.json()  # not an error: the newer state stands
    assert late.json() == newer.json()
    assert not Delivery.objects.filter(status=S.CANCELLED).exists()


def test_a_delete_with_as_of_ahead_of_its_put_keeps_the_older_put_out(recipient):
    t1, t2, t3 = hours_ago(3), hours_ago(2), hours_ago(1)
    removed = call("delete", URL, QUERY_STRING=urlencode({"as_of": t2}))
    assert removed.status_code == 200, removed.json()
    assert removed.json() == {"dates": []}  # the mark it leaves is no date
    late = call("put", URL, {"at": in_days(10), "context": CONTEXT, "as_of": t1})
    assert late.status_code == 200 and late.json() == {"dates": []}
    assert not Message.objects.exists()
    newer = call("put", URL, {"at": in_days(10), "context": CONTEXT, "as_of": t3})
    (date,) = newer.json()["dates"]
    assert (date["state"], date["version"], len(date["steps"])) == ("active", 1, 3)


def test_an_exit_with_as_of_keeps_a_stale_put_from_restarting_the_steps(recipient):
    call("put", URL, {"at": in_days(10), "context": CONTEXT, "as_of": hours_ago(3)})
    exited = call("post", f"{URL}/exit", {"reason": "renewed", "as_of": hours_ago(1)})
    assert exited.status_code == 200
    late = call("put", URL, {"at": in_days(30), "context": CONTEXT, "as_of": hours_ago(2)})
    assert late.status_code == 200
    assert late.json() == exited.json()
    assert late.json()["dates"][0]["state"] == "exited"


@pytest.mark.parametrize(
    ("method", "url", "body", "query", "words"),
    [
        ("put", URL, {"as_of": "2026-12-01T09:30:00"}, None, "as_of has no UTC offset"),
        ("put", URL, {"as_of": "2999-01-01T00:00:00Z"}, None, "ahead of this server's clock"),
        ("put", URL, {"as_of": "last tuesday"}, None, "as_of"),
        ("put", URL, {"as_of": 1.5e300}, None, "as_of"),
        ("delete", URL, None, {"as_of": "2026-12-01T09:30:00"}, "as_of has no UTC offset"),
        ("delete", URL, None, {"as_of": "9999-12-31T23:00:00-05:00"}, "at most a day"),
        ("delete", URL, None, {"as_of": "soon"}, "as_of"),
        ("post", f"{URL}/exit", {"as_of": "0001-01-01T00:00:00+01:00"}, None, "as_of"),
    ],
)  # fmt: skip
def test_a_bad_as_of_is_a_422_saying_what_to_fix(recipient, method, url, body, query, words):
    if method == "put":
        body = {"at": in_days(10), "context": CONTEXT, **body}
    extra = {"QUERY_STRING": urlencode(query)} if query else {}
    response = call(method, url, body, **extra)
    assert response.status_code == 422, response.json()
    assert words in response.json()["message"]
    assert not RecipientDate.objects.exists() and not Message.objects.exists()


def test_setting_dates_needs_the_recipients_scope(recipient):
    response = call("put", URL, {"at": in_days(10), "context": CONTEXT}, key=token("notify"))
    assert response.status_code == 403


def test_steps_whose_messages_retention_pruned_say_archived(recipient, tmp_path):
    import time_machine

    from notifier.services.pipeline import messages_prepare
    from notifier.services.retention import retention_run

    (date,) = call("put", URL, {"at": in_days(10), "context": CONTEXT}).json()["dates"]
    ids = [step["message_id"] for step in date["steps"]]
    assert [step["archived"] for step in date["steps"]] == [False, False, False]
    messages_prepare(message_ids=ids)
    call("post", f"{URL}/exit", {"reason": "renewed"})
    with time_machine.travel(timezone.now() + timedelta(days=40)):
        assert retention_run(days=30, archive_dir=tmp_path).messages == 3
    (date,) = call("get", "/api/v1/recipients/cust-7/dates").json()["dates"]
    assert [(step["message_id"], step["archived"]) for step in date["steps"]] == [
        (message_id, True) for message_id in ids
    ]
