"""A product that kept Django's own user model installs Notifier and sends through it:
tests/host/authuser_e2e.py, run in a pytest process of its own on that project's settings
(tests/host/settings_authuser.py), where none of this suite's settings or fixtures apply."""

from __future__ import annotations

import pytest

from tests.host.env import run_host_tests

pytestmark = pytest.mark.integration


def test_a_project_on_djangos_own_user_model_sends_through_notifier():
    result = run_host_tests("tests.host.settings_authuser", "tests/host/authuser_e2e.py")
    assert result.returncode == 0, result.stdout[-6000:] + result.stderr[-3000:]
    assert "1 passed" in result.stdout
