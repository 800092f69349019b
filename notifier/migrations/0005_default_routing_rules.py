"""Seed the default routing rules (editable in the admin) and let Support view the new models."""

from django.db import migrations

from notifier.migrations._permissions import grant

# Ordered by cost: push and in-app cost nothing, email next to nothing, SMS real money.
DEFAULT_RULES = [
    {"name": "Critical: every channel at once", "priority": "critical",
     "send_all": ["sms", "push", "inapp", "email"], "fallback_chain": []},
    {"name": "High: every channel at once", "priority": "high",
     "send_all": ["sms", "push", "inapp", "email"], "fallback_chain": []},
    {"name": "Normal: in-app, then the cheapest channel that reaches them", "priority": "normal",
     "send_all": ["inapp"], "fallback_chain": ["push", "email", "sms"]},
    {"name": "Low: email and in-app only", "priority": "low",
     "send_all": ["email", "inapp"], "fallback_chain": []},
]
SUPPORT_VIEWS = ["preference", "consent", "frequencycounter", "routingrule"]


def seed(apps, schema_editor):
    RoutingRule = apps.get_model("notifier", "RoutingRule")
    for rule in DEFAULT_RULES:
        RoutingRule.objects.get_or_create(name=rule["name"], defaults=rule)

    grant(apps, group="Support", app_label="notifier",
          codenames=[f"view_{model}" for model in SUPPORT_VIEWS])


def unseed(apps, schema_editor):
    apps.get_model("notifier", "RoutingRule").objects.filter(
        name__in=[rule["name"] for rule in DEFAULT_RULES]
    ).delete()


class Migration(migrations.Migration):
    dependencies = [
        ("notifier", "0004_preferences_consent_caps_routing"),
        ("notifier", "0002_support_group"),
    ]
    operations = [migrations.RunPython(seed, unseed)]
