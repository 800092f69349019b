"""The endpoints' admin: adding one makes and shows its secret; rotate, test, re-enable."""

from __future__ import annotations

import pytest
from django.urls import reverse
from django.utils import timezone

from notifier.events_out import record
from notifier.models import WebhookAttempt, WebhookEndpoint, WebhookEvent

pytestmark = pytest.mark.django_db


@pytest.fixture(autouse=True)
def no_publish(monkeypatch) -> None:
    monkeypatch.setattr(record, "sender_publish", lambda endpoint_id, countdown=0.0: None)


def add(admin_client, **fields) -> object:
    data = {
        "name": "CRM",
        "url": "https://crm.example.com/hooks",
        "event_types": ["delivery.sent", "delivery.failed"],
        "max_batch": 100,
        **fields,
    }
    return admin_client.post(reverse("admin:notifier_webhookendpoint_add"), data)


def test_adding_an_endpoint_makes_its_secret_and_shows_it(admin_client):
    response = add(admin_client)
    endpoint = WebhookEndpoint.objects.get()
    change_page = reverse("admin:notifier_webhookendpoint_change", args=[endpoint.pk])
    assert response.status_code == 302 and response["Location"] == change_page
    assert endpoint.secret.startswith("whsec_") and len(endpoint.secret) > 40
    assert endpoint.event_types == ["delivery.failed", "delivery.sent"]
    page = admin_client.get(reverse("admin:notifier_webhookendpoint_change", args=[endpoint.pk]))
    assert endpoint.secret in page.content.decode()


def test_a_bad_url_or_no_event_type_is_refused_with_what_to_fix(admin_client):
    response = add(admin_client, url="ftp://crm.example.com/hooks")
    assert response.status_code == 200 and not WebhookEndpoint.objects.exists()
    assert "only http:// and https:// URLs are called" in response.content.decode()
    response = add(admin_client, event_types=[])
    assert response.status_code == 200 and not WebhookEndpoint.objects.exists()


def test_rotate_test_and_re_enable_actions(admin_client):
    add(admin_client)
    endpoint = WebhookEndpoint.objects.get()
    WebhookEndpoint.objects.filter(pk=endpoint.pk).update(
        active=False, disabled_at=timezone.now(), disabled_reason="kept failing"
    )
    url = reverse("admin:notifier_webhookendpoint_changelist")
    for action in ("rotate_secret", "send_test_event", "enable"):
        response = admin_client.post(url, {"action": action, "_selected_action": [endpoint.pk]})
        assert response.status_code == 302
    after = WebhookEndpoint.objects.get()
    assert after.secret != endpoint.secret and after.active and not after.disabled_reason
    assert WebhookEvent.objects.get().type == "webhook.test"


def test_attempts_are_listed_read_only(admin_client):
    add(admin_client)
    endpoint = WebhookEndpoint.objects.get()
    attempt = WebhookAttempt.objects.create(
        endpoint=endpoint,
        webhook_id="msg_abc",
        events=3,
        at=timezone.now(),
        status_code=500,
        error="HTTP 500",
    )
    listing = admin_client.get(reverse("admin:notifier_webhookattempt_changelist"))
    assert "msg_abc" in listing.content.decode()
    change = admin_client.get(reverse("admin:notifier_webhookendpoint_change", args=[endpoint.pk]))
    assert "msg_abc" in change.content.decode()  # the endpoint's recent requests
    assert admin_client.get(reverse("admin:notifier_webhookattempt_add")).status_code == 403
    page = admin_client.get(reverse("admin:notifier_webhookattempt_change", args=[attempt.pk]))
    assert page.context["has_change_permission"] is False
