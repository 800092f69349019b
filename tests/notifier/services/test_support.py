"""Support's audited fixes (notifier.services.support), on PostgreSQL: each is recorded with
who, when, what and why; bad input is refused with words and writes nothing; a resend is one
new message per click, even when the click arrives twice at once."""

from __future__ import annotations

import threading
import uuid
from datetime import UTC, datetime, timedelta

import pytest
from django.db import connection
from django.utils import timezone

from notifier.api import notify
from notifier.models import (
    Delivery,
    DeliveryEvent,
    Message,
    SupportAction,
    SupportActionKind,
    SuppressedAddress,
    SuppressionReason,
    User,
    recipient_for,
)
from notifier.services.erasure import recipient_erase
from notifier.services.pipeline import messages_prepare
from notifier.services.support import (
    Agent,
    SupportFixError,
    support_cancel,
    support_contact_correct,
    support_note_add,
    support_resend,
    support_suppression_lift,
)
from notifier.status import DeliveryStatus, Reason
from tests.factories import UserFactory, order_context

pytestmark = pytest.mark.django_db


@pytest.fixture
def agent() -> Agent:
    staff = UserFactory(username="agent-lee", is_staff=True)
    return Agent.of(staff)


@pytest.fixture
def customer() -> User:
    return UserFactory(email="mei@example.com", phone="+8613800138000")


def sent_message(user: User) -> Message:
    message = notify(user, "order.shipped", order_context(), channels=["inapp", "email"])
    messages_prepare(message_ids=[message.pk])
    return message


def test_a_note_is_recorded_with_who_when_and_why(published, agent, customer):
    action = support_note_add(
        recipient=recipient_for(customer), agent=agent, why="Ticket 42: called about parcel"
    )
    row = SupportAction.objects.get(pk=action.pk)
    assert (row.kind, row.by_id, row.by_name) == (
        SupportActionKind.NOTE,
        agent.user_id,
        "agent-lee",
    )
    assert row.why == "Ticket 42: called about parcel"
    assert (datetime.now(UTC) - row.at).total_seconds() < 60


@pytest.mark.parametrize("why", ["", "   ", None, "x" * 2001])
def test_every_fix_needs_a_why(published, agent, customer, why):
    profile = recipient_for(customer)
    with pytest.raises(SupportFixError, match=r"why|reason"):
        support_note_add(recipient=profile, agent=agent, why=why)  # type: ignore[arg-type]
    with pytest.raises(SupportFixError, match=r"why|reason"):
        support_contact_correct(
            recipient=profile, agent=agent, field="email", value="a@b.com", why=why
        )  # type: ignore[arg-type]
    assert not SupportAction.objects.exists()


def test_correcting_the_email_changes_the_profile_and_the_user_and_records_both_values(
    published, agent, customer
):
    profile = recipient_for(customer)
    support_contact_correct(
        recipient=profile, agent=agent, field="email", value=" mei.li@example.com ", why="T-7"
    )
    profile.refresh_from_db()
    customer.refresh_from_db()
    assert profile.email == customer.email == "mei.li@example.com"
    action = SupportAction.objects.get()
    assert action.kind == SupportActionKind.CONTACT
    assert action.detail == {
        "field": "email",
        "from": "mei@example.com",
        "to": "mei.li@example.com",
    }


@pytest.mark.parametrize(
    ("field", "value", "words"),
    [
        ("email", "not-an-address", "is not an email address"),
        ("email", "", "Type the email address"),
        ("phone", "12345", "is not a valid phone number"),
        ("phone", "+86 138 0013", "is not a valid phone number"),
        ("username", "x", "Only email or phone"),
    ],
)
def test_a_bad_contact_point_is_refused_in_words_and_nothing_changes(
    published, agent, customer, field, value, words
):
    profile = recipient_for(customer)
    with pytest.raises(SupportFixError, match=words):
        support_contact_correct(recipient=profile, agent=agent, field=field, value=value, why="T")
    profile.refresh_from_db()
    assert (profile.email, profile.phone) == ("mei@example.com", "+8613800138000")
    assert not SupportAction.objects.exists()


