"""Erasure and export of one person's data (GDPR articles 15 and 17, PIPL articles 45 and 47).

`recipient_erase` removes or empties, in one transaction, every row and field that holds the
person's data, as declared table by table in `PERSONAL_TABLES` (the campaigns app adds its own
tables when it loads, `personal_tables_register`). Rows that campaign statistics count
(messages, deliveries, delivery events, inbox items, unsubscribes, hold-outs, conversions) stay,
emptied of content, addresses, provider ids and free text; the person's own choices and contact
points (devices, preferences, consent, list memberships) go. Deliveries not sent yet are
cancelled through the state machine, and routing suppresses anything still to come
(`Reason.RECIPIENT_ERASED`). The recipient profile stays, emptied and marked `erased_at`, so the
user's remaining rows still find it and `notify()` refuses them (`RecipientErased`).

The user row: a host project owns its user model, so erasure never deletes or edits a host's
user (the host erases its own; a deleted user takes the remaining rows with it, by CASCADE).
The stand-alone site's `notifier.User` is Notifier's own: it is anonymised (username
"erased-<id>", names and email blank, an unusable password, inactive, no staff rights, no
groups), not deleted, so the statistics keep their rows.

Each erasure leaves an `ErasureRecord` (who, when, why, what per table) and puts the person's
identifiers (email, phone, external id) on the suppression list as keyed HMAC-SHA256 digests
(`ErasedIdentifier`): a CSV import or an API call that names one again is refused
(`suppressed`, `erasure_check`) until an admin lifts it (`suppression_lift`). Running an
erasure again is harmless: it tidies up whatever came in since and records that it did.

`recipient_export` returns everything held about the person as JSON-ready values.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from django.apps import apps as django_apps
from django.conf import settings
from django.contrib.auth import get_user_model
from django.contrib.auth.hashers import make_password
from django.contrib.contenttypes.models import ContentType
from django.core.exceptions import ValidationError
from django.core.serializers.json import DjangoJSONEncoder
from django.db import transaction
from django.db.models import F, Func, JSONField, Model, Q, QuerySet, TextField, Value
from django.db.models.expressions import BaseExpression
from django.db.models.functions import Cast
from django.utils import timezone
from django.utils.crypto import salted_hmac

from channels.models import SandboxSend
from notifier import dispatch
from notifier.errors import RecipientErased
from notifier.models import (
    Consent,
    Delivery,
    DeliveryEvent,
    Device,
    Digest,
    DigestCadence,
    ErasedIdentifier,
    ErasureRecord,
    EventKind,
    FrequencyCounter,
    IdentifierKind,
    InboxItem,
    Message,
    Preference,
    ProviderEvent,
    Recipient,
    RecipientDate,
    RefusedCall,
    Snooze,
    SupportAction,
    SuppressedAddress,
    ThrottleSlot,
    TopicSnooze,
    TopicSubscription,
    Unsubscribe,
    WebhookEvent,
    normalize_email,
)
from notifier.models.recipients import recipient_for, user_email
from notifier.models.users import normalize_phone
from notifier.services.transitions import deliveries_move
from notifier.status import DeliveryStatus, Reason
from notifier.user_keys import user_key_from_text, user_key_kind

S = DeliveryStatus
EXPORT_FORMAT = "notifier.recipient-export/1"
DIGEST_SALT = "notifier.erasure.identifier"
MAX_REASON = 2000
MAX_BY = 200
# Deliveries not sent yet: cancelled, so nothing more goes out to the person.
UNSENT = frozenset({S.PENDING, S.HELD, S.QUEUED})
ERASED = "erased"  # what an anonymised text reads


class ErasureError(ValueError):
    """An erasure or a lift that cannot be done as asked; nothing was written."""


# --- Who is erased ------------------------------------------------------------------------------


@dataclass(frozen=True)
class Person:
    """The person's keys and contact points, read before anything is erased: the tables are
    found by them."""

    user_id: Any
    recipient_id: int
    emails: tuple[str, ...]  # normalised (lower case), the profile's and the user model's
    phones: tuple[str, ...]  # E.164
    external_id: str | None

    @property
    def contact_points(self) -> tuple[str, ...]:
        return self.emails + self.phones

    def mentioned_in(self, field_name: str) -> Q:
        """Rows whose text or JSON field contains one of the person's contact points."""
        found = Q(pk__in=[])
        for value in self.contact_points:
            found |= Q(**{f"{field_name}__icontains": value})
        return found


