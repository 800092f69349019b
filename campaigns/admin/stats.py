"""The campaign funnel page in the admin: tables and server-drawn SVG charts over CampaignStats.

The page reads only the rolled-up CampaignStats rows (campaigns.services.stats), so it costs a
handful of queries however large the campaign. "Refresh now" recomputes this campaign's rows
on the spot and needs the change permission; reading needs the view permission.

CampaignAdmin includes it from its get_urls, before the default patterns (whose catch-all
"<path:object_id>/" would otherwise shadow it):

    def get_urls(self):
        return [*stats_urls(self), *super().get_urls()]
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from django.contrib import admin, messages
from django.contrib.admin.utils import quote, unquote
from django.core.exceptions import PermissionDenied
from django.http import Http404, HttpRequest, HttpResponse, HttpResponseRedirect
from django.template.response import TemplateResponse
from django.urls import URLPattern, path, reverse
from django.utils.html import format_html
from django.utils.safestring import SafeString, mark_safe
from django.views.decorators.http import require_http_methods

from campaigns.admin.live import live_urls
from campaigns.models import Campaign, CampaignStats, CampaignStatus
from campaigns.policies import AB_METRIC_LABELS, ABMetric, format_p
from campaigns.services.stats import CAMPAIGN_SCOPE, reason_label, stats_rollup

TEMPLATE = "admin/campaigns/campaign/stats.html"
LIVE_COUNTS = (CampaignStatus.RUNNING, CampaignStatus.PAUSED, CampaignStatus.DONE)
FUNNEL_STAGES = (
    ("targeted", "Targeted"),
    ("reached", "Reached"),
    ("delivered", "Delivered"),
    ("opened", "Opened"),
    ("clicked", "Clicked"),
    ("converted", "Converted"),
)
CHANNEL_COLUMNS = (
    ("total", "Deliveries"),
    ("sent", "Sent"),
    ("delivered", "Delivered"),
    ("opened", "Opened"),
    ("clicked", "Clicked"),
    ("failed", "Failed"),
    ("suppressed", "Suppressed"),
    ("held", "Held now"),
    ("cancelled", "Cancelled"),
    ("in_flight", "In flight"),
)
CHANNEL_LABELS = {"inapp": "In-app", "email": "Email", "sms": "SMS", "push": "Push"}
# The timeline draws at most this many bars; longer campaigns get wider buckets.
MAX_TIMELINE_BARS = 168
BUCKET_HOURS = (1, 2, 3, 6, 12, 24, 48, 168)


def stats_url_name(model_admin: admin.ModelAdmin[Any]) -> str:
    return f"{model_admin.opts.app_label}_{model_admin.opts.model_name}_stats"


def stats_url(campaign_id: int, *, admin_site_name: str = "admin") -> str:
    """The funnel page of a campaign, for links from the campaign's list and change form."""
    opts = Campaign._meta
    return reverse(
        f"{admin_site_name}:{opts.app_label}_{opts.model_name}_stats", args=[quote(campaign_id)]
    )


def stats_urls(model_admin: admin.ModelAdmin[Any]) -> list[URLPattern]:
    """The funnel page's URL (<id>/stats/, GET to read, POST to refresh), the live progress
    endpoint and the calendar (campaigns.admin.live), for get_urls."""
    view = require_http_methods(["GET", "POST"])(_stats_view(model_admin))
    return [
        *live_urls(model_admin),
        path(
            "<path:object_id>/stats/",
            model_admin.admin_site.admin_view(view),
            name=stats_url_name(model_admin),
        ),
    ]


