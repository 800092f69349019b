"""Topic snoozes, on PostgreSQL: a person mutes a topic they follow for a day, a week or until
they unmute it; meanwhile what its sends hand out reaches their inbox only, with the reason
`topic_snoozed` on every other channel; from the service, the Python API, the service API, the
inbox JSON API and the inbox page."""

from __future__ import annotations

import json
import threading
import time
from datetime import timedelta

import pytest
import time_machine
from django.db import connection, transaction
from django.test import Client
from django.test.utils import CaptureQueriesContext
from django.urls import reverse
from django.utils import timezone

from notifier.api import (
    notify,
    notify_topic,
    topic_snooze,
    topic_subscribe,
    topic_unsnooze,
    topic_unsubscribe,
)
from notifier.models import (
    Delivery,
    Digest,
    InboxItem,
    Message,
    NotificationType,
    Topic,
    TopicSnooze,
)
from notifier.selectors import type_cache_clear
from notifier.services.digests import digests_flush
from notifier.services.pipeline import messages_prepare
from notifier.services.recipients import recipient_put
from notifier.services.release import held_release
from notifier.services.snoozes import (
    SnoozeError,
    UnknownSnoozeTopic,
    topic_snooze_lift,
    topic_snooze_set,
    topic_snoozes_list,
)
from notifier.services.topics import topic_send_walk
from notifier.status import DeliveryStatus, Reason
from tests.factories import DeviceFactory, UserFactory, order_context
from tests.notifier.http_api.test_recipients_api import app_token
from tests.notifier.http_api.test_service_api import token

pytestmark = pytest.mark.django_db
RENEWAL = {"plan": "Pro", "renews_on": "2027-01-01"}
TOPIC = "card:42"


def topic_send(topic: str = TOPIC, type_key: str = "subscription.renewal_reminder", context=None):
    """Notify the topic on in-app and email, walk it, route what it wrote; each follower's
    {channel: reason} by user id."""
    send = notify_topic(topic, type_key, context or RENEWAL, channels=["inapp", "email"])
    topic_send_walk(send_id=send.pk)
    ids = list(
        Message.objects.filter(idempotency_key__startswith=f"topic:{send.pk}:").values_list(
            "pk", flat=True
        )
    )
    messages_prepare(message_ids=ids)
    reasons: dict[object, dict[str, str]] = {}
    for user_id, channel, reason in Delivery.objects.filter(message_id__in=ids).values_list(
        "message__user_id", "channel", "reason"
    ):
        reasons.setdefault(user_id, {})[channel] = reason
    return reasons


def test_a_snoozed_topic_reaches_the_inbox_only_with_its_reason(published):
    snoozer, other = UserFactory(), UserFactory()
    topic_subscribe(TOPIC, [snoozer, other])
    state = topic_snooze_set(user_id=snoozer.pk, topic_key=TOPIC, length="day")
    assert state.until is not None
    reasons = topic_send()
    assert reasons[snoozer.pk] == {"inapp": "", "email": Reason.TOPIC_SNOOZED}
    assert reasons[other.pk] == {"inapp": "", "email": ""}
    assert InboxItem.objects.filter(user=snoozer).count() == 1
    # The same type sent to the person directly, not through the topic, is not muted.
    direct = notify(snoozer, "subscription.renewal_reminder", RENEWAL, channels=["email"])
    messages_prepare(message_ids=[direct.pk])
    assert Delivery.objects.get(message=direct).reason == ""


def test_a_topic_snooze_lifted_or_ended_lets_email_through_again(published):
    user = UserFactory()
    topic_subscribe(TOPIC, [user])
    topic_snooze_set(user_id=user.pk, topic_key=TOPIC, length="day")
    with time_machine.travel(timezone.now() + timedelta(days=1, minutes=1)):
        assert topic_send()[user.pk]["email"] == ""
        assert topic_snoozes_list(user_id=user.pk) == []
    topic_snooze_set(user_id=user.pk, topic_key=TOPIC, length="until_unmuted")
    with time_machine.travel(timezone.now() + timedelta(days=400)):
        assert topic_send()[user.pk]["email"] == Reason.TOPIC_SNOOZED
    assert topic_snooze_lift(user_id=user.pk, topic_key=TOPIC) is True
    assert topic_send()[user.pk]["email"] == ""
    assert topic_snooze_lift(user_id=user.pk, topic_key=TOPIC) is False


