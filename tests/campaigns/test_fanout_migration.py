"""campaigns 0015: walks go by recipient profile id instead of user id. A deployment upgraded in
place with a walk under way carries on: its cursor never skips a user not yet walked, and its
batch records name the same people by their profiles."""

from __future__ import annotations

import pytest
from django.db import connection
from django.db.migrations.executor import MigrationExecutor

from campaigns.models import CampaignStep, FanoutBatch, Segment
from notifier.models import Recipient, User
from tests.campaigns.approvals import FANS, approved, person

BEFORE = [("campaigns", "0014_trigger_entries_series_stop")]

pytestmark = pytest.mark.django_db(transaction=True)


def migrate(targets: list[tuple[str, str]] | None = None) -> MigrationExecutor:
    executor = MigrationExecutor(connection)
    executor.loader.build_graph()
    executor.migrate(targets or executor.loader.graph.leaf_nodes())
    return executor


def test_a_walk_under_way_carries_on_by_profile_without_skipping_anyone(roles):
    campaign = approved(person("Marketer"), person("Marketing lead"), Segment.objects.create())
    step = campaign.steps.order_by("pk").first()
    users = [User.objects.create(username=f"u{n}", email=f"u{n}@example.com") for n in range(4)]
    # Profiles made out of the users' order (first use in another order than sign-up).
    Recipient.objects.filter(user__in=users).delete()
    for n in (3, 1, 2, 0):
        Recipient.objects.create(user=users[n], email=users[n].email, interest_tags=[FANS])
    profile = {u.pk: Recipient.objects.get(user=u).pk for u in users}

    executor = migrate(BEFORE)
    try:
        old = executor.loader.project_state(BEFORE).apps
        # Walked users 0 and 1: one batch done; users 2 and 3 handed out, not written yet.
        old.get_model("campaigns", "CampaignStep").objects.filter(pk=step.pk).update(
            cursor_user_id=users[1].pk
        )
        Batch = old.get_model("campaigns", "FanoutBatch")
        Batch.objects.create(
            step_id=step.pk,
            walk_round=0,
            first_user_id=users[0].pk,
            user_ids=[users[0].pk, users[1].pk],
            published_at=campaign.created_at,
            done_at=campaign.created_at,
        )
        Batch.objects.create(
            step_id=step.pk,
            walk_round=0,
            first_user_id=users[2].pk,
            user_ids=[users[2].pk, users[3].pk],
            published_at=campaign.created_at,
        )
    finally:
        migrate()

    cursor = CampaignStep.objects.get(pk=step.pk).cursor_recipient_id
    # Everyone not walked yet lies ahead of the cursor (a walked one may come again: the
    # message's key, per step and user, writes it once).
    assert profile[users[2].pk] > cursor and profile[users[3].pk] > cursor
    batches = {
        b.first_recipient_id: (b.recipient_ids, b.done_at is not None)
        for b in FanoutBatch.objects.filter(step_id=step.pk)
    }
    # Each known by its lowest profile id, as the batch task finds it (here not the profile of
    # its lowest user id).
    assert batches == {
        profile[users[1].pk]: ([profile[users[1].pk], profile[users[0].pk]], True),
        profile[users[3].pk]: ([profile[users[3].pk], profile[users[2].pk]], False),
    }
