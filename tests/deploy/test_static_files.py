"""The deployed web serves the admin's static files: collectstatic as the image build runs it,
then a real `gunicorn notifier.wsgi` with DEBUG off (tests/gunicorn.py), as compose and
Kubernetes run it. Django's test server serves /static/ itself and would prove nothing."""

from __future__ import annotations

import gzip
import os
import re
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.gunicorn import ROOT, GunicornServer

pytestmark = pytest.mark.django_db(transaction=True)


@pytest.fixture(scope="module")
def static_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("static")
    subprocess.run(
        [sys.executable, "manage.py", "collectstatic", "--noinput", "-v", "0"],
        cwd=ROOT,
        env={
            **os.environ,
            "DJANGO_SETTINGS_MODULE": "tests.settings",
            "DJANGO_STATIC_ROOT": str(root),
        },
        check=True,
        timeout=120,
    )
    return root


@pytest.fixture(scope="module")
def server(django_db_setup: None, static_root: Path) -> Iterator[GunicornServer]:
    running = GunicornServer({"DJANGO_STATIC_ROOT": str(static_root)})
    try:
        running.wait_ready()
        yield running
    finally:
        running.stop()


def test_the_admin_stylesheet_and_script_are_served_as_collected(server, static_root):
    login = server.request("GET", "/admin/login/")
    assert login.status == 200, server.tail()
    linked = re.findall(r'(?:href|src)="(/static/admin/[^"]+)"', login.text)
    assert "/static/admin/css/base.css" in linked

    css = server.request("GET", "/static/admin/css/base.css")
    assert css.status == 200, server.tail()
    assert css.header("Content-Type").startswith("text/css")
    assert css.body == (static_root / "admin/css/base.css").read_bytes()
    assert "max-age" in css.header("Cache-Control")

    script = server.request("GET", "/static/admin/js/core.js")
    assert script.status == 200
    assert script.header("Content-Type").startswith(("text/javascript", "application/javascript"))
    assert script.body == (static_root / "admin/js/core.js").read_bytes()


def test_every_file_the_login_page_links_is_served(server):
    login = server.request("GET", "/admin/login/")
    linked = re.findall(r'(?:href|src)="(/static/[^"]+)"', login.text)

    assert linked
    assert {path: server.request("GET", path).status for path in linked} == dict.fromkeys(
        linked, 200
    )


def test_a_client_that_takes_gzip_gets_the_gzipped_copy(server, static_root):
    answer = server.request(
        "GET", "/static/admin/css/base.css", headers={"Accept-Encoding": "gzip"}
    )

    assert answer.status == 200
    assert answer.header("Content-Encoding") == "gzip"
    assert gzip.decompress(answer.body) == (static_root / "admin/css/base.css").read_bytes()


def test_a_file_that_was_not_collected_is_a_404(server):
    assert server.request("GET", "/static/admin/css/no-such-file.css").status == 404
