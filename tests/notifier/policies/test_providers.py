"""Provider events read into decisions: pure functions, no database."""

from __future__ import annotations

import datetime as dt

import pytest

from channels.base import Channel
from notifier.models.providers import SuppressionReason
from notifier.policies.providers import (
    Keyword,
    email_event_action,
    event_time_problem,
    signed_timestamp,
    sms_keyword,
    sms_status_action,
    too_old,
)
from notifier.policies.routing import Action, Recipient, decide_channel
from notifier.services.callbacks import ProviderStatus as P
from notifier.status import Reason

# --- Email (anymail's normalised event types) --------------------------------------------------


@pytest.mark.parametrize(
    ("event_type", "status", "suppress"),
    [
        ("delivered", P.DELIVERED, None),
        ("opened", P.OPENED, None),
        ("clicked", P.CLICKED, None),
        ("bounced", P.BOUNCED, SuppressionReason.BOUNCED),  # no reason given: a hard bounce
        ("complained", P.COMPLAINED, SuppressionReason.COMPLAINED),
        ("deferred", P.DEFERRED, None),
        ("unsubscribed", P.UNSUBSCRIBED, None),
        ("failed", P.REJECTED, None),
        ("queued", None, None),
        ("sent", None, None),
        ("autoresponded", None, None),
        ("unknown", None, None),
    ],
)
def test_each_email_event_type_has_its_move_and_suppression(event_type, status, suppress):
    action = email_event_action(event_type, None)
    assert (action.status, action.suppress) == (status, suppress)
    assert action.why


@pytest.mark.parametrize(
    ("reject_reason", "soft", "failure", "suppress"),
    [
        ("bounced", False, Reason.INVALID_RECIPIENT, SuppressionReason.BOUNCED),
        ("invalid", False, Reason.INVALID_RECIPIENT, SuppressionReason.BOUNCED),
        ("bounced", True, Reason.UNDELIVERED, None),  # Postmark's SoftBounce
        ("blocked", False, Reason.UNDELIVERED, None),  # SendGrid's "blocked"
        ("other", False, Reason.UNDELIVERED, None),  # Mailgun's permanent "generic"
    ],
)
def test_only_a_hard_bounce_suppresses(reject_reason, soft, failure, suppress):
    action = email_event_action("bounced", reject_reason, soft_bounce=soft)
    assert (action.status, action.failure_reason, action.suppress) == (
        P.BOUNCED,
        failure,
        suppress,
    )


def test_only_unsubscribed_unsubscribes():
    assert email_event_action("unsubscribed", None).unsubscribe
    assert not any(
        email_event_action(t, None).unsubscribe for t in ("complained", "bounced", "clicked")
    )


@pytest.mark.parametrize(
    ("reject_reason", "failure", "suppress"),
    [
        ("bounced", Reason.INVALID_RECIPIENT, SuppressionReason.BOUNCED),
        ("invalid", Reason.INVALID_RECIPIENT, SuppressionReason.INVALID),
        ("blocked", Reason.PROVIDER_REJECTED, None),
        ("spam", Reason.PROVIDER_REJECTED, None),
        ("timed_out", Reason.PROVIDER_REJECTED, None),
        (None, Reason.PROVIDER_REJECTED, None),
    ],
)
def test_a_rejection_suppresses_only_when_the_address_is_no_good(reject_reason, failure, suppress):
    action = email_event_action("rejected", reject_reason)
    assert (action.status, action.failure_reason) == (P.REJECTED, failure)
    assert action.suppress == suppress


# --- Twilio statuses ---------------------------------------------------------------------------


@pytest.mark.parametrize("status", ["accepted", "queued", "sending", "sent", "canceled", "SENT"])
def test_in_progress_twilio_statuses_move_nothing(status):
    assert sms_status_action(status, "").status is None


def test_delivered_and_read_move_forward():
    assert sms_status_action("delivered", "").status is P.DELIVERED
    assert sms_status_action("read", "").status is P.OPENED


