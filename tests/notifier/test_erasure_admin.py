"""The admin's erasure: "Erase the selected recipients" asks for a reason on a confirmation page
and only then erases; "Export as JSON" downloads everything; both for the Admin role only; an
erased profile can no longer be edited; an admin finds a suppression by the address itself and
lifts it with a reason."""

from __future__ import annotations

import json

import pytest
from django.test import Client
from django.urls import reverse

from notifier.models import Device, ErasedIdentifier, ErasureRecord, Recipient, recipient_for
from notifier.roles import roles_sync
from notifier.services.erasure import recipient_erase, suppressed
from tests.factories import DeviceFactory, UserFactory, staff_member

pytestmark = pytest.mark.django_db
CHANGELIST = "admin:notifier_recipient_changelist"


@pytest.fixture
def admins() -> dict[str, Client]:
    roles_sync()
    clients = {}
    for group in ("Admin", "Support"):
        client = Client()
        client.force_login(staff_member(group, name=group.lower()))
        clients[group] = client
    return clients


@pytest.fixture
def customer():
    user = UserFactory(email="grace@example.org", phone="+8613800138999")
    DeviceFactory(user=user)
    return recipient_for(user)


def act(client: Client, action: str, pk: int, url: str = CHANGELIST, **data: str):
    return client.post(reverse(url), {"action": action, "_selected_action": [pk], **data})


def test_erasing_asks_for_a_reason_first(admins, customer):
    page = act(admins["Admin"], "erase_selected", customer.pk)
    assert page.status_code == 200
    body = page.content.decode()
    assert f"Recipient {customer.pk}" in body and 'name="reason"' in body
    blank = act(admins["Admin"], "erase_selected", customer.pk, post="yes", reason=" ")
    assert blank.status_code == 200 and "This field is required" in blank.content.decode()
    assert not ErasureRecord.objects.exists()
    assert Device.objects.filter(user_id=customer.user_id).exists()

    done = act(admins["Admin"], "erase_selected", customer.pk, post="yes", reason="DSR-17")
    assert done.status_code == 302
    record = ErasureRecord.objects.get()
    assert record.reason == "DSR-17" and record.by.startswith("admin:admin-")
    assert Recipient.objects.get(pk=customer.pk).erased_at is not None
    assert suppressed(email="grace@example.org")
    # Erased: shown, never edited again.
    change = admins["Admin"].get(reverse("admin:notifier_recipient_change", args=[customer.pk]))
    assert change.status_code == 200 and not change.context["has_change_permission"]


def test_support_is_offered_neither_action_and_cannot_post_them(admins, customer):
    changelist = admins["Support"].get(reverse(CHANGELIST)).content.decode()
    assert "erase_selected" not in changelist and "export_json" not in changelist
    for action in ("erase_selected", "export_json"):
        response = act(admins["Support"], action, customer.pk, post="yes", reason="x")
        # Not an action of theirs: the list again, nothing done, nothing downloaded.
        assert response.status_code == 200 and "Content-Disposition" not in response
    assert not ErasureRecord.objects.exists()
    assert Recipient.objects.get(pk=customer.pk).email == "grace@example.org"


def test_export_downloads_everything_as_json(admins, customer):
    response = act(admins["Admin"], "export_json", customer.pk)
    assert response.status_code == 200
    assert response["Content-Type"].startswith("application/json")
    assert f'filename="recipient-{customer.pk}.json"' in response["Content-Disposition"]
    body = json.loads(response.content)
    [export] = body["exports"]
    assert export["recipient"]["email"] == "grace@example.org"
    assert len(export["devices"]) == 1


def test_an_admin_finds_a_suppression_by_the_address_and_lifts_it(admins, customer):
    recipient_erase(customer, by="test", reason="DSR-18")
    url = reverse("admin:notifier_erasedidentifier_changelist")
    found = admins["Admin"].get(url, {"q": " GRACE@example.org"})
    assert [i.kind for i in found.context["cl"].result_list] == ["email"]
    assert "grace@" not in found.content.decode()  # digests only
    email = ErasedIdentifier.objects.get(kind="email")

    page = act(admins["Admin"], "lift", email.pk, url="admin:notifier_erasedidentifier_changelist")
    assert page.status_code == 200 and 'name="reason"' in page.content.decode()
    assert suppressed(email="grace@example.org")
    done = act(
        admins["Admin"],
        "lift",
        email.pk,
        url="admin:notifier_erasedidentifier_changelist",
        post="yes",
        reason="came back, DSR-19",
    )
    assert done.status_code == 302
    assert not suppressed(email="grace@example.org")
    assert suppressed(phone="+8613800138999")
    email.refresh_from_db()
    assert email.lift_reason == "came back, DSR-19" and email.lifted_by.startswith("admin:")
