"""Demo data for `manage.py screenshots`: customers, segments, and campaigns run for real.

Everything goes through the services a marketer's clicks and the workers would call: the
autumn campaign is created, approved and sent step by step at the moments of its 3-2-1 plan
(the clock travels back for that, the embedded worker delivers), its readers open, click and
buy through the tracking services, and the funnel is rolled up by the stats job.
"""

from __future__ import annotations

import random
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import date, datetime, timedelta
from datetime import time as dt_time
from decimal import Decimal
from typing import Any
from unittest import mock
from zoneinfo import ZoneInfo

from django.contrib.auth.models import Group
from django.db.models import Min
from django.utils import timezone

from campaigns.api import track_conversion
from campaigns.models import (
    Campaign,
    CampaignStep,
    FanoutBatch,
    Holdout,
    Segment,
    StepTiming,
    StepVariant,
    VariantTemplate,
)
from campaigns.services.fanout import steps_start_due
from campaigns.services.lifecycle import (
    campaign_approve,
    campaign_create,
    campaign_submit,
    copy_variant,
)
from campaigns.services.segments import segment_members_add, segment_users
from campaigns.services.stats import learn_active_hours, stats_rollup
from campaigns.services.tracking import record_click, record_open
from channels.base import Channel
from notifier import dispatch
from notifier.api import notify
from notifier.models import (
    CapPeriod,
    Delivery,
    Feedback,
    FrequencyCounter,
    InboxItem,
    Message,
    NotificationType,
    Recipient,
    User,
    recipient_update,
)
from notifier.policies.caps import windows_at
from notifier.queues import Lane
from notifier.services.inbox import inbox_feedback, inbox_mark_read
from notifier.services.preferences import consent_give, unsubscribe
from notifier.services.release import held_release
from notifier.status import DeliveryStatus
from notifier_site.embedded import embedded_worker

S = DeliveryStatus
PASSWORD = "docs-only-password"
CUSTOMERS = 600
TAGS = [
    "vintage-cards",
    "board-games",
    "comics",
    "sneakers",
    "coffee",
    "home-audio",
    "running",
    "cameras",
]
# (locale, share, time zones, first names, last names)
PEOPLE = [
    (
        "en",
        55,
        ["America/New_York", "Europe/London", "America/Los_Angeles", "Australia/Sydney"],
        "Olivia Liam Emma Noah Ava Ethan Mia Lucas Chloe Mason Isla Jack Grace Owen Ruby Sam",
        "Smith Brown Taylor Wilson Evans Walker Hughes Green Baker Carter",
    ),
    (
        "zh-hans",
        25,
        ["Asia/Shanghai"],
        "Mei Wei Jing Hao Xin Yan Jun Lan Tao Ying",
        "Wang Chen Zhang Liu Li Zhao Huang Zhou",
    ),
    (
        "de",
        10,
        ["Europe/Berlin"],
        "Lena Jonas Hannah Felix Emilia Paul Marie Lukas",
        "Muller Schmidt Weber Becker Wagner",
    ),
    (
        "es",
        10,
        ["Europe/Madrid", "America/Mexico_City"],
        "Lucia Mateo Sofia Hugo Valeria Daniel Carmen Diego",
        "Garcia Lopez Martin Sanchez Romero",
    ),
]


@dataclass
class DocsData:
    """What the screenshots open."""

    marketer: User
    lead: User
    support: User
    collectors: Segment
    vip_list: Segment
    vip_csv: bytes
    upcoming: Campaign
    past: Campaign
    customer: User
    reader: User  # an end user with a lived-in inbox, for the phone screenshots
    campaign_email: Message  # an English customer's email of the autumn fair: its unsubscribe
    zh_reader: User  # the same in Simplified Chinese
    zh_campaign_message: int  # a message of the Chinese campaign she got, for her unsubscribe link
    weekend: Campaign  # a draft with copy, a send rate and a forecast with every reason
    rushed: Campaign  # a draft whose Notice step is already past
    running: Campaign  # a step part way through sending
    preview_customer: User  # a Chinese customer of the weekend draft's segment
    calendar_day: date  # a day in the month the calendar shows


# --- The clock ---------------------------------------------------------------------------------


@contextmanager
def at(moment: datetime) -> Iterator[None]:
    """Run the block as if it were `moment` (the clock keeps ticking from there)."""
    import time_machine

    with time_machine.travel(moment, tick=True):
        yield


# --- People --------------------------------------------------------------------------------------


def staff(username: str, first: str, last: str, group: str) -> User:
    user = User.objects.create_user(
        username=username,
        password=PASSWORD,
        first_name=first,
        last_name=last,
        email=f"{username}@shop.example.com",
        is_staff=True,
    )
    recipient_update(user, time_zone="Europe/London", quiet_hours_enabled=False)
    user.groups.add(Group.objects.get(name=group))
    return user


