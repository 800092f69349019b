"""Every periodic (beat) job, declared once, with how often it runs and why.

django-celery-beat's DatabaseScheduler copies these into its tables on start, where operators
can see and tune them in the admin. Run exactly one beat; every job is safe to run twice anyway.
"""

from __future__ import annotations

from typing import Any

from notifier.queues import MAINTENANCE_QUEUE

BEAT_SCHEDULE: dict[str, dict[str, Any]] = {
    # Every minute: re-publish work the broker lost (Redis restarted without persistence, a
    # worker killed mid-send). PostgreSQL holds the truth, so nothing is lost for longer than
    # NOTIFIER_REQUEUE_AFTER_S plus this interval.
    "requeue-stuck-work": {
        "task": "notifier.requeue_stuck_work",
        "schedule": 60.0,
        "options": {"queue": MAINTENANCE_QUEUE, "expires": 55},
    },
}
