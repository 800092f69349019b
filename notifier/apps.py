"""App config for the core: syncs code-defined notification types after migrate."""

from django.apps import AppConfig
from django.db.models.signals import post_migrate


class NotifierConfig(AppConfig):
    name = "notifier"
    verbose_name = "Notifications"
    default_auto_field = "django.db.models.BigAutoField"

    def ready(self) -> None:
        from notifier import checks  # noqa: F401  (registers the system checks)
        from notifier.catalog import sync_catalog_after_migrate

        post_migrate.connect(sync_catalog_after_migrate, sender=self)
