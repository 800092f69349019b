"""Copy each stand-alone user's contact points, preferences and segment attributes from
notifier_user into their notifier.Recipient profile (batched by id; SQLite and PostgreSQL).
Reversible: going back copies the profiles onto the users again (0025's reverse has put the
columns back by then).

A host project whose own AUTH_USER_MODEL swaps notifier.User out has no notifier_user table:
there is nothing to copy, and this does nothing."""

from django.db import migrations

BATCH = 1000
PROFILE_FIELDS = (
    "phone",
    "time_zone",
    "locale",
    "quiet_hours_enabled",
    "quiet_hours_start",
    "quiet_hours_end",
    "marketing_frequency",
    "yearly_spend",
    "last_active_at",
    "interest_tags",
    "points_balance",
    "points_expire_at",
    "usual_active_hour",
)


def _batches(queryset):
    """Rows of `queryset` (values) in primary-key order, BATCH at a time (keyset pagination)."""
    last = 0
    while True:
        rows = list(queryset.filter(pk__gt=last).order_by("pk")[:BATCH])
        if not rows:
            return
        yield rows
        last = rows[-1]["pk"]


def users_to_recipients(apps, schema_editor):
    User = apps.get_model("notifier", "User")
    if User._meta.swapped:
        return
    Recipient = apps.get_model("notifier", "Recipient")
    db = schema_editor.connection.alias
    users = User.objects.using(db).values("pk", "email", *PROFILE_FIELDS)
    for rows in _batches(users):
        ids = [row["pk"] for row in rows]
        existing = set(
            Recipient.objects.using(db).filter(user_id__in=ids).values_list("user_id", flat=True)
        )
        Recipient.objects.using(db).bulk_create(
            [
                Recipient(
                    user_id=row["pk"],
                    email=row["email"] or "",
                    **{name: row[name] for name in PROFILE_FIELDS},
                )
                for row in rows
                if row["pk"] not in existing
            ],
            batch_size=BATCH,
        )
        if existing:  # made on first use before the copy ran: the user's own values win
            profiles = list(Recipient.objects.using(db).filter(user_id__in=existing))
            by_user = {row["pk"]: row for row in rows}
            for profile in profiles:
                row = by_user[profile.user_id]
                profile.email = row["email"] or ""
                for name in PROFILE_FIELDS:
                    setattr(profile, name, row[name])
            Recipient.objects.using(db).bulk_update(
                profiles, ["email", *PROFILE_FIELDS], batch_size=BATCH
            )


def recipients_to_users(apps, schema_editor):
    User = apps.get_model("notifier", "User")
    if User._meta.swapped:
        return
    Recipient = apps.get_model("notifier", "Recipient")
    db = schema_editor.connection.alias
    profiles = Recipient.objects.using(db).values("pk", "user_id", *PROFILE_FIELDS)
    for rows in _batches(profiles):
        users = []
        for row in rows:
            user = User(pk=row["user_id"])
            for name in PROFILE_FIELDS:
                setattr(user, name, row[name])
            users.append(user)
        User.objects.using(db).bulk_update(users, list(PROFILE_FIELDS), batch_size=BATCH)


class Migration(migrations.Migration):
    dependencies = [("notifier", "0023_recipient")]
    operations = [migrations.RunPython(users_to_recipients, recipients_to_users)]
