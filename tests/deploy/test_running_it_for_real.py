"""The README's "Running it for real", run as a newcomer would paste it on a fresh machine.

Its ```sh blocks run in order in one bash, in an empty directory beside the checkout's files
(symlinks, so `manage.py`, `requirements/` and `.venv/bin/...` are where the README says), with
only PATH, HOME and LANG from here, against a new PostgreSQL database and a Redis database of
its own. The convention the README states next to the blocks:

- the values of variables the blocks `export` that name this machine's services (PGHOST,
  PGPORT, PGUSER, PGDATABASE, REDIS_URL) are replaced by the test's; every other line and value
  runs as written, NOTIFIER_SITE_URL included;
- lines marked `# install` are skipped and `.venv` is the venv running this test, unless
  NOTIFIER_TESTS_README_INSTALL=1 (minutes: a new venv from requirements/deploy.txt);
- lines marked `# long-running` start in the background, each with `setsid` in a process group
  of its own, output to a log file; the test stops them at the end.

Set from here besides (the machine, not the README): DJANGO_STATIC_ROOT inside the directory
(settings' default is the checkout's var/static, which symlinks would not keep apart),
GUNICORN_CMD_ARGS with a free port (gunicorn's default 127.0.0.1:8000 may be taken), and one
process per worker pool (CELERY_WORKER_CONCURRENCY, celery's own variable; a worker line's own
`-c` wins).

Then, with the variables the blocks left exported: the site answers /health/ready/ (PostgreSQL,
Redis, and beat's release-held job run by the maintenance worker), a password notice and a
marketing message sent from `manage.py shell -c` are delivered by the workers with links that
start with the README's NOTIFIER_SITE_URL, every worker answers a ping, the delivery counters
reach the metrics directory, and SIGTERM stops every process group with nothing left behind.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import shlex
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import psutil
import psycopg2
import pytest
from django.conf import settings
from prometheus_client.multiprocess import MultiProcessCollector
from redis import Redis

from notifier.operations.checks import site_url_problem

ROOT = Path(__file__).resolve().parents[2]
README = ROOT / "README.md"
SECTION = "## Running it for real"
SHELLS = ("sh", "bash", "shell")
LONG_RUNNING = re.compile(r"^(?P<command>.*?)\s+#.*\blong-running\b")
INSTALL = re.compile(r"#\s*install\s*$")
INSTALL_TOO = os.environ.get("NOTIFIER_TESTS_README_INSTALL") == "1"
# Not symlinked into the run's directory: what a fresh checkout does not have.
NOT_FRESH = re.compile(r"^(\.venv.*|var|\.git|build|dist|.*\.egg-info|\..*_cache|__pycache__)$")
DATABASE = "notifier_realrun"
# The suite's Redis server, on a database of its own: the suite's session worker (its own
# database) must not take these processes' tasks, nor these processes the suite's.
REDIS_DB = 12
WORKERS = {"tx", "bulk", "maint", "webhooks"}
SALE_URL = "https://shop.example.com/winter-sale"

pytestmark = pytest.mark.integration


@dataclass
class Block:
    line: int  # where its first line is in README.md
    code: str


def section_blocks(text: str) -> list[Block]:
    """The shell blocks of the section (its subsections too) up to the next `## ` heading."""
    lines = text.splitlines()
    start = lines.index(SECTION)
    blocks: list[Block] = []
    index = start + 1
    while index < len(lines) and not lines[index].startswith("## "):
        fence = re.match(r"```(\w*)\s*$", lines[index])
        if fence:
            end = lines.index("```", index + 1)
            if fence[1] in SHELLS:
                blocks.append(Block(index + 2, "\n".join(lines[index + 1 : end])))
            index = end
        index += 1
    return blocks


def rewrite_export(line: str, overrides: dict[str, str]) -> str:
    """`export A=1 B=2`, with the values of the names in `overrides` replaced."""
    words = line.split()
    for position, word in enumerate(words[1:], start=1):
        if word.startswith("#"):
            break
        name = word.split("=", 1)[0]
        if name in overrides:
            words[position] = f"{name}={shlex.quote(overrides[name])}"
    return " ".join(words)


PRELUDE = r"""
set -euo pipefail
readme_start() {  # where, then the command: in the background, in a process group of its own
  local where=$1; shift
  setsid "$@" > "$README_LOGS/$where.log" 2>&1 < /dev/null &
  echo "$! $where" >> "$README_PIDS"
}
"""


def script(blocks: list[Block], overrides: dict[str, str], *, install: bool) -> str:
    out = [PRELUDE]
    for block in blocks:
        continued = False
        for number, line in enumerate(block.code.splitlines(), start=block.line):
            where = f"README.md:{number}"
            if not continued:  # which line failed, in the output
                out.append(f"echo '+ {where}' >&2")
            continued = line.endswith("\\")
            if INSTALL.search(line) and not install:
                continue
            long_running = LONG_RUNNING.match(line)
            if long_running:
                out.append(f"readme_start {where.replace(':', '-')} {long_running['command']}")
            elif line.startswith("export "):
                out.append(rewrite_export(line, overrides))
            else:
                out.append(line)
    out.append('env -0 > "$README_ENV"')
    return "\n".join(out)


def test_the_section_has_the_steps_a_fresh_machine_needs() -> None:
    code = "\n".join(block.code for block in section_blocks(README.read_text()))
    for needed in (
        "requirements/deploy.txt",
        "createdb",
        "export NOTIFIER_SITE_URL=https://",
        "PROMETHEUS_MULTIPROC_DIR",
        'mkdir -p "$PROMETHEUS_MULTIPROC_DIR"',
        "manage.py migrate",
        "manage.py collectstatic --noinput",
        "gunicorn notifier_site.wsgi",
        "beat --scheduler",
    ):
        assert needed in code, f"the section's commands lack {needed!r}"
    started = [line for line in code.splitlines() if LONG_RUNNING.match(line)]
    names = {m[1] for line in started if (m := re.search(r" -n (\w+)@%h", line))}
    assert names == WORKERS and len(started) == len(WORKERS) + 2, started  # + gunicorn, beat


def test_the_runner_rewrites_exports_and_starts_long_running_lines() -> None:
    markdown = "\n".join(
        [
            SECTION,
            "```sh",
            "export PGHOST=127.0.0.1 PGDATABASE=notifier KEEP=$PWD/x",
            "pip install x   # install",
            "run-it --flag a@%h   # long-running; exactly one",
            "```",
            "## Next",
            "```sh",
            "not-this",
            "```",
        ]
    )
    [block] = section_blocks(markdown)
    text = script([block], {"PGDATABASE": "other db"}, install=False)
    assert "export PGHOST=127.0.0.1 PGDATABASE='other db' KEEP=$PWD/x" in text
    assert "pip install" not in text
    assert "readme_start README.md-5 run-it --flag a@%h\n" in text
    assert "not-this" not in text
    assert "pip install x   # install" in script([block], {}, install=True)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@pytest.fixture
def database() -> Iterator[str]:
    db = settings.DATABASES["default"]
    connection = psycopg2.connect(
        dbname="postgres", user=db["USER"], host=db["HOST"], port=db["PORT"]
    )
    connection.autocommit = True
    drop = f"DROP DATABASE IF EXISTS {DATABASE} WITH (FORCE)"
    with connection.cursor() as cursor:
        cursor.execute(drop)  # left by a run that was killed
    try:
        yield DATABASE
    finally:
        with connection.cursor() as cursor:
            cursor.execute(drop)
        connection.close()


@pytest.fixture
def redis_url() -> Iterator[str]:
    url = re.sub(r"/\d+$", f"/{REDIS_DB}", settings.NOTIFIER_REDIS_URL)
    client = Redis.from_url(url)
    client.flushdb()
    try:
        yield url
    finally:
        client.flushdb()


def own_group(pid: int) -> bool:
    try:
        return os.getpgid(pid) == pid
    except ProcessLookupError:
        return False


def groups_alive(pgids: set[int]) -> list[str]:
    alive = []
    for process in psutil.process_iter(["pid", "name", "status"]):
        try:
            if os.getpgid(process.pid) in pgids and process.status() != psutil.STATUS_ZOMBIE:
                alive.append(f"{process.pid} {process.name()}")
        except (ProcessLookupError, psutil.Error):
            continue
    return alive


def wait_for(
    condition: Callable[[], object],
    *,
    timeout: float,
    what: str,
    diagnose: Callable[[], str] = lambda: "",
) -> object:
    deadline = time.monotonic() + timeout
    while True:
        value = condition()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {what}\n{diagnose()}")
        time.sleep(0.2)


def get_status(url: str) -> int:
    try:
        with urllib.request.urlopen(url, timeout=5) as response:
            return int(response.status)
    except urllib.error.HTTPError as error:
        return int(error.code)
    except OSError:
        return 0


SEND = r"""
import json, time
from django.contrib.auth import get_user_model
from notifier.api import notify
from notifier.models import Delivery, recipient_update
from notifier.services.preferences import consent_give
from notifier.status import TERMINAL
from notifier_site.celery import app