def person_of(recipient: Recipient) -> Person:
    user = recipient.user
    emails = {normalize_email(e) for e in (recipient.email, user_email(user)) if e}
    phones = {recipient.phone} if recipient.phone else set()
    return Person(
        user_id=recipient.user_id,
        recipient_id=recipient.pk,
        emails=tuple(sorted(emails)),
        phones=tuple(sorted(phones)),
        external_id=recipient.external_id,
    )


# --- The registry: every table that holds a person's data, and what erasure does to it ---------

Blank = Callable[[Person], object] | object


@dataclass(frozen=True)
class PersonalTable:
    """One model's rows of a person and how erasure treats them.

    `delete`: the rows go. Otherwise `blank` names each field written over (with a value, or a
    function of the person) and `keep` each field kept, with why it names no one once the rest
    is gone. The completeness test (tests/notifier/services/test_erasure_registry.py) fails
    when a model with a field that may hold personal data is not declared here or in
    NOT_PERSONAL, or when a kept table leaves such a field undeclared.
    """

    model: str  # "app_label.ModelName"
    rows: Callable[[Person], QuerySet[Any]]
    delete: bool = False
    blank: Mapping[str, Blank] = field(default_factory=dict)
    keep: Mapping[str, str] = field(default_factory=dict)
    section: str | None = None  # its key in the export; None: not exported
    why: str = ""

    def model_class(self) -> type[Model]:
        return django_apps.get_model(self.model)


def _user_entry() -> PersonalTable:
    """The user row: the stand-alone site's own is anonymised; a host's is left to the host."""
    model = get_user_model()
    label = model._meta.label

    def rows(person: Person) -> QuerySet[Any]:
        return model._default_manager.filter(pk=person.user_id)

    if label != "notifier.User":
        return PersonalTable(
            label,
            rows,
            keep={"*": "the host project's own user model: the host erases its own users"},
            why="Owned by the host project; Notifier never edits or deletes a host's users",
        )
    return PersonalTable(
        label,
        rows,
        blank={
            "username": lambda p: f"erased-{p.user_id}",
            "email": "",
            "first_name": "",
            "last_name": "",
            "password": lambda p: make_password(None),  # unusable
            "is_active": False,
            "is_staff": False,
            "is_superuser": False,
            "last_login": None,
        },
        keep={"date_joined": "when the account was made: no one is named by it"},
        section=None,  # exported as "user" on its own
        why="Anonymised, not deleted: deleting would take the statistics' rows with it",
    )


def _deliveries(p: Person) -> QuerySet[Any]:
    return Delivery.objects.filter(user_id=p.user_id)


def _log_entries(p: Person) -> QuerySet[Any]:
    """Admin change-log entries about the person's user or profile (who changed them stays:
    the actor is staff, and the entries are the staff's audit trail)."""
    from django.contrib.admin.models import LogEntry  # only where the admin is installed

    user_type = ContentType.objects.get_for_model(get_user_model(), for_concrete_model=False)
    profile_type = ContentType.objects.get_for_model(Recipient)
    return LogEntry.objects.filter(
        Q(content_type=user_type, object_id=str(p.user_id))
        | Q(content_type=profile_type, object_id=str(p.recipient_id))
    )


# Keys of an outbound webhook event's data that name the person beyond our own user key.
WEBHOOK_DATA_KEYS = ["external_id", "idempotency_key"]


def _webhook_events(p: Person) -> QuerySet[Any]:
    """The outbox's events about the person that still carry their external id or a key."""
    return WebhookEvent.objects.filter(
        data__user=str(p.user_id), data__has_any_keys=WEBHOOK_DATA_KEYS
    )


def _without_webhook_keys(p: Person) -> Func:
    """`data` without WEBHOOK_DATA_KEYS (jsonb - text), in the UPDATE itself."""
    return Func(
        F("data"),
        *(Cast(Value(key), TextField()) for key in WEBHOOK_DATA_KEYS),
        template="%(expressions)s",
        arg_joiner=" - ",
        output_field=JSONField(),
    )


def _refused_calls(p: Person) -> QuerySet[Any]:
    """Refused task calls whose message quotes the person's external id or an address."""
    quoted = Q(pk__in=[])
    if p.external_id:
        quoted = Q(message__contains=repr(p.external_id[:80]))
    return RefusedCall.objects.filter(quoted | p.mentioned_in("message"))


