"""Every setting Notifier reads, with its default: the one place to look them up.

A host project sets only what it wants to change, in its own settings module; the rest take the
values below (applied when the app loads, `apply_defaults`). Nothing here reads the environment:
the stand-alone site (notifier_site/settings.py) maps environment variables onto these names.
All are prefixed NOTIFIER_.
"""

from __future__ import annotations

from typing import Any

# --- The site -------------------------------------------------------------------------------
NOTIFIER_SITE_NAME = "Notifier"
# The origin (scheme and host) of links in messages, before the path Django reverses (the mount
# prefix included): unsubscribe and preference-centre links, click tracking, Twilio's status
# callback.
NOTIFIER_SITE_URL = "http://localhost:8000"
NOTIFIER_DEFAULT_LOCALE = "en"
# The languages the end users' pages (inbox, preference centre, unsubscribe) are offered in:
# those Notifier ships translations for, and only those also in the host's LANGUAGES.
NOTIFIER_PAGE_LANGUAGES = ["en", "zh-hans"]
# The region (ISO 3166 code, e.g. CN) whose national phone formats staff may type: support's
# search and contact-point corrections read "138-0013-8000" or "0086 138 ..." as that region's.
# Empty: only numbers written with their country code ("+86 ...") are understood.
NOTIFIER_DEFAULT_REGION = ""
# Modules with more notification types (TypeSpec lists), besides the built-in catalog.
NOTIFIER_CATALOGS: list[str] = []
# Message templates found here first, then in the apps' templates/notifications/ (so a host
# overrides a message's copy by putting notifications/<type>/<channel>.<part>.txt in one).
NOTIFIER_TEMPLATE_DIRS: list[str] = []
# True when the broker is the in-memory transport with an in-process worker (the embedded
# first-run default): Redis-backed limits then run in process.
NOTIFIER_EMBEDDED = False
# Redis for provider rate limits, circuit breakers and request limits; empty: in process.
NOTIFIER_REDIS_URL = ""

# --- What is intrusive in someone else's project: off unless asked for ----------------------
# Register a UserAdmin for the user model (the stand-alone site's own users).
NOTIFIER_ADMIN_USER = False
# Replace django-celery-beat's periodic task admin with one that offers its actions only to
# those who may change periodic tasks.
NOTIFIER_ADMIN_REPLACE_BEAT = False
# Re-apply the role matrix (notifier/roles.py) to the staff groups after every migrate.
NOTIFIER_SYNC_ROLES_ON_MIGRATE = False

# --- Health probes of workers and beat (notifier/operations/probe.py) ---------------------
# Each worker (and beat) writes its heartbeat and state here;
# `python -m notifier.operations.probe worker` (or `beat`) reads them. Empty: nothing written.
NOTIFIER_PROBE_DIR = ""
NOTIFIER_WORKER_HEARTBEAT_S = 5.0

# --- The pipeline ---------------------------------------------------------------------------
# Retries: exponential backoff with full jitter, capped so broker ETAs stay short.
NOTIFIER_MAX_ATTEMPTS = 5
NOTIFIER_RETRY_BASE_S = 2.0
NOTIFIER_RETRY_MAX_S = 300.0
# Work older than this is presumed lost by the broker and re-queued from the database.
NOTIFIER_REQUEUE_AFTER_S = 120
# A sender's lease on the deliveries it claimed: renewed between sends (every fifth of it)
# while the sender lives, so only a dead sender's claims run out and are taken back, by the
# claims sweep every NOTIFIER_CLAIM_SWEEP_S. Keep it above the longest single provider call
# (EMAIL_TIMEOUT, the 10 s HTTP timeouts of Twilio and Web Push).
NOTIFIER_CLAIM_LEASE_S = 15.0
NOTIFIER_CLAIM_SWEEP_S = 5.0
# The release beat (every 15 s) also publishes a wake-up at the time of each second in which
# held deliveries come due within this many seconds (an escalation step, a scheduled send), so
# they go at their time rather than up to a tick late. 0: releases happen at the ticks only.
NOTIFIER_RELEASE_LOOKAHEAD_S = 16.0
# Transactional deliveries queued this long past due are presumed lost (their task died with
# a worker) and published again by the claims sweep; the rest wait NOTIFIER_REQUEUE_AFTER_S.
NOTIFIER_TRANSACTIONAL_REQUEUE_AFTER_S = 10
# Accepted sends are recorded as they happen; only a provider answering faster than this has
# its answers gathered, at most this long, into one write (a crash re-sends at most these).
NOTIFIER_RECORD_WITHIN_MS = 10.0
NOTIFIER_BATCH_SIZE = 500
# Campaign fan-out hands the audience out in batches of this many users (one task each).
NOTIFIER_CAMPAIGN_BATCH_USERS = 1000
# Celery time limits of the tasks that render (prepare, campaign fan-out; deliver renders
# fallbacks). At the soft limit the message being rendered fails alone ("Rendering took too
# long") and the rest of its batch goes on in a fresh task; at the hard limit the pool kills
# the process. A sender's claims are its for as long as it lives (the lease above).
NOTIFIER_PREPARE_SOFT_TIME_LIMIT_S = 30
NOTIFIER_PREPARE_TIME_LIMIT_S = 60
NOTIFIER_DELIVER_SOFT_TIME_LIMIT_S = 120
NOTIFIER_DELIVER_TIME_LIMIT_S = 150
# A message whose prepare run died this many times (killed, out of memory, hard time limit)
# is failed with that reason instead of being tried again; its batch-mates go on without it.
NOTIFIER_PREPARE_MAX_CRASHES = 3
# The wall-clock time one campaign preview page may spend rendering copy, all cells together.
NOTIFIER_PREVIEW_BUDGET_S = 5.0

