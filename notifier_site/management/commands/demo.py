"""`manage.py demo`: send real notifications through the whole pipeline and show the log."""

from __future__ import annotations

import time
from datetime import timedelta
from typing import Any
from zoneinfo import ZoneInfo

from django.conf import settings
from django.core.management import call_command
from django.core.management.base import BaseCommand, CommandError
from django.utils import timezone

from notifier.api import notify
from notifier.links import preferences_url
from notifier.models import Delivery, Device, Message, Platform, User, recipient_for
from notifier.selectors import inbox_page, inbox_unread_count, user_history
from notifier.status import TERMINAL, Reason
from notifier_site.embedded import embedded_worker
from notifier_site.management.commands._demo_http import Showcase, service_api_showcase

# Mei's password on the demo's own SQLite database, so her inbox page can be opened.
DEMO_PASSWORD = "mei-demo-inbox"
PEOPLE: list[dict[str, Any]] = [
    # Reachable everywhere: all four channels go out.
    {
        "username": "mei",
        "first_name": "Mei",
        "email": "mei@example.com",
        "phone": "+8613800138000",
        "time_zone": "Asia/Shanghai",
        "locale": "zh-hans",
        "device": ("android", "demo-fcm-token-mei"),
    },
    # Her mail server times out once: the email is retried with backoff, then sent.
    # No phone on file: the SMS is suppressed with that reason.
    {
        "username": "sam",
        "first_name": "Sam",
        "email": "sam+fail-transient-1@example.com",
        "phone": "",
        "time_zone": "America/New_York",
        "locale": "en",
        "device": ("web", "https://push.example.com/demo-sam"),
    },
    # An address that no longer exists: a permanent failure, not retried.
    {
        "username": "ola",
        "first_name": "Ola",
        "email": "ola+fail-permanent@example.com",
        "phone": "+4791234567",
        "time_zone": "Europe/Oslo",
        "locale": "en",
        "device": None,
    },
]


