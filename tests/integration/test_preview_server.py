"""Behind a real gunicorn (sync worker, DEBUG off), a preview of copy that burns CPU holds its
web worker no longer than the preview's budget: /health/live/, queued behind it on the same
worker, answers within seconds instead of waiting out the render (the attack measured 30 s,
until gunicorn killed the worker).
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator

import pytest
from django.conf import settings
from django.test import Client

from campaigns.models import Campaign, Segment, StepVariant, VariantTemplate
from campaigns.services.lifecycle import campaign_create
from notifier.models import NotificationType
from notifier.roles import roles_sync
from tests.conftest import ROOT, wait_until
from tests.factories import staff_member
from tests.integration.rig import free_port

pytestmark = [pytest.mark.integration, pytest.mark.django_db(transaction=True)]

BUDGET_S = 1.0
# Loops over range inside loops over range: about ten seconds of rendering if nothing stops it.
BURNING = "{% for i in range(100000) %}{% for j in range(2500) %}{% endfor %}{% endfor %}x"


@pytest.fixture
def gunicorn() -> Iterator[int]:
    """One sync worker, as deployed but one: a request it is busy with blocks the next."""
    port = free_port()
    db = settings.DATABASES["default"]
    env = {
        **os.environ,
        "DJANGO_SETTINGS_MODULE": "tests.settings",
        "DJANGO_DEBUG": "false",
        "DATABASE_URL": f"postgres://{db['USER']}@{db['HOST'] or '127.0.0.1'}:"
        f"{db['PORT'] or 5432}/{db['NAME']}",
        "NOTIFIER_PREVIEW_BUDGET_S": str(BUDGET_S),
    }
    process = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "gunicorn",
            "notifier_site.wsgi",
            "--bind",
            f"127.0.0.1:{port}",
            "--workers",
            "1",
            "--timeout",
            "60",
        ],
        cwd=ROOT,
        env=env,
        start_new_session=True,
        stderr=subprocess.DEVNULL,
    )
    try:
        wait_until(lambda: _answers(port), timeout=60, message="gunicorn to answer")
        yield port
    finally:
        process.terminate()
        process.wait(timeout=30)


def _answers(port: int) -> bool:
    try:
        return request(port, "/health/live/").startswith(b"HTTP/1.1 200")
    except OSError:
        return False


def send(port: int, path: str, cookie: str = "") -> socket.socket:
    """Connect and send a GET; the response is read later (`receive`)."""
    sock = socket.create_connection(("127.0.0.1", port), timeout=60)
    headers = f"Cookie: {settings.SESSION_COOKIE_NAME}={cookie}\r\n" if cookie else ""
    sock.sendall(
        f"GET {path} HTTP/1.1\r\nHost: 127.0.0.1\r\n{headers}Connection: close\r\n\r\n".encode()
    )
    return sock


def receive(sock: socket.socket) -> bytes:
    chunks = []
    with sock:
        while chunk := sock.recv(65536):
            chunks.append(chunk)
    return b"".join(chunks)


def request(port: int, path: str, cookie: str = "") -> bytes:
    return receive(send(port, path, cookie))


def burning_campaign() -> tuple[Campaign, str]:
    """A campaign whose first step's in-app copy burns CPU, and a marketer's session."""
    roles_sync()
    marketer = staff_member("Marketer")
    campaign = campaign_create(
        name="Double 11",
        category=NotificationType.objects.get(pk="promo.flash_sale"),
        created_by=marketer,
        segment=Segment.objects.create(name=uuid.uuid4().hex),
        event_at=None,
        channels=["inapp", "email"],
        variables={"headline": "50% off"},
    )
    for variant in StepVariant.objects.filter(step__campaign=campaign):
        VariantTemplate.objects.create(
            variant=variant, channel="inapp", title="{{ headline }}", body=BURNING
        )
        VariantTemplate.objects.create(
            variant=variant, channel="email", subject="{{ headline }}", body="Hi"
        )
    client = Client()
    client.force_login(marketer)
    return campaign, client.cookies[settings.SESSION_COOKIE_NAME].value


def test_a_burning_preview_holds_the_web_worker_only_for_its_budget(gunicorn):
    campaign, session = burning_campaign()
    # The preview is accepted first; the probe waits behind it on the one worker.
    # Connected first, so accepted first: the worker takes connections in order.
    preview = send(gunicorn, f"/admin/campaigns/campaign/{campaign.pk}/preview/", session)
    probe_sent = time.monotonic()
    probe = receive(send(gunicorn, "/health/live/"))
    probe_took = time.monotonic() - probe_sent
    page = receive(preview).decode(errors="replace")

    assert probe.startswith(b"HTTP/1.1 200")
    assert probe_took < BUDGET_S + 3, f"/health/live/ waited {probe_took:.1f} s behind a preview"
    assert page.startswith("HTTP/1.1 200"), page[:300]
    assert "Cannot render:" in page  # the cell says why
