"""Campaigns for marketers: segments, campaigns with their 3-2-1 steps, A/B copy, hold-outs,
conversions and the rolled-up funnel."""

from __future__ import annotations

from decimal import Decimal

from django.conf import settings
from django.core.validators import MaxValueValidator, MinValueValidator
from django.db import models
from django.db.models import Q

from notifier.models.types import Priority


class AudienceThresholds(models.Model):
    """The editable edges of spend tiers and activity states (one row, pk 1)."""

    whale_min_spend = models.DecimalField(
        max_digits=12,
        decimal_places=2,
        default=Decimal("5000"),
        help_text="Yearly spend above this is a whale",
    )
    dolphin_min_spend = models.DecimalField(
        max_digits=12,
        decimal_places=2,
        default=Decimal("500"),
        help_text="From this up to the whale line is a dolphin; below is a small fish",
    )
    active_within_days = models.PositiveIntegerField(
        default=30, help_text="Last active within this many days: active"
    )
    dormant_within_days = models.PositiveIntegerField(
        default=90, help_text="Within this many days (but not active): dormant; beyond: churned"
    )
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        verbose_name = "audience thresholds"
        verbose_name_plural = "audience thresholds"

    def __str__(self) -> str:
        return "Audience thresholds"

    @classmethod
    def current(cls) -> AudienceThresholds:
        thresholds, _ = cls.objects.get_or_create(pk=1)
        return thresholds


class SpendTier(models.TextChoices):
    WHALE = "whale", "Whale"
    DOLPHIN = "dolphin", "Dolphin"
    SMALL_FISH = "small_fish", "Small fish"


class Activity(models.TextChoices):
    ACTIVE = "active", "Active"
    DORMANT = "dormant", "Dormant"
    CHURNED = "churned", "Churned"


# Who a persona copy speaks to: a spend tier or an activity state (campaigns.personas). Empty:
# everyone, the copy other personas fall back to.
PERSONA_CHOICES = [
    ("", "Everyone"),
    *((tier.value, f"Spend tier: {tier.label}") for tier in SpendTier),
    *((state.value, f"Activity: {state.label}") for state in Activity),
]


class Segment(models.Model):
    """Who a campaign is for: rules over the user profile, optionally an imported list.

    Empty lists mean "any". With `use_member_list`, only the imported members who also match
    the rules are in the segment.
    """

    name = models.CharField(max_length=200, unique=True)
    description = models.TextField(blank=True, default="")
    spend_tiers = models.JSONField(default=list, blank=True)
    activity = models.JSONField(default=list, blank=True)
    tags_any = models.JSONField(default=list, blank=True, help_text="Has at least one of these")
    tags_all = models.JSONField(default=list, blank=True, help_text="Has every one of these")
    locales = models.JSONField(default=list, blank=True)
    time_zones = models.JSONField(default=list, blank=True)
    points_expiring_within_days = models.PositiveSmallIntegerField(
        null=True,
        blank=True,
        help_text="Users with loyalty points that expire within this many days. Empty: any.",
    )
    use_member_list = models.BooleanField(default=False)
    created_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True)

    # The fields that decide who is in the segment (what an approval covers; see
    # campaigns.services.definitions), the member list's switch last.
    RULE_FIELDS = (
        "spend_tiers",
        "activity",
        "tags_any",
        "tags_all",
        "locales",
        "time_zones",
        "points_expiring_within_days",
    )
    AUDIENCE_FIELDS = (*RULE_FIELDS, "use_member_list")

    def __str__(self) -> str:
        return self.name


class SegmentMember(models.Model):
    """One user of a segment's explicit list (imported from CSV)."""

    segment = models.ForeignKey(Segment, on_delete=models.CASCADE, related_name="members")
    user = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.CASCADE)
    added_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        constraints = [
            models.UniqueConstraint(fields=["segment", "user"], name="segment_member_unique")
        ]

    def __str__(self) -> str:
        return f"{self.user_id} in {self.segment_id}"


class CampaignKind(models.TextChoices):
    ONE_OFF = "one_off", "One-off, around an event (3-2-1)"
    TRIGGERED = "triggered", "Triggered when a user enters the segment"


