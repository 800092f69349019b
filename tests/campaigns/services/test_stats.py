"""The campaign funnel roll-up against a hand-counted campaign; the A/B test; active hours."""

from __future__ import annotations

import math
import random
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any

import pytest
import time_machine
from django.db import connection
from django.test.utils import CaptureQueriesContext
from django.utils import timezone

from campaigns.models import (
    Campaign,
    CampaignStats,
    CampaignStatus,
    CampaignStep,
    Conversion,
    Holdout,
    StepVariant,
)
from campaigns.policies import (
    DEFAULT_AB_SAMPLE_SIZE,
    DEFAULT_PLAN,
    VariantCounts,
    ab_test,
    difference_interval,
    two_proportion_z_test,
)
from campaigns.services import stats as stats_module
from campaigns.services.stats import (
    campaign_funnel,
    learn_active_hours,
    stats_rollup,
)
from campaigns.services.tracking import conversion_record
from notifier.models import (
    Delivery,
    InboxItem,
    Kind,
    Message,
    NotificationType,
    Recipient,
    Unsubscribe,
    User,
)
from notifier.status import DeliveryStatus as S
from notifier.status import Reason as R
from tests.factories import UserFactory

EMAIL, INAPP = "email", "inapp"
# The hour each group's deliveries went out: the timeline's three buckets.
SENT_A = datetime(2026, 3, 1, 10, 5, tzinfo=UTC)
SENT_B = datetime(2026, 3, 1, 11, 20, tzinfo=UTC)
SENT_TEST = datetime(2026, 3, 1, 12, 10, tzinfo=UTC)
SENT_STEP2 = datetime(2026, 3, 1, 13, 40, tzinfo=UTC)

REACHED_STATUSES = {S.SENT, S.DELIVERED, S.OPENED, S.READ, S.CLICKED}
# user index -> that user's deliveries: (channel, status, reason)
Plan = dict[int, list[tuple[str, S, str]]]


# --- Building rows directly: every status, reason and timestamp chosen here -----------------


def promo_type() -> NotificationType:
    notification_type, _ = NotificationType.objects.get_or_create(
        key="promo.stats_test",
        defaults={"name": "Stats test promo", "kind": Kind.MARKETING, "channels": [EMAIL, INAPP]},
    )
    return notification_type


@dataclass
class Rows:
    """Collects messages and deliveries, then writes them with bulk_create."""

    campaign: Campaign
    type: NotificationType
    messages: list[Message] = field(default_factory=list)
    deliveries: list[tuple[Message, str, S, str, datetime]] = field(default_factory=list)

    def message(
        self,
        user: User,
        step: CampaignStep | None,
        variant: StepVariant | None,
        deliveries: list[tuple[str, S, str]],
        *,
        sent_at: datetime,
        is_test: bool = False,
    ) -> Message:
        message = Message(
            user=user,
            type=self.type,
            lane="bulk",
            campaign=self.campaign,
            step=step,
            variant=variant,
            is_test=is_test,
            created_at=sent_at - timedelta(minutes=5),
        )
        self.messages.append(message)
        for channel, status, reason in deliveries:
            self.deliveries.append((message, channel, status, reason, sent_at))
        return message

    def save(self) -> dict[tuple[int, str], Delivery]:
        Message.objects.bulk_create(self.messages)
        rows = []
        for message, channel, status, reason, at in self.deliveries:
            # A bounce (sent, then failed) keeps its sent_at; anything else unsent has none.
            was_sent = status in REACHED_STATUSES or reason == R.INVALID_RECIPIENT
            rows.append(
                Delivery(
                    message=message,
                    user_id=message.user_id,
                    channel=channel,
                    status=status,
                    reason=reason,
                    created_at=at,
                    updated_at=at,
                    sent_at=at if was_sent else None,
                    delivered_at=at
                    if status in {S.DELIVERED, S.OPENED, S.READ, S.CLICKED}
                    else None,
                    opened_at=at if status in {S.OPENED, S.READ, S.CLICKED} else None,
                    clicked_at=at if status == S.CLICKED else None,
                )
            )
        Delivery.objects.bulk_create(rows)
        self.messages, self.deliveries = [], []
        return {(d.message_id, d.channel): d for d in rows}


def inbox_item(delivery: Delivery, feedback: str = "") -> InboxItem:
    return InboxItem.objects.create(
        user_id=delivery.user_id,
        message_id=delivery.message_id,
        delivery=delivery,
        category="marketing",
        type_key="promo.stats_test",
        title="Sale",
        body="Sale",
        created_at=delivery.created_at,
        read_at=delivery.opened_at,
        feedback=feedback,
        feedback_at=delivery.opened_at if feedback else None,
    )


def conversion(user: User, campaign: Campaign | None, message: Message | None, ref: str) -> None:
    Conversion.objects.create(
        user=user,
        campaign=campaign,
        message=message,
        reference=ref,
        occurred_at=SENT_STEP2 + timedelta(hours=1),
    )


def unsubscribe(user: User, message: Message | None, scope: str = "this") -> None:
    Unsubscribe.objects.create(
        user=user,
        message=message,
        category="promo.stats_test",
        channel=EMAIL,
        scope=scope,
        source="unsubscribe_link",
        at=SENT_STEP2,
    )


@dataclass
class HandCounted:
    campaign: Campaign
    step1: CampaignStep
    step2: CampaignStep
    variant_a: StepVariant
    variant_b: StepVariant
    variant_step2: StepVariant


