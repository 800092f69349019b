"""Posting the outbox to a real HTTP receiver on loopback that verifies every signature with the
`standardwebhooks` package: shapes, batches, retries under the same webhook-id, claims that a
second run cannot take, giving up, disabling a failing endpoint with an alert, the sweep."""

from __future__ import annotations

import logging
import socket
import threading
from collections.abc import Iterator
from datetime import timedelta

import pytest
from django.utils import timezone

from notifier.events_out import record, sending
from notifier.events_out.sending import (
    InvalidEndpoint,
    endpoint_create,
    endpoint_enable,
    endpoint_rotate_secret,
    endpoint_test_event,
    webhooks_send,
    webhooks_sweep,
)
from notifier.models import WebhookAttempt, WebhookEndpoint, WebhookEvent
from notifier.policies.webhooks import after_failure, endpoint_disable, url_problem
from tests.notifier.events_out.receiver import Receiver, receiver_running

pytestmark = pytest.mark.django_db(transaction=True)


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    with receiver_running(Receiver()) as running:
        yield running


@pytest.fixture
def woken(monkeypatch) -> list[tuple[int, float]]:
    published: list[tuple[int, float]] = []
    monkeypatch.setattr(record, "state_client", lambda: None)
    monkeypatch.setattr(
        record,
        "sender_publish",
        lambda endpoint_id, countdown=0.0: published.append((endpoint_id, countdown)),
    )
    return published


def hook(receiver: Receiver, *, max_batch: int = 100, types=("webhook.test",)) -> WebhookEndpoint:
    made = endpoint_create(
        name="crm",
        url=receiver.url,
        event_types=["message.created", "delivery.sent"],
        max_batch=max_batch,
    )
    receiver.secret = made.secret
    return made


def events_for(endpoint: WebhookEndpoint, count: int, *, at=None) -> list[WebhookEvent]:
    now = at or timezone.now()
    return [
        WebhookEvent.objects.create(
            endpoint=endpoint,
            type="delivery.sent",
            at=now,
            data={"delivery_id": n, "status": "sent"},
            created_at=now,
            next_attempt_at=now,
        )
        for n in range(count)
    ]


def test_a_single_event_endpoint_gets_each_event_alone_signed(receiver, woken):
    endpoint = hook(receiver, max_batch=1)
    events = events_for(endpoint, 3)
    report = webhooks_send(endpoint_id=endpoint.pk)
    assert (report.requests, report.sent) == (3, 3)
    assert receiver.refused == []
    bodies = [r.body for r in receiver.accepted().values()]
    assert sorted(b["id"] for b in bodies) == sorted(f"evt_{e.pk}" for e in events)
    assert set(bodies[0]) == {"id", "type", "timestamp", "data"}
    assert bodies[0]["type"] == "delivery.sent"
    assert set(WebhookEvent.objects.values_list("state", flat=True)) == {"sent"}
    attempts = list(WebhookAttempt.objects.filter(endpoint=endpoint))
    assert len(attempts) == 3 and all(a.ok and a.status_code == 200 for a in attempts)


def test_a_batching_endpoint_gets_up_to_max_batch_per_request(receiver, woken):
    endpoint = hook(receiver, max_batch=4)
    events_for(endpoint, 10)
    report = webhooks_send(endpoint_id=endpoint.pk)
    assert (report.requests, report.sent) == (3, 10)  # 4 + 4 + 2: three calls, not ten
    sizes = sorted(len(r.events) for r in receiver.accepted().values())
    assert sizes == [2, 4, 4]
    first = next(iter(receiver.accepted().values())).body
    assert first["type"] == "batch" and set(first) == {"type", "timestamp", "data"}
    # Within a batch, events keep their order (oldest first) and their own ids.
    ids = [int(e["id"][4:]) for r in receiver.accepted().values() for e in r.events]
    assert sorted(ids) == sorted(set(ids))


