"""Django settings: every value that varies between machines is read from the environment here.

With nothing set, the project runs on its embedded default: SQLite, Celery on the in-memory
transport with an in-process worker, and sandbox providers for every channel. Production sets
DATABASE_URL, CELERY_BROKER_URL (or REDIS_URL) and the credentials of the providers it uses.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import environ
from django.core.exceptions import ImproperlyConfigured

from notifier.providers_config import providers_from_env

BASE_DIR = Path(__file__).resolve().parent.parent
env = environ.Env()

DEBUG = env.bool("DJANGO_DEBUG", default=False)
SECRET_KEY = env.str(
    "DJANGO_SECRET_KEY",
    default="insecure-embedded-default-key-set-DJANGO_SECRET_KEY-in-production",
)
ALLOWED_HOSTS = env.list("DJANGO_ALLOWED_HOSTS", default=["localhost", "127.0.0.1", "[::1]"])
CSRF_TRUSTED_ORIGINS = env.list("DJANGO_CSRF_TRUSTED_ORIGINS", default=[])

INSTALLED_APPS = [
    "django.contrib.admin",
    "django.contrib.auth",
    "django.contrib.contenttypes",
    "django.contrib.sessions",
    "django.contrib.messages",
    "django.contrib.staticfiles",
    "django_celery_beat",
    "notifier",
    "channels.apps.ChannelAdaptersConfig",
    "campaigns",
]

MIDDLEWARE = [
    "django.middleware.security.SecurityMiddleware",
    # First, so every later middleware's and the view's log lines carry the request id.
    "notifier.logcontext.RequestIdMiddleware",
    # A charset other than UTF-8 is a 400 before CSRF or a view reads the body (middleware.py).
    "notifier.middleware.RequestEncodingMiddleware",
    "django.contrib.sessions.middleware.SessionMiddleware",
    "django.middleware.common.CommonMiddleware",
    # A 405 says which methods to use, in words (notifier/middleware.py).
    "notifier.middleware.ExplainMethodNotAllowedMiddleware",
    "django.middleware.csrf.CsrfViewMiddleware",
    "django.contrib.auth.middleware.AuthenticationMiddleware",
    # Public endpoints' rate limits (notifier/request_limits.py): after the user is known.
    "notifier.request_limits.PublicRateLimitMiddleware",
    "django.contrib.messages.middleware.MessageMiddleware",
    "django.middleware.clickjacking.XFrameOptionsMiddleware",
]

ROOT_URLCONF = "notifier.urls"
WSGI_APPLICATION = "notifier.wsgi.application"

TEMPLATES = [
    {
        "BACKEND": "django.template.backends.django.DjangoTemplates",
        "DIRS": [BASE_DIR / "templates"],
        "APP_DIRS": True,
        "OPTIONS": {
            "context_processors": [
                "django.template.context_processors.request",
                "django.contrib.auth.context_processors.auth",
                "django.contrib.messages.context_processors.messages",
            ],
        },
    },
]

# --- Database -------------------------------------------------------------------------------
# PostgreSQL is the source of truth in production; SQLite is only the first-run default.
if not env.str("DATABASE_URL", default=""):
    (BASE_DIR / "var").mkdir(exist_ok=True)
DATABASES = {
    "default": env.db_url(
        "DATABASE_URL", default=f"sqlite:///{BASE_DIR / 'var' / 'notifier.sqlite3'}"
    )
}
if DATABASES["default"]["ENGINE"] == "django.db.backends.sqlite3":
    # The embedded worker runs in a thread of the same process: WAL plus an immediate write
    # lock keeps the two from tripping over "database is locked".
    DATABASES["default"]["OPTIONS"] = {
        "init_command": "PRAGMA journal_mode=WAL; PRAGMA synchronous=NORMAL;",
        "transaction_mode": "IMMEDIATE",
        "timeout": 30,
    }
else:
    DATABASES["default"].setdefault("CONN_MAX_AGE", env.int("DATABASE_CONN_MAX_AGE", default=60))
    DATABASES["default"]["CONN_HEALTH_CHECKS"] = True
    # Behind pgbouncer in transaction pooling a server-side cursor can outlive its transaction's
    # server connection: set true there (with DATABASE_CONN_MAX_AGE=0).
    DATABASES["default"]["DISABLE_SERVER_SIDE_CURSORS"] = env.bool(
        "DATABASE_DISABLE_SERVER_SIDE_CURSORS", default=False
    )

DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"
AUTH_USER_MODEL = "notifier.User"

AUTH_PASSWORD_VALIDATORS = [
    {"NAME": "django.contrib.auth.password_validation.UserAttributeSimilarityValidator"},
    {"NAME": "django.contrib.auth.password_validation.MinimumLengthValidator"},
    {"NAME": "django.contrib.auth.password_validation.CommonPasswordValidator"},
    {"NAME": "django.contrib.auth.password_validation.NumericPasswordValidator"},
]

LANGUAGE_CODE = env.str("DJANGO_LANGUAGE_CODE", default="en")
TIME_ZONE = "UTC"
USE_I18N = True
USE_TZ = True

STATIC_URL = "static/"
STATIC_ROOT = env.path("DJANGO_STATIC_ROOT", default=BASE_DIR / "var" / "static")

# Where the inbox page sends visitors who are not logged in: the stand-alone site's own
# /login/; a product that embeds Notifier names its login page here.
LOGIN_URL = env.str("DJANGO_LOGIN_URL", default="login")

# --- Celery ---------------------------------------------------------------------------------
# The broker only carries work; a lost broker message is recovered from PostgreSQL by the
# re-queue job. memory:// is the embedded default (an in-process worker, see `manage.py demo`).
REDIS_URL = env.str("REDIS_URL", default="")
CELERY_BROKER_URL = env.str("CELERY_BROKER_URL", default=REDIS_URL or "memory://localhost/")
NOTIFIER_EMBEDDED = CELERY_BROKER_URL.startswith("memory://")
CELERY_RESULT_BACKEND = None
CELERY_TASK_IGNORE_RESULT = True
CELERY_TASK_SERIALIZER = "json"
CELERY_ACCEPT_CONTENT = ["json"]
CELERY_TIMEZONE = "UTC"
CELERY_ENABLE_UTC = True
CELERY_WORKER_PREFETCH_MULTIPLIER = env.int("CELERY_WORKER_PREFETCH_MULTIPLIER", default=4)
CELERY_BROKER_CONNECTION_RETRY_ON_STARTUP = True
CELERY_BROKER_TRANSPORT_OPTIONS = {
    # Countdowns never exceed MAX_BROKER_COUNTDOWN_S (5 min), well inside this timeout, so the
    # Redis transport does not re-deliver a waiting retry as a duplicate.
    "visibility_timeout": env.int("CELERY_VISIBILITY_TIMEOUT", default=3600),
}
if CELERY_BROKER_URL.startswith(("redis://", "rediss://")):
    # A Redis host that does not answer at all (down, not refusing) holds a publish, and so a
    # notify() in a web request, no longer than this; redis-py's default waits for the OS.
    CELERY_BROKER_TRANSPORT_OPTIONS["socket_connect_timeout"] = env.float(
        "CELERY_BROKER_CONNECT_TIMEOUT_S", default=2.0
    )
if NOTIFIER_EMBEDDED:
    # The in-memory transport polls; the default second would dominate in-app latency.
    CELERY_BROKER_TRANSPORT_OPTIONS["polling_interval"] = 0.01
# django-celery-beat's DatabaseScheduler, plus a heartbeat file for beat's probe.
CELERY_BEAT_SCHEDULER = "notifier.beat_scheduler:ProbedScheduler"
CELERY_WORKER_HIJACK_ROOT_LOGGER = False
CELERY_WORKER_SEND_TASK_EVENTS = env.bool("CELERY_WORKER_SEND_TASK_EVENTS", default=False)

# --- Health probes of workers and beat (notifier/probe.py) --------------------------------------
# Each worker (and beat) writes its heartbeat and state here; `python -m notifier.probe worker`
# (or `beat`) reads them, from the same variable, without loading Django. Unset: nothing written.
NOTIFIER_PROBE_DIR = env.str("NOTIFIER_PROBE_DIR", default="")
NOTIFIER_WORKER_HEARTBEAT_S = env.float("NOTIFIER_WORKER_HEARTBEAT_S", default=5.0)

# --- The pipeline ---------------------------------------------------------------------------
NOTIFIER_DEFAULT_LOCALE = env.str("NOTIFIER_DEFAULT_LOCALE", default="en")
NOTIFIER_SITE_NAME = env.str("NOTIFIER_SITE_NAME", default="Notifier")
NOTIFIER_SITE_URL = env.str("NOTIFIER_SITE_URL", default="http://localhost:8000")
# Retries: exponential backoff with full jitter, capped so broker ETAs stay short.
NOTIFIER_MAX_ATTEMPTS = env.int("NOTIFIER_MAX_ATTEMPTS", default=5)
NOTIFIER_RETRY_BASE_S = env.float("NOTIFIER_RETRY_BASE_S", default=2.0)
NOTIFIER_RETRY_MAX_S = env.float("NOTIFIER_RETRY_MAX_S", default=300.0)
# Work older than these is presumed lost by the broker and re-queued from PostgreSQL.
NOTIFIER_REQUEUE_AFTER_S = env.int("NOTIFIER_REQUEUE_AFTER_S", default=120)
# A sender's lease on the deliveries it claimed: renewed between sends (every fifth of it)
# while the sender lives, so only a dead sender's claims run out and are taken back, by the
# claims sweep every NOTIFIER_CLAIM_SWEEP_S. Keep it above the longest single provider call
# (EMAIL_TIMEOUT, the 10 s HTTP timeouts of Twilio and Web Push).
NOTIFIER_CLAIM_LEASE_S = env.float("NOTIFIER_CLAIM_LEASE_S", default=15.0)
NOTIFIER_CLAIM_SWEEP_S = env.float("NOTIFIER_CLAIM_SWEEP_S", default=5.0)
# Transactional deliveries queued this long past due are presumed lost (their task died with
# a worker) and published again by the claims sweep; the rest wait NOTIFIER_REQUEUE_AFTER_S.
NOTIFIER_TRANSACTIONAL_REQUEUE_AFTER_S = env.int(
    "NOTIFIER_TRANSACTIONAL_REQUEUE_AFTER_S", default=10
)
# Accepted sends are recorded as they happen; only a provider answering faster than this has
# its answers gathered, at most this long, into one write (a crash re-sends at most these).
NOTIFIER_RECORD_WITHIN_MS = env.float("NOTIFIER_RECORD_WITHIN_MS", default=10.0)
NOTIFIER_BATCH_SIZE = env.int("NOTIFIER_BATCH_SIZE", default=500)
# Campaign fan-out hands the audience out in batches of this many users (one task each).
NOTIFIER_CAMPAIGN_BATCH_USERS = env.int("NOTIFIER_CAMPAIGN_BATCH_USERS", default=1000)
# Celery time limits of the tasks that render (prepare, campaign fan-out; deliver renders
# fallbacks). At the soft limit the message being rendered fails alone ("Rendering took too
# long") and the rest of its batch goes on in a fresh task; at the hard limit the pool kills
# the process. A batch of 500 takes well under a second; deliver's limits leave room for slow
# providers (500 sends one after another); a sender's claims are its for as long as it lives
# (the lease above), whatever the limits.
NOTIFIER_PREPARE_SOFT_TIME_LIMIT_S = env.int("NOTIFIER_PREPARE_SOFT_TIME_LIMIT_S", default=30)
NOTIFIER_PREPARE_TIME_LIMIT_S = env.int("NOTIFIER_PREPARE_TIME_LIMIT_S", default=60)
NOTIFIER_DELIVER_SOFT_TIME_LIMIT_S = env.int("NOTIFIER_DELIVER_SOFT_TIME_LIMIT_S", default=120)
NOTIFIER_DELIVER_TIME_LIMIT_S = env.int("NOTIFIER_DELIVER_TIME_LIMIT_S", default=150)
# A message whose prepare run died this many times (killed, out of memory, hard time limit)
# is failed with that reason instead of being tried again; its batch-mates go on without it.
NOTIFIER_PREPARE_MAX_CRASHES = env.int("NOTIFIER_PREPARE_MAX_CRASHES", default=3)
# The wall-clock time one campaign preview page may spend rendering copy, all cells together;
# a cell cut off or never reached says so. Keeps a web worker from being held by bad copy.
NOTIFIER_PREVIEW_BUDGET_S = env.float("NOTIFIER_PREVIEW_BUDGET_S", default=5.0)

# --- Retention of the delivery log (notifier/services/retention.py) -------------------------
# Nightly, finished messages older than this many days are archived to gzip JSON Lines files in
# NOTIFIER_ARCHIVE_DIR, then deleted, in batches of NOTIFIER_RETENTION_BATCH messages, for at
# most NOTIFIER_RETENTION_BUDGET_S per run. 0 (the default) keeps everything.
NOTIFIER_RETENTION_DAYS = env.int("NOTIFIER_RETENTION_DAYS", default=0)
NOTIFIER_RETENTION_BATCH = env.int("NOTIFIER_RETENTION_BATCH", default=1000)
NOTIFIER_RETENTION_BUDGET_S = env.float("NOTIFIER_RETENTION_BUDGET_S", default=900.0)
NOTIFIER_ARCHIVE_DIR = env.path("NOTIFIER_ARCHIVE_DIR", default=BASE_DIR / "var" / "archive")

# --- Delivery policies ----------------------------------------------------------------------
# Marketing needs recorded consent on these channels (in-app messages inside the product do not).
NOTIFIER_CONSENT_CHANNELS = env.list("NOTIFIER_CONSENT_CHANNELS", default=["email", "sms", "push"])
# Quiet hours in each user's time zone (overridable per user); held messages are released
# spread over NOTIFIER_QUIET_RELEASE_WINDOW_S after they end, not all at once.
NOTIFIER_QUIET_HOURS = env.str("NOTIFIER_QUIET_HOURS", default="22:00-08:00")
NOTIFIER_QUIET_RELEASE_WINDOW_S = env.int("NOTIFIER_QUIET_RELEASE_WINDOW_S", default=1800)
# Marketing frequency caps per user, in the user's own calendar days and weeks. Each 👎
# "irrelevant" on a category within NOTIFIER_FEEDBACK_PENALTY_DAYS lowers its weekly cap by one.
NOTIFIER_MARKETING_CAP_DAY = env.int("NOTIFIER_MARKETING_CAP_DAY", default=1)
NOTIFIER_MARKETING_CAP_WEEK = env.int("NOTIFIER_MARKETING_CAP_WEEK", default=2)
NOTIFIER_FEEDBACK_PENALTY_DAYS = env.int("NOTIFIER_FEEDBACK_PENALTY_DAYS", default=30)
# A marketing message with no expiry is stale this long after it was made.
NOTIFIER_MARKETING_TTL_H = env.int("NOTIFIER_MARKETING_TTL_H", default=72)
# Backpressure: above this many tasks waiting in the bulk queues, marketing and low-priority
# messages are held instead of queued, and released as the queues drain.
NOTIFIER_BULK_HIGH_WATER = env.int("NOTIFIER_BULK_HIGH_WATER", default=200)
# Global provider rate limits shared by all workers (notifier/provider_limits.py),
# "channel:provider=amount/period" (the grammar of notifier/rates.py), e.g.
# NOTIFIER_RATE_LIMITS=sms:twilio=10/s,email:django=100/s
NOTIFIER_RATE_LIMITS = env.dict("NOTIFIER_RATE_LIMITS", default={})
# Circuit breaker per provider: when at least NOTIFIER_CIRCUIT_MIN_CALLS calls within the window
# were made and NOTIFIER_CIRCUIT_FAILURE_RATIO of them failed for the provider's sake (timeouts,
# 429, 5xx), it opens for the cooldown; successes count, so a few soft failures never open it.
NOTIFIER_CIRCUIT_FAILURE_RATIO = env.float("NOTIFIER_CIRCUIT_FAILURE_RATIO", default=0.5)
NOTIFIER_CIRCUIT_MIN_CALLS = env.int("NOTIFIER_CIRCUIT_MIN_CALLS", default=20)
NOTIFIER_CIRCUIT_WINDOW_S = env.int("NOTIFIER_CIRCUIT_WINDOW_S", default=30)
NOTIFIER_CIRCUIT_COOLDOWN_S = env.int("NOTIFIER_CIRCUIT_COOLDOWN_S", default=30)
# A provider that answers 429/5xx with a Retry-After is left alone that long by every worker
# (its messages go to the next provider of the chain), but never longer than this.
NOTIFIER_PROVIDER_MAX_PAUSE_S = env.float("NOTIFIER_PROVIDER_MAX_PAUSE_S", default=300.0)
# Signed links (unsubscribe, preference centre) stay valid this long.
NOTIFIER_LINK_MAX_AGE_DAYS = env.int("NOTIFIER_LINK_MAX_AGE_DAYS", default=365)

# --- Security: public rate limits and client addresses (notifier/request_limits.py) -------------
# Per-group overrides, "group.scope=count/period" or "off", e.g.
# NOTIFIER_PUBLIC_RATE_LIMITS=signed_link.ip=120/m,tracking.ip=off
NOTIFIER_PUBLIC_RATE_LIMITS = env.dict("NOTIFIER_PUBLIC_RATE_LIMITS", default={})
NOTIFIER_RATE_LIMIT_PUBLIC = env.bool("NOTIFIER_RATE_LIMIT_PUBLIC", default=True)
# Addresses or CIDR ranges of our own proxies / load balancers. Only from these is
# X-Forwarded-For believed; empty means the client is REMOTE_ADDR.
NOTIFIER_TRUSTED_PROXIES = env.list("NOTIFIER_TRUSTED_PROXIES", default=[])
# Re-apply the role matrix (notifier/roles.py) to the staff groups after every migrate.
NOTIFIER_SYNC_ROLES_ON_MIGRATE = env.bool("NOTIFIER_SYNC_ROLES_ON_MIGRATE", default=True)
# The budget of every template render (one channel of one message, a preview, a test send;
# notifier/sandbox.py): past any of these it stops with a RenderBudgetExceeded and the message
# fails alone. Steps are calls, lookups, operators, comparisons, filters and loop iterations,
# plus one for every 16 characters an operation reads (so a step costs at most ~2.5 µs of CPU,
# typically ~1); characters count the output and every value built on the way (a list item or
# number as 8); seconds are CPU time of the rendering thread, full garbage collections left out.
# A backstop for what depends on the data: real templates use at most 18 steps and ~40 µs.
NOTIFIER_RENDER_MAX_STEPS = env.int("NOTIFIER_RENDER_MAX_STEPS", default=10_000)
NOTIFIER_RENDER_MAX_CHARS = env.int("NOTIFIER_RENDER_MAX_CHARS", default=500_000)
NOTIFIER_RENDER_MAX_SECONDS = env.float("NOTIFIER_RENDER_MAX_SECONDS", default=0.05)
# What one channel's copy (its parts together) may cost for one customer, tried when it is
# saved, submitted, approved and test-sent: a campaign spends it on every recipient. The
# heaviest copy measured, a 50-product HTML list, takes 1,509 steps and 1.3-2 ms.
NOTIFIER_COPY_MAX_STEPS = env.int("NOTIFIER_COPY_MAX_STEPS", default=5_000)
NOTIFIER_COPY_MAX_SECONDS = env.float("NOTIFIER_COPY_MAX_SECONDS", default=0.025)
# Wall-clock seconds one request (a copy save, submit, approve, a test send, the campaign page)
# may spend trying copy, all its parts together; results are remembered per process, so trying
# again goes on where the last try stopped.
NOTIFIER_COPY_CHECK_BUDGET_S = env.float("NOTIFIER_COPY_CHECK_BUDGET_S", default=5.0)
# How many locales (the default included) one variant may have copy for.
NOTIFIER_COPY_MAX_LOCALES = env.int("NOTIFIER_COPY_MAX_LOCALES", default=30)
# Campaign copy's `user.points_expiring`: the points balance when it expires within this many
# days (a campaign whose segment says "points expiring within N days" uses its N instead).
NOTIFIER_POINTS_EXPIRING_DAYS = env.int("NOTIFIER_POINTS_EXPIRING_DAYS", default=30)
# Served over HTTPS (production): secure cookies and a redirect to https, except the health
# probes, which orchestrators call over plain HTTP inside the network. HSTS is opt-in (a
# browser remembers it for its whole lifetime). Behind a TLS-terminating proxy that sets
# X-Forwarded-Proto (and strips a client's own), set DJANGO_SECURE_PROXY_SSL_HEADER=true.
DJANGO_HTTPS = env.bool("DJANGO_HTTPS", default=False)
SESSION_COOKIE_SECURE = CSRF_COOKIE_SECURE = SECURE_SSL_REDIRECT = DJANGO_HTTPS
SECURE_REDIRECT_EXEMPT = [r"^health/"]
SECURE_HSTS_SECONDS = env.int("DJANGO_HSTS_SECONDS", default=0)
if env.bool("DJANGO_SECURE_PROXY_SSL_HEADER", default=False):
    SECURE_PROXY_SSL_HEADER = ("HTTP_X_FORWARDED_PROTO", "https")

# --- Providers ------------------------------------------------------------------------------
# Each channel's provider is chosen by NOTIFIER_<CHANNEL>_PROVIDER, or inferred from which
# credentials are present; "sandbox" (the default) records sends in a ledger instead.
NOTIFIER_PROVIDERS = providers_from_env(env)
# Named provider instances, each of a provider class with its own credentials, to list in the
# chains above (failover between two Twilio accounts, SMTP and an ESP, two ESPs), as JSON, e.g.
# {"twilio_backup": {"class": "twilio", "account_sid": "AC...", "auth_token": "...",
#  "from_number": "+1..."}}; see channels/registry.py.
NOTIFIER_PROVIDER_INSTANCES = env.json("NOTIFIER_PROVIDER_INSTANCES", default={})
# With DEBUG off, a sandbox never takes over from a real provider (system check notifier.E201,
# and it is left out of the chain) unless this says so (a staging site).
NOTIFIER_ALLOW_SANDBOX_FAILOVER = env.bool("NOTIFIER_ALLOW_SANDBOX_FAILOVER", default=False)

# The "django" email provider sends through EMAIL_BACKEND: SMTP from EMAIL_URL, or any
# django-anymail ESP backend (EMAIL_BACKEND=anymail.backends.<esp>.EmailBackend + ANYMAIL).
_email = env.email_url("EMAIL_URL", default="smtp://localhost:25")
EMAIL_BACKEND = env.str("EMAIL_BACKEND", default=_email["EMAIL_BACKEND"])
EMAIL_HOST = _email.get("EMAIL_HOST", "localhost")
EMAIL_PORT = _email.get("EMAIL_PORT", 25)
EMAIL_HOST_USER = _email.get("EMAIL_HOST_USER", "")
EMAIL_HOST_PASSWORD = _email.get("EMAIL_HOST_PASSWORD", "")
EMAIL_USE_TLS = _email.get("EMAIL_USE_TLS", False)
EMAIL_USE_SSL = _email.get("EMAIL_USE_SSL", False)
DEFAULT_FROM_EMAIL = env.str("DEFAULT_FROM_EMAIL", default="Notifier <noreply@localhost>")
EMAIL_TIMEOUT = env.int("EMAIL_TIMEOUT", default=10)
# The email header an ESP dedupes sends on, carrying "delivery-<id>" (empty: none is sent).
# Brevo's API reads `idempotencyKey`; Resend over SMTP reads `Resend-Idempotency-Key`.
NOTIFIER_EMAIL_IDEMPOTENCY_HEADER = env.str("NOTIFIER_EMAIL_IDEMPOTENCY_HEADER", default="")
ANYMAIL = env.dict("ANYMAIL", default={})

TWILIO_ACCOUNT_SID = env.str("TWILIO_ACCOUNT_SID", default="")
TWILIO_AUTH_TOKEN = env.str("TWILIO_AUTH_TOKEN", default="")
TWILIO_FROM_NUMBER = env.str("TWILIO_FROM_NUMBER", default="")
TWILIO_MESSAGING_SERVICE_SID = env.str("TWILIO_MESSAGING_SERVICE_SID", default="")
# Plivo, a second SMS provider (NOTIFIER_SMS_PROVIDERS=twilio,plivo for failover).
PLIVO_AUTH_ID = env.str("PLIVO_AUTH_ID", default="")
PLIVO_AUTH_TOKEN = env.str("PLIVO_AUTH_TOKEN", default="")
PLIVO_FROM_NUMBER = env.str("PLIVO_FROM_NUMBER", default="")
PLIVO_POWERPACK_UUID = env.str("PLIVO_POWERPACK_UUID", default="")

FCM_CREDENTIALS_FILE = env.str("FCM_CREDENTIALS_FILE", default="")
WEBPUSH_VAPID_PRIVATE_KEY = env.str("WEBPUSH_VAPID_PRIVATE_KEY", default="")
WEBPUSH_VAPID_SUBJECT = env.str("WEBPUSH_VAPID_SUBJECT", default="")

# --- Provider webhooks ----------------------------------------------------------------------
# Email tracking arrives through anymail's per-ESP views at /webhooks/anymail/<esp>/tracking/;
# set that ESP's signing key in ANYMAIL (e.g. ANYMAIL=MAILGUN_WEBHOOK_SIGNING_KEY=...).
# Only these ESPs' webhooks may write (default: the anymail ESP EMAIL_BACKEND sends through);
# name one here when sending through its SMTP relay, e.g. NOTIFIER_EMAIL_WEBHOOK_ESPS=mailgun.
NOTIFIER_EMAIL_WEBHOOK_ESPS = env.list("NOTIFIER_EMAIL_WEBHOOK_ESPS", default=[])
# Signed timestamps older than this are refused as replays (Mailgun retries for 8 hours).
NOTIFIER_WEBHOOK_MAX_AGE_S = env.int("NOTIFIER_WEBHOOK_MAX_AGE_S", default=12 * 3600)
# Twilio signs the URL it called. Behind a proxy, either name the public origin here
# (https://notify.example.com), or trust the proxy's X-Forwarded-Proto/-Host headers.
TWILIO_WEBHOOK_BASE_URL = env.str("TWILIO_WEBHOOK_BASE_URL", default="")
if env.bool("DJANGO_TRUST_PROXY_HEADERS", default=False):
    USE_X_FORWARDED_HOST = True
    SECURE_PROXY_SSL_HEADER = ("HTTP_X_FORWARDED_PROTO", "https")

# The sandbox providers: latency and random failure rates, for demos, tests and benchmarks.
SANDBOX_LATENCY_MS = env.float("SANDBOX_LATENCY_MS", default=0.0)
SANDBOX_TRANSIENT_FAILURE_RATE = env.float("SANDBOX_TRANSIENT_FAILURE_RATE", default=0.0)
SANDBOX_PERMANENT_FAILURE_RATE = env.float("SANDBOX_PERMANENT_FAILURE_RATE", default=0.0)

# --- Observability --------------------------------------------------------------------------
SENTRY_DSN = env.str("SENTRY_DSN", default="")
if SENTRY_DSN:
    from notifier.observability import init_sentry

    init_sentry(SENTRY_DSN, environment=env.str("SENTRY_ENVIRONMENT", default="production"))

# /metrics/ answers only "Authorization: Bearer <this>"; unset, it does not exist (404).
NOTIFIER_METRICS_TOKEN = env.str("NOTIFIER_METRICS_TOKEN", default="")

# Failure-rate alerts (the "failure-alerts" beat job, every minute): a provider whose attempts
# fail above this share of at least this many in the window alerts (log + Sentry), then stays
# quiet for the cooldown. A running campaign whose finished sends fail above its own
# pause_failure_percent (at least NOTIFIER_CAMPAIGN_PAUSE_MIN_SENDS of them) is paused.
NOTIFIER_ALERT_WINDOW_S = env.int("NOTIFIER_ALERT_WINDOW_S", default=300)
NOTIFIER_ALERT_FAILURE_RATE = env.float("NOTIFIER_ALERT_FAILURE_RATE", default=0.25)
NOTIFIER_ALERT_MIN_ATTEMPTS = env.int("NOTIFIER_ALERT_MIN_ATTEMPTS", default=20)
NOTIFIER_ALERT_COOLDOWN_S = env.int("NOTIFIER_ALERT_COOLDOWN_S", default=1800)
NOTIFIER_CAMPAIGN_PAUSE_MIN_SENDS = env.int("NOTIFIER_CAMPAIGN_PAUSE_MIN_SENDS", default=50)

LOG_LEVEL = env.str("LOG_LEVEL", default="INFO")
# "plain" for a terminal, "json" (one object per line) for a log shipper. Both carry the ids of
# notifier.logcontext: request_id, message_id, delivery_id, campaign_id, step_id.
NOTIFIER_LOG_FORMAT = env.str("NOTIFIER_LOG_FORMAT", default="plain")
if NOTIFIER_LOG_FORMAT not in ("plain", "json"):
    raise ImproperlyConfigured(
        f"NOTIFIER_LOG_FORMAT must be 'plain' or 'json', not {NOTIFIER_LOG_FORMAT!r}"
    )
LOGGING: dict[str, Any] = {
    "version": 1,
    "disable_existing_loggers": False,
    "filters": {"ids": {"()": "notifier.logcontext.IdsFilter"}},
    "formatters": {
        "plain": {
            "format": "%(asctime)s %(levelname)s %(name)s [req=%(request_id)s "
            "msg=%(message_id)s dlv=%(delivery_id)s cmp=%(campaign_id)s] %(message)s"
        },
        "json": {
            "()": "pythonjsonlogger.json.JsonFormatter",
            "fmt": "%(asctime)s %(levelname)s %(name)s %(message)s %(request_id)s "
            "%(message_id)s %(delivery_id)s %(campaign_id)s %(step_id)s",
            "rename_fields": {"asctime": "time", "levelname": "level", "name": "logger"},
        },
    },
    "handlers": {
        "console": {
            "class": "logging.StreamHandler",
            "formatter": NOTIFIER_LOG_FORMAT,
            "filters": ["ids"],
        }
    },
    "root": {"handlers": ["console"], "level": "WARNING"},
    "loggers": {
        "notifier": {"level": LOG_LEVEL},
        "channels": {"level": LOG_LEVEL},
        "campaigns": {"level": LOG_LEVEL},
    },
}
