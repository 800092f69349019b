"""`manage.py screenshots`: the README's screenshots, taken by headless Chromium.

On a throwaway database (its name must end in "_docs"; `make screenshots` creates
notifier_docs afresh) it seeds demo customers, segments and campaigns through the real services
(see `_docs_data`), starts `runserver` on a free port, logs in as a marketer, a marketing lead
and support staff, and as a customer on a phone-sized screen (the inbox, the preference centre,
the unsubscribe page), clicks through the flows the README describes and saves PNGs into
docs/screenshots/. Every page is checked before it is saved: no login page, no error page, and
the element the caption talks about is on it.

Needs the `playwright` package (the test extra) and Debian's Chromium at /usr/bin/chromium;
Playwright's own browser download is never used.
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit

from django.conf import settings
from django.core.management import call_command
from django.core.management.base import BaseCommand, CommandError

from notifier.links import preferences_url, unsubscribe_url
from notifier.models import User
from notifier_site.management.commands._docs_data import PASSWORD, DocsData, seed

if TYPE_CHECKING:
    from playwright.sync_api import Browser, FilePayload, Page, ViewportSize

CHROMIUM = "/usr/bin/chromium"
# Headless, and nothing that reaches out to the network on its own.
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
VIEWPORT: ViewportSize = {"width": 1280, "height": 860}
PHONE_VIEWPORT: ViewportSize = {"width": 390, "height": 844}
SERVER_START_TIMEOUT_S = 30.0


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


@contextmanager
def dev_server(log_path: Path) -> Iterator[str]:
    """`runserver` on this database in a subprocess (static files served by it); its URL."""
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    with log_path.open("w") as log:
        server = subprocess.Popen(
            [
                sys.executable,
                str(Path(settings.BASE_DIR) / "manage.py"),
                "runserver",
                "--noreload",
                "--insecure",
                f"127.0.0.1:{port}",
            ],
            stdout=log,
            stderr=subprocess.STDOUT,
            env=os.environ.copy(),
        )
        try:
            deadline = time.monotonic() + SERVER_START_TIMEOUT_S
            while True:
                try:
                    urllib.request.urlopen(f"{url}/admin/login/", timeout=2).close()
                    break
                except OSError:
                    if server.poll() is not None or time.monotonic() > deadline:
                        raise CommandError(f"runserver did not start; see {log_path}") from None
                    time.sleep(0.2)
            yield url
        finally:
            server.terminate()
            server.wait(timeout=10)


class Shooter:
    """Logs people in and saves checked screenshots."""

    def __init__(self, browser: Browser, base_url: str, out: Path, stdout: Any) -> None:
        self.browser, self.base_url, self.out, self.stdout = browser, base_url, out, stdout

    def login(self, user: User) -> Page:
        context = self.browser.new_context(
            viewport=VIEWPORT, device_scale_factor=1, base_url=self.base_url
        )
        # The admin's sidebar folded away, as its toggle remembers it: wider pages.
        context.add_init_script("localStorage.setItem('django.admin.navSidebarIsOpen', 'false')")
        page = context.new_page()
        page.goto("/admin/login/?next=/admin/")
        page.fill("#id_username", user.username)
        page.fill("#id_password", PASSWORD)
        page.click("input[type=submit]")
        page.wait_for_url("**/admin/")
        return page

    def open(self, page: Page, path: str) -> Page:
        response = page.goto(path)
        if response is None or response.status != 200:
            status = response.status if response else "no response"
            raise CommandError(f"{path}: HTTP {status}")
        return page

    def save(
        self,
        page: Page,
        name: str,
        *,
        shows: str,
        element: str = "",
        full_page: bool = True,
        max_height: int = 0,
    ) -> None:
        """Save `name`.png once `shows` (a selector) is visible and nothing went wrong."""
        if page.locator("#login-form").count():
            raise CommandError(f"{name}: the login page is showing, not {page.url}")
        if page.locator("#traceback, #summary > h1:has-text('Error')").count():
            raise CommandError(f"{name}: an error page is showing at {page.url}")
        page.locator(shows).first.wait_for(state="visible", timeout=10_000)
        path = self.out / f"{name}.png"
        if element:
            page.locator(element).first.screenshot(path=path)
        elif max_height:
            height = min(max_height, int(page.evaluate("document.documentElement.scrollHeight")))
            page.screenshot(
                path=path,
                full_page=True,
                clip={"x": 0, "y": 0, "width": VIEWPORT["width"], "height": height},
            )
        else:
            page.screenshot(path=path, full_page=full_page)
        self.stdout.write(f"  {path.relative_to(settings.BASE_DIR)}")


def marketer_pages(shooter: Shooter, data: DocsData) -> None:
    """Segments, the import preview, the campaign, an error in the copy, the preview, submit."""
    page = shooter.login(data.marketer)
    segment = data.collectors.pk
    shooter.open(page, f"/admin/campaigns/segment/{segment}/change/")
    # Widen the rule in the form and count again before saving: the live count.
    page.check("input[name=activity][value=churned]")
    page.click("#audience-refresh")
    page.wait_for_function(
        "document.getElementById('audience-note').textContent.includes('not saved yet')"
    )
    shooter.save(page, "segment-live-count", shows="#audience-sample")

    shooter.open(page, f"/admin/campaigns/segment/{data.vip_list.pk}/import/")
    csv_file: FilePayload = {
        "name": "fair-vip-guests.csv",
        "mimeType": "text/csv",
        "buffer": data.vip_csv,
    }
    page.set_input_files(
        "input[name=file]",
        files=[csv_file],
    )
    page.click("input[type=submit][value=Preview]")
    shooter.save(page, "segment-import-preview", shows="#import-errors")

    campaign = data.upcoming.pk
    shooter.open(page, f"/admin/campaigns/campaign/{campaign}/change/")
    shooter.save(page, "campaign-steps-and-variants", shows="#campaign-problems li.done")

    notice_b = data.upcoming.steps.get(name="Notice").variants.get(name="B")
    shooter.open(page, f"/admin/campaigns/stepvariant/{notice_b.pk}/change/")
    body = page.locator("textarea[name$='-body']", has_text="{{ coupon_code }}").first
    body.fill(body.input_value().replace("{{ coupon_code }}", "{{ coupon }}"))
    page.click("input[name=_save]")
    # The copy block whose body names a variable the campaign does not have, with its error.
    shooter.save(
        page,
        "copy-unknown-variable",
        shows=".errorlist",
        element=".inline-related:has(.errorlist)",
    )

    shooter.open(page, f"/admin/campaigns/campaign/{campaign}/preview/")
    shooter.save(page, "campaign-preview", shows=".channel-email", max_height=1700)

    shooter.open(page, f"/admin/campaigns/campaign/{campaign}/change/")
    page.click("#action-submit")
    page.wait_for_selector(".messagelist .success")
    shooter.save(page, "campaign-submitted", shows="#campaign-status", max_height=760)


def lead_pages(shooter: Shooter, data: DocsData) -> None:
    """Approval by the Marketing lead, then the buttons of a scheduled campaign."""
    page = shooter.login(data.lead)
    campaign = data.upcoming.pk
    shooter.open(page, f"/admin/campaigns/campaign/{campaign}/change/")
    shooter.save(page, "campaign-approval", shows="#action-approve", max_height=760)
    page.click("#action-approve")
    page.wait_for_selector(".messagelist .success")
    shooter.save(page, "campaign-scheduled", shows="#action-pause", max_height=760)

    shooter.open(page, f"/admin/campaigns/campaign/{data.past.pk}/stats/")
    shooter.save(page, "campaign-funnel", shows="#funnel-chart svg")


def support_pages(shooter: Shooter, data: DocsData) -> None:
    """The customer page (top, then a message with what it said), a note on its timeline,
    and the operators' dead-letter list at 1440 px."""
    page = shooter.login(data.support)
    shooter.open(page, f"/admin/notifier/user/{data.customer.pk}/customer/")
    shooter.save(page, "support-customer-page", shows="#consent", max_height=1400)
    shooter.save(
        page,
        "support-delivery-history",
        shows=".said",
        element="#delivery-history .message:has(.said)",
    )
    page.click("#fix-note summary")
    page.fill("#id_note_why", "Ticket 4711: asked why the SMS came late; explained quiet hours")
    page.click("#fix-note input[type=submit]")
    shooter.save(page, "support-fix-timeline", shows=".support-action", element="#fixes")
    page.set_viewport_size({"width": 1440, "height": 900})
    shooter.open(page, "/admin/notifier/deadletter/")
    shooter.save(page, "operators-dead-letters", shows="#changelist-filter", full_page=False)


