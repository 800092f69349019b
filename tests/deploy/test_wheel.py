"""The wheel a host installs: built from the repository, it holds the three apps with their
migrations, templates, static files and `py.typed`, and nothing of the stand-alone site or the
tests."""

from __future__ import annotations

import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
APPS = ("notifier", "channels", "campaigns")
# Besides Python modules: what a host needs at run time from each app's folder.
DATA_FOLDERS = ("templates", "static", "migrations", "locale")


@pytest.fixture(scope="module")
def wheel_files(tmp_path_factory: pytest.TempPathFactory) -> set[str]:
    out = tmp_path_factory.mktemp("wheel")
    subprocess.run(
        [
            sys.executable,
            "-m",
            "pip",
            "wheel",
            str(ROOT),
            "--no-deps",
            "--quiet",
            "--wheel-dir",
            str(out),
        ],
        check=True,
        capture_output=True,
        timeout=300,
    )
    [wheel] = out.glob("notifier-*.whl")
    with zipfile.ZipFile(wheel) as archive:
        return set(archive.namelist())


def repository_files(app: str, folder: str) -> set[str]:
    base = ROOT / app / folder
    return {
        path.relative_to(ROOT).as_posix()
        for path in base.rglob("*")
        if path.is_file() and "__pycache__" not in path.parts
    }


def test_the_wheel_holds_every_template_static_file_and_migration_of_the_apps(wheel_files):
    for app in APPS:
        for folder in DATA_FOLDERS:
            missing = repository_files(app, folder) - wheel_files
            assert not missing, f"left out of the wheel: {sorted(missing)[:10]}"
    # The message templates, which used to live outside the package.
    assert "notifier/templates/notifications/order.shipped/email.subject.txt" in wheel_files
    # The end users' pages in Chinese, compiled: a host needs no gettext tools.
    assert "notifier/locale/zh_Hans/LC_MESSAGES/django.mo" in wheel_files


def test_the_wheel_says_the_apps_are_typed(wheel_files):
    assert {f"{app}/py.typed" for app in APPS} <= wheel_files


def test_the_wheel_holds_neither_the_site_nor_the_tests(wheel_files):
    tops = {name.split("/")[0] for name in wheel_files}
    assert tops == {*APPS, next(t for t in tops if t.endswith(".dist-info"))}