def test_a_phone_typed_in_the_national_format_is_stored_in_e164(
    published, agent, customer, settings
):
    settings.NOTIFIER_DEFAULT_REGION = "CN"
    profile = recipient_for(customer)
    support_contact_correct(
        recipient=profile, agent=agent, field="phone", value="139-0013-9000", why="T-8"
    )
    profile.refresh_from_db()
    assert profile.phone == "+8613900139000"
    assert SupportAction.objects.get().detail["to"] == "+8613900139000"


def test_an_erased_persons_record_is_not_changed(published, agent, customer):
    profile = recipient_for(customer)
    recipient_erase(profile, by="admin:x", reason="ticket 1")
    profile.refresh_from_db()
    with pytest.raises(SupportFixError, match="erased"):
        support_contact_correct(
            recipient=profile, agent=agent, field="email", value="new@example.com", why="T"
        )


def test_lifting_a_suppression_removes_it_and_records_what_it_said(published, agent, customer):
    row = SuppressedAddress.objects.create(
        address="mei@example.com",
        reason=SuppressionReason.BOUNCED,
        source="mailgun",
        at=datetime(2026, 11, 1, tzinfo=UTC),
    )
    profile = recipient_for(customer)
    support_suppression_lift(
        recipient=profile, agent=agent, suppression_id=row.pk, why="T-9: mailbox fixed"
    )
    assert not SuppressedAddress.objects.exists()
    action = SupportAction.objects.get()
    assert action.kind == SupportActionKind.UNSUPPRESS
    assert action.detail["address"] == "mei@example.com"
    assert action.detail["reason"] == "bounced"
    assert action.detail["since"].startswith("2026-11-01")
    with pytest.raises(SupportFixError, match="lifted already"):
        support_suppression_lift(recipient=profile, agent=agent, suppression_id=row.pk, why="T")


def test_someone_elses_suppression_cannot_be_lifted_from_this_page(published, agent, customer):
    other = SuppressedAddress.objects.create(
        address="else@example.com", reason="bounced", source="x", at=datetime.now(UTC)
    )
    with pytest.raises(SupportFixError):
        support_suppression_lift(
            recipient=recipient_for(customer), agent=agent, suppression_id=other.pk, why="T"
        )
    assert SuppressedAddress.objects.filter(pk=other.pk).exists()


def test_a_resend_is_a_new_message_through_the_pipeline(
    published, agent, customer, django_capture_on_commit_callbacks
):
    original = sent_message(customer)
    with django_capture_on_commit_callbacks(execute=True):
        resend = support_resend(
            recipient=recipient_for(customer),
            agent=agent,
            message_id=original.pk,
            channels=["email"],
            token=uuid.uuid4(),
            why="T-10: did not arrive",
        )
    assert resend.created
    new = Message.objects.get(pk=resend.action.message_id)
    assert new.pk != original.pk
    assert (new.type_id, new.context, new.channels) == (
        "order.shipped",
        original.context,
        ["email"],
    )
    assert new.pk in [pk for ids, _ in published.prepare for pk in ids]  # handed to the pipeline
    assert resend.action.detail == {"resent": original.pk, "channels": ["email"]}


def test_the_same_click_twice_resends_once(published, agent, customer):
    original = sent_message(customer)
    token = uuid.uuid4()
    kwargs = {
        "recipient": recipient_for(customer),
        "agent": agent,
        "message_id": original.pk,
        "channels": ["inapp"],
        "token": token,
        "why": "T-11",
    }
    first, second = support_resend(**kwargs), support_resend(**kwargs)
    assert (first.created, second.created) == (True, False)
    assert first.action.pk == second.action.pk
    assert Message.objects.filter(user=customer).count() == 2