def people_pages(shooter: Shooter, data: DocsData) -> None:
    """The end user's pages on a phone: the inbox, the preference centre after a save, and the
    page an unsubscribe link opens."""
    context = shooter.browser.new_context(
        viewport=PHONE_VIEWPORT,
        device_scale_factor=2,
        is_mobile=True,
        has_touch=True,
        base_url=shooter.base_url,
    )
    page = context.new_page()
    page.goto("/login/?next=/inbox/")
    page.get_by_label("Username").fill(data.reader.username)
    page.get_by_label("Password").fill(PASSWORD)
    page.get_by_role("button", name="Log in").tap()
    page.wait_for_url("**/inbox/")
    shipped = page.locator("#inbox-items li", has_text="is on its way")
    shipped.get_by_role("button", name="Useful").tap()
    page.wait_for_function(
        "document.getElementById('inbox-status').textContent.startsWith('Thanks')"
    )
    shooter.save(page, "inbox-phone", shows="#inbox-items li.unread", full_page=False)

    # Signed links carry NOTIFIER_SITE_URL; open their paths on this server.
    shooter.open(page, urlsplit(preferences_url(user_id=data.reader.pk)).path)
    page.locator('label[for="consent:sms"]').tap()  # offers by SMS: the consent, asked once
    page.get_by_role("button", name="Save my choices").tap()
    shooter.save(page, "preferences-phone", shows="#saved li", full_page=False)

    link = unsubscribe_url(user_id=data.reader.pk, category="promo.flash_sale", channel="email")
    shooter.open(page, urlsplit(link).path)
    shooter.save(page, "unsubscribe-phone", shows="label.choice", full_page=False)
    context.close()


