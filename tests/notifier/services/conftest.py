"""Service tests run the pipeline in-process: publishing to the broker is recorded, not sent."""

from __future__ import annotations

import pytest

from notifier import dispatch


class Published:
    def __init__(self) -> None:
        self.prepare: list[tuple[list[int], str]] = []
        self.test_sends: list[list[int]] = []
        self.deliver: list[tuple[list[int], str, str, float]] = []

    def delivered_ids(self) -> list[int]:
        return [pk for ids, *_ in self.deliver for pk in ids]


@pytest.fixture
def published(monkeypatch) -> Published:
    record = Published()
    monkeypatch.setattr(
        dispatch, "publish_prepare", lambda ids, lane: record.prepare.append((list(ids), lane))
    )
    monkeypatch.setattr(
        dispatch, "publish_test_sends", lambda ids: record.test_sends.append(list(ids))
    )
    monkeypatch.setattr(
        dispatch,
        "publish_deliver",
        lambda ids, lane, channel, countdown=0.0: record.deliver.append(
            (list(ids), lane, channel, countdown)
        ),
    )
    return record