class Command(BaseCommand):
    help = (
        "Send a few notifications through every channel on the embedded default and print "
        "each user's delivery history."
    )

    def add_arguments(self, parser: Any) -> None:
        parser.add_argument(
            "--timeout",
            type=float,
            default=60.0,
            help="seconds to wait for every delivery to finish",
        )

    def handle(self, *args: Any, **options: Any) -> None:
        call_command("migrate", verbosity=0, interactive=False)
        users = [self.person(spec) for spec in PEOPLE]
        mei, sam, ola = users
        run = timezone.now().strftime("%Y%m%d%H%M%S")
        self.say(
            f"Database: {settings.DATABASES['default']['ENGINE'].rsplit('.', 1)[-1]}, "
            f"broker: {settings.CELERY_BROKER_URL.split('://')[0]}, "
            f"providers: {settings.NOTIFIER_PROVIDERS}"
        )
        with embedded_worker():
            order = {
                "order_number": f"A{run[-6:]}",
                "carrier": "SF Express",
                "eta": "Tuesday",
                "tracking_url": f"https://shop.example.com/track/A{run[-6:]}",
            }
            sent = [
                notify(mei, "order.shipped", order, idempotency_key=f"demo:{run}:ship:mei"),
                notify(
                    sam,
                    "payment.succeeded",
                    {"amount": "$42.00", "order_number": "B77"},
                    idempotency_key=f"demo:{run}:pay:sam",
                ),
                notify(
                    ola,
                    "order.shipped",
                    order,
                    channels=["email", "inapp"],
                    idempotency_key=f"demo:{run}:ship:ola",
                ),
                # A promotion: low priority goes to email and in-app; Mei never agreed to
                # marketing email, so only the in-app one goes out.
                notify(
                    mei,
                    "promo.flash_sale",
                    {
                        "sale_name": "Double 11",
                        "starts_at": "tonight at 20:00",
                        "headline": "Up to 50% off cards you follow",
                        "sale_url": "https://shop.example.com/sale",
                    },
                    idempotency_key=f"demo:{run}:sale:mei",
                ),
                # A service reminder to Ola during her quiet hours: held for her morning.
                notify(
                    ola,
                    "subscription.renewal_reminder",
                    {"plan": "Pro", "renews_on": "1 December"},
                    channels=["inapp", "email"],
                    idempotency_key=f"demo:{run}:renew:ola",
                ),
            ]
            again = notify(mei, "order.shipped", order, idempotency_key=f"demo:{run}:ship:mei")
            self.say(
                f"notify() twice with one idempotency key -> message #{again.pk} both "
                f"times: {'yes' if again.pk == sent[0].pk else 'NO'}"
            )
            with service_api_showcase() as showcase:
                over_http = self.call_over_http(showcase, run)
                self.wait_until_done([*sent, *over_http], options["timeout"])
                self.print_events(showcase, over_http, options["timeout"])
        for user in users:
            self.print_history(user, [m.pk for m in sent])
        self.print_inbox(mei)
        self.print_pages(mei)

    def call_over_http(self, showcase: Showcase, run: str) -> list[Message]:
        """Another service's view: create a recipient by its own id, notify them, twice."""
        self.say("")
        self.say(self.style.MIGRATE_HEADING("From another service, over HTTP"))
        self.say(f"  the site at {showcase.site}, API key ntf_{showcase.key_prefix}_… (all scopes)")
        customer = f"crm-{run}"
        status, body = showcase.call(
            "PUT",
            f"recipients/{customer}",
            {"email": "li@example.com", "phone": "+8613900139000", "time_zone": "Asia/Shanghai"},
        )
        self.say(
            f"  PUT  /api/v1/recipients/{customer} -> {status} {body.get('external_id', body)}"
        )
        order = {
            "order_number": f"C{run[-6:]}",
            "carrier": "SF Express",
            "eta": "Friday",
            "tracking_url": f"https://shop.example.com/track/C{run[-6:]}",
        }
        call = {"recipient": customer, "type": "order.shipped", "context": order}
        key = f"demo:{run}:ship:{customer}"
        first = showcase.call("POST", "notify", call, **{"Idempotency-Key": key})
        again = showcase.call("POST", "notify", call, **{"Idempotency-Key": key})
        self.say(f"  POST /api/v1/notify (Idempotency-Key {key}) -> {first[0]} {first[1]}")
        self.say(f"  the same call again                      -> {again[0]} {again[1]}")
        refused = showcase.call("POST", "notify", {**call, "context": {}})
        self.say(f"  POST /api/v1/notify without its context  -> {refused[0]} {refused[1]['type']}")
        if first[0] != 202:
            raise CommandError(f"the API refused the demo's call: {first[1]}")
        return [Message.objects.get(pk=first[1]["message"])]

    def print_events(self, showcase: Showcase, messages: list[Message], timeout: float) -> None:
        """What the product's webhook receiver got back, each request's signature checked."""
        message = messages[0]
        channels = Delivery.objects.filter(message=message).count()
        wanted = {"message.created", "delivery.sent"}
        arrived = showcase.wait_for_events(message.pk, wanted, timeout=min(timeout, 30.0))
        events = showcase.events_for(message.pk)
        self.say("")
        self.say(self.style.MIGRATE_HEADING("Events to your systems (a signed webhook)"))
        self.say(
            f"  a receiver at {showcase.endpoint.url} got {len(events)} events for message "
            f"#{message.pk} ({channels} deliveries), every signature verified with "
            f"standardwebhooks; {showcase.received.refused} refused"
        )
        for event in sorted(events, key=lambda e: (e["timestamp"], e["type"])):
            data = event["data"]
            what = f"{data.get('channel', '')} {data.get('status', '')}".strip()
            self.say(f"  {event['type']:18} {what:18} {data.get('external_id') or ''}")
        if not arrived:
            self.say(self.style.WARNING(f"  still waiting for {', '.join(sorted(wanted))}"))

    def say(self, text: str) -> None:
        self.stdout.write(text)

    def person(self, spec: dict[str, Any]) -> User:
        fields = {k: v for k, v in spec.items() if k not in ("username", "device")}
        if spec["username"] == "ola":  # her night, whenever the demo runs
            local = timezone.now().astimezone(ZoneInfo(spec["time_zone"]))
            fields.update(
                quiet_hours_enabled=True,
                quiet_hours_start=(local - timedelta(hours=1)).time(),
                quiet_hours_end=(local + timedelta(hours=1)).time(),
            )
        else:
            fields["quiet_hours_enabled"] = False
        account = {k: fields.pop(k) for k in ("first_name", "email")}
        user, _ = User.objects.update_or_create(username=spec["username"], defaults=account)
        # Contact points, time zone, locale and quiet hours live on the recipient profile.
        profile = recipient_for(user)
        for name, value in {**fields, "email": account["email"]}.items():
            setattr(profile, name, value)
        profile.save()
        if spec["device"]:
            platform, token = spec["device"]
            Device.objects.update_or_create(
                token=token,
                defaults={
                    "user": user,
                    "platform": Platform(platform),
                    "active": True,
                    "web_push_keys": {"p256dh": "demo", "auth": "demo"}
                    if platform == "web"
                    else None,
                },
            )
        return user

    def wait_until_done(self, messages: list[Message], timeout: float) -> None:
        ids = [m.pk for m in messages]
        deadline = time.monotonic() + timeout
        last = ""
        while time.monotonic() < deadline:
            statuses = list(
                Delivery.objects.filter(message_id__in=ids).values_list("status", flat=True)
            )
            summary = ", ".join(f"{s}={statuses.count(s)}" for s in sorted(set(statuses)))
            if summary != last:
                self.say(f"  deliveries: {summary or 'routing...'}")
                last = summary
            routed = Message.objects.filter(pk__in=ids, routed_at__isnull=False).count()
            # Held deliveries wait for their time (here, Ola's morning): done for the demo.
            if routed == len(ids) and all(s in TERMINAL or s == "held" for s in statuses):
                return
            time.sleep(0.2)
        raise CommandError(f"deliveries not finished after {timeout}s; is a worker running?")

    def print_history(self, user: User, message_ids: list[int]) -> None:
        profile = recipient_for(user)
        self.say("")
        self.say(
            self.style.MIGRATE_HEADING(
                f"Delivery history of {user.first_name} <{profile.email}> "
                f"{profile.phone or '(no phone)'} [{profile.time_zone}]"
            )
        )
        header = (
            f"{'time':8}  {'message':36} {'channel':7} {'status':10} {'tries':5} "
            f"{'provider':8} why / error"
        )
        self.say(header)
        self.say("-" * len(header))
        for message in user_history(user_id=user.pk).filter(pk__in=message_ids):
            for delivery in message.deliveries.all():
                why = Reason(delivery.reason).label if delivery.reason else ""
                if delivery.last_error:
                    why = f"{why}: {delivery.last_error}" if why else delivery.last_error
                if delivery.status == "held" and delivery.next_attempt_at:
                    local = delivery.next_attempt_at.astimezone(ZoneInfo(profile.time_zone))
                    why += f" (at {local:%H:%M} {profile.time_zone})"
                self.say(
                    f"{message.created_at:%H:%M:%S}  {f'#{message.pk} {message.type_id}':36} "
                    f"{delivery.channel:7} {self.colour(delivery.status):10} "
                    f"{delivery.attempts:<5} {delivery.provider:8} {why}"
                )
                for event in delivery.events.all():
                    if event.kind == "attempt":
                        note = f"attempt {event.attempt}: {event.detail.get('outcome')}"
                        if event.error:
                            note += (
                                f" ({event.error}); retry in {event.detail.get('retry_in_s')}s"
                                if event.status == "queued"
                                else f" ({event.error})"
                            )
                        self.say(f"{'':36}  └ {event.at:%H:%M:%S.%f}"[:-3] + f" {note}")

    def print_inbox(self, user: User) -> None:
        items, _ = inbox_page(user_id=user.pk, limit=5)
        self.say("")
        self.say(
            self.style.MIGRATE_HEADING(
                f"{user.first_name}'s in-app inbox ({recipient_for(user).locale}): "
                f"{inbox_unread_count(user_id=user.pk)} unread"
            )
        )
        for item in items:
            self.say(f"  {'●' if item.read_at is None else ' '} {item.title} — {item.body}")

    def print_pages(self, user: User) -> None:
        """How to see the people-facing pages of this demo in a browser."""
        self.say("")
        self.say(self.style.MIGRATE_HEADING("In a browser"))
        if settings.DATABASES["default"]["ENGINE"].endswith("sqlite3"):
            # Only on the demo's own database: a known password has no place anywhere else.
            user.set_password(DEMO_PASSWORD)
            user.save(update_fields=["password"])
            login = f"log in as {user.username} / {DEMO_PASSWORD}"
        else:
            login = f"log in as {user.username} (set a password: manage.py changepassword)"
        site = settings.NOTIFIER_SITE_URL.rstrip("/")
        self.say(f"  .venv/bin/python manage.py runserver, then open {site}/inbox/ and {login}")
        self.say(f"  {user.first_name}'s preference centre (a signed link, no login):")
        self.say(f"  {preferences_url(user_id=user.pk)}")

    def colour(self, status: str) -> str:
        if status in ("sent", "delivered", "read", "opened", "clicked"):
            return self.style.SUCCESS(f"{status:10}")
        if status == "failed":
            return self.style.ERROR(f"{status:10}")
        return self.style.WARNING(f"{status:10}")
