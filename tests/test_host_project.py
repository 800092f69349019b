"""A product with its own user model (UUID keys, another name) installs Notifier and uses all
of it: tests/host/host_e2e.py, run in a pytest process of its own on the host's settings
(tests/host/settings.py), where none of this suite's settings or fixtures apply. Its own
Celery worker, PostgreSQL and Redis: a host view notifies (inbox, email and SMS sandboxes),
the inbox page and the preference centre work under /notifications/, support opens the host
user's timeline in the admin, and a campaign to a segment of host users goes out."""

from __future__ import annotations

import pytest

from tests.host.env import run_host_tests

pytestmark = pytest.mark.integration


def test_a_host_project_with_uuid_user_keys_runs_notifier_end_to_end():
    result = run_host_tests("tests.host.settings", "tests/host/host_e2e.py")
    assert result.returncode == 0, result.stdout[-6000:] + result.stderr[-3000:]
    assert "5 passed" in result.stdout


def test_erasure_in_a_host_project_leaves_the_hosts_user_row_alone():
    result = run_host_tests("tests.host.settings", "tests/host/erasure_e2e.py")
    assert result.returncode == 0, result.stdout[-6000:] + result.stderr[-3000:]
    assert "1 passed" in result.stdout
