"""Signing in and out for end users of the stand-alone site (the inbox page needs a session).

A product that embeds Notifier points LOGIN_URL at its own login and never shows these pages.
"""

from __future__ import annotations

from typing import Any
from urllib.parse import unquote, urlsplit

from django.conf import settings
from django.contrib.auth.forms import AuthenticationForm
from django.contrib.auth.views import LoginView, LogoutView
from django.http import HttpResponse


class PeopleLoginView(LoginView):
    template_name = "notifier_site/login.html"
    redirect_authenticated_user = True
    next_page = "notifier:inbox-page"  # where to go when the login link named no `next`

    def get_redirect_url(self) -> str:
        """The safe `next` page, unless it is this login page again: a logged-in visitor would
        be sent back here for ever (Django raises instead); the default page then."""
        url = super().get_redirect_url()
        if url and unquote(urlsplit(url).path) == self.request.path:
            return ""
        return url

    def get_context_data(self, **kwargs: Any) -> dict[str, Any]:
        return {**super().get_context_data(**kwargs), "site_name": settings.NOTIFIER_SITE_NAME}

    def form_invalid(self, form: AuthenticationForm) -> HttpResponse:
        # The form again with its error, as a 400: the request did not do what it asked.
        response = super().form_invalid(form)
        response.status_code = 400
        return response


class PeopleLogoutView(LogoutView):
    next_page = "login"
