"""Sentry: personal data is scrubbed before sending; periodic jobs check in as crons."""

from __future__ import annotations

import json

import pytest
import sentry_sdk
from celery.schedules import crontab

from channels.sandbox import SandboxEmailProvider
from notifier.api import notify
from notifier.logcontext import bound
from notifier.models import Delivery
from notifier.operations.observability import FILTERED, monitor_config, scrub, scrub_text
from notifier.periodic import BEAT_SCHEDULE
from notifier.services.deliveries import deliveries_deliver
from notifier.services.pipeline import messages_prepare
from notifier.tasks import requeue_stuck_work_task
from tests.factories import UserFactory, order_context

EMAIL = "sam.secret@example.com"
PHONE = "+14155550123"
BODY = "Your parcel A1001 with the diamond ring is on its way"


# --- Pure scrubbing ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "kept", "gone"),
    [
        (f"could not reach {EMAIL}", "could not reach [email]", EMAIL),
        (f"sms to {PHONE} refused", "sms to [phone] refused", PHONE),
        ("sms to +44 20 7946 0958 refused", "sms to [phone] refused", "7946"),
        (
            "GET https://x.test/unsubscribe/eyJ1IjoxfQ:1tB2:abc/ 200",
            "/unsubscribe/[token]/",
            "eyJ1IjoxfQ",
        ),
        ("https://api.test/send?token=s3cr3t&x=1", "token=[Filtered]&x=1", "s3cr3t"),
        ("push to " + "fcm:" + "A" * 60, "push to [token]", "A" * 60),
        # Notifier's own secrets, short or not: an API key, an app token, a signing secret.
        ("key ntf_abc123def456_Zx9 refused", "key [token] refused", "Zx9"),
        ("app ntr_.eJyrVkrOL0pVslIqTs0rAQAZ:1vR:Ab-C denied", "app [token] denied", "eJyrV"),
        ("signing with whsec_MfKQ9r8GKYqrTwjUPD8ILPZI=", "signing with [token]", "MfKQ9"),
        (
            "Outgoing(delivery_id=7, body='secret words, and more', email='x@y.zz', attempt=1)",
            "Outgoing(delivery_id=7, body=[Filtered], email=[Filtered], attempt=1)",
            "secret words",
        ),
        (
            "{'subject': 'Hi {name}', 'context': {'coupon': 'X1', 'n': [1, 2]}, 'channel': 'sms'}",
            "{'subject': [Filtered], 'context': [Filtered], 'channel': 'sms'}",
            "coupon",
        ),
    ],
)
def test_scrub_text_removes_personal_data(text, kept, gone):
    scrubbed = scrub_text(text)
    assert kept in scrubbed
    assert gone not in scrubbed


def test_scrub_text_leaves_ordinary_text_alone():
    text = "deliver task 3f2a9c0e1b7d4e6f8a9b0c1d2e3f4a5b took 2026-11-22 06:14:10+00:00 (ok)"
    assert scrub_text(text) == text


def test_scrub_filters_denylisted_keys_at_any_depth_and_keeps_structure():
    event = {
        "extra": {"payload": {"email": EMAIL, "channel": "email", "context": {"a": 1}}},
        "exception": {"values": [{"type": "RuntimeError", "value": f"bad {EMAIL}"}]},
    }
    assert scrub(event) == {
        "extra": {"payload": {"email": FILTERED, "channel": "email", "context": FILTERED}},
        "exception": {"values": [{"type": "RuntimeError", "value": "bad [email]"}]},
    }


# --- A real code path, through sentry_sdk -----------------------------------------------------


def without_source(event: dict) -> dict:
    """The event without the source lines of its frames (this file's code holds the secrets)."""
    for exception in event.get("exception", {}).get("values", []):
        for frame in exception.get("stacktrace", {}).get("frames", []):
            for source in ("pre_context", "context_line", "post_context"):
                frame.pop(source, None)
    return event


@pytest.mark.django_db
def test_a_provider_crash_arrives_scrubbed(sentry, monkeypatch, published):
    """deliveries_deliver -> send_each -> the provider raises -> log.exception -> a Sentry event
    with the exception message, the frames' locals and an extra: none of them may carry the
    recipient's address, phone or the message's words."""

    def crash(self, outgoings):
        first = next(iter(outgoings))  # a gateway quoting back what it was given
        raise RuntimeError(f"gateway refused {first.email} / {PHONE}: {first.content.body!r}")
        yield  # a generator, like the real one

    monkeypatch.setattr(SandboxEmailProvider, "send_each", crash)
    user = UserFactory(email=EMAIL, phone=PHONE)
    message = notify(
        user,
        "order.shipped",
        order_context(tracking_url="https://t.test/?token=abc123"),
        channels=["email"],
    )
    messages_prepare(message_ids=[message.pk])
    delivery = Delivery.objects.get(message=message)
    body = delivery.content["body"]
    assert "A1001" in body
    sentry_sdk.set_extra("notification", {"email": EMAIL, "body": BODY, "channel": "email"})
    with bound(request_id="req-42", delivery_id=delivery.pk):  # as in its deliver task
        deliveries_deliver(delivery_ids=[delivery.pk])
    sentry_sdk.flush()

    events = sentry.events()
    assert len(events) == 1
    event = events[0]
    sent = json.dumps(without_source(event))
    lines = [line for line in body.splitlines() if line.strip()]
    for secret in (EMAIL, PHONE, body, *lines, BODY, "A1001", "abc123"):
        assert secret not in sent, secret
    # The event is still useful: what failed, where, with which ids.
    exception = event["exception"]["values"][-1]
    assert exception["type"] == "RuntimeError"
    assert "gateway refused [Filtered] / [phone]: '[Filtered]" in exception["value"]
    frames = exception["stacktrace"]["frames"]
    call = next(f for f in frames if f["function"] == "_send_each_recorded")
    given = json.dumps(call["vars"]["pairs"])  # what the provider was handed, scrubbed
    assert FILTERED in given and EMAIL not in given and "A1001" not in given
    assert event["extra"]["notification"] == {
        "email": FILTERED,
        "body": FILTERED,
        "channel": "email",
    }
    assert event["tags"]["request_id"] == "req-42"
    assert event["tags"]["delivery_id"] == str(delivery.pk)


