"""The campaigns app's tables in the erasure registry (notifier.services.erasure): which hold a
person's data and what erasure does to each. Registered by CampaignsConfig.ready()."""

from __future__ import annotations

from campaigns.models import Conversion, Holdout, SegmentMember, TriggerEntry
from notifier.services.erasure import PersonalTable, personal_tables_register

TABLES = (
    PersonalTable(
        "campaigns.SegmentMember",
        lambda p: SegmentMember.objects.filter(user_id=p.user_id),
        delete=True,
        section="segment_memberships",
        why="An imported list is the person's data; they leave every list",
    ),
    PersonalTable(
        "campaigns.TriggerEntry",
        lambda p: TriggerEntry.objects.filter(user_id=p.user_id),
        delete=True,
        section="trigger_entries",
        why="Whether they were in a triggered campaign's segment; the walk skips erased people",
    ),
    PersonalTable(
        "campaigns.Holdout",
        lambda p: Holdout.objects.filter(user_id=p.user_id),
        keep={"user": "the control group's size and conversions count in the funnel"},
        section="holdouts",
    ),
    PersonalTable(
        "campaigns.Conversion",
        lambda p: Conversion.objects.filter(user_id=p.user_id),
        blank={"reference": ""},
        keep={
            "user": "conversions and their value count in the funnel",
            "name": "what was counted, e.g. purchase",
        },
        section="conversions",
        why="The product's own reference (an order id) goes; the count and value stay",
    ),
)

NOT_PERSONAL = {
    "campaigns.AudienceThresholds": "spend and activity thresholds",
    "campaigns.Segment": "rules over profiles, written by marketers",
    "campaigns.Campaign": "copy and settings written by marketers; created_by and approved_by "
    "are staff",
    "campaigns.CampaignStep": "a step's schedule and fan-out progress",
    "campaigns.FanoutAttempt": "a batch's first recipient id and run count",
    "campaigns.FanoutBatch": "recipient ids of a batch in progress (the profiles stay, emptied)",
    "campaigns.StepVariant": "a variant's name and weight",
    "campaigns.VariantTemplate": "copy written by marketers",
    "campaigns.CampaignStats": "aggregate counts",
}


def register() -> None:
    personal_tables_register(TABLES, NOT_PERSONAL)