CORE_TABLES: tuple[PersonalTable, ...] = (
    PersonalTable(
        "notifier.Device",
        lambda p: Device.objects.filter(user_id=p.user_id),
        delete=True,
        section="devices",
    ),
    PersonalTable(
        "notifier.Preference",
        lambda p: Preference.objects.filter(user_id=p.user_id),
        delete=True,
        section="preferences",
    ),
    PersonalTable(
        "notifier.Consent",
        lambda p: Consent.objects.filter(user_id=p.user_id),
        delete=True,
        section="consent",
        why="No consent is needed to send nothing; the wording and IP address go with it",
    ),
    PersonalTable(
        "notifier.SupportAction",
        lambda p: SupportAction.objects.filter(recipient_id=p.recipient_id),
        delete=True,
        section="support_actions",
        why="Support's notes and fixes quote the person's addresses and what they asked",
    ),
    PersonalTable(
        "notifier.FrequencyCounter",
        lambda p: FrequencyCounter.objects.filter(user_id=p.user_id),
        delete=True,
        section="frequency_counters",
    ),
    PersonalTable(
        "notifier.ThrottleSlot",
        lambda p: ThrottleSlot.objects.filter(user_id=p.user_id),
        delete=True,
        why="Counts for a type's throttle; its key is the caller's and may name what they did",
    ),
    PersonalTable(
        "notifier.Snooze",
        lambda p: Snooze.objects.filter(user_id=p.user_id),
        delete=True,
        section="snoozes",
    ),
    PersonalTable(
        "notifier.DigestCadence",
        lambda p: DigestCadence.objects.filter(user_id=p.user_id),
        delete=True,
        section="digest_cadences",
    ),
    PersonalTable(
        "notifier.Digest",
        lambda p: Digest.objects.filter(user_id=p.user_id),
        delete=True,
        why="What is being collected for them; the messages it sent are kept like any other",
    ),
    PersonalTable(
        "notifier.RecipientDate",
        lambda p: RecipientDate.objects.filter(user_id=p.user_id),
        delete=True,
        section="dates",
        why="Their own dates (a renewal, an appointment) and the context the reminders quote",
    ),
    PersonalTable(
        "notifier.TopicSubscription",
        lambda p: TopicSubscription.objects.filter(user_id=p.user_id),
        delete=True,
        section="topics",
    ),
    PersonalTable(
        "notifier.TopicSnooze",
        lambda p: TopicSnooze.objects.filter(user_id=p.user_id),
        delete=True,
        section="topic_snoozes",
    ),
    PersonalTable(
        "notifier.Message",
        lambda p: Message.objects.filter(user_id=p.user_id),
        blank={
            "context": {},
            "idempotency_key": None,
            "cancel_key": None,
            "throttle_key": None,
            "digest_key": None,
        },
        keep={
            "user": "the rows stay for campaign statistics; the user row is erased itself",
            "channels": "channel names",
            "fallback_chain": "channel names",
        },
        why="Kept without content: campaign funnels count them",
    ),
    PersonalTable(
        "notifier.Delivery",
        _deliveries,
        blank={"content": {}, "provider_message_id": "", "last_error": ""},
        keep={"user": "counts for campaign statistics", "provider": "the provider's name"},
        why="Kept with status, channel and times: campaign statistics count them",
    ),
    PersonalTable(
        "notifier.DeliveryEvent",
        lambda p: DeliveryEvent.objects.filter(delivery__user_id=p.user_id),
        blank={"error": "", "detail": {}},
        why="The timeline's steps stay (statuses, reasons, times); errors and details may "
        "quote an address",
    ),
    PersonalTable(
        "notifier.InboxItem",
        lambda p: InboxItem.objects.filter(user_id=p.user_id),
        blank={"title": "", "body": "", "link": "", "group_key": None},
        keep={
            "user": "reads and feedback count in campaign statistics",
            "category": "a notification kind",
            "type_key": "a notification type key",
        },
        section="inbox",
    ),
    PersonalTable(
        "notifier.Unsubscribe",
        lambda p: Unsubscribe.objects.filter(user_id=p.user_id),
        keep={
            "user": "unsubscribes count in campaign funnels",
            "category": "a notification kind or type key",
            "source": "where: unsubscribe_link, preference_centre, ...",
        },
        section="unsubscribes",
    ),
    PersonalTable(
        "notifier.ProviderEvent",
        lambda p: ProviderEvent.objects.filter(
            Q(delivery__user_id=p.user_id) | p.mentioned_in("detail") | p.mentioned_in("action")
        ),
        blank={"detail": {}, "action": {}, "provider_message_id": ""},
        keep={"event_id": "the provider's id of its event: replays stay refused"},
        section="provider_events",
    ),
    PersonalTable(
        "notifier.WebhookEvent",
        _webhook_events,
        blank={"data": _without_webhook_keys},
        keep={"last_error": "the endpoint's error, not the person's"},
        why="Events keep ids, statuses and reasons (our user key, like the deliveries); the "
        "product's external id and the idempotency key go",
    ),
    PersonalTable(
        "notifier.RefusedCall",
        _refused_calls,
        blank={"message": ERASED},
        keep={
            "source": "which door was called",
            "caller": "the task id",
            "error_type": "the error's name",
            "type_key": "a notification type key",
        },
    ),
    PersonalTable(
        "notifier.SuppressedAddress",
        lambda p: SuppressedAddress.objects.filter(
            Q(address__in=p.contact_points) | Q(delivery__user_id=p.user_id)
        ),
        delete=True,
        section="suppressed_addresses",
        why="The address itself; the erasure's own suppression list keeps only its digest",
    ),
    PersonalTable(
        SandboxSend._meta.label,  # "notifier_channels.SandboxSend"
        lambda p: SandboxSend.objects.filter(
            Q(delivery_id__in=_deliveries(p).values("pk")) | Q(recipient__in=p.contact_points)
        ),
        delete=True,
        why="The sandbox's copy of each send: recipient and payload",
    ),
)


