"""The environment a host project's own pytest process runs in (tests/test_host_*.py)."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

# The suite keeps a worker of its own on its Redis database for the whole session: a host's
# tasks published there would be taken by it and run against the suite's database.
HOST_REDIS_DB = 10
ROOT = Path(__file__).resolve().parents[2]


def host_env() -> dict[str, str]:
    """None of the suite's Django settings or broker; the suite's Redis server, on a database
    of the host's own."""
    env = {
        key: value
        for key, value in os.environ.items()
        if key not in ("DJANGO_SETTINGS_MODULE", "CELERY_BROKER_URL")
    }
    base = os.environ.get("REDIS_URL", "redis://127.0.0.1:6379/15")
    env["REDIS_URL"] = re.sub(r"/\d+$", f"/{HOST_REDIS_DB}", base)
    return env


def run_host_tests(settings_module: str, test_file: str) -> subprocess.CompletedProcess[str]:
    """`test_file` in a pytest process of its own, on a host project's settings (none of this
    suite's settings or fixtures apply there: --confcutdir stops at tests/host)."""
    return subprocess.run(
        [
            sys.executable,
            "-m",
            "pytest",
            "-p",
            "no:cacheprovider",
            "-q",
            f"--ds={settings_module}",
            "--confcutdir=tests/host",
            "--create-db",
            test_file,
        ],
        cwd=ROOT,
        env=host_env(),
        capture_output=True,
        text=True,
        timeout=900,
        check=False,
    )