class SeriesStop(models.TextChoices):
    """Which engagement ends a customer's series: the steps not yet sent to them are not sent."""

    CONVERTED = "converted", "Converted (a conversion counted for this campaign)"
    CLICKED = "clicked", "Clicked a message of this campaign"
    EITHER = "either", "Converted or clicked"
    NEVER = "never", "Never: every step goes to everyone"


class CampaignStatus(models.TextChoices):
    DRAFT = "draft", "Draft"
    AWAITING_APPROVAL = "awaiting_approval", "Awaiting approval"
    SCHEDULED = "scheduled", "Scheduled"
    RUNNING = "running", "Running"
    PAUSED = "paused", "Paused"
    DONE = "done", "Done"
    CANCELLED = "cancelled", "Cancelled"


# A campaign's own send rate above this is no limit at all: a thousand a second.
MAX_SEND_RATE_PER_MINUTE = 60_000


class Campaign(models.Model):
    name = models.CharField(max_length=200)
    description = models.TextField(blank=True, default="")
    kind = models.CharField(
        max_length=10, choices=CampaignKind.choices, default=CampaignKind.ONE_OFF
    )
    category = models.ForeignKey(
        "notifier.NotificationType",
        null=True,
        blank=True,
        on_delete=models.PROTECT,
        limit_choices_to={"kind": "marketing"},
        help_text="The marketing type its messages are sent as (consent, caps, preferences)",
    )
    segment = models.ForeignKey(Segment, null=True, blank=True, on_delete=models.PROTECT)
    event_at = models.DateTimeField(
        null=True,
        blank=True,
        help_text="When the sale or activity starts; steps are relative to it",
    )
    status = models.CharField(
        max_length=20, choices=CampaignStatus.choices, default=CampaignStatus.DRAFT
    )
    priority = models.CharField(
        max_length=10,
        choices=Priority.choices,
        default=Priority.LOW,
        help_text="Which campaign wins when several compete for a customer's capped slot. "
        "It never lets marketing through quiet hours, not even Critical: that takes a "
        "marketing lead's 'Send in quiet hours'.",
    )
    quiet_hours_allowed = models.BooleanField(
        "Send in quiet hours",
        default=False,
        help_text="Only a marketing lead may set this. Its messages then go out during "
        "customers' quiet hours instead of waiting for their morning; each such delivery "
        "records why. Part of what approval covers.",
    )
    channels = models.JSONField(
        default=list, blank=True, help_text="Empty: the routing rules decide"
    )
    send_rate_per_minute = models.PositiveIntegerField(
        "Send rate (messages a minute)",
        null=True,
        blank=True,
        validators=[
            MinValueValidator(1, "At least 1 message a minute (empty: no limit of its own)."),
            MaxValueValidator(
                MAX_SEND_RATE_PER_MINUTE,
                f"At most {MAX_SEND_RATE_PER_MINUTE:,} a minute; leave it empty for no limit "
                "of its own.",
            ),
        ],
        help_text="At most this many of its messages go out a minute, every channel counted "
        "(on top of the providers' own limits). Empty: only the providers' limits. Part of "
        "what approval covers.",
    )
    variables = models.JSONField(
        default=dict, blank=True, help_text="Values every template of the campaign can use"
    )
    holdout_percent = models.PositiveSmallIntegerField(
        default=0, help_text="Share of the audience kept as a control group that gets nothing"
    )
    attribution_hours = models.PositiveIntegerField(
        default=72, help_text="A conversion this long after a message counts for the campaign"
    )
    ab_metric = models.CharField(
        max_length=10,
        choices=[("ctr", "Click-through rate"), ("conversion", "Conversion rate")],
        default="ctr",
        verbose_name="A/B metric",
        help_text="What decides a step's A/B test: clicks per reached user, or conversions "
        "per assigned user within the campaign's measurement window",
    )
    ab_sample_size = models.PositiveIntegerField(
        default=100,
        validators=[MinValueValidator(1)],
        verbose_name="A/B sample size",
        help_text="Users per variant whose window is over before the A/B test decides (once, "
        "then kept). To detect a change of d points from a rate p, about 16·p(1-p)/d² per "
        "variant (5 % significance, 80 % power)",
    )
    reentry_days = models.PositiveIntegerField(
        default=30, help_text="Triggered: at most once per user within this many days"
    )
    stop_series_on = models.CharField(
        max_length=10,
        choices=SeriesStop.choices,
        default=SeriesStop.CONVERTED,
        help_text="Stop the series for a customer who did this: the steps not yet sent to them "
        "are not sent (the reason shows on their timeline)",
    )
    seed_list = models.TextField(
        "Seed list",
        blank=True,
        default="",
        help_text="Who gets “Send test to seed list”: staff (or, for those who may see "
        "customers' contact details, any user) by email, phone number (+86…) or id, one a line",
    )
    pause_failure_percent = models.PositiveSmallIntegerField(
        default=20,
        validators=[MinValueValidator(1), MaxValueValidator(100)],
        help_text="Pause it automatically when more than this share of its sends fail "
        "(over the last few minutes, once enough were sent to tell)",
    )
    pause_reason = models.CharField(
        max_length=300, blank=True, default="", help_text="Why it was paused automatically"
    )
    created_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL, related_name="+"
    )
    approved_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL, related_name="+"
    )
    approved_at = models.DateTimeField(null=True, blank=True)
    # What the approval covered (see campaigns.services.definitions): the segment's rules and
    # list, the thresholds it follows, the campaign's settings, steps, variants and copy. Kept
    # after a send-back, so the next approval shows what changed since this one.
    approved_definition = models.JSONField(null=True, blank=True, editable=False)
    approved_audience = models.PositiveIntegerField(
        null=True, blank=True, editable=False, help_text="Users its segment reached at approval"
    )
    review_reason = models.CharField(
        max_length=500,
        blank=True,
        default="",
        editable=False,
        help_text="Why it went back for approval after it was approved",
    )
    # The live status a changed campaign returns to when a lead approves the change (scheduled,
    # running or paused); empty unless it is awaiting approval again.
    status_before_review = models.CharField(
        max_length=20, choices=CampaignStatus.choices, blank=True, default="", editable=False
    )
    started_at = models.DateTimeField(null=True, blank=True)
    finished_at = models.DateTimeField(null=True, blank=True)
    created_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        permissions = [
            ("approve_campaign", "Can approve a campaign someone else prepared"),
            ("allow_quiet_hours", "Can let a campaign send during customers' quiet hours"),
        ]
        indexes = [models.Index(fields=["status", "kind"], name="campaign_status_kind_idx")]

    def __str__(self) -> str:
        return self.name