@pytest.fixture
def hand_counted(db) -> HandCounted:
    """One campaign, step 1 with variants A and B (10 users each), step 2 with one variant
    (6 of A's users again), a hold-out of 5, a marketer's test send, and a second campaign.
    The expected numbers in the tests below were counted by hand from this table."""
    notification_type = promo_type()
    campaign = Campaign.objects.create(name="Spring sale", status=CampaignStatus.RUNNING)
    other_campaign = Campaign.objects.create(name="Other", status=CampaignStatus.RUNNING)
    step1 = CampaignStep.objects.create(
        campaign=campaign, name="3 days before", offset_minutes=-4320
    )
    step2 = CampaignStep.objects.create(campaign=campaign, name="Last call", offset_minutes=-60)
    variant_a = StepVariant.objects.create(step=step1, name="A")
    variant_b = StepVariant.objects.create(step=step1, name="B")
    variant_step2 = StepVariant.objects.create(step=step2, name="A")
    other_step = CampaignStep.objects.create(campaign=other_campaign, name="s", offset_minutes=0)

    u = UserFactory.create_batch(20)
    holdout_users = UserFactory.create_batch(5)
    tester = UserFactory()
    rows = Rows(campaign, notification_type)

    a: Plan = {
        0: [(EMAIL, S.CLICKED, ""), (INAPP, S.READ, "")],
        1: [(EMAIL, S.OPENED, ""), (INAPP, S.SUPPRESSED, R.OPTED_OUT)],
        2: [(EMAIL, S.DELIVERED, "")],
        3: [(EMAIL, S.SENT, "")],
        4: [(EMAIL, S.FAILED, R.INVALID_RECIPIENT), (INAPP, S.SENT, "")],
        5: [(EMAIL, S.SUPPRESSED, R.NO_CONSENT), (INAPP, S.SUPPRESSED, R.NO_CONSENT)],
        6: [(EMAIL, S.HELD, R.QUIET_HOURS)],
        7: [(EMAIL, S.FAILED, R.RETRIES_EXHAUSTED)],
        8: [(EMAIL, S.SUPPRESSED, R.STALE)],
        9: [(EMAIL, S.CANCELLED, R.CANCELLED)],
    }
    b: Plan = {
        10: [(EMAIL, S.CLICKED, "")],
        11: [(EMAIL, S.CLICKED, ""), (INAPP, S.CLICKED, "")],
        12: [(INAPP, S.READ, "")],
        13: [(EMAIL, S.OPENED, "")],
        14: [(EMAIL, S.DELIVERED, ""), (INAPP, S.SUPPRESSED, R.OPTED_OUT)],
        15: [(EMAIL, S.SENT, "")],
        16: [(EMAIL, S.SENT, "")],
        17: [(EMAIL, S.SUPPRESSED, R.NO_CONSENT)],
        18: [(EMAIL, S.FAILED, R.INVALID_RECIPIENT), (INAPP, S.SUPPRESSED, R.MARKETING_OFF)],
        19: [(EMAIL, S.QUEUED, "")],
    }
    step2_plan: Plan = {
        0: [(EMAIL, S.SENT, "")],
        1: [(INAPP, S.CLICKED, "")],
        2: [(EMAIL, S.SUPPRESSED, R.NO_CONSENT)],
        3: [(EMAIL, S.FAILED, R.RENDER_FAILED)],
        4: [(EMAIL, S.HELD, R.QUIET_HOURS)],
        5: [],  # not routed yet: targeted, no delivery
    }
    msg_a = {i: rows.message(u[i], step1, variant_a, d, sent_at=SENT_A) for i, d in a.items()}
    msg_b = {i: rows.message(u[i], step1, variant_b, d, sent_at=SENT_B) for i, d in b.items()}
    msg_2 = {
        i: rows.message(u[i], step2, variant_step2, d, sent_at=SENT_STEP2)
        for i, d in step2_plan.items()
    }
    # Excluded everywhere: a marketer's test send with every kind of engagement ...
    test_message = rows.message(
        tester,
        step1,
        variant_a,
        [(EMAIL, S.CLICKED, ""), (INAPP, S.READ, "")],
        sent_at=SENT_TEST,
        is_test=True,
    )
    deliveries = rows.save()
    # ... and another campaign's message to one of the same users.
    other_rows = Rows(other_campaign, notification_type)
    other_message = other_rows.message(
        u[0], other_step, None, [(EMAIL, S.CLICKED, ""), (INAPP, S.READ, "")], sent_at=SENT_TEST
    )
    other_deliveries = other_rows.save()

    # Feedback: A: u0 useful, u4 none; B: u11 useful, u12 irrelevant; step 2: u1 meh.
    inbox_item(deliveries[msg_a[0].pk, INAPP], "useful")
    inbox_item(deliveries[msg_a[4].pk, INAPP])
    inbox_item(deliveries[msg_b[11].pk, INAPP], "useful")
    inbox_item(deliveries[msg_b[12].pk, INAPP], "irrelevant")
    inbox_item(deliveries[msg_2[1].pk, INAPP], "meh")
    inbox_item(deliveries[test_message.pk, INAPP], "useful")
    inbox_item(other_deliveries[other_message.pk, INAPP], "irrelevant")

    # Conversions: attributed u0 (A and step 2), u10 (B), u11 twice (B), u1 (step 2).
    conversion(u[0], campaign, msg_a[0], "o-1")
    conversion(u[0], campaign, msg_2[0], "o-2")
    conversion(u[10], campaign, msg_b[10], "o-3")
    conversion(u[11], campaign, msg_b[11], "o-4")
    conversion(u[11], campaign, msg_b[11], "o-5")
    conversion(u[1], campaign, msg_2[1], "o-6")
    conversion(tester, campaign, test_message, "o-7")
    conversion(u[3], other_campaign, other_message, "o-8")
    # Hold-out: 5 users, h0 converts twice; u19 converts unattributed but is not held out;
    # h1 converts for the other campaign only.
    Holdout.objects.bulk_create([Holdout(campaign=campaign, user=h) for h in holdout_users])
    # Held out by step 1's fan-out, like A's messages (created_at is auto_now_add).
    Holdout.objects.filter(campaign=campaign).update(created_at=SENT_A - timedelta(minutes=5))
    conversion(holdout_users[0], campaign, None, "o-9")
    conversion(holdout_users[0], campaign, None, "o-10")
    conversion(u[19], campaign, None, "o-11")
    conversion(holdout_users[1], other_campaign, None, "o-12")

    # Unsubscribes: u3 (A and step 2), u15 twice (B), u2 (step 2); not counted: without a
    # message, through the test send, through the other campaign.
    unsubscribe(u[3], msg_a[3])
    unsubscribe(u[3], msg_2[3])
    unsubscribe(u[15], msg_b[15])
    unsubscribe(u[15], msg_b[15], scope="all")
    unsubscribe(u[2], msg_2[2])
    unsubscribe(u[6], None)
    unsubscribe(tester, test_message)
    unsubscribe(u[5], other_message)

    return HandCounted(campaign, step1, step2, variant_a, variant_b, variant_step2)


def deliveries(
    total: int,
    sent: int,
    delivered: int,
    opened: int,
    clicked: int,
    *,
    failed: int = 0,
    suppressed: int = 0,
    held: int = 0,
    cancelled: int = 0,
    in_flight: int = 0,
    suppressed_by: dict[str, int] | None = None,
    failed_by: dict[str, int] | None = None,
    held_by: dict[str, int] | None = None,
    cancelled_by: dict[str, int] | None = None,
) -> dict[str, Any]:
    return {
        "total": total,
        "sent": sent,
        "delivered": delivered,
        "opened": opened,
        "clicked": clicked,
        "failed": failed,
        "suppressed": suppressed,
        "held": held,
        "cancelled": cancelled,
        "in_flight": in_flight,
        "suppressed_by_reason": suppressed_by or {},
        "failed_by_reason": failed_by or {},
        "held_by_reason": held_by or {},
        # Cancelled deliveries by reason (issue 14: counted in "why not sent"); every cancelled
        # delivery here is the campaign's cancel.
        "cancelled_by_reason": cancelled_by
        if cancelled_by is not None
        else ({R.CANCELLED.value: cancelled} if cancelled else {}),
    }


