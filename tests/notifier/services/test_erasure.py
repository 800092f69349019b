"""Erasure and export on PostgreSQL: a person with rows in every table that can hold their data
is erased, and no text or JSON column of any model still holds any of their identifiers or
words; the statistics keep their rows; a second run changes nothing; notify, routing and
imports refuse them; the suppression list holds digests only and an admin lifts it."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from decimal import Decimal
from io import StringIO

import pytest
from django.apps import apps
from django.contrib.admin.models import CHANGE, LogEntry
from django.contrib.auth.models import Group
from django.contrib.contenttypes.models import ContentType
from django.core.management import CommandError, call_command
from django.db import models
from django.db.models import Q
from django.test import Client, override_settings
from django.urls import reverse

from campaigns.models import (
    Campaign,
    Conversion,
    Holdout,
    Segment,
    SegmentMember,
    TriggerEntry,
)
from campaigns.services.segments import RowProblem, segment_members_preview
from channels.models import SandboxSend
from notifier import dispatch
from notifier.api import notify, notify_many
from notifier.errors import InvalidRecipient, RecipientErased
from notifier.events_out.sending import endpoint_create
from notifier.links import preferences_token
from notifier.models import (
    Consent,
    Delivery,
    DeliveryEvent,
    Device,
    ErasedIdentifier,
    ErasureRecord,
    EventKind,
    EventOutcome,
    FrequencyCounter,
    InboxItem,
    Message,
    Preference,
    ProviderEvent,
    Recipient,
    RefusedCall,
    SuppressedAddress,
    SuppressionReason,
    Unsubscribe,
    User,
    WebhookEvent,
    recipient_for,
)
from notifier.models.outbound import WebhookEventType
from notifier.services.api_keys import api_key_create
from notifier.services.deliveries import deliveries_deliver
from notifier.services.devices import DeviceError, device_register
from notifier.services.erasure import (
    ErasureError,
    erasure_check,
    recipient_erase,
    recipient_erase_again,
    recipient_export,
    suppressed,
    suppressed_kinds,
    suppression_lift,
)
from notifier.services.pipeline import messages_prepare
from notifier.services.preferences import (
    PreferenceChange,
    UnknownUser,
    consent_give,
    preferences_update,
    unsubscribe,
)
from notifier.services.recipients import recipient_put
from notifier.services.transitions import delivery_note
from notifier.status import DeliveryStatus, Reason
from tests.factories import DeviceFactory, UserFactory, order_context

pytestmark = pytest.mark.django_db

EMAIL = "Augusta.Lovelace@Example.org"
PHONE = "+8613800138123"
EXTERNAL_ID = "crm-lovelace-1815"
TOKEN = "fcm-token-lovelace-0001"
ORDER = "order-lovelace-77"
SECRETS = (EMAIL.lower(), PHONE, "Lovelace", EXTERNAL_ID, TOKEN, ORDER, "13800138123")


def searchable(field: models.Field) -> bool:
    return isinstance(field, (models.CharField, models.TextField, models.JSONField))


def leftovers() -> list[str]:
    """Every (model, field) of every installed model whose rows still contain a secret."""
    found = []
    for model in apps.get_models():
        if model._meta.proxy or not model._meta.managed:
            continue
        for field in model._meta.concrete_fields:
            if not searchable(field):
                continue
            query = Q(pk__in=[])
            for secret in SECRETS:
                query |= Q(**{f"{field.name}__icontains": secret})
            hits = model._default_manager.filter(query).count()
            if hits:
                found.append(f"{model._meta.label}.{field.name}: {hits} rows")
    return found


@pytest.fixture
def person(published) -> User:
    """Augusta, with rows in every table that can hold a person's data."""
    user = UserFactory(
        username="augusta",
        email=EMAIL,
        first_name="Augusta",
        last_name="Lovelace",
        phone=PHONE,
        interest_tags=["poetry", "engines"],
        yearly_spend=Decimal("6200"),
        is_staff=True,
    )
    user.groups.add(Group.objects.create(name="Poets"))
    Recipient.objects.filter(user=user).update(external_id=EXTERNAL_ID)
    DeviceFactory(user=user, token=TOKEN)
    # The product's systems hear of everything: the outbox's events name her by external id.
    endpoint_create(
        name="CRM",
        url="https://crm.example.com/hooks",
        event_types=[t for t in WebhookEventType.values if t != WebhookEventType.TEST],
    )
    RefusedCall.objects.create(
        at=datetime.now(UTC),
        source="celery task notifier.notify",
        error_type="InvalidRecipient",
        message=f"no recipient has external_id {EXTERNAL_ID!r}",
    )
    # A delivered message on every channel, with her name in its context and key.
    sent = notify(
        user,
        "order.shipped",
        order_context(carrier="Lovelace Couriers"),
        channels=["inapp", "email", "sms", "push"],
        idempotency_key=f"ship:{EMAIL}",
    )
    messages_prepare(message_ids=[sent.pk])
    deliveries_deliver(
        delivery_ids=list(Delivery.objects.filter(message=sent).values_list("pk", flat=True))
    )
    email_delivery = Delivery.objects.get(message=sent, channel="email")
    delivery_note(
        email_delivery.pk,
        kind=EventKind.CALLBACK,
        at=datetime.now(UTC),
        detail={"recipient": EMAIL},
        error=f"550 mailbox {EMAIL} full",
    )
    Delivery.objects.filter(pk=email_delivery.pk).update(last_error=f"soft bounce for {EMAIL}")
    # One waiting to go out (routed, not delivered) and one not routed yet.
    waiting = notify(user, "order.shipped", order_context(), channels=["email"])
    messages_prepare(message_ids=[waiting.pk])
    notify(user, "order.shipped", order_context(), channels=["inapp"])
    preferences_update(
        user_id=user.pk,
        changes=[PreferenceChange(category="marketing", channel="sms", enabled=False)],
    )
    consent_give(
        user_id=user.pk,
        channel="email",
        source="signup_form",
        wording=f"Yes, {EMAIL} may get offers",
        ip_address="203.0.113.9",
    )
    unsubscribe(
        user_id=user.pk,
        category="marketing",
        channel="email",
        scope="this",
        source="unsubscribe_link",
        message_id=sent.pk,
    )
    now = datetime.now(UTC)
    FrequencyCounter.objects.create(user=user, period="day", window_start=now.date(), count=1)
    ProviderEvent.objects.create(
        provider="mailgun",
        event_id="evt-0001",
        event_type="bounced",
        provider_message_id=email_delivery.provider_message_id or "<m@x>",
        delivery=email_delivery,
        outcome=EventOutcome.MOVED,
        received_at=now,
        detail={"recipient": EMAIL},
    )
    ProviderEvent.objects.create(
        provider="twilio",
        event_id="sms-in-1",
        event_type="inbound:stop",
        outcome=EventOutcome.CONSENT,
        received_at=now,
        detail={"from": PHONE},
    )
    SuppressedAddress.objects.create(
        address=EMAIL.lower(), reason=SuppressionReason.BOUNCED, source="mailgun", at=now
    )
    segment = Segment.objects.create(name="Poets", use_member_list=True)
    SegmentMember.objects.create(segment=segment, user=user)
    campaign = Campaign.objects.create(name="Spring", segment=segment)
    TriggerEntry.objects.create(campaign=campaign, user=user, entered_at=now)
    Holdout.objects.create(campaign=campaign, user=user)
    Conversion.objects.create(
        user=user, value=Decimal("42.00"), occurred_at=now, reference=ORDER, campaign=campaign
    )
    LogEntry.objects.create(
        user=UserFactory(username="staffer"),
        content_type=ContentType.objects.get_for_model(User),
        object_id=str(user.pk),
        object_repr=str(user),
        action_flag=CHANGE,
        change_message='[{"changed": {"fields": ["Email address"]}}]',
    )
    assert SandboxSend.objects.filter(delivery_id__in=[email_delivery.pk]).exists()
    assert InboxItem.objects.filter(user=user).exists()
    return User.objects.get(pk=user.pk)