def customers(rng: random.Random, *, now: datetime) -> list[User]:
    """Varied spend, activity, interests, locales and time zones; most agreed to offers."""
    people: list[User] = []
    profiles: dict[str, dict[str, Any]] = {}  # username -> recipient profile fields
    weights = [share for _, share, *_ in PEOPLE]
    for index in range(CUSTOMERS):
        locale, _, zones, firsts, lasts = rng.choices(PEOPLE, weights)[0]
        first, last = rng.choice(firsts.split()), rng.choice(lasts.split())
        tier = rng.random()
        if tier < 0.07:
            spend = rng.uniform(5200, 24000)
        elif tier < 0.38:
            spend = rng.uniform(520, 4800)
        else:
            spend = rng.uniform(0, 480)
        state = rng.random()
        if state < 0.55:
            last_active: datetime | None = now - timedelta(days=rng.uniform(0, 28))
        elif state < 0.8:
            last_active = now - timedelta(days=rng.uniform(32, 88))
        elif state < 0.95:
            last_active = now - timedelta(days=rng.uniform(95, 400))
        else:
            last_active = None
        email = f"{first}.{last}{index}@example.com".lower()
        # A mailbox that no longer exists: a permanent failure in the funnel. (No timeouts:
        # a retry's countdown races the travelled clock this data is made on.)
        if index % 97 == 13:
            email = email.replace("@", "+fail-permanent@")
        username = f"{first}.{last}{index}".lower()
        people.append(
            User(
                username=username,
                first_name=first,
                last_name=last,
                email=email,
                is_active=index % 61 != 5,
                password="!",  # customers never log in to the admin
            )
        )
        profiles[username] = {
            "email": email,
            "phone": f"+86139{index:08d}",
            "locale": locale,
            "time_zone": rng.choice(zones),
            "yearly_spend": Decimal(f"{spend:.2f}"),
            "last_active_at": last_active,
            "interest_tags": rng.sample(TAGS, rng.choice([1, 1, 2, 2, 3])),
            "quiet_hours_enabled": True,
        }
    User.objects.bulk_create(people)
    saved = list(User.objects.filter(username__in=list(profiles)).order_by("pk"))
    Recipient.objects.bulk_create(
        [
            Recipient(user_id=user.pk, **profiles[user.username])
            for user in saved
            if user.username in profiles
        ],
        batch_size=1000,
    )
    for user in saved:
        if rng.random() < 0.86:
            consent_give(
                user_id=user.pk,
                channel="all",
                source="signup",
                wording="Yes, send me offers and news about the shop.",
            )
    return saved


# --- Copy ----------------------------------------------------------------------------------------