@pytest.mark.parametrize(
    ("status", "reason"),
    [("undelivered", Reason.UNDELIVERED), ("failed", Reason.PROVIDER_REJECTED)],
)
def test_undelivered_and_failed_fail_with_the_error_code_in_words(status, reason):
    action = sms_status_action(status, "30003")
    assert (action.status, action.failure_reason) == (P.REJECTED, reason)
    assert "30003" in action.why


def test_an_unknown_twilio_status_is_left_alone():
    assert sms_status_action("teleported", "").status is None


# --- STOP and START ----------------------------------------------------------------------------


@pytest.mark.parametrize(
    "body",
    [
        "STOP",
        "stop",
        " Stop ",
        "STOP!",
        "stop all",
        "STOPALL",
        "Unsubscribe",
        "cancel",
        "END",
        "quit",
        "s t o p",
    ],
)
def test_stop_words_whatever_the_case_spaces_or_punctuation(body):
    assert sms_keyword(body) is Keyword.STOP


@pytest.mark.parametrize("body", ["START", "start", " Unstop "])
def test_start_words(body):
    assert sms_keyword(body) is Keyword.START


@pytest.mark.parametrize(
    "body", ["", "please stop", "stop it", "STOP sending me offers", "yes", "thanks", "停止"]
)
def test_other_texts_are_not_keywords(body):
    assert sms_keyword(body) is None


# --- Signed timestamps ---------------------------------------------------------------------------

NOW = dt.datetime(2026, 1, 1, 12, 0, tzinfo=dt.UTC)


def test_a_signed_timestamp_older_or_further_ahead_than_the_limit_is_too_old():
    limit = 3600
    assert not too_old(NOW - dt.timedelta(seconds=3600), now=NOW, max_age_s=limit)
    assert too_old(NOW - dt.timedelta(seconds=3601), now=NOW, max_age_s=limit)
    assert too_old(NOW + dt.timedelta(seconds=3601), now=NOW, max_age_s=limit)
    assert not too_old(None, now=NOW, max_age_s=limit)  # the ESP signs no timestamp
    assert not too_old(NOW - dt.timedelta(days=9), now=NOW, max_age_s=0)  # switched off


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        ("1767268800", NOW),
        (1767268800, NOW),
        ("0", dt.datetime(1970, 1, 1, tzinfo=dt.UTC)),
    ],
)
def test_a_signed_timestamp_is_whole_seconds_in_ascii_digits(raw, expected):
    assert signed_timestamp(raw) == expected


@pytest.mark.parametrize(
    "raw",
    [
        "nan",
        "NaN",
        "inf",
        "-inf",
        "1e20",
        "1767268800.5",
        "-1",
        "",
        " 1 ",
        "\u0661",
        True,
        None,
        1.5,
        "9" * 12,
        ["1"],
    ],
)
def test_anything_else_is_no_signed_timestamp(raw):
    """float("nan") compared as neither old nor new and passed as fresh; "inf" and "1e20" are
    past what a datetime holds."""
    assert signed_timestamp(raw) is None


def test_an_event_time_more_than_a_year_back_or_a_day_ahead_is_not_one_a_provider_reports():
    assert event_time_problem(None, now=NOW) is None
    assert event_time_problem(NOW - dt.timedelta(days=365), now=NOW) is None
    assert event_time_problem(NOW + dt.timedelta(days=1), now=NOW) is None
    assert event_time_problem(NOW - dt.timedelta(days=366), now=NOW)
    assert event_time_problem(NOW + dt.timedelta(days=2), now=NOW)
    far = dt.datetime(9999, 12, 31, tzinfo=dt.timezone(dt.timedelta(hours=-15)))
    assert "9999-12-31" in (event_time_problem(far, now=NOW) or "")


# --- Routing honours the suppression list --------------------------------------------------------


def test_a_suppressed_email_address_suppresses_email_only():
    recipient = Recipient(True, "a@example.com", "+8613800138000", 1, email_suppressed=True)
    channels = frozenset(c.value for c in Channel)

    email = decide_channel(Channel.EMAIL, recipient, type_channels=channels, type_active=True)
    sms = decide_channel(Channel.SMS, recipient, type_channels=channels, type_active=True)

    assert (email.action, email.reason) == (Action.SUPPRESS, Reason.ADDRESS_SUPPRESSED)
    assert sms.action is Action.SEND
