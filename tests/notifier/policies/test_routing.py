"""Route policy: contact points and type settings decide send or suppress, with a reason."""

import pytest

from channels.base import Channel
from notifier.policies.routing import Action, Recipient, decide_channel
from notifier.status import Reason

ALL = frozenset(c.value for c in Channel)
FULL = Recipient(is_active=True, email="a@example.com", phone="+8613800138000", active_devices=1)


def decide(channel, recipient=FULL, channels=ALL, active=True):
    return decide_channel(channel, recipient, type_channels=channels, type_active=active)


@pytest.mark.parametrize("channel", list(Channel))
def test_a_reachable_user_gets_every_channel(channel):
    assert decide(channel).action is Action.SEND


@pytest.mark.parametrize(
    ("channel", "recipient", "reason"),
    [
        (Channel.EMAIL, Recipient(True, "", "+8613800138000", 1), Reason.NO_EMAIL_ADDRESS),
        (Channel.SMS, Recipient(True, "a@x.com", "", 1), Reason.NO_PHONE_NUMBER),
        (Channel.SMS, Recipient(True, "a@x.com", "+86123", 1), Reason.INVALID_PHONE_NUMBER),
        (Channel.SMS, Recipient(True, "a@x.com", "not a number", 1), Reason.INVALID_PHONE_NUMBER),
        (Channel.PUSH, Recipient(True, "a@x.com", "+8613800138000", 0), Reason.NO_ACTIVE_DEVICE),
        (Channel.INAPP, Recipient(False, "a@x.com", "+8613800138000", 1), Reason.USER_INACTIVE),
    ],
)
def test_a_missing_contact_point_suppresses_with_its_reason(channel, recipient, reason):
    decision = decide(channel, recipient)
    assert decision.action is Action.SUPPRESS
    assert decision.reason is reason


def test_a_channel_the_type_dropped_is_suppressed():
    decision = decide(Channel.SMS, channels=frozenset({"email"}))
    assert (decision.action, decision.reason) == (Action.SUPPRESS, Reason.CHANNEL_NOT_ALLOWED)


def test_a_switched_off_type_suppresses_everything():
    assert decide(Channel.INAPP, active=False).reason is Reason.TYPE_INACTIVE
