"""The host product's own app: its customers (the user model) and a view that notifies."""

from django.apps import AppConfig


class ShopConfig(AppConfig):
    name = "tests.host.shop"
    label = "shop"
    default_auto_field = "django.db.models.BigAutoField"