# --- Retention of the delivery log (notifier/services/retention.py) -------------------------
# Nightly, finished messages older than this many days are archived to gzip JSON Lines files in
# NOTIFIER_ARCHIVE_DIR, then deleted, in batches of NOTIFIER_RETENTION_BATCH messages, for at
# most NOTIFIER_RETENTION_BUDGET_S per run. 0 keeps everything.
NOTIFIER_RETENTION_DAYS = 0
NOTIFIER_RETENTION_BATCH = 1000
NOTIFIER_RETENTION_BUDGET_S = 900.0
NOTIFIER_ARCHIVE_DIR = "var/archive"

# --- Delivery policies ----------------------------------------------------------------------
# Marketing needs recorded consent on these channels (in-app messages inside the product do not).
NOTIFIER_CONSENT_CHANNELS = ["email", "sms", "push"]
# Quiet hours in each user's time zone (overridable per user); held messages are released
# spread over NOTIFIER_QUIET_RELEASE_WINDOW_S after they end, not all at once.
NOTIFIER_QUIET_HOURS = "22:00-08:00"
NOTIFIER_QUIET_RELEASE_WINDOW_S = 1800
# Marketing frequency caps per user, in the user's own calendar days and weeks. Each 👎
# "irrelevant" on a category within NOTIFIER_FEEDBACK_PENALTY_DAYS lowers its weekly cap by one.
NOTIFIER_MARKETING_CAP_DAY = 1
NOTIFIER_MARKETING_CAP_WEEK = 2
NOTIFIER_FEEDBACK_PENALTY_DAYS = 30
# A marketing message with no expiry is stale this long after it was made.
NOTIFIER_MARKETING_TTL_H = 72
# Backpressure: above this many tasks waiting in the bulk queues, marketing and low-priority
# messages are held instead of queued, and released as the queues drain.
NOTIFIER_BULK_HIGH_WATER = 200
# A worker that consumes only bulk-lane queues (bulk.prepare, bulk.tests, bulk.<channel>) raises
# its nice value by this much when it starts (its pool processes inherit it), so that wherever
# it shares CPUs with transactional workers the kernel runs theirs first. 0 leaves it alone.
NOTIFIER_BULK_WORKER_NICE = 10
# A worker of the app freezes what it loaded out of the garbage collector's sight when it
# starts (gc.freeze: notifier/celery_config.py). False leaves the collector as Python sets it.
NOTIFIER_WORKER_GC_TUNE = True
# Global provider rate limits shared by all workers (notifier/provider_limits.py), as
# {"channel:provider": "amount/period"} (the grammar of notifier/rates.py), e.g.
# {"sms:twilio": "10/s", "email:django": "100/s"}.
NOTIFIER_RATE_LIMITS: dict[str, str] = {}
# Circuit breaker per provider: when at least NOTIFIER_CIRCUIT_MIN_CALLS calls within the window
# were made and NOTIFIER_CIRCUIT_FAILURE_RATIO of them failed for the provider's sake (timeouts,
# 429, 5xx), it opens for the cooldown; successes count, so a few soft failures never open it.
NOTIFIER_CIRCUIT_FAILURE_RATIO = 0.5
NOTIFIER_CIRCUIT_MIN_CALLS = 20
NOTIFIER_CIRCUIT_WINDOW_S = 30
NOTIFIER_CIRCUIT_COOLDOWN_S = 30
# A provider that answers 429/5xx with a Retry-After is left alone that long by every worker
# (its messages go to the next provider of the chain), but never longer than this.
NOTIFIER_PROVIDER_MAX_PAUSE_S = 300.0
# Signed links (unsubscribe, preference centre) stay valid this long.
NOTIFIER_LINK_MAX_AGE_DAYS = 365

