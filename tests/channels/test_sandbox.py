"""The sandbox providers: magic recipients, random failure rates, and the SandboxSend ledger."""

from __future__ import annotations

import random

import pytest

from channels import sandbox
from channels.base import Channel, Content, ErrorCode, Outcome, Outgoing, PushTarget
from channels.models import SandboxSend
from channels.sandbox import (
    SandboxEmailProvider,
    SandboxPushProvider,
    SandboxSmsProvider,
    ledger_sends,
)

pytestmark = pytest.mark.django_db

CONTENT = Content(subject="Your order shipped", title="Shipped", body="It is on its way.")


def email(recipient: str, *, attempt: int = 1, delivery_id: int = 1) -> Outgoing:
    return Outgoing(
        delivery_id=delivery_id,
        message_id=100 + delivery_id,
        user_id=7,
        channel=Channel.EMAIL,
        type_key="order.shipped",
        content=CONTENT,
        attempt=attempt,
        email=recipient,
        headers={"X-Campaign": "spring"},
    )


def sms(recipient: str, *, attempt: int = 1, delivery_id: int = 1) -> Outgoing:
    return Outgoing(
        delivery_id=delivery_id,
        message_id=100 + delivery_id,
        user_id=7,
        channel=Channel.SMS,
        type_key="order.shipped",
        content=CONTENT,
        attempt=attempt,
        phone=recipient,
    )


def push(*tokens: str, attempt: int = 1, delivery_id: int = 1) -> Outgoing:
    devices = tuple(
        PushTarget(device_id=10 + i, platform="android", token=token)
        for i, token in enumerate(tokens)
    )
    return Outgoing(
        delivery_id=delivery_id,
        message_id=100 + delivery_id,
        user_id=7,
        channel=Channel.PUSH,
        type_key="order.shipped",
        content=CONTENT,
        attempt=attempt,
        devices=devices,
    )


# --- magic recipients -------------------------------------------------------------------------


def test_an_ordinary_recipient_is_sent_with_a_sandbox_message_id():
    [result] = SandboxEmailProvider().send_many([email("ann@example.com", delivery_id=5)])

    assert result.outcome is Outcome.SENT
    assert result.provider == "sandbox"
    assert result.provider_message_id == "sandbox-5-1"
    assert result.error_code is None


def test_fail_permanent_email_is_an_invalid_recipient():
    [result] = SandboxEmailProvider().send_many([email("fail-permanent@example.com")])

    assert result.outcome is Outcome.PERMANENT
    assert result.error_code is ErrorCode.INVALID_RECIPIENT
    assert "fail-permanent@example.com" in result.error
    assert result.deactivate_device_ids == ()


def test_fail_permanent_sms_is_an_invalid_recipient():
    [result] = SandboxSmsProvider().send_many([sms("+15550000fail-permanent")])

    assert result.outcome is Outcome.PERMANENT
    assert result.error_code is ErrorCode.INVALID_RECIPIENT


def test_fail_permanent_push_returns_every_device_for_deactivation():
    outgoing = push("fcm-token-a", "fail-permanent-token")

    [result] = SandboxPushProvider().send_many([outgoing])

    assert result.outcome is Outcome.PERMANENT
    assert result.error_code is ErrorCode.DEVICE_UNREGISTERED
    assert result.deactivate_device_ids == (10, 11)


def test_fail_transient_n_fails_attempts_up_to_n_then_succeeds():
    provider = SandboxEmailProvider()
    results = [
        provider.send_many([email("fail-transient-2@example.com", attempt=attempt)])[0]
        for attempt in (1, 2, 3, 4)
    ]

    assert [r.outcome for r in results] == [
        Outcome.TRANSIENT,
        Outcome.TRANSIENT,
        Outcome.SENT,
        Outcome.SENT,
    ]
    assert [r.error_code for r in results[:2]] == [ErrorCode.TIMEOUT, ErrorCode.TIMEOUT]
    assert "attempt 2" in results[1].error
    assert results[2].provider_message_id == "sandbox-1-3"


def test_fail_transient_0_never_fails():
    [result] = SandboxSmsProvider().send_many([sms("+1555fail-transient-0", attempt=1)])

    assert result.outcome is Outcome.SENT


