"""The customer page and the people lists: a phone number found however typed, an email however
cased; what each message said, masked for staff who may not see contact details; the fixes
offered only to those who may make them; and no link or button that leads to a 403, for every
role in notifier/roles.py."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime
from html.parser import HTMLParser
from urllib.parse import urljoin

import pytest
from django.contrib.auth.models import Group, Permission
from django.test import Client
from django.urls import reverse

from notifier import dispatch
from notifier.api import notify
from notifier.models import (
    Delivery,
    SupportAction,
    SuppressedAddress,
    SuppressionReason,
    User,
    recipient_for,
)
from notifier.roles import ROLES, roles_sync
from notifier.services.deliveries import deliveries_deliver
from notifier.services.pipeline import messages_prepare
from notifier.services.preferences import consent_give
from notifier.services.support import Agent, support_note_add
from tests.factories import DeviceFactory, UserFactory, order_context

pytestmark = pytest.mark.django_db

VIEWER = "Support viewer"  # view permissions only: a role a site may add besides the four


@pytest.fixture
def customer(monkeypatch) -> User:
    monkeypatch.setattr(dispatch, "publish_prepare", lambda *a, **k: None)
    monkeypatch.setattr(dispatch, "publish_deliver", lambda *a, **k: None)
    user = UserFactory(
        username="mei",
        first_name="Meihua",
        last_name="",
        email="Mei.Li@Example.com",
        phone="+8613800138000",
    )
    message = notify(user, "order.shipped", order_context(), channels=["inapp", "email"])
    messages_prepare(message_ids=[message.pk])
    deliveries_deliver(
        delivery_ids=list(Delivery.objects.filter(message=message).values_list("pk", flat=True))
    )
    consent_give(user_id=user.pk, channel="email", source="signup_form", wording="Yes, offers")
    DeviceFactory(user=user)
    SuppressedAddress.objects.create(
        address="mei.li@example.com",
        reason=SuppressionReason.COMPLAINED,
        source="mailgun",
        at=datetime(2026, 11, 2, tzinfo=UTC),
    )
    support_note_add(
        recipient=recipient_for(user), agent=Agent(user_id=None, name="lee"), why="Called in"
    )
    return user


def staff(group: str) -> Client:
    user = UserFactory(username=f"{group.lower().replace(' ', '-')}-{uuid.uuid4().hex[:6]}")
    user.is_staff = True
    user.save()
    user.groups.add(Group.objects.get(name=group))
    client = Client()
    client.force_login(user)
    return client


@pytest.fixture
def clients() -> dict[str, Client]:
    roles_sync()
    support = Group.objects.get(name="Support")
    viewer, _ = Group.objects.get_or_create(name=VIEWER)
    viewer.permissions.set(
        support.permissions.exclude(codename__in=["fix_recipient", "retry_delivery"])
    )
    return {name: staff(name) for name in [*(role.name for role in ROLES), VIEWER]}


def customer_url(user: User) -> str:
    return reverse("admin:notifier_user_customer", args=[user.pk])


# --- Search ---------------------------------------------------------------------------------

TYPED = [
    "138-0013-8000",
    "0086 138 0013 8000",
    "+86 138 0013 8000",
    "13800138000",
    "+86 (138) 0013-8000",
    # Fullwidth digits, as a Chinese input method types them.
    "\uff11\uff13\uff18\uff10\uff10\uff11\uff13\uff18\uff10\uff10\uff10",
]


@pytest.mark.parametrize("typed", TYPED)
@pytest.mark.parametrize("changelist", ["notifier_user", "notifier_recipient"])
def test_a_phone_number_is_found_however_typed(clients, customer, settings, typed, changelist):
    settings.NOTIFIER_DEFAULT_REGION = "CN"
    UserFactory(phone="+8613900139000")  # someone else: never found by her number
    response = clients["Support"].get(reverse(f"admin:{changelist}_changelist"), {"q": typed})
    found = {getattr(row, "user_id", row.pk) for row in response.context["cl"].result_list}
    assert found == {customer.pk}


def test_without_a_default_region_a_national_number_is_not_guessed(clients, customer, settings):
    settings.NOTIFIER_DEFAULT_REGION = ""
    url = reverse("admin:notifier_recipient_changelist")
    assert not clients["Support"].get(url, {"q": "138-0013-8000"}).context["cl"].result_list
    found = clients["Support"].get(url, {"q": "0086 138 0013 8000"}).context["cl"].result_list
    assert [r.user_id for r in found] == [customer.pk]


@pytest.mark.parametrize(
    "typed", ["mei.li@example.com", "MEI.LI@EXAMPLE.COM", "Mei.Li@example.COM"]
)
def test_an_email_is_found_however_cased(clients, customer, typed):
    for changelist in ("notifier_user", "notifier_recipient"):
        response = clients["Support"].get(reverse(f"admin:{changelist}_changelist"), {"q": typed})
        found = {getattr(row, "user_id", row.pk) for row in response.context["cl"].result_list}
        assert found == {customer.pk}, changelist


# --- What the page shows --------------------------------------------------------------------


def section(html: str, start: str, end: str) -> str:
    return html[html.index(f'id="{start}"') : html.index(f'id="{end}"')]


def test_the_page_shows_every_section_in_order(clients, customer):
    html = clients["Support"].get(customer_url(customer)).content.decode()
    order = [
        "contact-points",
        "time-and-locale",
        "consent",
        "preferences",
        "caps",
        "devices",
        "suppression",
        "fixes",
        "history-filters",
    ]
    positions = [html.index(f'id="{name}"') for name in order]
    assert positions == sorted(positions)
    assert "Mei.Li@Example.com" in section(html, "contact-points", "time-and-locale")
    consent = section(html, "consent", "preferences")
    assert "signup_form" in consent and "Yes, offers" in consent
    assert "Spam complaint" in section(html, "suppression", "fixes")
    assert "Called in" in section(html, "fixes", "history-filters")
    assert "their time now" in section(html, "time-and-locale", "consent")


def test_the_page_shows_what_each_message_said(clients, customer):
    html = clients["Support"].get(customer_url(customer)).content.decode()
    email = Delivery.objects.get(user=customer, channel="email")
    assert email.content.get("subject")  # stored when it was routed
    said = html[html.index(f'data-delivery="{email.pk}"') :]
    assert email.content["subject"] in said[:2000]


def test_staff_without_contact_details_see_them_masked_in_what_messages_said(clients, customer):
    """A viewer of users without notifier.view_contact_details (none of the four roles): the
    contact points, and the customer's name, email and phone where a message quoted them."""
    group = Group.objects.create(name="No contact details")
    group.permissions.set(Permission.objects.filter(codename="view_user"))
    client = staff(group.name)
    Delivery.objects.filter(user=customer, channel="email").update(
        content={"subject": "Hi Meihua", "body": "Mail to Mei.Li@Example.com or 13800138000"}
    )
    html = client.get(customer_url(customer)).content.decode()
    for secret in ("Mei.Li@Example.com", "13800138000", "Meihua", "+8613800138000"):
        assert secret not in html, secret
    assert "M*****@Example.com" in html
    assert "Hi M*****" in html  # the name, masked
    assert "+86*******8000" in html