def recipients(**counts: int) -> dict[str, int]:
    return counts


def stored(campaign: Campaign) -> dict[str, dict[str, Any]]:
    return {row.scope: row.data for row in CampaignStats.objects.filter(campaign=campaign)}


# --- The hand-counted roll-up ----------------------------------------------------------------


def test_rollup_writes_one_row_per_scope(hand_counted):
    written = stats_rollup(campaign_ids=[hand_counted.campaign.pk])

    h = hand_counted
    rows = CampaignStats.objects.filter(campaign=h.campaign)
    assert written == 6
    assert {(r.scope, r.step_id, r.variant_id) for r in rows} == {
        ("campaign", None, None),
        (f"step:{h.step1.pk}", h.step1.pk, None),
        (f"step:{h.step2.pk}", h.step2.pk, None),
        (f"variant:{h.variant_a.pk}", h.step1.pk, h.variant_a.pk),
        (f"variant:{h.variant_b.pk}", h.step1.pk, h.variant_b.pk),
        (f"variant:{h.variant_step2.pk}", h.step2.pk, h.variant_step2.pk),
    }


def test_rollup_recipient_counts_equal_the_hand_count(hand_counted):
    h = hand_counted
    stats_rollup(campaign_ids=[h.campaign.pk])
    data = stored(h.campaign)

    # Distinct users: step 2 re-reaches u0 and u1, so the campaign adds only u1's click.
    assert data["campaign"]["recipients"] == recipients(
        targeted=20, reached=12, delivered=8, opened=6, clicked=4, converted=4, unsubscribed=3
    )
    assert data[f"step:{h.step1.pk}"]["recipients"] == recipients(
        targeted=20, reached=12, delivered=8, opened=6, clicked=3, converted=3, unsubscribed=2
    )
    assert data[f"variant:{h.variant_a.pk}"]["recipients"] == recipients(
        targeted=10, reached=5, delivered=3, opened=2, clicked=1, converted=1, unsubscribed=1
    )
    assert data[f"variant:{h.variant_b.pk}"]["recipients"] == recipients(
        targeted=10, reached=7, delivered=5, opened=4, clicked=2, converted=2, unsubscribed=1
    )
    step2 = recipients(
        targeted=6, reached=2, delivered=1, opened=1, clicked=1, converted=2, unsubscribed=2
    )
    assert data[f"step:{h.step2.pk}"]["recipients"] == step2
    assert data[f"variant:{h.variant_step2.pk}"]["recipients"] == step2


def test_rollup_rates_are_per_reached_recipient(hand_counted):
    h = hand_counted
    stats_rollup(campaign_ids=[h.campaign.pk])
    data = stored(h.campaign)

    expected = {
        "campaign": (6 / 12, 4 / 12, 4 / 12),
        f"step:{h.step1.pk}": (6 / 12, 3 / 12, 3 / 12),
        f"variant:{h.variant_a.pk}": (2 / 5, 1 / 5, 1 / 5),
        f"variant:{h.variant_b.pk}": (4 / 7, 2 / 7, 2 / 7),
        f"step:{h.step2.pk}": (1 / 2, 1 / 2, 2 / 2),
    }
    for scope, (open_rate, ctr, conversion_rate) in expected.items():
        assert data[scope]["rates"] == {
            "open_rate": pytest.approx(open_rate),
            "ctr": pytest.approx(ctr),
            "conversion_rate": pytest.approx(conversion_rate),
        }, scope


def test_rollup_delivery_counts_per_channel_and_reason_equal_the_hand_count(hand_counted):
    h = hand_counted
    stats_rollup(campaign_ids=[h.campaign.pk])
    data = stored(h.campaign)

    assert data["campaign"]["deliveries"] == {
        "total": deliveries(
            32, 16, 11, 9, 5, failed=4, suppressed=8, held=2, cancelled=1, in_flight=1,
            suppressed_by={"marketing_off": 1, "no_consent": 4, "opted_out": 2, "stale": 1},
            failed_by={"invalid_recipient": 2, "render_failed": 1, "retries_exhausted": 1},
            held_by={"quiet_hours": 2},
        ),
        "channels": {
            "email": deliveries(
                23, 11, 7, 5, 3, failed=4, suppressed=4, held=2, cancelled=1, in_flight=1,
                suppressed_by={"no_consent": 3, "stale": 1},
                failed_by={"invalid_recipient": 2, "render_failed": 1, "retries_exhausted": 1},
                held_by={"quiet_hours": 2},
            ),
            "inapp": deliveries(
                9, 5, 4, 4, 2, suppressed=4,
                suppressed_by={"marketing_off": 1, "no_consent": 1, "opted_out": 2},
            ),
        },
    }  # fmt: skip
    assert data[f"step:{h.step1.pk}"]["deliveries"]["total"] == deliveries(
        27, 14, 10, 8, 4, failed=3, suppressed=7, held=1, cancelled=1, in_flight=1,
        suppressed_by={"marketing_off": 1, "no_consent": 3, "opted_out": 2, "stale": 1},
        failed_by={"invalid_recipient": 2, "retries_exhausted": 1},
        held_by={"quiet_hours": 1},
    )  # fmt: skip
    assert data[f"variant:{h.variant_a.pk}"]["deliveries"] == {
        "total": deliveries(
            14, 6, 4, 3, 1, failed=2, suppressed=4, held=1, cancelled=1,
            suppressed_by={"no_consent": 2, "opted_out": 1, "stale": 1},
            failed_by={"invalid_recipient": 1, "retries_exhausted": 1},
            held_by={"quiet_hours": 1},
        ),
        "channels": {
            "email": deliveries(
                10, 4, 3, 2, 1, failed=2, suppressed=2, held=1, cancelled=1,
                suppressed_by={"no_consent": 1, "stale": 1},
                failed_by={"invalid_recipient": 1, "retries_exhausted": 1},
                held_by={"quiet_hours": 1},
            ),
            "inapp": deliveries(
                4, 2, 1, 1, 0, suppressed=2, suppressed_by={"no_consent": 1, "opted_out": 1}
            ),
        },
    }  # fmt: skip
    assert data[f"variant:{h.variant_b.pk}"]["deliveries"] == {
        "total": deliveries(
            13, 8, 6, 5, 3, failed=1, suppressed=3, in_flight=1,
            suppressed_by={"marketing_off": 1, "no_consent": 1, "opted_out": 1},
            failed_by={"invalid_recipient": 1},
        ),
        "channels": {
            "email": deliveries(
                9, 6, 4, 3, 2, failed=1, suppressed=1, in_flight=1,
                suppressed_by={"no_consent": 1}, failed_by={"invalid_recipient": 1},
            ),
            "inapp": deliveries(
                4, 2, 2, 2, 1, suppressed=2, suppressed_by={"marketing_off": 1, "opted_out": 1}
            ),
        },
    }  # fmt: skip
    assert data[f"step:{h.step2.pk}"]["deliveries"] == {
        "total": deliveries(
            5, 2, 1, 1, 1, failed=1, suppressed=1, held=1,
            suppressed_by={"no_consent": 1}, failed_by={"render_failed": 1},
            held_by={"quiet_hours": 1},
        ),
        "channels": {
            "email": deliveries(
                4, 1, 0, 0, 0, failed=1, suppressed=1, held=1,
                suppressed_by={"no_consent": 1}, failed_by={"render_failed": 1},
                held_by={"quiet_hours": 1},
            ),
            "inapp": deliveries(1, 1, 1, 1, 1),
        },
    }  # fmt: skip


