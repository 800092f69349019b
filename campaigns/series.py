"""Who has stopped a campaign's series: a customer who converted for it or clicked one of its
messages (as its `stop_series_on` says) gets none of its steps not yet sent. Routing and the
release of held messages ask `series_stopped` for a whole batch in a few queries, and suppress
those messages with the reason (series_stopped) on the customer's timeline."""

from __future__ import annotations

from collections.abc import Iterable

from campaigns.models import Campaign, CampaignKind, Conversion, SeriesStop
from campaigns.policies import series_stops
from notifier.db import any_of
from notifier.models import Delivery, Message

Pair = tuple[int, int]  # (campaign id, user id)


def series_stopped(pairs: Iterable[Pair]) -> frozenset[Pair]:
    """Of these (campaign, user) pairs, those whose series stopped: at most four queries."""
    wanted = set(pairs)
    if not wanted:
        return frozenset()
    rules = dict(
        # A triggered campaign is one message per entry into its segment, not a series: a
        # conversion after one entry does not stop the next.
        Campaign.objects.filter(pk__in={c for c, _ in wanted}, kind=CampaignKind.ONE_OFF)
        .exclude(stop_series_on=SeriesStop.NEVER)
        .values_list("pk", "stop_series_on")
    )
    wanted = {(c, u) for c, u in wanted if c in rules}
    if not wanted:
        return frozenset()
    campaign_ids, user_ids = {c for c, _ in wanted}, {u for _, u in wanted}
    converted = set(
        Conversion.objects.filter(campaign_id__in=campaign_ids, user_id__in=user_ids)
        .values_list("campaign_id", "user_id")
        .distinct()
    )
    clicked = _clicked(campaign_ids, user_ids)
    return frozenset(
        pair
        for pair in wanted
        if series_stops(rules[pair[0]], converted=pair in converted, clicked=pair in clicked)
    )


def _clicked(campaign_ids: set[int], user_ids: set[int]) -> set[Pair]:
    """(campaign, user) pairs of these whose customer clicked one of the campaign's messages
    (not a test send). Two look-ups, each bounded by what it finds whatever the tables' size
    and statistics: the users' clicked deliveries (a partial index holds those alone), then
    their messages by key. One join let the planner hash every message of a million-user
    campaign for each batch of a thousand users."""
    clicks = list(
        Delivery.objects.filter(any_of("user", user_ids), clicked_at__isnull=False)
        .values_list("message_id", flat=True)
        .distinct()
    )
    if not clicks:
        return set()
    return set(
        Message.objects.filter(
            any_of("pk", clicks), any_of("campaign", campaign_ids), is_test=False
        ).values_list("campaign_id", "user_id")
    )
