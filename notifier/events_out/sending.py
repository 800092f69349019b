"""Posting the outbox to the endpoints: claimed, signed, retried, and given up on in the open.

A send run (the `notifier.webhooks_send` task, for one endpoint) claims the endpoint's due
events under the endpoint's row lock (so two runs never split a batch), gives them a lease
(`claimed_until`, longer than a request can take) and a claim token, and commits; then posts
them, outside any transaction, and writes the outcome where the token still holds. A run that
dies leaves a lease that runs out, and the next run (or the sweep, every few seconds) sends the
same events again under the same webhook-id; an event an endpoint answered with 2xx is never
posted again, since its row says `sent` before any later run can claim it.

The request: `webhook-id` (the batch's id, fixed at the first claim: the same on every retry),
`webhook-timestamp` and `webhook-signature` (Standard Webhooks, signed with the endpoint's
`whsec_` secret by the `standardwebhooks` package). An endpoint with max_batch 1 gets each
event as `{"id", "type", "timestamp", "data"}`; with more, a `{"type": "batch", ...}` holding
up to max_batch of them. Only http and https, no redirects followed, short timeouts, and at
most NOTIFIER_WEBHOOK_RESPONSE_MAX_CHARS of the answer kept. Only public addresses, unless
NOTIFIER_WEBHOOK_ALLOW_PRIVATE_NETWORKS (`targets`: checked where the socket is opened); a
request refused for its address disables the endpoint at once, with an alert, since every retry
would be refused the same way.
"""

from __future__ import annotations

import base64
import contextlib
import http.client
import json
import logging
import secrets
import socket
import threading
import time
import uuid
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

from django.conf import settings
from django.db import transaction
from django.db.models import Exists, F, OuterRef, Q
from django.utils import timezone
from standardwebhooks.webhooks import Webhook

from notifier.events_out import record, targets
from notifier.models import (
    WebhookAttempt,
    WebhookEndpoint,
    WebhookEvent,
    WebhookEventState,
)
from notifier.operations.alerts import alert_to_sentry
from notifier.policies.webhooks import after_failure, endpoint_disable

log = logging.getLogger(__name__)
State = WebhookEventState

TEST_EVENT_TYPE = "webhook.test"
USER_AGENT = "Notifier-Webhooks/1"
# Longest countdown a retry is published with; later retries are found by the sweep.
MAX_COUNTDOWN_S = 300.0


class InvalidEndpoint(ValueError):
    """Bad input to an endpoint's settings; nothing was written."""


# --- Endpoints ----------------------------------------------------------------------------------


def secret_new() -> str:
    """A Standard Webhooks secret: whsec_ and 32 random bytes in base64."""
    return "whsec_" + base64.b64encode(secrets.token_bytes(32)).decode()


def check_endpoint(*, url: str, event_types: Sequence[str], max_batch: int) -> None:
    """Refuse bad settings with what to fix: the URL's form, a private address it names or its
    host resolves to (a name that does not resolve yet passes, see targets.target_problem), the
    event types, the batch size."""
    problem = targets.target_problem(url)
    if problem:
        raise InvalidEndpoint(problem)
    unknown = sorted(set(event_types) - set(record.SUBSCRIBABLE))
    if unknown or not event_types:
        raise InvalidEndpoint(
            f"choose event types among {', '.join(record.SUBSCRIBABLE)}"
            + (f"; not {', '.join(unknown)}" if unknown else "")
        )
    if not 1 <= max_batch <= 1000:
        raise InvalidEndpoint(f"max_batch must be 1 to 1000, got {max_batch}")


def endpoint_create(
    *, name: str, url: str, event_types: Sequence[str], max_batch: int = 100
) -> WebhookEndpoint:
    check_endpoint(url=url, event_types=event_types, max_batch=max_batch)
    endpoint = WebhookEndpoint.objects.create(
        name=name,
        url=url.strip(),
        secret=secret_new(),
        event_types=sorted(set(event_types)),
        max_batch=max_batch,
    )
    record.endpoints_cache_clear()
    return endpoint


def endpoint_rotate_secret(*, endpoint: WebhookEndpoint) -> str:
    """A new secret, in force for the next request (retries included)."""
    endpoint.secret = secret_new()
    WebhookEndpoint.objects.filter(pk=endpoint.pk).update(
        secret=endpoint.secret, updated_at=timezone.now()
    )
    return endpoint.secret


