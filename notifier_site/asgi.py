"""The stand-alone site's ASGI entry point, for the live inbox stream (uvicorn notifier_site.asgi).

Deployed as the `web-live` service, which the proxy sends <mount>/api/inbox/stream/ to: one
uvicorn process holds thousands of idle streams (notifier/pages/inbox_stream.py), where each
would hold a gunicorn worker. `application` answers the stream and the health probes only (a
404 for anything else, whoever reaches its port): every other path stays on gunicorn
(notifier_site/wsgi.py), whose wrapper refuses the request bodies Django trips on; the stream
takes none (GET only). `site_application` is the whole site on ASGI, for the browser tests
that need the pages and the stream on one origin without a proxy.
"""

import os

from django.core.asgi import get_asgi_application

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "notifier_site.settings")
django_application = get_asgi_application()  # loads the apps: imports from them after it

from notifier.pages.inbox_stream import (  # noqa: E402
    stream_paths_only,
    streams_admitted_gradually,
)

# A burst of reconnects is set up a few streams at a time, within PostgreSQL's connections.
site_application = streams_admitted_gradually(django_application)
application = stream_paths_only(site_application)