def test_a_failed_batch_is_retried_whole_under_the_same_webhook_id(receiver, woken, settings):
    settings.NOTIFIER_WEBHOOK_RETRY_BASE_S = 0.01
    settings.NOTIFIER_WEBHOOK_RETRY_MAX_S = 0.01
    endpoint = hook(receiver, max_batch=3)
    events_for(endpoint, 3)
    receiver.failures_left = 1
    first = webhooks_send(endpoint_id=endpoint.pk)
    assert (first.requests, first.sent, first.failed_requests) == (1, 0, 1)
    assert woken and woken[-1][1] <= 1  # a retry published with its countdown
    batch = set(WebhookEvent.objects.values_list("batch", flat=True))
    assert len(batch) == 1 and WebhookEvent.objects.filter(attempts=1, state="pending").count() == 3
    # Due again: the same three events, the same webhook-id.
    WebhookEvent.objects.update(next_attempt_at=timezone.now())
    events_for(endpoint, 1)  # a newcomer waits for the next request
    second = webhooks_send(endpoint_id=endpoint.pk)
    assert second.sent == 4
    accepted = receiver.accepted()
    assert batch <= set(accepted) and len(accepted[batch.pop()].events) == 3
    failed, ok = WebhookAttempt.objects.filter(endpoint=endpoint).order_by("at", "pk")[:2]
    assert (failed.status_code, failed.ok, failed.error) == (500, False, "HTTP 500")
    assert failed.webhook_id == ok.webhook_id and ok.ok
    endpoint.refresh_from_db()
    assert endpoint.consecutive_failures == 0 and endpoint.failing_since is None


def test_an_event_answered_2xx_is_never_sent_again(receiver, woken):
    endpoint = hook(receiver)
    events_for(endpoint, 5)
    webhooks_send(endpoint_id=endpoint.pk)
    again = webhooks_send(endpoint_id=endpoint.pk)  # the task ran twice
    assert again.requests == 0
    assert len(receiver.requests) == 1


def test_events_claimed_by_a_live_run_are_not_taken_by_another(receiver, woken):
    endpoint = hook(receiver)
    events_for(endpoint, 2)
    _, claim = sending._claim(endpoint.pk, now=timezone.now())  # a run mid-request
    assert claim is not None and len(claim.events) == 2
    assert webhooks_send(endpoint_id=endpoint.pk).requests == 0
    # The first run dies; once its lease runs out, the events go, under the same webhook-id.
    WebhookEvent.objects.update(claimed_until=timezone.now() - timedelta(seconds=1))
    assert webhooks_send(endpoint_id=endpoint.pk).sent == 2
    assert list(receiver.accepted()) == [claim.batch]


def test_events_are_given_up_after_the_retry_period(receiver, woken, settings):
    settings.NOTIFIER_WEBHOOK_RETRY_FOR_S = 60
    endpoint = hook(receiver)
    events_for(endpoint, 2, at=timezone.now() - timedelta(seconds=120))
    receiver.status = 503
    report = webhooks_send(endpoint_id=endpoint.pk)
    assert report.given_up == 2
    event = WebhookEvent.objects.first()
    assert event is not None and event.state == "failed"
    assert event.last_error.startswith("HTTP 503; given up after 1 attempts")