class Command(BaseCommand):
    help = (
        "Seed a throwaway database (name ending in _docs), open the admin in headless Chromium "
        "and save the marketer's guide's screenshots to docs/screenshots/."
    )

    def add_arguments(self, parser: Any) -> None:
        parser.add_argument("--chromium", default=CHROMIUM, help="the Chromium binary")
        parser.add_argument(
            "--out",
            default=str(Path(settings.BASE_DIR) / "docs" / "screenshots"),
            help="where the PNGs go",
        )

    def handle(self, *args: Any, **options: Any) -> None:
        database = str(settings.DATABASES["default"]["NAME"])
        if not Path(database).stem.endswith("_docs"):
            raise CommandError(
                f"This seeds demo customers and campaigns into {database!r}. Run it on a "
                "throwaway database whose name ends in _docs: `make screenshots` creates "
                "notifier_docs afresh."
            )
        try:
            from playwright.sync_api import sync_playwright
        except ImportError as exc:
            raise CommandError("pip install -e '.[test]' (the playwright package)") from exc
        chromium = options["chromium"]
        if not Path(chromium).exists():
            raise CommandError(f"No Chromium at {chromium}: apt-get install -y chromium")

        call_command("migrate", verbosity=0, interactive=False)
        if User.objects.exists():
            raise CommandError(f"{database!r} is not empty: drop and create it first.")
        self.stdout.write("Seeding customers, segments and campaigns (about a minute)…")
        data = seed()
        out = Path(options["out"])
        out.mkdir(parents=True, exist_ok=True)
        # Playwright's sync API runs an event loop in this thread; the ORM calls between
        # pages are plain synchronous reads.
        os.environ["DJANGO_ALLOW_ASYNC_UNSAFE"] = "true"
        log = Path(settings.BASE_DIR) / "var" / "screenshots-server.log"
        log.parent.mkdir(exist_ok=True)
        self.stdout.write(f"Screenshots (server log in {log.relative_to(settings.BASE_DIR)}):")
        with dev_server(log) as base_url, sync_playwright() as playwright:
            browser = playwright.chromium.launch(executable_path=chromium, args=CHROMIUM_ARGS)
            try:
                shooter = Shooter(browser, base_url, out, self.stdout)
                marketer_pages(shooter, data)
                lead_pages(shooter, data)
                support_pages(shooter, data)
                people_pages(shooter, data)
            finally:
                browser.close()