# --- Cron check-ins -----------------------------------------------------------------------------


def test_monitor_config_from_the_schedule():
    assert monitor_config(BEAT_SCHEDULE["requeue-stuck-work"]) == {
        "schedule": {"type": "interval", "value": 1, "unit": "minute"},
        "checkin_margin": 1,
        "max_runtime": 1,
        "timezone": "UTC",
    }
    # Sentry counts in minutes: a 15 s job is watched as "every minute".
    assert monitor_config(BEAT_SCHEDULE["release-held"])["schedule"]["value"] == 1
    assert monitor_config(BEAT_SCHEDULE["campaign-triggers"])["schedule"]["value"] == 5
    assert monitor_config(BEAT_SCHEDULE["campaign-triggers"])["checkin_margin"] == 2
    nightly = monitor_config(BEAT_SCHEDULE["learn-active-hours"])
    assert nightly["schedule"] == {"type": "crontab", "value": "30 3 * * *"}
    assert (nightly["checkin_margin"], nightly["max_runtime"]) == (30, 60)
    assert monitor_config({"schedule": crontab(minute="*/10")})["schedule"]["value"] == (
        "*/10 * * * *"
    )


@pytest.mark.django_db
def test_a_periodic_job_checks_in_progress_then_ok(sentry):
    requeue_stuck_work_task.apply()
    sentry_sdk.flush()
    checkins = sentry.checkins()
    assert [(c["monitor_slug"], c["status"]) for c in checkins] == [
        ("requeue-stuck-work", "in_progress"),
        ("requeue-stuck-work", "ok"),
    ]
    assert checkins[0]["check_in_id"] == checkins[1]["check_in_id"]
    assert checkins[1]["duration"] >= 0
    assert checkins[0]["monitor_config"]["schedule"] == {
        "type": "interval",
        "value": 1,
        "unit": "minute",
    }


@pytest.mark.django_db
def test_a_periodic_job_that_raises_checks_in_error(sentry, monkeypatch):
    def broken(**_):
        raise RuntimeError("database went away")

    monkeypatch.setattr("notifier.tasks.requeue_stuck_work", broken)
    requeue_stuck_work_task.apply()
    sentry_sdk.flush()
    assert [c["status"] for c in sentry.checkins()] == ["in_progress", "error"]


def test_an_ordinary_task_does_not_check_in(sentry):
    from notifier.operations.observability import checkin_started

    checkin_started("t-1", "notifier.deliver")
    assert sentry.checkins() == []


def test_known_values_are_worked_out_only_when_something_is_scrubbed():
    from notifier.operations.observability import personal_values

    calls = []

    def values():
        calls.append(1)
        return ["Flash sale: 50% off shoes until Sunday\nSee you soon, Ada"]

    with personal_values(values):
        assert calls == []  # sending costs nothing while Sentry has nothing to send
        assert scrub_text("refused 'See you soon, Ada'") == "refused '[Filtered]'"
        assert scrub_text("Flash sale: 50% off shoes until Sunday") == FILTERED
        assert calls == [1]  # once per block
    assert scrub_text("See you soon, Ada") == "See you soon, Ada"


@pytest.mark.django_db
def test_a_web_request_crash_arrives_with_its_link_token_and_form_scrubbed(sentry, monkeypatch):
    """The Django integration's event of a failing page: the signed token in the URL, the
    query string and the posted form stay out; the request id from the middleware is on it."""
    from django.test import Client

    def broken(token):
        raise RuntimeError(f"cannot read link token {token}")

    monkeypatch.setattr("notifier.pages.preferences._unsubscribe_claim", broken)
    token = "eyJ1IjoxMjMsImMiOiJwcm9tbyJ9:1tBzXy:Qm9uam91ci1zZWNyZXQ"
    client = Client(raise_request_exception=False)
    response = client.post(
        f"/unsubscribe/{token}/?email={EMAIL}&sig=abc123def",
        {"scope": "all", "email": EMAIL},
        HTTP_X_REQUEST_ID="req-web-1",
    )
    assert response.status_code == 500
    sentry_sdk.flush()
    (event,) = sentry.events()
    sent = json.dumps(without_source(event))
    for secret in (token, "eyJ1IjoxMjMs", EMAIL, "abc123def"):
        assert secret not in sent, secret
    assert event["transaction"] == "/unsubscribe/{token}/"  # the route, not the link
    assert event["tags"]["request_id"] == "req-web-1"
    assert event["exception"]["values"][-1]["value"] == "cannot read link token [token]"


def test_a_job_that_runs_every_15_seconds_checks_in_once_a_minute():
    from notifier.cooldowns import cooldown_reset
    from notifier.operations.observability import checkin_finished, checkin_started

    cooldown_reset()
    sent: list[tuple[str, str]] = []

    def capture(**checkin):
        sent.append((checkin["monitor_slug"], checkin["status"]))
        return "id-1"

    for run in ("a", "b", "c"):  # three runs within the minute
        checkin_started(run, "notifier.release_held", capture=capture)
        checkin_finished(run, ok=True, capture=capture)
    cooldown_reset()
    assert sent == [("release-held", "in_progress"), ("release-held", "ok")]
