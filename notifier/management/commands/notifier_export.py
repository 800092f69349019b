"""`manage.py notifier_export`: everything Notifier holds about one person, as JSON."""

from __future__ import annotations

import json
from typing import Any

from django.core.management.base import BaseCommand, CommandError, CommandParser

from notifier.services.erasure import ErasureError, recipient_export, recipient_find


class Command(BaseCommand):
    help = (
        "Write everything Notifier holds about one person as JSON (a subject access request): "
        "the profile, messages with their deliveries, events and content, devices, "
        "preferences, consent, inbox, memberships, conversions. Name them by exactly one of "
        "--external-id, --user or --email."
    )

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("--external-id", help="the product's own id for the person")
        parser.add_argument("--user", help="the user's key (its primary key)")
        parser.add_argument("--email", help="the recipient's email address (any case)")
        parser.add_argument("--output", "-o", help="a file to write (default: standard output)")

    def handle(self, *args: Any, **options: Any) -> None:
        try:
            recipient = recipient_find(
                external_id=options["external_id"], user=options["user"], email=options["email"]
            )
        except ErasureError as exc:
            raise CommandError(str(exc)) from exc
        text = json.dumps(recipient_export(recipient), ensure_ascii=False, indent=2)
        if options["output"]:
            with open(options["output"], "w", encoding="utf-8") as file:
                file.write(text + "\n")
            self.stdout.write(f"Wrote {options['output']}")
        else:
            self.stdout.write(text)
