"""A per-recipient date moved twice at once, by two tasks on a real Celery worker (two
processes) on Redis and PostgreSQL: exactly the final date's steps go out, each once, and
none of an earlier date's, even after every earlier step's time has passed."""

from __future__ import annotations

import time
from datetime import timedelta

import pytest
from celery import Celery
from django.conf import settings
from django.utils import timezone

from channels.models import SandboxSend
from notifier.api import date_set
from notifier.models import DateSeries, Delivery, Message, RecipientDate, RefusedCall
from notifier.queues import MAINTENANCE_QUEUE, Lane, prepare_queue
from notifier.services.release import held_release_due
from notifier.status import DeliveryStatus, Reason
from notifier.tasks import release_held_task
from tests.conftest import wait_until
from tests.factories import UserFactory

pytestmark = pytest.mark.integration
S = DeliveryStatus
CONTEXT = {"plan": "Pro", "renews_on": "soon"}


@pytest.fixture
def other_codebase() -> Celery:
    """A Celery app that knows nothing of Notifier's tasks, on the same broker."""
    app = Celery("billing", broker=settings.CELERY_BROKER_URL)
    app.conf.task_default_queue = prepare_queue(Lane.TRANSACTIONAL)
    return app


def sends_of(message_ids: list[int]) -> list[tuple[int, str]]:
    return sorted(
        SandboxSend.objects.filter(message_id__in=message_ids, outcome="sent").values_list(
            "message_id", "channel"
        )
    )


def test_a_date_moved_twice_at_once_sends_exactly_the_final_dates_steps_once(
    worker, other_codebase
):
    DateSeries.objects.create(
        key="test.soon",
        name="Seconds apart",
        type_id="subscription.renewal_reminder",
        # Seconds apart, and far enough ahead that a loaded box routes every step before its
        # time: the only thing that keeps an earlier date's step from going is the move.
        steps=[{"before_s": 8}, {"before_s": 4}],
    )
    user = UserFactory()
    start = timezone.now()
    first = date_set(
        user, "test.soon", start + timedelta(seconds=60), key="plan:1", context=CONTEXT
    )
    # Two moves at once, from two tasks that the worker's two processes take together.
    moves = {seconds: start + timedelta(seconds=seconds) for seconds in (20, 23)}
    for at in moves.values():
        other_codebase.send_task(
            "notifier.date_set",
            kwargs={
                "user": user.pk,
                "series": "test.soon",
                "key": "plan:1",
                "at": at.isoformat(),
                "context": CONTEXT,
            },
        )
    date = wait_until(
        lambda: RecipientDate.objects.filter(pk=first.pk, version=3).first(),
        message="both moves to be made",
    )
    assert date.at in moves.values() and not RefusedCall.objects.exists()
    final = list(
        Message.objects.filter(cancel_key=date.cancel_key)
        .order_by("not_before")
        .values_list("pk", flat=True)
    )
    earlier = list(
        Message.objects.filter(cancel_key__startswith=f"series:{date.pk}:")
        .exclude(cancel_key=date.cancel_key)
        .values_list("pk", flat=True)
    )
    assert len(final) == 2 and len(earlier) == 4
    # Beat's release tick, every half second until every step of every date has had its time.
    last_step = max(moves.values()) - timedelta(seconds=4) + timedelta(seconds=1)

    def tick_until_all_due_and_final_sent() -> bool:
        release_held_task.apply_async(queue=MAINTENANCE_QUEUE)
        time.sleep(0.5)
        return timezone.now() > last_step and len(sends_of(final)) == 2

    wait_until(
        tick_until_all_due_and_final_sent,
        timeout=60,
        message="the final date's steps to go out",
    )
    assert held_release_due().messages == 0  # nothing of the earlier dates is left to go
    assert sends_of(final) == sorted((pk, "email") for pk in final)  # each once
    assert sends_of(earlier) == []
    left = set(
        Delivery.objects.filter(message_id__in=earlier)
        .exclude(channel="push")  # no device: suppressed when routed
        .values_list("status", "reason")
    )
    assert left == {(S.CANCELLED, Reason.SERIES_MOVED)}
