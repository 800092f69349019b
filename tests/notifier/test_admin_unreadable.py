"""Support's pages survive a message Python cannot read (an expiry past the year 9999, a context
nested a thousand deep): the lists, the message and delivery pages and the user's history all
answer 200, and say what could not be read and why the message was not sent."""

from __future__ import annotations

import pytest
from django.db import connection
from django.urls import reverse

from notifier.api import notify
from notifier.models import Delivery, Message
from notifier.roles import SUPPORT, roles_sync
from notifier.status import Reason
from notifier.tasks import prepare_messages
from tests.factories import UserFactory, order_context, staff_member

pytestmark = pytest.mark.usefixtures("db")

YEAR_10000 = "9999-12-31 23:59:59-05:00"
# Nested deeper than any supported Python reads (3.11 and 3.12 stop near 1,000 levels, 3.13
# near 10,000) and within what PostgreSQL stores (about 14,000 with its default stack).
DEEP = "[" * 12_000 + "]" * 12_000


@pytest.fixture
def support_client(client):
    """Logged in as a member of the Support group, as roles.py makes it."""
    roles_sync()
    agent = staff_member(SUPPORT.name)
    client.force_login(agent)
    return client


@pytest.fixture
def customer(monkeypatch):
    """A customer with three messages: one readable and routed, and two the pipeline has not
    yet got to, one whose expiry date and one whose context and channels Python cannot read."""
    from notifier import dispatch

    monkeypatch.setattr(dispatch, "publish_prepare", lambda *args, **kwargs: None)
    monkeypatch.setattr(dispatch, "publish_deliver", lambda *args, **kwargs: None)
    user = UserFactory()
    ids = [
        notify(user, "order.shipped", order_context(), channels=["inapp", "email"]).pk
        for _ in range(3)
    ]
    prepare_messages(ids[:1])
    with connection.cursor() as cursor:
        cursor.execute(
            "UPDATE notifier_message SET expires_at = %s WHERE id = %s", [YEAR_10000, ids[1]]
        )
        cursor.execute(
            "UPDATE notifier_message SET context = %s::jsonb, channels = %s::jsonb WHERE id = %s",
            ['{"deep": ' + DEEP + "}", DEEP, ids[2]],
        )
    return user, ids


def history(client, user) -> str:
    response = client.get(reverse("admin:notifier_user_customer", args=[user.pk]))
    assert response.status_code == 200
    return response.content.decode()


def test_the_user_s_history_opens_with_messages_that_cannot_be_read(support_client, customer):
    user, ids = customer
    page = history(support_client, user)
    for pk in ids:
        assert f'id="message-{pk}"' in page
    assert "(unreadable)" in page  # the channels asked for, which do not decode


def test_once_prepared_the_history_says_why_the_unreadable_ones_were_not_sent(
    support_client, customer
):
    user, ids = customer
    prepare_messages(ids[1:])
    page = history(support_client, user)
    assert "This message could not be read: its expiry date is out of range" in page
    assert "This message could not be read: its context is nested too deeply to read" in page
    assert str(Reason.UNREADABLE.label) in page
    assert not Message.objects.filter(pk__in=ids, routed_at__isnull=True).exists()


def test_the_message_list_and_pages_open_and_say_what_could_not_be_read(support_client, customer):
    _, (fine, far_future, deep) = customer
    assert support_client.get(reverse("admin:notifier_message_changelist")).status_code == 200
    pages = {
        pk: support_client.get(reverse("admin:notifier_message_change", args=[pk]))
        for pk in (fine, far_future, deep)
    }
    assert {pk: page.status_code for pk, page in pages.items()} == dict.fromkeys(pages, 200)
    assert b"The context is nested too deeply to read" in pages[deep].content
    assert b"The list of channels is nested too deeply to read" in pages[deep].content
    assert b"The expiry date is out of range" in pages[far_future].content
    assert b"could not be read" not in pages[fine].content.lower()


def test_the_delivery_and_dead_letter_pages_open_for_the_unreadable_messages(
    support_client, customer
):
    _, ids = customer
    prepare_messages(ids[1:])
    for name in ("delivery", "deadletter"):
        assert support_client.get(reverse(f"admin:notifier_{name}_changelist")).status_code == 200
    failed = Delivery.objects.filter(message_id__in=ids[1:])
    assert failed.count() >= 3  # the channels asked for, or those routing tries first
    for delivery in failed:
        for name in ("delivery", "deadletter"):
            page = support_client.get(reverse(f"admin:notifier_{name}_change", args=[delivery.pk]))
            assert page.status_code == 200
            assert b"This message could not be read" in page.content
