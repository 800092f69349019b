from django.db import migrations

from notifier.migrations._compression import lz4_columns


class Migration(migrations.Migration):
    """Rendered content, callers' contexts and inbox bodies stored with LZ4 (see
    `_compression`): a fan-out of large emails writes each recipient's rendered copy."""

    dependencies = [
        ("notifier", "0043_recipient_date_as_of"),
    ]

    operations = [
        lz4_columns(
            [
                ("notifier", "delivery", "content"),
                ("notifier", "message", "context"),
                ("notifier", "inboxitem", "body"),
            ]
        ),
    ]
