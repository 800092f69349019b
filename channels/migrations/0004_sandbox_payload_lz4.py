from django.db import migrations

from notifier.migrations._compression import lz4_columns


class Migration(migrations.Migration):
    """The sandbox's ledger keeps each send's content: stored with LZ4, as deliveries are."""

    dependencies = [
        ("notifier_channels", "0003_sandbox_duplicates_stay_visible"),
        ("notifier", "0044_large_values_lz4"),
    ]

    operations = [
        lz4_columns([("notifier_channels", "sandboxsend", "payload")]),
    ]
