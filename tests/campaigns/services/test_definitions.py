"""A campaign's definition and its differences in words: pure tests of `definition_changes`, and
on PostgreSQL that a definition read back equals the one stored at approval, and that the member
list's digest is the same whether PostgreSQL or Python computes it."""

from __future__ import annotations

import copy
import hashlib
from decimal import Decimal
from typing import Any

import pytest
from django.db import connection

from campaigns.models import AudienceThresholds, Campaign, Segment, SegmentMember
from campaigns.services import definitions
from campaigns.services.definitions import (
    Area,
    Change,
    campaign_definition,
    change_reason,
    definition_changes,
    definition_digest,
    members_digest,
)
from campaigns.services.lifecycle import campaign_create
from notifier.models import NotificationType
from tests.factories import UserFactory

# --- Differences in words (pure) ---------------------------------------------------------------


def base() -> dict[str, Any]:
    return {
        "campaign": {
            "name": "Double 11",
            "kind": "one_off",
            "category": "promo.flash_sale",
            "segment": 7,
            "priority": "low",
            "channels": ["inapp", "email"],
            "variables": {"headline": "50% off"},
            "holdout_percent": 0,
            "reentry_days": 30,
        },
        "steps": {
            "3": {
                "name": "Notice",
                "offset_minutes": -4320,
                "timing": "offset",
                "local_time": None,
                "variants": {
                    "5": {
                        "name": "A",
                        "weight": 1,
                        "copy": {
                            "email:": {
                                "subject": "{{ headline }}",
                                "title": "",
                                "body": "Hi",
                                "html": "",
                                "link": "",
                            }
                        },
                    }
                },
            }
        },
        "segment": {
            "spend_tiers": ["whale"],
            "activity": [],
            "tags_any": [],
            "tags_all": [],
            "locales": [],
            "time_zones": [],
            "points_expiring_within_days": None,
            "use_member_list": True,
        },
        "members": {"count": 11, "digest": "a"},
        "thresholds": {"whale_min_spend": "5000.00", "dolphin_min_spend": "500.00"},
        "labels": {"segment": "Winter whales"},
    }


def changed(edit) -> list[str]:
    after = copy.deepcopy(base())
    edit(after)
    return [change.text for change in definition_changes(base(), after)]


def test_the_same_definition_has_no_changes_and_a_new_segment_name_is_none():
    assert definition_changes(base(), base()) == []
    assert changed(lambda d: d["labels"].update(segment="Renamed")) == []


def test_segment_rules_and_the_member_list_in_words():
    def untick(d):
        d["segment"]["use_member_list"] = False
        d["members"] = None

    assert changed(untick) == ["Segment “Winter whales”: use member list: yes → no"]
    assert changed(lambda d: d["segment"].update(spend_tiers=["whale", "dolphin"])) == [
        "Segment “Winter whales”: spend tiers: whale → whale, dolphin"
    ]
    assert changed(lambda d: d["members"].update(count=71, digest="b")) == [
        "Segment “Winter whales”: member list: 11 → 71 members"
    ]
    assert changed(lambda d: d["members"].update(digest="b")) == [
        "Segment “Winter whales”: member list: other members (still 11)"
    ]


def test_another_segment_is_named_not_compared_rule_by_rule():
    def other(d):
        d["campaign"]["segment"] = 8
        d["segment"]["spend_tiers"] = []
        d["labels"]["segment"] = "Everyone"

    assert changed(other) == ["Segment: “Winter whales” → “Everyone”"]


def test_thresholds_settings_and_variables_in_words():
    assert changed(lambda d: d["thresholds"].update(whale_min_spend="3000.00")) == [
        "Audience thresholds: whale line (yearly spend): 5000.00 → 3000.00"
    ]
    assert changed(lambda d: d["campaign"].update(holdout_percent=10, channels=["inapp"])) == [
        "Channels: inapp, email → inapp",
        "Hold-out: 0% → 10%",
    ]
    assert changed(
        lambda d: d["campaign"].update(variables={"headline": "70% off", "code": "D11"})
    ) == ["Variable code added: “D11”", "Variable headline: “50% off” → “70% off”"]


def test_steps_variants_and_copy_in_words():
    def edit(d):
        step = d["steps"]["3"]
        step["offset_minutes"] = -1440
        step["variants"]["5"]["weight"] = 3
        step["variants"]["5"]["copy"]["email:"]["subject"] = "Last chance"
        step["variants"]["6"] = {"name": "B", "weight": 1, "copy": {}}
        d["steps"]["4"] = {
            "name": "Doors open",
            "offset_minutes": 0,
            "timing": "local_time",
            "local_time": "10:00:00",
            "variants": {},
        }

    assert changed(edit) == [
        "Step “Notice”: 3 days before the event → 1 day before the event",
        "Step “Notice” variant A: weight 1 → 3",
        "Step “Notice” variant A email subject: “{{ headline }}” → “Last chance”",
        "Step “Notice” variant B added (weight 1)",
        "Step “Doors open” added (at the event)",
    ]


