"""Tracking routes, included at the site root: click redirects and the email open pixel."""

from django.urls import path

from campaigns import views

urlpatterns = [
    path("t/c/<str:token>/", views.track_click, name="track-click"),
    path("t/o/<str:token>.gif", views.track_open, name="track-open"),
]
