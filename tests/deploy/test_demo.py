"""`make demo` end to end: `manage.py demo` on the embedded default (SQLite, the in-memory
broker, an in-process worker, sandboxes), run as the Makefile runs it, in a fresh process.

The demo once broke without any test noticing (a raw-SQL UUID binding SQLite refused, so its
deliveries never finished); this runs it twice on a throwaway database and reads the result
from that database, not from the text it prints.
"""

from __future__ import annotations

import os
import sqlite3
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def run_demo(database: Path) -> subprocess.CompletedProcess[str]:
    env = {
        key: value
        for key, value in os.environ.items()
        # What `make demo` unsets: with these gone the settings fall back to the embedded
        # default. DATABASE_URL then points at the test's own file instead of var/.
        # The test run's own settings module is not the site's either.
        if key not in ("DATABASE_URL", "CELERY_BROKER_URL", "REDIS_URL", "DJANGO_SETTINGS_MODULE")
        and not key.startswith("NOTIFIER_")
    }
    env["DATABASE_URL"] = f"sqlite:///{database}"
    return subprocess.run(
        [sys.executable, "manage.py", "demo", "--timeout", "90"],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=240,
        check=False,
    )


def statuses(database: Path) -> dict[tuple[str, str, str], list[str]]:
    """(username, message type, channel) -> the statuses of those deliveries, oldest first."""
    with sqlite3.connect(database) as db:
        rows = db.execute(
            """
            SELECT u.username, m.type_id, d.channel, d.status
            FROM notifier_delivery d
            JOIN notifier_message m ON m.id = d.message_id
            JOIN notifier_user u ON u.id = m.user_id
            ORDER BY d.id
            """
        ).fetchall()
    found: dict[tuple[str, str, str], list[str]] = {}
    for username, type_id, channel, status in rows:
        found.setdefault((username, type_id, channel), []).append(status)
    return found


def test_the_demo_runs_end_to_end_on_the_embedded_default_and_again(tmp_path: Path) -> None:
    database = tmp_path / "demo.sqlite3"
    first = run_demo(database)
    assert first.returncode == 0, first.stdout[-3000:] + first.stderr[-3000:]
    assert "Database: sqlite3, broker: memory" in first.stdout
    assert "message #1 both times: yes" in first.stdout

    expected = {
        # Mei: every channel of the shipping notice; the promotion only in-app (no consent).
        ("mei", "order.shipped", "email"): ["sent"],
        ("mei", "order.shipped", "sms"): ["sent"],
        ("mei", "order.shipped", "push"): ["sent"],
        ("mei", "order.shipped", "inapp"): ["sent"],
        ("mei", "promo.flash_sale", "email"): ["suppressed"],
        ("mei", "promo.flash_sale", "inapp"): ["sent"],
        # Sam: the email times out once and is retried; no phone, so no SMS.
        ("sam", "payment.succeeded", "email"): ["sent"],
        ("sam", "payment.succeeded", "sms"): ["suppressed"],
        # Ola: a permanent failure, and a reminder held for her quiet hours.
        ("ola", "order.shipped", "email"): ["failed"],
        ("ola", "order.shipped", "inapp"): ["sent"],
        ("ola", "subscription.renewal_reminder", "email"): ["held"],
        ("ola", "subscription.renewal_reminder", "inapp"): ["held"],
    }
    after_first = statuses(database)
    for key, wanted in expected.items():
        assert after_first.get(key) == wanted, (key, after_first.get(key))
    assert "attempt 1: transient" in first.stdout and "attempt 2: sent" in first.stdout

    # Again on the same database: the people are updated, not duplicated, and each run's
    # messages finish (idempotency keys carry the run's timestamp, so these are new ones).
    second = run_demo(database)
    assert second.returncode == 0, second.stdout[-3000:] + second.stderr[-3000:]
    again = dict(expected)
    # Except Mei's second promotion of the day: the marketing frequency cap holds it.
    again[("mei", "promo.flash_sale", "inapp")] = ["held"]
    after_second = statuses(database)
    for key, wanted in expected.items():
        assert after_second.get(key) == wanted + again[key], (key, after_second.get(key))
    with sqlite3.connect(database) as db:
        [[people]] = db.execute(
            "SELECT count(*) FROM notifier_user WHERE username NOT LIKE 'ext:%'"
        ).fetchall()
        # Each run's other service made one customer of its own, by its id, over HTTP...
        over_http = db.execute(
            """
            SELECT r.external_id, d.channel, d.status
            FROM notifier_delivery d
            JOIN notifier_message m ON m.id = d.message_id
            JOIN notifier_recipient r ON r.user_id = m.user_id
            WHERE r.external_id LIKE 'crm-%'
            """
        ).fetchall()
        # ... and the product's receiver took every event it subscribed to, signed.
        attempts = db.execute("SELECT count(*), sum(ok) FROM notifier_webhookattempt").fetchall()
        [[pending]] = db.execute(
            "SELECT count(*) FROM notifier_webhookevent WHERE state != 'sent'"
        ).fetchall()
    assert people == 3
    assert len({external for external, _, _ in over_http}) == 2
    assert {(channel, status) for _, channel, status in over_http} >= {
        ("inapp", "sent"),
        ("email", "sent"),
        ("sms", "sent"),
    }
    [[made, ok]] = attempts
    assert made >= 2 and ok == made, attempts
    assert pending == 0
    for run in (first, second):
        assert "POST /api/v1/notify" in run.stdout and "-> 202" in run.stdout
        assert "every signature verified with standardwebhooks; 0 refused" in run.stdout
