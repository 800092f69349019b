"""Test settings: the project's settings, pointed at real PostgreSQL and Redis by default.

Only defaults for the environment are set here; notifier_site/settings.py still reads everything.
Override with DATABASE_URL / CELERY_BROKER_URL / REDIS_URL as usual.
"""

import os

os.environ.setdefault("DATABASE_URL", "postgres://postgres@127.0.0.1:5432/notifier")
os.environ.setdefault("REDIS_URL", "redis://127.0.0.1:6379/15")
os.environ.setdefault("CELERY_BROKER_URL", os.environ["REDIS_URL"])
os.environ.setdefault("NOTIFIER_RETRY_BASE_S", "0.2")
os.environ.setdefault("NOTIFIER_RETRY_MAX_S", "2")
# Outbound webhooks: quick retries, and a new endpoint seen by every worker within a moment.
os.environ.setdefault("NOTIFIER_WEBHOOK_RETRY_BASE_S", "0.2")
os.environ.setdefault("NOTIFIER_WEBHOOK_RETRY_MAX_S", "1")
os.environ.setdefault("NOTIFIER_WEBHOOK_ENDPOINTS_CACHE_S", "0.2")
os.environ.setdefault("NOTIFIER_WEBHOOK_BATCH_WAIT_S", "0.2")
# The tests' receivers listen on loopback; the tests of the address check turn this off.
os.environ.setdefault("NOTIFIER_WEBHOOK_ALLOW_PRIVATE_NETWORKS", "true")

from notifier_site.settings import *  # noqa: F403

PASSWORD_HASHERS = ["django.contrib.auth.hashers.MD5PasswordHasher"]
# In memory, unless a test's worker process is given a real server (EMAIL_URL=smtp://...).
if not os.environ.get("EMAIL_URL"):
    EMAIL_BACKEND = "django.core.mail.backends.locmem.EmailBackend"

# Worker processes of the observability tests: Sentry into a file, logs into a JSON file.
if os.environ.get("NOTIFIER_TEST_SENTRY_SPOOL"):
    from notifier.operations.observability import init_sentry
    from tests.observability.spool import TEST_DSN, SpoolTransport

    init_sentry(
        TEST_DSN,
        environment="test",
        transport=SpoolTransport(os.environ["NOTIFIER_TEST_SENTRY_SPOOL"]),
    )
if os.environ.get("NOTIFIER_TEST_LOG_FILE"):
    LOGGING["handlers"]["test_file"] = {  # noqa: F405
        "class": "logging.FileHandler",
        "filename": os.environ["NOTIFIER_TEST_LOG_FILE"],
        "formatter": "json",
        "filters": ["ids"],
    }
    LOGGING["root"]["handlers"].append("test_file")  # noqa: F405

# The tests' fake push services (responses answers for them), besides the real ones.
NOTIFIER_WEBPUSH_ENDPOINT_HOSTS = [
    "fcm.googleapis.com",
    "android.googleapis.com",
    "*.push.services.mozilla.com",
    "*.notify.windows.com",
    "*.push.apple.com",
    "push.example.net",
    "push.example.com",
]