def test_rollup_feedback_counts_equal_the_hand_count(hand_counted):
    h = hand_counted
    stats_rollup(campaign_ids=[h.campaign.pk])
    data = stored(h.campaign)

    assert data["campaign"]["feedback"] == {"useful": 2, "meh": 1, "irrelevant": 1}
    assert data[f"step:{h.step1.pk}"]["feedback"] == {"useful": 2, "meh": 0, "irrelevant": 1}
    assert data[f"variant:{h.variant_a.pk}"]["feedback"] == {"useful": 1, "meh": 0, "irrelevant": 0}
    assert data[f"variant:{h.variant_b.pk}"]["feedback"] == {"useful": 1, "meh": 0, "irrelevant": 1}
    assert data[f"step:{h.step2.pk}"]["feedback"] == {"useful": 0, "meh": 1, "irrelevant": 0}


def test_rollup_holdout_rate_and_uplift_equal_the_hand_count(hand_counted):
    h = hand_counted
    stats_rollup(campaign_ids=[h.campaign.pk])
    holdout = stored(h.campaign)["campaign"]["holdout"]

    # No event: each user over their own 72 hours from their first message or hold-out row.
    # Any conversion counts, whatever it was attributed to. Treated: the 20 users with a
    # message (the tester's test send is not one); converted u0, u1, u3 (for the other
    # campaign), u10, u11, u19 (unattributed). Hold-out: h0 (twice) and h1 (other campaign)
    # of 5.
    low, high = difference_interval(6, 20, 2, 5)
    z, p = two_proportion_z_test(6, 20, 2, 5)
    assert holdout == {
        "window": None,
        "attribution_hours": 72,
        "final": False,
        "size": 5,
        "converted": 2,
        "conversion_rate": pytest.approx(0.4),
        "treated": {"size": 20, "converted": 6, "conversion_rate": pytest.approx(0.3)},
        "uplift_points": pytest.approx(-0.1),
        "uplift_relative": pytest.approx(-0.25),
        "ci_low": pytest.approx(low),
        "ci_high": pytest.approx(high),
        "confidence": 0.95,
        "z": pytest.approx(z),
        "p_value": pytest.approx(p),
        "significant": False,
    }
    assert low < -0.1 < high


def test_rollup_timeline_counts_sends_per_hour_without_test_sends(hand_counted):
    h = hand_counted
    stats_rollup(campaign_ids=[h.campaign.pk])
    timeline = stored(h.campaign)["campaign"]["timeline"]

    # A: 6 sent (its bounce is failed, not sent), B: 8, step 2: 2; the test send at 12:10
    # and the other campaign are absent.
    assert timeline == [
        {"hour": "2026-03-01T10:00:00+00:00", "sent": 6},
        {"hour": "2026-03-01T11:00:00+00:00", "sent": 8},
        {"hour": "2026-03-01T13:00:00+00:00", "sent": 2},
    ]


def test_rollup_ab_test_of_step_with_two_variants_is_running_below_its_sample(hand_counted):
    h = hand_counted
    stats_rollup(campaign_ids=[h.campaign.pk])
    data = stored(h.campaign)

    ab = data[f"step:{h.step1.pk}"]["ab"]
    assert ab["metric"] == "ctr"
    assert ab["stage"] == "running"
    # Before the horizon: live counts, but no leader, winner or p-value to peek at.
    assert (ab["best"], ab["winner"], ab["p_value"]) == (None, None, None)
    assert ab["verdict"].startswith("Running: decides once, when each variant has 100 users")
    assert ab["variants"] == [
        {"name": "A", "trials": 5, "successes": 1, "rate": pytest.approx(0.2)},
        {"name": "B", "trials": 7, "successes": 2, "rate": pytest.approx(2 / 7)},
    ]
    assert CampaignStats.objects.get(scope=f"step:{h.step1.pk}").ab_decisions is None
    assert data[f"step:{h.step2.pk}"]["ab"] is None  # one variant: nothing to compare


def test_campaign_funnel_returns_the_same_data_as_the_rows(hand_counted):
    h = hand_counted
    funnel = campaign_funnel(h.campaign.pk)
    stats_rollup(campaign_ids=[h.campaign.pk])

    assert funnel == stored(h.campaign)
    assert funnel["campaign"]["steps"] == [h.step1.pk, h.step2.pk]  # by offset
    assert funnel[f"step:{h.step1.pk}"]["variants"] == [h.variant_a.pk, h.variant_b.pk]


# --- Test sends, selection, upserts, queries -------------------------------------------------