class TriggerEntry(models.Model):
    """Whether a user was in a triggered campaign's segment at its last evaluation, and since
    when: a user entering it (absent before, present now) is `due` the campaign's message
    once, unless they had it within the re-entry days; a user who stays gets nothing more.
    Written set-based by campaigns.services.triggers, never per user in Python."""

    campaign = models.ForeignKey(Campaign, on_delete=models.CASCADE, related_name="+")
    user = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="+")
    in_segment = models.BooleanField(default=True)
    entered_at = models.DateTimeField()
    left_at = models.DateTimeField(null=True, blank=True)
    due = models.BooleanField(default=False)

    class Meta:
        constraints = [
            models.UniqueConstraint(fields=["campaign", "user"], name="trigger_entry_unique")
        ]
        indexes = [
            # The walk of a triggered step: the users still due, in id order.
            models.Index(
                fields=["campaign", "user"], name="trigger_entry_due_idx", condition=Q(due=True)
            )
        ]

    def __str__(self) -> str:
        state = "in" if self.in_segment else "out of"
        return f"user {self.user_id} {state} the segment of campaign {self.campaign_id}"


class StepTiming(models.TextChoices):
    OFFSET = "offset", "At the offset from the event"
    LOCAL_TIME = "local_time", "On the offset's day, at a local time of day"
    ACTIVE_HOUR = "active_hour", "On the offset's day, at the user's usual active hour"


class StepStatus(models.TextChoices):
    PENDING = "pending", "Pending"
    RUNNING = "running", "Sending"
    DONE = "done", "Done"
    SKIPPED = "skipped", "Skipped"
    CANCELLED = "cancelled", "Cancelled"


