"""URL routes: the admin, the inbox and preference APIs, and the signed-link pages."""

from django.contrib import admin
from django.urls import include, path

from notifier.views import accounts, health, inbox, inbox_page, preferences

urlpatterns = [
    path("admin/", admin.site.urls),
    path("health/live/", health.live, name="health-live"),
    path("health/ready/", health.ready, name="health-ready"),
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
    # Pages for end users: the inbox (logged in) and signing in on the stand-alone site.
    path("inbox/", inbox_page.inbox_page_view, name="inbox-page"),
    path("login/", accounts.PeopleLoginView.as_view(), name="login"),
    path("logout/", accounts.PeopleLogoutView.as_view(), name="logout"),
    path("", include("campaigns.urls")),
]
