"""Admin for campaigns, their steps, variants and copy."""

from __future__ import annotations

from django.contrib import admin
from django.urls import URLPattern
from django.utils.html import format_html
from django.utils.safestring import SafeString

from campaigns.admin.stats import stats_url, stats_urls
from campaigns.models import Campaign


@admin.register(Campaign)
class CampaignAdmin(admin.ModelAdmin):
    list_display = ["name", "kind", "status", "event_at", "created_at", "funnel"]
    search_fields = ["name"]

    def get_urls(self) -> list[URLPattern]:
        # The funnel page first: the default "<path:object_id>/" pattern would swallow it.
        return [*stats_urls(self), *super().get_urls()]

    @admin.display(description="funnel")
    def funnel(self, obj: Campaign) -> SafeString:
        return format_html('<a href="{}">Funnel</a>', stats_url(obj.pk))
