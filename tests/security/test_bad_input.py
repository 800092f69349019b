"""The hostile-input corpus thrown at every public endpoint found in the URLconf, with every
method it accepts, logged in and not: never a 500; a 4xx says what to fix, and writes nothing.

Endpoints are discovered (tests/security/endpoints.py), so a new URL is fuzzed without being
listed. What a valid request needs (a signed token, the user's own inbox item) comes from the
`world` fixture's `tokens`, by URL name; an endpoint without one gets "x" and is still fuzzed
(add a valid token there when a new endpoint needs one to get past its first check).
"""

from __future__ import annotations

import base64
from dataclasses import dataclass
from urllib.parse import quote

import pytest
from django.apps import apps
from django.db import connection, transaction
from django.test import Client

from campaigns.tracking import click_token, open_token
from channels.base import Channel
from notifier import dispatch
from notifier.api import notify
from notifier.links import preferences_token, unsubscribe_token
from notifier.models import ApiKey, ApiScope, InboxItem, User
from notifier.services.api_keys import api_key_create
from notifier.services.deliveries import deliveries_deliver
from notifier.services.pipeline import messages_prepare
from tests.factories import UserFactory
from tests.security.corpus import (
    HOSTILE_PATH_IDS,
    HOSTILE_STRINGS,
    form_bodies,
    json_bodies,
    query_strings,
)
from tests.security.endpoints import METHODS, Endpoint, public_endpoints

pytestmark = pytest.mark.django_db
ENDPOINTS = public_endpoints()
BODY_METHODS = ("POST", "PUT", "PATCH", "DELETE")


# --- The world: a user with an inbox item, another user with theirs, signed links -------------


@dataclass
class World:
    user: User
    item: InboxItem
    others_item: InboxItem
    tokens: dict[str, str]
    client: Client
    anonymous: Client

    def kwargs(self, endpoint: Endpoint) -> dict[str, object]:
        values: dict[str, object] = {}
        for key in endpoint.converters:
            if key == "item_id":
                values[key] = self.item.pk
            elif key == "token":
                values[key] = self.tokens.get(endpoint.name, "x")
        return values


def _inbox_item(user: User) -> InboxItem:
    message = notify(
        user,
        "promo.flash_sale",
        {
            "sale_name": "Double 11",
            "starts_at": "tonight",
            "headline": "Half off",
            "sale_url": "https://shop.example.com/sale",
        },
        channels=["inapp", "email"],
    )
    messages_prepare(message_ids=[message.pk])
    deliveries_deliver(delivery_ids=list(message.deliveries.values_list("pk", flat=True)))
    return InboxItem.objects.get(message=message)


@pytest.fixture
def world(monkeypatch, settings) -> World:
    settings.NOTIFIER_RATE_LIMIT_PUBLIC = False  # thousands of requests from one address
    settings.NOTIFIER_MARKETING_CAP_DAY = settings.NOTIFIER_MARKETING_CAP_WEEK = 100
    monkeypatch.setattr(dispatch, "publish_prepare", lambda *args, **kwargs: None)
    monkeypatch.setattr(dispatch, "publish_deliver", lambda *args, **kwargs: None)
    user, other = UserFactory(), UserFactory()
    item, others_item = _inbox_item(user), _inbox_item(other)
    # Logged in for the end users' APIs, with an API key of every scope for the service API
    # (its own limit out of the way, as the public limits are): every body reaches the checks.
    key = api_key_create(name="hostile", scopes=ApiScope.values, rate_limit="1000000/s")
    client = Client(HTTP_AUTHORIZATION=f"Bearer {key.token}")
    client.force_login(user)
    tokens = {
        "notifier:unsubscribe": unsubscribe_token(
            user_id=user.pk, category="promo.flash_sale", channel="email"
        ),
        "notifier:preferences-page": preferences_token(user_id=user.pk),
        "notifier:track-click": click_token(
            message_id=item.message_id, channel=Channel.EMAIL, index=0
        ),
        "notifier:track-open": open_token(message_id=item.message_id, channel=Channel.EMAIL),
    }
    tokens["notifier:unsubscribe-one-click"] = tokens["notifier:unsubscribe"]
    return World(user, item, others_item, tokens, client, Client())