def test_a_resend_on_a_channel_it_never_used_is_refused(published, agent, customer):
    original = sent_message(customer)
    with pytest.raises(SupportFixError, match="went out on email, inapp"):
        support_resend(
            recipient=recipient_for(customer),
            agent=agent,
            message_id=original.pk,
            channels=["sms"],
            token=uuid.uuid4(),
            why="T",
        )
    assert not SupportAction.objects.exists()


def test_another_customers_message_is_not_resent(published, agent, customer):
    theirs = sent_message(UserFactory())
    with pytest.raises(SupportFixError, match="is not this customer's"):
        support_resend(
            recipient=recipient_for(customer),
            agent=agent,
            message_id=theirs.pk,
            channels=["inapp"],
            token=uuid.uuid4(),
            why="T",
        )


@pytest.mark.django_db(transaction=True)
def test_a_double_submit_at_the_same_moment_resends_once(published, agent, customer):
    """Two requests with the same form token, in two connections at once: one new message."""
    original = sent_message(customer)
    token = uuid.uuid4()
    start = threading.Barrier(2)
    results: list[object] = []

    def submit() -> None:
        try:
            start.wait(timeout=10)
            results.append(
                support_resend(
                    recipient=recipient_for(User.objects.get(pk=customer.pk)),
                    agent=agent,
                    message_id=original.pk,
                    channels=["inapp"],
                    token=token,
                    why="T-12: double click",
                )
            )
        except Exception as exc:  # kept, so the assertion below names it
            results.append(exc)
        finally:
            connection.close()

    threads = [threading.Thread(target=submit) for _ in range(2)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=30)
    assert len(results) == 2, results
    assert sorted(r.created for r in results) == [False, True], results  # type: ignore[union-attr]
    assert SupportAction.objects.filter(token=token).count() == 1
    assert Message.objects.filter(user=customer).count() == 2


# --- Cancelling a message before it goes out ----------------------------------------------------


def test_support_cancels_a_scheduled_message_and_the_fix_is_on_the_log(published, agent, customer):
    later = timezone.now() + timedelta(days=1)
    message = notify(
        customer, "order.shipped", order_context(), channels=["inapp", "email"], send_at=later
    )
    messages_prepare(message_ids=[message.pk])
    click = uuid.uuid4()
    action = support_cancel(
        recipient=recipient_for(customer),
        agent=agent,
        message_id=message.pk,
        token=click,
        why="T-9: refund",
    )
    assert (action.kind, action.by_name, action.why) == (
        SupportActionKind.CANCEL,
        "agent-lee",
        "T-9: refund",
    )
    assert action.detail == {"cancelled": message.pk, "deliveries": 2}
    assert action.message_id == message.pk
    assert set(Delivery.objects.filter(message=message).values_list("status", "reason")) == {
        (DeliveryStatus.CANCELLED, Reason.SUPPORT_CANCELLED)
    }
    event = DeliveryEvent.objects.filter(delivery__message=message, kind="cancelled").first()
    assert event is not None and event.detail == {
        "action": "cancelled by support",
        "by": "agent-lee",
    }


def test_a_message_with_nothing_left_to_cancel_is_refused_and_nothing_is_logged(
    published, agent, customer
):
    message = notify(customer, "order.shipped", order_context(), channels=["inapp"])
    messages_prepare(message_ids=[message.pk])  # in-app: in the inbox at once
    with pytest.raises(SupportFixError, match="nothing left to cancel"):
        support_cancel(
            recipient=recipient_for(customer),
            agent=agent,
            message_id=message.pk,
            token=uuid.uuid4(),
            why="T-10",
        )
    assert not SupportAction.objects.filter(kind=SupportActionKind.CANCEL).exists()


def test_support_cannot_cancel_another_customers_message(published, agent, customer):
    other = notify(UserFactory(), "order.shipped", order_context(), channels=["email"])
    with pytest.raises(SupportFixError, match="not this customer's"):
        support_cancel(
            recipient=recipient_for(customer),
            agent=agent,
            message_id=other.pk,
            token=uuid.uuid4(),
            why="T-11",
        )
    assert Message.objects.get(pk=other.pk).routed_at is None