def test_fail_always_fails_transiently_on_every_attempt():
    provider = SandboxSmsProvider()
    results = [
        provider.send_many([sms("+1555fail-always", attempt=attempt)])[0]
        for attempt in range(1, 11)
    ]

    assert {r.outcome for r in results} == {Outcome.TRANSIENT}
    assert {r.error_code for r in results} == {ErrorCode.PROVIDER_UNAVAILABLE}


def test_each_outgoing_of_a_batch_gets_its_own_result_in_order():
    outgoings = [
        email("ok@example.com", delivery_id=1),
        email("fail-permanent@example.com", delivery_id=2),
        email("fail-always@example.com", delivery_id=3),
        email("also-ok@example.com", delivery_id=4),
    ]

    results = SandboxEmailProvider().send_many(outgoings)

    assert [r.outcome for r in results] == [
        Outcome.SENT,
        Outcome.PERMANENT,
        Outcome.TRANSIENT,
        Outcome.SENT,
    ]


# --- random failure rates ---------------------------------------------------------------------


def test_permanent_failure_rate_one_rejects_every_send(settings):
    settings.NOTIFIER_SANDBOX_PERMANENT_FAILURE_RATE = 1.0
    settings.NOTIFIER_SANDBOX_TRANSIENT_FAILURE_RATE = 0.0

    results = SandboxEmailProvider().send_many(
        [email(f"u{i}@example.com", delivery_id=i) for i in range(20)]
    )

    assert {r.outcome for r in results} == {Outcome.PERMANENT}
    assert {r.error_code for r in results} == {ErrorCode.REJECTED}


def test_transient_failure_rate_one_fails_every_send_transiently(settings):
    settings.NOTIFIER_SANDBOX_PERMANENT_FAILURE_RATE = 0.0
    settings.NOTIFIER_SANDBOX_TRANSIENT_FAILURE_RATE = 1.0

    results = SandboxSmsProvider().send_many(
        [sms(f"+1555000{i:04d}", delivery_id=i) for i in range(20)]
    )

    assert {r.outcome for r in results} == {Outcome.TRANSIENT}
    assert {r.error_code for r in results} == {ErrorCode.PROVIDER_UNAVAILABLE}


def test_zero_failure_rates_send_everything(settings):
    settings.NOTIFIER_SANDBOX_PERMANENT_FAILURE_RATE = 0.0
    settings.NOTIFIER_SANDBOX_TRANSIENT_FAILURE_RATE = 0.0

    results = SandboxEmailProvider().send_many(
        [email(f"u{i}@example.com", delivery_id=i) for i in range(20)]
    )

    assert {r.outcome for r in results} == {Outcome.SENT}


def test_random_failures_follow_the_rates_with_a_seeded_random(settings, monkeypatch):
    settings.NOTIFIER_SANDBOX_PERMANENT_FAILURE_RATE = 0.2
    settings.NOTIFIER_SANDBOX_TRANSIENT_FAILURE_RATE = 0.3
    monkeypatch.setattr(sandbox, "random", random.Random(1234))
    rolls = random.Random(1234)
    expected = []
    for _ in range(200):
        roll = rolls.random()
        expected.append(
            Outcome.PERMANENT if roll < 0.2 else Outcome.TRANSIENT if roll < 0.5 else Outcome.SENT
        )

    results = SandboxEmailProvider().send_many(
        [email(f"u{i}@example.com", delivery_id=i) for i in range(200)]
    )

    assert [r.outcome for r in results] == expected
    # All three outcomes occur, roughly in the configured shares.
    counts = {o: expected.count(o) for o in Outcome}
    assert 20 <= counts[Outcome.PERMANENT] <= 60
    assert 40 <= counts[Outcome.TRANSIENT] <= 80
    assert counts[Outcome.SENT] >= 70


def test_magic_recipients_win_over_random_rates(settings):
    settings.NOTIFIER_SANDBOX_PERMANENT_FAILURE_RATE = 0.0
    settings.NOTIFIER_SANDBOX_TRANSIENT_FAILURE_RATE = 1.0

    [result] = SandboxEmailProvider().send_many([email("fail-permanent@example.com")])

    assert result.outcome is Outcome.PERMANENT
    assert result.error_code is ErrorCode.INVALID_RECIPIENT


