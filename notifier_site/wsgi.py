"""The stand-alone site's WSGI entry point (gunicorn notifier_site.wsgi)."""

import os

from django.core.wsgi import get_wsgi_application

from notifier.middleware import refuse_unreadable_requests

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "notifier_site.settings")
# A Content-Type Django trips on while it builds the request (before any middleware runs), or in
# a charset other than UTF-8: a 400 here instead of a 500.
application = refuse_unreadable_requests(get_wsgi_application())
