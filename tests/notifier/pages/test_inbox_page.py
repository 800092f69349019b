"""The inbox page and the end users' login, without a browser: who gets in, what the page
lists, the no-JavaScript forms (through the same services as the JSON API), and bad input."""

from __future__ import annotations

import base64

import pytest
from django.test import Client
from django.urls import reverse

from notifier.models import Delivery, DeliveryEvent, InboxItem
from notifier.status import DeliveryStatus
from tests.factories import UserFactory
from tests.notifier.pages.test_inbox_api import deliver_inbox

pytestmark = pytest.mark.django_db
PASSWORD = "a-long-enough-password"


@pytest.fixture(autouse=True)
def _no_broker(monkeypatch):
    from notifier import dispatch

    monkeypatch.setattr(dispatch, "publish_prepare", lambda *a, **k: None)
    monkeypatch.setattr(dispatch, "publish_deliver", lambda *a, **k: None)


@pytest.fixture
def user():
    return UserFactory()


@pytest.fixture
def signed_in(user) -> Client:
    client = Client(enforce_csrf_checks=False)
    client.force_login(user)
    return client


def page() -> str:
    return reverse("notifier:inbox-page")


def test_anonymous_visitors_are_sent_to_the_login_page():
    response = Client().get(page())
    assert response.status_code == 302
    assert response["Location"] == f"{reverse('login')}?next={page()}"
    # Nothing changes for an anonymous POST either.
    assert Client().post(page(), {"action": "read-all"}).status_code == 302


def test_logging_in_leads_to_the_inbox_and_a_wrong_password_is_a_400(user):
    user.set_password(PASSWORD)
    user.save()
    client = Client()
    wrong = client.post(reverse("login"), {"username": user.username, "password": "nope"})
    assert wrong.status_code == 400
    assert "Please enter a correct username and password" in wrong.content.decode()
    right = client.post(
        f"{reverse('login')}?next={page()}",
        {"username": user.username, "password": PASSWORD, "next": page()},
    )
    assert right.status_code == 302
    assert right["Location"] == page()
    assert client.get(page()).status_code == 200


def test_the_page_lists_only_the_users_own_items_with_the_unread_count(user, signed_in):
    items = deliver_inbox(user, 3)
    deliver_inbox(UserFactory(), 2)  # someone else's
    response = signed_in.get(page())
    assert response.status_code == 200
    html = response.content.decode()
    assert 'id="unread-count">3<' in html
    for item in items:
        assert f'<li class="item unread" data-id="{item.pk}">' in html
    assert [i["id"] for i in response.context["items"]] == [i.pk for i in items]
    assert "Fan 2 followed you" in html
    assert response["Cache-Control"].startswith("max-age=0")


def test_an_empty_inbox_says_so(signed_in):
    html = signed_in.get(page()).content.decode()
    assert '<div id="inbox-empty" class="empty">' in html  # shown, not hidden
    assert "Nothing here yet." in html
    assert 'id="load-more"' not in html


def test_the_no_js_load_more_link_pages_through_the_cursor(user, signed_in):
    items = deliver_inbox(user, 23)
    first = signed_in.get(page())
    assert len(first.context["items"]) == 20
    cursor = first.context["next_cursor"]
    assert f'href="?cursor={cursor}"' in first.content.decode()
    second = signed_in.get(page(), {"cursor": cursor})
    assert [i["id"] for i in second.context["items"]] == [i.pk for i in items[20:]]
    assert second.context["next_cursor"] is None


@pytest.mark.parametrize(
    "cursor",
    [
        "garbage",
        base64.urlsafe_b64encode(b"yesterday|5").decode(),
        base64.urlsafe_b64encode(b"2025-01-01T00:00:00+00:00|five").decode(),
        base64.urlsafe_b64encode(b"\xff\xfe").decode(),
    ],
)
def test_a_cursor_we_did_not_give_out_is_a_400_page(signed_in, cursor):
    response = signed_in.get(page(), {"cursor": cursor})
    assert response.status_code == 400
    assert "This page of your inbox does not exist" in response.content.decode()


