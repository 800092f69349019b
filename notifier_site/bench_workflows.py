"""For `manage.py bench --only workflows`: what the workflows cost, on real workers and beat.

- **Digest flush**: comments on posts collected into open digests by the prepare workers
  (`digest_collect_events_per_s`), then every digest's window ended at once and flushed by the
  flush job as the beat task runs it: events folded into messages per second
  (`digest_flush_events_per_s`).
- **Escalation timer accuracy**: messages whose email step waits after the in-app one, sent
  over half a minute while a campaign fans out on the same two cores; the deployed beat
  process releases the steps. Lateness is from a step's due time to its release
  (`escalation_step_lateness_ms_p50/p99/max`). The beat's release tick is 15 s; each tick
  publishes wake-ups for the steps coming due before the next (NOTIFIER_RELEASE_LOOKAHEAD_S).
- **Topic fan-out**: one notify_topic to N followers (200,000 by default), in-app, walked and
  delivered by the bulk lane's workers (`topic_fanout_recipients_per_s`), with the workers'
  peak RSS.

Not a test: nothing here asserts a speed.
"""

from __future__ import annotations

import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from datetime import datetime, timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Any

from django.conf import settings
from django.core.management.base import CommandError
from django.db import connection
from django.db.models import Sum
from django.utils import timezone

from notifier.api import notify_many, notify_topic, topic_subscribe
from notifier.models import (
    Delivery,
    DeliveryEvent,
    Digest,
    DigestState,
    Message,
    NotificationType,
    TopicSend,
)
from notifier.queues import MAINTENANCE_QUEUE, Lane, lane_queues
from notifier.services.digests import digests_flush_due
from notifier.status import TERMINAL, DeliveryStatus

if TYPE_CHECKING:
    from django.contrib.auth.models import AbstractBaseUser

DIGEST_USERS = 2000
DIGEST_KEYS = 2
DIGEST_EVENTS_PER_KEY = 5  # the first of each key goes at once (digest_first_now)
ESCALATION_MESSAGES = 3000
ESCALATION_SPREAD_S = 30  # sent over this long, so the steps fall due over as long
ESCALATION_WAIT_S = 30
ESCALATION_LOAD_USERS = 40_000  # the campaign fanning out meanwhile (in-app + email)
ESCALATION_TYPE = "subscription.renewal_reminder"
TOPIC = "bench:topic"
IN_FLIGHT_OR_HELD = [DeliveryStatus.QUEUED, DeliveryStatus.SENDING, DeliveryStatus.HELD]
WorkerSpec = tuple[str, list[str], int, dict[str, str]]
WORKFLOW_TABLES = [
    "notifier_digest",
    "notifier_topicsend",
    "notifier_topicsubscription",
    "notifier_topic",
]
COMMENT = {
    "commenter_name": "Ana",
    "post_title": "My trip",
    "excerpt": "Lovely",
    "comment_url": "https://example.com/p/1",
}
FOLLOWER = {"follower_name": "Ana", "follower_url": "https://example.com/u/ana"}
RENEWAL = {"plan": "Pro", "renews_on": "1 January"}


def percentile(values: Sequence[float], q: float) -> float:
    ordered = sorted(values)
    if not ordered:
        return float("nan")
    return ordered[min(len(ordered) - 1, round(q / 100 * (len(ordered) - 1)))]


def clean_workflows() -> None:
    with connection.cursor() as cursor:
        cursor.execute(f"TRUNCATE {', '.join(WORKFLOW_TABLES)} RESTART IDENTITY CASCADE")


def workflow_phases(command: Any, options: dict[str, Any]) -> dict[str, Any]:
    """The three workflow measures, each on clean tables (the bench command's helpers start
    the workers and make the users)."""
    followers = options["topic_followers"]
    users = command.users(max(followers, ESCALATION_LOAD_USERS + ESCALATION_MESSAGES))
    result: dict[str, Any] = {}
    for phase in (digest_phase, escalation_phase, topic_phase):
        command.clean()
        clean_workflows()
        command.broker().flushdb()
        result.update(phase(command, users, options))
    command.clean()
    clean_workflows()
    return result