def erase(user: User, **kwargs):
    return recipient_erase(
        recipient_for(user), by=kwargs.pop("by", "test"), reason="ticket 1234", **kwargs
    )


def test_erasure_leaves_nothing_personal_in_any_table(person):
    assert len(leftovers()) > 10  # the search finds what is there before
    deliveries = dict(Delivery.objects.filter(user=person).values_list("pk", "status"))

    report = erase(person)

    assert leftovers() == []
    # Contact points and choices are gone.
    for model in (Device, Preference, Consent, FrequencyCounter, SegmentMember, TriggerEntry):
        assert not model.objects.filter(user=person).exists(), model
    assert not SuppressedAddress.objects.exists()
    # The outbox keeps its events, with our user key and without her external id or key.
    events = list(WebhookEvent.objects.values_list("data", flat=True))
    assert len(events) > 3 and all("external_id" not in data for data in events)
    assert {data["user"] for data in events} == {str(person.pk)}
    assert RefusedCall.objects.get().message == "erased"
    assert not ProviderEvent.objects.exclude(detail={}).exists()
    # What statistics count stays: every delivery, with its status (the waiting one cancelled).
    after = dict(Delivery.objects.filter(user=person).values_list("pk", "status"))
    assert after.keys() == deliveries.keys()
    changed = {pk: (deliveries[pk], after[pk]) for pk in after if after[pk] != deliveries[pk]}
    assert list(changed.values()) == [(DeliveryStatus.QUEUED, DeliveryStatus.CANCELLED)]
    cancelled = Delivery.objects.get(pk=next(iter(changed)))
    assert cancelled.reason == Reason.RECIPIENT_ERASED
    assert not Delivery.objects.filter(user=person).exclude(content={}).exists()
    assert not Delivery.objects.filter(user=person).exclude(provider_message_id="").exists()
    assert Unsubscribe.objects.filter(user=person).count() == 1
    assert Holdout.objects.filter(user=person).count() == 1
    conversion = Conversion.objects.get(user=person)
    assert (conversion.value, conversion.reference) == (Decimal("42.00"), "")
    assert InboxItem.objects.filter(user=person, title="", body="").count() == 1
    # The profile stays, empty and marked; the stand-alone user is anonymised, not deleted.
    profile = Recipient.objects.get(user=person)
    assert profile.erased_at is not None
    assert (profile.email, profile.phone, profile.external_id) == ("", "", None)
    assert profile.interest_tags == [] and profile.yearly_spend == 0
    user = User.objects.get(pk=person.pk)
    assert user.username == f"erased-{person.pk}"
    assert (user.email, user.first_name, user.last_name) == ("", "", "")
    assert not user.is_active and not user.has_usable_password()
    assert not user.is_staff and not user.groups.exists()
    # The record: who, why, what per table; and three digests on the suppression list.
    record = ErasureRecord.objects.get(pk=report.record_id)
    assert (record.by, record.reason, record.repeat) == ("test", "ticket 1234", False)
    assert record.counts["notifier.Device"] == {"deleted": 1}
    assert record.counts["notifier.Delivery"]["cancelled"] == 1
    assert record.counts["notifier.Delivery"]["anonymised"] == len(deliveries)
    assert record.identifiers == report.identifiers == 3
    assert ErasedIdentifier.objects.filter(erasure=record).count() == 3


