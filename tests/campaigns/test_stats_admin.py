"""The funnel page in the admin: what Marketers and Support see, who may refresh, its queries."""

from __future__ import annotations

import importlib
import re
from datetime import UTC, datetime
from html import unescape as html_unescape

import pytest
from django.contrib import admin
from django.contrib.auth.models import Group, Permission
from django.db import connection
from django.test.utils import CaptureQueriesContext
from django.urls import URLPattern, URLResolver, include, path, reverse

from campaigns.admin.stats import stats_url, stats_url_name, stats_urls, timeline_svg
from campaigns.models import Campaign, CampaignStats, CampaignStatus, CampaignStep, StepVariant
from campaigns.services.stats import stats_rollup
from notifier.models import Delivery, Kind, Message, NotificationType
from notifier.status import DeliveryStatus as S
from notifier.status import Reason as R
from tests.factories import UserFactory

ROLES = importlib.import_module("campaigns.migrations.0003_marketing_roles")
SENT_AT = datetime(2026, 3, 1, 10, 5, tzinfo=UTC)


# --- URLs: the page as CampaignAdmin will include it -----------------------------------------


def _admin_patterns() -> list[URLPattern | URLResolver]:
    """The admin site's URLs, with the stats page added if CampaignAdmin does not yet
    include it itself (it calls stats_urls(self) from its get_urls)."""
    model_admin = admin.site._registry[Campaign]
    patterns = admin.site.get_urls()
    if not any(getattr(p, "name", None) == stats_url_name(model_admin) for p in model_admin.urls):
        opts = Campaign._meta
        patterns.insert(
            0, path(f"{opts.app_label}/{opts.model_name}/", include(stats_urls(model_admin)))
        )
    return patterns


urlpatterns = [
    path("admin/", (_admin_patterns(), "admin", admin.site.name)),
    path("", include("notifier.urls")),
]

pytestmark = [pytest.mark.urls(__name__), pytest.mark.usefixtures("db")]


# --- Roles and data --------------------------------------------------------------------------


def role(name: str) -> Group:
    """The group the campaigns migration made (made again the same way if a flush removed it)."""
    group, created = Group.objects.get_or_create(name=name)
    if created:
        if name == "Support":
            codenames = [f"view_{m}" for m in ROLES.EDITABLE + ROLES.VIEW_ONLY]
        else:
            codenames = ROLES.marketer_codenames()
        group.permissions.add(
            *Permission.objects.filter(content_type__app_label="campaigns", codename__in=codenames)
        )
    return group


def staff(username: str, group: str | None = None):
    user = UserFactory(username=username, is_staff=True)
    if group:
        user.groups.add(role(group))
    return user


@pytest.fixture
def marketer_client(client):
    client.force_login(staff("marketer", "Marketer"))
    return client


@pytest.fixture
def support_client(client):
    client.force_login(staff("support", "Support"))
    return client


def build_campaign(*, per_variant: dict[str, list[tuple[str, S, str]]]) -> Campaign:
    """A running campaign with one step whose variants got the given deliveries, one user
    (and message) per delivery, all sent (when sent) in the same hour."""
    notification_type, _ = NotificationType.objects.get_or_create(
        key="promo.stats_admin_test",
        defaults={"name": "Stats admin test", "kind": Kind.MARKETING, "channels": ["email"]},
    )
    campaign = Campaign.objects.create(name="Spring sale", status=CampaignStatus.RUNNING)
    step = CampaignStep.objects.create(campaign=campaign, name="3 days before", offset_minutes=-1)
    messages, deliveries = [], []
    for name, plan in per_variant.items():
        variant = StepVariant.objects.create(step=step, name=name)
        users = UserFactory.create_batch(len(plan))
        for user, (channel, status, reason) in zip(users, plan, strict=True):
            message = Message(
                user=user,
                type=notification_type,
                lane="bulk",
                campaign=campaign,
                step=step,
                variant=variant,
                created_at=SENT_AT,
            )
            messages.append(message)
            sent = status in {S.SENT, S.DELIVERED, S.OPENED, S.READ, S.CLICKED}
            deliveries.append(
                Delivery(
                    message=message,
                    user=user,
                    channel=channel,
                    status=status,
                    reason=reason,
                    created_at=SENT_AT,
                    updated_at=SENT_AT,
                    sent_at=SENT_AT if sent else None,
                )
            )
    Message.objects.bulk_create(messages)
    for delivery in deliveries:
        delivery.message_id = delivery.message.pk
    Delivery.objects.bulk_create(deliveries)
    return campaign


