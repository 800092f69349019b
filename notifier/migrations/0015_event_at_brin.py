"""A BRIN index on delivery events' time (PostgreSQL only), for the failure-rate alerts.

The alert job counts the last few minutes of attempts every minute. Events are appended in
time order, so a BRIN index answers "since five minutes ago" from a few pages and costs next to
nothing on the insert path (a B-tree on this, the largest table, would cost every write).
"""

from django.db import migrations


def create(apps, schema_editor):
    if schema_editor.connection.vendor == "postgresql":
        schema_editor.execute(
            "CREATE INDEX IF NOT EXISTS event_at_brin "
            "ON notifier_deliveryevent USING brin (at) WITH (pages_per_range = 32)"
        )


def drop(apps, schema_editor):
    if schema_editor.connection.vendor == "postgresql":
        schema_editor.execute("DROP INDEX IF EXISTS event_at_brin")


class Migration(migrations.Migration):
    dependencies = [("notifier", "0014_provider_webhooks")]
    operations = [migrations.RunPython(create, drop)]
