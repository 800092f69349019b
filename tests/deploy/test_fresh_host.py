"""The wheel in a new environment, in a project nobody has seen: a venv gets the locked
dependencies and the wheel built from this repository (nothing of the repository on its
path), `django-admin startproject` makes a project, the README's "Add Notifier to your
project" lines are added to it as they are written there, and the project migrates a fresh
PostgreSQL database, runs a worker of its own Celery app, and sends: notify() from the
project's shell reaches the inbox, the email backend and the SMS sandbox."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import textwrap
import uuid
from collections.abc import Iterator
from pathlib import Path

import psycopg2
import pytest
from django.conf import settings
from redis import Redis

from notifier.queues import ALL_QUEUES

ROOT = Path(__file__).resolve().parents[2]
SECTION = "## Add Notifier to your project"

pytestmark = pytest.mark.integration


def readme_blocks() -> list[str]:
    """The python blocks of the README's host section, in order, dedented."""
    readme = (ROOT / "README.md").read_text()
    section = readme.split(SECTION, 1)[1].split("\n## ", 1)[0]
    return [textwrap.dedent(block) for block in re.findall(r"```python\n(.*?)```", section, re.S)]


# The project's own settings (manage.py names them), none of the suite's.
# Nor the suite's broker (Celery reads CELERY_BROKER_URL from the environment before any
# setting): the suite's own worker, alive for the whole session, would take this project's tasks.
CLEAN_ENV = {
    key: value
    for key, value in os.environ.items()
    if key not in ("DJANGO_SETTINGS_MODULE", "CELERY_BROKER_URL", "REDIS_URL")
}


def run(argv: list[str | Path], **kwargs: object) -> subprocess.CompletedProcess[str]:
    result = subprocess.run(
        [str(arg) for arg in argv],
        env=CLEAN_ENV,
        capture_output=True,
        text=True,
        timeout=900,
        check=False,
        **kwargs,  # type: ignore[arg-type]
    )
    assert result.returncode == 0, f"{argv}:\n{result.stdout[-4000:]}\n{result.stderr[-4000:]}"
    return result


