"""A worker of the project's Celery app tunes its garbage collector as it starts (before its
pool processes fork): what it has loaded is frozen out of the collector's sight, and the
collector's thresholds stay Python's (notifier.celery_config)."""

from __future__ import annotations

import gc

import pytest
from celery import signals

from notifier_site.celery import app


class Worker:
    """What Celery passes as worker_init's sender: the worker, which knows its app."""

    def __init__(self, app: object) -> None:
        self.app = app


@pytest.fixture
def collector_restored():
    before = gc.get_threshold()
    yield
    gc.unfreeze()
    gc.set_threshold(*before)


def test_a_starting_worker_of_the_app_freezes_what_it_loaded(collector_restored):
    gc.unfreeze()
    assert gc.get_freeze_count() == 0
    thresholds = gc.get_threshold()

    signals.worker_init.send(sender=Worker(app))

    assert gc.get_threshold() == thresholds
    assert gc.get_freeze_count() > 10_000  # Django, Celery and the project's modules


def test_a_worker_of_another_app_leaves_the_collector_alone(collector_restored):
    gc.unfreeze()

    signals.worker_init.send(sender=Worker(object()))

    assert gc.get_freeze_count() == 0


def test_the_setting_off_leaves_the_collector_alone(collector_restored, settings):
    settings.NOTIFIER_WORKER_GC_TUNE = False
    gc.unfreeze()

    signals.worker_init.send(sender=Worker(app))

    assert gc.get_freeze_count() == 0
