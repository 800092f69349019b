"""The writer refuses a move the state machine does not allow before it writes anything, and
logs only the moves it made."""

from __future__ import annotations

import uuid

import pytest
from django.db import connection
from django.test.utils import CaptureQueriesContext
from django.utils import timezone

from notifier.api import notify
from notifier.db import NO_WAIT
from notifier.models import Delivery, DeliveryEvent, EventKind
from notifier.services.pipeline import messages_prepare
from notifier.services.transitions import (
    deliveries_move,
    deliveries_set,
    delivery_move,
    moves_check,
)
from notifier.status import DeliveryStatus, IllegalMove, Reason
from tests.factories import UserFactory, order_context

S = DeliveryStatus
pytestmark = pytest.mark.django_db


def _queued(published, count: int = 3) -> list[int]:
    users = UserFactory.create_batch(count)
    messages_prepare(
        message_ids=[
            # email: an in-app delivery would be sent as it is routed, never queued
            notify(u, "order.shipped", order_context(), channels=["email"]).pk
            for u in users
        ]
    )
    ids = list(Delivery.objects.filter(status=S.QUEUED).order_by("pk").values_list("pk", flat=True))
    assert len(ids) == count
    return ids


def test_moves_check_allows_a_stay_only_for_waiting_statuses() -> None:
    moves_check([S.QUEUED, S.HELD], [S.HELD])  # queued -> held, and held held again
    with pytest.raises(IllegalMove):
        moves_check([S.SENT], [S.SENT])
    with pytest.raises(IllegalMove):
        moves_check([S.QUEUED, S.CLICKED], [S.CANCELLED])


def test_a_bulk_move_the_state_machine_refuses_writes_nothing(published) -> None:
    ids = _queued(published)
    events = DeliveryEvent.objects.count()
    with pytest.raises(IllegalMove):
        deliveries_move(
            ids,
            sources=[S.QUEUED, S.SENT],
            to=S.CANCELLED,
            kind=EventKind.MANUAL,
            at=timezone.now(),
        )
    with pytest.raises(IllegalMove):  # even with nothing to move: refused when asked
        deliveries_move(
            [], sources=[S.CANCELLED], to=S.QUEUED, kind=EventKind.MANUAL, at=timezone.now()
        )
    assert set(Delivery.objects.filter(pk__in=ids).values_list("status", flat=True)) == {S.QUEUED}
    assert DeliveryEvent.objects.count() == events


def test_a_row_outside_the_declared_targets_is_refused(published) -> None:
    ids = _queued(published, 1)
    now = timezone.now()
    with pytest.raises(IllegalMove):
        deliveries_set(
            ("status", "updated_at"), [(ids[0], S.CLICKED, now)], source=S.QUEUED, targets=[S.HELD]
        )
    assert Delivery.objects.get(pk=ids[0]).status == S.QUEUED


def test_a_bulk_move_logs_only_the_rows_it_moved(published) -> None:
    ids = _queued(published)
    taken = ids[0]  # another writer got there first
    assert delivery_move(taken, S.CANCELLED, kind=EventKind.MANUAL, reason=Reason.CANCELLED)
    before = DeliveryEvent.objects.count()
    now = timezone.now()
    moved = deliveries_move(
        ids,
        sources=[S.QUEUED],
        to=S.HELD,
        kind=EventKind.MANUAL,
        at=now,
        reason=Reason.CAMPAIGN_PAUSED,
        detail={"action": "campaign paused"},
        details={ids[1]: {"by": "ops"}},
        next_attempt_at=None,
    )
    assert sorted(moved) == ids[1:]
    assert Delivery.objects.get(pk=taken).status == S.CANCELLED
    logged = DeliveryEvent.objects.filter(at=now).order_by("delivery_id")
    assert DeliveryEvent.objects.count() == before + 2
    assert [(e.delivery_id, e.status, e.reason, e.detail) for e in logged] == [
        (ids[1], S.HELD, Reason.CAMPAIGN_PAUSED, {"action": "campaign paused", "by": "ops"}),
        (ids[2], S.HELD, Reason.CAMPAIGN_PAUSED, {"action": "campaign paused"}),
    ]
    assert set(
        Delivery.objects.filter(pk__in=ids[1:]).values_list("status", "next_attempt_at")
    ) == {(S.HELD, None)}


def test_a_single_move_from_named_sources_is_checked_and_guarded(published) -> None:
    (pk,) = _queued(published, 1)
    with pytest.raises(IllegalMove):
        delivery_move(pk, S.CLICKED, kind=EventKind.CALLBACK, sources=[S.QUEUED])
    assert not delivery_move(pk, S.FAILED, kind=EventKind.CALLBACK, sources=[S.SENT])
    assert Delivery.objects.get(pk=pk).status == S.QUEUED
    assert not DeliveryEvent.objects.filter(delivery_id=pk, kind=EventKind.CALLBACK).exists()


def test_recording_a_claimed_batch_finds_its_rows_by_key_whatever_the_guard(published) -> None:
    """A claim's token is one value for its whole batch, but the statistics take it for one
    row: compared as a constant, the planner drove the record's join from the deliveries in
    `sending` and scanned the batch's values again for each (500 x 500 rows a record). The
    guards are compared with the values' own columns, so the rows are found by key; a row
    whose guard does not hold is still left alone."""
    ids = _queued(published, 3)
    token = uuid.uuid4()
    Delivery.objects.filter(pk__in=ids).update(status=S.SENDING, claim_token=token)
    Delivery.objects.filter(pk=ids[2]).update(claim_token=uuid.uuid4())  # claimed again since
    now = timezone.now()
    with CaptureQueriesContext(connection) as queries:
        moved = deliveries_set(
            ("status", "updated_at"),
            [(pk, S.SENT, now) for pk in ids],
            source=S.SENDING,
            targets=[S.SENT],
            guard={"claim_token": token},
            events=[(pk, now, EventKind.ATTEMPT, S.SENT, "", 1, "sandbox", "", {}) for pk in ids],
        )
    assert moved == 2
    assert list(
        Delivery.objects.filter(pk__in=ids).order_by("pk").values_list("status", flat=True)
    ) == [
        S.SENT,
        S.SENT,
        S.SENDING,
    ]
    [record] = [q["sql"] for q in queries.captured_queries if "WITH moved AS (UPDATE" in q["sql"]]
    with connection.cursor() as cursor:
        cursor.execute("SET LOCAL enable_seqscan = off")
        cursor.execute("EXPLAIN " + record.removeprefix(NO_WAIT))
        plan = "\n".join(row[0] for row in cursor.fetchall())
    assert "notifier_delivery_pkey" in plan
    assert "delivery_lease_idx" not in plan