def test_an_endpoint_that_keeps_failing_is_disabled_with_an_alert(
    receiver, woken, settings, caplog
):
    settings.NOTIFIER_WEBHOOK_DISABLE_AFTER_S = 3600
    settings.NOTIFIER_WEBHOOK_DISABLE_AFTER_FAILURES = 3
    endpoint = hook(receiver)
    events_for(endpoint, 1)
    receiver.status = 500
    for _ in range(3):
        WebhookEvent.objects.update(next_attempt_at=timezone.now())
        webhooks_send(endpoint_id=endpoint.pk)
    endpoint.refresh_from_db()
    assert endpoint.active and endpoint.consecutive_failures == 3  # not yet an hour of it
    WebhookEndpoint.objects.filter(pk=endpoint.pk).update(
        failing_since=timezone.now() - timedelta(hours=2)
    )
    WebhookEvent.objects.update(next_attempt_at=timezone.now())
    with caplog.at_level(logging.WARNING):
        report = webhooks_send(endpoint_id=endpoint.pk)
    assert report.disabled
    endpoint.refresh_from_db()
    assert not endpoint.active and endpoint.disabled_at is not None
    assert "every request failed for 2 hours (4 in a row)" in endpoint.disabled_reason
    alerts = [r for r in caplog.records if getattr(r, "alert", "") == "webhook_endpoint_disabled"]
    assert len(alerts) == 1 and "crm" in alerts[0].getMessage()
    # Disabled: new events are not written for it, and a send run does nothing.
    assert record.endpoints_wanting("delivery.sent") == ()
    WebhookEvent.objects.update(next_attempt_at=timezone.now())
    assert webhooks_send(endpoint_id=endpoint.pk).requests == 0
    # Fixed and re-enabled: what waited goes out.
    receiver.status = 200
    assert endpoint_enable(endpoint=endpoint)
    assert webhooks_send(endpoint_id=endpoint.pk).sent == 1
    endpoint.refresh_from_db()
    assert endpoint.active and endpoint.consecutive_failures == 0


def test_the_sweep_wakes_only_endpoints_with_due_unclaimed_events(receiver, woken):
    due, later, idle = (hook(receiver) for _ in range(3))
    events_for(due, 1)
    [event] = events_for(later, 1)
    WebhookEvent.objects.filter(pk=event.pk).update(
        next_attempt_at=timezone.now() + timedelta(minutes=5)
    )
    woken.clear()
    assert webhooks_sweep() == [due.pk]
    assert woken == [(due.pk, 0.0)]
    assert idle.pk not in [pk for pk, _ in woken]


def test_a_test_event_and_a_rotated_secret(receiver, woken):
    endpoint = hook(receiver, max_batch=1)
    old = endpoint.secret
    receiver.secret = endpoint_rotate_secret(endpoint=endpoint)
    assert receiver.secret != old and receiver.secret.startswith("whsec_")
    endpoint_test_event(endpoint=endpoint)
    assert webhooks_send(endpoint_id=endpoint.pk).sent == 1
    [request] = receiver.accepted().values()
    assert request.body["type"] == "webhook.test" and receiver.refused == []


def test_a_redirect_is_a_failure_not_followed(receiver, woken):
    endpoint = hook(receiver)
    events_for(endpoint, 1)
    receiver.status = 302
    report = webhooks_send(endpoint_id=endpoint.pk)
    assert report.failed_requests == 1
    assert WebhookAttempt.objects.get().status_code == 302


def test_an_unreachable_endpoint_is_a_failed_attempt_with_its_error(woken, settings):
    settings.NOTIFIER_WEBHOOK_TIMEOUT_S = 1
    endpoint = endpoint_create(
        name="gone", url="http://127.0.0.1:9/hooks", event_types=["delivery.sent"]
    )
    events_for(endpoint, 1)
    webhooks_send(endpoint_id=endpoint.pk)
    attempt = WebhookAttempt.objects.get()
    assert attempt.status_code is None and "ConnectionRefused" in attempt.error


def test_bad_endpoint_settings_are_refused_with_what_to_fix():
    with pytest.raises(InvalidEndpoint, match="only http:// and https://"):
        endpoint_create(name="x", url="ftp://example.com/x", event_types=["delivery.sent"])
    with pytest.raises(InvalidEndpoint, match="no credentials"):
        endpoint_create(name="x", url="https://u:p@example.com/", event_types=["delivery.sent"])
    with pytest.raises(InvalidEndpoint, match="choose event types"):
        endpoint_create(name="x", url="https://example.com/", event_types=["delivery.nope"])
    with pytest.raises(InvalidEndpoint, match="max_batch"):
        endpoint_create(
            name="x", url="https://example.com/", event_types=["delivery.sent"], max_batch=0
        )
    assert not WebhookEndpoint.objects.exists()


