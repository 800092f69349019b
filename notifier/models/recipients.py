"""What Notifier knows about a person, whatever the site's user model: a recipient profile linked
one-to-one to `settings.AUTH_USER_MODEL`, created on first use (`recipient_for`,
`recipients_for`).

It holds the contact points (email address, phone number), the time zone, locale, quiet hours
and marketing frequency the pipeline reads, and the attributes segments filter on (spend, last
activity, interest tags, loyalty points, usual reading hour), each indexed for segment queries.
"""

from __future__ import annotations

from collections.abc import Iterable
from decimal import Decimal
from typing import Any

from django.conf import settings
from django.db import IntegrityError, models, transaction
from django.db.models import Q

from notifier.models.users import MarketingFrequency, validate_e164, validate_time_zone

# Rows per statement when profiles are created or read for many users at once.
RECIPIENT_BATCH = 1000


class Recipient(models.Model):
    user = models.OneToOneField(
        settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="notifier_recipient"
    )
    # The product's own id for this person (any text up to 255 characters), by which another
    # service or app addresses them over the HTTP API; NULL until something sets it.
    external_id = models.CharField(  # NULL, not "": unique among those that are set
        max_length=255, null=True, blank=True, unique=True
    )
    # The address email goes to; copied from the user model's EMAIL_FIELD when the profile is
    # created (and kept in step when that user is saved, see notifier.signals).
    email = models.EmailField(blank=True, default="")
    phone = models.CharField(
        max_length=20,
        blank=True,
        default="",
        validators=[validate_e164],
        help_text="E.164, e.g. +8613800138000",
    )
    time_zone = models.CharField(
        max_length=64,
        default="UTC",
        validators=[validate_time_zone],
        help_text="IANA name, e.g. Asia/Shanghai; quiet hours follow it",
    )
    locale = models.CharField(max_length=16, default="en", help_text="e.g. en, zh-hans")
    # Quiet hours in the person's own time zone; empty start/end means the site default
    # (NOTIFIER_QUIET_HOURS, 22:00-08:00). Transactional and critical messages bypass them.
    quiet_hours_enabled = models.BooleanField(default=True)
    quiet_hours_start = models.TimeField(null=True, blank=True)
    quiet_hours_end = models.TimeField(null=True, blank=True)
    marketing_frequency = models.CharField(
        max_length=10,
        choices=MarketingFrequency.choices,
        default=MarketingFrequency.AS_SENT,
        help_text="How often the person accepts marketing messages",
    )
    # Profile fields campaigns segment on.
    yearly_spend = models.DecimalField(max_digits=12, decimal_places=2, default=Decimal("0"))
    last_active_at = models.DateTimeField(null=True, blank=True)
    interest_tags = models.JSONField(default=list, blank=True)
    # Loyalty points and when the balance expires (kept in sync by the product): a campaign
    # can wake up people whose points are about to lapse.
    points_balance = models.PositiveIntegerField(default=0)
    points_expire_at = models.DateTimeField(null=True, blank=True)
    # The local hour the person usually reads messages, learned nightly from their reads and
    # opens (campaigns.services.stats); empty until there is history.
    usual_active_hour = models.PositiveSmallIntegerField(null=True, blank=True)
    created_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True)
    # Set when the person was erased (notifier.services.erasure): the profile stays, emptied,
    # so their user's rows still find it, and nothing is sent to them again.
    erased_at = models.DateTimeField(null=True, blank=True, editable=False)

    class Meta:
        permissions = [
            # Full email addresses and phone numbers in the admin; without it they are masked.
            ("view_contact_details", "Can see users' full email addresses and phone numbers"),
            ("erase_recipient", "Can erase a recipient's personal data (GDPR/PIPL)"),
            ("export_recipient", "Can export everything held about a recipient as JSON"),
        ]
        indexes = [
            models.Index(fields=["email"], name="recipient_email_idx"),
            models.Index(fields=["phone"], name="recipient_phone_idx"),
            # Segment rules on a million people: each condition can use an index. Interest
            # tags get a GIN index on PostgreSQL (migration 0023).
            models.Index(fields=["yearly_spend"], name="recipient_spend_idx"),
            models.Index(fields=["last_active_at"], name="recipient_last_active_idx"),
            models.Index(
                fields=["points_expire_at"],
                name="recipient_points_expire_idx",
                condition=Q(points_balance__gt=0),
            ),
            models.Index(fields=["locale"], name="recipient_locale_idx"),
            models.Index(fields=["time_zone"], name="recipient_time_zone_idx"),
        ]

    def __str__(self) -> str:
        return f"Recipient profile of user {self.user_id}"


def user_email(user: Any) -> str:
    """The address in the user model's EMAIL_FIELD, or "" when it has none."""
    get_name = getattr(type(user), "get_email_field_name", None)
    name = get_name() if callable(get_name) else "email"
    value = getattr(user, name, "") if name else ""
    return str(value or "")


def _new_profile(user_id: Any, email: str) -> Recipient:
    return Recipient(user_id=user_id, email=email)


