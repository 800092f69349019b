"""The host's own Celery app, pointed at Notifier's queues, routes and beat jobs."""

import os

from celery import Celery

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "tests.host.settings")

# --- notifier: celery ---
from notifier.celery_config import notifier_celery

app = Celery("shop")
app.config_from_object("django.conf:settings", namespace="CELERY")
app.autodiscover_tasks()
notifier_celery(app)
# --- end ---
