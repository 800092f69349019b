"""The reach forecast in the admin: a panel on the campaign's page (which is also the approver's
screen) and the same panel on a page of its own, <id>/forecast/.

Shown while the campaign has not started (draft, awaiting approval, scheduled). It reads no
personal data, only counts, so whoever may view the campaign may read it. CampaignAdmin adds
`forecast_urls(self)` to its get_urls and `forecast_context(...)` to its change form's context;
the change form includes "_forecast_slot.html", which fetches the panel (<id>/forecast/?panel=1)
once the page is shown: routing a large audience's sample takes a second, the page does not
wait for it.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from django.contrib import admin
from django.contrib.admin.utils import quote, unquote
from django.core.exceptions import PermissionDenied
from django.http import Http404, HttpRequest, HttpResponse
from django.template.response import TemplateResponse
from django.urls import URLPattern, path, reverse
from django.utils import timezone

from campaigns.admin.stats import CHANNEL_LABELS
from campaigns.models import Campaign
from campaigns.services.forecast import (
    FORECAST_STATUSES,
    Forecast,
    StepForecast,
    campaign_forecast,
)

TEMPLATE = "admin/campaigns/campaign/forecast.html"
PANEL_TEMPLATE = "admin/campaigns/campaign/_forecast.html"


def forecast_url_name(model_admin: admin.ModelAdmin[Any]) -> str:
    return f"{model_admin.opts.app_label}_{model_admin.opts.model_name}_forecast"


def forecast_urls(model_admin: admin.ModelAdmin[Any]) -> list[URLPattern]:
    """The forecast page's URL (<id>/forecast/), for get_urls, before the default patterns."""
    return [
        path(
            "<path:object_id>/forecast/",
            model_admin.admin_site.admin_view(_forecast_view(model_admin)),
            name=forecast_url_name(model_admin),
        )
    ]


@dataclass(frozen=True)
class Row:
    """One line of a step's table: a label and a number per channel (or one for all)."""

    label: str
    cells: list[int]
    kind: str = "reason"  # "users" (one number for every channel), "stage", "reason", "out"
    reason: str = ""
    note: str = ""

    @property
    def users(self) -> int:
        return self.cells[0] if self.cells else 0


def _cells(counts: Mapping[str, int], channels: list[str]) -> list[int]:
    return [counts.get(channel, 0) for channel in channels]


def step_rows(step: StepForecast) -> list[Row]:
    """The step's funnel, top to bottom, as table rows."""
    channels = step.channels
    rows = [
        Row("In the segment", [step.in_segment], "users"),
        Row("Kept aside in the hold-out", [step.held_out], "users"),
        Row("After the hold-out", [step.after_holdout], "users"),
    ]
    for stage, reasons in step.stages():
        rows.append(Row(stage, _cells(_sum(r.counts for r in reasons), channels), "stage"))
        rows += [
            Row(r.label, _cells(r.counts, channels), "reason", reason=r.reason) for r in reasons
        ]
    if step.total_quiet:
        when = ", ".join(
            f"until {release.local_time} their time: {release.users:,}" for release in step.releases
        )
        rows.append(Row("Held for quiet hours", _cells(step.quiet, channels), "stage"))
        rows.append(
            Row(step.quiet_reason, _cells(step.quiet, channels), "reason", "quiet_hours", when)
        )
    if step.not_tried:
        rows.append(
            Row(
                "Not tried: an earlier channel of the fallback chain reaches them",
                _cells(step.not_tried, channels),
                "reason",
            )
        )
    rows.append(Row("Expected to go out", _cells(step.going_out, channels), "out"))
    return rows


def _sum(counts: Any) -> dict[str, int]:
    total: dict[str, int] = {}
    for one in counts:
        for channel, n in one.items():
            total[channel] = total.get(channel, 0) + n
    return total


def forecast_panel(forecast: Forecast) -> dict[str, Any]:
    """What _forecast.html draws."""
    return {
        "forecast": forecast,
        "forecast_steps": [
            {
                "step": step,
                "rows": step_rows(step),
                "channel_labels": [CHANNEL_LABELS.get(c, c) for c in step.channels],
                "width": max(1, len(step.channels)),
            }
            for step in forecast.steps
        ],
        "forecast_computed_at": timezone.localtime(forecast.computed_at),
    }


def forecast_context(
    model_admin: admin.ModelAdmin[Any], request: HttpRequest, campaign: Campaign
) -> dict[str, Any]:
    """Where the change form fetches its forecast panel from (nothing once it has started)."""
    if campaign.status not in FORECAST_STATUSES:
        return {}
    return {"forecast_url": _url(model_admin, campaign)}


def _url(model_admin: admin.ModelAdmin[Any], campaign: Campaign) -> str:
    return reverse(
        f"{model_admin.admin_site.name}:{forecast_url_name(model_admin)}",
        args=[quote(campaign.pk)],
    )


def _forecast_view(model_admin: admin.ModelAdmin[Any]) -> Callable[..., HttpResponse]:
    def campaign_forecast_view(request: HttpRequest, object_id: str) -> HttpResponse:
        campaign = model_admin.get_object(request, unquote(object_id))
        if campaign is None:
            raise Http404(f"No campaign with id {object_id!r}")
        if not model_admin.has_view_permission(request, campaign):
            raise PermissionDenied
        if request.GET.get("panel"):  # the change form's panel alone
            panel = {
                **forecast_panel(campaign_forecast(campaign=campaign)),
                "forecast_url": _url(model_admin, campaign),
            }
            return TemplateResponse(request, PANEL_TEMPLATE, panel)
        context = {
            **model_admin.admin_site.each_context(request),
            **forecast_panel(campaign_forecast(campaign=campaign)),
            "opts": model_admin.opts,
            "title": f"Forecast: {campaign}",
            "subtitle": None,
            "original": campaign,
            "campaign": campaign,
            "change_url": reverse(
                f"{model_admin.admin_site.name}:{model_admin.opts.app_label}_"
                f"{model_admin.opts.model_name}_change",
                args=[quote(campaign.pk)],
            ),
            "forecast_started": campaign.status not in FORECAST_STATUSES,
        }
        request.current_app = model_admin.admin_site.name
        return TemplateResponse(request, TEMPLATE, context)

    return campaign_forecast_view