NOTICE_A = {
    "inapp": {
        "title": "{{ campaign.name }}: three days to go",
        "body": "Hi {{ user.first_name }}, the {{ campaign.name }} opens in three days, "
        "and {{ headline }}. We kept a few of the ones you follow aside.",
        "link": "https://shop.example.com/fair",
    },
    "email": {
        "subject": "{{ user.first_name }}, the {{ campaign.name }} opens in three days",
        "body": "Hi {{ user.first_name }},\n\nThe {{ campaign.name }} opens "
        "{{ campaign.event_at }} and {{ headline }}. Use {{ coupon_code }} at checkout.\n\n"
        "See you there,\nMaya from the shop\n\nNo more offers like this: {{ unsubscribe_url }}",
        "html": '<div style="font-family: Georgia, serif; max-width: 520px; margin: auto; '
        'color: #333"><h2 style="color: #8a4b2a">The {{ campaign.name }} opens in three days'
        "</h2><p>Hi {{ user.first_name }},</p><p>{{ headline|capitalize }}. Use "
        '<b style="background: #fdf1d6; padding: 2px 6px">{{ coupon_code }}</b> at checkout.'
        '</p><p><a href="https://shop.example.com/fair" style="background: #8a4b2a; '
        'color: #fff; padding: 8px 14px; text-decoration: none; border-radius: 4px">'
        'Browse the fair</a></p><p>See you there,<br>Maya from the shop</p><p style="'
        'font-size: 11px; color: #999"><a href="{{ unsubscribe_url }}">No more offers like '
        "this</a></p></div>",
    },
}
NOTICE_B = {
    "inapp": {
        "title": "Your watchlist goes on sale in 3 days",
        "body": "{{ user.first_name }}, {{ headline }} at the {{ campaign.name }}. "
        "Tap to see which of your picks are in.",
        "link": "https://shop.example.com/fair/watchlist",
    },
    "email": {
        "subject": "Your watchlist goes on sale in 3 days",
        "body": "Hi {{ user.first_name }},\n\n{{ headline|capitalize }} at the "
        "{{ campaign.name }}, and your watchlist is in it. Code {{ coupon_code }} works from "
        "{{ campaign.event_at }}.\n\nMaya from the shop\n\nUnsubscribe: {{ unsubscribe_url }}",
        "html": '<div style="font-family: Helvetica, Arial, sans-serif; max-width: 520px; '
        'margin: auto; color: #222"><p style="font-size: 12px; color: #8a4b2a; '
        'text-transform: uppercase">{{ campaign.name }}</p><h2>Your watchlist goes on sale in '
        "3 days</h2><p>Hi {{ user.first_name }}, {{ headline }}, and your picks are in it.</p>"
        "<p>Code <b>{{ coupon_code }}</b> works from {{ campaign.event_at }}.</p><p><a "
        'href="https://shop.example.com/fair/watchlist" style="color: #8a4b2a">See your '
        'watchlist</a></p><p style="font-size: 11px; color: #999"><a href="'
        '{{ unsubscribe_url }}">Unsubscribe</a></p></div>',
    },
}
REMINDER = {
    "inapp": {
        "title": "Two days to the {{ campaign.name }}",
        "body": "{{ user.first_name }}, {{ headline }}: set a reminder so you are first in.",
        "link": "https://shop.example.com/fair",
    },
    "email": {
        "subject": "Two days to go, {{ user.first_name }}",
        "body": "Two days until the {{ campaign.name }}: {{ headline }}.\n"
        "Your code: {{ coupon_code }}\n\nUnsubscribe: {{ unsubscribe_url }}",
    },
}
LAST_CALL = {
    "inapp": {
        "title": "Doors open in an hour",
        "body": "{{ user.first_name }}, the {{ campaign.name }} starts in an hour. "
        "{{ headline|capitalize }}.",
        "link": "https://shop.example.com/fair",
    },
    "email": {
        "subject": "One hour, {{ user.first_name }}",
        "body": "The {{ campaign.name }} starts in an hour: {{ headline }}.\n"
        "Code {{ coupon_code }}.\n\nUnsubscribe: {{ unsubscribe_url }}",
    },
}
# Chinese punctuation is full-width on purpose.
ZH_NOTICE = {
    "inapp": {
        "title": "{{ campaign.name }}：还有三天",  # noqa: RUF001
        "body": "{{ user.first_name }}，你好！{{ campaign.name }}三天后开幕，"  # noqa: RUF001
        "你关注的卡牌我们先留了几张。",
        "link": "https://shop.example.com/zh/fair",
    },
}


def write_copy(variant: StepVariant, copy: dict[str, dict[str, str]], locale: str = "") -> None:
    for channel, parts in copy.items():
        VariantTemplate.objects.update_or_create(
            variant=variant, channel=channel, locale=locale, defaults=parts
        )


def card_fair(
    *,
    name: str,
    marketer: User,
    segment: Segment,
    event_at: datetime,
    headline: str,
    coupon: str,
    description: str = "Our card fair: the notice with an A/B test of the headline, a reminder "
    "and a last call.",
) -> Campaign:
    """A 3-2-1 campaign with warm copy, an A/B test on its first step and a 10% hold-out."""
    campaign = campaign_create(
        name=name,
        category=NotificationType.objects.get(pk="promo.flash_sale"),
        created_by=marketer,
        segment=segment,
        event_at=event_at,
        channels=["inapp", "email"],
        variables={"headline": headline, "coupon_code": coupon},
        holdout_percent=10,
    )
    Campaign.objects.filter(pk=campaign.pk).update(description=description)
    steps = {step.name: step for step in campaign.steps.all()}
    notice_a = steps["Notice"].variants.get()
    write_copy(notice_a, NOTICE_A)
    write_copy(notice_a, ZH_NOTICE, locale="zh-hans")
    notice_b = copy_variant(source=notice_a, name="B")
    write_copy(notice_b, NOTICE_B)
    write_copy(steps["Reminder"].variants.get(), REMINDER)
    write_copy(steps["Last call"].variants.get(), LAST_CALL)
    campaign.refresh_from_db()
    return campaign


# --- Running the autumn campaign for real ------------------------------------------------------