class CampaignStep(models.Model):
    """One send of a campaign, relative to its event: -3 days, -2 days, -1 hour by default."""

    campaign = models.ForeignKey(Campaign, on_delete=models.CASCADE, related_name="steps")
    name = models.CharField(max_length=100)
    offset_minutes = models.IntegerField(
        help_text="Minutes from the event; negative is before it (-4320 is three days before)"
    )
    timing = models.CharField(max_length=12, choices=StepTiming.choices, default=StepTiming.OFFSET)
    local_time = models.TimeField(null=True, blank=True, help_text="For 'at a local time of day'")
    status = models.CharField(max_length=10, choices=StepStatus.choices, default=StepStatus.PENDING)
    skip_reason = models.CharField(max_length=200, blank=True, default="")
    started_at = models.DateTimeField(null=True, blank=True)
    finished_at = models.DateTimeField(null=True, blank=True)
    # Fan-out progress, in PostgreSQL so a lost walker task resumes where it was: recipients
    # (notifier.Recipient, whose integer ids any user model has) are walked in id order; the
    # last id handed out, whether the walk is over, and batch counts
    # (each batch handed out and marked done is a FanoutBatch row; these count them once).
    # A walk started over (resumed, re-approved, a trigger's next pass) is a new round: batches
    # of an earlier round still queued no longer count towards closing. A revived walk goes on
    # in its round, and its lost batches are published again.
    cursor_recipient_id = models.BigIntegerField(default=0)
    walk_done = models.BooleanField(default=False)
    walk_round = models.PositiveIntegerField(default=0)
    walked_at = models.DateTimeField(null=True, blank=True)
    batches_total = models.PositiveIntegerField(default=0)
    batches_done = models.PositiveIntegerField(default=0)

    class Meta:
        ordering = ["campaign", "offset_minutes"]
        indexes = [
            models.Index(
                fields=["status"],
                name="step_status_idx",
                condition=Q(status__in=["pending", "running"]),
            )
        ]

    def __str__(self) -> str:
        return f"{self.campaign}: {self.name}"


class FanoutAttempt(models.Model):
    """A fan-out batch that has started and not yet been written: its runs are counted here,
    committed before each run's work, and the row is deleted once the batch is written. A
    count above one means a run of the batch died (killed, out of memory, over the time
    limit), so the next one hands each message to the pipeline alone instead of dying again
    with it (campaigns.services.fanout). A batch is known by its step, first recipient and
    size."""

    step = models.ForeignKey(CampaignStep, on_delete=models.CASCADE, related_name="+")
    first_recipient_id = models.BigIntegerField()
    users = models.PositiveIntegerField()
    attempts = models.PositiveSmallIntegerField(default=0)
    started_at = models.DateTimeField()

    class Meta:
        constraints = [
            models.UniqueConstraint(
                fields=["step", "first_recipient_id", "users"], name="fanout_attempt_batch"
            )
        ]

    def __str__(self) -> str:
        return (
            f"step {self.step_id} batch from recipient {self.first_recipient_id}: "
            f"{self.attempts} runs"
        )


class FanoutBatch(models.Model):
    """A batch of a step's audience, handed out by its walk: recorded in the walk's transaction
    together with the cursor it moved (and published only once that commits), and marked done
    by the first run that writes it; a copy of it finds it done and counts nothing. A step
    closes when its walk is over and every batch of its round is done; beat publishes again
    the batches of a step gone quiet that are not done (lost with the broker or a worker), so
    no batch is ever assumed written (campaigns.services.fanout). Known by step, round and
    first recipient; it keeps its recipient ids for the re-publish."""

    step = models.ForeignKey(CampaignStep, on_delete=models.CASCADE, related_name="+")
    walk_round = models.PositiveIntegerField()
    first_recipient_id = models.BigIntegerField()
    recipient_ids = models.JSONField(default=list)
    published_at = models.DateTimeField()
    done_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        constraints = [
            models.UniqueConstraint(
                fields=["step", "walk_round", "first_recipient_id"], name="fanout_batch_once"
            )
        ]
        indexes = [
            models.Index(
                fields=["step", "walk_round"],
                name="fanout_batch_open_idx",
                condition=Q(done_at__isnull=True),
            )
        ]

    def __str__(self) -> str:
        state = "done" if self.done_at else "not done"
        return (
            f"step {self.step_id}, round {self.walk_round}, "
            f"from recipient {self.first_recipient_id}: {state}"
        )