def test_old_answered_events_and_attempts_are_pruned(receiver, woken, settings):
    settings.NOTIFIER_WEBHOOK_KEEP_DAYS = 7
    endpoint = hook(receiver)
    old = timezone.now() - timedelta(days=8)
    events_for(endpoint, 3, at=old)
    webhooks_send(endpoint_id=endpoint.pk)
    WebhookEvent.objects.update(created_at=old)
    WebhookAttempt.objects.update(at=old)
    [waiting] = events_for(endpoint, 1, at=old)  # never answered: kept, whatever its age
    WebhookEvent.objects.filter(pk=waiting.pk).update(next_attempt_at=timezone.now() + timedelta(1))
    assert sending.webhooks_prune(batch=2) == 4
    assert list(WebhookEvent.objects.values_list("pk", flat=True)) == [waiting.pk]
    assert not WebhookAttempt.objects.exists()


# --- The policies, pure -------------------------------------------------------------------------


def test_retries_back_off_with_jitter_within_the_retry_period():
    import random

    now = timezone.now()
    delays = [
        (
            after_failure(
                attempt=n,
                first_at=now,
                now=now,
                retry_for_s=10_000,
                base_s=5,
                max_s=3600,
                rng=random.Random(n),
            ).at
            - now
        ).total_seconds()
        for n in range(1, 8)
    ]
    for n, delay in enumerate(delays, start=1):
        step = min(3600, 5 * 2 ** (n - 1))
        assert step / 2 <= delay <= step
    late = after_failure(
        attempt=9,
        first_at=now - timedelta(days=3),
        now=now,
        retry_for_s=3 * 86400,
        base_s=5,
        max_s=3600,
    )
    assert late.at is None and "given up after 9 attempts over 3 days" in late.reason


def test_disabling_needs_both_time_and_a_run_of_failures():
    now = timezone.now()
    args = {"now": now, "after_s": 3600, "after_failures": 5}
    assert not endpoint_disable(failing_since=None, failures=0, **args).act
    assert not endpoint_disable(failing_since=now - timedelta(days=1), failures=4, **args).act
    assert not endpoint_disable(failing_since=now - timedelta(minutes=5), failures=50, **args).act
    assert endpoint_disable(failing_since=now - timedelta(hours=3), failures=5, **args).act


@pytest.mark.parametrize(
    ("url", "ok"),
    [
        ("https://example.com/hooks", True),
        ("http://127.0.0.1:8080/x?y=1", True),
        ("ftp://example.com/", False),
        ("file:///etc/passwd", False),
        ("gopher://example.com", False),
        ("https://", False),
        ("https://user:pw@example.com/", False),
        ("http://example.com:99999/", False),
        ("", False),
    ],
)
def test_only_http_urls_with_a_host_and_no_credentials(url, ok):
    assert (url_problem(url) is None) is ok


def test_a_receiver_that_trickles_its_answer_is_cut_off_at_the_timeout(settings):
    """Each byte comes before the socket's own timeout, so only a bound on the whole request
    stops it: the request fails (and counts as a failure) instead of holding the run."""
    settings.NOTIFIER_WEBHOOK_TIMEOUT_S = 1.0
    listener = socket.create_server(("127.0.0.1", 0))
    stop = threading.Event()

    def trickle() -> None:
        conn, _ = listener.accept()
        with conn:
            conn.recv(65536)
            conn.sendall(b"HTTP/1.1 200 OK\r\n")
            for _ in range(40):  # 8 s at most, then it hangs up
                if stop.is_set():
                    return
                try:
                    conn.sendall(b"X")  # a header line that never ends
                except OSError:
                    return
                stop.wait(0.2)

    thread = threading.Thread(target=trickle, daemon=True)
    thread.start()
    try:
        answer = sending.post(
            f"http://127.0.0.1:{listener.getsockname()[1]}/hook", b"{}", {"Content-Type": "x"}
        )
    finally:
        stop.set()
        listener.close()
    # Cut off by the bound, not by the receiver hanging up 8 s later (a different error).
    assert answer.status_code is None
    assert "no complete answer within 1 s" in answer.error
