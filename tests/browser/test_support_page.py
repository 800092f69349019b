"""Support's customer page in a real browser: found by a phone number as typed, what each
message said, an email corrected with a reason and the fix on the timeline; no link on it
that answers 403; and the operators' dead-letter list readable at 1440 px."""

from __future__ import annotations

import re
from datetime import timedelta

import pytest
from django.contrib.auth.models import Group
from django.utils import timezone

from notifier import dispatch
from notifier.api import notify
from notifier.models import Delivery, User, recipient_for
from notifier.roles import roles_sync
from notifier.services.deliveries import deliveries_deliver
from notifier.services.pipeline import messages_prepare
from notifier.status import DeliveryStatus, Reason
from tests.factories import UserFactory, order_context, staff_member

pytestmark = [pytest.mark.browser, pytest.mark.django_db(transaction=True)]


@pytest.fixture
def support() -> User:
    roles_sync()  # a transactional test's flush removed the groups
    assert Group.objects.filter(name="Support").exists()
    return staff_member("Support")


@pytest.fixture
def customer(monkeypatch, settings) -> User:
    settings.NOTIFIER_DEFAULT_REGION = "CN"
    monkeypatch.setattr(dispatch, "publish_prepare", lambda *a, **k: None)
    monkeypatch.setattr(dispatch, "publish_deliver", lambda *a, **k: None)
    user = UserFactory(email="mei@example.com", phone="+8613800138000", username="mei")
    message = notify(user, "order.shipped", order_context(), channels=["inapp", "email"])
    messages_prepare(message_ids=[message.pk])
    deliveries_deliver(
        delivery_ids=list(Delivery.objects.filter(message=message).values_list("pk", flat=True))
    )
    return user


def test_support_finds_a_customer_by_a_typed_phone_and_corrects_the_email(
    log_in, support, customer
):
    page = log_in(support)
    page.goto("/admin/notifier/recipient/")
    page.fill("#searchbar", "138-0013-8000")
    page.press("#searchbar", "Enter")
    page.get_by_role("link", name="Customer page").click()
    page.wait_for_selector("#delivery-history")

    subject = Delivery.objects.get(user=customer, channel="email").content["subject"]
    email_row = page.locator(".said .part-subject", has_text=subject)
    assert email_row.count() == 1  # what the email said, as it was sent

    page.click("#fix-contact summary")
    page.select_option("#id_contact_field", "email")
    page.fill("#id_contact_value", "mei.li@example.org")
    page.fill("#id_contact_why", "Ticket 881: typo in the address at signup")
    page.click("#fix-contact input[type=submit]")

    timeline = page.locator("#support-timeline")
    timeline.get_by_text("Ticket 881: typo in the address at signup").wait_for()
    assert "Corrected a contact point" in timeline.inner_text()
    assert "to=mei.li@example.org" in timeline.inner_text()
    assert "mei.li@example.org" in page.inner_text("#contact-points")
    assert recipient_for(User.objects.get(pk=customer.pk)).email == "mei.li@example.org"


def test_no_link_on_the_customer_page_answers_403(log_in, support, customer):
    page = log_in(support)
    profile = recipient_for(customer)
    checked = 0
    for url in (
        f"/admin/notifier/recipient/{profile.pk}/customer/",
        f"/admin/notifier/user/{customer.pk}/change/",
    ):
        page.goto(url)
        hrefs = page.eval_on_selector_all("a[href]", "links => links.map(a => a.href)")
        for href in sorted(set(hrefs)):
            if "/admin/" not in href or "logout" in href or "#" in href.split("/")[-1][:1]:
                continue
            status = page.request.get(href).status
            assert status != 403, f"{url} links to {href}, which answers 403"
            checked += 1
    assert checked > 20


def test_the_dead_letter_list_reads_at_1440_px(browser, live_server, support, customer):
    """No cell wraps to more than three lines, no column is narrower than its longest word, and
    the filter list is four entries long."""
    # An address as long as real ones get, and a long reason.
    User.objects.filter(pk=customer.pk).update(
        email="felix.muller110+fail-permanent-with-a-long-tag@example.com"
    )
    failed = Delivery.objects.filter(user=customer)
    Delivery.objects.filter(pk__in=failed.values("pk")).update(
        status=DeliveryStatus.FAILED,
        provider="mailgun",
        reason=Reason.UNDELIVERED,  # the longest words a failure has
        finished_at=timezone.now() - timedelta(hours=3),
        last_error="550 5.1.1 <mei@example.com>: Recipient address rejected: User unknown in "
        "virtual mailbox table; see https://support.example.com/errors/550-5.1.1-"
        "recipient-address-rejected-user-unknown-in-virtual-mailbox-table " * 3,
    )
    context = browser.new_context(base_url=live_server.url, viewport={"width": 1440, "height": 900})
    try:
        page = context.new_page()
        support.set_password("pw-1440")
        support.save()
        page.goto("/admin/login/?next=/admin/notifier/deadletter/")
        page.fill("#id_username", support.username)
        page.fill("#id_password", "pw-1440")
        page.click("input[type=submit]")
        page.wait_for_selector("#result_list")
        cells = page.eval_on_selector_all(
            "#result_list th, #result_list td",
            """cells => cells.map(c => {
                const style = getComputedStyle(c);
                const line = parseFloat(style.lineHeight) || parseFloat(style.fontSize) * 1.3;
                const padding = parseFloat(style.paddingTop) + parseFloat(style.paddingBottom);
                return {text: c.innerText.slice(0, 60), lines: (c.clientHeight - padding) / line,
                        overflow: c.scrollWidth - c.clientWidth};
            })""",
        )
        assert cells
        tall = [c for c in cells if c["lines"] > 3.2]
        squeezed = [c for c in cells if c["overflow"] > 1]
        assert not tall, f"cells over three lines: {tall}"
        assert not squeezed, f"columns narrower than their longest word: {squeezed}"
        assert page.locator("#changelist-filter details").count() <= 4
        assert page.evaluate("document.documentElement.scrollWidth") <= 1440
        results = page.locator("#changelist .results")
        widths = page.eval_on_selector_all(
            "#result_list thead th", "hs => hs.map(h => [h.innerText, h.offsetWidth])"
        )
        scroll = results.evaluate("r => [r.scrollWidth, r.clientWidth]")
        assert scroll[0] - scroll[1] <= 1, f"the list scrolls: {scroll}, columns {widths}"
        tooltip = page.locator(".error-excerpt").first.get_attribute("title") or ""
        assert re.search(r"Recipient address rejected", tooltip)
    finally:
        context.close()