def wait_for_step(
    step: CampaignStep, *, timeout: float = 120.0, held_back: set[int] | None = None
) -> None:
    """Until the embedded worker has walked, written, routed and sent the whole step (but for
    the deliveries of the users `held_back` from it)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        step.refresh_from_db()
        messages = Message.objects.filter(step=step)
        unrouted = messages.filter(deliveries__isnull=True).exists()
        busy = (
            Delivery.objects.filter(message__step=step, status__in=[S.PENDING, S.QUEUED, S.SENDING])
            .exclude(message__user_id__in=held_back or set())
            .exists()
        )
        if step.walk_done and step.batches_done >= step.batches_total and not unrouted and not busy:
            return
        time.sleep(0.2)
    raise RuntimeError(f"step {step.name} did not finish sending in {timeout:.0f}s")


def run_step(step: CampaignStep, event_at: datetime) -> None:
    """At the step's moment the beat job starts it and the worker sends it; then the release
    job, each time the next user's quiet hours end, sends what it held for them."""
    moment = event_at + timedelta(minutes=step.offset_minutes)
    with at(moment + timedelta(seconds=5)), embedded_worker():
        report = steps_start_due()
        if step.pk not in report.started:
            raise RuntimeError(f"step {step.name} did not start: {report}")
        wait_for_step(step)
    horizon = moment + timedelta(hours=20)
    while True:
        due = Delivery.objects.filter(
            message__step=step, status=S.HELD, next_attempt_at__lte=horizon
        ).aggregate(first=Min("next_attempt_at"))["first"]
        if due is None:
            return
        with at(due + timedelta(minutes=1)), embedded_worker():
            held_release()
            wait_for_step(step)


def engage(step: CampaignStep, rng: random.Random, *, better_variant: str = "B") -> None:
    """Readers open, click, buy and give feedback over the hours after the step went out."""
    moment = step.started_at or timezone.now()
    deliveries = list(
        Delivery.objects.filter(message__step=step, status__in=[S.SENT, S.DELIVERED])
        .select_related("message__variant")
        .order_by("pk")
    )
    with at(moment + timedelta(hours=23)):
        for delivery in deliveries:
            variant = delivery.message.variant
            boost = 1.9 if variant is not None and variant.name == better_variant else 1.0
            sent_at = delivery.sent_at or moment
            opened = sent_at + timedelta(minutes=rng.uniform(3, 200))
            if delivery.channel == "inapp":
                if rng.random() > 0.55:
                    continue
                item = InboxItem.objects.filter(delivery=delivery).first()
                if item is None:
                    continue
                inbox_mark_read(user_id=delivery.user_id, item_id=item.pk)
                if rng.random() < 0.25:
                    feedback = rng.choices(
                        [Feedback.USEFUL, Feedback.MEH, Feedback.IRRELEVANT], [6, 3, 1]
                    )[0]
                    inbox_feedback(user_id=delivery.user_id, item_id=item.pk, feedback=feedback)
            elif rng.random() < 0.45:
                record_open(message_id=delivery.message_id, channel="email", at=opened)
            else:
                continue
            if rng.random() < 0.22 * boost:
                clicked = opened + timedelta(minutes=rng.uniform(0.2, 5))
                record_click(
                    message_id=delivery.message_id,
                    channel=delivery.channel,
                    index=0,
                    at=clicked,
                )
                if rng.random() < 0.25:
                    track_conversion(
                        delivery.user_id,
                        value=Decimal(f"{rng.uniform(12, 240):.2f}"),
                        reference=f"order:{delivery.message_id}-{delivery.channel}",
                        occurred_at=clicked + timedelta(minutes=rng.uniform(2, 40)),
                    )
            elif delivery.channel == "email" and rng.random() < 0.03:
                unsubscribe(
                    user_id=delivery.user_id,
                    category="promo.flash_sale",
                    channel="email",
                    scope="this",
                    source="unsubscribe_link",
                    message_id=delivery.message_id,
                )


def holdout_buys(campaign: Campaign, rng: random.Random, *, start: datetime) -> None:
    """The control group buys too, less often: the uplift is measured against them."""
    with at(start + timedelta(days=3, hours=2)):
        for user_id in Holdout.objects.filter(campaign=campaign).values_list("user_id", flat=True):
            if rng.random() < 0.07:
                track_conversion(
                    user_id,
                    value=Decimal(f"{rng.uniform(12, 180):.2f}"),
                    reference=f"order:holdout-{user_id}",
                    occurred_at=start + timedelta(hours=rng.uniform(1, 60)),
                )


# --- Everything ----------------------------------------------------------------------------------