def recipient_for(user: Any) -> Recipient:
    """The user's profile, created on first use. Safe when two workers create it at once: the
    create runs in a savepoint and the loser reads the winner's row."""
    cached = user._state.fields_cache.get("notifier_recipient")
    if isinstance(cached, Recipient):
        return cached
    if user.pk is None:  # an unsaved user (a preview's stand-in): the defaults, nothing stored
        return Recipient(email=user_email(user))
    try:
        profile = Recipient.objects.get(user_id=user.pk)
    except Recipient.DoesNotExist:
        try:
            with transaction.atomic():
                profile = Recipient.objects.create(user_id=user.pk, email=user_email(user))
        except IntegrityError:
            profile = Recipient.objects.get(user_id=user.pk)
    user.notifier_recipient = profile
    return profile


def recipients_for(user_ids: Iterable[Any]) -> dict[Any, Recipient]:
    """Profiles of many users at once, the missing ones created: per batch of ids, one SELECT of
    the users' addresses, one INSERT ... ON CONFLICT DO NOTHING and one SELECT of the profiles
    (never a query per user), so campaign fan-out stays batched."""
    from django.contrib.auth import get_user_model

    ids = sorted(set(user_ids))  # integers, or UUIDs for a host whose users have those
    found: dict[Any, Recipient] = {}
    model = get_user_model()
    email_field = model.get_email_field_name() if hasattr(model, "get_email_field_name") else ""
    has_email = bool(email_field) and any(
        f.name == email_field for f in model._meta.concrete_fields
    )
    for start in range(0, len(ids), RECIPIENT_BATCH):
        batch = ids[start : start + RECIPIENT_BATCH]
        profiles = {r.user_id: r for r in Recipient.objects.filter(user_id__in=batch)}
        missing = [pk for pk in batch if pk not in profiles]
        if missing:
            users = model._default_manager.filter(pk__in=missing)
            if has_email:
                rows = list(users.values_list("pk", email_field))
            else:
                rows = [(pk, "") for pk in users.values_list("pk", flat=True)]
            Recipient.objects.bulk_create(
                [_new_profile(pk, str(email or "")) for pk, email in rows],
                ignore_conflicts=True,
                batch_size=RECIPIENT_BATCH,
            )
            profiles.update({r.user_id: r for r in Recipient.objects.filter(user_id__in=missing)})
        found.update(profiles)
    return found


def recipient_ids_of(user_ids: Iterable[Any]) -> list[int]:
    """The profile ids of these users, missing profiles made (users deleted since have none).
    Reads ids only, so a profile with a value that cannot be read does not stop it."""
    ids = sorted(set(user_ids))
    found: dict[Any, int] = {}
    for start in range(0, len(ids), RECIPIENT_BATCH):
        batch = ids[start : start + RECIPIENT_BATCH]
        found.update(Recipient.objects.filter(user_id__in=batch).values_list("user_id", "pk"))
    missing = [pk for pk in ids if pk not in found]
    if missing:
        found.update({pk: profile.pk for pk, profile in recipients_for(missing).items()})
    return sorted(found.values())


def recipients_backfill() -> int:
    """Profiles for every user who has none yet (users from before Notifier was installed, or
    made with bulk_create), RECIPIENT_BATCH at a time; returns how many were made. One
    anti-join when there are none to make."""
    from django.contrib.auth import get_user_model

    missing = get_user_model()._default_manager.filter(notifier_recipient__isnull=True)
    made = 0
    while True:
        ids = list(missing.order_by("pk").values_list("pk", flat=True)[:RECIPIENT_BATCH])
        if not ids:
            return made
        recipients_for(ids)
        made += len(ids)


def recipients_attach(users: Iterable[Any]) -> None:
    """Give each of these users their profile (`user.notifier_recipient`, which `recipient_for`
    then reads without a query): those not already loaded with select_related in one batch."""
    missing = [
        user
        for user in users
        if not isinstance(user._state.fields_cache.get("notifier_recipient"), Recipient)
    ]
    if not missing:
        return
    profiles = recipients_for(user.pk for user in missing)
    for user in missing:
        user.notifier_recipient = profiles[user.pk]


def recipient_update(user: Any, **fields: Any) -> Recipient:
    """Set fields of the user's profile (created on first use) and save them."""
    profile = recipient_for(user)
    for name, value in fields.items():
        setattr(profile, name, value)
    profile.save()
    return profile


def recipient_follow_user(sender: Any, instance: Any, created: bool, **kwargs: Any) -> None:
    """post_save of the user model: a new user gets their profile at once (so segments see
    them with the defaults), and a changed address on the user reaches their profile (one
    UPDATE, matching nothing when the address did not change). Users made with bulk_create
    or before Notifier was installed get theirs on first use."""
    if kwargs.get("raw"):
        return  # loaddata: the fixture carries the profiles
    if created:
        try:
            with transaction.atomic():
                profile = Recipient.objects.create(user_id=instance.pk, email=user_email(instance))
        except IntegrityError:
            return  # made meanwhile by recipient_for
        instance.notifier_recipient = profile
        return
    get_name = getattr(sender, "get_email_field_name", None)
    name = get_name() if callable(get_name) else ""
    update_fields = kwargs.get("update_fields")
    if not name or (update_fields is not None and name not in update_fields):
        return
    if not any(f.name == name for f in sender._meta.concrete_fields):
        return
    email = user_email(instance)
    # An erased person's profile stays empty: the host's user row keeps its address, and
    # saving that user must not bring it back (notifier.services.erasure).
    Recipient.objects.filter(user_id=instance.pk, erased_at__isnull=True).exclude(
        email=email
    ).update(email=email)
    cached = instance._state.fields_cache.get("notifier_recipient")
    if isinstance(cached, Recipient) and cached.erased_at is None:
        cached.email = email
