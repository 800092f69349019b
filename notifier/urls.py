"""Notifier's URLconf, namespaced "notifier": a host mounts it under any prefix, e.g.
`path("notifications/", include("notifier.urls"))`, and reverses "notifier:inbox-page".

The service API for other services and apps, health probes, metrics, the inbox and
preference APIs, the signed-link pages, provider
webhooks, the inbox page and campaign tracking. The admin and signing in are the host's.
"""

from django.urls import path

from notifier.hooks import campaign_urls
from notifier.http_api.api import api as service_api
from notifier.operations import views as health
from notifier.operations.metrics import metrics_view
from notifier.pages import inbox as inbox_page
from notifier.pages import inbox_api as inbox
from notifier.pages import inbox_stream, preferences
from notifier.webhooks import views as webhooks

app_name = "notifier"
urlpatterns = [
    # The API for product services and apps (API keys; OpenAPI at api/v1/openapi.json).
    path("api/v1/", service_api.urls),
    path("health/live/", health.live, name="health-live"),
    path("health/ready/", health.ready, name="health-ready"),
    path("metrics/", metrics_view, name="metrics"),  # bearer token: NOTIFIER_METRICS_TOKEN
    path("api/inbox/", inbox.inbox_list, name="inbox-list"),
    path("api/inbox/unread-count/", inbox.inbox_unread, name="inbox-unread-count"),
    # Server-Sent Events: serve this path from the ASGI server (web-live); WSGI answers 204.
    path("api/inbox/stream/", inbox_stream.inbox_stream, name="inbox-stream"),
    path("api/inbox/read-all/", inbox.inbox_read_all, name="inbox-read-all"),
    path("api/inbox/<int:item_id>/read/", inbox.inbox_read, name="inbox-read"),
    path("api/inbox/<int:item_id>/archive/", inbox.inbox_archive_item, name="inbox-archive"),
    path("api/inbox/<int:item_id>/feedback/", inbox.inbox_give_feedback, name="inbox-feedback"),
    path("api/inbox/<int:item_id>/snooze/", inbox.inbox_snooze, name="inbox-snooze"),
    path("api/inbox/snoozes/", inbox.inbox_snoozes, name="inbox-snoozes"),
    path(
        "api/inbox/snoozes/<str:type_key>/lift/",
        inbox.inbox_snooze_lift,
        name="inbox-snooze-lift",
    ),
    path(
        "api/inbox/<int:item_id>/snooze-topic/",
        inbox.inbox_snooze_topic,
        name="inbox-snooze-topic",
    ),
    path("api/inbox/topic-snoozes/", inbox.inbox_topic_snoozes, name="inbox-topic-snoozes"),
    # A topic key may hold a slash ("game/7"): the rest of the path up to /lift/ is the key.
    path(
        "api/inbox/topic-snoozes/<path:topic_key>/lift/",
        inbox.inbox_topic_snooze_lift,
        name="inbox-topic-snooze-lift",
    ),
    path("api/preferences/", preferences.preferences_json, name="preferences-api"),
    path("api/preferences/consent/", preferences.consent_json, name="preferences-consent"),
    # Signed links in messages: no login, the token says whose preferences change.
    path("unsubscribe/<str:token>/", preferences.unsubscribe_page, name="unsubscribe"),
    path(
        "unsubscribe/<str:token>/one-click/",
        preferences.unsubscribe_one_click,
        name="unsubscribe-one-click",
    ),
    path("preferences/<str:token>/", preferences.preferences_page, name="preferences-page"),
    # Provider webhooks: anymail's tracking view of each ESP we send through (signature checked
    # by anymail; other ESPs 404), Twilio's status callbacks and inbound messages.
    path(
        "webhooks/anymail/<str:esp>/tracking/",
        webhooks.email_tracking,
        name="email-tracking-webhook",
    ),
    path("webhooks/twilio/status/", webhooks.twilio_status, name="twilio-status"),
    path("webhooks/twilio/inbound/", webhooks.twilio_inbound, name="twilio-inbound"),
    # The inbox page for a logged-in user (the host's login page: settings.LOGIN_URL).
    path("inbox/", inbox_page.inbox_page_view, name="inbox-page"),
    # What plug-ins serve here too: campaigns' click redirects and email open pixel.
    *campaign_urls(),
]
