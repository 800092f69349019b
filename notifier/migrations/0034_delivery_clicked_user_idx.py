"""An index of clicked deliveries by user, for the series check of each fan-out batch (issue 15).

Built without locking writers out, as 0033's (CREATE INDEX CONCURRENTLY on PostgreSQL; safe to
run again after it stopped half way), so the migration is not atomic.
"""

from __future__ import annotations

from importlib import import_module

from django.db import migrations, models

AddIndexLive = import_module("notifier.migrations.0033_narrower_indexes").AddIndexLive


class Migration(migrations.Migration):
    atomic = False

    dependencies = [("notifier", "0033_narrower_indexes")]

    operations = [
        AddIndexLive(
            model_name="delivery",
            index=models.Index(
                condition=models.Q(("clicked_at__isnull", False)),
                fields=["user"],
                name="delivery_clicked_user_idx",
            ),
        ),
    ]