def _stats_view(model_admin: admin.ModelAdmin[Any]) -> Callable[..., HttpResponse]:
    def campaign_stats_view(request: HttpRequest, object_id: str) -> HttpResponse:
        campaign = model_admin.get_object(request, unquote(object_id))
        if campaign is None:
            raise Http404(f"No campaign with id {object_id!r}")
        if request.method == "POST":
            if not model_admin.has_change_permission(request, campaign):
                raise PermissionDenied
            written = stats_rollup(campaign_ids=[campaign.pk])
            messages.success(request, f"Funnel recomputed ({written} rows).")
            return HttpResponseRedirect(request.path)
        if not model_admin.has_view_permission(request, campaign):
            raise PermissionDenied
        stats = list(CampaignStats.objects.filter(campaign=campaign))
        context = {
            **model_admin.admin_site.each_context(request),
            **page_context(stats),
            "opts": model_admin.opts,
            "title": f"Funnel: {campaign}",
            "subtitle": None,
            "original": campaign,
            "campaign": campaign,
            "can_refresh": model_admin.has_change_permission(request, campaign),
            # Sending or sent: the live counts (drawn by the page from the progress endpoint)
            # stand in for the funnel until the first roll-up.
            "live_counts": campaign.status in LIVE_COUNTS,
            "change_url": reverse(
                f"{model_admin.admin_site.name}:{model_admin.opts.app_label}_"
                f"{model_admin.opts.model_name}_change",
                args=[quote(campaign.pk)],
            ),
        }
        request.current_app = model_admin.admin_site.name
        return TemplateResponse(request, TEMPLATE, context)

    return campaign_stats_view


# --- What the page shows, from the rows' data ----------------------------------------------


def percent(rate: float | None) -> str:
    return "—" if rate is None else f"{rate * 100:.1f}%"


def signed_points(points: float | None) -> str:
    return "—" if points is None else f"{points * 100:+.1f} pts"


@dataclass(frozen=True)
class ReasonCount:
    label: str
    count: int


def reasons(counts: Mapping[str, int]) -> list[ReasonCount]:
    """Reason code → count, as human labels, most frequent first."""
    items = sorted(counts.items(), key=lambda item: (-item[1], item[0]))
    return [ReasonCount(reason_label(reason), count) for reason, count in items]


def _cancelled_reasons(total: Mapping[str, Any]) -> list[ReasonCount]:
    """Cancelled deliveries by reason; rows rolled up before reasons were kept say only how
    many."""
    by_reason = total.get("cancelled_by_reason")
    if by_reason is None and total.get("cancelled"):
        return [ReasonCount("Cancelled (reason not rolled up yet)", total["cancelled"])]
    return reasons(by_reason or {})


# Fewer people than this in the hold-out cannot show an uplift worth reading, whatever the
# test says: a rate measured on a few dozen people moves by points with one conversion.
MIN_HOLDOUT = 100


def holdout_verdict(
    *,
    size: int,
    treated_size: int,
    low: float | None,
    high: float | None,
    significant: bool | None,
    final: bool,
) -> tuple[str, str]:
    """The uplift in words, and a class for it: whether the hold-out can tell anything. Pure."""
    if size == 0:
        return "No one was held out, so there is nothing to compare with.", "quiet"
    if size < MIN_HOLDOUT:
        return (
            f"Too few people held out to tell ({size}; at least {MIN_HOLDOUT} are needed): "
            "read the uplift as noise.",
            "warning",
        )
    if treated_size == 0 or low is None or high is None:
        return "Nobody was sent anything yet: no uplift to measure.", "quiet"
    interim = "" if final else " (interim: the window is still open)"
    if low <= 0 <= high or not significant:
        return (
            "Too close to call: the uplift could be zero or even negative (its confidence "
            f"interval spans zero){interim}.",
            "warning",
        )
    direction = "raised" if low > 0 else "lowered"
    return f"The campaign {direction} conversion, beyond chance{interim}.", "verdict"


