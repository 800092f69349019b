"""A product that kept Django's own user model installs Notifier and sends through it:
tests/host/authuser_e2e.py, run in a pytest process of its own on that project's settings
(tests/host/settings_authuser.py), where none of this suite's settings or fixtures apply."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from tests.host.env import host_env

ROOT = Path(__file__).resolve().parent.parent


def test_a_project_on_djangos_own_user_model_sends_through_notifier():
    env = host_env()
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "pytest",
            "-p",
            "no:cacheprovider",
            "-q",
            "--ds=tests.host.settings_authuser",
            "--confcutdir=tests/host",
            "--create-db",
            "tests/host/authuser_e2e.py",
        ],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
        check=False,
    )
    assert result.returncode == 0, result.stdout[-6000:] + result.stderr[-3000:]
    assert "1 passed" in result.stdout