def _recipient_entry() -> PersonalTable:
    return PersonalTable(
        "notifier.Recipient",
        lambda p: Recipient.objects.filter(pk=p.recipient_id),
        blank={
            "external_id": None,
            "email": "",
            "phone": "",
            "time_zone": "UTC",
            "locale": settings.NOTIFIER_DEFAULT_LOCALE,
            "quiet_hours_enabled": True,
            "quiet_hours_start": None,
            "quiet_hours_end": None,
            "marketing_frequency": "off",
            "yearly_spend": 0,
            "last_active_at": None,
            "interest_tags": [],
            "points_balance": 0,
            "points_expire_at": None,
            "usual_active_hour": None,
        },
        keep={"user": "the profile stays, empty, so the user's kept rows still find it"},
        why="Emptied and marked erased: routing and notify() refuse the person from then on",
    )


# Models that hold nothing personal, or nothing erasure could tell apart, and why.
NOT_PERSONAL: dict[str, str] = {
    "auth.Permission": "permission names",
    "auth.Group": "role names",
    "contenttypes.ContentType": "model names",
    "sessions.Session": "the user's id only; an erased stand-alone user is inactive and cannot "
    "log in again, and sessions expire",
    "django_celery_beat.PeriodicTask": "schedules and task arguments (ids, never a person)",
    "django_celery_beat.PeriodicTasks": "a change counter",
    "django_celery_beat.ClockedSchedule": "a time",
    "django_celery_beat.CrontabSchedule": "a schedule",
    "django_celery_beat.IntervalSchedule": "a schedule",
    "django_celery_beat.SolarSchedule": "a schedule",
    "notifier.NotificationType": "type definitions",
    "notifier.DateSeries": "series definitions: steps around a date, no one's date",
    "notifier.RoutingRule": "routing rules",
    "notifier.PrepareRun": "message ids of a run in progress",
    "notifier.ApiKey": "keys of services; created_by is the staff member who made one",
    "notifier.WebhookEndpoint": "the product's own endpoints, entered by staff",
    "notifier.WebhookAttempt": "requests to an endpoint and its answers (truncated), pruned "
    "after NOTIFIER_WEBHOOK_KEEP_DAYS; the events they carried are erased on their own rows",
    "notifier.ErasureRecord": "the audit record: a profile id, counts, who erased and why",
    "notifier.ErasedIdentifier": "keyed digests of erased identifiers, unreadable by design",
    "notifier_channels.SandboxOutage": "a channel and a time",
    "notifier.Topic": "the product's keys for its own objects (a product, a post)",
    "notifier.TopicSend": "one notification to a topic: the same context for every follower, "
    "and the user keys it left out",
}

