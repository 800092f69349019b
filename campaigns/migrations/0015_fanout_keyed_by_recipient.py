"""The campaign walk goes through recipient profiles (notifier.Recipient) by their integer
ids instead of through users by theirs, so a project whose users are keyed by UUID or text
can run campaigns: the step's cursor and the fan-out's batch records now hold recipient ids.

Walks under way in a deployment upgraded in place start over, in a new round from the first
profile, rather than being translated: a walk's cursor and batch records in user ids cannot
stand for profile ids (users without a profile yet, made when a walk starts, would fall behind
a translated cursor; a batch record naming only deleted users could never be marked done).
Starting over hands everyone out again; a message's key, per step and user, writes nothing
twice, so those already written get nothing more and the rest get theirs. Batches of the old
round still queued write their messages and count nothing (campaigns.fanout_batch, by user
id); beat revives each walk within WALK_STALE. The old batch and attempt records go: they
were bookkeeping of the rounds that ended here. The same happens going back.
"""

from django.db import migrations, models
from django.utils import timezone

RUNNING = "running"


def walks_start_over(apps, schema_editor):
    db = schema_editor.connection.alias
    CampaignStep = apps.get_model("campaigns", "CampaignStep")
    apps.get_model("campaigns", "FanoutBatch").objects.using(db).all().delete()
    apps.get_model("campaigns", "FanoutAttempt").objects.using(db).all().delete()
    CampaignStep.objects.using(db).filter(status=RUNNING).update(
        cursor_recipient_id=0,
        walk_done=False,
        walk_round=models.F("walk_round") + 1,
        batches_total=0,
        batches_done=0,
        walked_at=timezone.now(),
    )


class Migration(migrations.Migration):
    dependencies = [
        ("campaigns", "0014_trigger_entries_series_stop"),
        ("notifier", "0025_user_profile_fields_moved"),
    ]

    operations = [
        migrations.RemoveConstraint(
            model_name="fanoutattempt",
            name="fanout_attempt_batch",
        ),
        migrations.RemoveConstraint(
            model_name="fanoutbatch",
            name="fanout_batch_once",
        ),
        migrations.RenameField(
            model_name="campaignstep",
            old_name="cursor_user_id",
            new_name="cursor_recipient_id",
        ),
        migrations.RenameField(
            model_name="fanoutattempt",
            old_name="first_user_id",
            new_name="first_recipient_id",
        ),
        migrations.RenameField(
            model_name="fanoutbatch",
            old_name="first_user_id",
            new_name="first_recipient_id",
        ),
        migrations.RenameField(
            model_name="fanoutbatch",
            old_name="user_ids",
            new_name="recipient_ids",
        ),
        migrations.RunPython(walks_start_over, walks_start_over, elidable=False),
        migrations.AddConstraint(
            model_name="fanoutattempt",
            constraint=models.UniqueConstraint(
                fields=("step", "first_recipient_id", "users"), name="fanout_attempt_batch"
            ),
        ),
        migrations.AddConstraint(
            model_name="fanoutbatch",
            constraint=models.UniqueConstraint(
                fields=("step", "walk_round", "first_recipient_id"), name="fanout_batch_once"
            ),
        ),
    ]
