"""`manage.py bench`: pipeline throughput and latency, side by side with a naive baseline.

Every phase runs on the same PostgreSQL and Redis with real worker processes:

1. throughput: a naive baseline (one task per recipient, one INSERT per row) and the pipeline
   (notify_many, batched prepare and deliver) over the same N in-app + email notifications;
2. latency on an idle system: notify() call time, and in-app end to end;
3. a global rate limit shared by two worker processes: achieved rate / configured rate;
4. transactional in-app end to end while the bulk lane holds 20,000+ marketing deliveries,
   with one worker per lane as deployed;
5. (`--only per-channel`, also in `all`) what one worker process (-c 1) does per second at each
   step, measured alone on its own queue: prepare (render + route, all four channels), then
   deliver for each channel with its sandbox provider (no network latency);
6. (`--only api`, also in `all`) POST /api/v1/notify through a real gunicorn on loopback
   (DEBUG off) over one kept-open connection, alternating call by call with an in-process
   notify() of the same notification: what the HTTP API adds to a call;
7. (`--only profile`, also in `all`) one campaign batch of 1,000 users (in-app + email) written
   and delivered in this process after a warm-up batch, publishing stubbed: ms per recipient
   of a second batch, unprofiled, and where a third batch's time goes under cProfile: self time
   by area in % (notifier_site.bench_profile; helpers charged to their callers' areas); then
   a batch of email of real size (about 35 KB of HTML each) with the large-value columns
   stored by pglz, PostgreSQL's default, and by LZ4 (migration notifier.0044), in turn;
8. (`--only workflows`, also in `all`) digest collection and flush throughput, escalation
   timer lateness under a running campaign with the deployed beat, and one topic's fan-out to
   --topic-followers (notifier_site.bench_workflows);
9. (`--only live`, also in `all`) idle inbox streams held by one uvicorn process: connections,
   memory per connection, and one change for all their users reaching them, p50/p99
   (notifier_site.bench_live).

The campaign phase (`--only campaign`) runs a campaign step to N users over in-app + email, in-app
only and email only, each beside two naive baselines run on the same channels, both one Celery
task per recipient that renders the recipient's copy (notifier_site.benchmarks): the heavy one
writes what the pipeline writes (message, deliveries, events, inbox item, sandbox ledger) a row
at a time; the thin one writes one log row (one INSERT), as a typical first version does.

Prints progress and a table on stderr/stdout, then one JSON line. Not a test: nothing here
asserts a speed.
"""

from __future__ import annotations

import cProfile
import json
import os
import pstats
import subprocess
import time
import uuid
from collections.abc import Callable, Sequence
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any
from unittest import mock

import psutil
import redis
from django.conf import settings
from django.core.management import call_command
from django.core.management.base import BaseCommand, CommandError
from django.db import connection
from django.utils import timezone

from channels.base import Channel
from channels.models import SandboxSend
from notifier.api import notify, notify_many
from notifier.celery_config import garbage_collection_tune
from notifier.models import (
    ApiKey,
    Consent,
    Delivery,
    Device,
    InboxItem,
    Message,
    Platform,
    Recipient,
    User,
    recipients_for,
)
from notifier.queues import (
    ALL_QUEUES,
    MAINTENANCE_QUEUE,
    Lane,
    deliver_queue,
    lane_queues,
    prepare_queue,
)
from notifier.redis_client import broker_client, broker_redis_url
from notifier.services.api_keys import api_key_create
from notifier.status import TERMINAL, DeliveryStatus
from notifier_site.bench_http import KeptConnection, LoopbackSite
from notifier_site.bench_live import live_phases, live_table_rows
from notifier_site.bench_profile import AREAS, area_shares
from notifier_site.bench_workflows import workflow_phases, workflow_rows
from notifier_site.benchmarks import (
    NAIVE_QUEUE,
    THIN_LOG_CREATE,
    THIN_LOG_TABLE,
    naive_notify,
    thin_naive_notify,
)
from notifier_site.celery import app
from notifier_site.embedded import worker_argv

ROOT = Path(settings.BASE_DIR)
TYPE_KEY = "order.shipped"
CHANNELS = ["inapp", "email"]
IDLE_GAP_S = 0.02
CONTEXT = {
    "order_number": "B1",
    "carrier": "SF Express",
    "eta": "Tuesday",
    "tracking_url": "https://example.com/track/B1",
}
SALE = {
    "sale_name": "Bench sale",
    "starts_at": "now",
    "headline": "Everything must go",
    "sale_url": "https://example.com/sale",
}
RATE_LIMIT_PER_S = 50
BULK_RECIPIENTS = 10_000  # x in-app + email = 20,000 marketing deliveries
TABLES = [
    "notifier_deliveryevent",
    "notifier_inboxitem",
    "notifier_delivery",
    "notifier_message",
    "notifier_channels_sandboxsend",
    "notifier_frequencycounter",
]
ALL_CHANNELS = ["inapp", "email", "sms", "push"]
PER_CHANNEL_USERS = 5000
API_SAMPLES = 500
API_WARMUP = 30
PROFILE_BATCH = 1000
# A marketing email of real size: inline styles and a grid of products, about 35 KB of HTML
# (the campaign phases' email is a few lines), greeting the customer by name.
_CARD = (
    '<td class="card" style="padding:12px;border:1px solid #e4e4e7;border-radius:8px;'
    "font-family:Helvetica,Arial,sans-serif;font-size:14px;line-height:20px;color:#18181b;"
    'vertical-align:top;width:50%">'
    '<a href="https://shop.example.com/p/{n}?utm_source=email&amp;utm_campaign=sale" '
    'style="color:#18181b;text-decoration:none">'
    '<img src="https://cdn.shop.example.com/p/{n}/600x600.jpg" width="260" height="260" '
    'alt="Product {n}" style="display:block;border:0;width:260px;height:260px;'
    'border-radius:6px"/>'
    '<p style="margin:12px 0 4px 0;font-weight:bold;font-size:16px">Product {n}: the one '
    "you looked at, now for less</p>"
    '<p style="margin:0 0 8px 0;color:#52525b">Soft, light and made to last, in six colours. '
    "Free returns within 30 days, and delivery in two days to most addresses.</p>"
    '<p style="margin:0;font-size:18px;color:#dc2626"><s style="color:#a1a1aa;'
    'font-size:14px">$ {was}.00</s> $ {now}.99</p></a></td>'
)
LARGE_EMAIL_HTML = (
    '<table role="presentation" width="100%" cellpadding="0" cellspacing="0" '
    'style="background:#f4f4f5"><tr><td align="center" style="padding:24px">'
    '<table role="presentation" width="600" cellpadding="0" cellspacing="8" '
    'style="background:#ffffff;border-radius:12px">'
    '<tr><td colspan="2" style="padding:24px;font-family:Helvetica,Arial,sans-serif;'
    'font-size:22px;font-weight:bold">Hi {{ user.first_name }}, the sale starts now</td></tr>'
    + "".join(
        "<tr>"
        + _CARD.format(n=2 * row, was=90 + row, now=59 + row)
        + _CARD.format(n=2 * row + 1, was=120 + row, now=79 + row)
        + "</tr>"
        for row in range(20)
    )
    + '<tr><td colspan="2" style="padding:24px;font-family:Helvetica,Arial,sans-serif;'
    'font-size:12px;color:#71717a">You get this because you shop with us. '
    '<a href="https://shop.example.com/help" style="color:#71717a">Help</a></td></tr>'
    "</table></td></tr></table>"
)
# The campaign phase's runs at N users: the existing key prefix ("" for in-app + email) and
# channels of each.
# Deliveries on their way (the partial index `delivery_due_idx` holds exactly these): a
# campaign run is over when its step is written and none is left.
IN_FLIGHT_OR_HELD = [DeliveryStatus.QUEUED, DeliveryStatus.SENDING, DeliveryStatus.HELD]
CAMPAIGN_MIXES = (("", CHANNELS), ("inapp_", ["inapp"]), ("email_", ["email"]))


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    if not ordered:
        return float("nan")
    index = min(len(ordered) - 1, max(0, round(q / 100 * (len(ordered) - 1))))
    return ordered[index]