# --- The HTTP API (notifier/http_api/) --------------------------------------------------
# Requests one API key may make, unless the key has its own limit ("count/period").
NOTIFIER_API_KEY_RATE_LIMIT = "50/s"
# notify_many over HTTP: at most this many recipients in one call.
NOTIFIER_API_BULK_MAX = 1000
# `PUT /recipients/{external_id}` for an id the site has never seen: a dotted path to a
# function (external_id) -> a saved user, whose profile becomes the recipient. Empty: the
# caller links a user of the project (`"user": <key>`); the stand-alone site makes its own
# people ("notifier.services.recipients.standalone_user").
NOTIFIER_RECIPIENT_USER_FACTORY = ""
# App tokens (a mobile app or web page acting for one recipient): how long one lasts, and the
# requests per recipient they may make together.
NOTIFIER_APP_TOKEN_MAX_AGE_S = 30 * 24 * 3600
NOTIFIER_APP_TOKEN_RATE_LIMIT = "5/s"

# --- Events out: signals and outbound webhooks (notifier/events_out/) ----------------------
# A failed request is retried with exponential backoff (equal jitter) from
# NOTIFIER_WEBHOOK_RETRY_BASE_S up to NOTIFIER_WEBHOOK_RETRY_MAX_S between tries, for this long
# after the event; then the event is given up (state "failed", seen in the admin).
NOTIFIER_WEBHOOK_RETRY_FOR_S = 3 * 24 * 3600
NOTIFIER_WEBHOOK_RETRY_BASE_S = 5.0
NOTIFIER_WEBHOOK_RETRY_MAX_S = 3600.0
# An endpoint whose every request failed for this long, and at least this many times in a
# row, is disabled (with the reason, and an operator alert); its events wait for re-enabling.
NOTIFIER_WEBHOOK_DISABLE_AFTER_S = 24 * 3600
NOTIFIER_WEBHOOK_DISABLE_AFTER_FAILURES = 20
# Connect and read timeouts of one request (each); the answer's body is kept up to this many
# characters in the attempt's row. A sender's lease on the events it claimed outlives both.
NOTIFIER_WEBHOOK_TIMEOUT_S = 5.0
NOTIFIER_WEBHOOK_RESPONSE_MAX_CHARS = 500
NOTIFIER_WEBHOOK_LEASE_S = 60.0
# A send task waits this long after the first event it was published for, so the events of a
# busy moment go out together (in batches of each endpoint's max_batch).
NOTIFIER_WEBHOOK_BATCH_WAIT_S = 1.0
# How long a process trusts its list of active endpoints per event type (one read per this
# many seconds, not one per write); an endpoint added elsewhere gets events within it.
NOTIFIER_WEBHOOK_ENDPOINTS_CACHE_S = 1.0
# Events answered (or given up) and the attempts' records are deleted this many days after
# they were made, hourly (0 keeps them).
NOTIFIER_WEBHOOK_KEEP_DAYS = 7
# Endpoints are called only at public addresses: a URL whose host is (or resolves to) a
# loopback, private (10/8, 172.16/12, 192.168/16, fc00::/7), link-local (169.254/16, where cloud
# metadata services answer; fe80::/10), unspecified, multicast or reserved address is refused
# when saved and before every request, so an endpoint cannot reach into the workers' network.
# True for a site whose receivers live on its internal network.
NOTIFIER_WEBHOOK_ALLOW_PRIVATE_NETWORKS = False