@dataclass(frozen=True)
class FunnelRow:
    """One line of the funnel table: a campaign, step or variant."""

    scope: str
    level: str
    name: str
    recipients: dict[str, int]
    ctr: str
    conversion_rate: str
    open_rate: str
    suppressed: int
    suppressed_reasons: list[ReasonCount]
    failed: int
    failed_reasons: list[ReasonCount]
    held: int
    held_reasons: list[ReasonCount]
    cancelled: int
    cancelled_reasons: list[ReasonCount]
    feedback: dict[str, int]

    @property
    def not_sent(self) -> list[tuple[str, list[ReasonCount]]]:
        """The outcomes that did not go out, each with its reasons (the "Why not sent" table)."""
        outcomes = [
            ("suppressed", self.suppressed_reasons),
            ("failed", self.failed_reasons),
            ("held now", self.held_reasons),
            ("cancelled", self.cancelled_reasons),
        ]
        return [(outcome, reasons) for outcome, reasons in outcomes if reasons]

    @classmethod
    def of(cls, data: Mapping[str, Any]) -> FunnelRow:
        total = data.get("deliveries", {}).get("total", {})
        rates = data.get("rates", {})
        return cls(
            scope=data["scope"],
            level=data["level"],
            name=data["name"],
            recipients=data.get("recipients", {}),
            ctr=percent(rates.get("ctr")),
            conversion_rate=percent(rates.get("conversion_rate")),
            open_rate=percent(rates.get("open_rate")),
            suppressed=total.get("suppressed", 0),
            suppressed_reasons=reasons(total.get("suppressed_by_reason", {})),
            failed=total.get("failed", 0),
            failed_reasons=reasons(total.get("failed_by_reason", {})),
            held=total.get("held", 0),
            held_reasons=reasons(total.get("held_by_reason", {})),
            cancelled=total.get("cancelled", 0),
            cancelled_reasons=_cancelled_reasons(total),
            feedback=data.get("feedback", {}),
        )


@dataclass(frozen=True)
class ChannelRow:
    channel: str
    label: str
    counts: list[int]
    suppressed_reasons: list[ReasonCount]
    failed_reasons: list[ReasonCount]


@dataclass(frozen=True)
class ABRow:
    step: str
    verdict: str
    winner: str | None
    p_value: str
    enough_data: bool
    variants: list[dict[str, Any]]
    metric: str
    trials_label: str
    successes_label: str
    decided: bool
    decided_at: datetime | None


AB_COLUMNS = {
    ABMetric.CTR: ("Reached", "Clicked"),
    ABMetric.CONVERSION: ("Assigned", "Converted"),
}


def ab_row(step_name: str, ab: Mapping[str, Any]) -> ABRow:
    metric = ABMetric(ab.get("metric", ABMetric.CTR))
    trials_label, successes_label = AB_COLUMNS[metric]
    decided_at = ab.get("decided_at")
    return ABRow(
        step=step_name,
        verdict=ab["verdict"],
        winner=ab["winner"],
        p_value="—" if ab["p_value"] is None else format_p(ab["p_value"]),
        enough_data=ab["enough_data"],
        variants=[
            {**variant, "rate_display": percent(variant["rate"])} for variant in ab["variants"]
        ],
        metric=AB_METRIC_LABELS[metric],
        trials_label=trials_label,
        successes_label=successes_label,
        decided=ab.get("stage") == "decided",
        decided_at=datetime.fromisoformat(decided_at) if decided_at else None,
    )


def signed_percent_points(low: float | None, high: float | None) -> str:
    if low is None or high is None:
        return "—"
    return f"{low * 100:+.1f} to {high * 100:+.1f} pts"


