"""Beat: the periodic jobs reach django-celery-beat's tables and point at real tasks."""

import pytest
from django_celery_beat.models import PeriodicTask
from django_celery_beat.schedulers import DatabaseScheduler

from notifier.periodic import BEAT_SCHEDULE
from notifier_site.celery import app

pytestmark = pytest.mark.django_db


def test_every_periodic_job_names_a_registered_task():
    app.loader.import_default_modules()
    for name, entry in BEAT_SCHEDULE.items():
        assert entry["task"] in app.tasks, name


@pytest.mark.django_db(transaction=True)  # the scheduler closes and reopens connections
def test_the_scheduler_installs_the_requeue_job_every_minute_on_the_maintenance_queue():
    DatabaseScheduler(app=app)  # what `celery beat --scheduler ...DatabaseScheduler` does on start
    job = PeriodicTask.objects.get(name="requeue-stuck-work")
    assert job.task == "notifier.requeue_stuck_work"
    assert (job.interval.every, job.interval.period) == (60, "seconds")
    assert job.queue == "maintenance"
    assert job.enabled
