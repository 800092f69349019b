"""Shared by data migrations: grant permissions to a group on a database still being built.

Django creates permissions after all migrations; these migrations need them earlier, so they
create them first. (Modules starting with "_" are not migrations themselves.)
"""

from typing import Any


def create_all_permissions(apps: Any) -> None:
    """Every model's permissions, as Django would make them after migrate, made now."""
    from django.contrib.auth.management import create_permissions

    for app_config in apps.get_app_configs():
        # create_permissions skips apps without a models module, which the migration state's
        # app configs lack; put back what was there (the live registry must keep its own).
        original = getattr(app_config, "models_module", None)
        app_config.models_module = original or True
        create_permissions(app_config, apps=apps, verbosity=0)
        app_config.models_module = original


def grant(apps: Any, *, group: str, app_label: str, codenames: list[str]) -> None:
    create_all_permissions(apps)
    Group = apps.get_model("auth", "Group")
    Permission = apps.get_model("auth", "Permission")
    holder, _ = Group.objects.get_or_create(name=group)
    holder.permissions.add(*Permission.objects.filter(
        content_type__app_label=app_label, codename__in=codenames
    ))