# --- Security: public request limits and client addresses (notifier/request_limits.py) ---
# Per-group overrides, {"group.scope": "count/period" or "off"}, e.g.
# {"signed_link.ip": "120/m", "tracking.ip": "off"}.
NOTIFIER_PUBLIC_RATE_LIMITS: dict[str, str] = {}
NOTIFIER_RATE_LIMIT_PUBLIC = True
# Addresses or CIDR ranges of our own proxies / load balancers. Only from these is
# X-Forwarded-For believed; empty means the client is REMOTE_ADDR.
NOTIFIER_TRUSTED_PROXIES: list[str] = []
# The budget of every template render (one channel of one message, a preview, a test send;
# notifier/sandbox.py): past any of these it stops with a RenderBudgetExceeded and the message
# fails alone. Steps are calls, lookups, operators, comparisons, filters and loop iterations,
# plus one for every 16 characters an operation reads; characters count the output and every
# value built on the way; seconds are CPU time of the rendering thread. A backstop for what
# depends on the data: real templates use at most 18 steps and ~40 µs.
NOTIFIER_RENDER_MAX_STEPS = 10_000
NOTIFIER_RENDER_MAX_CHARS = 500_000
NOTIFIER_RENDER_MAX_SECONDS = 0.05
# What one channel's copy (its parts together) may cost for one customer, tried when it is
# saved, submitted, approved and test-sent: a campaign spends it on every recipient.
NOTIFIER_COPY_MAX_STEPS = 5_000
NOTIFIER_COPY_MAX_SECONDS = 0.025
# Wall-clock seconds one request may spend trying copy, all its parts together.
NOTIFIER_COPY_CHECK_BUDGET_S = 5.0
# How many locales (the default included) one variant may have copy for.
NOTIFIER_COPY_MAX_LOCALES = 30
# Campaign copy's `user.points_expiring`: the points balance when it expires within this many
# days (a campaign whose segment says "points expiring within N days" uses its N instead).
NOTIFIER_POINTS_EXPIRING_DAYS = 30

# --- Providers ------------------------------------------------------------------------------
# Each channel's providers, first primary, the rest its failover order: a provider class
# ("django", "twilio", "plivo", "push", "sandbox", "inapp") or a named instance below.
# The "django" email provider sends through the project's EMAIL_BACKEND.
NOTIFIER_PROVIDERS: dict[str, list[str]] = {
    "inapp": ["inapp"],
    "email": ["django"],
    "sms": ["sandbox"],
    "push": ["sandbox"],
}
# Named provider instances, each of a provider class with its own credentials, to list in the
# chains above, e.g. {"twilio_backup": {"class": "twilio", "account_sid": "AC...",
# "auth_token": "...", "from_number": "+1..."}}; see channels/registry.py.
NOTIFIER_PROVIDER_INSTANCES: dict[str, dict[str, Any]] = {}
# With DEBUG off, a sandbox never takes over from a real provider (system check notifier.E201,
# and it is left out of the chain) unless this says so (a staging site).
NOTIFIER_ALLOW_SANDBOX_FAILOVER = False
# The email header an ESP dedupes sends on, carrying "delivery-<id>" (empty: none is sent).
# Brevo's API reads `idempotencyKey`; Resend over SMTP reads `Resend-Idempotency-Key`.
NOTIFIER_EMAIL_IDEMPOTENCY_HEADER = ""
NOTIFIER_TWILIO_ACCOUNT_SID = ""
NOTIFIER_TWILIO_AUTH_TOKEN = ""
NOTIFIER_TWILIO_FROM_NUMBER = ""
NOTIFIER_TWILIO_MESSAGING_SERVICE_SID = ""
NOTIFIER_PLIVO_AUTH_ID = ""
NOTIFIER_PLIVO_AUTH_TOKEN = ""
NOTIFIER_PLIVO_FROM_NUMBER = ""
NOTIFIER_PLIVO_POWERPACK_UUID = ""
# A Firebase service-account JSON file (FCM for Android, iOS and web apps).
NOTIFIER_FCM_CREDENTIALS_FILE = ""
NOTIFIER_WEBPUSH_VAPID_PRIVATE_KEY = ""
NOTIFIER_WEBPUSH_VAPID_SUBJECT = ""
# The push services a Web Push subscription's endpoint may be on: a device is refused at
# registration, and never sent to, anywhere else (an endpoint is a URL the workers POST to, so
# it must not reach an internal address). "*.example.com" is any name under it; ["*"], any.
NOTIFIER_WEBPUSH_ENDPOINT_HOSTS = [
    "fcm.googleapis.com",  # Chrome, Edge on Android, Opera, Samsung
    "android.googleapis.com",
    "*.push.services.mozilla.com",  # Firefox
    "*.notify.windows.com",  # Edge on Windows
    "*.push.apple.com",  # Safari
]
# The sandbox providers: latency and random failure rates, for demos, tests and benchmarks.
NOTIFIER_SANDBOX_LATENCY_MS = 0.0
NOTIFIER_SANDBOX_TRANSIENT_FAILURE_RATE = 0.0
NOTIFIER_SANDBOX_PERMANENT_FAILURE_RATE = 0.0
# Messages an instant sandbox (no latency) takes per request, like a provider's batch API
# (Postmark's and FCM's take 500): a deliver task's batch (NOTIFIER_BATCH_SIZE) in one request.
NOTIFIER_SANDBOX_BATCH = 500

