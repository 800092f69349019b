"""URL routes: the admin, the inbox and preference APIs, and the signed-link pages."""

from django.contrib import admin
from django.urls import include, path

from notifier.metrics import metrics_view
from notifier.views import accounts, health, inbox, inbox_page, preferences, webhooks

urlpatterns = [
    path("admin/", admin.site.urls),
    path("health/live/", health.live, name="health-live"),
    path("health/ready/", health.ready, name="health-ready"),
    path("metrics/", metrics_view, name="metrics"),  # bearer token: NOTIFIER_METRICS_TOKEN
    path("api/inbox/", inbox.inbox_list, name="inbox-list"),
    path("api/inbox/unread-count/", inbox.inbox_unread, name="inbox-unread-count"),
    path("api/inbox/read-all/", inbox.inbox_read_all, name="inbox-read-all"),
    path("api/inbox/<int:item_id>/read/", inbox.inbox_read, name="inbox-read"),
    path("api/inbox/<int:item_id>/archive/", inbox.inbox_archive_item, name="inbox-archive"),
    path("api/inbox/<int:item_id>/feedback/", inbox.inbox_give_feedback, name="inbox-feedback"),
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
    # Pages for end users: the inbox (logged in) and signing in on the stand-alone site.
    path("inbox/", inbox_page.inbox_page_view, name="inbox-page"),
    path("login/", accounts.PeopleLoginView.as_view(), name="login"),
    path("logout/", accounts.PeopleLogoutView.as_view(), name="logout"),
    path("", include("campaigns.urls")),
]
