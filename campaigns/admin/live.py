"""Two read-only campaign pages for marketers: the live progress of a sending step (a JSON
endpoint the campaign page and its funnel poll) and the calendar of campaigns and steps.

Both are added to CampaignAdmin's URLs by campaigns.admin.stats.stats_urls, ahead of the
admin's catch-all "<path:object_id>/" pattern; reading either needs the campaign view
permission (every marketing role and Support).

The calendar's time zone: the one picked on the page (remembered in the session), else the
staff user's own recipient profile's, else settings.TIME_ZONE.
"""

from __future__ import annotations

import calendar as calendar_module
from collections.abc import Callable
from dataclasses import dataclass
from datetime import date, datetime, time, timedelta
from typing import Any
from zoneinfo import ZoneInfo

from django import forms
from django.conf import settings
from django.contrib import admin
from django.contrib.admin.utils import quote, unquote
from django.core.exceptions import PermissionDenied
from django.http import Http404, HttpRequest, HttpResponse, HttpResponseBadRequest, JsonResponse
from django.template.response import TemplateResponse
from django.urls import URLPattern, path, reverse
from django.utils import timezone
from django.utils.http import urlencode
from django.views.decorators.http import require_GET

from campaigns.models import Campaign
from campaigns.services.calendar import (
    CalendarStep,
    Competition,
    campaign_calendar,
    zones_in_use,
)
from campaigns.services.progress import campaign_progress
from notifier.models import Recipient

CALENDAR_TEMPLATE = "admin/campaigns/campaign/calendar.html"
SESSION_ZONE = "campaigns_calendar_time_zone"
VIEWS = (("month", "Month"), ("week", "Week"))
FIRST_YEAR, LAST_YEAR = 1970, 2999  # the calendar's ends


def _url_name(model_admin: admin.ModelAdmin[Any], suffix: str) -> str:
    return f"{model_admin.opts.app_label}_{model_admin.opts.model_name}_{suffix}"


def live_urls(model_admin: admin.ModelAdmin[Any]) -> list[URLPattern]:
    """The progress endpoint (<id>/progress/) and the calendar (calendar/), for get_urls."""
    view = model_admin.admin_site.admin_view
    return [
        path(
            "calendar/",
            view(require_GET(_calendar_view(model_admin))),
            name=_url_name(model_admin, "calendar"),
        ),
        path(
            "<path:object_id>/progress/",
            view(require_GET(_progress_view(model_admin))),
            name=_url_name(model_admin, "progress"),
        ),
    ]


def progress_url(campaign_id: int, *, admin_site_name: str = "admin") -> str:
    opts = Campaign._meta
    return reverse(
        f"{admin_site_name}:{opts.app_label}_{opts.model_name}_progress", args=[quote(campaign_id)]
    )


# --- Progress -------------------------------------------------------------------------------


def _progress_view(model_admin: admin.ModelAdmin[Any]) -> Callable[..., HttpResponse]:
    def campaign_progress_view(request: HttpRequest, object_id: str) -> HttpResponse:
        campaign = model_admin.get_object(request, unquote(object_id))
        if campaign is None:
            raise Http404(f"No campaign with id {object_id!r}")
        if not model_admin.has_view_permission(request, campaign):
            raise PermissionDenied
        return JsonResponse(campaign_progress(campaign).as_dict())

    return campaign_progress_view


# --- Calendar -------------------------------------------------------------------------------


def _valid_zone(name: str) -> ZoneInfo | None:
    try:
        return ZoneInfo(name) if name else None
    except (ValueError, KeyError, OSError):
        return None


class CalendarQuery(forms.Form):
    """The calendar's query string: which view, a day in the period, and a zone to remember."""

    view = forms.ChoiceField(choices=VIEWS, required=False)
    date = forms.DateField(required=False, input_formats=["%Y-%m-%d"])
    tz = forms.CharField(required=False, max_length=64, label="Time zone")

    def clean_date(self) -> Any:  # a date or None ("date" here is the field's name)
        day = self.cleaned_data["date"]
        # A period drawn around date.min or date.max would overflow (a 500, not an answer).
        if day is not None and not FIRST_YEAR <= day.year <= LAST_YEAR:
            raise forms.ValidationError(f"A day between {FIRST_YEAR} and {LAST_YEAR}.")
        return day

    def clean_tz(self) -> str:
        name: str = self.cleaned_data["tz"].strip()
        if name and _valid_zone(name) is None:
            raise forms.ValidationError(f"{name!r} is not a time zone (e.g. Asia/Shanghai).")
        return name