# --- The live inbox (notifier/live_inbox.py, notifier/pages/inbox_stream.py) -----------------
# Publish inbox changes to Redis pub/sub and serve the inbox page's event stream
# (GET <mount>/api/inbox/stream/). Needs the state Redis (NOTIFIER_REDIS_URL or a Redis broker);
# off, or without one, the stream answers 204 and the page polls. Serve the stream path from an
# ASGI server (uvicorn): under WSGI each open stream holds a worker thread.
NOTIFIER_LIVE_INBOX = True
# A comment line sent on an idle stream this often, so proxies and load balancers that close
# quiet connections keep it open and a dead client is noticed.
NOTIFIER_LIVE_HEARTBEAT_S = 15.0
# How long a browser waits before reconnecting a dropped stream (the SSE `retry:` field).
NOTIFIER_LIVE_RETRY_MS = 3000
# The page's fallback without a stream (no EventSource, the stream off or failing): it polls the
# unread count and the newest items this often.
NOTIFIER_LIVE_POLL_S = 30.0
# Threads each stream-serving process reads unread counts on (each keeps one database
# connection): the streams themselves hold none.
NOTIFIER_LIVE_DB_THREADS = 4

# --- Provider webhooks ----------------------------------------------------------------------
# Only these ESPs' anymail tracking webhooks may write (default: the anymail ESP EMAIL_BACKEND
# sends through); name one here when sending through its SMTP relay, e.g. ["mailgun"].
NOTIFIER_EMAIL_WEBHOOK_ESPS: list[str] = []
# Signed timestamps older than this are refused as replays (Mailgun retries for 8 hours).
NOTIFIER_WEBHOOK_MAX_AGE_S = 12 * 3600
# Twilio signs the URL it called. Behind a proxy, name the public origin here
# (https://notify.example.com), or trust the proxy's X-Forwarded-Proto/-Host headers.
NOTIFIER_TWILIO_WEBHOOK_BASE_URL = ""

# --- Erasure (notifier.services.erasure) -----------------------------------------------------
# The key of the digests that keep erased identifiers on the suppression list. Empty: SECRET_KEY
# (and SECRET_KEY_FALLBACKS, so a rotated key still recognises them). Set it to keep the list
# valid across SECRET_KEY changes; changing it forgets every suppression.
NOTIFIER_ERASURE_KEY = ""

# --- Observability --------------------------------------------------------------------------
# /metrics/ answers only "Authorization: Bearer <this>"; empty, it does not exist (404).
NOTIFIER_METRICS_TOKEN = ""
# Failure-rate alerts (the "failure-alerts" beat job, every minute): a provider whose attempts
# fail above this share of at least this many in the window alerts (log + Sentry), then stays
# quiet for the cooldown. A running campaign whose finished sends fail above its own
# pause_failure_percent (at least NOTIFIER_CAMPAIGN_PAUSE_MIN_SENDS of them) is paused.
NOTIFIER_ALERT_WINDOW_S = 300
NOTIFIER_ALERT_FAILURE_RATE = 0.25
NOTIFIER_ALERT_MIN_ATTEMPTS = 20
NOTIFIER_ALERT_COOLDOWN_S = 1800
NOTIFIER_CAMPAIGN_PAUSE_MIN_SENDS = 50


def defaults() -> dict[str, Any]:
    """Every Notifier setting and its default, by name."""
    return {name: value for name, value in globals().items() if name.startswith("NOTIFIER_")}


def apply_defaults(settings: Any) -> None:
    """Give `settings` each Notifier setting it does not define, with its default (a copy, so
    a test that changes a list in place changes no other settings object)."""
    from copy import deepcopy

    for name, value in defaults().items():
        if not hasattr(settings, name):
            setattr(settings, name, deepcopy(value))
