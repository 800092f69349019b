"""App config for the channel adapters; its label cannot clash with Django Channels."""

from django.apps import AppConfig


class ChannelAdaptersConfig(AppConfig):
    name = "channels"
    label = "notifier_channels"
    verbose_name = "Channel adapters"
    default_auto_field = "django.db.models.BigAutoField"

    def ready(self) -> None:
        from channels.registry import check_providers_configured

        check_providers_configured()