# --- Checking one answer -------------------------------------------------------------------------


# API keys record when they were last used, a refused call included: that is not the call's
# input written down.
USE_RECORDS = {ApiKey._meta.db_table}


def own_tables() -> list[str]:
    return sorted(
        {
            model._meta.db_table
            for app in ("notifier", "notifier_channels", "campaigns")
            for model in apps.get_app_config(app).get_models()
            if model._meta.managed and not model._meta.proxy
        }
        - USE_RECORDS
    )


def snapshot(tables: list[str] | None = None) -> dict[str, str]:
    """A digest of every row of every table of the project's own apps (or of `tables`)."""
    tables = own_tables() if tables is None else tables
    sql = " UNION ALL ".join(
        f"SELECT '{t}', md5(coalesce(string_agg(r::text, '|' ORDER BY r::text), '')) FROM {t} r"
        for t in tables
    )
    with connection.cursor() as cursor:
        cursor.execute(sql)
        return dict(cursor.fetchall())


def explains(response) -> bool:
    """A 4xx that says something: a JSON error, a page or a plain message (HEAD: no body)."""
    if response.request["REQUEST_METHOD"] == "HEAD":
        return True
    if response.get("Content-Type", "").startswith("application/json"):
        body = response.json()
        # The inbox and preference APIs say {"error": ...}; the service API {"type", "message"}.
        error = body.get("error") or body.get("message")
        return isinstance(error, str) and len(error) > 5
    return len(response.content.strip()) > 5 or response.status_code == 405


# Answers about the service's state, not about the input: readiness says 503 while beat has
# not run (it never does in these tests).
STATE_ANSWERS = {("notifier:health-ready", 503)}


def write_counts() -> dict[str, int]:
    """Rows inserted, updated or deleted so far in this transaction, by table."""
    with connection.cursor() as cursor:
        cursor.execute(
            "SELECT relname, n_tup_ins + n_tup_upd + n_tup_del FROM pg_stat_xact_user_tables"
        )
        return dict(cursor.fetchall())


class Problems(list[str]):
    """The problems found by `check`, and what the tables held after the last request.

    A request's writes are found by digesting the rows again, but only of the tables whose
    counts PostgreSQL says moved in this transaction (`pg_stat_xact_user_tables` counts every
    row written, a rolled-back savepoint's included): a table nobody wrote to cannot differ, and
    one that was written to and put back digests the same."""

    def __init__(self) -> None:
        super().__init__()
        self.counts = write_counts()
        self.digests = snapshot()

    def written(self) -> list[str]:
        """The tables whose rows differ from the last look, which becomes the new last look."""
        counts = write_counts()
        moved = [t for t in self.digests if counts.get(t) != self.counts.get(t)]
        self.counts = counts
        if not moved:
            return []
        now = snapshot(moved)
        changed = sorted(t for t in moved if now[t] != self.digests[t])
        self.digests.update(now)
        return changed


def check(
    label: str,
    problems: Problems,
    client: Client,
    method: str,
    url: str,
    data: bytes | str = b"",
    content_type: str = "application/octet-stream",
) -> int:
    """Send one request; note a 5xx, a 4xx without a message, or a 4xx that wrote rows."""
    response = client.generic(method, url, data, content_type=content_type)
    status = response.status_code
    changed = problems.written()
    if status >= 500 and (label.split(" ")[2], status) not in STATE_ANSWERS:
        problems.append(f"{label}: {status}")
    elif 400 <= status < 500:
        if not explains(response):
            problems.append(f"{label}: {status} with no message")
        if changed:
            problems.append(f"{label}: {status} but rows were written in {', '.join(changed)}")
    return status


def accepted_methods(world: World, endpoint: Endpoint) -> list[str]:
    url = endpoint.url(**world.kwargs(endpoint))
    return [m for m in METHODS if world.client.generic(m, url).status_code != 405]


def token_url(endpoint: Endpoint, token: str) -> str:
    return endpoint.url(token="TOKENSLOT").replace("TOKENSLOT", quote(token, safe=""))