def test_routing_suppresses_what_was_still_to_route_and_notify_refuses(person, published):
    erase(person)
    unrouted = Message.objects.get(user=person, routed_at__isnull=True)
    messages_prepare(message_ids=[unrouted.pk])
    routed = Delivery.objects.get(message=unrouted)
    assert (routed.status, routed.reason) == (DeliveryStatus.SUPPRESSED, Reason.RECIPIENT_ERASED)
    assert not InboxItem.objects.filter(message=unrouted).exists()
    with pytest.raises(RecipientErased, match="erased at their request"):
        notify(person, "order.shipped", order_context())
    with pytest.raises(RecipientErased):
        notify_many([person.pk, UserFactory().pk], "order.shipped", order_context())


def test_notify_refuses_an_erased_person_whose_user_is_still_active(published):
    """A host keeps its user row as it is: the profile alone refuses them."""
    user = UserFactory()
    erase(user)
    User.objects.filter(pk=user.pk).update(is_active=True)
    with pytest.raises(RecipientErased):
        notify(user, "order.shipped", order_context())
    assert isinstance(RecipientErased("x"), InvalidRecipient)
    assert not Message.objects.filter(user=user).exists()


def test_a_second_run_changes_nothing_and_says_so(person):
    first = erase(person)
    second = erase(person)
    assert second.repeat and second.rows == 0 and second.identifiers == 0
    assert second.record_id != first.record_id
    assert ErasureRecord.objects.filter(recipient__user=person).count() == 2
    assert ErasedIdentifier.objects.count() == 3
    assert leftovers() == []