def test_test_sends_are_excluded_from_every_count(db):
    campaign = Campaign.objects.create(name="Only a test", status=CampaignStatus.RUNNING)
    step = CampaignStep.objects.create(campaign=campaign, name="s", offset_minutes=0)
    variant = StepVariant.objects.create(step=step, name="A")
    tester = UserFactory()
    rows = Rows(campaign, promo_type())
    message = rows.message(
        tester,
        step,
        variant,
        [(EMAIL, S.CLICKED, ""), (INAPP, S.READ, ""), ("sms", S.SUPPRESSED, R.NO_CONSENT)],
        sent_at=SENT_TEST,
        is_test=True,
    )
    saved = rows.save()
    inbox_item(saved[message.pk, INAPP], "useful")
    conversion(tester, campaign, message, "t-1")
    unsubscribe(tester, message)

    stats_rollup(campaign_ids=[campaign.pk])

    for scope, data in stored(campaign).items():
        assert set(data["recipients"].values()) == {0}, scope
        assert data["deliveries"]["total"] == deliveries(0, 0, 0, 0, 0), scope
        assert data["deliveries"]["channels"] == {}, scope
        assert set(data["feedback"].values()) == {0}, scope
        assert set(data["rates"].values()) == {None}, scope
    assert stored(campaign)["campaign"]["timeline"] == []


def test_rollup_without_ids_covers_running_paused_and_recently_done_campaigns(db):
    now = timezone.now()
    watched = [
        Campaign.objects.create(name="running", status=CampaignStatus.RUNNING),
        Campaign.objects.create(name="paused", status=CampaignStatus.PAUSED),
        Campaign.objects.create(
            name="done 6 days ago", status=CampaignStatus.DONE, finished_at=now - timedelta(days=6)
        ),
    ]
    ignored = [
        Campaign.objects.create(name="draft", status=CampaignStatus.DRAFT),
        Campaign.objects.create(name="scheduled", status=CampaignStatus.SCHEDULED),
        Campaign.objects.create(name="cancelled", status=CampaignStatus.CANCELLED),
        Campaign.objects.create(
            name="done 8 days ago", status=CampaignStatus.DONE, finished_at=now - timedelta(days=8)
        ),
    ]

    written = stats_rollup()

    assert written == len(watched)  # no steps: the campaign scope only
    rolled_up = set(CampaignStats.objects.values_list("campaign_id", flat=True))
    assert rolled_up == {c.pk for c in watched}
    assert not rolled_up & {c.pk for c in ignored}
    # Given ids are rolled up whatever their status.
    assert stats_rollup(campaign_ids=[ignored[0].pk]) == 1
    assert CampaignStats.objects.filter(campaign=ignored[0], scope="campaign").exists()


def test_rollup_twice_updates_the_same_rows(hand_counted):
    h = hand_counted
    stats_rollup(campaign_ids=[h.campaign.pk])
    first = {row.scope: (row.pk, row.computed_at) for row in CampaignStats.objects.all()}
    # u19's queued email is delivered and clicked since.
    Delivery.objects.filter(message__campaign=h.campaign, status=S.QUEUED).update(
        status=S.CLICKED, sent_at=SENT_B, clicked_at=SENT_B
    )

    assert stats_rollup(campaign_ids=[h.campaign.pk]) == 6

    second = {row.scope: (row.pk, row.computed_at) for row in CampaignStats.objects.all()}
    assert second.keys() == first.keys()
    assert all(second[scope][0] == first[scope][0] for scope in first)  # same rows
    assert all(second[scope][1] >= first[scope][1] for scope in first)
    data = stored(h.campaign)
    assert data[f"variant:{h.variant_b.pk}"]["recipients"]["reached"] == 8
    assert data[f"variant:{h.variant_b.pk}"]["recipients"]["clicked"] == 3


def _rollup_queries(campaign: Campaign) -> int:
    with CaptureQueriesContext(connection) as queries:
        stats_rollup(campaign_ids=[campaign.pk])
    return len(queries)


def test_rollup_query_count_does_not_depend_on_audience_size(db):
    def campaign_with(recipient_count: int) -> Campaign:
        campaign = Campaign.objects.create(name=f"{recipient_count}", status=CampaignStatus.RUNNING)
        step = CampaignStep.objects.create(campaign=campaign, name="s", offset_minutes=0)
        variants = [StepVariant.objects.create(step=step, name=n) for n in "AB"]
        rows = Rows(campaign, promo_type())
        for index, user in enumerate(UserFactory.create_batch(recipient_count)):
            rows.message(user, step, variants[index % 2], [(EMAIL, S.CLICKED, "")], sent_at=SENT_A)
        rows.save()
        return campaign

    small, large = campaign_with(2), campaign_with(40)

    small_queries, large_queries = _rollup_queries(small), _rollup_queries(large)
    assert small_queries == large_queries
    # Load ids, steps, the campaign's settings, variants, 3 recipient GROUP BYs, deliveries,
    # feedback, hold-out, timeline, A/B samples, A/B decisions kept, one upsert.
    assert large_queries == 14


# --- A/B test: pure statistics ---------------------------------------------------------------


def test_z_test_of_200_in_1000_against_150_in_1000_matches_the_textbook_value():
    z, p = two_proportion_z_test(200, 1000, 150, 1000)

    # Pooled rate 0.175; se = sqrt(0.175 * 0.825 * (2 / 1000)) = 0.016993; z = 0.05 / se.
    assert z == pytest.approx(2.94245, abs=1e-4)
    assert p == pytest.approx(0.003256, abs=2e-5)
    assert p == pytest.approx(math.erfc(2.94245 / math.sqrt(2)), abs=1e-5)


def test_ab_test_200_in_1000_against_150_in_1000_names_the_winner():
    result = ab_test([VariantCounts("A", 1000, 150), VariantCounts("B", 1000, 200)])

    assert result.best == "B"
    assert result.winner == "B"
    assert result.enough_data is True
    assert result.p_value == pytest.approx(0.003256, abs=2e-5)
    assert result.verdict == "B wins (p = 0.0033)"


def test_ab_test_with_equal_rates_has_p_one_and_no_winner():
    result = ab_test([VariantCounts("A", 500, 50), VariantCounts("B", 500, 50)])

    assert result.p_value == pytest.approx(1.0)
    assert result.winner is None
    assert result.enough_data is True
    assert result.verdict.startswith("No significant difference (")


def test_ab_test_with_small_samples_has_no_winner_even_when_rates_differ():
    result = ab_test([VariantCounts("A", 99, 5), VariantCounts("B", 99, 60)])

    assert result.p_value is not None and result.p_value < 0.001
    assert result.winner is None
    assert result.enough_data is False
    assert result.verdict == "Not enough data: each variant needs at least 100"
    assert DEFAULT_AB_SAMPLE_SIZE == 100


def test_ab_test_without_clicks_or_reach_is_not_significant():
    assert two_proportion_z_test(0, 200, 0, 200) == (0.0, 1.0)
    assert two_proportion_z_test(0, 0, 5, 200) == (0.0, 1.0)
    result = ab_test([VariantCounts("A", 0, 0), VariantCounts("B", 0, 0)])
    assert result.winner is None
    assert result.best is None