def test_the_write_check_sees_a_row_written_and_not_one_put_back(world):
    problems = Problems()
    assert problems.written() == []
    with transaction.atomic():
        sid = transaction.savepoint()
        world.item.feedback = "useful"
        world.item.save(update_fields=["feedback"])
        transaction.savepoint_rollback(sid)
    assert problems.written() == []  # counted by PostgreSQL, but the rows are as they were
    world.item.feedback = "meh"
    world.item.save(update_fields=["feedback"])
    assert problems.written() == [InboxItem._meta.db_table]
    assert problems.written() == []  # the new rows are the new last look


# --- The corpus at every endpoint ---------------------------------------------------------------


def test_every_method_not_accepted_says_which_are(world):
    for endpoint in ENDPOINTS:
        url = endpoint.url(**world.kwargs(endpoint))
        for method in METHODS:
            response = world.client.generic(method, url)
            if response.status_code == 405 and method != "HEAD":
                assert response["Allow"], f"{method} {url}: 405 without Allow"
                assert b"use " in response.content.lower(), f"{method} {url}: 405 says nothing"


@pytest.mark.parametrize("endpoint", ENDPOINTS, ids=str)
def test_hostile_path_values(endpoint, world):
    methods = accepted_methods(world, endpoint)
    problems = Problems()
    if "token" in endpoint.converters:
        valid = world.tokens.get(endpoint.name, "x")
        cross = {f"token_of:{n}": t for n, t in world.tokens.items() if t != valid}
        tampered = {"tampered": valid[:-2] + ("AA" if not valid.endswith("AA") else "BB")}
        carried = {k: v for k, v in HOSTILE_STRINGS.items() if "surrogate" not in k}
        for name, value in {**carried, **cross, **tampered}.items():
            if not value.strip("/"):
                continue  # an empty token is another URL
            url = token_url(endpoint, value)
            for method in methods:
                for who, client in (("user", world.client), ("anonymous", world.anonymous)):
                    check(
                        f"{who} {method} {endpoint} token={name}",
                        problems,
                        client,
                        method,
                        url,
                        "List-Unsubscribe=One-Click",
                        "application/x-www-form-urlencoded",
                    )
    if "item_id" in endpoint.converters:
        ids = {**HOSTILE_PATH_IDS, "other_users_item": world.others_item.pk}
        for name, value in ids.items():
            url = endpoint.url(item_id=value)
            for method in methods:
                # With a valid body, so that only the id can be wrong.
                status = check(
                    f"user {method} {endpoint} item_id={name}",
                    problems,
                    world.client,
                    method,
                    url,
                    b'{"feedback": "useful"}',
                    "application/json",
                )
                if status != 404:
                    # Someone else's item and one that never existed answer the same.
                    problems.append(f"{method} {endpoint} item_id={name}: {status}, not 404")
    assert not problems, "\n".join(problems)


@pytest.mark.parametrize("endpoint", ENDPOINTS, ids=str)
def test_hostile_bodies(endpoint, world):
    url = endpoint.url(**world.kwargs(endpoint))
    methods = [m for m in accepted_methods(world, endpoint) if m in BODY_METHODS]
    problems = Problems()
    for method in methods:
        for name, body in json_bodies().items():
            check(
                f"user {method} {endpoint} json {name}",
                problems,
                world.client,
                method,
                url,
                body,
                "application/json",
            )
        for name, data in form_bodies().items():
            check(
                f"user {method} {endpoint} form {name}",
                problems,
                world.client,
                method,
                url,
                "&".join(f"{quote(k)}={quote(v)}" for k, v in data.items()),
                "application/x-www-form-urlencoded",
            )
    assert not problems, "\n".join(problems)


def _cursor(text: str) -> str:
    return base64.urlsafe_b64encode(text.encode()).decode().rstrip("=")


CRAFTED_CURSORS = {
    "cursor=past_bigint": _cursor(f"2026-01-01T00:00:00+00:00|{2**63}"),
    "cursor=naive_time": _cursor("2026-01-01T00:00:00|1"),
    "cursor=year_one": _cursor("0001-01-01T00:00:00+00:00|1"),
    "cursor=three_parts": _cursor("a|b|c"),
    "cursor=not_base64": "!!!!",
    "cursor=bad_utf8": base64.urlsafe_b64encode(b"\xff\xfe|1").decode(),
}