def test_support_sees_the_topic_and_the_reason_on_the_customer_page(published, admin_client):
    user = UserFactory()
    topic_subscribe(TOPIC, [user])
    topic_snooze_set(user_id=user.pk, topic_key=TOPIC, length="week")
    topic_send()
    page = admin_client.get(
        reverse("admin:notifier_user_customer", args=[user.pk])
    ).content.decode()
    assert f"Sent to the followers of topic <code>{TOPIC}</code>" in page
    assert Reason.TOPIC_SNOOZED.label in page


def test_a_transactional_type_sent_to_a_snoozed_topic_still_goes_everywhere(published):
    user = UserFactory()
    topic_subscribe(TOPIC, [user])
    topic_snooze_set(user_id=user.pk, topic_key=TOPIC, length="week")
    assert topic_send(type_key="order.shipped", context=order_context())[user.pk] == {
        "inapp": "",
        "email": "",
    }


def test_a_topic_message_held_before_the_snooze_is_checked_again_at_release(published):
    user = UserFactory()
    topic_subscribe(TOPIC, [user])
    send = notify_topic(TOPIC, "subscription.renewal_reminder", RENEWAL, channels=["email"])
    topic_send_walk(send_id=send.pk)
    later = timezone.now() + timedelta(hours=1)
    Message.objects.filter(topic__key=TOPIC).update(not_before=later)  # held until then
    (message,) = Message.objects.filter(topic__key=TOPIC)
    messages_prepare(message_ids=[message.pk])
    assert Delivery.objects.get(message=message).status == DeliveryStatus.HELD
    topic_snooze_set(user_id=user.pk, topic_key=TOPIC, length="week")
    with time_machine.travel(later + timedelta(minutes=1)):
        held_release()
    email = Delivery.objects.get(message=message)
    assert (email.status, email.reason) == (DeliveryStatus.SUPPRESSED, Reason.TOPIC_SNOOZED)


def test_a_snooze_of_another_topic_changes_nothing(published):
    user = UserFactory()
    DeviceFactory(user=user)
    topic_subscribe(TOPIC, [user])
    topic_subscribe("card:43", [user])
    topic_snooze_set(user_id=user.pk, topic_key="card:43", length="week")
    assert topic_send()[user.pk]["email"] == ""


def test_a_batch_looks_its_topic_snoozes_up_in_one_query(published):
    users = UserFactory.create_batch(6)
    topic_subscribe(TOPIC, users)
    for user in users[:3]:
        topic_snooze_set(user_id=user.pk, topic_key=TOPIC, length="week")
    send = notify_topic(TOPIC, "subscription.renewal_reminder", RENEWAL, channels=["email"])
    topic_send_walk(send_id=send.pk)
    ids = list(Message.objects.filter(topic__key=TOPIC).values_list("pk", flat=True))
    with CaptureQueriesContext(connection) as queries:
        messages_prepare(message_ids=ids)
    snooze_queries = [q for q in queries if "topicsnooze" in q["sql"]]
    assert len(snooze_queries) == 1
    reasons = dict(
        Delivery.objects.filter(message_id__in=ids).values_list("message__user", "reason")
    )
    assert sorted(r for r in reasons.values()) == ["", "", "", *[Reason.TOPIC_SNOOZED] * 3]


def test_a_message_of_a_topic_carries_it_and_others_carry_none(published):
    user = UserFactory()
    topic_subscribe(TOPIC, [user])
    topic_send()
    (from_topic,) = Message.objects.filter(user=user)
    assert from_topic.topic is not None and from_topic.topic.key == TOPIC
    direct = notify(user, "subscription.renewal_reminder", RENEWAL)
    assert Message.objects.get(pk=direct.pk).topic_id is None


def test_snoozing_again_replaces_the_first_and_the_python_api_says_the_same(published):
    user = UserFactory()
    topic_subscribe(TOPIC, [user])
    topic_snooze(TOPIC, user, length="week")
    topic_snooze(TOPIC, user, length="day")
    (only,) = topic_snoozes_list(user_id=user.pk)
    assert only.topic_key == TOPIC
    assert only.until is not None and only.until < timezone.now() + timedelta(days=2)
    assert TopicSnooze.objects.count() == 1
    assert topic_unsnooze(TOPIC, user) is True
    assert not TopicSnooze.objects.exists()


