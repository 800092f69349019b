"""Browser tests: Playwright drives Debian's Chromium (/usr/bin/chromium, installed by
`make chromium`) against Django's live server on real PostgreSQL. Playwright's own browser
download is never used."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from playwright.sync_api import Browser, Page, sync_playwright

from campaigns.management.commands.screenshots import CHROMIUM, CHROMIUM_ARGS
from notifier.models import User

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