@pytest.fixture
def small_campaign() -> Campaign:
    """A: 3 users (clicked, sent, no consent); B: 2 users (opened; SMS without a phone number)."""
    campaign = build_campaign(
        per_variant={
            "A": [
                ("email", S.CLICKED, ""),
                ("email", S.SENT, ""),
                ("email", S.SUPPRESSED, R.NO_CONSENT),
            ],
            "B": [("email", S.OPENED, ""), ("sms", S.SUPPRESSED, R.NO_PHONE_NUMBER)],
        }
    )
    stats_rollup(campaign_ids=[campaign.pk])
    return campaign


def cell(html: str, scope: str, key: str) -> str:
    """The text of one funnel table cell: row `scope`, column `key` (a data-count/-rate)."""
    row = re.search(rf'<tr [^>]*data-scope="{re.escape(scope)}">(.*?)</tr>', html, re.S)
    assert row, f"no row for {scope}"
    found = re.search(rf'data-(?:count|rate)="{key}">\s*([^<\s][^<]*?)\s*(?:<|$)', row.group(1))
    assert found, f"no {key} cell in {scope}"
    return found.group(1)


# --- Reading ---------------------------------------------------------------------------------


def test_marketer_sees_the_funnel_numbers_of_each_scope(marketer_client, small_campaign):
    step = small_campaign.steps.get()
    a, b = step.variants.order_by("name")

    response = marketer_client.get(stats_url(small_campaign.pk))

    assert response.status_code == 200
    html = response.content.decode()
    assert cell(html, "campaign", "targeted") == "5"
    assert cell(html, "campaign", "suppressed") == "2"
    assert cell(html, "campaign", "reached") == "3"
    assert cell(html, "campaign", "opened") == "2"
    assert cell(html, "campaign", "clicked") == "1"
    assert cell(html, "campaign", "ctr") == "33.3%"
    assert cell(html, f"step:{step.pk}", "targeted") == "5"
    assert cell(html, f"variant:{a.pk}", "reached") == "2"
    assert cell(html, f"variant:{a.pk}", "ctr") == "50.0%"
    assert cell(html, f"variant:{b.pk}", "reached") == "1"
    assert cell(html, f"variant:{b.pk}", "ctr") == "0.0%"
    assert cell(html, f"variant:{b.pk}", "conversion") == "0.0%"


def test_suppressed_reasons_are_shown_with_their_human_labels(marketer_client, small_campaign):
    response = marketer_client.get(stats_url(small_campaign.pk))

    html = response.content.decode()
    why = re.search(r'id="not-sent">(.*?)</table>', html, re.S)
    assert why
    campaign_rows = re.findall(
        r'<tr class="level-campaign" data-scope="campaign" data-outcome="(\w+)">.*?'
        r"<td>([^<]*)</td>\s*<td class=\"num\">(\d+)</td>",
        why.group(1),
        re.S,
    )
    assert ("suppressed", R.NO_CONSENT.label, "1") in campaign_rows
    assert ("suppressed", R.NO_PHONE_NUMBER.label, "1") in campaign_rows
    assert ">no_consent<" not in html


def test_page_shows_holdout_ab_verdict_and_computed_at(marketer_client, small_campaign):
    computed_at = CampaignStats.objects.get(campaign=small_campaign, scope="campaign").computed_at

    html = marketer_client.get(stats_url(small_campaign.pk)).content.decode()

    assert 'id="holdout-counts">0 / 0<' in html
    assert 'id="uplift">— (—)<' in html
    assert 'id="uplift-interval">—<' in html
    assert 'id="treated-counts">0 / 5<' in html  # every user given a message is treated
    assert "Running: decides once, when each variant has 100 users" in html
    assert 'data-stage="running"' in html
    assert computed_at.strftime("%Y-%m-%d %H:%M:%S") in html


def test_charts_are_inline_svg_drawn_on_the_server(marketer_client, small_campaign):
    html = marketer_client.get(stats_url(small_campaign.pk)).content.decode()

    funnel = re.search(r'id="funnel-chart">.*?(<svg .*?</svg>)', html, re.S)
    timeline = re.search(r'id="timeline-chart">.*?(<svg .*?</svg>)', html, re.S)
    assert funnel and timeline
    stages = re.findall(r'data-stage="(\w+)"', funnel.group(1))
    assert stages == ["targeted", "reached", "delivered", "opened", "clicked", "converted"]
    assert "Reached: 3 (60.0%)" in funnel.group(1)
    # All three sends went out in one hour: one bar, its tooltip saying so.
    assert re.findall(r"<title>([^<]*)</title>", timeline.group(1)) == [
        "2026-03-01 10:00 UTC: 3 sent"
    ]
    assert "<script" not in html.split('id="campaign-stats"')[1]