def test_a_dry_run_counts_and_writes_nothing(person):
    report = erase(person, dry_run=True)
    assert report.record_id is None and report.rows > 10 and report.identifiers == 3
    assert not ErasureRecord.objects.exists() and not ErasedIdentifier.objects.exists()
    assert Device.objects.filter(user=person).exists()
    assert recipient_for(User.objects.get(pk=person.pk)).email == EMAIL


def test_erasure_needs_a_reason_and_writes_nothing_without(person):
    for reason in ("", "   ", "x" * 2001):
        with pytest.raises(ErasureError):
            recipient_erase(recipient_for(person), by="test", reason=reason)
    assert not ErasureRecord.objects.exists()
    assert Device.objects.filter(user=person).exists()


def test_the_suppression_list_recognises_identifiers_written_any_way_and_lifts(person):
    erase(person)
    digests = list(ErasedIdentifier.objects.values_list("digest", flat=True))
    assert all(len(d) == 64 and EXTERNAL_ID not in d for d in digests)
    assert suppressed(email="  augusta.lovelace@EXAMPLE.org ")
    assert suppressed(phone="+86 138 0013 8123")
    assert suppressed(external_id=EXTERNAL_ID)
    assert not suppressed(email="someone.else@example.org", external_id="crm-other")
    assert not suppressed()
    assert suppressed_kinds(email=EMAIL, phone="+8613900000000") == ["email"]
    with pytest.raises(RecipientErased, match="email address and external id belong"):
        erasure_check(email=EMAIL, external_id=EXTERNAL_ID)

    identifier = ErasedIdentifier.objects.get(kind="email")
    assert suppression_lift(identifier=identifier, by="admin:root", reason="came back, ticket 9")
    assert not suppression_lift(identifier=identifier, by="admin:root", reason="again")
    assert not suppressed(email=EMAIL)
    assert suppressed(phone=PHONE)  # only what was lifted
    identifier.refresh_from_db()
    assert identifier.lifted_by == "admin:root" and identifier.lifted_at is not None
    # Erased again later: a new suppression in force beside the lifted one.
    again = UserFactory(email=EMAIL, phone="")
    erase(again)
    assert suppressed(email=EMAIL)
    assert ErasedIdentifier.objects.filter(kind="email").count() == 2


def test_a_rotated_secret_key_still_recognises_erased_identifiers(settings, person):
    erase(person)
    old = settings.SECRET_KEY
    with override_settings(SECRET_KEY="a-new-key-" + "x" * 50, SECRET_KEY_FALLBACKS=[old]):
        assert suppressed(email=EMAIL)
    with override_settings(SECRET_KEY="a-new-key-" + "x" * 50, SECRET_KEY_FALLBACKS=[]):
        assert not suppressed(email=EMAIL)


def test_an_import_does_not_bring_an_erased_person_back_until_lifted(person):
    erase(person)
    segment = Segment.objects.create(name="Re-import", use_member_list=True)
    # Someone signs up again with the same address: the list import still refuses it.
    returning = UserFactory(email=EMAIL.upper(), phone="")
    data = f"email,user_id\n{EMAIL.upper()},\n,{person.pk}\n,{returning.pk}\n".encode()
    preview = segment_members_preview(segment=segment, data=data)
    problems = [(row.line, row.problem) for row in preview.rows]
    assert problems == [(2, RowProblem.ERASED), (3, RowProblem.ERASED), (4, None)]
    assert "an admin can lift" in preview.rows[0].message

    suppression_lift(
        identifier=ErasedIdentifier.objects.get(kind="email"), by="admin:root", reason="back"
    )
    preview = segment_members_preview(segment=segment, data=data)
    assert preview.rows[0].problem is None and preview.rows[0].user_id == returning.pk
    assert preview.rows[1].problem == RowProblem.ERASED  # the erased profile itself stays out


def test_saving_the_users_address_again_does_not_refill_an_erased_profile():
    """A host's user row keeps its address: saving it must not copy it back."""
    user = UserFactory()
    erase(user)
    user = User.objects.get(pk=user.pk)
    user.email = "back@example.org"
    user.save()
    assert recipient_for(User.objects.get(pk=user.pk)).email == ""