def test_unfollowing_a_topic_ends_its_snooze(published):
    user, other = UserFactory(), UserFactory()
    topic_subscribe(TOPIC, [user, other])
    for person in (user, other):
        topic_snooze_set(user_id=person.pk, topic_key=TOPIC, length="until_unmuted")
    topic_unsubscribe(TOPIC, [user])
    assert list(TopicSnooze.objects.values_list("user_id", flat=True)) == [other.pk]
    topic_subscribe(TOPIC, [user])  # following it again starts unmuted
    assert topic_send()[user.pk]["email"] == ""


@pytest.mark.parametrize(
    ("topic", "length", "words"),
    [
        ("card:43", "day", "not a topic they follow"),
        ("no:such", "day", "there is no topic"),
        (TOPIC, "month", "snooze for one of"),
        ("", "day", "topic must be"),
    ],
)
def test_a_topic_snooze_that_cannot_be_made_says_why(topic, length, words):
    user = UserFactory()
    topic_subscribe(TOPIC, [user])
    topic_subscribe("card:43", [UserFactory()])
    with pytest.raises(SnoozeError, match=words):
        topic_snooze_set(user_id=user.pk, topic_key=topic, length=length)
    assert not TopicSnooze.objects.exists()


# --- From the service API ------------------------------------------------------------------


def test_the_service_api_snoozes_a_topic_lists_and_unmutes():
    saved = recipient_put("cust-9", {"email": "nine@example.com"})
    topic_subscribe(TOPIC, [saved.recipient.user_id])
    client, auth = Client(), {"HTTP_AUTHORIZATION": f"Bearer {token('recipients')}"}
    url = "/api/v1/recipients/cust-9/topic-snoozes"
    response = client.put(
        f"{url}/{TOPIC}", data=json.dumps({"for": "week"}), content_type="application/json", **auth
    )
    assert response.status_code == 200, response.json()
    (snooze,) = response.json()["snoozes"]
    assert snooze["topic"] == TOPIC and snooze["until"]
    assert client.get(url, **auth).json()["snoozes"][0]["topic"] == TOPIC
    assert TopicSnooze.objects.get().user_id == saved.recipient.user_id
    refused = client.put(
        f"{url}/card:99", data=json.dumps({"for": "day"}), content_type="application/json", **auth
    )
    assert (refused.status_code, refused.json()["type"]) == (422, "UnknownSnoozeTopic")
    bad = client.put(
        f"{url}/{TOPIC}", data=json.dumps({"for": "ever"}), content_type="application/json", **auth
    )
    assert bad.status_code == 422
    assert client.delete(f"{url}/{TOPIC}", **auth).json() == {"snoozes": []}
    assert not TopicSnooze.objects.exists()


def test_a_persons_own_app_snoozes_their_topic_and_nobody_elses():
    mine = recipient_put("app-1", {}).recipient
    theirs = recipient_put("app-2", {}).recipient
    topic_subscribe(TOPIC, [mine.user_id, theirs.user_id])
    app = app_token("app-1")
    body = {"data": json.dumps({"for": "day"}), "content_type": "application/json"}
    auth = {"HTTP_AUTHORIZATION": f"Bearer {app}"}
    own = Client().put(f"/api/v1/recipients/app-1/topic-snoozes/{TOPIC}", **body, **auth)
    assert own.status_code == 200, own.json()
    other = Client().put(f"/api/v1/recipients/app-2/topic-snoozes/{TOPIC}", **body, **auth)
    assert other.status_code == 403
    assert list(TopicSnooze.objects.values_list("user_id", flat=True)) == [mine.user_id]


# --- From the inbox ---------------------------------------------------------------------------


def logged_in(user) -> Client:
    client = Client()
    client.force_login(user)
    return client