def endpoint_enable(*, endpoint: WebhookEndpoint) -> bool:
    """Re-enable a disabled endpoint: its waiting events go out at once. Returns whether it
    was disabled. Refused (InvalidEndpoint) while its URL is (say, still points at a private
    address): it would be disabled again by its next request."""
    problem = targets.target_problem(endpoint.url)
    if problem:
        raise InvalidEndpoint(f"{endpoint.name}: {problem}")
    now = timezone.now()
    with transaction.atomic():
        enabled = WebhookEndpoint.objects.filter(pk=endpoint.pk, active=False).update(
            active=True,
            disabled_at=None,
            disabled_reason="",
            failing_since=None,
            consecutive_failures=0,
            updated_at=now,
        )
        WebhookEvent.objects.filter(endpoint=endpoint, state=State.PENDING).update(
            next_attempt_at=now
        )
        transaction.on_commit(lambda: record.sender_wake([endpoint.pk]), robust=True)
    record.endpoints_cache_clear()
    return bool(enabled)


def endpoint_test_event(*, endpoint: WebhookEndpoint) -> WebhookEvent:
    """Queue a `webhook.test` event for this endpoint alone (whatever it subscribed to)."""
    now = timezone.now()
    with transaction.atomic():
        event = WebhookEvent.objects.create(
            endpoint=endpoint,
            type=TEST_EVENT_TYPE,
            at=now,
            data={"endpoint": endpoint.name},
            created_at=now,
            next_attempt_at=now,
        )
        transaction.on_commit(lambda: record.sender_wake([endpoint.pk]), robust=True)
    return event


# --- Claiming -----------------------------------------------------------------------------------


@dataclass(frozen=True)
class Claim:
    batch: str
    token: uuid.UUID
    events: list[WebhookEvent]


def _claim(endpoint_id: int, *, now: datetime) -> tuple[WebhookEndpoint | None, Claim | None]:
    """The endpoint (None if gone or disabled) and its next batch of due events, claimed."""
    with transaction.atomic():
        # One claimer per endpoint at a time (for this short transaction only): a batch is
        # never split between two runs.
        endpoint = (
            WebhookEndpoint.objects.select_for_update().filter(pk=endpoint_id, active=True).first()
        )
        if endpoint is None:
            return None, None
        due = WebhookEvent.objects.filter(
            Q(claimed_until__isnull=True) | Q(claimed_until__lt=now),
            endpoint_id=endpoint_id,
            state=State.PENDING,
            next_attempt_at__lte=now,
        ).order_by("next_attempt_at", "id")
        first = due.only("batch").first()
        if first is None:
            return endpoint, None
        if first.batch:  # a retry: the same events as before, under the same id
            batch = first.batch
            events = list(due.filter(batch=batch))
        else:
            batch = f"msg_{uuid.uuid4().hex}"
            events = list(due.filter(batch="")[: endpoint.max_batch])
        token = uuid.uuid4()
        WebhookEvent.objects.filter(pk__in=[e.pk for e in events]).update(
            batch=batch,
            claim_token=token,
            claimed_until=now + timedelta(seconds=settings.NOTIFIER_WEBHOOK_LEASE_S),
        )
    return endpoint, Claim(batch, token, events)


# --- The request --------------------------------------------------------------------------------


def event_body(event: WebhookEvent) -> dict[str, Any]:
    return {
        "id": event.event_id,
        "type": event.type,
        "timestamp": event.at.isoformat(),
        "data": event.data,
    }


def request_body(endpoint: WebhookEndpoint, events: Sequence[WebhookEvent], now: datetime) -> bytes:
    if endpoint.max_batch == 1 and len(events) == 1:
        payload = event_body(events[0])
    else:
        payload = {
            "type": "batch",
            "timestamp": now.isoformat(),
            "data": {"events": [event_body(event) for event in events]},
        }
    return json.dumps(payload, separators=(",", ":"), sort_keys=True).encode()


def signed_headers(*, secret: str, webhook_id: str, body: bytes, now: datetime) -> dict[str, str]:
    return {
        "webhook-id": webhook_id,
        "webhook-timestamp": str(int(now.timestamp())),
        "webhook-signature": Webhook(secret).sign(msg_id=webhook_id, timestamp=now, data=body),
        "content-type": "application/json",
        "user-agent": USER_AGENT,
    }


@dataclass(frozen=True)
class Answer:
    status_code: int | None
    body: str
    error: str
    duration_ms: int
    refused: bool = False  # not sent: the URL or its address is not allowed (targets)

    @property
    def ok(self) -> bool:
        return self.status_code is not None and 200 <= self.status_code < 300


