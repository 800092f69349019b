"""Triggered campaigns: who entered the segment since its last evaluation.

Entry is a transition. Each evaluation compares the segment now with the membership recorded
at the previous one (`TriggerEntry`, one row per campaign and user ever seen in it), in three
set-based statements whatever the segment's size (a million members is three queries, not a
million Python iterations):

1. users whose message since they entered has been written (or who were held out) are no
   longer due;
2. users in the segment now and not at the last evaluation (new, or back after leaving) are
   recorded as entered now, and due unless the campaign reached them within its re-entry days;
3. users recorded as in it and no longer in it have left (and are no longer due).

The walk of the triggered step goes over the due users only (`trigger_audience`), and each
entry writes at most one message (keyed by the entry's time), so a user who stays in the
segment for months gets it once, and again only after leaving and coming back, outside the
re-entry days. At a campaign's first evaluation nobody was recorded: its members then count as
entering, so a new triggered campaign reaches the segment's current members once.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import datetime, timedelta

from django.db import connection
from django.db.models import Exists, OuterRef, QuerySet
from django.utils import timezone

from campaigns.models import Campaign, Holdout, TriggerEntry
from campaigns.services.segments import segment_users
from notifier.db import table_name
from notifier.models import Message, Recipient, User
from notifier.user_keys import UserKey


@dataclass(frozen=True)
class EntryReport:
    served: int = 0  # no longer due: their message is written, or they are held out
    entered: int = 0
    due: int = 0  # of those who entered: not reached within the re-entry days
    left: int = 0


def trigger_entries_update(*, campaign: Campaign, now: datetime | None = None) -> EntryReport:
    """Record who entered and who left the campaign's segment since the last evaluation.
    Run it with the campaign's row locked (one evaluation of a campaign at a time)."""
    assert campaign.segment is not None
    now = now or timezone.now()
    entries = TriggerEntry.objects.filter(campaign_id=campaign.pk)
    served = (
        entries.filter(due=True)
        .filter(
            Exists(
                Message.objects.filter(
                    campaign_id=campaign.pk,
                    user_id=OuterRef("user_id"),
                    is_test=False,
                    created_at__gte=OuterRef("entered_at"),
                )
            )
            | Exists(Holdout.objects.filter(campaign_id=campaign.pk, user_id=OuterRef("user_id")))
        )
        .update(due=False)
    )
    members = segment_users(campaign.segment, now=now)
    entered, due = _record_entries(campaign, members, now)
    left = (
        entries.filter(in_segment=True)
        .filter(~Exists(members.filter(pk=OuterRef("user_id"))))
        .update(in_segment=False, due=False, left_at=now)
    )
    return EntryReport(served=served, entered=entered, due=due, left=left)


def _record_entries(campaign: Campaign, members: QuerySet[User], now: datetime) -> tuple[int, int]:
    """INSERT ... SELECT the members not recorded as in the segment: new users go in, users
    who had left come back (ON CONFLICT), each entered now; due unless a message of the
    campaign reached them within its re-entry days. Returns (entered, due)."""
    members_sql, members_params = members.values("pk").query.sql_with_params()
    entry, message = table_name(TriggerEntry), table_name(Message)
    since = now - timedelta(days=campaign.reentry_days)
    sql = f"""
        WITH recorded AS (
        INSERT INTO {entry} AS e (campaign_id, user_id, in_segment, entered_at, left_at, due)
        SELECT %s, m.id, TRUE, %s, NULL, NOT EXISTS (
            SELECT 1 FROM {message} AS msg
            WHERE msg.campaign_id = %s AND msg.user_id = m.id AND NOT msg.is_test
              AND msg.created_at >= %s
        )
        FROM ({members_sql}) AS m (id)
        WHERE NOT EXISTS (
            SELECT 1 FROM {entry} AS was
            WHERE was.campaign_id = %s AND was.user_id = m.id AND was.in_segment
        )
        ON CONFLICT (campaign_id, user_id) DO UPDATE
            SET in_segment = TRUE, entered_at = EXCLUDED.entered_at, left_at = NULL,
                due = EXCLUDED.due
            WHERE NOT e.in_segment
        RETURNING due
        )
        SELECT count(*), count(*) FILTER (WHERE due) FROM recorded
    """
    params = [campaign.pk, now, campaign.pk, since, *members_params, campaign.pk]
    with connection.cursor() as cursor:
        cursor.execute(sql, params)
        row = cursor.fetchone()
    return (int(row[0]), int(row[1])) if row else (0, 0)


def trigger_audience(campaign: Campaign) -> QuerySet[Recipient]:
    """The profiles of the users a triggered campaign's walk hands out: those due after
    entering its segment. Walked by profile id like `segment_walk`."""
    return Recipient.objects.filter(
        Exists(
            TriggerEntry.objects.filter(
                campaign_id=campaign.pk, user_id=OuterRef("user_id"), due=True
            )
        )
    )


def trigger_entries_due(*, campaign_id: int, user_ids: Iterable[UserKey]) -> Mapping[int, datetime]:
    """user id -> when they entered, for the users of a batch still due the message."""
    return dict(
        TriggerEntry.objects.filter(
            campaign_id=campaign_id, user_id__in=list(user_ids), due=True
        ).values_list("user_id", "entered_at")
    )


def entry_key(*, campaign_id: int, user_id: UserKey, entered_at: datetime) -> str:
    """One message per entry: a walk that runs again writes nothing twice."""
    stamp = int(entered_at.timestamp() * 1_000_000)
    return f"campaign:{campaign_id}:user:{user_id}:entry:{stamp}"