def seed(*, now: datetime | None = None) -> DocsData:
    """Seed the throwaway database; returns what the screenshots open."""
    now = now or timezone.now()
    rng = random.Random(2026)
    past_event = (now - timedelta(days=4)).replace(hour=14, minute=0, second=0, microsecond=0)
    with at(past_event - timedelta(days=6)):
        marketer = staff("maya", "Maya", "Lin", "Marketer")
        lead = staff("leo", "Leo", "Park", "Marketing lead")
        support = staff("sofia", "Sofia", "Reyes", "Support")
        # Before the customers: the first of the Chinese campaign's batches, which is sent.
        zh_reader = chinese_reader()
        people = customers(rng, now=now)
        collectors = Segment.objects.create(
            name="Card and game fans who spend",
            description="Collectors and board gamers in the dolphin and whale tiers who have "
            "been around in the last three months.",
            spend_tiers=["whale", "dolphin"],
            activity=["active", "dormant"],
            tags_any=["vintage-cards", "board-games", "comics"],
        )
        chinese = Segment.objects.create(
            name="Chinese-speaking shoppers",
            locales=["zh-hans"],
            time_zones=["Asia/Shanghai"],
        )
        dormant_whales = Segment.objects.create(
            name="Dormant whales", spend_tiers=["whale"], activity=["dormant"]
        )
        recent = Segment.objects.create(
            name="Seen in the last 90 days", activity=["active", "dormant"]
        )
        vip_list = Segment.objects.create(
            name="Fair VIP guest list",
            description="Guests invited by the store team, imported from their spreadsheet.",
            use_member_list=True,
        )
        past = card_fair(
            name="Autumn card fair",
            marketer=marketer,
            segment=recent,
            event_at=past_event,
            headline="up to 40% off sealed boxes",
            coupon="FAIR15",
        )
        campaign_submit(campaign=past, by=marketer)
        campaign_approve(campaign=past, by=lead)

    for step in past.steps.order_by("offset_minutes"):
        run_step(step, past_event)
        step.refresh_from_db()
        engage(step, rng)
    holdout_buys(past, rng, start=past_event - timedelta(days=3))
    with at(past_event + timedelta(hours=2)):
        steps_start_due()  # finishes the last step and the campaign
    stats_rollup(campaign_ids=[past.pk])
    learn_active_hours()
    running = sending_campaign(marketer=marketer, lead=lead, segment=chinese, now=now)

    upcoming_event = (now + timedelta(days=9)).replace(hour=11, minute=0, second=0, microsecond=0)
    upcoming = card_fair(
        name="Winter card fair",
        marketer=marketer,
        segment=collectors,
        event_at=upcoming_event,
        headline="sealed boxes from 25% off, and the first 2026 sets",
        coupon="WINTER20",
    )
    # The first two steps at a time of day in each user's own zone, as marketers often want.
    notice, reminder = upcoming.steps.order_by("offset_minutes")[:2]
    CampaignStep.objects.filter(pk=notice.pk).update(
        timing=StepTiming.LOCAL_TIME, local_time=dt_time(10)
    )
    CampaignStep.objects.filter(pk=reminder.pk).update(timing=StepTiming.ACTIVE_HOUR)

    weekend, preview_customer = weekend_draft(marketer=marketer, segment=collectors, now=now)
    rushed = campaign_create(
        name="Sealed box flash sale",
        category=NotificationType.objects.get(pk="promo.flash_sale"),
        created_by=marketer,
        segment=recent,
        # Two and a half days away: the 3-2-1 plan's Notice (3 days before) is already past.
        event_at=(now + timedelta(days=2, hours=12)).replace(second=0, microsecond=0),
        channels=["inapp", "email"],
        variables={"headline": "sealed boxes from 30% off for one day", "coupon_code": "BOX30"},
    )
    for step in rushed.steps.all():
        write_copy(step.variants.get(), ANNOUNCEMENT)
    # Two more scheduled campaigns for the calendar: one the same day as the winter fair's last
    # call, to customers it shares with it, and one on a day of its own.
    one_step_campaign(
        name="Comic weekend",
        marketer=marketer,
        lead=lead,
        segment=recent,
        event_at=upcoming_event + timedelta(hours=6),
        step=("Announcement", -6 * 60),
        variables={"headline": "signed first issues", "coupon_code": "COMICS10"},
    )
    one_step_campaign(
        name="Board game night",
        marketer=marketer,
        lead=lead,
        segment=dormant_whales,
        event_at=upcoming_event + timedelta(days=4, hours=8),
        step=("Invitation", -2 * 24 * 60),
        variables={"headline": "a table kept for you", "coupon_code": "NIGHT15"},
    )

    members = [user for user in people if user.is_active and "+" not in user.email][:30]
    segment_members_add(segment=vip_list, user_ids=[user.pk for user in members[:6]])
    inactive = next(user for user in people if not user.is_active and "+" not in user.email)
    vip_csv = vip_spreadsheet(members, inactive=inactive)
    return DocsData(
        marketer=marketer,
        lead=lead,
        support=support,
        collectors=collectors,
        vip_list=vip_list,
        vip_csv=vip_csv,
        upcoming=upcoming,
        past=past,
        customer=timeline_customer(past),
        reader=inbox_reader(now=now),
        campaign_email=Message.objects.filter(
            campaign=past,
            user__in=Recipient.objects.filter(locale="en").values("user_id"),
            deliveries__channel="email",
            deliveries__status=S.SENT,
        )
        .order_by("pk")
        .first()
        or Message.objects.filter(campaign=past).order_by("pk")[0],
        zh_reader=chinese_inbox(zh_reader, now=now),
        zh_campaign_message=Message.objects.get(campaign=running, user=zh_reader).pk,
        weekend=weekend,
        rushed=rushed,
        running=running,
        preview_customer=preview_customer,
        calendar_day=upcoming_event.date(),
    )


