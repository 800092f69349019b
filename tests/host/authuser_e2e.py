"""A product on Django's own `auth.User` sends through Notifier: a view's notify(request.user)
is prepared and delivered (in this process: every task the pipeline publishes is run here) to
the inbox, the email and the SMS sandboxes. Run by tests/test_host_authuser.py in a pytest
process of its own on tests.host.settings_authuser."""

from __future__ import annotations

from typing import Any

import pytest
from django.contrib.auth.models import User
from django.test import Client

from channels.models import SandboxSend
from notifier import dispatch
from notifier.models import Delivery, InboxItem, recipient_update
from notifier.tasks import deliver, prepare_messages

pytestmark = pytest.mark.django_db(transaction=True)


def test_notify_from_a_view_reaches_a_django_auth_user(monkeypatch):
    published: list[tuple[str, list[int]]] = []

    def publish(task_name: str, *, args: Any, **options: Any) -> None:
        published.append((task_name, list(args[0])))

    monkeypatch.setattr(dispatch, "publish", publish)
    kim = User.objects.create_user("kim", "kim@example.com", "a-long-password")
    recipient_update(kim, phone="+8613800138000", time_zone="UTC", quiet_hours_enabled=False)
    client = Client()
    client.force_login(kim)

    response = client.post("/shop/orders/K1/ship/")

    assert response.status_code == 200, response.content
    message_id = response.json()["message"]
    tasks = {dispatch.PREPARE_TASK: prepare_messages, dispatch.DELIVER_TASK: deliver}
    while published:  # the worker's part, here: each task the pipeline publishes, in order
        name, ids = published.pop(0)
        tasks[name](ids)
    statuses = dict(Delivery.objects.filter(message_id=message_id).values_list("channel", "status"))
    # Every channel of the type: push has no device to go to.
    assert statuses == {"inapp": "sent", "email": "sent", "sms": "sent", "push": "suppressed"}
    assert InboxItem.objects.get(message_id=message_id).user_id == kim.pk
    sent = dict(
        SandboxSend.objects.filter(message_id=message_id, outcome="sent").values_list(
            "channel", "recipient"
        )
    )
    assert sent == {"email": "kim@example.com", "sms": "+8613800138000"}