def test_the_inbox_api_names_the_topic_snoozes_it_and_lifts_it(published):
    user = UserFactory()
    topic_subscribe(TOPIC, [user])
    topic_send()
    direct = notify(user, "subscription.renewal_reminder", RENEWAL, channels=["inapp"])
    messages_prepare(message_ids=[direct.pk])
    client = logged_in(user)
    items = {i["id"]: i for i in client.get(reverse("notifier:inbox-list")).json()["items"]}
    from_topic = InboxItem.objects.get(user=user, message__topic__isnull=False)
    plain = InboxItem.objects.get(message=direct)
    assert (items[from_topic.pk]["topic"], items[plain.pk]["topic"]) == (TOPIC, None)
    response = client.post(
        reverse("notifier:inbox-snooze-topic", args=[from_topic.pk]),
        data=json.dumps({"for": "day"}),
        content_type="application/json",
    )
    assert response.status_code == 200
    assert response.json()["topic"] == TOPIC
    listed = client.get(reverse("notifier:inbox-topic-snoozes")).json()["snoozes"]
    assert [s["topic"] for s in listed] == [TOPIC]
    refused = client.post(
        reverse("notifier:inbox-snooze-topic", args=[plain.pk]),
        data=json.dumps({"for": "day"}),
        content_type="application/json",
    )
    assert refused.status_code == 422
    stranger = logged_in(UserFactory()).post(
        reverse("notifier:inbox-snooze-topic", args=[from_topic.pk]),
        data=json.dumps({"for": "day"}),
        content_type="application/json",
    )
    assert stranger.status_code == 404
    lifted = client.post(reverse("notifier:inbox-topic-snooze-lift", args=[TOPIC]))
    assert lifted.json() == {"lifted": True}
    assert not TopicSnooze.objects.exists()


def test_the_inbox_page_offers_a_topic_snooze_on_items_from_a_topic_and_makes_it(published):
    user = UserFactory()
    topic_subscribe(TOPIC, [user])
    topic_send()
    direct = notify(user, "subscription.renewal_reminder", RENEWAL, channels=["inapp"])
    messages_prepare(message_ids=[direct.pk])
    client = logged_in(user)
    html = client.get(reverse("notifier:inbox-page")).content.decode()
    from_topic = InboxItem.objects.get(user=user, message__topic__isnull=False)
    plain = InboxItem.objects.get(message=direct)

    def topic_button(item_id: int) -> str:
        start = html.index(f'data-id="{item_id}"')
        chunk = html[start : html.index("</li>", start)]
        return chunk[chunk.index('value="snooze-topic"') :].split(">", 1)[0]

    assert "hidden" not in topic_button(from_topic.pk)
    assert "hidden" in topic_button(plain.pk)
    response = client.post(
        reverse("notifier:inbox-page"),
        {"action": "snooze-topic", "item": from_topic.pk, "cursor": ""},
    )
    assert response.status_code == 303
    snooze = TopicSnooze.objects.get(user=user)
    assert snooze.topic.key == TOPIC and snooze.until is not None
    refused = client.post(
        reverse("notifier:inbox-page"), {"action": "snooze-topic", "item": plain.pk, "cursor": ""}
    )
    assert refused.status_code == 400
    assert "did not come from a topic" in refused.content.decode()


def test_lifting_needs_no_valid_topic_but_a_key(published):
    with pytest.raises(UnknownSnoozeTopic):
        topic_snooze_lift(user_id=UserFactory().pk, topic_key="")


COMMENT = {
    "commenter_name": "Ana",
    "post_title": "My trip",
    "excerpt": "hi",
    "comment_url": "https://x.test/1",
}


def comment_sends(topic: str, times: int) -> list[int]:
    """Notify the topic of social.new_comment (a digesting type) `times`, walk and route."""
    written = []
    for _ in range(times):
        send = notify_topic(topic, "social.new_comment", COMMENT, channels=["inapp", "push"])
        topic_send_walk(send_id=send.pk)
        ids = list(
            Message.objects.filter(idempotency_key__startswith=f"topic:{send.pk}:").values_list(
                "pk", flat=True
            )
        )
        messages_prepare(message_ids=ids)
        written += ids
    return written


@pytest.fixture
def collected_at_once(published):
    """social.new_comment collects every message (its first too) until the window ends."""
    NotificationType.objects.filter(pk="social.new_comment").update(digest_first_now=False)
    type_cache_clear()
    yield
    NotificationType.objects.filter(pk="social.new_comment").update(digest_first_now=True)
    type_cache_clear()