@pytest.mark.parametrize("endpoint", ENDPOINTS, ids=str)
def test_hostile_query_strings(endpoint, world):
    url = endpoint.url(**world.kwargs(endpoint))
    cases = {**query_strings(), **{k: {"cursor": v} for k, v in CRAFTED_CURSORS.items()}}
    methods = [m for m in accepted_methods(world, endpoint) if m in ("GET", "HEAD")]
    problems = Problems()
    for method in methods:
        for name, params in cases.items():
            query = "&".join(f"{k}={quote(v)}" for k, v in params.items())
            check(
                f"user {method} {endpoint} ?{name}",
                problems,
                world.client,
                method,
                f"{url}?{query}",
            )
    assert not problems, "\n".join(problems)


# --- Fields each JSON endpoint reads: exactly 400, with the fix ----------------------------------


def post_json(client: Client, method: str, url: str, body: object):
    import json

    return client.generic(method, url, json.dumps(body), content_type="application/json")


@pytest.mark.parametrize(
    ("name", "value"),
    [("nul", "ok\x00"), ("lone_surrogate", "\ud800"), ("huge", "x" * 1_000_000)],
)
def test_consent_wording_that_cannot_be_stored_is_refused_before_anything_is_written(
    world, name, value
):
    before = snapshot()
    response = post_json(
        world.client,
        "POST",
        "/api/preferences/consent/",
        {"channel": "email", "granted": True, "wording": value},
    )
    assert response.status_code == 400
    assert (
        "NUL" in response.json()["error"]
        or "surrogate" in response.json()["error"]
        or "characters" in response.json()["error"]
    )
    assert snapshot() == before


def test_deeply_nested_json_is_a_400_not_a_crash(world):
    url = f"/api/inbox/{world.item.pk}/feedback/"
    response = world.client.post(
        url, b"[" * 100_000 + b"]" * 100_000, content_type="application/json"
    )
    assert response.status_code == 400
    assert response.json() == {"error": 'send a JSON body such as {"feedback": "useful"}'}


def test_nan_is_not_json(world):
    response = world.client.generic(
        "PATCH",
        "/api/preferences/",
        b'{"marketing_frequency": NaN}',
        content_type="application/json",
    )
    assert response.status_code == 400


@pytest.mark.parametrize("value", [["useful"], {"v": "useful"}, 1, True, None, "USEFUL", ""])
def test_feedback_of_the_wrong_type_says_the_choices(world, value):
    response = post_json(
        world.client, "POST", f"/api/inbox/{world.item.pk}/feedback/", {"feedback": value}
    )
    assert response.status_code == 400
    assert response.json()["error"] == "feedback must be one of: useful, meh, irrelevant"
    world.item.refresh_from_db()
    assert world.item.feedback == ""


def test_another_users_item_is_a_404_like_one_that_does_not_exist(world):
    theirs = world.client.post(f"/api/inbox/{world.others_item.pk}/read/")
    missing = world.client.post(f"/api/inbox/{2**63 - 1}/read/")
    assert theirs.status_code == missing.status_code == 404
    assert theirs.json()["error"].replace(str(world.others_item.pk), "N") == missing.json()[
        "error"
    ].replace(str(2**63 - 1), "N")
    world.others_item.refresh_from_db()
    assert world.others_item.read_at is None


def test_a_405_says_which_methods_to_use(world):
    response = world.client.get("/api/inbox/read-all/")
    assert response.status_code == 405
    assert response.json() == {"error": "GET is not allowed here; use POST."}
    page = world.client.put(f"/unsubscribe/{world.tokens['notifier:unsubscribe']}/")
    assert page.status_code == 405
    assert page.content == b"PUT is not allowed here; use GET, POST.\n"


def test_a_patch_with_one_bad_change_among_good_ones_writes_none_of_them(world):
    before = snapshot()
    response = post_json(
        world.client,
        "PATCH",
        "/api/preferences/",
        {
            "preferences": [
                {"category": "marketing", "channel": "email", "enabled": False},
                {"category": "marketing", "channel": "pigeon", "enabled": False},
            ],
            "marketing_frequency": "weekly",
        },
    )
    assert response.status_code == 400
    assert "pigeon" in response.json()["error"]
    assert snapshot() == before
