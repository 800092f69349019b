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

import base64
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
        if page.locator("#forecast-slot").count():  # the forecast panel, fetched after load
            page.locator("#forecast-slot #forecast").wait_for(state="visible", timeout=60_000)
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

    def save_parts(self, page: Page, name: str, *, shows: str, top: str, part: str) -> None:
        """Save `name`.png as two parts of one long page, one under the other with a dashed
        line where the page between them is left out: the page from its top to the bottom of
        `top` (a selector), and the element `part`."""
        self.save(page, name, shows=shows, element=top)  # checks the page; replaced below
        bottom = page.locator(top).first.evaluate(
            "el => el.getBoundingClientRect().bottom + window.scrollY + 8"
        )
        width = VIEWPORT["width"]
        head = page.screenshot(
            full_page=True, clip={"x": 0, "y": 0, "width": width, "height": int(bottom)}
        )
        element = page.locator(part).first
        left = element.evaluate("el => el.getBoundingClientRect().left")
        tail = element.screenshot()
        images = [base64.b64encode(png).decode() for png in (head, tail)]
        sheet = page.context.new_page()
        sheet.set_viewport_size({"width": width, "height": 200})
        sheet.set_content(
            '<body style="margin: 0; background: #fff">'
            f'<img style="display: block" src="data:image/png;base64,{images[0]}">'
            '<div style="margin: 6px 0 14px 0; border-top: 2px dashed #bbb"></div>'
            f'<img style="display: block; margin-left: {int(left)}px; padding-bottom: 12px" '
            f'src="data:image/png;base64,{images[1]}"></body>'
        )
        sheet.wait_for_function("[...document.images].every(img => img.complete)")
        sheet.screenshot(path=self.out / f"{name}.png", full_page=True)
        sheet.close()


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


def draft_pages(shooter: Shooter, data: DocsData) -> None:
    """Drafts before launch: the forecast, every step's copy on one page, the live preview in
    Chinese, and a plan whose first step is already past."""
    page = shooter.login(data.marketer)
    weekend = data.weekend.pk
    shooter.open(page, f"/admin/campaigns/campaign/{weekend}/change/")
    # The panel is fetched once the page is shown; its first step opens with its table.
    shooter.save(
        page,
        "campaign-forecast",
        shows="#forecast details[open] .forecast-table",
        element="#forecast",
    )

    shooter.open(page, f"/admin/campaigns/campaign/{weekend}/write/")
    shooter.save(page, "campaign-write-copy", shows="#write-submit", max_height=1500)

    notice_a = data.weekend.steps.get(name="Notice").variants.get(name="A")
    shooter.open(page, f"/admin/campaigns/stepvariant/{notice_a.pk}/change/")
    body = page.locator("textarea[name$='-body']", has_text="你好").first
    body.fill(
        body.input_value()
        + '\n活动时间：{{ event_at|localdatetime }}，门票 {{ price|money("CNY") }}。'  # noqa: RUF001
    )
    page.fill("#live-preview-user", str(data.preview_customer.pk))
    page.wait_for_function(
        "(document.getElementById('live-preview-whom') || {textContent: ''})"
        ".textContent.includes('zh-hans') && document.querySelector('#live-preview .part-body')"
        " && document.querySelector('#live-preview .part-body').textContent.includes('¥')"
    )
    # Scrolled to the end, the Chinese copy being edited and, a screen tall, the whole panel
    # beside it (it sticks to the top of the screen until its column ends).
    page.set_viewport_size({"width": VIEWPORT["width"], "height": 1150})
    page.evaluate("window.scrollTo(0, document.documentElement.scrollHeight)")
    shooter.save(page, "copy-live-preview", shows="#live-preview .part-body", full_page=False)
    page.set_viewport_size(VIEWPORT)

    shooter.open(page, f"/admin/campaigns/campaign/{data.rushed.pk}/change/")
    # The top of the page, with the step already past, and the steps table further down.
    shooter.save_parts(
        page,
        "campaign-plan-past-step",
        shows="form.past-step",
        top="#campaign-status",
        part="#steps-group",
    )


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

    # The month of the winter fair, in Shanghai time: its local-time Notice spans the zones,
    # and the comic weekend competes with its last call for the same customers.
    day = data.calendar_day.isoformat()
    shooter.open(
        page, f"/admin/campaigns/campaign/calendar/?view=month&date={day}&tz=Asia/Shanghai"
    )
    shooter.save(page, "campaign-calendar", shows="#competitions li")

    # The Chinese campaign's Notice, part way through sending: the bars of the progress panel.
    shooter.open(page, f"/admin/campaigns/campaign/{data.running.pk}/change/")
    page.wait_for_selector("#campaign-progress[data-state=running]")
    shooter.save(
        page,
        "campaign-progress",
        shows="#campaign-progress .step-progress .bar",
        element="#campaign-progress",
    )


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

    # A customer's link from an email of the autumn fair: the page names the campaign.
    email = data.campaign_email
    link = unsubscribe_url(
        user_id=email.user_id, category="promo.flash_sale", channel="email", message_id=email.pk
    )
    shooter.open(page, urlsplit(link).path)
    shooter.save(page, "unsubscribe-phone", shows="label.choice", full_page=False)
    context.close()


def chinese_people_pages(shooter: Shooter, data: DocsData) -> None:
    """The same pages for Mei, whose profile says zh-hans: chosen from her locale, in Chinese."""
    context = shooter.browser.new_context(
        viewport=PHONE_VIEWPORT,
        device_scale_factor=2,
        is_mobile=True,
        has_touch=True,
        base_url=shooter.base_url,
    )
    page = context.new_page()
    page.goto("/login/?next=/inbox/")
    page.fill("#id_username", data.zh_reader.username)
    page.fill("#id_password", PASSWORD)
    page.locator("#login-form button").tap()
    page.wait_for_url("**/inbox/")
    page.wait_for_function("document.documentElement.lang === 'zh-hans'")
    shooter.save(page, "inbox-phone-zh", shows="#inbox-items li.unread", full_page=False)

    shooter.open(page, urlsplit(preferences_url(user_id=data.zh_reader.pk)).path)
    page.locator('label[for="switch:social:push"]').tap()  # social activity by push: off
    page.locator(".save-bar button[type=submit]").tap()
    shooter.save(page, "preferences-phone-zh", shows="#saved li", full_page=False)

    link = unsubscribe_url(
        user_id=data.zh_reader.pk,
        category="promo.flash_sale",
        channel="email",
        message_id=data.zh_campaign_message,
    )
    shooter.open(page, urlsplit(link).path)
    shooter.save(page, "unsubscribe-phone-zh", shows="label.choice", full_page=False)
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
                draft_pages(shooter, data)
                lead_pages(shooter, data)
                support_pages(shooter, data)
                people_pages(shooter, data)
                chinese_people_pages(shooter, data)
            finally:
                browser.close()