_extra_tables: list[PersonalTable] = []


def personal_tables_register(
    tables: Iterable[PersonalTable], not_personal: Mapping[str, str] = {}
) -> None:
    """Add an app's own tables (the campaigns app calls this when it loads: the core never
    imports it). Registering the same model again replaces its entry."""
    for table in tables:
        _extra_tables[:] = [t for t in _extra_tables if t.model != table.model]
        _extra_tables.append(table)
    NOT_PERSONAL.update(not_personal)


def _user_links() -> tuple[PersonalTable, ...]:
    """The stand-alone user's groups and permissions: an erased account holds no rights."""
    model = get_user_model()
    if model._meta.label != "notifier.User":
        return ()
    return tuple(
        PersonalTable(through._meta.label, _rows_of_user(through), delete=True)
        for through in (model.groups.through, model.user_permissions.through)
    )


def _rows_of_user(model: type[Model]) -> Callable[[Person], QuerySet[Any]]:
    def rows(person: Person) -> QuerySet[Any]:
        return model._default_manager.filter(user_id=person.user_id)

    return rows


def _admin_log() -> tuple[PersonalTable, ...]:
    """Django's admin change log, where the host installs the admin."""
    if not django_apps.is_installed("django.contrib.admin"):
        return ()
    return (
        PersonalTable(
            "admin.LogEntry",
            _log_entries,
            blank={"object_repr": ERASED},
            keep={
                "user": "the staff member who made the change",
                "object_id": "the id of the user or profile changed, which stay (emptied)",
                "change_message": "names the fields changed, never their values",
            },
            why="The admin's change log keeps who changed what, not whose",
        ),
    )


def personal_tables() -> tuple[PersonalTable, ...]:
    """Every declared table, in the order erasure treats them: the profile and the user row
    last (the others are found by what those still hold)."""
    return (
        *CORE_TABLES,
        *_admin_log(),
        *_extra_tables,
        _recipient_entry(),
        *_user_links(),
        _user_entry(),
    )


# --- Suppression: hashed identifiers ------------------------------------------------------------


def _keys() -> list[str]:
    if settings.NOTIFIER_ERASURE_KEY:
        return [settings.NOTIFIER_ERASURE_KEY]
    # Digests made under a key since rotated out still match while it is a fallback.
    return [settings.SECRET_KEY, *getattr(settings, "SECRET_KEY_FALLBACKS", [])]


def normalise_identifier(kind: IdentifierKind, value: str) -> str:
    if kind == IdentifierKind.EMAIL:
        return normalize_email(value)
    if kind == IdentifierKind.PHONE:
        try:
            return normalize_phone(value.strip())
        except ValidationError:
            return value.strip()
    return value


def identifier_digests(kind: IdentifierKind, value: str) -> list[str]:
    """The digests `value` has under each key in use, the current key's first."""
    text = f"{kind}:{normalise_identifier(kind, value)}"
    return [
        salted_hmac(DIGEST_SALT, text, secret=key, algorithm="sha256").hexdigest()
        for key in _keys()
    ]


def _named(
    email: str | None, phone: str | None, external_id: str | None
) -> list[tuple[IdentifierKind, str]]:
    named = [
        (IdentifierKind.EMAIL, email),
        (IdentifierKind.PHONE, phone),
        (IdentifierKind.EXTERNAL_ID, external_id),
    ]
    return [(kind, value) for kind, value in named if value]


def suppressed_kinds(
    *, email: str | None = None, phone: str | None = None, external_id: str | None = None
) -> list[IdentifierKind]:
    """Which of these identifiers belong to an erased person (a suppression in force)."""
    wanted = {
        (kind, digest): kind
        for kind, value in _named(email, phone, external_id)
        for digest in identifier_digests(kind, value)
    }
    if not wanted:
        return []
    query = Q(pk__in=[])
    for kind, digest in wanted:
        query |= Q(kind=kind, digest=digest)
    found = ErasedIdentifier.objects.filter(query, lifted_at__isnull=True).values_list(
        "kind", "digest"
    )
    return sorted({wanted[(IdentifierKind(kind), digest)] for kind, digest in found})


def suppressed(
    *, email: str | None = None, phone: str | None = None, external_id: str | None = None
) -> bool:
    """Whether any of these identifiers belongs to an erased person: a re-import or an API
    create must not bring them back."""
    return bool(suppressed_kinds(email=email, phone=phone, external_id=external_id))