# --- Campaigns still to come, and one sending ----------------------------------------------------

ANNOUNCEMENT = {
    "inapp": {
        "title": "{{ campaign.name }}: {{ headline }}",
        "body": "{{ user.first_name }}, {{ headline }} at the {{ campaign.name }}. "
        "Code {{ coupon_code }} at checkout.",
        "link": "https://shop.example.com/events",
    },
    "email": {
        "subject": "{{ campaign.name }}: {{ headline }}",
        "body": "Hi {{ user.first_name }},\n\n{{ headline|capitalize }} at the "
        "{{ campaign.name }}. Code {{ coupon_code }}.\n\nUnsubscribe: {{ unsubscribe_url }}",
    },
}


def one_step_campaign(
    *,
    name: str,
    marketer: User,
    lead: User,
    segment: Segment,
    event_at: datetime,
    step: tuple[str, int],
    variables: dict[str, str],
) -> Campaign:
    """A scheduled campaign of one step (submitted and approved), for the calendar."""
    campaign = campaign_create(
        name=name,
        category=NotificationType.objects.get(pk="promo.flash_sale"),
        created_by=marketer,
        segment=segment,
        event_at=event_at,
        channels=["inapp", "email"],
        variables=variables,
        plan=[step],
    )
    write_copy(campaign.steps.get().variants.get(), ANNOUNCEMENT)
    campaign_submit(campaign=campaign, by=marketer)
    campaign_approve(campaign=campaign, by=lead)
    return campaign


def weekend_draft(*, marketer: User, segment: Segment, now: datetime) -> tuple[Campaign, User]:
    """A draft whose forecast has every reason: its Notice goes out at 15:00 UTC, night in
    Shanghai and Sydney and early morning in Los Angeles (held for quiet hours); a customer of
    its segment has no email address and one has used this week's marketing cap; it has a send
    rate. Returns it and a Chinese customer of its segment (for the live preview)."""
    event_at = (now + timedelta(days=5)).replace(hour=15, minute=0, second=0, microsecond=0)
    campaign = card_fair(
        name="Board game weekend",
        marketer=marketer,
        segment=segment,
        event_at=event_at,
        headline="every board game 20% off for two days",
        coupon="PLAY20",
        description="Two days of board games: a notice with an A/B test, a reminder and a "
        "last call.",
    )
    Campaign.objects.filter(pk=campaign.pk).update(
        send_rate_per_minute=30,
        variables={**campaign.variables, "price": "88"},  # a ticket, for copy in money
    )
    audience = list(segment_users(segment).order_by("pk"))
    profiles = {profile.user_id: profile for profile in Recipient.objects.filter(user__in=audience)}
    fine = [user for user in audience if "+" not in user.email]
    no_email = fine[-2]
    # Capped: someone for whom 15:00 UTC is daytime (at night quiet hours come first).
    daytime = {"Europe/London", "Europe/Berlin", "Europe/Madrid", "America/New_York"}
    capped = next(user for user in fine[-3::-1] if profiles[user.pk].time_zone in daytime)
    User.objects.filter(pk=no_email.pk).update(email="")
    Recipient.objects.filter(user_id=no_email.pk).update(email="")
    notice_at = event_at - timedelta(days=3)
    week = windows_at(notice_at, ZoneInfo(profiles[capped.pk].time_zone)).week
    FrequencyCounter.objects.update_or_create(
        user=capped, period=CapPeriod.WEEK, window_start=week, defaults={"count": 2}
    )
    for user in (no_email, capped):
        consent_give(user_id=user.pk, channel="all", source="signup", wording="Offers and news")
    chinese = next(user for user in audience if profiles[user.pk].locale == "zh-hans")
    campaign.refresh_from_db()
    return campaign, chinese


