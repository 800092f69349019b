"""Support may see the dead letters and retry a failed delivery (but change nothing else)."""

from django.db import migrations

from notifier.migrations._permissions import grant


def support_may_retry(apps, schema_editor):
    grant(apps, group="Support", app_label="notifier",
          codenames=["view_deadletter", "retry_delivery"])


class Migration(migrations.Migration):
    dependencies = [("notifier", "0006_dead_letters")]
    operations = [migrations.RunPython(support_may_retry, migrations.RunPython.noop)]
