"""The delivery state machine: allowed moves, terminal states, engagement order."""

import pytest

from notifier.status import (
    ALLOWED_MOVES,
    ENGAGEMENT_RANK,
    NOT_SENT,
    TERMINAL,
    DeliveryStatus,
    IllegalMove,
    can_move,
    check_move,
    sources_of,
)

S = DeliveryStatus


def test_every_status_has_an_entry_in_the_machine():
    assert set(ALLOWED_MOVES) == set(DeliveryStatus)


@pytest.mark.parametrize(
    ("current", "target"),
    [
        (S.PENDING, S.QUEUED),
        (S.QUEUED, S.SENDING),
        (S.SENDING, S.SENT),
        (S.SENDING, S.QUEUED),
        (S.SENT, S.DELIVERED),
        (S.DELIVERED, S.CLICKED),
        (S.FAILED, S.QUEUED),
    ],
)
def test_the_happy_and_retry_paths_are_allowed(current, target):
    assert can_move(current, target)


@pytest.mark.parametrize(
    ("current", "target"),
    [
        (S.CLICKED, S.DELIVERED),
        (S.READ, S.SENT),
        (S.SUPPRESSED, S.QUEUED),
        (S.SENT, S.SENDING),
        (S.QUEUED, S.SENT),
        (S.CANCELLED, S.QUEUED),
    ],
)
def test_backward_and_skipping_moves_are_refused(current, target):
    assert not can_move(current, target)
    with pytest.raises(IllegalMove):
        check_move(current, target)


def test_engagement_moves_only_go_forward():
    for source in ENGAGEMENT_RANK:
        for target in ENGAGEMENT_RANK:
            if can_move(source, target):
                assert ENGAGEMENT_RANK[target] >= ENGAGEMENT_RANK[source]


def test_sources_of_read_are_the_statuses_below_it():
    assert sources_of(S.READ) == {S.SENT, S.DELIVERED, S.OPENED}


def test_terminal_statuses_never_return_to_sending():
    for status in TERMINAL:
        assert not can_move(status, S.SENDING)


def test_the_not_sent_index_covers_exactly_the_not_sent_statuses():
    """The admin's "why not sent" filter must be able to use the partial index."""
    from notifier.models import Delivery

    (index,) = [i for i in Delivery._meta.indexes if i.name == "delivery_not_sent_idx"]
    (lookup, statuses) = index.condition.children[0]  # type: ignore[union-attr]
    assert lookup == "status__in"
    assert set(statuses) == {str(s) for s in NOT_SENT}
