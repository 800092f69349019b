"""`manage.py notifier_erase`: erase one recipient's personal data (GDPR/PIPL)."""

from __future__ import annotations

from typing import Any

from django.core.management.base import BaseCommand, CommandError, CommandParser

from notifier.services.erasure import ErasureError, recipient_erase, recipient_find


class Command(BaseCommand):
    help = (
        "Erase everything Notifier holds about one person (contact points, devices, "
        "preferences, consent, inbox, message content, provider ids), keep their deliveries "
        "without content for campaign statistics, and put their identifiers on the suppression "
        "list. Name them by exactly one of --external-id, --user or --email."
    )

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("--external-id", help="the product's own id for the person")
        parser.add_argument("--user", help="the user's key (its primary key)")
        parser.add_argument("--email", help="the recipient's email address (any case)")
        parser.add_argument(
            "--reason", required=True, help="why (kept in the record): e.g. a ticket number"
        )
        parser.add_argument(
            "--by", default="", help="who asked for it (default: command:<OS user>)"
        )
        parser.add_argument(
            "--dry-run", action="store_true", help="count what would change; write nothing"
        )

    def handle(self, *args: Any, **options: Any) -> None:
        import getpass

        try:
            recipient = recipient_find(
                external_id=options["external_id"], user=options["user"], email=options["email"]
            )
            report = recipient_erase(
                recipient,
                by=options["by"] or f"command:{getpass.getuser()}",
                reason=options["reason"],
                dry_run=options["dry_run"],
            )
        except ErasureError as exc:
            raise CommandError(str(exc)) from exc
        verb = "Would erase" if options["dry_run"] else "Erased"
        again = " (erased before: tidied up)" if report.repeat else ""
        self.stdout.write(
            f"{verb} recipient {report.recipient_id}{again}: {report.rows} rows, "
            f"{report.identifiers} identifiers on the suppression list"
            + ("" if report.record_id is None else f"; record {report.record_id}")
        )
        for label, by_kind in sorted(report.counts.items()):
            done = ", ".join(f"{n} {kind}" for kind, n in sorted(by_kind.items()))
            self.stdout.write(f"  {label}: {done}")