def post(url: str, body: bytes, headers: dict[str, str]) -> Answer:
    """POST once, to the addresses checked for this request (targets); never follows a redirect
    (a 3xx is a failure, like any non-2xx)."""
    timeout = float(settings.NOTIFIER_WEBHOOK_TIMEOUT_S)
    keep = int(settings.NOTIFIER_WEBHOOK_RESPONSE_MAX_CHARS)
    started = time.monotonic()
    try:
        target = targets.target_for(url)
    except targets.TargetRefused as exc:
        return Answer(None, "", f"refused: {exc}"[:300], _ms(started), refused=True)
    except OSError as exc:  # the name does not resolve (now): retried like a refused connection
        return Answer(None, "", f"{type(exc).__name__}: {exc}"[:300], _ms(started))
    conn = targets.connection(target, timeout=timeout)
    # The timeout bounds each wait on the socket; this bounds the whole request, so a receiver
    # that trickles its answer a byte at a time is cut off too (and counted as a failure).
    cut_off = threading.Event()
    cut = threading.Timer(timeout, _cut_off, args=(conn, cut_off))
    cut.daemon = True
    cut.start()
    late = f"no complete answer within {timeout:g} s"
    try:
        conn.request("POST", target.path, body=body, headers=headers)
        response = conn.getresponse()
        text = response.read(keep * 4 + 4).decode("utf-8", "replace")[:keep]
        if cut_off.is_set():  # what was read ended where the socket was shut, not the answer
            return Answer(None, "", late, _ms(started))
        return Answer(response.status, text, "", _ms(started))
    except (OSError, http.client.HTTPException) as exc:  # timeouts are OSErrors
        error = late if cut_off.is_set() else f"{type(exc).__name__}: {exc}"
        return Answer(None, "", error[:300], _ms(started))
    finally:
        cut.cancel()
        conn.close()


def _cut_off(conn: http.client.HTTPConnection, done: threading.Event) -> None:
    """Wake a read blocked on the socket: it then ends at once (and the answer is void)."""
    done.set()
    sock = conn.sock
    if sock is not None:
        with contextlib.suppress(OSError):
            sock.shutdown(socket.SHUT_RDWR)


def _ms(started: float) -> int:
    return int((time.monotonic() - started) * 1000)


# --- Outcomes -----------------------------------------------------------------------------------


@dataclass
class SendReport:
    requests: int = 0
    sent: int = 0
    failed_requests: int = 0
    given_up: int = 0
    disabled: bool = False
    more: bool = False
    retry_in_s: list[float] = field(default_factory=list)


def _record(
    endpoint: WebhookEndpoint, claim: Claim, answer: Answer, now: datetime, report: SendReport
) -> None:
    error = answer.error or ("" if answer.ok else f"HTTP {answer.status_code}")
    with transaction.atomic():
        WebhookAttempt.objects.create(
            endpoint=endpoint,
            webhook_id=claim.batch,
            events=len(claim.events),
            at=now,
            status_code=answer.status_code,
            ok=answer.ok,
            error=error,
            duration_ms=answer.duration_ms,
            response_body=answer.body,
        )
        mine = WebhookEvent.objects.filter(claim_token=claim.token, state=State.PENDING)
        if answer.ok:
            report.sent += mine.update(
                state=State.SENT,
                sent_at=now,
                attempts=F("attempts") + 1,
                claimed_until=None,
                last_error="",
            )
            WebhookEndpoint.objects.filter(pk=endpoint.pk).exclude(consecutive_failures=0).update(
                failing_since=None, consecutive_failures=0
            )
            return
        report.failed_requests += 1
        attempt = max((e.attempts for e in claim.events), default=0) + 1
        first_at = min((e.created_at for e in claim.events), default=now)
        retry = after_failure(
            attempt=attempt,
            first_at=first_at,
            now=now,
            retry_for_s=settings.NOTIFIER_WEBHOOK_RETRY_FOR_S,
            base_s=settings.NOTIFIER_WEBHOOK_RETRY_BASE_S,
            max_s=settings.NOTIFIER_WEBHOOK_RETRY_MAX_S,
        )
        if answer.refused:
            # Not retried: the endpoint is disabled below, and its events wait, like those of
            # any disabled endpoint, for an Admin to fix it and re-enable it.
            mine.update(attempts=F("attempts") + 1, claimed_until=None, last_error=error[:300])
        elif retry.at is None:
            report.given_up += mine.update(
                state=State.FAILED,
                attempts=F("attempts") + 1,
                claimed_until=None,
                last_error=f"{error}; {retry.reason}"[:300],
            )
        else:
            mine.update(
                next_attempt_at=retry.at,
                attempts=F("attempts") + 1,
                claimed_until=None,
                last_error=error[:300],
            )
            report.retry_in_s.append((retry.at - now).total_seconds())
        failing = WebhookEndpoint.objects.select_for_update().get(pk=endpoint.pk)
        failing.consecutive_failures += 1
        failing.failing_since = failing.failing_since or now
        WebhookEndpoint.objects.filter(pk=endpoint.pk).update(
            consecutive_failures=failing.consecutive_failures,
            failing_since=failing.failing_since,
        )
        decision = endpoint_disable(
            failing_since=failing.failing_since,
            failures=failing.consecutive_failures,
            now=now,
            after_s=settings.NOTIFIER_WEBHOOK_DISABLE_AFTER_S,
            after_failures=settings.NOTIFIER_WEBHOOK_DISABLE_AFTER_FAILURES,
            refused=error.removeprefix("refused: ") if answer.refused else "",
        )
        if decision.act and failing.active:
            WebhookEndpoint.objects.filter(pk=endpoint.pk, active=True).update(
                active=False, disabled_at=now, disabled_reason=decision.reason[:300]
            )
            report.disabled = True
            transaction.on_commit(lambda: _alert_disabled(endpoint, decision.reason), robust=True)


