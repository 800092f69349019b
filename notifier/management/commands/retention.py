"""`manage.py retention`: archive then delete finished delivery-log rows past the retention."""

from __future__ import annotations

from typing import Any

from django.core.exceptions import ImproperlyConfigured
from django.core.management.base import BaseCommand, CommandError, CommandParser

from notifier.services.retention import retention_run


class Command(BaseCommand):
    help = (
        "Archive finished messages older than NOTIFIER_RETENTION_DAYS (with their deliveries, "
        "events and inbox items) to gzip JSON Lines in NOTIFIER_ARCHIVE_DIR, then delete them; "
        "then prune closed digests, finished topic sends, ended snoozes and expired throttle "
        "slots. The nightly beat job does the same; this runs it by hand."
    )

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument(
            "--dry-run", action="store_true", help="count what would go; write nothing"
        )
        parser.add_argument("--days", type=int, help="default: NOTIFIER_RETENTION_DAYS")
        parser.add_argument("--batch-size", type=int, help="default: NOTIFIER_RETENTION_BATCH")
        parser.add_argument(
            "--budget", type=float, help="seconds; default: NOTIFIER_RETENTION_BUDGET_S"
        )
        parser.add_argument("--archive-dir", help="default: NOTIFIER_ARCHIVE_DIR")

    def handle(self, *args: Any, **options: Any) -> None:
        try:
            report = retention_run(
                days=options["days"],
                batch_size=options["batch_size"],
                budget_s=options["budget"],
                archive_dir=options["archive_dir"],
                dry_run=options["dry_run"],
            )
        except ImproperlyConfigured as exc:
            raise CommandError(str(exc)) from exc
        self.stdout.write(report.summary())
        for path in report.files:
            self.stdout.write(f"  {path}")