class StepVariant(models.Model):
    """A version of a step's copy; recipients are split by weight, the same user always
    getting the same variant."""

    step = models.ForeignKey(CampaignStep, on_delete=models.CASCADE, related_name="variants")
    name = models.CharField(max_length=50, default="A")
    weight = models.PositiveIntegerField(default=1)

    class Meta:
        ordering = ["step", "name"]
        constraints = [models.UniqueConstraint(fields=["step", "name"], name="variant_step_name")]

    def __str__(self) -> str:
        return f"{self.step} / {self.name}"


class VariantTemplate(models.Model):
    """The copy of one variant on one channel, in one locale (blank: the default locale), for
    one persona (blank: everyone; see campaigns.personas for who gets which)."""

    variant = models.ForeignKey(StepVariant, on_delete=models.CASCADE, related_name="templates")
    channel = models.CharField(max_length=10)
    locale = models.CharField(max_length=16, blank=True, default="")
    persona = models.CharField(
        max_length=16,
        blank=True,
        default="",
        choices=PERSONA_CHOICES,
        help_text="Empty: everyone. Or the copy for one spend tier or one activity state; "
        "the others get the copy for everyone",
    )
    subject = models.TextField(blank=True, default="")
    title = models.TextField(blank=True, default="")
    body = models.TextField(blank=True, default="")
    html = models.TextField(blank=True, default="")
    link = models.TextField(blank=True, default="")
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        constraints = [
            models.UniqueConstraint(
                fields=["variant", "channel", "locale", "persona"],
                name="variant_template_unique_persona",
            )
        ]

    def __str__(self) -> str:
        persona = f" {self.persona}" if self.persona else ""
        return f"{self.variant} {self.channel} {self.locale or 'default'}{persona}"


class Holdout(models.Model):
    """A user kept out of a campaign as its control group."""

    campaign = models.ForeignKey(Campaign, on_delete=models.CASCADE, related_name="holdouts")
    user = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.CASCADE)
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        constraints = [models.UniqueConstraint(fields=["campaign", "user"], name="holdout_unique")]

    def __str__(self) -> str:
        return f"user {self.user_id} held out of campaign {self.campaign_id}"


class Conversion(models.Model):
    """Something the product counts as success (an order), attributed to the campaign message
    the user last engaged with inside the campaign's attribution window."""

    user = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.CASCADE)
    name = models.CharField(max_length=100, default="purchase")
    value = models.DecimalField(max_digits=12, decimal_places=2, default=Decimal("0"))
    occurred_at = models.DateTimeField()
    reference = models.CharField(
        max_length=200,
        blank=True,
        default="",
        help_text="The product's own id, so a conversion counts once",
    )
    campaign = models.ForeignKey(
        Campaign, null=True, blank=True, on_delete=models.SET_NULL, related_name="conversions"
    )
    message = models.ForeignKey(
        "notifier.Message", null=True, blank=True, on_delete=models.SET_NULL
    )

    class Meta:
        constraints = [
            models.UniqueConstraint(
                fields=["user", "name", "reference"],
                name="conversion_once",
                condition=~Q(reference=""),
            )
        ]
        indexes = [models.Index(fields=["campaign", "occurred_at"], name="conversion_campaign_idx")]

    def __str__(self) -> str:
        return f"{self.name} by user {self.user_id}"


class CampaignStats(models.Model):
    """The rolled-up funnel of a campaign, or of one step or variant of it (see stats job)."""

    campaign = models.ForeignKey(Campaign, on_delete=models.CASCADE, related_name="stats")
    step = models.ForeignKey(CampaignStep, null=True, blank=True, on_delete=models.CASCADE)
    variant = models.ForeignKey(StepVariant, null=True, blank=True, on_delete=models.CASCADE)
    # "campaign", "step:<id>" or "variant:<id>": one row per scope, upserted by the roll-up.
    scope = models.CharField(max_length=40)
    data = models.JSONField(default=dict)
    computed_at = models.DateTimeField()
    # A step's A/B decisions, by metric ({"ctr": {...}}): written once, when the test reaches
    # its horizon, and never recomputed (the roll-up's upsert leaves this column alone).
    ab_decisions = models.JSONField(null=True, blank=True, editable=False)

    class Meta:
        constraints = [
            models.UniqueConstraint(fields=["campaign", "scope"], name="campaign_stats_scope")
        ]

    def __str__(self) -> str:
        return f"stats of campaign {self.campaign_id} ({self.scope})"