def sending_campaign(*, marketer: User, lead: User, segment: Segment, now: datetime) -> Campaign:
    """The Chinese customers' campaign, its Notice part way through sending.

    The step is started and sent for real (by the fan-out and the embedded worker, in small
    batches) with the deliveries of about two batches' customers never handed to the worker (a
    slow queue: they stay queued, on their way), then cut back to look as it did mid-send, since
    a screenshot cannot wait for a worker: the last batches not yet handed out by the walk and
    one handed out but not yet written. The step stays running, so the progress bars read it."""
    event_at = (now + timedelta(days=3, minutes=-25)).replace(second=0, microsecond=0)
    moment = event_at - timedelta(days=3)
    with at(moment - timedelta(minutes=10)):
        campaign = card_fair(
            name="新春卡牌节",
            marketer=marketer,
            segment=segment,
            event_at=event_at,
            headline="new sets from 20% off",
            coupon="NEWYEAR20",
            description="For our Chinese-speaking customers: the New Year card festival.",
        )
        campaign_submit(campaign=campaign, by=marketer)
        campaign_approve(campaign=campaign, by=lead)
    notice = campaign.steps.get(name="Notice")
    # The walk goes by profile id: about two batches' worth of customers from the middle have
    # their deliveries held back from the worker.
    walked = list(
        Recipient.objects.filter(user__in=segment_users(segment))
        .order_by("pk")
        .values_list("pk", "user_id")
    )
    middle = len(walked) * 45 // 100
    slow = walked[middle : middle + 24]
    slow_profiles, slow_users = {pk for pk, _ in slow}, {user for _, user in slow}
    publish = dispatch.publish_deliver

    def publish_all_but_the_slow(
        delivery_ids: Sequence[int], lane: Lane, channel: Channel, **options: Any
    ) -> None:
        going = list(
            Delivery.objects.filter(pk__in=delivery_ids)
            .exclude(message__user_id__in=slow_users)
            .values_list("pk", flat=True)
        )
        if going:
            publish(going, lane, channel, **options)

    with (
        mock.patch("campaigns.services.fanout.BATCH_USERS", 12),
        mock.patch.object(dispatch, "publish_deliver", publish_all_but_the_slow),
        at(moment + timedelta(seconds=5)),
        embedded_worker(),
    ):
        report = steps_start_due()
        if notice.pk not in report.started:
            raise RuntimeError(f"step {notice.name} did not start: {report}")
        wait_for_step(notice, held_back=slow_users)
    notice.refresh_from_db()
    batches = list(
        FanoutBatch.objects.filter(step=notice, walk_round=notice.walk_round).order_by(
            "first_recipient_id"
        )
    )
    in_flight = [i for i, batch in enumerate(batches) if slow_profiles & set(batch.recipient_ids)]
    cut = in_flight[-1] + 1 if in_flight else 0
    if not in_flight or len(batches) < cut + 2:
        raise RuntimeError(f"expected batches after the slow ones, got {len(batches)}")

    def users(group: list[FanoutBatch]) -> list[int]:
        ids = [pk for batch in group for pk in batch.recipient_ids]
        return list(Recipient.objects.filter(pk__in=ids).values_list("user_id", flat=True))

    unwritten, not_walked = batches[cut], batches[cut + 1 :]
    Message.objects.filter(step=notice, user_id__in=users([unwritten, *not_walked])).delete()
    FanoutBatch.objects.filter(pk__in=[batch.pk for batch in not_walked]).delete()
    FanoutBatch.objects.filter(pk=unwritten.pk).update(done_at=None)
    CampaignStep.objects.filter(pk=notice.pk).update(
        walk_done=False, batches_total=cut + 1, batches_done=cut
    )
    campaign.refresh_from_db()
    return campaign


def vip_spreadsheet(members: list[User], *, inactive: User) -> bytes:
    """The store team's list, by customer id (a marketer imports no emails or phones): mostly
    fine, with the mistakes real spreadsheets have."""
    lines = ["name,user_id"]
    for user in members[3:15]:
        lines.append(f"{user.first_name} {user.last_name},{user.pk}")
    lines.append(f"{members[15].first_name},{members[15].pk:08d}")  # zero-padded: fine
    lines.append(f"{members[4].first_name} again,{members[4].pk}")  # duplicate row
    lines.append("Walk-in guest,A-1042")  # a till receipt number, not an id
    lines.append(f"Friend of Tao,{max(user.pk for user in members) + 100_000}")  # nobody
    lines.append(f"{inactive.first_name} {inactive.last_name},{inactive.pk}")  # deactivated
    lines.append("Phone only,")  # no id on the row
    return ("\n".join(lines) + "\n").encode()


def timeline_customer(campaign: Campaign) -> User:
    """A recipient whose history tells a story: a click, a read, something not sent."""
    clicked = set(
        Delivery.objects.filter(message__campaign=campaign, status=S.CLICKED).values_list(
            "user_id", flat=True
        )
    )
    troubled = set(
        Delivery.objects.filter(
            message__campaign=campaign, status__in=[S.SUPPRESSED, S.FAILED, S.CANCELLED]
        ).values_list("user_id", flat=True)
    )
    both = sorted(clicked & troubled) or sorted(clicked)
    return User.objects.get(pk=both[0])


