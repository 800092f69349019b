"""`manage.py sync_roles`: give each staff group exactly the permissions notifier/roles.py lists."""

from __future__ import annotations

from typing import Any

from django.core.management.base import BaseCommand, CommandError
from django.db import transaction

from notifier.roles import ROLES, roles_sync


class Command(BaseCommand):
    help = (
        "Re-apply the role matrix (notifier/roles.py): create the Marketer, Marketing lead, "
        "Support and Admin groups and give each exactly its permissions, removing any other."
    )

    def handle(self, *args: Any, **options: Any) -> None:
        with transaction.atomic():
            results = roles_sync()
            missing = {r.role: sorted(r.missing) for r in results if r.missing}
            if missing:
                # Nothing half-applied: a typo in roles.py must not leave a group stripped.
                transaction.set_rollback(True)
                raise CommandError(
                    "roles.py names permissions that do not exist (run migrate first, or fix "
                    f"the name): {missing}"
                )
        for result in results:
            self.stdout.write(
                f"{result.role}: {len(result.added)} added, {len(result.removed)} removed"
                + "".join(f"\n  + {p}" for p in sorted(result.added))
                + "".join(f"\n  - {p}" for p in sorted(result.removed))
            )
        self.stdout.write(self.style.SUCCESS(f"{len(ROLES)} roles in sync."))