def page_context(stats: Iterable[CampaignStats]) -> dict[str, Any]:
    """Everything the template needs, from a campaign's CampaignStats rows (no queries)."""
    by_scope = {row.scope: row for row in stats}
    campaign_row = by_scope.get(CAMPAIGN_SCOPE)
    if campaign_row is None:
        return {"has_stats": False}
    campaign = campaign_row.data
    rows = [FunnelRow.of(campaign)]
    ab_rows = []
    for step_id in campaign.get("steps", []):
        step_stats = by_scope.get(f"step:{step_id}")
        if step_stats is None:
            continue
        step = step_stats.data
        rows.append(FunnelRow.of(step))
        for variant_id in step.get("variants", []):
            variant = by_scope.get(f"variant:{variant_id}")
            if variant is not None:
                rows.append(FunnelRow.of(variant.data))
        ab = step.get("ab")
        if ab:
            ab_rows.append(ab_row(step["name"], ab))
    channels = [
        ChannelRow(
            channel=channel,
            label=CHANNEL_LABELS.get(channel, channel),
            counts=[counts.get(key, 0) for key, _ in CHANNEL_COLUMNS],
            suppressed_reasons=reasons(counts.get("suppressed_by_reason", {})),
            failed_reasons=reasons(counts.get("failed_by_reason", {})),
        )
        for channel, counts in campaign.get("deliveries", {}).get("channels", {}).items()
    ]
    holdout = campaign.get("holdout", {})
    uplift_relative = holdout.get("uplift_relative")
    treated = holdout.get("treated", {})
    window = holdout.get("window")
    confidence = holdout.get("confidence")
    p_value = holdout.get("p_value")
    verdict, verdict_class = holdout_verdict(
        size=holdout.get("size", 0),
        treated_size=treated.get("size", 0),
        low=holdout.get("ci_low"),
        high=holdout.get("ci_high"),
        significant=holdout.get("significant"),
        final=holdout.get("final", False),
    )
    return {
        "has_stats": True,
        "computed_at": campaign_row.computed_at,
        "rows": rows,
        "any_not_sent": any(row.not_sent for row in rows),
        "ab_rows": ab_rows,
        "channel_columns": [label for _, label in CHANNEL_COLUMNS],
        "channel_rows": channels,
        "holdout": {
            "size": holdout.get("size", 0),
            "converted": holdout.get("converted", 0),
            "rate": percent(holdout.get("conversion_rate")),
            "treated_size": treated.get("size", 0),
            "treated_converted": treated.get("converted", 0),
            "treated_rate": percent(treated.get("conversion_rate")),
            "campaign_rate": percent(campaign.get("rates", {}).get("conversion_rate")),
            "uplift_points": signed_points(holdout.get("uplift_points")),
            "uplift_relative": "—" if uplift_relative is None else f"{uplift_relative:+.1%}",
            "interval": signed_percent_points(holdout.get("ci_low"), holdout.get("ci_high")),
            "confidence": "95%" if confidence is None else f"{confidence:.0%}",
            "p_value": "—" if p_value is None else format_p(p_value),
            "significant": holdout.get("significant"),
            "window_start": datetime.fromisoformat(window["start"]) if window else None,
            "window_end": datetime.fromisoformat(window["end"]) if window else None,
            "attribution_hours": holdout.get("attribution_hours"),
            "final": holdout.get("final", False),
            "verdict": verdict,
            "verdict_class": verdict_class,
        },
        "funnel_svg": funnel_svg(campaign.get("recipients", {})),
        "timeline_svg": timeline_svg(campaign.get("timeline", [])),
        "timeline_total": sum(point["sent"] for point in campaign.get("timeline", [])),
    }


# --- Charts: inline SVG drawn here, no JavaScript -------------------------------------------


def _svg(width: int, height: int, label: str, parts: Iterable[SafeString]) -> SafeString:
    return format_html(
        '<svg xmlns="http://www.w3.org/2000/svg" viewBox="0 0 {} {}" width="{}" height="{}" '
        'role="img" aria-label="{}" class="stats-chart">{}</svg>',
        width,
        height,
        width,
        height,
        label,
        # Safe: every part was built with format_html, which escaped its values.
        mark_safe("".join(parts)),
    )


