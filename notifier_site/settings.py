"""The stand-alone site's settings: every value that varies between machines is read from the
environment here (and only here: the apps read Django settings, with defaults in notifier/conf.py).

With nothing set, the project runs on its embedded default: SQLite, Celery on the in-memory
transport with an in-process worker, and sandbox providers for every channel. Production sets
DATABASE_URL, CELERY_BROKER_URL (or REDIS_URL) and the credentials of the providers it uses.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import environ
from django.core.exceptions import ImproperlyConfigured

from notifier import conf as notifier_conf
from notifier.conf import *  # noqa: F403  (every NOTIFIER_* name, typed; overridden from env below)
from notifier_site.providers_config import providers_from_env

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
    # The site itself: its developer tools (`manage.py bench`, `screenshots`).
    "notifier_site",
]

MIDDLEWARE = [
    "django.middleware.security.SecurityMiddleware",
    # /static/ (the admin's CSS and JS) from STATIC_ROOT, which collectstatic fills when the
    # image is built: gunicorn with DEBUG off serves no static files itself. Before everything
    # else that would do work for a file request.
    "whitenoise.middleware.WhiteNoiseMiddleware",
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

ROOT_URLCONF = "notifier_site.urls"
WSGI_APPLICATION = "notifier_site.wsgi.application"

TEMPLATES = [
    {
        "BACKEND": "django.template.backends.django.DjangoTemplates",
        "DIRS": [],
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
# The end users' pages speak the customer's language (NOTIFIER_PAGE_LANGUAGES: English and
# Simplified Chinese, from notifier/locale/, found by Django as every installed app's locale
# directory is); Django's own LANGUAGES list is left whole. The admin stays in LANGUAGE_CODE.
USE_TZ = True

STATIC_URL = "static/"
STATIC_ROOT = env.path("DJANGO_STATIC_ROOT", default=BASE_DIR / "var" / "static")
# collectstatic also writes each file gzipped, for WhiteNoise to send to clients
# that take them. Not the manifest storage: a template naming a file collectstatic has not seen
# would then fail to render instead of linking a 404.
STORAGES = {
    "default": {"BACKEND": "django.core.files.storage.FileSystemStorage"},
    "staticfiles": {"BACKEND": "whitenoise.storage.CompressedStaticFilesStorage"},
}

# Where the inbox page sends visitors who are not logged in: the stand-alone site's own
# /login/; a product that embeds Notifier names its login page here.
LOGIN_URL = env.str("DJANGO_LOGIN_URL", default="login")

# --- Celery ---------------------------------------------------------------------------------
# The broker only carries work; a lost broker message is recovered from PostgreSQL by the
# re-queue job. memory:// is the embedded default (an in-process worker, see `manage.py demo`).
REDIS_URL = env.str("REDIS_URL", default="")
CELERY_BROKER_URL = env.str("CELERY_BROKER_URL", default=REDIS_URL or "memory://localhost/")
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
# django-celery-beat's DatabaseScheduler, plus a heartbeat file for beat's probe.
CELERY_BEAT_SCHEDULER = "notifier.operations.beat_scheduler:ProbedScheduler"
CELERY_WORKER_HIJACK_ROOT_LOGGER = False
CELERY_WORKER_SEND_TASK_EVENTS = env.bool("CELERY_WORKER_SEND_TASK_EVENTS", default=False)

# --- Notifier ---------------------------------------------------------------------------------
# Every NOTIFIER_* setting (notifier/conf.py lists them with their defaults and what they do) can
# be set from the environment variable of the same name, parsed by the type of its default:
# true/false, numbers, comma-separated lists, and "key=value,key=value" for dicts (JSON for
# NOTIFIER_PROVIDER_INSTANCES). Except those in SET_BY_THE_SITE below, which the site sets from
# other variables (REDIS_URL, TWILIO_*, the credentials' own names, NOTIFIER_<CHANNEL>_PROVIDERS).
_JSON_SETTINGS = {"NOTIFIER_PROVIDER_INSTANCES"}


def _from_env(name: str, default: Any) -> Any:
    if name in _JSON_SETTINGS:
        return env.json(name, default=default)
    if isinstance(default, bool):
        return env.bool(name, default=default)
    if isinstance(default, int):
        return env.int(name, default=default)
    if isinstance(default, float):
        return env.float(name, default=default)
    if isinstance(default, list):
        return env.list(name, default=default)
    if isinstance(default, dict):
        return env.dict(name, default=default)
    return env.str(name, default=default)


# Set below by the site itself, not from a variable of their own name.
SET_BY_THE_SITE = {
    "NOTIFIER_EMBEDDED",
    "NOTIFIER_REDIS_URL",
    "NOTIFIER_ADMIN_USER",
    "NOTIFIER_ADMIN_REPLACE_BEAT",
    "NOTIFIER_PROVIDERS",
    *(
        f"NOTIFIER_{name}"
        for name in (
            "TWILIO_ACCOUNT_SID",
            "TWILIO_AUTH_TOKEN",
            "TWILIO_FROM_NUMBER",
            "TWILIO_MESSAGING_SERVICE_SID",
            "TWILIO_WEBHOOK_BASE_URL",
            "PLIVO_AUTH_ID",
            "PLIVO_AUTH_TOKEN",
            "PLIVO_FROM_NUMBER",
            "PLIVO_POWERPACK_UUID",
            "FCM_CREDENTIALS_FILE",
            "WEBPUSH_VAPID_PRIVATE_KEY",
            "WEBPUSH_VAPID_SUBJECT",
            "SANDBOX_LATENCY_MS",
            "SANDBOX_TRANSIENT_FAILURE_RATE",
            "SANDBOX_PERMANENT_FAILURE_RATE",
            "SANDBOX_BATCH",
        )
    ),
}
for _name, _default in notifier_conf.defaults().items():
    if _name not in SET_BY_THE_SITE:
        globals()[_name] = _from_env(_name, _default)
del _name, _default

# The stand-alone site's own choices where they differ from an installed app's defaults.
# Other services create recipients by their own ids over the HTTP API: this site makes a person
# (who cannot log in) for each new one.
NOTIFIER_RECIPIENT_USER_FACTORY = _from_env(
    "NOTIFIER_RECIPIENT_USER_FACTORY", "notifier.services.recipients.standalone_user"
)
NOTIFIER_EMBEDDED = CELERY_BROKER_URL.startswith("memory://")
NOTIFIER_REDIS_URL = REDIS_URL
NOTIFIER_ADMIN_USER = True
NOTIFIER_ADMIN_REPLACE_BEAT = True
NOTIFIER_SYNC_ROLES_ON_MIGRATE = env.bool("NOTIFIER_SYNC_ROLES_ON_MIGRATE", default=True)
NOTIFIER_ARCHIVE_DIR = env.str("NOTIFIER_ARCHIVE_DIR", default=str(BASE_DIR / "var" / "archive"))
if NOTIFIER_EMBEDDED:
    # The in-memory transport polls; the default second would dominate in-app latency.
    CELERY_BROKER_TRANSPORT_OPTIONS["polling_interval"] = 0.01
# Each channel's provider is chosen by NOTIFIER_<CHANNEL>_PROVIDERS, or inferred from which
# credentials are present; "sandbox" (the default) records sends in a ledger instead.
NOTIFIER_PROVIDERS = providers_from_env(env)
# Provider credentials under the variable names the providers themselves use.
NOTIFIER_TWILIO_ACCOUNT_SID = env.str("TWILIO_ACCOUNT_SID", default="")
NOTIFIER_TWILIO_AUTH_TOKEN = env.str("TWILIO_AUTH_TOKEN", default="")
NOTIFIER_TWILIO_FROM_NUMBER = env.str("TWILIO_FROM_NUMBER", default="")
NOTIFIER_TWILIO_MESSAGING_SERVICE_SID = env.str("TWILIO_MESSAGING_SERVICE_SID", default="")
NOTIFIER_TWILIO_WEBHOOK_BASE_URL = env.str("TWILIO_WEBHOOK_BASE_URL", default="")
NOTIFIER_PLIVO_AUTH_ID = env.str("PLIVO_AUTH_ID", default="")
NOTIFIER_PLIVO_AUTH_TOKEN = env.str("PLIVO_AUTH_TOKEN", default="")
NOTIFIER_PLIVO_FROM_NUMBER = env.str("PLIVO_FROM_NUMBER", default="")
NOTIFIER_PLIVO_POWERPACK_UUID = env.str("PLIVO_POWERPACK_UUID", default="")
NOTIFIER_FCM_CREDENTIALS_FILE = env.str("FCM_CREDENTIALS_FILE", default="")
NOTIFIER_WEBPUSH_VAPID_PRIVATE_KEY = env.str("WEBPUSH_VAPID_PRIVATE_KEY", default="")
NOTIFIER_WEBPUSH_VAPID_SUBJECT = env.str("WEBPUSH_VAPID_SUBJECT", default="")
NOTIFIER_SANDBOX_LATENCY_MS = env.float("SANDBOX_LATENCY_MS", default=0.0)
NOTIFIER_SANDBOX_TRANSIENT_FAILURE_RATE = env.float("SANDBOX_TRANSIENT_FAILURE_RATE", default=0.0)
NOTIFIER_SANDBOX_PERMANENT_FAILURE_RATE = env.float("SANDBOX_PERMANENT_FAILURE_RATE", default=0.0)
NOTIFIER_SANDBOX_BATCH = env.int("SANDBOX_BATCH", default=500)

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
if env.bool("DJANGO_TRUST_PROXY_HEADERS", default=False):
    USE_X_FORWARDED_HOST = True
    SECURE_PROXY_SSL_HEADER = ("HTTP_X_FORWARDED_PROTO", "https")

# --- Email ----------------------------------------------------------------------------------
# The "django" email provider sends through EMAIL_BACKEND: SMTP from EMAIL_URL, or any
# django-anymail ESP backend (EMAIL_BACKEND=anymail.backends.<esp>.EmailBackend + ANYMAIL).
# Email tracking arrives through anymail's per-ESP views at /webhooks/anymail/<esp>/tracking/;
# set that ESP's signing key in ANYMAIL (e.g. ANYMAIL=MAILGUN_WEBHOOK_SIGNING_KEY=...).
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
ANYMAIL = env.dict("ANYMAIL", default={})

# --- Observability --------------------------------------------------------------------------
SENTRY_DSN = env.str("SENTRY_DSN", default="")
if SENTRY_DSN:
    from notifier.operations.observability import init_sentry

    init_sentry(SENTRY_DSN, environment=env.str("SENTRY_ENVIRONMENT", default="production"))

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
