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
        # Erased at their request: said before anything else about the person.
        (
            Channel.INAPP,
            Recipient(False, "", "", 0, erased=True),
            Reason.RECIPIENT_ERASED,
        ),
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


# --- Routing rules ----------------------------------------------------------------------------

from notifier.policies.routing import DEFAULT_RULES, Plan, Rule, match_rule, plan_channels  # noqa: E402

TYPE_ALL = ("inapp", "email", "sms", "push")


def test_the_most_specific_rule_wins():
    rules = (
        Rule("by priority", ("email",), priority="normal"),
        Rule("by kind", ("push",), kind="service"),
        Rule("by type", ("sms",), type_key="subscription.renewal_reminder"),
    )
    chosen = match_rule(
        rules, type_key="subscription.renewal_reminder", kind="service", priority="normal"
    )
    assert chosen.name == "by type"
    assert match_rule(rules, type_key="other.type", kind="service", priority="normal").name == (
        "by kind"
    )
    assert match_rule(rules, type_key="x.y", kind="marketing", priority="low") is None


def test_default_rules_send_urgent_messages_everywhere_and_low_ones_cheaply():
    critical = match_rule(
        DEFAULT_RULES, type_key="payment.succeeded", kind="transactional", priority="critical"
    )
    low = match_rule(DEFAULT_RULES, type_key="promo.flash_sale", kind="marketing", priority="low")
    assert plan_channels(type_channels=TYPE_ALL, explicit=[], rule=critical).send_all == (
        Channel.SMS,
        Channel.PUSH,
        Channel.INAPP,
        Channel.EMAIL,
    )
    assert plan_channels(type_channels=TYPE_ALL, explicit=[], rule=low) == Plan(
        send_all=(Channel.EMAIL, Channel.INAPP)
    )


def test_normal_priority_falls_back_along_a_chain_ordered_by_cost():
    normal = match_rule(DEFAULT_RULES, type_key="t.x", kind="service", priority="normal")
    plan = plan_channels(type_channels=TYPE_ALL, explicit=[], rule=normal)
    assert plan == Plan(send_all=(Channel.INAPP,), chain=(Channel.PUSH, Channel.EMAIL, Channel.SMS))


def test_channels_the_type_does_not_use_are_dropped_from_the_plan():
    normal = match_rule(DEFAULT_RULES, type_key="t.x", kind="service", priority="normal")
    plan = plan_channels(type_channels=("inapp", "email"), explicit=[], rule=normal)
    assert plan == Plan(send_all=(Channel.INAPP,), chain=(Channel.EMAIL,))


def test_explicit_channels_beat_any_rule_and_no_rule_means_every_type_channel():
    rule = Rule("low", ("email",), priority="low")
    assert plan_channels(type_channels=TYPE_ALL, explicit=["sms"], rule=rule) == Plan(
        send_all=(Channel.SMS,)
    )
    assert plan_channels(type_channels=("inapp", "push"), explicit=[], rule=None) == Plan(
        send_all=(Channel.INAPP, Channel.PUSH)
    )