def test_latency_setting_sleeps_once_per_message(settings, monkeypatch):
    sleeps: list[float] = []
    monkeypatch.setattr(sandbox.time, "sleep", sleeps.append)
    settings.NOTIFIER_SANDBOX_LATENCY_MS = 25

    SandboxEmailProvider().send_many([email("a@example.com"), email("b@example.com")])

    assert sleeps == [0.025, 0.025]


def test_no_latency_setting_never_sleeps(settings, monkeypatch):
    sleeps: list[float] = []
    monkeypatch.setattr(sandbox.time, "sleep", sleeps.append)
    settings.NOTIFIER_SANDBOX_LATENCY_MS = 0

    SandboxEmailProvider().send_many([email("a@example.com")])

    assert sleeps == []


# --- the ledger -------------------------------------------------------------------------------


def test_every_attempt_writes_a_ledger_row_with_its_outcome():
    provider = SandboxEmailProvider()
    for attempt in (1, 2, 3):
        provider.send_many([email("fail-transient-2@example.com", attempt=attempt, delivery_id=9)])

    rows = list(SandboxSend.objects.filter(delivery_id=9).order_by("attempt"))

    assert [(r.attempt, r.outcome) for r in rows] == [
        (1, Outcome.TRANSIENT),
        (2, Outcome.TRANSIENT),
        (3, Outcome.SENT),
    ]
    row = rows[-1]
    assert row.channel == Channel.EMAIL
    assert row.provider == "sandbox"
    assert row.message_id == 109
    assert row.recipient == "fail-transient-2@example.com"
    assert row.payload == {
        "content": {
            "subject": "Your order shipped",
            "title": "Shipped",
            "body": "It is on its way.",
        },
        "headers": {"X-Campaign": "spring"},
    }


def test_failed_sends_are_recorded_in_the_ledger_too():
    SandboxSmsProvider().send_many(
        [
            sms("+1555fail-permanent", delivery_id=1),
            sms("+1555fail-always", delivery_id=2),
            sms("+15550001111", delivery_id=3),
        ]
    )

    rows = {r.delivery_id: r for r in SandboxSend.objects.all()}

    assert {d: (r.channel, r.outcome) for d, r in rows.items()} == {
        1: (Channel.SMS, Outcome.PERMANENT),
        2: (Channel.SMS, Outcome.TRANSIENT),
        3: (Channel.SMS, Outcome.SENT),
    }


def test_push_ledger_rows_name_every_device_token():
    SandboxPushProvider().send_many([push("tok-a", "tok-b", delivery_id=4)])

    row = SandboxSend.objects.get(delivery_id=4)
    assert row.channel == Channel.PUSH
    assert row.recipient == "tok-a,tok-b"
    assert row.outcome == Outcome.SENT


def test_ledger_sends_lists_only_successful_sends_filtered_by_channel():
    SandboxEmailProvider().send_many(
        [
            email("ok@example.com", delivery_id=1),
            email("fail-permanent@x.com", delivery_id=2),
        ]
    )
    SandboxSmsProvider().send_many([sms("+15550001111", delivery_id=3)])

    assert [r.delivery_id for r in ledger_sends()] == [1, 3]
    assert [r.delivery_id for r in ledger_sends(Channel.EMAIL)] == [1]
    assert [r.delivery_id for r in ledger_sends(Channel.SMS)] == [3]
    assert ledger_sends(Channel.PUSH) == []


def test_sandbox_providers_need_no_configuration():
    for cls in (SandboxEmailProvider, SandboxSmsProvider, SandboxPushProvider):
        assert cls.configuration_problems() == []
        assert cls.in_database is False
    assert SandboxEmailProvider.channel is Channel.EMAIL
    assert SandboxSmsProvider.channel is Channel.SMS
    assert SandboxPushProvider.channel is Channel.PUSH


# --- Idempotency keys and outages ---------------------------------------------------------------


