"""The stand-alone site's ASGI entry point, for the live inbox stream (uvicorn notifier_site.asgi).

Deployed as the `web-live` service, which the proxy sends <mount>/api/inbox/stream/ to: one
uvicorn process holds thousands of idle streams (notifier/pages/inbox_stream.py), where each
would hold a gunicorn worker. Every other path stays on gunicorn (notifier_site/wsgi.py), whose
wrapper refuses the request bodies Django trips on; the stream takes none (GET only).
"""

import os

from django.core.asgi import get_asgi_application

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "notifier_site.settings")
django_application = get_asgi_application()  # loads the apps: imports from them after it

from notifier.pages.inbox_stream import streams_admitted_gradually  # noqa: E402

# A burst of reconnects is set up a few streams at a time, within PostgreSQL's connections.
application = streams_admitted_gradually(django_application)