def test_ab_test_with_three_variants_needs_the_best_to_beat_each_other_one():
    # C beats A clearly but B only barely: Bonferroni-adjusted, C is not a winner yet.
    close = ab_test(
        [
            VariantCounts("A", 1000, 100),
            VariantCounts("B", 1000, 163),
            VariantCounts("C", 1000, 200),
        ]
    )
    _, p_c_vs_b = two_proportion_z_test(200, 1000, 163, 1000)
    assert close.best == "C"
    assert 0.025 < p_c_vs_b < 0.05
    assert close.p_value == pytest.approx(2 * p_c_vs_b)
    assert close.winner is None
    # Far enough ahead of both: a winner.
    clear = ab_test(
        [
            VariantCounts("A", 1000, 100),
            VariantCounts("B", 1000, 120),
            VariantCounts("C", 1000, 200),
        ]
    )
    assert clear.winner == "C"
    assert [c.name for c in clear.comparisons] == ["A", "B"]


def test_ab_test_with_one_variant_has_nothing_to_compare():
    result = ab_test([VariantCounts("A", 1000, 100)])

    assert result.winner is None
    assert result.p_value is None


# --- Usual active hour -----------------------------------------------------------------------

NOW = datetime(2026, 3, 20, 0, 0, tzinfo=UTC)


def _events(
    user: User,
    *,
    reads: Sequence[datetime] = (),
    opens: Sequence[datetime] = (),
    clicks: Sequence[datetime] = (),
) -> None:
    """Reads as inbox items (their delivery read at the same instant, as the inbox does),
    opens and clicks as email deliveries."""
    notification_type = promo_type()
    for at in reads:
        message = Message.objects.create(
            user=user, type=notification_type, lane="bulk", created_at=at
        )
        delivery = Delivery.objects.create(
            message=message,
            user=user,
            channel=INAPP,
            status=S.READ,
            created_at=at,
            updated_at=at,
            sent_at=at,
            opened_at=at,
        )
        inbox_item(delivery)
    for at, status in [*((at, S.OPENED) for at in opens), *((at, S.CLICKED) for at in clicks)]:
        message = Message.objects.create(
            user=user, type=notification_type, lane="bulk", created_at=at
        )
        Delivery.objects.create(
            message=message,
            user=user,
            channel=EMAIL,
            status=status,
            created_at=at,
            updated_at=at,
            sent_at=at,
            opened_at=at if status == S.OPENED else None,
            clicked_at=at if status == S.CLICKED else None,
        )


def _utc(day: int, hour: int, minute: int = 0) -> datetime:
    return datetime(2026, 3, day, hour, minute, tzinfo=UTC)


def test_learn_active_hours_uses_each_users_time_zone(db):
    shanghai = UserFactory(time_zone="Asia/Shanghai")
    new_york = UserFactory(time_zone="America/New_York")
    _events(shanghai, reads=[_utc(1, 12), _utc(2, 12, 30), _utc(3, 12, 59)])
    # 14:xx UTC in March before the DST switch (8 March 2026) is 09:xx in New York.
    _events(new_york, opens=[_utc(2, 14)], clicks=[_utc(3, 14, 10), _utc(4, 14, 45)])

    assert learn_active_hours(user_ids=[shanghai.pk, new_york.pk], now=NOW) == 2

    shanghai.refresh_from_db()
    new_york.refresh_from_db()
    assert shanghai.notifier_recipient.usual_active_hour == 20
    assert new_york.notifier_recipient.usual_active_hour == 9


def test_learn_active_hours_picks_the_most_frequent_hour_and_earliest_on_ties(db):
    frequent = UserFactory(time_zone="UTC")
    tied = UserFactory(time_zone="UTC")
    _events(frequent, reads=[_utc(1, 7)], opens=[_utc(2, 18), _utc(3, 18)], clicks=[_utc(4, 18)])
    _events(tied, opens=[_utc(1, 21), _utc(2, 21)], clicks=[_utc(3, 6), _utc(4, 6)])

    learn_active_hours(user_ids=[frequent.pk, tied.pk], now=NOW)

    frequent.refresh_from_db()
    tied.refresh_from_db()
    assert frequent.notifier_recipient.usual_active_hour == 18
    assert tied.notifier_recipient.usual_active_hour == 6


def test_learn_active_hours_leaves_users_with_fewer_than_three_events_unset(db):
    sparse = UserFactory(time_zone="UTC")
    # One inbox read writes read_at and its delivery's opened_at: still one event.
    _events(sparse, reads=[_utc(1, 9)], opens=[_utc(2, 9)])
    stale = UserFactory(time_zone="UTC")
    # Three events, but one is older than the 90-day window.
    _events(stale, opens=[_utc(1, 9), _utc(2, 9), NOW - timedelta(days=91)])

    assert learn_active_hours(user_ids=[sparse.pk, stale.pk], now=NOW) == 0

    sparse.refresh_from_db()
    stale.refresh_from_db()
    assert sparse.notifier_recipient.usual_active_hour is None
    assert stale.notifier_recipient.usual_active_hour is None


def test_learn_active_hours_touches_only_the_given_users_and_counts_changes(db):
    chosen = UserFactory(time_zone="UTC")
    other = UserFactory(time_zone="UTC")
    for user in (chosen, other):
        _events(user, opens=[_utc(1, 10), _utc(2, 10), _utc(3, 10)])

    assert learn_active_hours(user_ids=[chosen.pk], now=NOW) == 1
    other.refresh_from_db()
    assert other.notifier_recipient.usual_active_hour is None
    # Every user when no ids are given; an unchanged hour is not counted again.
    assert learn_active_hours(now=NOW) == 1
    other.refresh_from_db()
    assert other.notifier_recipient.usual_active_hour == 10
    assert learn_active_hours(now=NOW) == 0


def test_learn_active_hours_runs_one_statement_for_all_users(db):
    users = UserFactory.create_batch(5, time_zone="Europe/Berlin")
    for user in users:
        _events(user, clicks=[_utc(1, 8), _utc(2, 8), _utc(3, 8)])

    with CaptureQueriesContext(connection) as queries:
        learned = learn_active_hours(user_ids=[u.pk for u in users], now=NOW)

    assert learned == 5
    assert len(queries) == 1
    assert set(
        Recipient.objects.filter(user__in=users).values_list("usual_active_hour", flat=True)
    ) == {9}


# --- Hold-out against treated over one window; the A/B test's fixed horizon -----------------

EVENT = datetime(2026, 3, 10, 12, 0, tzinfo=UTC)