def erasure_check(
    *, email: str | None = None, phone: str | None = None, external_id: str | None = None
) -> None:
    """Raise RecipientErased when any of these identifiers belongs to an erased person."""
    kinds = suppressed_kinds(email=email, phone=phone, external_id=external_id)
    if kinds:
        names = " and ".join(str(IdentifierKind(kind).label).lower() for kind in kinds)
        raise RecipientErased(
            f"the {names} belong{'s' if len(kinds) == 1 else ''} to a person whose data was "
            "erased at their request; an admin can lift the suppression if they came back"
        )


def suppressed_digests(kind: IdentifierKind, values: Iterable[str]) -> set[str]:
    """Of many values of one kind (an import file's), those on the suppression list: one
    query per thousand."""
    by_digest: dict[str, str] = {}
    for value in values:
        for digest in identifier_digests(kind, value):
            by_digest[digest] = value
    found: set[str] = set()
    digests = sorted(by_digest)
    for start in range(0, len(digests), 1000):
        chunk = digests[start : start + 1000]
        found |= {
            by_digest[d]
            for d in ErasedIdentifier.objects.filter(
                kind=kind, digest__in=chunk, lifted_at__isnull=True
            ).values_list("digest", flat=True)
        }
    return found


@transaction.atomic
def suppression_lift(*, identifier: ErasedIdentifier, by: str, reason: str) -> bool:
    """Lift a suppression (the person came back and asked to be known again). The row stays,
    lifted, with who and why. False when it was lifted already."""
    by, reason = _checked_text(by, "by", MAX_BY), _checked_text(reason, "reason", MAX_REASON)
    return bool(
        ErasedIdentifier.objects.filter(pk=identifier.pk, lifted_at__isnull=True).update(
            lifted_at=timezone.now(), lifted_by=by, lift_reason=reason
        )
    )


# --- Erasure ------------------------------------------------------------------------------------


@dataclass(frozen=True)
class ErasureReport:
    record_id: int | None  # None for a dry run
    recipient_id: int
    counts: dict[str, dict[str, int]]  # model label -> {"deleted"/"anonymised"/"cancelled": n}
    identifiers: int  # put on the suppression list by this run
    repeat: bool  # the recipient had been erased before

    @property
    def rows(self) -> int:
        return sum(n for by_kind in self.counts.values() for n in by_kind.values())


def _checked_text(value: object, name: str, limit: int) -> str:
    if not isinstance(value, str) or not value.strip():
        raise ErasureError(f"say {name}: it is kept in the erasure's record")
    if len(value) > limit:
        raise ErasureError(f"{name} is {len(value)} characters; keep it to {limit}")
    return value.strip()


def _values(blank: Mapping[str, Blank], person: Person) -> dict[str, object]:
    return {name: value(person) if callable(value) else value for name, value in blank.items()}


def _changed(
    rows: QuerySet[Any], values: Mapping[str, object], volatile: set[str]
) -> QuerySet[Any]:
    """The rows some of whose fields still differ from `values` (a second run counts none):
    fields whose written value is never the same twice (a fresh password hash) left out."""
    stable = {
        k: v
        for k, v in values.items()
        if k not in volatile and not isinstance(v, BaseExpression)  # its rows say when
    }
    return rows.exclude(**stable) if stable else rows


class _DryRun(Exception):
    def __init__(self, report: ErasureReport) -> None:
        self.report = report


def recipient_erase(
    recipient: Recipient, *, by: str, reason: str, dry_run: bool = False, follow_up: bool = False
) -> ErasureReport:
    """Erase one person's data everywhere it is held (see the module's docstring), in one
    transaction. `by` names who asked (a staff member, an API key, a command), `reason` why
    (a ticket number rather than the person's words: it is kept). Safe to run again.

    `dry_run`: do it all, report the counts, and roll it back (the report has no record)."""
    by, reason = _checked_text(by, "by", MAX_BY), _checked_text(reason, "reason", MAX_REASON)
    try:
        return _erase(recipient, by=by, reason=reason, dry_run=dry_run, follow_up=follow_up)
    except _DryRun as rolled_back:
        return rolled_back.report


