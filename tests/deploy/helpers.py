"""Reading the deploy files: commands, queues and probe commands, shared by the deploy tests."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import yaml

from notifier.operations.probe import main as probe_main

DEPLOY = Path(__file__).resolve().parent.parent.parent / "deploy"
# Names whose values are secrets wherever they appear.
# A token's lifetime or rate (NOTIFIER_APP_TOKEN_MAX_AGE_S) is not a secret; the token is.
SECRET_NAME = re.compile(
    r"SECRET|PASSWORD|TOKEN(?!_MAX_AGE|_RATE)|_KEY$|DSN|AUTH|CREDENTIALS", re.IGNORECASE
)
# A URL with a password in it: scheme://user:password@host
URL_WITH_PASSWORD = re.compile(r"[a-z+]+://[^\s:/@\"']*:[^\s@/\"'$]+@")


def load_all(path: Path) -> list[dict[str, Any]]:
    return [doc for doc in yaml.safe_load_all(path.read_text()) if doc]


def option(argv: list[str], *names: str) -> str | None:
    """The value of a command-line option given as `-Q a,b` or `--queues=a,b`."""
    for index, arg in enumerate(argv):
        for name in names:
            if arg == name and index + 1 < len(argv):
                return argv[index + 1]
            if arg.startswith(f"{name}="):
                return arg.split("=", 1)[1]
    return None


def is_worker(argv: list[str]) -> bool:
    return argv[:3] == ["celery", "-A", "notifier_site"] and "worker" in argv


def is_beat(argv: list[str]) -> bool:
    return argv[:3] == ["celery", "-A", "notifier_site"] and "beat" in argv


def queues_of(argv: list[str]) -> list[str]:
    value = option(argv, "-Q", "--queues")
    assert value, f"a worker without -Q consumes the default queue only: {argv}"
    return value.split(",")


def probe_command_is_valid(argv: list[str], tmp_path: Path) -> str:
    """Run an exec probe's command through notifier.operations.probe's own parser against an empty
    directory: a valid command answers 'unhealthy' with a reason (exit 1); a wrong role or
    check would make argparse exit 2."""
    assert argv[:3] == ["python", "-m", "notifier.operations.probe"], argv
    code = probe_main([*argv[3:], "--dir", str(tmp_path)])
    assert code == 1
    return argv[3]