def test_the_export_holds_everything_as_json(person):
    export = recipient_export(recipient_for(person))
    text = json.dumps(export)  # JSON-able as it is
    assert export["format"] == "notifier.recipient-export/1"
    assert export["recipient"]["email"] == EMAIL and export["recipient"]["phone"] == PHONE
    assert export["recipient"]["external_id"] == EXTERNAL_ID
    assert export["user"]["last_name"] == "Lovelace" and "password" not in export["user"]
    sent = next(m for m in export["messages"] if m["idempotency_key"])
    assert sent["context"]["carrier"] == "Lovelace Couriers"
    channels = {d["channel"]: d for d in sent["deliveries"]}
    assert set(channels) == {"inapp", "email", "sms", "push"}
    assert channels["email"]["content"]["subject"]
    assert any(e["error"].startswith("550 mailbox") for e in channels["email"]["events"])
    assert [d["token"] for d in export["devices"]] == [TOKEN]
    assert export["consent"][0]["wording"].startswith("Yes,")
    assert export["consent"][0]["ip_address"] == "203.0.113.9"
    # Her own switch, and the one her unsubscribe made.
    assert len(export["preferences"]) == 2 and len(export["unsubscribes"]) == 1
    assert len(export["inbox"]) == 1 and len(export["segment_memberships"]) == 1
    assert export["conversions"][0]["reference"] == ORDER
    assert len(export["holdouts"]) == 1 and len(export["trigger_entries"]) == 1
    assert {e["event_id"] for e in export["provider_events"]} == {"evt-0001", "sms-in-1"}
    assert export["erasures"] == []
    assert "Lovelace" in text

    erase(person)
    after = recipient_export(recipient_for(person))
    assert after["devices"] == [] and after["recipient"]["email"] == ""
    assert [e["reason"] for e in after["erasures"]] == ["ticket 1234"]
    assert not [s for s in SECRETS if s in json.dumps(after)]


def test_the_commands_erase_and_export_by_any_identifier(person, tmp_path):
    out = StringIO()
    call_command("notifier_export", "--external-id", EXTERNAL_ID, stdout=out)
    assert json.loads(out.getvalue())["recipient"]["email"] == EMAIL
    call_command("notifier_export", "--user", str(person.pk), "-o", str(tmp_path / "e.json"))
    assert json.loads((tmp_path / "e.json").read_text())["user"]["id"] == person.pk

    out = StringIO()
    call_command(
        "notifier_erase", "--email", EMAIL.upper(), "--reason", "t-1", "--dry-run", stdout=out
    )
    assert out.getvalue().startswith(f"Would erase recipient {recipient_for(person).pk}")
    assert not ErasureRecord.objects.exists()
    out = StringIO()
    call_command(
        "notifier_erase", "--external-id", EXTERNAL_ID, "--reason", "t-1", "--by", "dpo",
        stdout=out,
    )  # fmt: skip
    assert "notifier.Device: 1 deleted" in out.getvalue()
    assert ErasureRecord.objects.get().by == "dpo"
    with pytest.raises(CommandError, match="no recipient with external id"):
        call_command("notifier_erase", "--external-id", EXTERNAL_ID, "--reason", "t-1")
    with pytest.raises(CommandError, match="name the recipient by one of"):
        call_command("notifier_erase", "--user", "1", "--email", "a@b.c", "--reason", "t")
    with pytest.raises(CommandError, match="no recipient with email"):
        call_command("notifier_export", "--email", "nobody@example.org")


def test_erasing_someone_with_nothing_but_a_profile_works(published):
    user = UserFactory(email="", phone="")
    report = erase(user)
    assert report.identifiers == 0
    assert report.counts.keys() <= {"notifier.Recipient", "notifier.User"}
    assert recipient_for(User.objects.get(pk=user.pk)).erased_at is not None


def test_the_timeline_keeps_every_step_without_details(person):
    events = DeliveryEvent.objects.filter(delivery__user=person).count()
    erase(person)
    assert DeliveryEvent.objects.filter(delivery__user=person).count() == events + 1  # cancel
    assert not DeliveryEvent.objects.filter(delivery__user=person).exclude(error="").exists()


