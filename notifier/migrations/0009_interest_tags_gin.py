"""A GIN index on interest tags (PostgreSQL only), so tag rules stay fast on a million users."""

from django.db import migrations


def create(apps, schema_editor):
    # No notifier_user table when a host's own user model swaps notifier.User out.
    if apps.get_model("notifier", "User")._meta.swapped:
        return
    if schema_editor.connection.vendor == "postgresql":
        schema_editor.execute(
            "CREATE INDEX IF NOT EXISTS user_interest_tags_gin "
            "ON notifier_user USING gin (interest_tags)"
        )


def drop(apps, schema_editor):
    if schema_editor.connection.vendor == "postgresql":
        schema_editor.execute("DROP INDEX IF EXISTS user_interest_tags_gin")


class Migration(migrations.Migration):
    dependencies = [("notifier", "0008_campaign_links_and_segment_indexes")]
    operations = [migrations.RunPython(create, drop)]
