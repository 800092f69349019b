"""Create the "Support" group: may view users and their whole delivery history, change nothing."""

from django.db import migrations

SUPPORT_GROUP = "Support"
VIEWABLE = {
    "notifier": ["user", "device", "notificationtype", "message", "delivery", "deliveryevent",
                 "inboxitem"],
    "campaigns": ["campaign"],
}


def create_support_group(apps, schema_editor):
    # Permissions are normally created after all migrations; create them now so the group can
    # hold them on a fresh database.
    from django.contrib.auth.management import create_permissions

    for app_config in apps.get_app_configs():
        app_config.models_module = True
        create_permissions(app_config, apps=apps, verbosity=0)
        app_config.models_module = None

    Group = apps.get_model("auth", "Group")
    Permission = apps.get_model("auth", "Permission")
    group, _ = Group.objects.get_or_create(name=SUPPORT_GROUP)
    for app_label, models in VIEWABLE.items():
        group.permissions.add(*Permission.objects.filter(
            content_type__app_label=app_label,
            codename__in=[f"view_{model}" for model in models],
        ))


def remove_support_group(apps, schema_editor):
    apps.get_model("auth", "Group").objects.filter(name=SUPPORT_GROUP).delete()


class Migration(migrations.Migration):
    dependencies = [
        ("auth", "0012_alter_user_first_name_max_length"),
        ("contenttypes", "0002_remove_content_type_name"),
        ("notifier", "0001_initial"),
        ("campaigns", "0001_initial"),
    ]
    operations = [migrations.RunPython(create_support_group, remove_support_group)]