def funnel_svg(recipients: Mapping[str, int]) -> SafeString:
    """Centred bars, one per stage, as wide as the stage's share of the targeted users."""
    width, label_width, bar_height, gap = 720, 230, 26, 8
    chart_width = width - label_width - 10
    targeted = recipients.get("targeted", 0)
    parts = []
    for index, (key, label) in enumerate(FUNNEL_STAGES):
        value = recipients.get(key, 0)
        share = value / targeted if targeted else 0.0
        bar = max(chart_width * share, 1.0 if value else 0.0)
        y = index * (bar_height + gap)
        parts.append(
            format_html(
                '<g class="stage" data-stage="{}">'
                '<text x="0" y="{}" dominant-baseline="middle">{}: {} ({})</text>'
                '<rect x="{}" y="{}" width="{}" height="{}" rx="3"><title>{}: {}</title></rect>'
                "</g>",
                key,
                y + bar_height / 2,
                label,
                value,
                percent(share if targeted else None),
                f"{label_width + (chart_width - bar) / 2:.1f}",
                y,
                f"{bar:.1f}",
                bar_height,
                label,
                value,
            )
        )
    height = len(FUNNEL_STAGES) * (bar_height + gap)
    return _svg(width, height, "Campaign funnel", parts)


def _buckets(timeline: list[dict[str, Any]]) -> tuple[datetime, int, list[int]]:
    """The sparse hourly timeline as dense bars: (start, hours per bar, sends per bar)."""
    points = [(datetime.fromisoformat(point["hour"]), point["sent"]) for point in timeline]
    start, end = points[0][0], points[-1][0]
    span_hours = int((end - start) / timedelta(hours=1)) + 1
    size = next(
        (hours for hours in BUCKET_HOURS if span_hours / hours <= MAX_TIMELINE_BARS),
        BUCKET_HOURS[-1],
    )
    bars = [0] * math.ceil(span_hours / size)
    for at, sent in points:
        bars[int((at - start) / timedelta(hours=1)) // size] += sent
    return start, size, bars


def timeline_svg(timeline: list[dict[str, Any]]) -> SafeString:
    """Sends per hour (or wider bucket for long campaigns) over the campaign's life, in UTC."""
    width, height, left, bottom, top = 720, 200, 50, 24, 10
    if not timeline:
        return mark_safe('<p class="help">Nothing sent yet.</p>')
    start, size, bars = _buckets(timeline)
    peak = max(bars) or 1
    plot_width, plot_height = width - left - 10, height - bottom - top
    bar_width = plot_width / len(bars)
    parts = [
        format_html(
            '<line x1="{}" y1="{}" x2="{}" y2="{}" class="axis"/>'
            '<text x="{}" y="{}" text-anchor="end" dominant-baseline="middle">{}</text>'
            '<text x="{}" y="{}" text-anchor="end" dominant-baseline="middle">0</text>',
            left,
            top + plot_height,
            width - 10,
            top + plot_height,
            left - 6,
            top,
            peak,
            left - 6,
            top + plot_height,
        )
    ]
    for index, sent in enumerate(bars):
        bar_height = plot_height * sent / peak
        at = start + timedelta(hours=index * size)
        parts.append(
            format_html(
                '<rect x="{}" y="{}" width="{}" height="{}">'
                "<title>{} UTC{}: {} sent</title></rect>",
                f"{left + index * bar_width:.1f}",
                f"{top + plot_height - bar_height:.1f}",
                f"{max(bar_width - 1, 0.5):.1f}",
                f"{bar_height:.1f}",
                at.strftime("%Y-%m-%d %H:%M"),
                f" (+{size}h)" if size > 1 else "",
                sent,
            )
        )
    end = start + timedelta(hours=len(bars) * size)
    parts.append(
        format_html(
            '<text x="{}" y="{}">{}</text><text x="{}" y="{}" text-anchor="end">{}</text>',
            left,
            height - 6,
            start.strftime("%Y-%m-%d %H:%M UTC"),
            width - 10,
            height - 6,
            end.strftime("%Y-%m-%d %H:%M UTC"),
        )
    )
    label = f"Sends per {size} hours" if size > 1 else "Sends per hour"
    return _svg(width, height, label, parts)


__all__ = [
    "funnel_svg",
    "holdout_verdict",
    "page_context",
    "stats_url",
    "stats_urls",
    "timeline_svg",
]
