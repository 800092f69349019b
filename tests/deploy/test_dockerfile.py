"""deploy/Dockerfile, read as text: what it copies exists, and every module the deployed
commands name (gunicorn's WSGI module, uvicorn's ASGI one, celery's -A app) is in the image."""

from __future__ import annotations

import re
from pathlib import Path

from tests.deploy.test_compose import SERVICES

ROOT = Path(__file__).resolve().parents[2]
DOCKERFILE = (ROOT / "deploy" / "Dockerfile").read_text()


def copied() -> list[str]:
    sources = []
    for line in DOCKERFILE.splitlines():
        match = re.match(r"COPY\s+(.+)\s+\S+$", line.strip())
        if match:
            sources += match[1].split()
    return sources


def test_everything_the_image_copies_exists():
    missing = [source for source in copied() if not (ROOT / source).exists()]
    assert not missing, f"the Dockerfile copies what the repository no longer has: {missing}"


def test_the_modules_the_deployed_commands_name_are_in_the_image():
    commands = [[str(part) for part in s.get("command", [])] for s in SERVICES.values()]
    cmd = re.search(r"^CMD (\[.*\])$", DOCKERFILE, re.M)
    assert cmd
    commands.append(re.findall(r'"([^"]+)"', cmd[1]))
    packages = set()
    for argv in commands:
        if argv[:1] in (["gunicorn"], ["uvicorn"]):
            packages.add(argv[1].split(".")[0])
        if argv[:2] == ["celery", "-A"]:
            packages.add(argv[2].split(".")[0])
    assert packages == {"notifier_site"}
    top_level = {Path(source).parts[0] for source in copied()}
    assert packages <= top_level
    assert "PYTHONPATH=/app" in DOCKERFILE  # the site is imported from the working directory
