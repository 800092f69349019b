"""Browser tests: Playwright drives Debian's Chromium (/usr/bin/chromium, installed by
`make chromium`) against Django's live server on real PostgreSQL. Playwright's own browser
download is never used."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from playwright.sync_api import Browser, Page, sync_playwright

from notifier.models import User
from notifier_site.management.commands.screenshots import CHROMIUM, CHROMIUM_ARGS

PASSWORD = "browser-test-password"


@pytest.fixture(scope="module")
def browser(django_db_setup) -> Iterator[Browser]:
    """Chromium for a module's tests. Playwright's sync API keeps an event loop running in this
    thread meanwhile, so Django is told the ORM calls made between page actions are the plain
    synchronous ones they are (the test database is set up before the loop starts)."""
    if not Path(CHROMIUM).exists():
        pytest.fail(f"No Chromium at {CHROMIUM}: run `make chromium` (Debian's chromium package)")
    with pytest.MonkeyPatch.context() as patch, sync_playwright() as playwright:
        patch.setenv("DJANGO_ALLOW_ASYNC_UNSAFE", "true")
        chromium = playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        yield chromium
        chromium.close()


@pytest.fixture
def log_in(browser: Browser, live_server) -> Iterator:
    """Log a staff user in through the admin's login form; yields a function giving a page."""
    contexts = []

    def page_for(user: User) -> Page:
        user.set_password(PASSWORD)
        user.save(update_fields=["password"])
        context = browser.new_context(
            base_url=live_server.url, viewport={"width": 1280, "height": 900}
        )
        contexts.append(context)
        page = context.new_page()
        page.set_default_timeout(10_000)
        page.goto("/admin/login/?next=/admin/")
        page.fill("#id_username", user.username)
        page.fill("#id_password", PASSWORD)
        page.click("input[type=submit]")
        page.wait_for_url("**/admin/")
        return page

    yield page_for
    for context in contexts:
        context.close()


# --- End users on a phone ---------------------------------------------------------------------

PHONE = {
    "viewport": {"width": 390, "height": 844},
    "is_mobile": True,
    "has_touch": True,
    "device_scale_factor": 2,
}


@pytest.fixture
def phone(browser: Browser, live_server, settings) -> Iterator:
    """A phone-sized, touch browser context; yields a function giving a page, logged in through
    the end users' /login/ page when given a user. Signed links point at the live server."""
    settings.NOTIFIER_SITE_URL = live_server.url
    contexts = []

    def page_for(user: User | None = None, *, javascript: bool = True) -> Page:
        context = browser.new_context(
            base_url=live_server.url, java_script_enabled=javascript, **PHONE
        )
        contexts.append(context)
        page = context.new_page()
        page.set_default_timeout(10_000)
        if user is not None:
            user.set_password(PASSWORD)
            user.save(update_fields=["password"])
            page.goto("/login/?next=/inbox/")
            page.get_by_label("Username").fill(user.username)
            page.get_by_label("Password").fill(PASSWORD)
            page.get_by_role("button", name="Log in").tap()
            page.wait_for_url("**/inbox/")
        return page

    yield page_for
    for context in contexts:
        context.close()


def overflow(page: Page) -> dict[str, int]:
    """How wide the page's content is next to the window (equal widths: no sideways scroll)."""
    return page.evaluate(
        "({scroll: document.scrollingElement.scrollWidth, window: window.innerWidth})"
    )


def assert_fits(page: Page, widths: tuple[int, ...] = (390, 360)) -> None:
    """No horizontal scrolling at each phone width. innerWidth is checked too: a mobile
    browser zooms out to fit content that is too wide, which would hide the overflow."""
    for width in widths:
        page.set_viewport_size({"width": width, "height": 800})
        sizes = overflow(page)
        assert sizes["window"] == width, f"the browser zoomed out at {width} px: {sizes}"
        assert sizes["scroll"] <= sizes["window"], f"sideways scrolling at {width} px: {sizes}"


def small_tap_targets(page: Page, selector: str, *, at_least: int) -> list[str]:
    """Visible controls matching `selector` smaller than 44 x 44 CSS pixels (and a check that
    at least `at_least` controls were measured, so an empty match cannot pass)."""
    found = page.eval_on_selector_all(
        selector,
        """els => {
            const shown = els.filter(el => el.offsetParent !== null);
            const small = shown.map(el => [el, el.getBoundingClientRect()])
                .filter(([el, r]) => r.width < 44 || r.height < 44)
                .map(([el, r]) => `${el.outerHTML.slice(0, 80)} ${r.width}x${r.height}`);
            return {measured: shown.length, small: small};
        }""",
    )
    assert found["measured"] >= at_least, f"only {found['measured']} controls matched {selector}"
    return found["small"]