def test_long_copy_is_shown_where_it_differs():
    long_body = "Dear customer, " + "our winter sale has everything you love. " * 5

    def edit(d):
        d["steps"]["3"]["variants"]["5"]["copy"]["email:"]["body"] = long_body + "Use code X!"

    base_long = base()
    base_long["steps"]["3"]["variants"]["5"]["copy"]["email:"]["body"] = long_body + "See you!"
    after = copy.deepcopy(base_long)
    edit(after)
    [change] = definition_changes(base_long, after)
    assert change.area is Area.COPY
    assert change.text.startswith("Step “Notice” variant A email body: “…")
    assert "See you!”" in change.text and "Use code X!”" in change.text
    assert "Dear customer" not in change.text


def test_any_difference_counts_even_one_no_sentence_names():
    after = base()
    after["something new"] = 1
    assert [c.text for c in definition_changes(base(), after)] == [
        "Something else about it changed"
    ]


def test_the_reason_names_the_kinds_of_change_then_the_first_changes():
    changes = [
        Change(Area.SEGMENT, "Segment “W”: use member list: yes → no"),
        Change(Area.COPY, "Step “N” variant A email subject: “a” → “b”"),
        Change(Area.COPY, "Step “N” variant A email body: “a” → “b”"),
    ]
    assert change_reason(changes) == (
        "its segment changed, its copy changed: Segment “W”: use member list: yes → no; "
        "Step “N” variant A email subject: “a” → “b”; and 1 more"
    )
    assert len(change_reason([Change(Area.COPY, "x" * 900)])) == 500


def test_the_digest_ignores_labels_and_key_order():
    renamed = base()
    renamed["labels"]["segment"] = "Other name"
    reordered = dict(reversed(list(base().items())))
    assert definition_digest(base()) == definition_digest(renamed) == definition_digest(reordered)
    edited = base()
    edited["segment"]["use_member_list"] = False
    assert definition_digest(edited) != definition_digest(base())


# --- Read from the database --------------------------------------------------------------------


@pytest.mark.django_db
def test_a_definition_read_back_equals_the_one_stored():
    AudienceThresholds.objects.all().delete()  # created afresh: defaults unrounded in memory
    segment = Segment.objects.create(
        name="Whales", spend_tiers=["whale"], activity=["active"], use_member_list=True
    )
    SegmentMember.objects.create(segment=segment, user=UserFactory())
    campaign = campaign_create(
        name="Double 11",
        category=NotificationType.objects.get(pk="promo.flash_sale"),
        created_by=None,
        segment=segment,
        variables={"price": "9.99"},
    )
    definition = campaign_definition(campaign.pk)
    Campaign.objects.filter(pk=campaign.pk).update(approved_definition=definition)
    stored = Campaign.objects.get(pk=campaign.pk).approved_definition
    assert definition_changes(stored, campaign_definition(campaign.pk)) == []
    assert stored["thresholds"] == {
        "whale_min_spend": "5000.00",
        "dolphin_min_spend": "500.00",
        "active_within_days": 30,
        "dormant_within_days": 90,
    }
    assert stored["members"]["count"] == 1


@pytest.mark.django_db
def test_the_member_digest_is_the_same_in_postgresql_and_in_python(monkeypatch):
    assert connection.vendor == "postgresql"
    segment = Segment.objects.create(name="List", use_member_list=True)
    users = UserFactory.create_batch(5)
    for user in reversed(users):
        SegmentMember.objects.create(segment=segment, user=user)
    ids = ",".join(str(pk) for pk in sorted(u.pk for u in users))
    expected = (5, hashlib.sha256(ids.encode()).hexdigest())
    assert members_digest(segment.pk) == expected
    monkeypatch.setattr(definitions.connection, "vendor", "sqlite")
    assert members_digest(segment.pk) == expected
    empty = Segment.objects.create(name="Empty", use_member_list=True)
    assert members_digest(empty.pk) == (0, hashlib.sha256(b"").hexdigest())


@pytest.mark.django_db
def test_thresholds_count_only_for_the_rules_that_follow_them():
    AudienceThresholds.current()
    assert definitions.thresholds_followed(Segment(spend_tiers=[], activity=[])) == {}
    assert (
        definitions.thresholds_followed(
            Segment(spend_tiers=["whale", "dolphin", "small_fish"], activity=[])
        )
        == {}
    )  # all three tiers: no condition
    assert set(definitions.thresholds_followed(Segment(spend_tiers=[], activity=["churned"]))) == {
        "active_within_days",
        "dormant_within_days",
    }
    assert Decimal(
        definitions.thresholds_followed(Segment(spend_tiers=["whale"]))["whale_min_spend"]
    ) == Decimal("5000")
