"""Production HTTPS settings: one switch makes `manage.py check --deploy` clean but for HSTS."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path


def test_https_settings_leave_the_deploy_check_with_only_hsts_to_decide():
    """DJANGO_HTTPS=true makes cookies secure and redirects to https: `check --deploy` is left
    with HSTS, which stays the operator's explicit choice (DJANGO_HSTS_SECONDS)."""
    root = Path(__file__).resolve().parents[2]
    env = {
        **os.environ,
        "DJANGO_SETTINGS_MODULE": "notifier_site.settings",
        "DJANGO_HTTPS": "true",
        "DJANGO_SECRET_KEY": "x" * 60 + "-not-the-default-and-long-enough-for-the-check",
    }
    result = subprocess.run(
        [sys.executable, "manage.py", "check", "--deploy"],
        cwd=root,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    warnings = {w for w in ("W004", "W008", "W009", "W012", "W016") if w in result.stderr}
    assert warnings == {"W004"}, result.stderr