def test_the_first_name_alone_and_an_address_in_another_case_are_masked_too(clients, customer):
    """Copy greets by first name ("Hi {{ user.first_name }}") and may write the address in
    another case: masked all the same for staff without notifier.view_contact_details."""
    type(customer).objects.filter(pk=customer.pk).update(first_name="Meihua", last_name="Lin")
    customer.refresh_from_db()
    group = Group.objects.create(name="No contact details")
    group.permissions.set(Permission.objects.filter(codename="view_user"))
    client = staff(group.name)
    Delivery.objects.filter(user=customer, channel="email").update(
        content={"subject": "Hi Meihua", "body": "Dear Ms Lin, mail to MEI.LI@EXAMPLE.COM"}
    )
    html = client.get(customer_url(customer)).content.decode()
    for secret in ("Meihua", "Lin,", "MEI.LI@EXAMPLE.COM", "Mei.Li@Example.com"):
        assert secret not in html, secret
    assert "Hi M*****" in html


def test_the_fix_buttons_are_for_those_who_may_fix(clients, customer):
    for who in ("Support", "Admin"):
        html = clients[who].get(customer_url(customer)).content.decode()
        assert 'name="fix" value="resend"' in html, who
        assert 'name="fix" value="contact"' in html, who
        assert 'name="fix" value="lift"' in html, who
        assert 'name="fix" value="note"' in html, who
    html = clients[VIEWER].get(customer_url(customer)).content.decode()
    assert 'name="fix"' not in html
    assert (
        clients[VIEWER].post(customer_url(customer), {"fix": "note", "why": "x"}).status_code == 403
    )
    assert SupportAction.objects.count() == 1


