"""The notification pipeline's Django project and core; loads the Celery app with Django."""

from notifier.celery import app as celery_app

__all__ = ["celery_app"]