# (hours ago, type, context): what lands in the reader's inbox, oldest first.
INBOX = [
    (
        74,
        "social.new_follower",
        {"follower_name": "Hao Zhang", "follower_url": "https://shop.example.com/u/hao"},
    ),
    (50, "subscription.renewal_reminder", {"plan": "Collector Pro", "renews_on": "1 December"}),
    (
        26,
        "promo.flash_sale",
        {
            "sale_name": "The winter card fair",
            "starts_at": "on Saturday at 10:00",
            "headline": "Sealed boxes from 25% off, and the first 2026 sets.",
            "sale_url": "https://shop.example.com/fair",
        },
    ),
    (5, "payment.succeeded", {"amount": "£42.00", "order_number": "B1047"}),
    (
        3,
        "order.shipped",
        {
            "order_number": "B1047",
            "carrier": "Royal Mail",
            "eta": "Tuesday",
            "tracking_url": "https://shop.example.com/track/B1047",
        },
    ),
    (
        0.5,
        "social.new_follower",
        {"follower_name": "Lena Weber", "follower_url": "https://shop.example.com/u/lena"},
    ),
]


def inbox_reader(*, now: datetime) -> User:
    """Olivia, who logs in to read her inbox: each message notified and delivered in-app at its
    own moment by the worker; she has read the oldest two and found the renewal reminder
    useful."""
    reader = User.objects.create_user(
        username="olivia",
        password=PASSWORD,
        first_name="Olivia",
        last_name="Green",
        email="olivia.green@example.com",
    )
    recipient_update(reader, time_zone="Europe/London", locale="en", quiet_hours_enabled=False)
    consent_give(user_id=reader.pk, channel="email", source="signup", wording="Email offers")
    for hours, type_key, context in INBOX:
        with at(now - timedelta(hours=hours)), embedded_worker():
            message = notify(
                reader,
                type_key,
                context,
                channels=["inapp"],
                idempotency_key=f"docs:inbox:{type_key}:{hours}",
            )
            deadline = time.monotonic() + 60
            while not InboxItem.objects.filter(message=message).exists():
                if time.monotonic() > deadline:
                    raise RuntimeError(f"{type_key} did not reach the inbox in 60 s")
                time.sleep(0.1)
    oldest = list(InboxItem.objects.filter(user=reader).order_by("created_at")[:2])
    for item in oldest:
        inbox_mark_read(user_id=reader.pk, item_id=item.pk)
    inbox_feedback(user_id=reader.pk, item_id=oldest[1].pk, feedback=Feedback.USEFUL)
    return reader


def chinese_reader() -> User:
    """Mei, a Chinese-speaking customer in Shanghai who logs in to read her inbox."""
    reader = User.objects.create_user(
        username="mei",
        password=PASSWORD,
        first_name="美",
        last_name="王",
        email="mei.wang@example.com",
    )
    recipient_update(reader, time_zone="Asia/Shanghai", locale="zh-hans", quiet_hours_enabled=False)
    consent_give(user_id=reader.pk, channel="all", source="signup", wording="优惠和新闻")
    return reader


# (hours ago, type, context): Mei's inbox besides the campaign's message, oldest first.
ZH_INBOX = [
    (
        50,
        "order.shipped",
        {
            "order_number": "C2031",
            "carrier": "顺丰速运",
            "eta": "周五",
            "tracking_url": "https://shop.example.com/track/C2031",
        },
    ),
    (
        2,
        "order.shipped",
        {
            "order_number": "C2091",
            "carrier": "中通快递",
            "eta": "周二",
            "tracking_url": "https://shop.example.com/track/C2091",
        },
    ),
]


def chinese_inbox(reader: User, *, now: datetime) -> User:
    """Two parcels on their way besides the campaign's message; the oldest read."""
    for hours, type_key, context in ZH_INBOX:
        with at(now - timedelta(hours=hours)), embedded_worker():
            message = notify(
                reader,
                type_key,
                context,
                channels=["inapp"],
                idempotency_key=f"docs:zh-inbox:{type_key}:{hours}",
            )
            deadline = time.monotonic() + 60
            while not InboxItem.objects.filter(message=message).exists():
                if time.monotonic() > deadline:
                    raise RuntimeError(f"{type_key} did not reach the inbox in 60 s")
                time.sleep(0.1)
    oldest = InboxItem.objects.filter(user=reader).order_by("created_at").first()
    if oldest is not None:
        inbox_mark_read(user_id=reader.pk, item_id=oldest.pk)
    return reader
