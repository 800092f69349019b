"""The staff roles, declared once: which Django permissions each group holds.

A role is a Django auth Group; its permissions are the admin's own ("view_campaign",
"change_segment", ...) plus four of ours: `campaigns.approve_campaign`,
`campaigns.allow_quiet_hours`, `notifier.retry_delivery` and `notifier.view_contact_details`
(full email addresses and phone numbers; without it the admin shows them masked,
"a****@example.com"). Migration 0014 applies this matrix, every later `migrate` re-applies it
(so models added since are in the Admin role at once; NOTIFIER_SYNC_ROLES_ON_MIGRATE=false
turns that off), and `manage.py sync_roles` re-applies it on demand: each group ends up with
exactly the permissions listed here, whatever was added or removed by hand in between.

- **Marketer** builds segments and campaigns and writes their copy. Marketers never see the
  customer list: no `view_user`, no `view_contact_details`. They see audiences as counts, a
  sample of 20 with masked emails, imported list members by id with a masked email, and one
  customer at a time in a campaign preview (masked). That is enough to check that a segment
  hits the right people, and not enough to contact them outside the pipeline. Without
  `view_contact_details` a customer is identified by id only: nothing a marketer can reach
  searches, filters, sorts, imports or looks up by email, phone or username, since each such
  answer would tell whether an address is a customer's (tests/security/test_contact_oracle.py).
- **Marketing lead**: a Marketer who may also approve a campaign someone else prepared, and
  let a campaign send in customers' quiet hours (its "Send in quiet hours" switch, shown to
  nobody else; the change is logged and approval covers it).
- **Support** answers "why didn't she get it?": views users (with their full contact details,
  to find them), their messages, deliveries (with what each said), inbox, devices, preferences
  and consent, campaigns and funnels; may retry a failed delivery, and make the audited fixes
  of the customer page (`notifier.fix_recipient`: resend a message, correct an email address or
  phone number, lift a bounce or complaint suppression, add a note; each recorded with who and
  why); changes nothing else by hand. Staff who view users without `notifier.fix_recipient` see
  the customer page with no fix buttons, and without `notifier.view_contact_details` with
  contact points and the customer's name, email and phone masked in what messages said.
- **Admin**: every permission there is (computed when applied, so new models are included).

Being in a group gives no admin access by itself: the user must also be staff (`is_staff`).
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

CRUD = ("add", "change", "delete", "view")

# Campaign models a marketer edits, and those only the pipeline writes (marketers read them).
CAMPAIGN_EDITABLE = (
    "segment",
    "segmentmember",
    "audiencethresholds",
    "campaign",
    "campaignstep",
    "stepvariant",
    "varianttemplate",
)
CAMPAIGN_READ_ONLY = ("holdout", "conversion", "campaignstats")
SUPPORT_VIEWS_NOTIFIER = (
    "user",
    "recipient",  # the user's contact points and profile (an inline on the user)
    "device",
    "notificationtype",
    "dateseries",
    "recipientdate",  # a person's own dates (a renewal), around which reminders go
    "message",
    "delivery",
    "deliveryevent",
    "deadletter",
    "inboxitem",
    "preference",
    "digestcadence",  # how often their digests come: a preference like the others
    "consent",
    "suppressedaddress",  # "why no email?": the address bounced or complained
    "providerevent",  # what each provider webhook said and did
)

VIEW_CONTACT_DETAILS = "notifier.view_contact_details"
RETRY_DELIVERY = "notifier.retry_delivery"
# The customer page's audited fixes: resend, correct a contact point, lift a suppression, note.
FIX_RECIPIENT = "notifier.fix_recipient"
# Erasing a person's data, and exporting all of it (GDPR/PIPL): the Admin role only.
ERASE_RECIPIENT = "notifier.erase_recipient"
EXPORT_RECIPIENT = "notifier.export_recipient"
# Notifying every follower of a topic from the Topic admin: the Admin role only (it reaches
# everyone who follows, like a campaign without a marketer's approval).
NOTIFY_TOPIC = "notifier.notify_topic"
APPROVE_CAMPAIGN = "campaigns.approve_campaign"
# Letting a campaign send in customers' quiet hours: a lead's decision, never a marketer's.
ALLOW_QUIET_HOURS = "campaigns.allow_quiet_hours"


def _perms(app_label: str, actions: Iterable[str], models: Iterable[str]) -> frozenset[str]:
    return frozenset(f"{app_label}.{action}_{model}" for model in models for action in actions)


@dataclass(frozen=True)
class Role:
    name: str  # the auth Group's name
    description: str
    permissions: frozenset[str]  # "app_label.codename"
    everything: bool = False  # every permission in the database, whatever `permissions` says


MARKETER_PERMISSIONS = (
    _perms("campaigns", CRUD, CAMPAIGN_EDITABLE)
    | _perms("campaigns", ["view"], CAMPAIGN_READ_ONLY)
    | _perms("notifier", ["view"], ["notificationtype", "routingrule", "dateseries"])
)

MARKETER = Role(
    "Marketer",
    "Segments, campaigns and their copy; sees customers only as counts and masked samples.",
    MARKETER_PERMISSIONS,
)
MARKETING_LEAD = Role(
    "Marketing lead",
    "A Marketer who also approves campaigns someone else prepared and may let a campaign send "
    "in quiet hours.",
    MARKETER_PERMISSIONS | {APPROVE_CAMPAIGN, ALLOW_QUIET_HOURS},
)
SUPPORT = Role(
    "Support",
    "Reads users and their whole delivery history, retries failed deliveries, and makes the "
    "customer page's audited fixes (resend, correct a contact point, lift a suppression, note).",
    _perms("notifier", ["view"], SUPPORT_VIEWS_NOTIFIER)
    | _perms(
        "campaigns",
        ["view"],
        [m for m in CAMPAIGN_EDITABLE + CAMPAIGN_READ_ONLY if m != "segmentmember"],
    )
    | {RETRY_DELIVERY, VIEW_CONTACT_DETAILS, FIX_RECIPIENT},
)
ADMIN = Role("Admin", "Everything.", frozenset(), everything=True)

ROLES: tuple[Role, ...] = (MARKETER, MARKETING_LEAD, SUPPORT, ADMIN)
ROLES_BY_NAME = {role.name: role for role in ROLES}


@dataclass(frozen=True)
class RoleSync:
    """What applying one role changed, and what it wanted that the database does not have."""

    role: str
    added: frozenset[str]
    removed: frozenset[str]
    missing: frozenset[str]


def role_plan(role: Role, *, available: Iterable[str], current: Iterable[str]) -> RoleSync:
    """Pure: the permissions to add and remove so a group holds exactly what `role` says."""
    available = frozenset(available)
    current = frozenset(current)
    wanted = available if role.everything else role.permissions & available
    return RoleSync(
        role=role.name,
        added=wanted - current,
        removed=current - wanted,
        missing=frozenset() if role.everything else role.permissions - available,
    )


def roles_sync(apps: Any = None, roles: Iterable[Role] = ROLES) -> list[RoleSync]:
    """Make each role's group hold exactly its permissions; creates groups and permissions.

    `apps` is a migration's app registry, or None for the live one (the management command).
    """
    from django.contrib.auth.management import create_permissions

    if apps is None:
        from django.apps import apps as live_apps

        for app_config in live_apps.get_app_configs():
            create_permissions(app_config, verbosity=0)
        apps = live_apps
    else:
        from notifier.migrations._permissions import create_all_permissions

        create_all_permissions(apps)
    Group = apps.get_model("auth", "Group")
    Permission = apps.get_model("auth", "Permission")
    by_name = {
        f"{app_label}.{codename}": pk
        for pk, app_label, codename in Permission.objects.values_list(
            "pk", "content_type__app_label", "codename"
        )
    }
    results = []
    for role in roles:
        group, _ = Group.objects.get_or_create(name=role.name)
        current = {
            f"{app_label}.{codename}"
            for app_label, codename in group.permissions.values_list(
                "content_type__app_label", "codename"
            )
        }
        plan = role_plan(role, available=by_name, current=current)
        if plan.added:
            group.permissions.add(*(by_name[p] for p in plan.added))
        if plan.removed:
            group.permissions.remove(*(by_name[p] for p in plan.removed))
        results.append(plan)
    return results


def roles_sync_after_migrate(using: str = "default", **kwargs: Any) -> None:
    """post_migrate: re-apply the matrix, so new models' permissions reach their roles."""
    from django.conf import settings
    from django.db import DEFAULT_DB_ALIAS

    if using == DEFAULT_DB_ALIAS and settings.NOTIFIER_SYNC_ROLES_ON_MIGRATE:
        roles_sync()