def marketer_zone(request: HttpRequest, picked: str = "") -> tuple[ZoneInfo, str]:
    """The zone the calendar is drawn in and where it came from (see the module docstring)."""
    if picked:
        request.session[SESSION_ZONE] = picked
        return ZoneInfo(picked), "picked on this page"
    remembered = _valid_zone(request.session.get(SESSION_ZONE, ""))
    if remembered is not None:
        return remembered, "picked on this page"
    own = (
        Recipient.objects.filter(user_id=request.user.pk)
        .values_list("time_zone", flat=True)
        .first()
        if request.user.pk is not None
        else None
    )
    zone = _valid_zone(own or "")
    if zone is not None:
        return zone, "your profile's time zone"
    return ZoneInfo(settings.TIME_ZONE), "the site's time zone"


@dataclass(frozen=True)
class Day:
    day: date
    in_period: bool
    is_today: bool
    steps: list[tuple[CalendarStep, str]]  # each with its campaign's page
    competitions: list[Competition]


def period(view: str, anchor: date) -> tuple[date, date, date, date]:
    """(first day shown, day after the last shown, previous anchor, next anchor). A week runs
    Monday to Sunday; a month is drawn in whole weeks."""
    if view == "week":
        first = anchor - timedelta(days=anchor.weekday())
        return first, first + timedelta(days=7), first - timedelta(days=7), first + timedelta(7)
    month_start = anchor.replace(day=1)
    days = calendar_module.monthrange(anchor.year, anchor.month)[1]
    month_end = month_start + timedelta(days=days)
    first = month_start - timedelta(days=month_start.weekday())
    after = month_end + timedelta(days=(7 - month_end.weekday()) % 7)
    previous = (month_start - timedelta(days=1)).replace(day=1)
    return first, after, previous, month_end


def _calendar_view(model_admin: admin.ModelAdmin[Any]) -> Callable[..., HttpResponse]:
    def campaign_calendar_view(request: HttpRequest) -> HttpResponse:
        if not model_admin.has_view_permission(request):
            raise PermissionDenied
        query = CalendarQuery(request.GET)
        if not query.is_valid():
            problems = "; ".join(
                f"{field}: {' '.join(str(error) for error in errors)}"
                for field, errors in query.errors.items()
            )
            # Plain text: the problems quote what was typed.
            return HttpResponseBadRequest(
                f"Bad calendar address: {problems}", content_type="text/plain; charset=utf-8"
            )
        view = query.cleaned_data["view"] or "month"
        tz, zone_source = marketer_zone(request, query.cleaned_data["tz"])
        today = timezone.now().astimezone(tz).date()
        anchor = query.cleaned_data["date"] or today
        first, after, previous, following = period(view, anchor)
        start = datetime.combine(first, time(0), tzinfo=tz)
        end = datetime.combine(after, time(0), tzinfo=tz)
        data = campaign_calendar(start=start, end=end, tz=tz)
        change = f"{model_admin.admin_site.name}:{_url_name(model_admin, 'change')}"
        days = [
            Day(
                day=day,
                in_period=view == "week" or day.month == anchor.month,
                is_today=day == today,
                steps=[
                    (step, reverse(change, args=[quote(step.campaign_id)]))
                    for step in data.by_day.get(day, [])
                ],
                competitions=data.competing_days.get(day, []),
            )
            for day in (first + timedelta(days=n) for n in range((after - first).days))
        ]
        base = reverse(f"{model_admin.admin_site.name}:{_url_name(model_admin, 'calendar')}")

        def link(**params: str) -> str:
            return f"{base}?{urlencode(params)}"

        zones = sorted({*zones_in_use(), str(tz), settings.TIME_ZONE})
        context = {
            **model_admin.admin_site.each_context(request),
            "opts": model_admin.opts,
            "title": "Campaign calendar",
            "subtitle": None,
            "view": view,
            "views": [
                (key, label, link(view=key, date=anchor.isoformat())) for key, label in VIEWS
            ],
            "heading": (
                f"{anchor:%B %Y}"
                if view == "month"
                else f"Week of {first:%d %b %Y} to {after - timedelta(days=1):%d %b %Y}"
            ),
            "weeks": [days[n : n + 7] for n in range(0, len(days), 7)],
            "weekdays": [calendar_module.day_abbr[n] for n in range(7)],
            "previous_url": link(view=view, date=previous.isoformat()),
            "next_url": link(view=view, date=following.isoformat()),
            "today_url": link(view=view, date=today.isoformat()),
            "time_zone": str(tz),
            "zone_source": zone_source,
            "zones": zones,
            "competitions": data.competitions,
            "steps_count": len(data.steps),
        }
        request.current_app = model_admin.admin_site.name
        return TemplateResponse(request, CALENDAR_TEMPLATE, context)

    return campaign_calendar_view


__all__ = ["CalendarQuery", "live_urls", "marketer_zone", "period", "progress_url"]
