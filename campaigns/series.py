"""Who has stopped a campaign's series: a customer who converted for it or clicked one of its
messages (as its `stop_series_on` says) gets none of its steps not yet sent. Routing and the
release of held messages ask `series_stopped` for a whole batch in a few queries, and suppress
those messages with the reason (series_stopped) on the customer's timeline."""

from __future__ import annotations

from collections.abc import Iterable

from campaigns.models import Campaign, CampaignKind, Conversion, SeriesStop
from campaigns.policies import series_stops
from notifier.models import Delivery

Pair = tuple[int, int]  # (campaign id, user id)


def series_stopped(pairs: Iterable[Pair]) -> frozenset[Pair]:
    """Of these (campaign, user) pairs, those whose series stopped: at most three queries."""
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
    clicked = set(
        Delivery.objects.filter(
            message__campaign_id__in=campaign_ids,
            user_id__in=user_ids,
            message__is_test=False,
            clicked_at__isnull=False,
        )
        .values_list("message__campaign_id", "user_id")
        .distinct()
    )
    return frozenset(
        pair
        for pair in wanted
        if series_stops(rules[pair[0]], converted=pair in converted, clicked=pair in clicked)
    )