def test_a_scheduled_message_shows_its_send_time_and_support_cancels_it_there(clients, customer):
    later = datetime(2030, 5, 1, 9, 0, tzinfo=UTC)
    message = notify(
        customer,
        "order.shipped",
        order_context(),
        channels=["inapp"],  # her email address is suppressed
        send_at=later,
        cancel_key="order:A1001",
    )
    messages_prepare(message_ids=[message.pk])
    html = clients["Support"].get(customer_url(customer)).content.decode()
    assert "Send at: <strong>2030-05-01 09:00:00+00" in html
    assert "<code>order:A1001</code>" in html
    assert f'id="cancel-{message.pk}"' in html
    viewer = clients[VIEWER].get(customer_url(customer)).content.decode()
    assert f'id="cancel-{message.pk}"' not in viewer
    response = clients["Support"].post(
        customer_url(customer),
        {"fix": "cancel", "token": str(uuid.uuid4()), "message": message.pk, "why": "T-12: asked"},
    )
    assert response.status_code == 302
    assert Delivery.objects.get(message=message).status == "cancelled"
    html = clients["Support"].get(customer_url(customer)).content.decode()
    assert f'id="cancel-{message.pk}"' not in html  # nothing left to cancel
    assert "Cancelled a message before it went out" in html


def test_a_fix_with_a_bad_value_is_a_form_error_and_changes_nothing(clients, customer):
    response = clients["Support"].post(
        customer_url(customer),
        {
            "fix": "contact",
            "token": str(uuid.uuid4()),
            "field": "email",
            "value": "nope",
            "why": "T-1",
        },
    )
    assert response.status_code == 400
    assert "is not an email address" in response.content.decode()
    assert recipient_for(User.objects.get(pk=customer.pk)).email == "Mei.Li@Example.com"


def test_a_fix_without_a_why_is_a_form_error(clients, customer):
    response = clients["Support"].post(
        customer_url(customer),
        {"fix": "note", "token": str(uuid.uuid4()), "why": ""},
    )
    assert response.status_code == 400
    assert "This field is required" in response.content.decode()


def test_a_correction_is_made_and_shown_on_the_timeline(clients, customer):
    response = clients["Support"].post(
        customer_url(customer),
        {
            "fix": "contact",
            "token": str(uuid.uuid4()),
            "field": "email",
            "value": "mei@example.org",
            "why": "T-2: typo at signup",
        },
        follow=True,
    )
    html = response.content.decode()
    timeline = html[html.index('id="support-timeline"') :]
    assert "Corrected a contact point" in timeline
    assert "T-2: typo at signup" in timeline
    assert "to=mei@example.org" in timeline


# --- No button that leads to a 403 ---------------------------------------------------------


class Links(HTMLParser):
    def __init__(self) -> None:
        super().__init__()
        self.hrefs: list[str] = []
        self.forms: list[tuple[str, str]] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        values = dict(attrs)
        if tag == "a" and values.get("href"):
            self.hrefs.append(str(values["href"]))
        if tag == "form":
            self.forms.append((str(values.get("method") or "get"), str(values.get("action") or "")))


def admin_links(html: str, page: str) -> set[str]:
    """Every admin URL the page links to, resolved as the browser would."""
    parser = Links()
    parser.feed(html)
    found = set()
    for href in parser.hrefs:
        if href.startswith(("#", "mailto:", "javascript:")) or "logout" in href:
            continue
        url = urljoin(f"http://testserver{page}", href).removeprefix("http://testserver")
        if url.startswith("/admin/"):
            found.add(url.split("#")[0])
    return found


@pytest.mark.parametrize("role", [*(role.name for role in ROLES), VIEWER])
def test_no_link_on_the_people_pages_leads_to_a_403(clients, customer, role):
    client = clients[role]
    profile = recipient_for(customer)
    pages = [
        customer_url(customer),
        reverse("admin:notifier_recipient_customer", args=[profile.pk]),
        reverse("admin:notifier_user_change", args=[customer.pk]),
        reverse("admin:notifier_recipient_change", args=[profile.pk]),
    ]
    index = client.get(reverse("admin:index")).content.decode()
    opened, followed, denied = 0, 0, []
    for page in pages:
        response = client.get(page)
        if response.status_code == 403:
            # Not theirs to open; then nothing they can reach links to it.
            assert reverse("admin:notifier_user_changelist") not in index, role
            assert reverse("admin:notifier_recipient_changelist") not in index, role
            continue
        assert response.status_code == 200, (page, response.status_code)
        opened += 1
        for url in sorted(admin_links(response.content.decode(), page)):
            followed += 1
            if client.get(url).status_code == 403:
                denied.append(f"{page} -> {url}")
    assert not denied, f"{role}: " + "; ".join(denied)
    if role in ("Support", "Admin", VIEWER):
        assert opened == 4 and followed > 20