def digest_phase(
    command: Any, users: list[AbstractBaseUser], options: dict[str, Any]
) -> dict[str, Any]:
    audience = users[:DIGEST_USERS]
    events = DIGEST_USERS * DIGEST_KEYS * DIGEST_EVENTS_PER_KEY
    command.say(
        f"digests: {events} comments ({DIGEST_USERS} people x {DIGEST_KEYS} posts x "
        f"{DIGEST_EVENTS_PER_KEY}), collected by 2 worker processes"
    )
    with command.workers([("bulk", lane_queues(Lane.BULK), 2, {})]):
        start = time.perf_counter()
        for round_ in range(DIGEST_EVENTS_PER_KEY):
            for key in range(DIGEST_KEYS):
                notify_many(
                    audience,
                    "social.new_comment",
                    {**COMMENT, "commenter_name": f"Friend {round_}"},
                    channels=["inapp"],
                    digest_key=f"post:{key}",
                )
        command.wait_for(
            "comments routed or collected",
            lambda: Message.objects.filter(routed_at__isnull=False).count(),
            events,
        )
        collect_s = time.perf_counter() - start
    folded_expected = events - DIGEST_USERS * DIGEST_KEYS  # the first of each went alone
    collected = Digest.objects.filter(state=DigestState.OPEN).aggregate(n=Sum("count"))["n"]
    if collected != folded_expected:
        raise CommandError(f"digests: {collected} collected, {folded_expected} expected")
    Digest.objects.filter(state=DigestState.OPEN).update(due_at=timezone.now())
    command.say(f"  flushing {DIGEST_USERS * DIGEST_KEYS} digests as the beat task does")
    start = time.perf_counter()
    report = digests_flush_due(budget_s=3600)
    flush_s = time.perf_counter() - start
    if report.sent != DIGEST_USERS * DIGEST_KEYS:
        raise CommandError(f"digests: {report.sent} sent of {DIGEST_USERS * DIGEST_KEYS}")
    return {
        "digest_events": events,
        "digest_collect_events_per_s": round(events / collect_s, 1),
        "digest_flush_events_per_s": round(folded_expected / flush_s, 1),
        "digest_flush_digests_per_s": round(report.sent / flush_s, 1),
    }


class Beat:
    """`celery beat` with the deployed schedule (every periodic job), on the bench's broker."""

    def __init__(self, workdir: Path) -> None:
        self.process = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "celery",
                "-A",
                "notifier_site",
                "beat",
                "-l",
                "warning",
                "--pidfile=",
                "-s",
                str(workdir / "schedule"),
            ],
            cwd=settings.BASE_DIR,
            stdout=subprocess.DEVNULL,
        )

    def stop(self) -> None:
        self.process.terminate()
        self.process.wait(timeout=30)


def escalation_phase(
    command: Any, users: list[AbstractBaseUser], options: dict[str, Any]
) -> dict[str, Any]:
    load, audience = users[:ESCALATION_LOAD_USERS], users[-ESCALATION_MESSAGES:]
    kind = NotificationType.objects.get(pk=ESCALATION_TYPE)
    before = kind.escalation
    steps = [{"channel": "inapp", "after_s": 0}, {"channel": "email", "after_s": ESCALATION_WAIT_S}]
    NotificationType.objects.filter(pk=kind.pk).update(escalation=steps)
    tag = f"bench-{ESCALATION_LOAD_USERS // 1000}k"
    command.tag(load, tag)
    tx_queues = [*lane_queues(Lane.TRANSACTIONAL), MAINTENANCE_QUEUE]
    per_second = ESCALATION_MESSAGES // ESCALATION_SPREAD_S
    command.say(
        f"escalation: {ESCALATION_MESSAGES} messages over {ESCALATION_SPREAD_S} s, email "
        f"{ESCALATION_WAIT_S} s after in-app if unread, while a campaign fans out to "
        f"{ESCALATION_LOAD_USERS}; the deployed beat releases the steps"
    )
    due: dict[int, datetime] = {}
    try:
        with tempfile.TemporaryDirectory(prefix="bench-beat-") as workdir:
            bulk_lane: WorkerSpec = ("bulk", lane_queues(Lane.BULK), 2, {})
            with command.workers([("tx", tx_queues, 1, {}), bulk_lane]):
                beat = Beat(Path(workdir))
                try:
                    from campaigns.dispatch import publish_walk

                    step = command.campaign_step(ESCALATION_LOAD_USERS, tag, ["inapp", "email"])
                    publish_walk(step.pk)
                    started = time.monotonic()
                    for second in range(ESCALATION_SPREAD_S):
                        chunk = audience[second * per_second : (second + 1) * per_second]
                        notify_many(chunk, ESCALATION_TYPE, RENEWAL, channels=None)
                        remember_due(due)
                        pause = started + second + 1 - time.monotonic()
                        if pause > 0:
                            time.sleep(pause)
                    wait_steps(command, due)
                finally:
                    beat.stop()
    finally:
        NotificationType.objects.filter(pk=kind.pk).update(escalation=before)
    lateness = step_lateness_ms(due)
    return {
        "escalation_steps": len(lateness),
        "escalation_load_recipients": ESCALATION_LOAD_USERS,
        "escalation_step_lateness_ms_p50": round(percentile(lateness, 50), 1),
        "escalation_step_lateness_ms_p99": round(percentile(lateness, 99), 1),
        "escalation_step_lateness_ms_max": round(max(lateness), 1),
    }


def held_steps() -> Any:
    return Delivery.objects.filter(
        message__type_id=ESCALATION_TYPE, channel="email", status=DeliveryStatus.HELD
    )


def remember_due(due: dict[int, datetime]) -> None:
    """Each waiting step's due time, read while it waits (a release rewrites the row)."""
    for pk, at in held_steps().exclude(pk__in=list(due)).values_list("pk", "next_attempt_at"):
        due[pk] = at


