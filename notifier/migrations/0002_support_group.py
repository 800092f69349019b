"""Create the "Support" group: may view users and their whole delivery history, change nothing."""

from django.db import migrations

from notifier.migrations._permissions import grant

SUPPORT_GROUP = "Support"
VIEWABLE = {
    "notifier": ["user", "device", "notificationtype", "message", "delivery", "deliveryevent",
                 "inboxitem"],
    "campaigns": ["campaign"],
}


def create_support_group(apps, schema_editor):
    for app_label, models in VIEWABLE.items():
        grant(apps, group=SUPPORT_GROUP, app_label=app_label,
              codenames=[f"view_{model}" for model in models])


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
