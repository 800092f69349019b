"""The environment a host project's own pytest process runs in (tests/test_host_*.py)."""

from __future__ import annotations

import os
import re

# The suite keeps a worker of its own on its Redis database for the whole session: a host's
# tasks published there would be taken by it and run against the suite's database.
HOST_REDIS_DB = 10


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