def wait_steps(command: Any, due: dict[int, datetime]) -> None:
    steps = Delivery.objects.filter(message__type_id=ESCALATION_TYPE, channel="email")
    deadline = time.monotonic() + 600
    while True:
        remember_due(due)
        total = Message.objects.filter(type_id=ESCALATION_TYPE).count()
        finished = steps.filter(status__in=TERMINAL).count()
        if total == ESCALATION_MESSAGES and finished == total and len(due) == total:
            break
        if time.monotonic() > deadline:
            raise CommandError(f"escalation: {finished}/{total} email steps done after 600 s")
        command.say(f"  {finished}/{total} email steps sent, {len(due)} seen waiting")
        time.sleep(1)
    in_flight = Delivery.objects.filter(status__in=IN_FLIGHT_OR_HELD)
    command.wait_for("the campaign's deliveries", lambda: int(not in_flight.exists()), 1)


def step_lateness_ms(due: dict[int, datetime]) -> list[float]:
    """From each step's due time to its release: its first event after the wait."""
    released: dict[int, datetime] = {}
    events = (
        DeliveryEvent.objects.filter(delivery_id__in=list(due))
        .exclude(status=DeliveryStatus.HELD)
        .order_by("delivery_id", "at")
        .values_list("delivery_id", "at")
    )
    for pk, at in events:
        released.setdefault(pk, at)
    missing = set(due) - set(released)
    if missing:
        raise CommandError(f"escalation: {len(missing)} steps have no release event")
    return [(released[pk] - due[pk]) / timedelta(milliseconds=1) for pk in due]


def topic_phase(
    command: Any, users: list[AbstractBaseUser], options: dict[str, Any]
) -> dict[str, Any]:
    followers = users[: options["topic_followers"]]
    command.say(f"topic: {len(followers)} followers")
    start = time.perf_counter()
    for at in range(0, len(followers), 50_000):
        topic_subscribe(TOPIC, followers[at : at + 50_000])
    subscribe_s = time.perf_counter() - start
    with connection.cursor() as cursor:
        cursor.execute("ANALYZE notifier_topicsubscription")
    bulk_lane: WorkerSpec = ("bulk", lane_queues(Lane.BULK), 2, {})
    tx_lane: WorkerSpec = ("tx", [*lane_queues(Lane.TRANSACTIONAL), MAINTENANCE_QUEUE], 1, {})
    with command.workers([tx_lane, bulk_lane]) as pool:
        sampler = command.rss_sampler(pool)
        start = time.perf_counter()
        send = notify_topic(TOPIC, "social.new_follower", FOLLOWER, channels=["inapp"])
        in_flight = Delivery.objects.filter(status__in=IN_FLIGHT_OR_HELD)
        unrouted = Message.objects.filter(routed_at__isnull=True)
        next_say = 0.0
        while True:
            sampler.sample()
            status, sent = TopicSend.objects.values_list("status", "sent").get(pk=send.pk)
            if status == "done" and not unrouted.exists() and not in_flight.exists():
                break
            if time.monotonic() > next_say:
                command.say(f"  {sent} handed out, worker RSS peak {sampler.peak_mb:.0f} MB")
                next_say = time.monotonic() + 2
            if time.perf_counter() - start > 1800:
                raise CommandError("topic: not finished after 30 min")
            time.sleep(0.2)
        elapsed = time.perf_counter() - start
    done = Delivery.objects.filter(status__in=TERMINAL).count()
    if done != len(followers):
        raise CommandError(f"topic: {done} deliveries finished of {len(followers)}")
    return {
        "topic_followers": len(followers),
        "topic_subscribe_per_s": round(len(followers) / subscribe_s, 1),
        "topic_fanout_recipients_per_s": round(len(followers) / elapsed, 1),
        "topic_peak_worker_rss_mb": round(sampler.peak_mb, 1),
    }


def workflow_rows(result: dict[str, Any]) -> list[tuple[str, str, str]]:
    """The bench table's rows for these measures."""
    if "digest_flush_events_per_s" not in result:
        return []
    return [
        (
            f"digests: {result['digest_events']} comments collected",
            f"{result['digest_collect_events_per_s']:.0f} events/s",
            "2 worker processes",
        ),
        (
            "digest flush (as the beat task)",
            f"{result['digest_flush_events_per_s']:.0f} events/s",
            f"{result['digest_flush_digests_per_s']:.0f} digests/s",
        ),
        (
            "escalation step lateness p50 / p99",
            f"{result['escalation_step_lateness_ms_p50']:.0f} / "
            f"{result['escalation_step_lateness_ms_p99']:.0f} ms",
            f"{result['escalation_steps']} steps, 15 s tick + wake-ups, campaign running",
        ),
        (
            f"topic fan-out, {result['topic_followers']} followers",
            f"{result['topic_fanout_recipients_per_s']:.0f} rcpt/s",
            f"worker RSS peak {result['topic_peak_worker_rss_mb']:.0f} MB",
        ),
    ]
