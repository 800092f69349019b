"""notifier.Recipient: what Notifier knows about a person, one-to-one with AUTH_USER_MODEL
(contact points, time zone, locale, quiet hours, marketing frequency, segment attributes), so a
host project can keep its own user model. 0024 copies the stand-alone users' fields into it,
0025 drops them from notifier.User.

The "view contact details" permission moves to the new model with its codename and app label
(notifier.view_contact_details), the same row, so the groups holding it keep it."""

import django.db.models.deletion
import notifier.models.users
from decimal import Decimal
from django.conf import settings
from django.db import migrations, models


def create_gin(apps, schema_editor):
    if schema_editor.connection.vendor == "postgresql":
        schema_editor.execute(
            "CREATE INDEX IF NOT EXISTS recipient_interest_tags_gin "
            "ON notifier_recipient USING gin (interest_tags)"
        )


def drop_gin(apps, schema_editor):
    if schema_editor.connection.vendor == "postgresql":
        schema_editor.execute("DROP INDEX IF EXISTS recipient_interest_tags_gin")


def _move_permission(apps, schema_editor, *, source, target):
    db = schema_editor.connection.alias
    ContentType = apps.get_model("contenttypes", "ContentType")
    Permission = apps.get_model("auth", "Permission")
    old = Permission.objects.using(db).filter(
        content_type__app_label="notifier", content_type__model=source, codename="view_contact_details"
    ).first()
    if old is None:  # a fresh database: Django creates it after migrate
        return
    content_type, _ = ContentType.objects.using(db).get_or_create(app_label="notifier", model=target)
    Permission.objects.using(db).filter(
        content_type=content_type, codename="view_contact_details"
    ).exclude(pk=old.pk).delete()
    old.content_type = content_type
    old.save(update_fields=["content_type"])


def permission_to_recipient(apps, schema_editor):
    _move_permission(apps, schema_editor, source="user", target="recipient")


def permission_to_user(apps, schema_editor):
    _move_permission(apps, schema_editor, source="recipient", target="user")


class Migration(migrations.Migration):

    dependencies = [
        ('notifier', '0022_delivery_claim_lease'),
        ('contenttypes', '0002_remove_content_type_name'),
        ('auth', '0012_alter_user_first_name_max_length'),
        migrations.swappable_dependency(settings.AUTH_USER_MODEL),
    ]

    operations = [
        migrations.CreateModel(
            name='Recipient',
            fields=[
                ('id', models.BigAutoField(auto_created=True, primary_key=True, serialize=False, verbose_name='ID')),
                ('user', models.OneToOneField(on_delete=django.db.models.deletion.CASCADE, related_name='notifier_recipient', to=settings.AUTH_USER_MODEL)),
                ('email', models.EmailField(blank=True, default='', max_length=254)),
                ('phone', models.CharField(blank=True, default='', help_text='E.164, e.g. +8613800138000', max_length=20, validators=[notifier.models.users.validate_e164])),
                ('time_zone', models.CharField(default='UTC', help_text='IANA name, e.g. Asia/Shanghai; quiet hours follow it', max_length=64, validators=[notifier.models.users.validate_time_zone])),
                ('locale', models.CharField(default='en', help_text='e.g. en, zh-hans', max_length=16)),
                ('quiet_hours_enabled', models.BooleanField(default=True)),
                ('quiet_hours_start', models.TimeField(blank=True, null=True)),
                ('quiet_hours_end', models.TimeField(blank=True, null=True)),
                ('marketing_frequency', models.CharField(choices=[('as_sent', "As they come (within the site's caps)"), ('weekly', 'At most one a week'), ('off', 'None')], default='as_sent', help_text='How often the person accepts marketing messages', max_length=10)),
                ('yearly_spend', models.DecimalField(decimal_places=2, default=Decimal('0'), max_digits=12)),
                ('last_active_at', models.DateTimeField(blank=True, null=True)),
                ('interest_tags', models.JSONField(blank=True, default=list)),
                ('points_balance', models.PositiveIntegerField(default=0)),
                ('points_expire_at', models.DateTimeField(blank=True, null=True)),
                ('usual_active_hour', models.PositiveSmallIntegerField(blank=True, null=True)),
                ('created_at', models.DateTimeField(auto_now_add=True)),
                ('updated_at', models.DateTimeField(auto_now=True)),
            ],
            options={
                'permissions': [('view_contact_details', "Can see users' full email addresses and phone numbers")],
                'indexes': [
                    models.Index(fields=['email'], name='recipient_email_idx'),
                    models.Index(fields=['phone'], name='recipient_phone_idx'),
                    models.Index(fields=['yearly_spend'], name='recipient_spend_idx'),
                    models.Index(fields=['last_active_at'], name='recipient_last_active_idx'),
                    models.Index(condition=models.Q(('points_balance__gt', 0)), fields=['points_expire_at'], name='recipient_points_expire_idx'),
                    models.Index(fields=['locale'], name='recipient_locale_idx'),
                    models.Index(fields=['time_zone'], name='recipient_time_zone_idx'),
                ],
            },
        ),

        migrations.RunPython(create_gin, drop_gin),
        migrations.RunPython(permission_to_recipient, permission_to_user),
    ]
