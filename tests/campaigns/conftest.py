"""Campaign service tests run the pipeline in-process: publishes are recorded, not sent."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from django.test import TestCase

from campaigns import dispatch as campaign_dispatch
from campaigns.rendering import checked_copy_clear, variant_cache_clear
from campaigns.services import fanout
from notifier import dispatch


class Published:
    def __init__(self) -> None:
        self.prepare: list[list[int]] = []
        self.test_sends: list[list[int]] = []
        self.deliver: list[list[int]] = []
        self.walks: list[int] = []
        self.batches: list[tuple[int, list[int]]] = []

    def delivered_ids(self) -> list[int]:
        return [pk for ids in self.deliver for pk in ids]

    def run_walk(self, step_id: int) -> None:
        """Walk the step to the end and write every batch, as the workers would (a walk
        publishes its batches once its transaction commits)."""
        while self.walk(step_id) is fanout.Walk.CONTINUE:
            pass
        while self.batches:
            step, ids = self.batches.pop(0)
            fanout.step_fanout_batch(step_id=step, recipient_ids=ids)

    def walk(self, step_id: int, **kwargs: int) -> fanout.Walk:
        """One walk task: its batches are published once its transaction commits."""
        with TestCase.captureOnCommitCallbacks(execute=True):
            return fanout.step_walk(step_id=step_id, **kwargs)


@pytest.fixture
def published(monkeypatch) -> Published:
    record = Published()
    monkeypatch.setattr(
        dispatch, "publish_prepare", lambda ids, lane: record.prepare.append(list(ids))
    )
    monkeypatch.setattr(
        dispatch, "publish_test_sends", lambda ids: record.test_sends.append(list(ids))
    )
    monkeypatch.setattr(
        dispatch,
        "publish_deliver",
        lambda ids, lane, channel, countdown=0.0: record.deliver.append(list(ids)),
    )
    monkeypatch.setattr(
        campaign_dispatch,
        "publish_walk",
        lambda step_id, countdown=0.0: record.walks.append(step_id),
    )
    monkeypatch.setattr(
        campaign_dispatch,
        "publish_batch",
        lambda step_id, ids, walk_round: record.batches.append((step_id, list(ids))),
    )
    return record


@pytest.fixture(autouse=True)
def _fresh_variant_cache() -> Iterator[None]:
    variant_cache_clear()
    checked_copy_clear()
    yield
    variant_cache_clear()
    checked_copy_clear()


@pytest.fixture
def roles(db) -> None:
    """The Marketer / Marketing lead / Support groups as the migration makes them (again, if a
    transactional test's flush removed them earlier in the session)."""
    import importlib

    from django.apps import apps

    importlib.import_module("campaigns.migrations.0003_marketing_roles").create_roles(apps, None)
