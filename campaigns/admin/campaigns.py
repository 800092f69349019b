"""Admin for campaigns, their steps, variants and copy."""

from django.contrib import admin

from campaigns.models import Campaign


@admin.register(Campaign)
class CampaignAdmin(admin.ModelAdmin):
    list_display = ["name", "kind", "status", "event_at", "created_at"]
    search_fields = ["name"]