class RssSampler:
    """The largest resident memory of any worker process (pool children included) seen."""

    def __init__(self, pool: list[subprocess.Popen[bytes]]) -> None:
        self.processes = []
        for worker in pool:
            parent = psutil.Process(worker.pid)
            self.processes += [parent, *parent.children(recursive=True)]
        self.peak_mb = 0.0

    def sample(self) -> None:
        for process in self.processes:
            try:
                self.peak_mb = max(self.peak_mb, process.memory_info().rss / 2**20)
            except psutil.NoSuchProcess:
                continue


class Command(BaseCommand):
    help = "Measure the pipeline against a naive one-task-per-recipient baseline."

    def add_arguments(self, parser: Any) -> None:
        parser.add_argument(
            "--messages",
            type=int,
            default=4000,
            help="notifications per throughput run (each in-app + email)",
        )
        parser.add_argument("--latency-samples", type=int, default=300)
        parser.add_argument(
            "--concurrency", type=int, default=2, help="prefork children of the throughput worker"
        )
        parser.add_argument(
            "--bulk-recipients",
            type=int,
            default=BULK_RECIPIENTS,
            help="marketing recipients (x2 deliveries) for the under-bulk run",
        )
        parser.add_argument(
            "--users",
            type=int,
            default=100_000,
            help="recipients of the campaign run (and a 10,000 run for memory)",
        )
        parser.add_argument(
            "--naive-recipients",
            type=int,
            default=3000,
            help="recipients of each naive baseline run (heavy and thin, each channel mix)",
        )
        parser.add_argument(
            "--per-channel-users",
            type=int,
            default=PER_CHANNEL_USERS,
            help="notifications (x4 channels) for the per-process, per-channel run",
        )
        parser.add_argument(
            "--api-samples",
            type=int,
            default=API_SAMPLES,
            help="notify calls over HTTP (and as many in process) for the API phase",
        )
        parser.add_argument(
            "--mixes",
            choices=["all", "inapp+email"],
            default="all",
            help="the campaign phase's channel mixes at --users: all three (in-app + email, "
            "in-app only, email only), or in-app + email alone (a million-user run for memory)",
        )
        parser.add_argument(
            "--profile-out",
            default="",
            help="also write the profiled batch's cProfile stats to this file (pstats format)",
        )
        parser.add_argument(
            "--topic-followers",
            type=int,
            default=200_000,
            help="followers of the workflows phase's topic (one notify_topic, in-app)",
        )
        parser.add_argument(
            "--only",
            choices=[
                "all",
                "pipeline",
                "campaign",
                "per-channel",
                "api",
                "profile",
                "workflows",
                "live",
            ],
            default="all",
        )

    def handle(self, *args: Any, **options: Any) -> None:
        redis_broker = bool(broker_redis_url()) and not settings.NOTIFIER_EMBEDDED
        if connection.vendor != "postgresql" or not redis_broker:
            raise CommandError(
                "bench runs on PostgreSQL and Redis: set DATABASE_URL and "
                "CELERY_BROKER_URL (or use `make bench`)"
            )
        call_command("migrate", verbosity=0, interactive=False)
        self.broker().flushdb()
        result: dict[str, Any] = {}
        if options["only"] in ("all", "pipeline"):
            result.update(self.pipeline_phases(options))
        if options["only"] in ("all", "campaign"):
            result.update(self.campaign_phases(options))
        if options["only"] in ("all", "per-channel"):
            result.update(self.per_channel_phases(options))
        if options["only"] in ("all", "api"):
            result.update(self.api_phases(options))
        if options["only"] in ("all", "profile"):
            result.update(self.profile_phases(options["profile_out"]))
        if options["only"] in ("all", "workflows"):
            result.update(workflow_phases(self, options))
        if options["only"] in ("all", "live"):
            result.update(live_phases(root=ROOT, say=self.say))
        self.table(result)
        self.stdout.write(json.dumps(result))

    def pipeline_phases(self, options: dict[str, Any]) -> dict[str, Any]:
        n, samples = options["messages"], options["latency_samples"]
        bulk = options["bulk_recipients"]
        users = self.users(max(n, samples, bulk + samples))
        self.clean()
        self.say(
            f"bench: {n} notifications x {len(CHANNELS)} channels, "
            f"{options['concurrency']} worker processes, {os.cpu_count()} CPUs"
        )
        with self.workers([("all", [*ALL_QUEUES, NAIVE_QUEUE], options["concurrency"], {})]):
            naive = self.run_naive(users[:n])
            self.clean()
            pipeline = self.run_pipeline(users[:n])
            self.clean()
            call_ms, e2e_ms = self.idle_latencies(users[:samples])
        self.clean()
        limit_env = {"NOTIFIER_RATE_LIMITS": f"email:sandbox={RATE_LIMIT_PER_S}/s"}
        with self.workers(
            [("rate-a", ALL_QUEUES, 1, limit_env), ("rate-b", ALL_QUEUES, 1, limit_env)]
        ):
            achieved = self.rate_limited(users[: RATE_LIMIT_PER_S * 15])
        self.clean()
        under_bulk_ms, overlapped = self.e2e_under_bulk(users[:bulk], users[bulk : bulk + samples])
        return {
            "messages": n,
            "naive_msgs_per_s": round(naive, 1),
            "pipeline_msgs_per_s": round(pipeline, 1),
            "ratio": round(pipeline / naive, 2),
            "notify_call_ms_p50": round(percentile(call_ms, 50), 3),
            "notify_call_ms_p99": round(percentile(call_ms, 99), 3),
            "e2e_inapp_ms_p50": round(percentile(e2e_ms, 50), 1),
            "e2e_inapp_ms_p99": round(percentile(e2e_ms, 99), 1),
            "rate_limit_per_s": RATE_LIMIT_PER_S,
            "rate_limit_achieved_per_s": round(achieved, 2),
            "rate_limit_achieved_ratio": round(achieved / RATE_LIMIT_PER_S, 3),
            "bulk_marketing_deliveries": bulk * 2,
            "e2e_inapp_ms_p50_under_bulk": round(percentile(under_bulk_ms, 50), 1),
            "e2e_inapp_ms_p99_under_bulk": round(percentile(under_bulk_ms, 99), 1),
            "under_bulk_samples_overlapping": overlapped,
        }

    def campaign_phases(self, options: dict[str, Any]) -> dict[str, Any]:
        """A campaign step to 10,000 and to N users (in-app + email), and to N users in-app only
        and email only, each beside the heavy and the thin naive baselines on the same channels
        (one task per recipient; see the module's docstring for what each writes); worker memory
        at 10,000 and N; transactional in-app latency during the N-user in-app + email run."""
        big, naive_n = options["users"], options["naive_recipients"]
        mixes_run = CAMPAIGN_MIXES if options["mixes"] == "all" else CAMPAIGN_MIXES[:1]
        users = self.users(big + 200)
        audience, probes = users[:big], users[big:]
        self.tag(audience[:10_000], "bench-10k")
        self.tag(audience, f"bench-{big}")
        self.clean()
        bulk_queues = [*lane_queues(Lane.BULK), NAIVE_QUEUE]
        tx_queues = [*lane_queues(Lane.TRANSACTIONAL), MAINTENANCE_QUEUE]
        naive: dict[str, float] = {}
        thin: dict[str, float] = {}
        with self.workers([("naive", bulk_queues, 2, {})]):
            for prefix, channels in mixes_run:
                self.say(f"naive baselines, {'+'.join(channels)}: {naive_n} recipients each")
                naive[prefix] = self.run_naive(audience[:naive_n], channels)
                self.clean()
                thin[prefix] = self.run_thin_naive(audience[:naive_n], channels)
        self.clean()
        runs: dict[str, tuple[float, float, list[float]]] = {}
        plan = [("10k", 10_000, "bench-10k", CHANNELS)]
        plan += [(prefix, big, f"bench-{big}", channels) for prefix, channels in mixes_run]
        for key, size, tag, channels in plan:
            # The bulk worker takes the bulk lane's queues only, as deploy/ runs it (and so
            # runs niced, NOTIFIER_BULK_WORKER_NICE): the naive baselines' queue is not one.
            bulk_lane: list[tuple[str, list[str], int, dict[str, str]]] = [
                ("bulk", lane_queues(Lane.BULK), 2, {})
            ]
            with self.workers([("tx", tx_queues, 1, {}), *bulk_lane]) as pool:
                runs[key] = self.run_campaign(
                    size, tag, pool, probes if key == "" else [], channels=channels
                )
            self.clean()
        rate, rss_big, e2e = runs[""]
        mixes: dict[str, Any] = {}
        for prefix, _channels in mixes_run:
            mix_rate = runs[prefix][0]
            if prefix:  # in-app + email keeps its keys as they were (see below)
                mixes[f"{prefix}campaign_recipients_per_s"] = round(mix_rate, 1)
                mixes[f"naive_{prefix}recipients_per_s"] = round(naive[prefix], 1)
                mixes[f"{prefix}campaign_ratio"] = round(mix_rate / naive[prefix], 2)
            mixes[f"thin_naive_{prefix}recipients_per_s"] = round(thin[prefix], 1)
            mixes[f"{prefix}campaign_ratio_thin"] = round(mix_rate / thin[prefix], 2)
        return {
            "campaign_users": big,
            "campaign_recipients_per_s": round(rate, 1),
            "naive_recipients_per_s": round(naive[""], 1),
            "campaign_ratio": round(rate / naive[""], 2),
            **mixes,
            "campaign_recipients_per_s_10k": round(runs["10k"][0], 1),
            "peak_worker_rss_mb_10k": round(runs["10k"][1], 1),
            f"peak_worker_rss_mb_{big // 1000}k": round(rss_big, 1),
            "rss_ratio": round(rss_big / runs["10k"][1], 3),
            "e2e_inapp_ms_p50_during_fanout": round(percentile(e2e, 50), 1),
            "e2e_inapp_ms_p99_during_fanout": round(percentile(e2e, 99), 1),
            "e2e_samples_during_fanout": len(e2e),
        }

    def per_channel_phases(self, options: dict[str, Any]) -> dict[str, Any]:
        """One worker process (-c 1) at a time, alone on one queue: prepare messages for all four
        channels, then deliver each channel's queue. The sandbox providers answer at once, so
        these are the pipeline's own costs per process; a real provider adds its latency to
        every send."""
        n = options["per_channel_users"]
        users = self.users(n)
        self.clean()
        self.reachable_everywhere(users)
        lane = Lane.TRANSACTIONAL  # order.shipped: the bulk lane runs the same code
        result: dict[str, Any] = {"per_channel_messages": n}
        self.say(f"per process: prepare {n} messages x {len(ALL_CHANNELS)} channels, -c 1")
        with self.workers([("prepare", [prepare_queue(lane)], 1, {})]):
            start = time.perf_counter()
            notify_many(
                users,
                TYPE_KEY,
                CONTEXT,
                channels=ALL_CHANNELS,
                idempotency_key=f"bench-channels:{uuid.uuid4().hex}",
            )
            routed = Message.objects.filter(routed_at__isnull=False)
            self.wait_for("prepare", routed.count, n)
            result["per_process_prepare_msgs_per_s"] = round(n / (time.perf_counter() - start), 1)
        broker = self.broker()
        for channel in ALL_CHANNELS:
            deliveries = Delivery.objects.filter(channel=channel)
            total = deliveries.count()
            finished = deliveries.filter(status__in=TERMINAL)
            queue = deliver_queue(lane, Channel(channel))
            if total and finished.count() == total:
                # In-app is written sent as it is routed: the prepare figure above includes it,
                # and there is no deliver step to measure (None: "sent at routing").
                result[f"per_process_deliver_{channel}_per_s"] = None
                continue
            # The channel's tasks wait aside while its worker starts, then come back at once:
            # the clock runs from the first task the worker can see to the last delivery.
            broker.rename(queue, f"bench.parked.{queue}")
            with self.workers([(channel, [queue], 1, {})]):
                start = time.perf_counter()
                broker.rename(f"bench.parked.{queue}", queue)
                self.wait_for(f"deliver {channel}", finished.count, total)
                rate = total / (time.perf_counter() - start)
            sent = deliveries.filter(status="sent").count()
            if sent != total:
                raise CommandError(f"{channel}: {total - sent} of {total} not sent")
            result[f"per_process_deliver_{channel}_per_s"] = round(rate, 1)
        self.clean()
        # Leave the bench users as the other phases expect them: email only.
        Device.objects.filter(user__in=users).delete()
        Recipient.objects.filter(user_id__in=[u.pk for u in users]).update(phone="")
        return result

    def api_phases(self, options: dict[str, Any]) -> dict[str, Any]:
        """POST /api/v1/notify through gunicorn against notify() in this process, one call of
        each in turn (so a busy moment of the machine hits both), same user, type, context and
        channel; no worker runs, both only publish. The API call's time is the client's: the
        request written, the server's auth (key lookup, rate limit) and notify(), the 202 read."""
        n = options["api_samples"]
        users = self.users(n + API_WARMUP)
        self.clean()
        made = api_key_create(name="bench", scopes=["notify"], rate_limit="1000000/s")
        site = LoopbackSite(ROOT)
        self.say(f"notify over HTTP (gunicorn gthread, kept connection) and in process, {n} each")
        calls_ms: list[float] = []
        api_ms: list[float] = []
        try:
            site.wait_ready()
            client = KeptConnection(site.port, made.token)
            for index, user in enumerate(users):
                start = time.perf_counter()
                notify(user, TYPE_KEY, CONTEXT, channels=["inapp"])
                call_ms = (time.perf_counter() - start) * 1000
                body = {
                    "user": user.pk,
                    "type": TYPE_KEY,
                    "context": CONTEXT,
                    "channels": ["inapp"],
                }
                start = time.perf_counter()
                status, answer = client.post("/api/v1/notify", body)
                http_ms = (time.perf_counter() - start) * 1000
                if status != 202:
                    raise CommandError(f"POST /api/v1/notify answered {status}: {answer[:300]!r}")
                if index >= API_WARMUP:  # the first calls warm both processes' caches
                    calls_ms.append(call_ms)
                    api_ms.append(http_ms)
            client.close()
        finally:
            site.stop()
            ApiKey.objects.filter(pk=made.key.pk).delete()
        self.broker().delete(*ALL_QUEUES)  # no worker ran: nothing should take these later
        self.clean()
        api_p50, call_p50 = percentile(api_ms, 50), percentile(calls_ms, 50)
        return {
            "api_notify_samples": n,
            "api_notify_ms_p50": round(api_p50, 3),
            "api_notify_ms_p99": round(percentile(api_ms, 99), 3),
            "api_notify_inprocess_ms_p50": round(call_p50, 3),
            "api_notify_inprocess_ms_p99": round(percentile(calls_ms, 99), 3),
            "api_notify_overhead_ms_p50": round(api_p50 - call_p50, 3),
        }

    def profile_phases(self, out: str = "") -> dict[str, Any]:
        """One campaign batch of PROFILE_BATCH users (in-app + email, run_campaign's copy) in this
        process: written by step_fanout_batch, then its deliveries delivered, with publishing
        stubbed (the deliveries are delivered here instead). A first batch warms up, a second is
        timed (ms per recipient), a third runs under cProfile: its self time by area, in %."""
        from campaigns.services.fanout import step_fanout_batch
        from campaigns.services.segments import segment_walk
        from notifier import dispatch
        from notifier.services.deliveries import deliveries_deliver

        users = self.users(PROFILE_BATCH * 3)
        self.tag(users, "bench-profile")
        self.clean()
        step = self.campaign_step(len(users), "bench-profile", CHANNELS)
        batches: list[list[int]] = []
        after: int | None = 0
        while after is not None:
            ids, after = segment_walk(step.campaign.segment, after=after, limit=PROFILE_BATCH)
            batches += [list(ids)] if ids else []
        if len(batches) < 3:
            raise CommandError(f"profile: {len(batches)} batches of the segment, not 3")
        published: list[list[int]] = []

        def collect(delivery_ids: Sequence[int], *args: object, **kwargs: object) -> None:
            published.append(list(delivery_ids))

        def one_batch(recipient_ids: list[int], step_id: int = step.pk) -> None:
            step_fanout_batch(step_id=step_id, recipient_ids=recipient_ids)
            while published:  # a delivery put back for later is not delivered again here
                for batch in dispatch.chunks(published.pop(0)):
                    deliveries_deliver(delivery_ids=batch)

        self.say(f"profile: one batch of {PROFILE_BATCH} users, in-app + email, in process")
        # As in a worker (notifier.celery_config): what the process has loaded is out of the
        # collector's sight, so a full collection walks the batch's objects, not all of Django;
        # without it, one such collection (tens of ms) landed in whichever area was allocating.
        garbage_collection_tune()
        profiler = cProfile.Profile()
        with mock.patch.object(dispatch, "publish_deliver", collect):
            one_batch(batches[0])
            start = time.perf_counter()
            one_batch(batches[1])
            elapsed = time.perf_counter() - start
            profiler.enable()
            one_batch(batches[2])
            profiler.disable()
            large = self.large_email_batches(batches, one_batch)
        self.broker().delete(*ALL_QUEUES)  # anything else the batches published: no worker ran
        self.clean()
        if out:
            profiler.dump_stats(out)
        stats = pstats.Stats(profiler).stats  # type: ignore[attr-defined]
        return {
            "profile_batch_users": PROFILE_BATCH,
            "profile_batch_ms_per_recipient": round(elapsed * 1000 / PROFILE_BATCH, 3),
            "profile_batch_pct": area_shares(stats),
            **large,
        }

    def large_email_batches(
        self, batches: list[list[int]], one_batch: Callable[[list[int], int], None]
    ) -> dict[str, Any]:
        """An email step whose HTML is of a real marketing email's size, one batch written and
        delivered with the large-value columns on pglz, then one on LZ4 (after a warm-up batch):
        ms per recipient of each, and the ratio. Nothing where the server has no LZ4."""
        from django.db import connection

        from notifier.migrations._compression import lz4_available

        if not lz4_available(connection):
            self.say("large email: this PostgreSQL has no LZ4, not measured")
            return {}
        step = self.campaign_step(
            len(batches) * PROFILE_BATCH, "bench-profile", ["email"], email_html=LARGE_EMAIL_HTML
        )
        self.say(f"large email: {len(LARGE_EMAIL_HTML)} bytes of HTML, pglz then LZ4")
        ms: dict[str, float] = {}
        for batch, method in zip(batches, ["lz4", "pglz", "lz4"], strict=True):
            self.large_value_compression(method)
            start = time.perf_counter()
            one_batch(batch, step.pk)
            # The first (a warm-up) is overwritten by the third.
            ms[method] = (time.perf_counter() - start) * 1000 / len(batch)
        self.large_value_compression("lz4")
        return {
            "large_email_html_bytes": len(LARGE_EMAIL_HTML),
            "large_email_ms_per_recipient_pglz": round(ms["pglz"], 3),
            "large_email_ms_per_recipient_lz4": round(ms["lz4"], 3),
            "large_email_lz4_speedup": round(ms["pglz"] / ms["lz4"], 2),
        }

    @staticmethod
    def large_value_compression(method: str) -> None:
        from django.apps import apps
        from django.db import connection

        from notifier.migrations._compression import LARGE_VALUE_COLUMNS, compression_set

        compression_set(connection, apps, LARGE_VALUE_COLUMNS, method)

    @staticmethod
    def broker() -> redis.Redis:
        """The Redis broker, with no timeout: FLUSHDB of a full database takes what it takes."""
        client = broker_client(timeout_s=None)
        if client is None:
            raise CommandError("bench needs a Redis broker: set CELERY_BROKER_URL=redis://...")
        return client

    def reachable_everywhere(self, users: list[User]) -> None:
        """A phone number and an active push device for each user, so no channel is skipped."""
        profiles = recipients_for(user.pk for user in users)
        for index, user in enumerate(users):
            profiles[user.pk].phone = f"+86138{index:08d}"
        Recipient.objects.bulk_update(list(profiles.values()), ["phone"], batch_size=1000)
        Device.objects.filter(user__in=users).delete()
        Device.objects.bulk_create(
            [
                Device(user=user, platform=Platform.ANDROID, token=f"bench-{user.pk}")
                for user in users
            ],
            batch_size=1000,
        )

    def tag(self, users: list[User], tag: str) -> None:
        ids = [u.pk for u in users]
        for start in range(0, len(ids), 20_000):
            with connection.cursor() as cursor:
                cursor.execute(
                    "UPDATE notifier_recipient SET interest_tags = interest_tags || %s::jsonb "
                    "WHERE user_id = ANY(%s) AND NOT interest_tags ? %s",
                    [json.dumps([tag]), ids[start : start + 20_000], tag],
                )
        # No ANALYZE here: the walk's first batch refreshes the profiles' statistics itself
        # after a bulk change such as this one (campaigns.services.segments.segment_walk).
        # But the dead row versions the tagging left go, as autovacuum's VACUUM would take
        # them on a live database: where it is off (this machine's PostgreSQL), each phase's
        # tagging left five dead versions per profile and the batches' reads waded through
        # them.
        with connection.cursor() as cursor:
            cursor.execute("VACUUM notifier_recipient")

    def campaign_step(
        self, size: int, tag: str, channels: Sequence[str], email_html: str = ""
    ) -> Any:
        """A running, approved one-step campaign to the users tagged `tag`, with the bench's
        copy for `channels` (a marketing promotion; `email_html`: other HTML for the email):
        its step."""
        from campaigns.models import Campaign, CampaignStep, Segment, VariantTemplate
        from campaigns.services.definitions import campaign_definition
        from campaigns.services.lifecycle import campaign_create
        from notifier.models import NotificationType

        segment, _ = Segment.objects.get_or_create(
            name=f"bench {tag}", defaults={"tags_any": [tag]}
        )
        campaign = campaign_create(
            name=f"bench {size}" if list(channels) == CHANNELS else f"bench {size} {channels[0]}",
            category=NotificationType.objects.get(pk="promo.flash_sale"),
            created_by=None,
            segment=segment,
            event_at=timezone.now() + timedelta(days=4),
            channels=list(channels),
            variables={"headline": "Everything must go"},
            plan=[("Notice", -3 * 24 * 60)],
        )
        step = campaign.steps.get()
        variant = step.variants.get()
        if "inapp" in channels:
            VariantTemplate.objects.create(
                variant=variant,
                channel="inapp",
                title="{{ headline }}",
                body="Hi {{ user.first_name }}",
                link="https://shop.example.com/sale",
            )
        if "email" in channels:
            VariantTemplate.objects.create(
                variant=variant,
                channel="email",
                subject="{{ campaign.name }}: {{ headline }}",
                body="Hi {{ user.first_name }}, see https://shop.example.com/sale\n"
                "{{ unsubscribe_url }}",
                html=email_html
                or '<p>Hi {{ user.first_name }}</p><a href="https://shop.example.com/sale">'
                "Sale</a>",
            )
        # As a lead would leave it: approved (the walk checks what approval covered), running.
        Campaign.objects.filter(pk=campaign.pk).update(
            status="running",
            started_at=timezone.now(),
            approved_definition=campaign_definition(campaign.pk),
        )
        CampaignStep.objects.filter(pk=step.pk).update(status="running", started_at=timezone.now())
        return step

    def run_campaign(
        self,
        size: int,
        tag: str,
        pool: list[subprocess.Popen[bytes]],
        probes: list[User],
        channels: Sequence[str] = CHANNELS,
    ) -> tuple[float, float, list[float]]:
        from campaigns.dispatch import publish_walk
        from campaigns.models import CampaignStep

        step = self.campaign_step(size, tag, channels)
        self.say(f"campaign: one step to {size} recipients, {' + '.join(channels)}")
        sampler = RssSampler(pool)
        start = time.perf_counter()
        publish_walk(step.pk)
        total, e2e = size * len(channels), []
        probe = iter(probes)
        next_count = next_probe = next_say = 0.0
        while True:
            sampler.sample()
            now = time.monotonic()
            # Looked at every 0.2 s (a 10,000-user run lasts a few seconds, and checking every
            # 2 s made its figure jump by a third), said every 2 s. The look must cost the run
            # next to nothing: it shares the two cores with it.
            if now >= next_count:
                # Done when the step's every batch is written and no delivery is on its way:
                # the step's counters, then whether the partial index of deliveries in flight
                # has any entry at all. Never a count every 0.2 s: counting 40,000 deliveries in
                # flight took 60 ms of PostgreSQL each time, a third of a core taken from the run.
                walked, written, handed_out = CampaignStep.objects.values_list(
                    "walk_done", "batches_done", "batches_total"
                ).get(pk=step.pk)
                in_flight = Delivery.objects.filter(status__in=IN_FLIGHT_OR_HELD)
                if walked and written >= handed_out and not in_flight.exists():
                    break
                if now >= next_say:
                    elapsed = time.perf_counter() - start
                    rate = written * settings.NOTIFIER_CAMPAIGN_BATCH_USERS / max(elapsed, 1e-9)
                    self.say(
                        f"  {written}/{handed_out} batches written"
                        f"{'' if walked else ' (walk going on)'}, {in_flight.count()} deliveries "
                        f"in flight, about {rate:.0f} recipients/s written, "
                        f"worker RSS peak {sampler.peak_mb:.0f} MB"
                    )
                    next_say = now + 2
                next_count = now + 0.2
            if now >= next_probe and (user := next(probe, None)) is not None:
                e2e.append(self.inapp_e2e_ms(user)[1])  # one transactional probe a second
                next_probe = now + 1
            time.sleep(0.05)
            if time.perf_counter() - start > 1800:
                raise CommandError(f"campaign of {size}: not finished after 30 min")
        elapsed = time.perf_counter() - start
        # Once, after the clock (the transactional probes' deliveries are counted too).
        done = Delivery.objects.filter(status__in=TERMINAL).count()
        if done < total:
            raise CommandError(f"campaign of {size}: {done} of {total} deliveries finished")
        return size / elapsed, sampler.peak_mb, e2e

    # --- setup -------------------------------------------------------------------------------

    def say(self, text: str) -> None:
        self.stderr.write(text)

    def users(self, count: int) -> list[User]:
        """Bench users: reachable by email, no quiet hours (the bench may run at night), and
        consent to marketing (the under-bulk run sends a promotion)."""
        existing = User.objects.filter(username__startswith="bench-").count()
        if existing < count:
            User.objects.bulk_create(
                [
                    User(
                        username=f"bench-{i}",
                        email=f"bench-{i}@example.com",
                        first_name="Bench",
                        password="!",
                    )
                    for i in range(existing, count)
                ]
            )
        chosen = list(User.objects.filter(username__startswith="bench-").order_by("pk")[:count])
        recipients_for(u.pk for u in chosen)  # bulk_create made no profiles
        Recipient.objects.filter(user_id__in=[u.pk for u in chosen]).update(
            quiet_hours_enabled=False
        )
        with_consent = set(
            Consent.objects.filter(user__in=chosen, granted=True).values_list("user_id", flat=True)
        )
        Consent.objects.bulk_create(
            [
                Consent(
                    user=u,
                    channel="all",
                    granted=True,
                    at=timezone.now(),
                    source="bench",
                    wording="bench",
                )
                for u in chosen
                if u.pk not in with_consent
            ]
        )
        with connection.cursor() as cursor:  # fresh statistics, as a live database has them
            cursor.execute("ANALYZE")
        return chosen

    def clean(self) -> None:
        with connection.cursor() as cursor:
            cursor.execute(f"TRUNCATE {', '.join(TABLES)} RESTART IDENTITY CASCADE")

    def start_worker(
        self, label: str, queues: list[str], concurrency: int, env: dict[str, str]
    ) -> subprocess.Popen[bytes]:
        name = f"bench-{label}-{uuid.uuid4().hex[:6]}@localhost"
        argv = worker_argv(
            name=name, queues=queues, concurrency=concurrency, include=("notifier_site.benchmarks",)
        )
        worker = subprocess.Popen(
            argv, cwd=ROOT, env={**os.environ, **env}, stdout=subprocess.DEVNULL
        )
        deadline = time.monotonic() + 60
        while not app.control.ping(destination=[name], timeout=0.5):
            if worker.poll() is not None or time.monotonic() > deadline:
                raise CommandError(f"the bench worker {label} did not start")
        return worker

    @staticmethod
    def rss_sampler(pool: list[subprocess.Popen[bytes]]) -> RssSampler:
        return RssSampler(pool)

    def workers(self, specs: list[tuple[str, list[str], int, dict[str, str]]]) -> Any:
        command = self

        class Running:
            def __enter__(self) -> list[subprocess.Popen[bytes]]:
                self.started = [command.start_worker(*spec) for spec in specs]
                return self.started

            def __exit__(self, *exc: object) -> None:
                for worker in self.started:
                    worker.terminate()
                for worker in self.started:
                    worker.wait(timeout=60)

        return Running()

    def wait_for(
        self, label: str, done: Callable[[], int], total: int, timeout: float = 900
    ) -> None:
        deadline = time.monotonic() + timeout
        last_report = 0.0
        while True:
            count = done()
            if count >= total:
                return
            if time.monotonic() - last_report > 2:
                self.say(f"  {label}: {count}/{total}")
                last_report = time.monotonic()
            if time.monotonic() > deadline:
                raise CommandError(f"{label}: only {count}/{total} after {timeout}s")
            time.sleep(0.05)

    def finished_deliveries(self) -> int:
        return Delivery.objects.filter(status__in=TERMINAL).count()

    # --- phases ------------------------------------------------------------------------------

    def run_naive(self, users: list[User], channels: Sequence[str] = CHANNELS) -> float:
        self.say("naive baseline: one task per recipient, one INSERT per row")
        start = time.perf_counter()
        for user in users:
            naive_notify.apply_async(
                args=(user.pk, TYPE_KEY, CONTEXT, list(channels)), queue=NAIVE_QUEUE
            )
        self.wait_for("naive", self.finished_deliveries, len(users) * len(channels))
        return len(users) / (time.perf_counter() - start)

    def run_thin_naive(self, users: list[User], channels: Sequence[str]) -> float:
        """The thin baseline: per recipient one task that renders its copy and INSERTs one row
        into a table of the bench's own, dropped afterwards."""
        self.say("thin naive baseline: one task per recipient, one log row each")
        with connection.cursor() as cursor:
            cursor.execute(THIN_LOG_CREATE)
            cursor.execute(f"TRUNCATE {THIN_LOG_TABLE}")

        def logged() -> int:
            with connection.cursor() as cursor:
                cursor.execute(f"SELECT count(*) FROM {THIN_LOG_TABLE}")
                return int(cursor.fetchone()[0])

        start = time.perf_counter()
        for user in users:
            thin_naive_notify.apply_async(
                args=(user.pk, TYPE_KEY, CONTEXT, list(channels)), queue=NAIVE_QUEUE
            )
        self.wait_for("thin naive", logged, len(users))
        rate = len(users) / (time.perf_counter() - start)
        with connection.cursor() as cursor:
            cursor.execute(f"DROP TABLE {THIN_LOG_TABLE}")
        return rate

    def run_pipeline(self, users: list[User]) -> float:
        self.say("pipeline: notify_many -> batched prepare -> batched deliver per channel")
        start = time.perf_counter()
        notify_many(
            users, TYPE_KEY, CONTEXT, channels=CHANNELS, idempotency_key=f"bench:{uuid.uuid4().hex}"
        )
        self.wait_for("pipeline", self.finished_deliveries, len(users) * len(CHANNELS))
        return len(users) / (time.perf_counter() - start)

    def inapp_e2e_ms(self, user: User) -> tuple[float, float]:
        """One transactional in-app notify(): (call ms, ms from return to the inbox row)."""
        start = time.perf_counter()
        message = notify(user, TYPE_KEY, CONTEXT, channels=["inapp"])
        call_ms = (time.perf_counter() - start) * 1000
        returned = datetime.now(UTC)
        deadline = time.monotonic() + 30
        while True:
            # By the message's own index, unordered (first() orders by id, which a planner
            # short of statistics walked the primary key for, several ms every 2 ms).
            created = next(
                iter(
                    InboxItem.objects.filter(message_id=message.pk)
                    .order_by()
                    .values_list("created_at", flat=True)[:1]
                ),
                None,
            )
            if created is not None:
                return call_ms, (created - returned).total_seconds() * 1000
            if time.monotonic() > deadline:
                raise CommandError(f"message {message.pk} never reached the inbox")
            time.sleep(0.002)

    def idle_latencies(self, users: list[User]) -> tuple[list[float], list[float]]:
        """One notify() at a time on an idle system, each waiting for the last to land: the
        caller's cost (one INSERT and one publish) and in-app end to end."""
        self.say("notify() call and in-app end to end, one at a time on an idle system")
        calls, e2e = [], []
        for user in users:
            call_ms, e2e_ms = self.inapp_e2e_ms(user)
            calls.append(call_ms)
            e2e.append(e2e_ms)
            # The worker acks and tidies up after the inbox row commits; let it finish so the
            # next call meets an idle system, as this measure promises.
            time.sleep(IDLE_GAP_S)
        return calls, e2e

    def rate_limited(self, users: list[User]) -> float:
        """Emails under a global limit shared by two worker processes: sends per second."""
        self.say(f"global rate limit {RATE_LIMIT_PER_S}/s, two worker processes")
        notify_many(
            users,
            TYPE_KEY,
            CONTEXT,
            channels=["email"],
            idempotency_key=f"bench-rate:{uuid.uuid4().hex}",
        )
        self.wait_for("rate-limited", self.finished_deliveries, len(users))
        times = sorted(SandboxSend.objects.filter(outcome="sent").values_list("at", flat=True))
        # The bucket starts full: one second's worth (the burst) may go at once, by design.
        # The limit is the sustained rate, so it is measured from the end of that burst.
        steady = times[RATE_LIMIT_PER_S:]
        return (len(steady) - 1) / (steady[-1] - steady[0]).total_seconds()

    def e2e_under_bulk(self, bulk_users: list[User], users: list[User]) -> tuple[list[float], int]:
        """Transactional in-app end to end while the bulk lane works through a promotion,
        with a worker per lane as deploy/ runs them (both on this machine's two cores)."""
        deliveries = len(bulk_users) * 2
        self.say(f"in-app end to end while the bulk lane holds {deliveries} marketing deliveries")
        tx_queues = [*lane_queues(Lane.TRANSACTIONAL), MAINTENANCE_QUEUE]
        with self.workers([("tx", tx_queues, 1, {})]):
            notify_many(
                bulk_users,
                "promo.flash_sale",
                SALE,
                channels=["inapp", "email"],
                idempotency_key=f"bench-bulk:{uuid.uuid4().hex}",
            )
            with self.workers([("bulk", lane_queues(Lane.BULK), 2, {})]):
                samples: list[float] = []
                overlapped = 0
                for user in users:
                    bulk_done = Delivery.objects.filter(
                        message__type_id="promo.flash_sale", status__in=TERMINAL
                    ).count()
                    if bulk_done >= deliveries:
                        break
                    overlapped += 1
                    samples.append(self.inapp_e2e_ms(user)[1])
                    time.sleep(IDLE_GAP_S)
                self.wait_for(
                    "bulk",
                    lambda: Delivery.objects.filter(
                        message__type_id="promo.flash_sale", status__in=TERMINAL
                    ).count(),
                    deliveries,
                )
        return samples, overlapped

    def table(self, result: dict[str, Any]) -> None:
        rows: list[tuple[str, str, str]] = []
        if "ratio" in result:
            rows += [
                ("naive baseline", f"{result['naive_msgs_per_s']:.0f} msgs/s", "1.00x"),
                (
                    "pipeline (notify_many)",
                    f"{result['pipeline_msgs_per_s']:.0f} msgs/s",
                    f"{result['ratio']:.2f}x",
                ),
                (
                    "notify() call p50 / p99 (idle)",
                    f"{result['notify_call_ms_p50']:.2f} / {result['notify_call_ms_p99']:.2f} ms",
                    "",
                ),
                (
                    "in-app e2e p50 / p99 (idle)",
                    f"{result['e2e_inapp_ms_p50']:.1f} / {result['e2e_inapp_ms_p99']:.1f} ms",
                    "",
                ),
                (
                    f"rate limit {result['rate_limit_per_s']}/s, 2 workers, sustained",
                    f"{result['rate_limit_achieved_per_s']:.2f}/s",
                    f"{result['rate_limit_achieved_ratio']:.3f} of limit",
                ),
                (
                    f"in-app e2e under {result['bulk_marketing_deliveries']} bulk",
                    f"{result['e2e_inapp_ms_p50_under_bulk']:.1f} / "
                    f"{result['e2e_inapp_ms_p99_under_bulk']:.1f} ms",
                    f"{result['under_bulk_samples_overlapping']} samples",
                ),
            ]
        if "campaign_ratio" in result:
            big = result["campaign_users"]
            rows += [
                (
                    "naive baseline (campaign)",
                    f"{result['naive_recipients_per_s']:.0f} rcpt/s",
                    "1.00x",
                ),
                (
                    f"campaign fan-out, {big} users",
                    f"{result['campaign_recipients_per_s']:.0f} rcpt/s",
                    f"{result['campaign_ratio']:.2f}x",
                ),
            ]
            for prefix, channels in CAMPAIGN_MIXES:
                if f"thin_naive_{prefix}recipients_per_s" not in result:
                    continue  # --mixes inapp+email
                label = "+".join(channels)
                rate_key = f"{prefix}campaign_recipients_per_s"
                rows.append(
                    (
                        f"  thin naive baseline, {label}",
                        f"{result[f'thin_naive_{prefix}recipients_per_s']:.0f} rcpt/s",
                        f"campaign {result[f'{prefix}campaign_ratio_thin']:.2f}x this",
                    )
                )
                if prefix:
                    rows += [
                        (
                            f"  naive baseline, {label}",
                            f"{result[f'naive_{prefix}recipients_per_s']:.0f} rcpt/s",
                            "1.00x",
                        ),
                        (
                            f"  campaign fan-out, {label}, {big} users",
                            f"{result[rate_key]:.0f} rcpt/s",
                            f"{result[f'{prefix}campaign_ratio']:.2f}x",
                        ),
                    ]
            rows += [
                (
                    "peak worker RSS 10k / big",
                    f"{result['peak_worker_rss_mb_10k']:.0f} / "
                    f"{result[f'peak_worker_rss_mb_{big // 1000}k']:.0f} MB",
                    f"{result['rss_ratio']:.2f}x",
                ),
                (
                    "in-app e2e during fan-out",
                    f"{result['e2e_inapp_ms_p50_during_fanout']:.1f} / "
                    f"{result['e2e_inapp_ms_p99_during_fanout']:.1f} ms",
                    f"{result['e2e_samples_during_fanout']} samples",
                ),
            ]
        if "per_process_prepare_msgs_per_s" in result:
            rows.append(
                (
                    "one process (-c 1): prepare, 4 channels",
                    f"{result['per_process_prepare_msgs_per_s']:.0f} msgs/s",
                    f"{result['per_channel_messages']} messages",
                )
            )
            rows += [
                (
                    f"one process (-c 1): deliver {channel}",
                    "sent at routing"
                    if result[f"per_process_deliver_{channel}_per_s"] is None
                    else f"{result[f'per_process_deliver_{channel}_per_s']:.0f} deliveries/s",
                    "sandbox provider",
                )
                for channel in ALL_CHANNELS
            ]
        if "api_notify_ms_p50" in result:
            rows += [
                (
                    "notify over HTTP (gunicorn), p50 / p99",
                    f"{result['api_notify_ms_p50']:.2f} / {result['api_notify_ms_p99']:.2f} ms",
                    f"{result['api_notify_samples']} calls, kept connection",
                ),
                (
                    "notify() in process, same run, p50 / p99",
                    f"{result['api_notify_inprocess_ms_p50']:.2f} / "
                    f"{result['api_notify_inprocess_ms_p99']:.2f} ms",
                    "",
                ),
                (
                    "the HTTP API adds, p50",
                    f"{result['api_notify_overhead_ms_p50']:.2f} ms",
                    "",
                ),
            ]
        if "profile_batch_pct" in result:
            rows.append(
                (
                    f"one batch of {result['profile_batch_users']} in process",
                    f"{result['profile_batch_ms_per_recipient']:.3f} ms/rcpt",
                    "in-app + email, written and delivered",
                )
            )
            rows += [
                (f"  {area}", f"{result['profile_batch_pct'][area]:.1f} %", "of self time")
                for area in AREAS
            ]
        if "large_email_lz4_speedup" in result:
            rows += [
                (
                    f"email of {result['large_email_html_bytes'] // 1000} KB, pglz / LZ4",
                    f"{result['large_email_ms_per_recipient_pglz']:.3f} / "
                    f"{result['large_email_ms_per_recipient_lz4']:.3f} ms/rcpt",
                    f"LZ4 {result['large_email_lz4_speedup']:.2f}x, written and delivered",
                )
            ]
        rows += workflow_rows(result)
        if "sse_connections_per_process" in result:
            rows += live_table_rows(result)
        self.stdout.write(f"{'measure':42} {'value':24} note")
        for name, value, note in rows:
            self.stdout.write(f"{name:42} {value:24} {note}")