def test_a_digest_of_a_snoozed_topics_messages_reaches_the_inbox_only(collected_at_once):
    snoozer, other = UserFactory(), UserFactory()
    for person in (snoozer, other):
        DeviceFactory(user=person)
    topic_subscribe(TOPIC, [snoozer, other])
    topic_snooze_set(user_id=snoozer.pk, topic_key=TOPIC, length="week")
    comment_sends(TOPIC, 2)
    reasons = {}
    for person in (snoozer, other):
        digest = Digest.objects.get(user=person)
        digests_flush(now=digest.due_at)
        digest.refresh_from_db()
        assert digest.count == 2
        messages_prepare(message_ids=[digest.message_id])
        reasons[person.pk] = dict(
            Delivery.objects.filter(message_id=digest.message_id).values_list("channel", "reason")
        )
    assert reasons[snoozer.pk] == {"inapp": "", "push": Reason.TOPIC_SNOOZED}
    assert reasons[other.pk] == {"inapp": "", "push": ""}


def test_a_persons_messages_of_two_topics_make_two_digests(collected_at_once):
    user = UserFactory()
    DeviceFactory(user=user)
    topic_subscribe(TOPIC, [user])
    topic_subscribe("card:43", [user])
    topic_snooze_set(user_id=user.pk, topic_key=TOPIC, length="week")
    comment_sends(TOPIC, 2)
    comment_sends("card:43", 1)
    digests = {d.key: d for d in Digest.objects.filter(user=user)}
    topics = dict(Topic.objects.values_list("key", "pk"))
    assert {key: d.count for key, d in digests.items()} == {
        f"topic:{topics[TOPIC]}": 2,
        f"topic:{topics['card:43']}": 1,
    }
    for digest in digests.values():
        digests_flush(now=digest.due_at)
        digest.refresh_from_db()
        messages_prepare(message_ids=[digest.message_id])
    pushed = dict(
        Delivery.objects.filter(message__digest__user=user, channel="push")
        .exclude(message__digest_id=None)
        .values_list("message__topic__key", "reason")
    )
    assert pushed == {TOPIC: Reason.TOPIC_SNOOZED, "card:43": ""}


def _run_while_held(hold, then) -> list[BaseException]:
    """Run `hold` in a transaction on one connection and, while it is open, `then` on another;
    commit `hold` once `then` is done or waits on a row lock (polled, with a deadline)."""
    errors: list[BaseException] = []
    held, done = threading.Event(), threading.Event()

    def first() -> None:
        try:
            with transaction.atomic():
                hold()
                held.set()
                deadline = time.monotonic() + 10
                while not done.is_set() and time.monotonic() < deadline:
                    with connection.cursor() as cursor:
                        cursor.execute(
                            "SELECT count(*) FROM pg_stat_activity WHERE wait_event_type = 'Lock'"
                            " AND datname = current_database()"
                        )
                        if cursor.fetchone()[0]:
                            break
                    time.sleep(0.02)
        except BaseException as exc:
            errors.append(exc)
        finally:
            held.set()
            connection.close()

    def second() -> None:
        try:
            held.wait(10)
            then()
        except BaseException as exc:
            errors.append(exc)
        finally:
            done.set()
            connection.close()

    threads = [threading.Thread(target=first), threading.Thread(target=second)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(20)
    return errors


def test_a_snooze_made_while_unfollowing_is_refused(transactional_db):
    user = UserFactory()
    topic_subscribe(TOPIC, [user])
    errors = _run_while_held(
        lambda: topic_unsubscribe(TOPIC, [user]),
        lambda: topic_snooze_set(user_id=user.pk, topic_key=TOPIC, length="week"),
    )
    assert [type(error) for error in errors] == [UnknownSnoozeTopic]
    assert not TopicSnooze.objects.exists()


def test_unfollowing_while_a_snooze_is_made_ends_it(transactional_db):
    user = UserFactory()
    topic_subscribe(TOPIC, [user])
    errors = _run_while_held(
        lambda: topic_snooze_set(user_id=user.pk, topic_key=TOPIC, length="week"),
        lambda: topic_unsubscribe(TOPIC, [user]),
    )
    assert not errors
    assert not TopicSnooze.objects.exists()
