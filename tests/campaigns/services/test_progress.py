"""Live progress of a sending step (issue 14): the numbers the progress bars show, read from the
fan-out's own counters while the step is walked and written, and the JSON endpoint that serves
them. In-process, as the other service tests: publishes are recorded, the batches are run here.
"""

from __future__ import annotations

import pytest
import time_machine
from django.core.cache import cache
from django.db import connection
from django.test import TestCase
from django.test.utils import CaptureQueriesContext
from django.urls import reverse

from campaigns.models import Campaign, Segment, StepStatus
from campaigns.services import fanout
from campaigns.services.progress import campaign_progress
from notifier.models import Delivery, Message
from notifier.status import DeliveryStatus as S
from notifier.status import Reason
from tests.campaigns.approvals import FANS, NOTICE_AT, approved, audience, person
from tests.factories import staff_member

pytestmark = pytest.mark.django_db
USERS, PER_BATCH = 6, 2  # three batches; two channels each: twelve deliveries


@pytest.fixture
def step(roles, monkeypatch, published):
    """The "Notice" step of an approved campaign to six users, started; nothing walked yet."""
    audience(USERS)
    monkeypatch.setattr(fanout, "BATCH_USERS", PER_BATCH)
    campaign = approved(
        person("Marketer"), person("Marketing lead"), Segment.objects.create(tags_any=[FANS])
    )
    campaign.steps.exclude(name="Notice").update(status=StepStatus.SKIPPED)
    with time_machine.travel(NOTICE_AT, tick=False):
        with TestCase.captureOnCommitCallbacks(execute=True):
            started = fanout.steps_start_due()
        step = campaign.steps.get(name="Notice")
        assert started.started == [step.pk]
        yield step


def bar(step):
    progress = campaign_progress(Campaign.objects.get(pk=step.campaign_id), cached=False)
    (shown,) = [s for s in progress.steps if s.step_id == step.pk]
    return progress, shown


def test_a_started_step_shows_what_is_expected_and_nothing_done_yet(step):
    progress, shown = bar(step)

    assert progress.live is True
    assert shown.expected == USERS  # the audience at approval, until the walk is over
    assert (shown.handed_out, shown.written, shown.deliveries, shown.sent) == (0, 0, 0, 0)
    assert shown.complete is False


def test_the_bars_follow_the_walk_the_batches_and_the_sends(step, published):
    published.walk(step.pk, batches=1)  # one batch of two handed out, not written yet
    _, shown = bar(step)
    assert (shown.handed_out, shown.batches_total, shown.batches_done) == (2, 1, 0)
    assert (shown.written, shown.deliveries) == (0, 0)

    while published.walk(step.pk) is fanout.Walk.CONTINUE:
        pass
    first_step, first_ids = published.batches.pop(0)
    fanout.step_fanout_batch(step_id=first_step, recipient_ids=first_ids)
    _, shown = bar(step)
    assert shown.walk_done is True
    assert shown.expected == shown.handed_out == USERS  # the walk is over: what it handed out
    assert (shown.batches_total, shown.batches_done) == (3, 1)
    assert shown.written == 2
    assert shown.deliveries == 4  # in-app and email each
    # In-app goes out as it is routed (the inbox is our own database); email waits its turn.
    assert shown.sent == 2
    assert shown.in_flight + shown.held == 2
    assert shown.percent_handed_out == 100

    for step_id, ids in published.batches:
        fanout.step_fanout_batch(step_id=step_id, recipient_ids=ids)
    published.batches.clear()
    # What the senders and the routing would make of them: the rows as the pipeline leaves them.
    deliveries = Delivery.objects.filter(message__step_id=step.pk).order_by("pk")
    ids = list(deliveries.values_list("pk", flat=True))
    Delivery.objects.filter(pk__in=ids[:7]).update(status=S.SENT)
    Delivery.objects.filter(pk__in=ids[7:9]).update(status=S.FAILED, reason=Reason.NO_CONSENT)
    Delivery.objects.filter(pk__in=ids[9:10]).update(status=S.HELD, reason=Reason.QUIET_HOURS)
    Delivery.objects.filter(pk__in=ids[10:11]).update(status=S.SUPPRESSED)
    Delivery.objects.filter(pk__in=ids[11:]).update(status=S.QUEUED)

    _, shown = bar(step)
    assert (shown.written, shown.deliveries) == (USERS, 12)
    assert (shown.sent, shown.failed, shown.held, shown.suppressed, shown.in_flight) == (
        7,
        2,
        1,
        1,
        1,
    )
    assert shown.complete is False  # one still on its way
    assert shown.percent_settled == round(100 * 11 / 12)

    Delivery.objects.filter(pk__in=ids[11:]).update(status=S.CANCELLED)
    _, shown = bar(step)
    assert (shown.cancelled, shown.in_flight, shown.complete) == (1, 0, True)


def test_test_sends_are_left_out(step, published):
    published.run_walk(step.pk)
    Message.objects.filter(pk__in=Message.objects.filter(step_id=step.pk)[:2].values("pk")).update(
        is_test=True
    )

    _, shown = bar(step)

    assert shown.written == USERS - 2
    assert shown.deliveries == 2 * (USERS - 2)


def test_a_poll_costs_a_few_queries_however_many_batches(step, published):
    published.run_walk(step.pk)

    with CaptureQueriesContext(connection) as queries:
        campaign_progress(step.campaign, cached=False)

    # The steps, then per step shown: deliveries by status, handed out, messages written.
    assert (
        len(queries) <= 1 + 3 * step.campaign.steps.filter(status__in=["running", "done"]).count()
    )


def test_the_endpoint_serves_the_numbers_to_a_marketer_and_refuses_others(step, published, client):
    published.run_walk(step.pk)
    url = reverse("admin:campaigns_campaign_progress", args=[step.campaign_id])

    client.force_login(person("Marketer"))
    response = client.get(url)

    assert response.status_code == 200
    assert "no-store" in response["Cache-Control"]  # the admin's never_cache
    data = response.json()
    (shown,) = data["steps"]
    assert shown["step_id"] == step.pk
    assert (shown["handed_out"], shown["written"], shown["deliveries"]) == (USERS, USERS, 12)
    assert shown["batches_done"] == shown["batches_total"] == 3
    assert data["live"] is True

    assert client.post(url).status_code == 405
    assert (
        client.get(reverse("admin:campaigns_campaign_progress", args=[999_999])).status_code == 404
    )
    client.force_login(person("Support"))
    assert client.get(url).status_code == 200
    client.force_login(staff_member())
    assert client.get(url).status_code == 403


def test_a_batch_whose_deliveries_settled_is_not_counted_again(step, published):
    published.run_walk(step.pk)
    Delivery.objects.filter(message__step_id=step.pk).update(status=S.SENT)
    campaign = Campaign.objects.get(pk=step.campaign_id)
    campaign_progress(campaign)  # counts, and keeps each settled batch
    cache.delete(f"campaigns:progress:{campaign.pk}")  # the whole answer's second is over

    with CaptureQueriesContext(connection) as queries:
        progress = campaign_progress(campaign)

    assert progress.steps[0].sent == 2 * USERS
    assert not any("notifier_delivery" in query["sql"] for query in queries)
