"""URL routes: the admin (support and marketers) and the inbox API."""

from django.contrib import admin
from django.urls import path

from notifier.views import inbox

urlpatterns = [
    path("admin/", admin.site.urls),
    path("api/inbox/", inbox.inbox_list, name="inbox-list"),
    path("api/inbox/unread-count/", inbox.inbox_unread, name="inbox-unread-count"),
    path("api/inbox/read-all/", inbox.inbox_read_all, name="inbox-read-all"),
    path("api/inbox/<int:item_id>/read/", inbox.inbox_read, name="inbox-read"),
    path("api/inbox/<int:item_id>/archive/", inbox.inbox_archive_item, name="inbox-archive"),
    path("api/inbox/<int:item_id>/feedback/", inbox.inbox_give_feedback, name="inbox-feedback"),
]