def test_ab_winner_is_shown_with_its_p_value(marketer_client):
    campaign = build_campaign(
        per_variant={
            "A": [("email", S.CLICKED, "")] * 12 + [("email", S.SENT, "")] * 108,
            "B": [("email", S.CLICKED, "")] * 40 + [("email", S.SENT, "")] * 80,
        }
    )
    stats_rollup(campaign_ids=[campaign.pk])

    html = marketer_client.get(stats_url(campaign.pk)).content.decode()

    verdict = re.search(r'<p class="verdict winner">([^<]*)</p>', html)
    assert verdict and html_unescape(verdict.group(1)) == "B wins (p < 0.0001)"
    assert 'class="p-value">p &lt; 0.0001<' in html
    assert "Metric: click-through rate (clicked / reached)." in html
    assert "and kept: later roll-ups do not change it" in html


def test_support_can_read_the_page_without_a_refresh_button(support_client, small_campaign):
    response = support_client.get(stats_url(small_campaign.pk))

    assert response.status_code == 200
    html = response.content.decode()
    assert cell(html, "campaign", "targeted") == "5"
    assert 'id="refresh-now"' not in html


def test_staff_without_view_permission_is_refused(client, small_campaign):
    client.force_login(staff("stranger"))

    assert client.get(stats_url(small_campaign.pk)).status_code == 403


def test_a_campaign_not_yet_sending_says_the_funnel_is_not_computed(marketer_client):
    campaign = Campaign.objects.create(name="New", status=CampaignStatus.SCHEDULED)

    response = marketer_client.get(stats_url(campaign.pk))

    assert response.status_code == 200
    html = response.content.decode()
    assert "Not computed yet" in html
    assert 'id="funnel-table"' not in html
    assert 'id="campaign-progress"' not in html


@pytest.mark.parametrize("status", [CampaignStatus.RUNNING, CampaignStatus.PAUSED])
def test_a_sending_campaign_before_the_first_rollup_shows_the_live_counts(marketer_client, status):
    """Issue 14: never "Not computed yet" while a campaign runs; the live counts stand in."""
    campaign = Campaign.objects.create(name="New", status=status)

    html = marketer_client.get(stats_url(campaign.pk)).content.decode()

    assert "Not computed yet" not in html
    assert "the live counts above are what has happened so far" in html
    progress = reverse("admin:campaigns_campaign_progress", args=[campaign.pk])
    assert f'id="campaign-progress" data-url="{progress}"' in html


def test_unknown_campaign_is_404(marketer_client):
    assert marketer_client.get(stats_url(999_999)).status_code == 404


# --- Refreshing ------------------------------------------------------------------------------


def test_marketer_refresh_recomputes_this_campaigns_rows(marketer_client):
    campaign = build_campaign(per_variant={"A": [("email", S.CLICKED, "")]})
    other = build_campaign(per_variant={"A": [("email", S.CLICKED, "")]})
    assert not CampaignStats.objects.exists()
    page = stats_url(campaign.pk)

    assert 'id="refresh-now"' in marketer_client.get(page).content.decode()
    response = marketer_client.post(page)

    assert response.status_code == 302
    assert response["Location"] == page
    assert set(CampaignStats.objects.values_list("campaign_id", "scope")) == {
        (campaign.pk, "campaign"),
        (campaign.pk, f"step:{campaign.steps.get().pk}"),
        (campaign.pk, f"variant:{campaign.steps.get().variants.get().pk}"),
    }
    assert not CampaignStats.objects.filter(campaign=other).exists()
    followed = marketer_client.get(page).content.decode()
    assert "Funnel recomputed (3 rows)." in followed
    assert cell(followed, "campaign", "clicked") == "1"


def test_refresh_needs_the_change_permission(support_client, small_campaign):
    before = CampaignStats.objects.get(campaign=small_campaign, scope="campaign").computed_at

    response = support_client.post(stats_url(small_campaign.pk))

    assert response.status_code == 403
    after = CampaignStats.objects.get(campaign=small_campaign, scope="campaign").computed_at
    assert after == before


# --- Cost ------------------------------------------------------------------------------------


def test_page_makes_a_bounded_number_of_queries_and_reads_only_stats_rows(
    marketer_client, django_assert_max_num_queries
):
    campaign = build_campaign(
        per_variant={name: [("email", S.CLICKED, "")] * 30 for name in ("A", "B", "C")}
    )
    stats_rollup(campaign_ids=[campaign.pk])
    page = stats_url(campaign.pk)
    marketer_client.get(page)  # warm-up: the first request is not the one measured

    # Session, user, campaign, two permission lookups, the stats rows: 6, however many
    # steps, variants and recipients.
    with CaptureQueriesContext(connection) as queries, django_assert_max_num_queries(8):
        response = marketer_client.get(page)

    assert response.status_code == 200
    tables = " ".join(q["sql"] for q in queries)
    assert "campaigns_campaignstats" in tables
    for raw_table in ("notifier_message", "notifier_delivery", "notifier_inboxitem"):
        assert raw_table not in tables


