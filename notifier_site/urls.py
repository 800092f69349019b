"""The stand-alone site's URLs: the admin, signing in for end users, and Notifier at the root."""

from django.contrib import admin
from django.urls import include, path

from notifier_site import accounts

urlpatterns = [
    path("admin/", admin.site.urls),
    # End users sign in to read their inbox; a host project has its own login.
    path("login/", accounts.PeopleLoginView.as_view(), name="login"),
    path("logout/", accounts.PeopleLogoutView.as_view(), name="logout"),
    path("", include("notifier.urls")),
]
