"""Support may see the dead letters and retry a failed delivery (but change nothing else)."""

from django.db import migrations


def grant(apps, schema_editor):
    from django.contrib.auth.management import create_permissions

    for app_config in apps.get_app_configs():
        app_config.models_module = True
        create_permissions(app_config, apps=apps, verbosity=0)
        app_config.models_module = None
    Group = apps.get_model("auth", "Group")
    Permission = apps.get_model("auth", "Permission")
    group, _ = Group.objects.get_or_create(name="Support")
    group.permissions.add(*Permission.objects.filter(
        content_type__app_label="notifier", codename__in=["view_deadletter", "retry_delivery"]
    ))


class Migration(migrations.Migration):
    dependencies = [("notifier", "0006_dead_letters")]
    operations = [migrations.RunPython(grant, migrations.RunPython.noop)]
