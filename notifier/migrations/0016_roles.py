"""The role matrix of notifier/roles.py applied to the groups (Marketer, Marketing lead, Support,
Admin), and the "view contact details" permission it uses. `manage.py sync_roles` re-applies
the matrix later (after a change to roles.py, or to undo changes made by hand)."""

from django.db import migrations


def apply_roles(apps, schema_editor):
    from notifier.roles import roles_sync

    roles_sync(apps)


def remove_admin_group(apps, schema_editor):
    # The other groups predate this migration; only "Admin" is new here.
    apps.get_model("auth", "Group").objects.filter(name="Admin").delete()


class Migration(migrations.Migration):
    dependencies = [
        ("notifier", "0015_event_at_brin"),
        ("campaigns", "0006_segment_points_expiring"),
        ("django_celery_beat", "0019_alter_periodictasks_options"),
        ("notifier_channels", "0003_sandbox_duplicates_stay_visible"),
        ("sessions", "0001_initial"),
    ]

    operations = [
        migrations.AlterModelOptions(
            name="user",
            options={
                "permissions": [
                    ("view_contact_details", "Can see users' full email addresses and phone numbers")
                ]
            },
        ),
        migrations.RunPython(apply_roles, remove_admin_group),
    ]