def test_old_links_and_preference_writes_cannot_record_choices_again(person, client):
    token = preferences_token(user_id=person.pk)
    url = reverse("notifier:preferences-page", kwargs={"token": token})
    assert client.get(url).status_code == 200
    erase(person)
    assert client.get(url).status_code == 400
    with pytest.raises(UnknownUser, match="erased"):
        consent_give(user_id=person.pk, channel="email", source="signup_form", wording="Yes")
    with pytest.raises(UnknownUser):
        preferences_update(
            user_id=person.pk,
            changes=[PreferenceChange(category="marketing", channel="sms", enabled=True)],
        )
    assert not Consent.objects.filter(user=person).exists()
    assert not Preference.objects.filter(user=person).exists()


def test_deleting_the_user_afterwards_keeps_the_record_and_the_suppression(person):
    """What a host does once Notifier's part is erased: its own user goes, rows cascade."""
    report = erase(person)
    User.objects.filter(pk=person.pk).delete()
    record = ErasureRecord.objects.get(pk=report.record_id)
    assert record.recipient_id is None and record.user_key == str(person.pk)
    assert suppressed(email=EMAIL) and suppressed(external_id=EXTERNAL_ID)
    assert not Delivery.objects.filter(user_id=person.pk).exists()


def test_the_service_api_does_not_take_an_erased_person_back(person, settings):
    """PUT /recipients/{external_id} and device registration refuse them; an admin's lift lets
    the external id in again, as a new person."""
    erase(person)
    key = api_key_create(name="crm", scopes=["recipients", "devices"]).token
    auth = {"HTTP_AUTHORIZATION": f"Bearer {key}"}
    client = Client()
    put = client.put(
        f"/api/v1/recipients/{EXTERNAL_ID}", {"time_zone": "UTC"}, "application/json", **auth
    )
    assert put.status_code == 422 and put.json()["type"] == "RecipientErased"
    other = client.put(
        "/api/v1/recipients/crm-someone-new", {"email": EMAIL.upper()}, "application/json", **auth
    )
    assert other.status_code == 422 and "email address" in other.json()["message"]
    with pytest.raises(RecipientErased):
        recipient_put("crm-linked", {}, user=person.pk)  # her own user, linked again
    with pytest.raises(DeviceError, match="erased"):
        device_register(
            Recipient.objects.get(user=person), platform="android", token="fcm-new-0001"
        )
    assert not Recipient.objects.filter(external_id__in=["crm-someone-new", "crm-linked"]).exists()

    suppression_lift(
        identifier=ErasedIdentifier.objects.get(kind="external_id"), by="admin:root", reason="back"
    )
    again = client.put(
        f"/api/v1/recipients/{EXTERNAL_ID}", {"time_zone": "UTC"}, "application/json", **auth
    )
    assert again.status_code == 201, again.content
    assert Recipient.objects.get(external_id=EXTERNAL_ID).user_id != person.pk


def test_a_send_under_way_is_cleared_by_a_follow_up_after_its_lease(
    person, monkeypatch, django_capture_on_commit_callbacks, settings
):
    """A delivery being sent cannot be cancelled; what its send writes after the erasure (a
    provider id, an error naming the address) is erased by the follow-up the erasure sets."""
    delivery = Delivery.objects.filter(user=person).order_by("pk").first()
    Delivery.objects.filter(pk=delivery.pk).update(status="sending")  # claimed by a worker
    sent: list[tuple[str, dict]] = []
    monkeypatch.setattr(dispatch, "publish", lambda name, **options: sent.append((name, options)))
    with django_capture_on_commit_callbacks(execute=True):
        first = erase(person)
    [(name, options)] = sent
    assert name == "notifier.erase_again"
    assert options["countdown"] >= 2 * settings.NOTIFIER_CLAIM_LEASE_S
    # The send finishes after the erasure and writes what the provider answered.
    Delivery.objects.filter(pk=delivery.pk).update(
        status="sent", provider_message_id="prov-123", last_error="to sam@example.com"
    )
    with django_capture_on_commit_callbacks(execute=True):
        again = recipient_erase_again(**options["kwargs"])
    assert again is not None and again.repeat
    assert sent[1:] == []  # a follow-up sets no further one
    delivery.refresh_from_db()
    assert (delivery.provider_message_id, delivery.last_error) == ("", "")
    assert ErasureRecord.objects.get(pk=again.record_id).reason.startswith(
        f"follow-up of erasure #{first.record_id}"
    )
