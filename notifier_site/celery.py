"""The stand-alone site's Celery app (`celery -A notifier_site worker ...`): configured from
Django settings (CELERY_*), with Notifier's queues, routes and beat jobs declared on it."""

from __future__ import annotations

import os

from celery import Celery

from notifier.celery_config import notifier_celery

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "notifier_site.settings")

app = Celery("notifier")
app.config_from_object("django.conf:settings", namespace="CELERY")
app.autodiscover_tasks()
notifier_celery(app)