def test_the_forms_mark_read_give_feedback_and_archive_through_the_services(user, signed_in):
    first, second = deliver_inbox(user, 2)
    response = signed_in.post(page(), {"action": "read", "item": first.pk})
    assert response.status_code == 303
    assert response["Location"] == page()
    first.refresh_from_db()
    assert first.read_at is not None
    assert Delivery.objects.get(pk=first.delivery_id).status == DeliveryStatus.READ

    signed_in.post(page(), {"action": "irrelevant", "item": second.pk})
    second.refresh_from_db()
    assert second.feedback == "irrelevant"
    assert DeliveryEvent.objects.filter(
        delivery_id=second.delivery_id, detail__feedback="irrelevant"
    ).exists()

    signed_in.post(page(), {"action": "archive", "item": second.pk})
    second.refresh_from_db()
    assert second.archived_at is not None
    assert [i["id"] for i in signed_in.get(page()).context["items"]] == [first.pk]


def test_mark_all_read_keeps_the_page_the_user_was_on(user, signed_in):
    deliver_inbox(user, 21)
    cursor = signed_in.get(page()).context["next_cursor"]
    response = signed_in.post(page(), {"action": "read-all", "cursor": cursor})
    assert response.status_code == 303
    assert response["Location"] == f"{page()}?cursor={cursor}"
    assert not InboxItem.objects.filter(user=user, read_at__isnull=True).exists()


@pytest.mark.parametrize(
    ("data", "status", "says"),
    [
        ({"action": "explode", "item": "1"}, 400, "Choose one of"),
        ({}, 400, "Choose one of"),
        ({"action": "read"}, 400, "item must be the number"),
        ({"action": "read", "item": "abc"}, 400, "item must be the number"),
        ({"action": "read", "item": "-3"}, 400, "item must be the number"),
        ({"action": "archive", "item": "9" * 30}, 400, "item must be the number"),
        ({"action": "archive", "item": "9" * 5000}, 400, "item must be the number"),
        ({"action": "archive", "item": "\u00b2"}, 400, "item must be the number"),
        ({"action": "archive", "item": "0"}, 400, "item must be the number"),
        ({"action": "useful", "item": "999999"}, 404, "not in your inbox"),
    ],
)
def test_bad_form_input_is_a_4xx_page_and_changes_nothing(user, signed_in, data, status, says):
    (item,) = deliver_inbox(user, 1)
    response = signed_in.post(page(), data)
    assert response.status_code == status
    assert says in response.content.decode()
    item.refresh_from_db()
    assert (item.read_at, item.archived_at, item.feedback) == (None, None, "")


def test_another_users_item_is_not_found_and_stays_unread(signed_in):
    (theirs,) = deliver_inbox(UserFactory(), 1)
    response = signed_in.post(page(), {"action": "read", "item": theirs.pk})
    assert response.status_code == 404
    theirs.refresh_from_db()
    assert theirs.read_at is None


def test_other_methods_are_refused(signed_in):
    assert signed_in.put(page()).status_code == 405
    assert signed_in.delete(page()).status_code == 405


def test_the_forms_need_the_csrf_token(user):
    (item,) = deliver_inbox(user, 1)
    client = Client(enforce_csrf_checks=True)
    client.force_login(user)
    assert client.post(page(), {"action": "read", "item": item.pk}).status_code == 403
    item.refresh_from_db()
    assert item.read_at is None


def test_a_javascript_link_is_not_made_a_link(user, signed_in):
    (item,) = deliver_inbox(user, 1)
    InboxItem.objects.filter(pk=item.pk).update(link="javascript:alert(1)")
    html = signed_in.get(page()).content.decode()
    assert "javascript:alert" not in html


def test_logging_out_takes_a_post_and_leads_back_to_the_login_page(signed_in):
    assert signed_in.get(reverse("logout")).status_code == 405
    response = signed_in.post(reverse("logout"))
    assert response.status_code == 302
    assert response["Location"] == reverse("login")
    assert signed_in.get(page()).status_code == 302  # no longer signed in


def test_the_login_page_never_redirects_off_site(user):
    user.set_password(PASSWORD)
    user.save()
    response = Client().post(
        reverse("login"),
        {"username": user.username, "password": PASSWORD, "next": "https://evil.example/"},
    )
    assert response.status_code == 302
    assert response["Location"] == page()
