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
    # Every 15 seconds: release held deliveries that are due. Quiet-hours releases are spread
    # over NOTIFIER_QUIET_RELEASE_WINDOW_S by their due times, so each run releases a slice of
    # the morning rather than everything at 08:00:00.
    "release-held": {
        "task": "notifier.release_held",
        "schedule": 15.0,
        "options": {"queue": MAINTENANCE_QUEUE, "expires": 14},
    },
}
