"""Every periodic (beat) job, declared once, with how often it runs and why.

django-celery-beat's DatabaseScheduler copies these into its tables on start, where operators
can see and tune them in the admin. Run exactly one beat; every job is safe to run twice anyway.
"""

from __future__ import annotations

from typing import Any

from celery.schedules import crontab
from django.conf import settings

from notifier.queues import MAINTENANCE_QUEUE

BEAT_SCHEDULE: dict[str, dict[str, Any]] = {
    # Every minute: re-publish work the broker lost (Redis restarted without persistence, a
    # worker killed mid-send). PostgreSQL holds the truth, so nothing is lost for longer than
    # NOTIFIER_REQUEUE_AFTER_S plus this interval (transactional work: see the next job).
    "requeue-stuck-work": {
        "task": "notifier.requeue_stuck_work",
        "schedule": 60.0,
        "options": {"queue": MAINTENANCE_QUEUE, "expires": 55},
    },
    # Every NOTIFIER_CLAIM_SWEEP_S (5 s): take back the claims of senders that died (their
    # lease ran out; a live sender renews its own), and re-publish transactional deliveries
    # queued NOTIFIER_TRANSACTIONAL_REQUEUE_AFTER_S past due, so a worker SIGKILL delays a
    # password-reset SMS by seconds, not minutes. Two index range scans, a few rows each.
    "requeue-expired-claims": {
        "task": "notifier.requeue_expired_claims",
        "schedule": float(settings.NOTIFIER_CLAIM_SWEEP_S),
        "options": {
            "queue": MAINTENANCE_QUEUE,
            "expires": max(1.0, float(settings.NOTIFIER_CLAIM_SWEEP_S) - 1),
        },
    },
    # Every 15 seconds: release held deliveries that are due. Quiet-hours releases are spread
    # over NOTIFIER_QUIET_RELEASE_WINDOW_S by their due times, so each run releases a slice of
    # the morning rather than everything at 08:00:00.
    "release-held": {
        "task": "notifier.release_held",
        "schedule": 15.0,
        "options": {"queue": MAINTENANCE_QUEUE, "expires": 14},
    },
    # Every 15 seconds: send each digest whose window has ended as one message (a digest is
    # at most a tick late; two beat processes flush disjoint digests).
    "flush-digests": {
        "task": "notifier.flush_digests",
        "schedule": 15.0,
        "options": {"queue": MAINTENANCE_QUEUE, "expires": 14},
    },
    # Every minute: walks of topic sends whose task was lost start again where they were.
    "revive-topic-sends": {
        "task": "notifier.revive_topic_sends",
        "schedule": 60.0,
        "options": {"queue": MAINTENANCE_QUEUE, "expires": 55},
    },
    # Every 30 seconds: start campaign steps whose moment has come (each exactly once: the
    # step row moves pending -> running under a skip_locked lock), skip missed ones with a
    # reason, revive fan-out walks whose task was lost, and close finished steps.
    "campaign-steps": {
        "task": "campaigns.start_due_steps",
        "schedule": 30.0,
        "options": {"queue": MAINTENANCE_QUEUE, "expires": 29},
    },
    # Every 5 minutes: triggered campaigns (a user became dormant, churned, ...) walk their
    # segment again; each user gets it at most once per re-entry window.
    "campaign-triggers": {
        "task": "campaigns.evaluate_triggers",
        "schedule": 300.0,
        "options": {"queue": MAINTENANCE_QUEUE, "expires": 290},
    },
    # Every 2 minutes: roll up the funnels of live and recent campaigns, so the admin's
    # funnel page reads a few rows instead of counting millions.
    "campaign-stats": {
        "task": "campaigns.rollup_stats",
        "schedule": 120.0,
        "options": {"queue": MAINTENANCE_QUEUE, "expires": 110},
    },
    # Every minute: failure rates over the last NOTIFIER_ALERT_WINDOW_S. A failing provider
    # alerts operators (log + Sentry, then a cooldown); a campaign failing above its threshold
    # is paused with the reason shown to the marketer.
    "failure-alerts": {
        "task": "notifier.failure_alerts",
        "schedule": 60.0,
        "options": {"queue": MAINTENANCE_QUEUE, "expires": 55},
    },
    # Every 15 seconds: wake the webhook sender of every endpoint with due events that nobody
    # holds: retries further off than a broker countdown, and sends whose task the broker lost
    # (the events are rows in PostgreSQL). One index probe per active endpoint.
    "webhooks-sweep": {
        "task": "notifier.webhooks_sweep",
        "schedule": 15.0,
        "options": {"queue": MAINTENANCE_QUEUE, "expires": 14},
    },
    # Hourly: delete webhook events answered (or given up) and attempts' records older than
    # NOTIFIER_WEBHOOK_KEEP_DAYS, in short batches for at most a minute.
    "webhooks-prune": {
        "task": "notifier.webhooks_prune",
        "schedule": crontab(minute=17),
        "options": {"queue": MAINTENANCE_QUEUE, "expires": 3000},
    },
    # Nightly: learn each user's usual local hour of reading, for steps sent at that hour.
    "learn-active-hours": {
        "task": "campaigns.learn_active_hours",
        "schedule": crontab(hour=3, minute=30),
        "options": {"queue": MAINTENANCE_QUEUE, "expires": 3600},
    },
    # Nightly: archive then delete finished delivery-log rows older than
    # NOTIFIER_RETENTION_DAYS (off by default), in short batches, for at most
    # NOTIFIER_RETENTION_BUDGET_S; a run that is cut short goes on the next night. Then the
    # workflows' rows: closed digests and finished topic sends past the same window, and
    # (even with retention off) ended snoozes and throttle slots out of their window.
    "delivery-log-retention": {
        "task": "notifier.retention",
        "schedule": crontab(hour=2, minute=45),
        "options": {"queue": MAINTENANCE_QUEUE, "expires": 3600},
    },
}