def three_two_one(**fields: Any) -> tuple[Campaign, list[CampaignStep]]:
    """A one-off campaign with the default 3-2-1 plan around EVENT, every step started on
    time (the steps of a campaign as the lifecycle leaves them)."""
    campaign = Campaign.objects.create(
        name="3-2-1",
        status=CampaignStatus.RUNNING,
        event_at=EVENT,
        started_at=EVENT - timedelta(days=3),
        **fields,
    )
    steps = [
        CampaignStep.objects.create(
            campaign=campaign,
            name=name,
            offset_minutes=offset,
            status="done",
            started_at=EVENT + timedelta(minutes=offset),
        )
        for name, offset in DEFAULT_PLAN
    ]
    return campaign, steps


def test_holdout_uplift_of_a_321_campaign_without_effect_is_zero(db):
    """Treated and hold-out users behave the same: a quarter of each buys during the sale, 12
    hours after the event. The treated users' conversions are attributed to their last call
    (an hour before the event, 72 hours' window); the hold-out's window used to close at the
    event (72 hours after the campaign started), so its purchases were lost and the campaign
    showed +25 points it did not earn. Measured over one window, the uplift is zero."""
    campaign, steps = three_two_one()
    treated, held = UserFactory.create_batch(40), UserFactory.create_batch(40)
    rows = Rows(campaign, promo_type())
    for step in steps:
        variant = StepVariant.objects.create(step=step, name="A")
        sent = EVENT + timedelta(minutes=step.offset_minutes, seconds=30)
        for user in treated:
            rows.message(user, step, variant, [(EMAIL, S.DELIVERED, "")], sent_at=sent)
    rows.save()
    Holdout.objects.bulk_create([Holdout(campaign=campaign, user=user) for user in held])
    Holdout.objects.filter(campaign=campaign).update(created_at=EVENT - timedelta(days=3))
    for user in treated[:10] + held[:10]:
        conversion_record(
            user_id=user.pk,
            name="purchase",
            value=Decimal("20"),
            reference=f"order-{user.pk}",
            occurred_at=EVENT + timedelta(hours=12),
        )

    stats_rollup(campaign_ids=[campaign.pk])
    holdout = stored(campaign)["campaign"]["holdout"]

    assert holdout["size"] == 40
    assert holdout["converted"] == 10
    assert holdout["conversion_rate"] == pytest.approx(0.25)
    assert holdout["uplift_points"] == pytest.approx(0.0)
    assert holdout["treated"] == {"size": 40, "converted": 10, "conversion_rate": 0.25}
    assert holdout["p_value"] == pytest.approx(1.0)
    assert holdout["ci_low"] < 0 < holdout["ci_high"]
    assert holdout["window"] == {
        "start": (EVENT - timedelta(days=3)).isoformat(),
        "end": (EVENT + timedelta(hours=72)).isoformat(),
    }
    assert holdout["final"] is True


def test_holdout_counts_every_treated_user_and_only_conversions_in_the_window(db):
    """Intention to treat: a treated user whose message was suppressed is still treated;
    a purchase before the first step or after the window counts for nobody."""
    campaign, steps = three_two_one()
    notice = steps[0]
    variant = StepVariant.objects.create(step=notice, name="A")
    reached, suppressed, held = UserFactory.create_batch(3)
    rows = Rows(campaign, promo_type())
    sent = EVENT - timedelta(days=3)
    rows.message(reached, notice, variant, [(EMAIL, S.DELIVERED, "")], sent_at=sent)
    rows.message(suppressed, notice, variant, [(EMAIL, S.SUPPRESSED, R.NO_CONSENT)], sent_at=sent)
    rows.save()
    Holdout.objects.create(campaign=campaign, user=held)
    Holdout.objects.filter(campaign=campaign).update(created_at=sent)
    at = {
        "before": EVENT - timedelta(days=4),
        "inside": EVENT + timedelta(hours=71),
        "after": EVENT + timedelta(hours=73),
    }
    Conversion.objects.create(user=suppressed, reference="s", occurred_at=at["inside"])
    Conversion.objects.create(user=held, reference="h1", occurred_at=at["before"])
    Conversion.objects.create(user=held, reference="h2", occurred_at=at["after"])

    stats_rollup(campaign_ids=[campaign.pk])
    holdout = stored(campaign)["campaign"]["holdout"]

    assert holdout["treated"] == {"size": 2, "converted": 1, "conversion_rate": 0.5}
    assert (holdout["size"], holdout["converted"]) == (1, 0)


def _ab_campaign(**fields: Any) -> tuple[Campaign, CampaignStep, StepVariant, StepVariant]:
    campaign, steps = three_two_one(**fields)
    notice = steps[0]
    variant_a = StepVariant.objects.create(step=notice, name="A")
    variant_b = StepVariant.objects.create(step=notice, name="B")
    return campaign, notice, variant_a, variant_b


def _add_users(
    rows: Rows, step: CampaignStep, variant: StepVariant, users: int, clicked: int
) -> list[Message]:
    sent = EVENT - timedelta(days=3, minutes=-1)
    return [
        rows.message(
            user,
            step,
            variant,
            [(EMAIL, S.CLICKED if index < clicked else S.DELIVERED, "")],
            sent_at=sent,
        )
        for index, user in enumerate(UserFactory.create_batch(users))
    ]