def test_long_campaign_timeline_is_drawn_in_wider_buckets_keeping_every_send():
    # 30 days of hourly sends: 720 hours are drawn as 6-hour bars (at most 168 bars).
    timeline = [
        {"hour": f"2026-03-{day:02d}T{hour:02d}:00:00+00:00", "sent": 1}
        for day in range(1, 31)
        for hour in range(24)
    ]

    svg = str(timeline_svg(timeline))

    titles = re.findall(r"<title>([^<]*)</title>", svg)
    assert len(titles) == 120
    assert titles[0] == "2026-03-01 00:00 UTC (+6h): 6 sent"
    assert sum(int(t.rsplit(": ", 1)[1].split()[0]) for t in titles) == 720
    assert 'aria-label="Sends per 6 hours"' in svg


def test_holdout_comparison_shows_both_groups_interval_test_and_window():
    from campaigns.admin.stats import page_context

    holdout = {
        "window": {"start": "2026-03-07T12:00:00+00:00", "end": "2026-03-13T12:00:00+00:00"},
        "attribution_hours": 72,
        "final": True,
        "size": 80,
        "converted": 48,
        "conversion_rate": 0.6,
        "treated": {"size": 70, "converted": 56, "conversion_rate": 0.8},
        "uplift_points": 0.2,
        "uplift_relative": 0.2 / 0.6,
        "ci_low": 0.0524,
        "ci_high": 0.3339,
        "confidence": 0.95,
        "z": 2.6502,
        "p_value": 0.008045,
        "significant": True,
    }
    row = CampaignStats(
        scope="campaign",
        data={"scope": "campaign", "level": "campaign", "name": "c", "holdout": holdout},
        computed_at=SENT_AT,
    )

    shown = page_context([row])["holdout"]

    assert shown["treated_rate"] == "80.0%"
    assert shown["rate"] == "60.0%"
    assert shown["uplift_points"] == "+20.0 pts"
    assert shown["uplift_relative"] == "+33.3%"
    assert shown["interval"] == "+5.2 to +33.4 pts"
    assert shown["confidence"] == "95%"
    assert shown["p_value"] == "p = 0.0080"
    assert shown["final"] is True
    assert shown["window_end"] == datetime(2026, 3, 13, 12, 0, tzinfo=UTC)
    # 80 held out is significant here, and still too few to mean anything: said in words.
    assert shown["verdict"].startswith("Too few people held out to tell (80;")


@pytest.mark.parametrize(
    ("size", "low", "high", "significant", "says"),
    [
        (0, None, None, None, "No one was held out"),
        (99, 0.01, 0.2, True, "Too few people held out to tell (99; at least 100"),
        (500, -0.01, 0.05, False, "Too close to call: the uplift could be zero"),
        (500, 0.01, 0.05, True, "The campaign raised conversion, beyond chance"),
        (500, -0.05, -0.01, True, "The campaign lowered conversion, beyond chance"),
    ],
)
def test_the_uplift_verdict_says_when_the_holdout_cannot_tell(size, low, high, significant, says):
    from campaigns.admin.stats import holdout_verdict

    verdict, _ = holdout_verdict(
        size=size, treated_size=5000, low=low, high=high, significant=significant, final=True
    )

    assert verdict.startswith(says), verdict


def test_cancelled_deliveries_are_counted_in_why_not_sent(marketer_client):
    campaign = build_campaign(
        per_variant={
            "A": [
                ("email", S.SENT, ""),
                ("email", S.CANCELLED, R.CANCELLED),
                ("sms", S.CANCELLED, R.CANCELLED),
            ]
        }
    )
    stats_rollup(campaign_ids=[campaign.pk])

    html = marketer_client.get(stats_url(campaign.pk)).content.decode()

    assert cell(html, "campaign", "cancelled") == "2"
    why = re.search(r'id="not-sent">(.*?)</table>', html, re.S)
    assert why
    assert re.search(
        r'data-outcome="cancelled">.*?<td class="outcome">Cancelled</td>\s*<td>'
        + re.escape(str(R.CANCELLED.label))
        + r'</td>\s*<td class="num">2</td>',
        why.group(1),
        re.S,
    )
    assert "Every delivery went out." not in html


def test_delivered_says_which_channels_report_delivery(marketer_client, small_campaign):
    html = marketer_client.get(stats_url(small_campaign.pk)).content.decode()

    note = re.search(r'id="delivered-note">(.*?)</p>', html, re.S)
    assert note
    for words in ("email and SMS", "in-app", "push"):
        assert words in note.group(1)
    assert '<abbr title="Email and SMS: the provider reported delivery.' in html
