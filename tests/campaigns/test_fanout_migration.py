"""campaigns 0015: walks go by recipient profile id instead of user id. A deployment upgraded in
place with a walk under way starts it over in a new round from the first profile: nobody is
skipped (users without a profile included), and the batch records of the old round, in user
ids, are dropped instead of being left to hold the step open."""

from __future__ import annotations

import pytest
from django.db import connection
from django.db.migrations.executor import MigrationExecutor

from campaigns.models import (
    Campaign,
    CampaignStatus,
    CampaignStep,
    FanoutBatch,
    Segment,
    StepStatus,
)
from campaigns.services import fanout
from notifier.models import Recipient, User
from tests.campaigns.approvals import approved, person

BEFORE = [("campaigns", "0014_trigger_entries_series_stop")]

pytestmark = pytest.mark.django_db(transaction=True)


def migrate(targets: list[tuple[str, str]] | None = None) -> MigrationExecutor:
    executor = MigrationExecutor(connection)
    executor.loader.build_graph()
    executor.migrate(targets or executor.loader.graph.leaf_nodes())
    return executor


def test_a_walk_under_way_starts_over_by_profile_and_reaches_everyone(roles, published):
    campaign = approved(person("Marketer"), person("Marketing lead"), Segment.objects.create())
    step = campaign.steps.order_by("pk").first()
    Campaign.objects.filter(pk=campaign.pk).update(status=CampaignStatus.RUNNING)
    CampaignStep.objects.filter(pk=step.pk).update(status=StepStatus.RUNNING)
    users = [User.objects.create(username=f"u{n}", email=f"u{n}@example.com") for n in range(4)]
    # One never had a profile (made with bulk_create, or before Notifier was installed).
    Recipient.objects.filter(user=users[3]).delete()

    executor = migrate(BEFORE)
    try:
        old = executor.loader.project_state(BEFORE).apps
        # Walked up to user 2, three batches handed out, one of them not written, one naming
        # only a user deleted since.
        old.get_model("campaigns", "CampaignStep").objects.filter(pk=step.pk).update(
            cursor_user_id=users[2].pk, walk_round=3, batches_total=3, batches_done=2
        )
        Batch = old.get_model("campaigns", "FanoutBatch")
        for first, done in ((users[0].pk, True), (users[2].pk, False), (10**9, True)):
            Batch.objects.create(
                step_id=step.pk,
                walk_round=3,
                first_user_id=first,
                user_ids=[first],
                published_at=campaign.created_at,
                done_at=campaign.created_at if done else None,
            )
    finally:
        migrate()

    state = CampaignStep.objects.get(pk=step.pk)
    assert (state.cursor_recipient_id, state.walk_done, state.walk_round) == (0, False, 4)
    assert (state.batches_total, state.batches_done) == (0, 0)
    assert not FanoutBatch.objects.filter(step_id=step.pk).exists()

    # The next walk hands out every user's profile, the one made for it included.
    while published.walk(step.pk) is fanout.Walk.CONTINUE:
        pass
    handed_out = {pk for _, ids in published.batches for pk in ids}
    everyone = set(Recipient.objects.filter(user__in=users).values_list("pk", flat=True))
    assert len(everyone) == 4 and everyone <= handed_out