def test_ab_winner_does_not_flap_as_the_rollup_reruns(db):
    """The roll-up runs every few minutes while clicks come in with noise. A has an early lead
    (30 of 150 against 12 of 150, p = 0.004), B is better over the whole step; late clicks then
    pile onto A. Re-testing at every roll-up named A, then nobody, then B, then A again. The
    fixed horizon names nobody before the step's window ends (72 hours after the event), then
    decides once, and the decision stays whatever the later roll-ups count."""
    campaign, notice, variant_a, variant_b = _ab_campaign()
    noise = random.Random(11)
    rows = Rows(campaign, promo_type())
    _add_users(rows, notice, variant_a, 150, 30)
    _add_users(rows, notice, variant_b, 150, 12)
    rows.save()
    horizon = EVENT + timedelta(hours=72)

    def roll_up_at(at: datetime) -> dict[str, Any]:
        with time_machine.travel(at, tick=False):
            stats_rollup(campaign_ids=[campaign.pk])
        return stored(campaign)[f"step:{notice.pk}"]["ab"]

    results = [roll_up_at(EVENT - timedelta(days=3, minutes=-10))]
    for round_index in range(1, 8):
        a_clicks = sum(noise.random() < 0.10 for _ in range(150))
        b_clicks = sum(noise.random() < 0.18 for _ in range(150))
        _add_users(rows, notice, variant_a, 150, a_clicks)
        _add_users(rows, notice, variant_b, 150, b_clicks)
        rows.save()
        results.append(roll_up_at(EVENT - timedelta(days=3, minutes=-10 - 10 * round_index)))
    before_horizon = len(results)
    results.append(roll_up_at(horizon + timedelta(minutes=5)))
    decided = results[-1]
    # Late clicks, all A's: 120 of A's delivered users click after the decision.
    late = Delivery.objects.filter(message__variant=variant_a, status=S.DELIVERED)[:120]
    Delivery.objects.filter(pk__in=[d.pk for d in late]).update(
        status=S.CLICKED, clicked_at=horizon + timedelta(hours=1)
    )
    for minutes in (15, 25, 35):
        results.append(roll_up_at(horizon + timedelta(minutes=minutes)))

    winners = [result["winner"] for result in results]
    # Once named, a winner never changes or disappears; and nobody is named early.
    first = next((i for i, winner in enumerate(winners) if winner is not None), len(winners))
    assert winners[first:] == [winners[first]] * (len(winners) - first)
    assert winners[:before_horizon] == [None] * before_horizon
    assert all(result["stage"] == "running" for result in results[:before_horizon])
    assert decided["stage"] == "decided"
    assert decided["winner"] == "B"
    assert decided["p_value"] < 0.05
    assert all(result == decided for result in results[before_horizon:])
    kept = CampaignStats.objects.get(campaign=campaign, scope=f"step:{notice.pk}").ab_decisions
    assert kept == {"ctr": decided}


def test_ab_on_conversion_decides_on_conversions_not_clicks(db):
    """Per-campaign A/B metric: A and B are clicked alike, but A's users buy twice as often."""
    campaign, notice, variant_a, variant_b = _ab_campaign(ab_metric="conversion")
    rows = Rows(campaign, promo_type())
    a_messages = _add_users(rows, notice, variant_a, 200, 40)
    b_messages = _add_users(rows, notice, variant_b, 200, 40)
    rows.save()
    inside = EVENT + timedelta(hours=5)
    buyers = [m.user_id for m in a_messages[100:150]] + [m.user_id for m in b_messages[100:125]]
    Conversion.objects.bulk_create(
        [Conversion(user_id=pk, reference=f"o-{pk}", occurred_at=inside) for pk in buyers]
    )

    with time_machine.travel(EVENT + timedelta(hours=73), tick=False):
        stats_rollup(campaign_ids=[campaign.pk])
    ab = stored(campaign)[f"step:{notice.pk}"]["ab"]

    assert ab["metric"] == "conversion"
    assert ab["stage"] == "decided"
    assert ab["variants"] == [
        {"name": "A", "trials": 200, "successes": 50, "rate": 0.25},
        {"name": "B", "trials": 200, "successes": 25, "rate": 0.125},
    ]
    assert ab["winner"] == "A"
    assert ab["p_value"] == pytest.approx(two_proportion_z_test(50, 200, 25, 200)[1])

    # The same data judged on clicks (another campaign's choice) has no winner.
    Campaign.objects.filter(pk=campaign.pk).update(ab_metric="ctr")
    with time_machine.travel(EVENT + timedelta(hours=74), tick=False):
        stats_rollup(campaign_ids=[campaign.pk])
    ctr = stored(campaign)[f"step:{notice.pk}"]["ab"]
    assert ctr["metric"] == "ctr"
    assert ctr["winner"] is None
    assert ctr["verdict"].startswith("No significant difference")


def test_triggered_ab_decides_at_its_sample_of_users_whose_window_is_over(db):
    """No shared window: a user counts for the test once their own window is over, and the
    test decides when each variant has ab_sample_size of them."""
    campaign = Campaign.objects.create(
        name="Welcome",
        kind="triggered",
        status=CampaignStatus.RUNNING,
        ab_sample_size=100,
        attribution_hours=24,
    )
    step = CampaignStep.objects.create(campaign=campaign, name="Welcome", offset_minutes=0)
    variant_a = StepVariant.objects.create(step=step, name="A")
    variant_b = StepVariant.objects.create(step=step, name="B")
    rows = Rows(campaign, promo_type())
    start = datetime(2026, 3, 1, 9, 0, tzinfo=UTC)
    for variant, clicks in ((variant_a, 10), (variant_b, 40)):
        for index, user in enumerate(UserFactory.create_batch(120)):
            status = S.CLICKED if index % 3 == 0 and index // 3 < clicks else S.DELIVERED
            # 100 users entered on day 1, 20 on day 3.
            sent = start + timedelta(days=0 if index < 100 else 2)
            rows.message(user, step, variant, [(EMAIL, status, "")], sent_at=sent)
    rows.save()

    with time_machine.travel(start + timedelta(hours=23), tick=False):
        stats_rollup(campaign_ids=[campaign.pk])
    early = stored(campaign)[f"step:{step.pk}"]["ab"]
    with time_machine.travel(start + timedelta(hours=25), tick=False):
        stats_rollup(campaign_ids=[campaign.pk])
    decided = stored(campaign)[f"step:{step.pk}"]["ab"]

    assert early["stage"] == "running" and early["winner"] is None
    assert decided["stage"] == "decided"
    assert [v["trials"] for v in decided["variants"]] == [100, 100]  # day 3's not yet over
    assert decided["winner"] == "B"


def test_a_rollup_that_decides_second_shows_the_decision_kept_first(db):
    """Two roll-ups at once (beat and Refresh now) may both reach the horizon with counts a
    click apart: the first decision stored is kept, and the second roll-up shows it."""
    campaign, notice, variant_a, variant_b = _ab_campaign()
    rows = Rows(campaign, promo_type())
    _add_users(rows, notice, variant_a, 120, 10)
    _add_users(rows, notice, variant_b, 120, 40)
    rows.save()
    after = EVENT + timedelta(hours=73)
    with time_machine.travel(after, tick=False):
        first = campaign_funnel(campaign.pk)
        Delivery.objects.filter(message__variant=variant_a, status=S.DELIVERED).update(
            status=S.CLICKED
        )
        second = campaign_funnel(campaign.pk)
        stats_rollup(campaign_ids=[campaign.pk])  # stores its own decision first
        scope = f"step:{notice.pk}"
        assert first[scope]["ab"]["winner"] == "B" and second[scope]["ab"]["winner"] == "A"
        stats_module._store(campaign.pk, first)  # the slower roll-up, decided on older counts

    kept = CampaignStats.objects.get(campaign=campaign, scope=scope)
    assert kept.ab_decisions is not None
    assert kept.ab_decisions["ctr"]["winner"] == "A"
    assert kept.data["ab"]["winner"] == "A"