def test_a_repeated_idempotency_key_is_answered_without_a_second_send():
    provider = SandboxEmailProvider()
    outgoing = email("a@example.com", delivery_id=4242)
    first = provider.send_many([outgoing])[0]
    again = provider.send_many([outgoing])[0]  # a worker died after the send, before recording
    assert again.outcome is Outcome.SENT
    assert again.provider_message_id == first.provider_message_id
    assert again.detail == {"replayed": True}
    outcomes = list(SandboxSend.objects.filter(delivery_id=4242).values_list("outcome", flat=True))
    assert sorted(outcomes) == ["replayed", "sent"]


def test_during_an_outage_the_sandbox_answers_503_and_after_it_sends():
    from datetime import timedelta

    from django.utils import timezone

    from channels.models import SandboxOutage

    outage = SandboxOutage.objects.create(
        channel="sms", until=timezone.now() + timedelta(minutes=1)
    )
    outgoing = sms("+8613800138000", delivery_id=77)
    down = SandboxSmsProvider().send_many([outgoing])[0]
    assert (down.outcome, down.error_code) == (Outcome.TRANSIENT, ErrorCode.PROVIDER_UNAVAILABLE)
    outage.delete()
    assert SandboxSmsProvider().send_many([outgoing])[0].outcome is Outcome.SENT


# --- Requests: one message with a latency, a batch when instant -----------------------------------


def test_an_instant_sandbox_puts_each_request_on_the_ledger_before_answering_it(settings):
    settings.NOTIFIER_SANDBOX_LATENCY_MS = 0
    settings.NOTIFIER_SANDBOX_BATCH = 3
    seen: list[str] = []

    def outgoings():
        for i in range(1, 8):
            seen.append(f"take {i}")
            yield email(f"u{i}@example.com", delivery_id=i)

    ledger_at_answer = []
    for outgoing, result in SandboxEmailProvider().send_each(outgoings()):
        seen.append(f"answer {outgoing.delivery_id}")
        ledger_at_answer.append(SandboxSend.objects.count())
        assert result.outcome is Outcome.SENT

    # A request of three is taken whole, written, then answered one by one; the next request
    # is taken only once every answer of the last was taken.
    assert seen == [
        *("take 1", "take 2", "take 3", "answer 1", "answer 2", "answer 3"),
        *("take 4", "take 5", "take 6", "answer 4", "answer 5", "answer 6"),
        *("take 7", "answer 7"),
    ]
    assert ledger_at_answer == [3, 3, 3, 6, 6, 6, 7]


def test_a_sandbox_with_a_latency_takes_one_message_per_request(settings, monkeypatch):
    monkeypatch.setattr(sandbox.time, "sleep", lambda _: None)
    settings.NOTIFIER_SANDBOX_LATENCY_MS = 20
    settings.NOTIFIER_SANDBOX_BATCH = 100
    ledger_at_answer = [
        SandboxSend.objects.count()
        for _ in SandboxEmailProvider().send_each(
            email(f"u{i}@example.com", delivery_id=i) for i in range(1, 4)
        )
    ]
    assert ledger_at_answer == [1, 2, 3]


def test_replays_are_answered_per_message_within_a_request(settings):
    settings.NOTIFIER_SANDBOX_BATCH = 10
    provider = SandboxEmailProvider()
    [first] = provider.send_many([email("a@example.com", delivery_id=31)])

    results = provider.send_many(
        [
            email("a@example.com", delivery_id=31, attempt=2),  # a worker died after sending
            email("b@example.com", delivery_id=32),
            email("fail-permanent@example.com", delivery_id=33),
        ]
    )

    assert [(r.outcome, r.provider_message_id, r.detail) for r in results] == [
        (Outcome.SENT, first.provider_message_id, {"replayed": True}),
        (Outcome.SENT, "sandbox-32-1", {}),
        (Outcome.PERMANENT, "", {}),
    ]
    rows = SandboxSend.objects.filter(delivery_id__in=[31, 32, 33]).order_by("id")
    assert [(r.delivery_id, r.outcome, r.provider_message_id) for r in rows] == [
        (31, "sent", "sandbox-31-1"),
        (31, "replayed", "sandbox-31-1"),
        (32, "sent", "sandbox-32-1"),
        (33, "permanent", ""),
    ]