def _erase(
    recipient: Recipient, *, by: str, reason: str, dry_run: bool, follow_up: bool
) -> ErasureReport:
    with transaction.atomic():
        # The user's row first, as preference and consent writes lock it: one that waited
        # for this erasure then finds the person erased and writes nothing.
        list(
            get_user_model()
            ._default_manager.select_for_update()
            .filter(pk=recipient.user_id)
            .values_list("pk", flat=True)
        )
        locked = (
            Recipient.objects.select_for_update(of=("self",))
            .select_related("user")
            .get(pk=recipient.pk)
        )
        now = timezone.now()
        repeat = locked.erased_at is not None
        person = person_of(locked)
        counts: dict[str, dict[str, int]] = {}
        cancelled = deliveries_move(
            list(
                Delivery.objects.filter(user_id=person.user_id, status__in=UNSENT).values_list(
                    "pk", flat=True
                )
            ),
            sources=UNSENT,
            to=S.CANCELLED,
            kind=EventKind.CANCELLED,
            at=now,
            reason=Reason.RECIPIENT_ERASED,
        )
        if cancelled:
            counts["notifier.Delivery"] = {"cancelled": len(cancelled)}
        for table in personal_tables():
            if table.delete:
                deleted, per_model = table.rows(person).delete()
                if deleted:
                    for label, n in per_model.items():
                        if n:
                            counts.setdefault(label, {})["deleted"] = n
            elif table.blank:
                values = _values(table.blank, person)
                if table.model == "notifier.Recipient":
                    values["erased_at"] = locked.erased_at or now
                changed = _changed(table.rows(person), values, {"password"}).update(**values)
                if changed:
                    counts.setdefault(table.model, {})["anonymised"] = changed
        record = ErasureRecord.objects.create(
            recipient=locked,
            user_key=str(person.user_id),
            at=now,
            by=by,
            reason=reason,
            counts=counts,
            repeat=repeat,
        )
        identifiers = _suppress(person, record, now)
        if identifiers != record.identifiers:
            record.identifiers = identifiers
            record.save(update_fields=["identifiers"])
        report = ErasureReport(
            record_id=None if dry_run else record.pk,
            recipient_id=locked.pk,
            counts=counts,
            identifiers=identifiers,
            repeat=repeat,
        )
        if dry_run:
            raise _DryRun(report)  # leaves the transaction: everything is rolled back
        if (
            not follow_up
            and Delivery.objects.filter(user_id=person.user_id, status=S.SENDING).exists()
        ):
            # A send under way cannot be taken back: once its claim's lease is over it has
            # written what it wrote (a provider id, a sandbox row, an error), and this erasure
            # runs once more to clear it.
            record_pk = record.pk
            transaction.on_commit(
                lambda: dispatch.publish(
                    ERASE_AGAIN_TASK,
                    kwargs={"recipient_id": recipient.pk, "record_id": record_pk},
                    countdown=2 * float(settings.NOTIFIER_CLAIM_LEASE_S) + 30,
                )
            )
    return report


ERASE_AGAIN_TASK = "notifier.erase_again"


def recipient_erase_again(*, recipient_id: int, record_id: int) -> ErasureReport | None:
    """The follow-up of an erasure that found sends under way (see `_erase`): the same
    erasure once more, recorded as a repeat of the first; nothing when the person is gone."""
    recipient = Recipient.objects.filter(pk=recipient_id, erased_at__isnull=False).first()
    first = ErasureRecord.objects.filter(pk=record_id).first()
    if recipient is None or first is None:
        return None
    return recipient_erase(
        recipient,
        by=f"{first.by} (follow-up)"[:MAX_BY],
        reason=f"follow-up of erasure #{first.pk}: sends that were under way",
        follow_up=True,
    )


def recipient_find(
    *, external_id: str | None = None, user: str | None = None, email: str | None = None
) -> Recipient:
    """The one recipient named by exactly one of: the product's external id, the user's key
    (as text), an email address (any case). ErasureError when none or several match."""
    named = [
        (k, v) for k, v in (("external_id", external_id), ("user", user), ("email", email)) if v
    ]
    if len(named) != 1:
        raise ErasureError("name the recipient by one of external id, user or email")
    kind, value = named[0]
    profiles = Recipient.objects.select_related("user")
    if kind == "external_id":
        found = list(profiles.filter(external_id=value)[:2])
    elif kind == "user":
        key = user_key_from_text(value)
        if key is None:
            raise ErasureError(f"{value!r} is not a user key ({user_key_kind()})")
        found = list(profiles.filter(user_id=key)[:2])
        if not found and get_user_model()._default_manager.filter(pk=key).exists():
            found = [recipient_for(get_user_model()._default_manager.get(pk=key))]
    else:
        found = list(profiles.filter(email__iexact=normalize_email(value))[:2])
    if not found:
        raise ErasureError(f"no recipient with {kind.replace('_', ' ')} {value!r}")
    if len(found) > 1:
        raise ErasureError(
            f"several recipients have {kind.replace('_', ' ')} {value!r}; name one by user"
        )
    return found[0]