mei = get_user_model().objects.create_user("mei", "mei@example.com", "a-long-password")
recipient_update(mei, quiet_hours_enabled=False, time_zone="UTC")
consent_give(user_id=mei.pk, channel="email", source="signup_form", wording="Send me offers")
notify(mei, "account.password_changed", {"changed_at": "Monday 09:00"})
notify(mei, "promo.flash_sale", {"sale_name": "Winter sale", "starts_at": "tomorrow",
       "headline": "Half price", "sale_url": SALE_URL})
deadline = time.monotonic() + 40
while time.monotonic() < deadline:
    rows = list(Delivery.objects.filter(user=mei).values("message__type__key", "channel",
                                                          "status", "content"))
    # prepare writes a message's deliveries together: both messages with rows, all finished
    types = {row["message__type__key"] for row in rows}
    if len(types) == 2 and all(row["status"] in TERMINAL for row in rows):
        break
    time.sleep(0.2)
pongs = sorted(name.split("@")[0] for reply in app.control.ping(timeout=3.0) for name in reply)
print("RESULT " + json.dumps({"deliveries": rows, "pongs": pongs}))
""".replace("SALE_URL", repr(SALE_URL))


def test_the_section_runs_word_for_word(database: str, redis_url: str, tmp_path: Path) -> None:
    run_dir, logs = tmp_path / "box", tmp_path / "logs"
    run_dir.mkdir()
    logs.mkdir()
    for entry in ROOT.iterdir():
        if not NOT_FRESH.match(entry.name) and not (entry.name == ".venv" and INSTALL_TOO):
            (run_dir / entry.name).symlink_to(entry)
    if not INSTALL_TOO:
        (run_dir / ".venv").symlink_to(Path(sys.prefix))
    db = settings.DATABASES["default"]
    overrides = {
        "PGHOST": str(db["HOST"]),
        "PGPORT": str(db["PORT"] or 5432),
        "PGUSER": str(db["USER"]),
        "PGDATABASE": database,
        "REDIS_URL": redis_url,
    }
    port = free_port()
    pids_file, env_file = tmp_path / "pids", tmp_path / "env"
    pids_file.touch()
    bash_env = {
        "PATH": os.environ["PATH"],
        "HOME": str(tmp_path),
        "LANG": "C.UTF-8",
        "DJANGO_STATIC_ROOT": str(run_dir / "var" / "static"),
        "GUNICORN_CMD_ARGS": f"--bind 127.0.0.1:{port}",
        "CELERY_WORKER_CONCURRENCY": "1",
        "README_LOGS": str(logs),
        "README_PIDS": str(pids_file),
        "README_ENV": str(env_file),
    }
    text = script(section_blocks(README.read_text()), overrides, install=INSTALL_TOO)

    def started() -> list[tuple[int, str]]:
        return [(int(p), where) for p, where in map(str.split, pids_file.read_text().splitlines())]

    def tails() -> str:
        return "\n".join(
            f"--- {log.name}\n{log.read_text()[-2000:]}" for log in sorted(logs.iterdir())
        )

    sending: subprocess.Popen[str] | None = None
    try:
        ran = subprocess.run(
            ["bash", "-c", text],
            cwd=run_dir,
            env=bash_env,
            stdin=subprocess.DEVNULL,
            capture_output=True,
            text=True,
            timeout=900 if INSTALL_TOO else 120,
        )
        assert ran.returncode == 0, f"{ran.stderr[-4000:]}\n{ran.stdout[-2000:]}\n{tails()}"
        # The README's settings pass the site URL check, and migrate (which runs every
        # check) said nothing about it.
        assert "notifier.W020" not in ran.stdout + ran.stderr
        env = dict(item.split("=", 1) for item in env_file.read_text().split("\0") if "=" in item)
        env = {k: v for k, v in env.items() if not k.startswith("README_")}
        site = env["NOTIFIER_SITE_URL"].rstrip("/")
        assert site_url_problem(site) is None, site
        # A background line has its own group once setsid has run (it may not have yet).
        wait_for(
            lambda: all(own_group(pid) for pid, _ in started()),
            timeout=10,
            what="each long-running line in a process group of its own",
        )
        assert len(started()) == len(WORKERS) + 2

        # Sent while the rest comes up: it waits for its deliveries to finish.
        sending = subprocess.Popen(
            [".venv/bin/python", "manage.py", "shell", "-c", SEND],
            cwd=run_dir,
            env=env,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        # Web, PostgreSQL, Redis, beat and the maintenance worker that runs release-held.
        ready = f"http://127.0.0.1:{port}/health/ready/"
        wait_for(lambda: get_status(ready) == 200, timeout=60, what=f"{ready} 200", diagnose=tails)

        stdout, stderr = sending.communicate(timeout=90)
        assert sending.returncode == 0, f"{stderr[-4000:]}\n{tails()}"
        [line] = [out for out in stdout.splitlines() if out.startswith("RESULT ")]
        result = json.loads(line.removeprefix("RESULT "))
        statuses = {
            (row["message__type__key"], row["channel"]): row["status"]
            for row in result["deliveries"]
        }
        # Through the transactional and the bulk lane; no phone number, no push device.
        sent_ones = {key for key, status in statuses.items() if status == "sent"}
        assert sent_ones == {
            ("account.password_changed", "email"),
            ("account.password_changed", "inapp"),
            ("promo.flash_sale", "email"),
            ("promo.flash_sale", "inapp"),
        }, f"{statuses}\n{tails()}"
        assert set(statuses.values()) == {"sent", "suppressed"}, statuses
        assert set(result["pongs"]) == WORKERS, result["pongs"]

        # Every link the site made (not the caller's sale_url) is on the README's public origin.
        contents = json.dumps([row["content"] for row in result["deliveries"]])
        links = set(re.findall(r"https?://[^\s\"'<>\\]+", contents)) - {SALE_URL}
        assert any("/unsubscribe/" in link for link in links), links
        assert any(link.startswith(f"{site}/account/reset/") for link in links), links
        assert all(link.startswith(f"{site}/") for link in links), links

        # The workers' pool processes wrote their counters into the shared directory.
        metrics_dir = Path(env["PROMETHEUS_MULTIPROC_DIR"])
        assert metrics_dir.is_relative_to(run_dir), metrics_dir
        sent_total = sum(
            sample.value
            for metric in MultiProcessCollector(None, path=str(metrics_dir)).collect()
            for sample in metric.samples
            if sample.name == "notifier_deliveries_total" and sample.labels["status"] == "sent"
        )
        assert sent_total >= 4, sorted(p.name for p in metrics_dir.iterdir())

        # A clean stop: SIGTERM to each main process; every process of every group exits.
        pgids = {pid for pid, _ in started()}
        for pid in pgids:
            os.kill(pid, signal.SIGTERM)
        wait_for(
            lambda: not groups_alive(pgids),
            timeout=30,
            what="every process to exit after SIGTERM",
            diagnose=lambda: "\n".join(groups_alive(pgids)),
        )
        crashed = [log.name for log in logs.iterdir() if "Traceback" in log.read_text()]
        assert not crashed, tails()
    finally:
        if sending is not None and sending.poll() is None:
            sending.kill()
            sending.wait()
        for pid, _ in started():
            # The process itself too: one that never reached setsid has no group of its own.
            for kill in (os.kill, os.killpg):
                with contextlib.suppress(ProcessLookupError):  # gone: it stopped cleanly
                    kill(pid, signal.SIGKILL)