@pytest.fixture(scope="module")
def venv(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A new venv with the locked dependencies and the wheel, and nothing of the repository."""
    base = tmp_path_factory.mktemp("fresh")
    wheels = base / "wheel"
    run([sys.executable, "-m", "pip", "wheel", ROOT, "--no-deps", "-q", "-w", wheels])
    [wheel] = wheels.glob("notifier-*.whl")
    env = base / "venv"
    run([sys.executable, "-m", "venv", env])
    pip = [env / "bin" / "python", "-m", "pip", "install", "-q", "--disable-pip-version-check"]
    run([*pip, "--require-hashes", "-r", ROOT / "requirements" / "deploy.txt"])
    run([*pip, "--no-deps", wheel])
    return env


@pytest.fixture(scope="module")
def database() -> Iterator[str]:
    name = f"notifier_fresh_{uuid.uuid4().hex[:8]}"
    db = settings.DATABASES["default"]
    connection = psycopg2.connect(
        dbname="postgres", user=db["USER"], host=db["HOST"], port=db["PORT"]
    )
    connection.autocommit = True
    with connection.cursor() as cursor:
        cursor.execute(f"CREATE DATABASE {name}")
    try:
        yield name
    finally:
        with connection.cursor() as cursor:
            cursor.execute(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)")
        connection.close()


@pytest.fixture(scope="module")
def project(venv: Path, database: str, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """`startproject shopsite`, with the README's lines added where it says to add them."""
    site = tmp_path_factory.mktemp("site")
    run([venv / "bin" / "django-admin", "startproject", "shopsite", site])
    apps_and_settings, url_line, celery_app = readme_blocks()
    package = site / "shopsite"
    db = settings.DATABASES["default"]
    # The suite's Redis server, on a database of its own: no queued task of another test's
    # reaches this project's worker.
    redis = re.sub(r"/\d+$", "/11", settings.NOTIFIER_REDIS_URL)
    Redis.from_url(redis).flushdb()  # nothing queued by an earlier run
    own_apps = "*_startproject_apps,"
    with (package / "settings.py").open("a") as out:
        out.write("\n_startproject_apps = INSTALLED_APPS\n")
        out.write(apps_and_settings.replace("# ... your apps ...", own_apps))
        out.write(
            textwrap.dedent(
                f"""
                CELERY_BROKER_URL = NOTIFIER_REDIS_URL = {redis!r}
                DATABASES = {{"default": {{
                    "ENGINE": "django.db.backends.postgresql", "NAME": {database!r},
                    "USER": {db["USER"]!r}, "HOST": {db["HOST"]!r}, "PORT": {str(db["PORT"])!r},
                }}}}
                EMAIL_BACKEND = "django.core.mail.backends.filebased.EmailBackend"
                EMAIL_FILE_PATH = {str(site / "mail")!r}
                EMAIL_TIMEOUT = 10
                """
            )
        )
    urls = (package / "urls.py").read_text()
    urls = urls.replace("from django.urls import path", "from django.urls import include, path")
    (package / "urls.py").write_text(urls + f"\nurlpatterns += [{url_line.strip()}]\n")
    (package / "celery.py").write_text(
        'import os\n\nfrom celery import Celery\n\nos.environ.setdefault("DJANGO_SETTINGS_MODULE",'
        ' "shopsite.settings")\n\n' + celery_app
    )
    (package / "__init__.py").write_text("from shopsite.celery import app as celery_app\n")
    run([venv / "bin" / "python", "manage.py", "migrate", "--noinput"], cwd=site)
    return site


@pytest.fixture
def worker(venv: Path, project: Path) -> Iterator[None]:
    name = f"fresh-{uuid.uuid4().hex[:8]}@localhost"
    argv = [venv / "bin" / "celery", "-A", "shopsite", "worker", "-n", name, "-c", "2"]
    argv += ["-Q", ",".join(ALL_QUEUES), "-l", "warning", "--without-gossip", "--without-mingle"]
    process = subprocess.Popen(
        [str(a) for a in argv], cwd=project, env=CLEAN_ENV, start_new_session=True
    )
    try:
        yield
    finally:
        os.killpg(process.pid, signal.SIGTERM)
        try:
            process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, signal.SIGKILL)


SEND = """
import json, time
from django.contrib.auth import get_user_model
from notifier.api import notify
from notifier.models import Delivery, recipient_update
from notifier.status import TERMINAL

mei = get_user_model().objects.create_user("mei", "mei@example.com", "a-long-password")
recipient_update(mei, phone="+8613800138000", quiet_hours_enabled=False, time_zone="UTC")
message = notify(mei, "order.shipped", {"order_number": "A1042", "carrier": "SF Express",
                 "eta": "Tuesday", "tracking_url": "https://shop.example.com/t/A1042"})
deadline = time.monotonic() + 120
while time.monotonic() < deadline:
    rows = dict(Delivery.objects.filter(message=message).values_list("channel", "status"))
    if rows and all(status in TERMINAL for status in rows.values()):
        break
    time.sleep(0.2)
print("RESULT " + json.dumps(rows))
"""


def test_a_fresh_project_with_the_wheel_migrates_and_sends(venv, project, worker):
    # Nothing of the repository: the apps come from the venv's site-packages.
    where = run(
        [venv / "bin" / "python", "-c", "import notifier, campaigns; print(notifier.__file__)"],
        cwd=project,
    ).stdout
    assert "site-packages" in where and str(ROOT) not in where

    out = run([venv / "bin" / "python", "manage.py", "shell", "-c", SEND], cwd=project).stdout

    [result] = [line for line in out.splitlines() if line.startswith("RESULT ")]
    statuses = json.loads(result.removeprefix("RESULT "))
    assert statuses == {"inapp": "sent", "email": "sent", "sms": "sent", "push": "suppressed"}
    mail = "".join(path.read_text() for path in (project / "mail").iterdir())
    assert "To: mei@example.com" in mail and "A1042" in mail
