"""The role matrix as data: the pure plan, the migration's groups, and `manage.py sync_roles`."""

from __future__ import annotations

import importlib
from io import StringIO

import pytest
from django.apps import apps
from django.contrib.auth.models import Group, Permission
from django.core.management import CommandError, call_command

from notifier import roles
from notifier.roles import (
    ADMIN,
    MARKETER,
    MARKETING_LEAD,
    ROLES,
    SUPPORT,
    VIEW_CONTACT_DETAILS,
    Role,
    role_plan,
)


def group_permissions(name: str) -> set[str]:
    return {
        f"{app}.{codename}"
        for app, codename in Group.objects.get(name=name).permissions.values_list(
            "content_type__app_label", "codename"
        )
    }


def every_permission() -> set[str]:
    return {
        f"{app}.{codename}"
        for app, codename in Permission.objects.values_list("content_type__app_label", "codename")
    }


# --- Pure ------------------------------------------------------------------------------------


def test_the_plan_adds_what_is_missing_and_removes_what_was_added_by_hand():
    role = Role("R", "", frozenset({"a.view_x", "a.change_x"}))
    plan = role_plan(
        role,
        available={"a.view_x", "a.change_x", "a.delete_x"},
        current={
            "a.view_x",
            "a.delete_x",
        },
    )
    assert plan.added == {"a.change_x"}
    assert plan.removed == {"a.delete_x"}
    assert plan.missing == frozenset()


def test_a_permission_that_does_not_exist_is_reported_not_granted():
    role = Role("R", "", frozenset({"a.view_x", "a.view_typo"}))
    plan = role_plan(role, available={"a.view_x"}, current=set())
    assert plan.added == {"a.view_x"}
    assert plan.missing == {"a.view_typo"}


def test_everything_means_every_available_permission():
    plan = role_plan(ADMIN, available={"a.x", "b.y"}, current={"a.x"})
    assert plan.added == {"b.y"}
    assert plan.missing == frozenset()


def test_what_the_matrix_says_about_contact_details():
    """Marketers never see the customer list or full contact details; Support does."""
    for role in (MARKETER, MARKETING_LEAD):
        assert "notifier.view_user" not in role.permissions
        assert VIEW_CONTACT_DETAILS not in role.permissions
        assert not any(p.startswith("auth.") for p in role.permissions)
    assert {"notifier.view_user", VIEW_CONTACT_DETAILS} <= SUPPORT.permissions
    assert not any(
        p.split(".")[1].startswith(("add_", "change_", "delete_")) for p in SUPPORT.permissions
    )
    assert MARKETING_LEAD.permissions - MARKETER.permissions == {
        "campaigns.approve_campaign",
        "campaigns.allow_quiet_hours",  # marketing in quiet hours: a lead's decision
    }


# --- On the database -------------------------------------------------------------------------


@pytest.mark.django_db
def test_the_migration_leaves_each_group_with_exactly_its_role():
    migration = importlib.import_module("notifier.migrations.0016_roles")
    migration.apply_roles(apps, None)  # again, in case a transactional test flushed them
    for role in ROLES:
        expected = every_permission() if role.everything else set(role.permissions)
        assert group_permissions(role.name) == expected, role.name


@pytest.mark.django_db
def test_sync_roles_puts_back_what_was_changed_by_hand():
    call_command("sync_roles", stdout=StringIO())
    support = Group.objects.get(name="Support")
    support.permissions.add(Permission.objects.get(codename="change_user"))
    support.permissions.remove(Permission.objects.get(codename="retry_delivery"))
    out = StringIO()
    call_command("sync_roles", stdout=out)
    assert group_permissions("Support") == set(SUPPORT.permissions)
    assert "+ notifier.retry_delivery" in out.getvalue()
    assert "- notifier.change_user" in out.getvalue()


@pytest.mark.django_db
def test_sync_roles_with_a_typo_in_the_matrix_changes_nothing(monkeypatch):
    call_command("sync_roles", stdout=StringIO())
    before = {role.name: group_permissions(role.name) for role in ROLES}
    broken = Role("Support", "", frozenset({"notifier.view_user", "notifier.view_usr"}))
    monkeypatch.setattr(
        "notifier.management.commands.sync_roles.roles_sync",
        lambda: roles.roles_sync(roles=(broken,)),
    )
    with pytest.raises(CommandError, match=r"notifier\.view_usr"):
        call_command("sync_roles", stdout=StringIO())
    assert {role.name: group_permissions(role.name) for role in ROLES} == before


@pytest.mark.django_db
def test_migrate_reapplies_the_matrix_unless_switched_off(settings):
    from django.core.management.sql import emit_post_migrate_signal

    call_command("sync_roles", stdout=StringIO())
    support = Group.objects.get(name="Support")
    support.permissions.remove(Permission.objects.get(codename="retry_delivery"))
    settings.NOTIFIER_SYNC_ROLES_ON_MIGRATE = False
    emit_post_migrate_signal(verbosity=0, interactive=False, db="default")
    assert "notifier.retry_delivery" not in group_permissions("Support")
    settings.NOTIFIER_SYNC_ROLES_ON_MIGRATE = True
    emit_post_migrate_signal(verbosity=0, interactive=False, db="default")
    assert group_permissions("Support") == set(SUPPORT.permissions)
