"""The Topic admin's *Notify followers* page: a type and its context JSON, checked as
notify_topic checks them (bad input: form errors, nothing written), one send per form
submission, recorded in the topic's admin history; for staff with notifier.notify_topic."""

from __future__ import annotations

import json
import re
import uuid

import pytest
from django.contrib.admin.models import LogEntry
from django.contrib.auth.models import Group
from django.test import Client
from django.urls import reverse

from notifier.api import topic_subscribe
from notifier.models import Topic, TopicSend
from notifier.roles import roles_sync
from tests.factories import UserFactory

pytestmark = pytest.mark.django_db
FOLLOWER = {"follower_name": "Fan", "follower_url": "https://x.test/fan"}


def staff(role: str) -> Client:
    roles_sync()
    user = UserFactory(is_staff=True)
    user.groups.add(Group.objects.get(name=role))
    client = Client()
    client.force_login(user)
    return client


@pytest.fixture
def topic() -> Topic:
    topic_subscribe("card:42", UserFactory.create_batch(3))
    return Topic.objects.get(key="card:42")


def url(topic: Topic) -> str:
    return reverse("admin:notifier_topic_notify", args=[topic.pk])


def form_token(client: Client, topic: Topic) -> str:
    page = client.get(url(topic)).content.decode()
    found = re.search(r'name="token" value="([0-9a-f-]{36})"', page)
    assert found, "the form carries its token"
    return found.group(1)


def test_an_admin_notifies_the_followers_once_per_submission_and_it_is_logged(topic):
    client = staff("Admin")
    change_page = client.get(reverse("admin:notifier_topic_change", args=[topic.pk]))
    assert url(topic) in change_page.content.decode()
    token = form_token(client, topic)
    data = {"type": "social.new_follower", "context": json.dumps(FOLLOWER), "token": token}
    first = client.post(url(topic), data)
    again = client.post(url(topic), data)  # a double click, a reload
    send = TopicSend.objects.get()
    assert first.status_code == again.status_code == 302
    assert first["Location"] == reverse("admin:notifier_topicsend_change", args=[send.pk])
    assert (send.topic_id, send.type_id, send.context) == (
        topic.pk,
        "social.new_follower",
        FOLLOWER,
    )
    assert send.idempotency_key == f"admin-topic:{uuid.UUID(token).hex}"
    entry = LogEntry.objects.filter(object_id=str(topic.pk)).first()
    assert entry is not None and f"topic send {send.pk}" in entry.get_change_message()
    # Another submission of the form is another send.
    client.post(url(topic), {**data, "token": form_token(client, topic)})
    assert TopicSend.objects.count() == 2


@pytest.mark.parametrize(
    ("type_key", "context", "words"),
    [
        ("social.new_follower", "{not json", "This is not JSON"),
        ("social.new_follower", "[1, 2]", "Write a JSON object"),
        ("social.new_follower", "{}", "missing"),
        ("no.such.type", json.dumps(FOLLOWER), "Select a valid choice"),
        ("social.new_follower", '{"follower_name": NaN}', "This is not JSON"),
    ],
)
def test_bad_input_is_a_form_error_and_writes_nothing(topic, type_key, context, words):
    client = staff("Admin")
    response = client.post(
        url(topic), {"type": type_key, "context": context, "token": str(uuid.uuid4())}
    )
    assert response.status_code == 200
    assert words in response.content.decode()
    assert not TopicSend.objects.exists()
    assert not LogEntry.objects.exists()


@pytest.mark.parametrize("role", ["Support", "Marketer", "Marketing lead"])
def test_other_roles_cannot_notify_a_topic(topic, role):
    client = staff(role)
    data = {"type": "social.new_follower", "context": json.dumps(FOLLOWER), "token": uuid.uuid4()}
    assert client.post(url(topic), data).status_code == 403
    assert not TopicSend.objects.exists()
