"""A product with its own user model (UUID keys, another name) installs Notifier and uses all
of it: tests/host/host_e2e.py, run in a pytest process of its own on the host's settings
(tests/host/settings.py), where none of this suite's settings or fixtures apply. Its own
Celery worker, PostgreSQL and Redis: a host view notifies (inbox, email and SMS sandboxes),
the inbox page and the preference centre work under /notifications/, support opens the host
user's timeline in the admin, and a campaign to a segment of host users goes out."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from tests.host.env import host_env

ROOT = Path(__file__).resolve().parent.parent

pytestmark = pytest.mark.integration


def test_a_host_project_with_uuid_user_keys_runs_notifier_end_to_end():
    env = host_env()
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "pytest",
            "-p",
            "no:cacheprovider",
            "-q",
            "--ds=tests.host.settings",
            "--confcutdir=tests/host",
            "--create-db",
            "tests/host/host_e2e.py",
        ],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=900,
        check=False,
    )
    assert result.returncode == 0, result.stdout[-6000:] + result.stderr[-3000:]
    assert "5 passed" in result.stdout
