"""The profile fields now live on notifier.Recipient (0023, copied by 0024): drop them from
notifier.User, with their indexes (the PostgreSQL GIN index on interest tags from 0009 too).
On a host whose own AUTH_USER_MODEL swaps notifier.User out, none of this touches the database."""

from django.db import migrations, models


def drop_user_gin(apps, schema_editor):
    if apps.get_model("notifier", "User")._meta.swapped:
        return
    if schema_editor.connection.vendor == "postgresql":
        schema_editor.execute("DROP INDEX IF EXISTS user_interest_tags_gin")


def create_user_gin(apps, schema_editor):
    # Reversed last, after the columns are back.
    if apps.get_model("notifier", "User")._meta.swapped:
        return
    if schema_editor.connection.vendor == "postgresql":
        schema_editor.execute(
            "CREATE INDEX IF NOT EXISTS user_interest_tags_gin "
            "ON notifier_user USING gin (interest_tags)"
        )


class Migration(migrations.Migration):
    dependencies = [("notifier", "0024_recipient_copy")]

    operations = [
        migrations.RunPython(drop_user_gin, create_user_gin),
        migrations.AlterModelOptions(
            name='user',
            options={'verbose_name': 'user', 'verbose_name_plural': 'users'},
        ),
        migrations.RemoveIndex(
            model_name='user',
            name='user_email_idx',
        ),
        migrations.RemoveIndex(
            model_name='user',
            name='user_phone_idx',
        ),
        migrations.RemoveIndex(
            model_name='user',
            name='user_spend_idx',
        ),
        migrations.RemoveIndex(
            model_name='user',
            name='user_last_active_idx',
        ),
        migrations.RemoveIndex(
            model_name='user',
            name='user_locale_idx',
        ),
        migrations.RemoveIndex(
            model_name='user',
            name='user_time_zone_idx',
        ),
        migrations.RemoveIndex(
            model_name='user',
            name='user_points_expire_idx',
        ),
        migrations.RemoveField(
            model_name='user',
            name='interest_tags',
        ),
        migrations.RemoveField(
            model_name='user',
            name='last_active_at',
        ),
        migrations.RemoveField(
            model_name='user',
            name='locale',
        ),
        migrations.RemoveField(
            model_name='user',
            name='marketing_frequency',
        ),
        migrations.RemoveField(
            model_name='user',
            name='phone',
        ),
        migrations.RemoveField(
            model_name='user',
            name='points_balance',
        ),
        migrations.RemoveField(
            model_name='user',
            name='points_expire_at',
        ),
        migrations.RemoveField(
            model_name='user',
            name='quiet_hours_enabled',
        ),
        migrations.RemoveField(
            model_name='user',
            name='quiet_hours_end',
        ),
        migrations.RemoveField(
            model_name='user',
            name='quiet_hours_start',
        ),
        migrations.RemoveField(
            model_name='user',
            name='time_zone',
        ),
        migrations.RemoveField(
            model_name='user',
            name='usual_active_hour',
        ),
        migrations.RemoveField(
            model_name='user',
            name='yearly_spend',
        ),
    ]
