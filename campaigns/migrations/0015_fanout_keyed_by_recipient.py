"""The campaign walk goes through recipient profiles (notifier.Recipient) by their integer
ids instead of through users by theirs, so a project whose users are keyed by UUID or text
can run campaigns: the step's cursor and the fan-out's batch records now hold recipient ids.

Walks under way in a deployment upgraded in place carry on: each cursor becomes the recipient
id just before the first recipient whose user was not yet walked (a recipient walked already
may be handed out again; its message's key, per step and user, writes nothing twice), and the
batch records are translated user by user, each known by its lowest profile id. A batch record
whose users were all deleted since keeps a negative id, unique and never matched again. A
project whose user keys are not integers has nothing to translate: it never had a walk under
the old keys.
"""

from django.db import migrations, models
from django.db.models import Max, Min

BATCH = 1000


def _integer_user_keys(apps):
    Recipient = apps.get_model("notifier", "Recipient")
    key = Recipient._meta.get_field("user").target_field
    return isinstance(key, (models.IntegerField, models.AutoField))


def users_to_recipients(apps, schema_editor):
    if not _integer_user_keys(apps):
        return
    db = schema_editor.connection.alias
    Recipient = apps.get_model("notifier", "Recipient").objects.using(db)
    CampaignStep = apps.get_model("campaigns", "CampaignStep").objects.using(db)
    FanoutBatch = apps.get_model("campaigns", "FanoutBatch").objects.using(db)
    FanoutAttempt = apps.get_model("campaigns", "FanoutAttempt").objects.using(db)

    for step in CampaignStep.exclude(cursor_recipient_id=0).only("pk", "cursor_recipient_id"):
        user_cursor = step.cursor_recipient_id
        first_not_walked = Recipient.filter(user_id__gt=user_cursor).aggregate(n=Min("pk"))["n"]
        if first_not_walked is not None:
            cursor = first_not_walked - 1
        else:
            cursor = Recipient.aggregate(n=Max("pk"))["n"] or 0
        CampaignStep.filter(pk=step.pk).update(cursor_recipient_id=cursor)

    def translate(user_ids):
        found = dict(Recipient.filter(user_id__in=set(user_ids)).values_list("user_id", "pk"))
        return found

    last = 0
    while True:
        batches = list(FanoutBatch.filter(pk__gt=last).order_by("pk")[:BATCH])
        if not batches:
            break
        last = batches[-1].pk
        users = {batch.first_recipient_id for batch in batches}
        for batch in batches:
            users.update(pk for pk in batch.recipient_ids if isinstance(pk, int))
        recipient_of = translate(users)
        for batch in batches:
            first = batch.first_recipient_id
            batch.recipient_ids = sorted(
                recipient_of[pk] for pk in batch.recipient_ids if pk in recipient_of
            )
            # Known by its lowest profile id, as a batch of profiles is (batches are disjoint,
            # so no two of a round share it).
            batch.first_recipient_id = batch.recipient_ids[0] if batch.recipient_ids else -first
        FanoutBatch.bulk_update(batches, ["first_recipient_id", "recipient_ids"])

    attempts = list(FanoutAttempt.all())
    recipient_of = translate({attempt.first_recipient_id for attempt in attempts})
    for attempt in attempts:
        if attempt.first_recipient_id in recipient_of:
            attempt.first_recipient_id = recipient_of[attempt.first_recipient_id]
            attempt.save(update_fields=["first_recipient_id"])
        else:  # its user is gone: the batch is re-run whole, which is what it counts
            attempt.delete()


def recipients_to_users(apps, schema_editor):
    """Back to user ids: cursors restart at the user of the recipient they stood at."""
    if not _integer_user_keys(apps):
        return
    db = schema_editor.connection.alias
    Recipient = apps.get_model("notifier", "Recipient").objects.using(db)
    CampaignStep = apps.get_model("campaigns", "CampaignStep").objects.using(db)
    FanoutBatch = apps.get_model("campaigns", "FanoutBatch").objects.using(db)
    for step in CampaignStep.exclude(cursor_recipient_id=0).only("pk", "cursor_recipient_id"):
        walked = Recipient.filter(pk__lte=step.cursor_recipient_id)
        user = walked.aggregate(n=Max("user_id"))["n"] or 0
        CampaignStep.filter(pk=step.pk).update(cursor_recipient_id=user)
    for batch in FanoutBatch.all():
        user_of = dict(
            Recipient.filter(pk__in={batch.first_recipient_id, *batch.recipient_ids}).values_list(
                "pk", "user_id"
            )
        )
        first = batch.first_recipient_id
        batch.first_recipient_id = user_of.get(first, -abs(first))
        batch.recipient_ids = sorted(user_of[pk] for pk in batch.recipient_ids if pk in user_of)
        batch.save(update_fields=["first_recipient_id", "recipient_ids"])
    apps.get_model("campaigns", "FanoutAttempt").objects.using(db).all().delete()


class Migration(migrations.Migration):

    dependencies = [
        ('campaigns', '0014_trigger_entries_series_stop'),
        ('notifier', '0025_user_profile_fields_moved'),
    ]

    operations = [
        migrations.RemoveConstraint(
            model_name='fanoutattempt',
            name='fanout_attempt_batch',
        ),
        migrations.RemoveConstraint(
            model_name='fanoutbatch',
            name='fanout_batch_once',
        ),
        migrations.RenameField(
            model_name='campaignstep',
            old_name='cursor_user_id',
            new_name='cursor_recipient_id',
        ),
        migrations.RenameField(
            model_name='fanoutattempt',
            old_name='first_user_id',
            new_name='first_recipient_id',
        ),
        migrations.RenameField(
            model_name='fanoutbatch',
            old_name='first_user_id',
            new_name='first_recipient_id',
        ),
        migrations.RenameField(
            model_name='fanoutbatch',
            old_name='user_ids',
            new_name='recipient_ids',
        ),
        migrations.RunPython(users_to_recipients, recipients_to_users, elidable=False),
        migrations.AddConstraint(
            model_name='fanoutattempt',
            constraint=models.UniqueConstraint(fields=('step', 'first_recipient_id', 'users'), name='fanout_attempt_batch'),
        ),
        migrations.AddConstraint(
            model_name='fanoutbatch',
            constraint=models.UniqueConstraint(fields=('step', 'walk_round', 'first_recipient_id'), name='fanout_batch_once'),
        ),
    ]