def _suppress(person: Person, record: ErasureRecord, now: datetime) -> int:
    identifiers = [
        *((IdentifierKind.EMAIL, e) for e in person.emails),
        *((IdentifierKind.PHONE, p) for p in person.phones),
        *([(IdentifierKind.EXTERNAL_ID, person.external_id)] if person.external_id else []),
    ]
    rows = [
        ErasedIdentifier(
            kind=kind, digest=identifier_digests(kind, value)[0], erasure=record, at=now
        )
        for kind, value in identifiers
    ]
    # A suppression already in force stays as it is (the partial unique index).
    made = ErasedIdentifier.objects.bulk_create(rows, ignore_conflicts=True)
    if not made:
        return 0
    return ErasedIdentifier.objects.filter(erasure=record).count()


# --- Export -------------------------------------------------------------------------------------


def _plain(rows: Iterable[Mapping[str, Any]]) -> list[dict[str, Any]]:
    """Rows as JSON values: dates as ISO 8601, decimals and UUIDs as text."""
    return list(json.loads(json.dumps(list(rows), cls=DjangoJSONEncoder)))


def _fields(model: type[Model], *, leave_out: Iterable[str] = ()) -> list[str]:
    skip = set(leave_out)
    return [f.attname for f in model._meta.concrete_fields if f.name not in skip]


def recipient_export(recipient: Recipient) -> dict[str, Any]:
    """Everything held about the person, as JSON-ready values: the profile, the user row (its
    password hash left out), every message with its deliveries, their events and rendered
    content, and each declared table's rows (devices, preferences, consent, inbox,
    unsubscribes, segment memberships, conversions, ...)."""
    person = person_of(recipient)
    user_model = get_user_model()
    user = _plain(
        user_model._default_manager.filter(pk=person.user_id).values(
            *_fields(user_model, leave_out=["password"])
        )
    )
    profile = _plain(Recipient.objects.filter(pk=recipient.pk).values(*_fields(Recipient)))[0]
    sections: dict[str, Any] = {}
    for table in personal_tables():
        if table.section is None:
            continue
        model = table.model_class()
        sections[table.section] = _plain(
            table.rows(person).order_by("pk").values(*_fields(model, leave_out=["user"]))
        )
    return {
        "format": EXPORT_FORMAT,
        "exported_at": timezone.now().isoformat(),
        "recipient": profile,
        "user": user[0] if user else None,
        "messages": _messages_export(person),
        **sections,
        "erasures": _plain(
            ErasureRecord.objects.filter(recipient_id=recipient.pk)
            .order_by("at")
            .values("at", "by", "reason", "counts", "identifiers", "repeat")
        ),
    }


def _messages_export(person: Person) -> list[dict[str, Any]]:
    """Messages, each with its deliveries and each delivery with its events: three queries."""
    messages = _plain(
        Message.objects.filter(user_id=person.user_id)
        .order_by("created_at", "pk")
        .values(*_fields(Message, leave_out=["user", "prepare_crashes"]))
    )
    deliveries = _plain(
        Delivery.objects.filter(user_id=person.user_id)
        .order_by("pk")
        .values(
            *_fields(Delivery, leave_out=["user", "claim_token", "claimed_at", "claimed_until"])
        )
    )
    events = _plain(
        DeliveryEvent.objects.filter(delivery__user_id=person.user_id)
        .order_by("at", "pk")
        .values(*_fields(DeliveryEvent))
    )
    by_delivery: dict[int, list[dict[str, Any]]] = {}
    for event in events:
        by_delivery.setdefault(event.pop("delivery_id"), []).append(event)
    by_message: dict[int, list[dict[str, Any]]] = {}
    for delivery in deliveries:
        delivery["events"] = by_delivery.get(delivery["id"], [])
        by_message.setdefault(delivery.pop("message_id"), []).append(delivery)
    for message in messages:
        message["deliveries"] = by_message.get(message["id"], [])
    return messages
