"""App config for the core: gives every Notifier setting its default, syncs code-defined
notification types (and, where asked, the staff roles) after migrate, and connects Notifier's
signal handlers, Celery's included."""

from django.apps import AppConfig
from django.conf import settings
from django.db.models.signals import post_delete, post_migrate, post_save

from notifier.conf import apply_defaults

# When the app registry loads this module, before any model or service reads a setting.
apply_defaults(settings)


class NotifierConfig(AppConfig):
    name = "notifier"
    verbose_name = "Notifications"
    default_auto_field = "django.db.models.BigAutoField"

    def ready(self) -> None:
        from notifier.catalog import sync_catalog_after_migrate
        from notifier.models import NotificationType
        from notifier.operations import (
            celery_signals,
            checks,  # noqa: F401  (registers the system checks)
        )
        from notifier.roles import roles_sync_after_migrate
        from notifier.selectors import type_cache_clear

        post_migrate.connect(sync_catalog_after_migrate, sender=self)
        # Email tracking events from anymail's per-ESP webhook views (signature checked there).
        from anymail.signals import tracking

        from notifier.webhooks.views import email_tracking_received

        tracking.connect(email_tracking_received, dispatch_uid="notifier-email-tracking")
        post_migrate.connect(roles_sync_after_migrate, sender=self)  # if the setting asks
        # A browser that logged in gets the known-device cookie (the login limit's, see there).
        from django.contrib.auth.signals import user_logged_in

        from notifier.known_devices import remember_login

        user_logged_in.connect(remember_login, dispatch_uid="notifier-known-device")
        # This process sees an edited type at once; others within TYPE_CACHE_TTL_S.
        post_save.connect(lambda **_: type_cache_clear(), sender=NotificationType, weak=False)
        # A new user gets their recipient profile; a changed address reaches it.
        from django.conf import settings

        from notifier.models.recipients import recipient_follow_user

        post_save.connect(
            recipient_follow_user,
            sender=settings.AUTH_USER_MODEL,
            dispatch_uid="notifier-recipient-email",
        )
        post_delete.connect(lambda **_: type_cache_clear(), sender=NotificationType, weak=False)
        celery_signals.connect()
        # Outbound webhooks: their tasks registered in every process; this process reads the
        # endpoints again as soon as one is saved here (others within the cache's seconds).
        from notifier.events_out import tasks  # noqa: F401
        from notifier.events_out.record import endpoints_cache_clear
        from notifier.models import WebhookEndpoint

        post_save.connect(endpoints_cache_clear, sender=WebhookEndpoint, weak=False)
        post_delete.connect(endpoints_cache_clear, sender=WebhookEndpoint, weak=False)