def _alert_disabled(endpoint: WebhookEndpoint, reason: str) -> None:
    record.endpoints_cache_clear()
    message = f"webhook endpoint {endpoint.name!r} disabled: {reason}"
    log.warning(
        message,
        extra={"alert": "webhook_endpoint_disabled", "webhook_endpoint_id": endpoint.pk},
    )
    alert_to_sentry(
        message,
        fingerprint=["notifier.alerts", "webhook_endpoint_disabled", str(endpoint.pk)],
        tags={"webhook_endpoint_id": str(endpoint.pk)},
    )


# --- Runs ---------------------------------------------------------------------------------------


def webhooks_send(*, endpoint_id: int, budget_s: float = 20.0) -> SendReport:
    """Send an endpoint's due events, a batch per request, for up to `budget_s` seconds; stop
    at the first failed request (the next try is scheduled, not hammered)."""
    record.sender_woken(endpoint_id)
    report = SendReport()
    deadline = time.monotonic() + budget_s
    while True:
        now = timezone.now()
        endpoint, claim = _claim(endpoint_id, now=now)
        if endpoint is None or claim is None:
            break
        body = request_body(endpoint, claim.events, now)
        headers = signed_headers(secret=endpoint.secret, webhook_id=claim.batch, body=body, now=now)
        answer = post(endpoint.url, body, headers)
        report.requests += 1
        _record(endpoint, claim, answer, timezone.now(), report)
        if not answer.ok:
            break
        if time.monotonic() >= deadline:
            report.more = True
            break
    if report.more:
        record.sender_wake([endpoint_id])
    for delay in report.retry_in_s[:1]:
        if delay <= MAX_COUNTDOWN_S:
            record.sender_publish(endpoint_id, countdown=delay)
    return report


def webhooks_sweep(*, now: datetime | None = None) -> list[int]:
    """Wake the sender of every active endpoint with due events nobody holds: those whose
    task the broker lost, and retries later than a broker countdown. Returns their ids."""
    now = now or timezone.now()
    due = WebhookEvent.objects.filter(
        Q(claimed_until__isnull=True) | Q(claimed_until__lt=now),
        endpoint=OuterRef("pk"),
        state=State.PENDING,
        next_attempt_at__lte=now,
    )
    ids = list(
        WebhookEndpoint.objects.filter(active=True).filter(Exists(due)).values_list("pk", flat=True)
    )
    for endpoint_id in ids:
        record.sender_publish(endpoint_id)
    return ids


def webhooks_prune(
    *, now: datetime | None = None, batch: int = 5000, budget_s: float = 60.0
) -> int:
    """Delete events answered or given up, and attempts, older than NOTIFIER_WEBHOOK_KEEP_DAYS,
    in short batches (oldest ids first), for at most `budget_s`. Returns how many rows went."""
    days = int(settings.NOTIFIER_WEBHOOK_KEEP_DAYS)
    if days <= 0:
        return 0
    cutoff = (now or timezone.now()) - timedelta(days=days)
    deadline = time.monotonic() + budget_s
    deleted = 0
    for queryset in (
        WebhookEvent.objects.exclude(state=State.PENDING).filter(created_at__lt=cutoff),
        WebhookAttempt.objects.filter(at__lt=cutoff),
    ):
        while time.monotonic() < deadline:
            ids = list(queryset.order_by("pk").values_list("pk", flat=True)[:batch])
            if not ids:
                break
            deleted += queryset.model._default_manager.filter(pk__in=ids).delete()[0]
    return deleted
