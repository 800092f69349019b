"""The stand-alone Notifier site: a Django project that installs the Notifier apps like any host
project would (settings read from the environment, URLs, WSGI, its Celery app), plus the
developer tools (`manage.py bench`, `screenshots`) that do not ship inside the apps."""

from notifier_site.celery import app as celery_app

__all__ = ["celery_app"]
