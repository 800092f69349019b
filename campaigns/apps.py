"""App config for campaigns: plugs them into the delivery core (notifier.hooks) and its erasure
registry (campaigns.privacy)."""

from django.apps import AppConfig


class CampaignsConfig(AppConfig):
    name = "campaigns"
    default_auto_field = "django.db.models.BigAutoField"

    def ready(self) -> None:
        from campaigns import privacy
        from campaigns.hooks import CampaignsPlugin
        from notifier.hooks import register_campaigns

        register_campaigns(CampaignsPlugin())
        privacy.register()  # its tables in the erasure registry