def test_the_change_pages_lead_to_the_customer_page(clients, customer):
    profile = recipient_for(customer)
    for change, page in (
        (reverse("admin:notifier_user_change", args=[customer.pk]), customer_url(customer)),
        (
            reverse("admin:notifier_recipient_change", args=[profile.pk]),
            reverse("admin:notifier_recipient_customer", args=[profile.pk]),
        ),
    ):
        html = clients["Support"].get(change).content.decode()
        assert f'href="{page}" class="historylink">Customer page</a>' in html


def test_a_persons_dates_show_each_step_and_why_it_was_not_sent(clients, customer):
    from datetime import timedelta

    from django.utils import timezone

    from notifier.api import date_exit, date_set
    from notifier.models import Message, RecipientDate

    context = {"plan": "Pro", "renews_on": "10 June"}
    renews = timezone.now().replace(microsecond=0) + timedelta(days=10)
    first = date_set(customer, "subscription.renewal", renews, key="plan:42", context=context)
    old = list(Message.objects.filter(cancel_key=first.cancel_key).values_list("pk", flat=True))
    messages_prepare(message_ids=old)
    moved = date_set(
        customer, "subscription.renewal", renews + timedelta(days=7), key="plan:42", context=context
    )
    new = list(Message.objects.filter(cancel_key=moved.cancel_key).values_list("pk", flat=True))
    messages_prepare(message_ids=new)
    soon = timezone.now() + timedelta(days=2)  # its "3 days before" has gone already
    date_set(customer, "subscription.renewal", soon, key="plan:7", context=context)
    date_exit(customer, "subscription.renewal", key="plan:7", reason="renewed early")
    html = clients["Support"].get(customer_url(customer)).content.decode()
    assert html.index('id="suppression"') < html.index('id="dates"') < html.index('id="fixes"')
    dates = section(html, "dates", "fixes")
    assert "<code>plan:42</code>" in dates and "set or moved 2 times" in dates
    assert f"message #{new[0]} — inapp held (Scheduled: held until its send time)" in dates
    assert "Exited: the person acted" in dates and "renewed early" in dates
    assert "Not sent: its time had gone when the date was set" in dates
    assert "The person acted (renewed, converted or clicked)" in dates  # plan:7's steps
    # The first date's steps are in the history, each saying why it did not go.
    history = html[html.index('id="history-filters"') :]
    assert f"#{old[0]}" in history
    assert "Its date moved: this reminder was replaced by those of the new date" in history
    assert f"Step 1 of the reminders around date #{first.pk} (as set the 1st time)" in history
    assert f"Step 3 of the reminders around date #{first.pk} (as set the 2nd time)" in history
    assert RecipientDate.objects.filter(user=customer).count() == 2


def test_a_date_cleared_before_it_was_ever_set_is_not_shown_as_a_date(clients, customer):
    from datetime import timedelta

    from django.utils import timezone

    from notifier.api import date_clear
    from notifier.models import RecipientDate

    date_clear(
        customer, "subscription.renewal", key="plan:9", as_of=timezone.now() - timedelta(hours=1)
    )
    assert RecipientDate.objects.filter(user=customer, version=0).exists()  # its tombstone
    dates = section(
        clients["Support"].get(customer_url(customer)).content.decode(), "dates", "fixes"
    )
    assert "plan:9" not in dates and "No dates: the product has set none" in dates


def test_a_dates_steps_pruned_by_retention_say_archived(clients, customer, tmp_path):
    from datetime import timedelta

    import time_machine
    from django.utils import timezone

    from notifier.api import date_exit, date_set
    from notifier.models import Message
    from notifier.services.retention import retention_run

    context = {"plan": "Pro", "renews_on": "10 June"}
    renews = timezone.now().replace(microsecond=0) + timedelta(days=10)
    date = date_set(customer, "subscription.renewal", renews, key="plan:42", context=context)
    ids = list(Message.objects.filter(cancel_key=date.cancel_key).values_list("pk", flat=True))
    messages_prepare(message_ids=ids)
    date_exit(customer, "subscription.renewal", key="plan:42", reason="renewed")
    with time_machine.travel(timezone.now() + timedelta(days=40)):
        retention_run(days=30, archive_dir=tmp_path)
    assert not Message.objects.filter(pk__in=ids).exists()
    dates = section(
        clients["Support"].get(customer_url(customer)).content.decode(), "dates", "fixes"
    )
    assert f"message #{ids[0]} — archived by retention" in dates
    assert "not routed yet" not in dates
