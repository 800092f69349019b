"""The delivery log: a Message per logical notification, a Delivery per channel, and events.

Support staff read these rows to answer "what did we send her, and why not the SMS?", so every
status change writes a DeliveryEvent, and every not-sent status carries a reason.
"""

from __future__ import annotations

from django.conf import settings
from django.db import models
from django.db.models import Q

from notifier.status import DeliveryStatus, Reason


class Message(models.Model):
    """One logical notification to one user."""

    # Each index costs every notify() a write: (user, -created_at) below covers lookups by user,
    # and types are looked up by key, never the other way round. Step, variant and campaign are
    # NULL on every transactional message: their indexes are partial (see Meta).
    user = models.ForeignKey(
        settings.AUTH_USER_MODEL,
        on_delete=models.CASCADE,
        related_name="messages",
        db_index=False,
    )
    type = models.ForeignKey("notifier.NotificationType", on_delete=models.PROTECT, db_index=False)
    context = models.JSONField(default=dict, blank=True)
    channels = models.JSONField(
        default=list,
        blank=True,
        help_text="Channels the caller chose; empty means the routing rules decide",
    )
    fallback_chain = models.JSONField(
        default=list,
        blank=True,
        help_text="Channels still to try, in order, if the current one cannot reach the user",
    )
    lane = models.CharField(max_length=20)
    priority = models.CharField(max_length=10, default="normal")
    expires_at = models.DateTimeField(
        null=True, blank=True, help_text="Not worth sending after this (e.g. a sale that ended)"
    )
    step = models.ForeignKey(
        "campaigns.CampaignStep",
        null=True,
        blank=True,
        on_delete=models.SET_NULL,
        related_name="messages",
        db_index=False,
    )
    variant = models.ForeignKey(
        "campaigns.StepVariant",
        null=True,
        blank=True,
        on_delete=models.SET_NULL,
        related_name="messages",
        db_index=False,
    )
    not_before = models.DateTimeField(
        null=True, blank=True, help_text="Hold until then (a step sent at the user's local time)"
    )
    is_test = models.BooleanField(default=False, help_text="A marketer's 'send test to me'")
    # The caller's name for what it may take back before it goes out (notify_cancel): any
    # number of messages, of any users, may share one.
    # A type that digests: what its messages are grouped under ("post:42"; NULL: the type),
    # and the digest it was collected into (or, for the digest's own message, that digest).
    digest_key = models.CharField(  # noqa: DJ001
        max_length=255,
        null=True,
        blank=True,
        help_text="The caller's key its type's digest groups it under",
    )
    digest = models.ForeignKey(
        "notifier.Digest",
        null=True,
        blank=True,
        on_delete=models.SET_NULL,
        related_name="messages",
        db_index=False,
    )
    # The topic whose send handed it out (notifier.services.topics), for the person's topic
    # snoozes; NULL on every other message.
    topic = models.ForeignKey(
        "notifier.Topic",
        null=True,
        blank=True,
        on_delete=models.SET_NULL,
        related_name="+",
        db_index=False,
    )
    # Collected into its digest because its throttle was full (the type folds what is over
    # its throttle), not because its type digests: the support timeline says which.
    throttled_into_digest = models.BooleanField(
        db_default=False, editable=False, help_text="Over its throttle, folded into its digest"
    )
    # What its type's throttle counts it under (e.g. "product:42"); NULL: the type itself.
    throttle_key = models.CharField(  # noqa: DJ001
        max_length=255,
        null=True,
        blank=True,
        help_text="The caller's key its type's throttle counts it under",
    )
    cancel_key = models.CharField(  # noqa: DJ001 (NULL, not "": no key, and no index entry)
        max_length=255,
        null=True,
        blank=True,
        help_text="The caller's key to cancel it with before it goes out",
    )
    # The frequency-cap windows (user-local dates) whose slot this message took, if any.
    cap_day = models.DateField(null=True, blank=True)
    cap_week = models.DateField(null=True, blank=True)
    # NULL, not "", for "no key": the unique constraint must admit any number of keyless rows.
    idempotency_key = models.CharField(max_length=255, null=True, blank=True)  # noqa: DJ001
    campaign = models.ForeignKey(
        "campaigns.Campaign",
        null=True,
        blank=True,
        on_delete=models.SET_NULL,
        related_name="messages",
        db_index=False,
    )
    created_at = models.DateTimeField()
    routed_at = models.DateTimeField(null=True, blank=True)
    # Prepare runs that died with this message in them (killed, out of memory, over the time
    # limit): at NOTIFIER_PREPARE_MAX_CRASHES it is set aside (notifier.services.quarantine).
    prepare_crashes = models.PositiveSmallIntegerField(default=0)

    class Meta:
        constraints = [
            # A constraint rather than unique=True: no extra LIKE index on PostgreSQL.
            models.UniqueConstraint(fields=["idempotency_key"], name="message_idempotency_key")
        ]
        indexes = [
            models.Index(fields=["user", "-created_at"], name="message_user_created_idx"),
            # The re-queue job's scan for messages whose prepare task was lost.
            models.Index(
                fields=["created_at"],
                name="message_unrouted_idx",
                condition=Q(routed_at__isnull=True),
            ),
            # A campaign's messages (stats, cancel, move, the trigger's re-entry check) and the
            # SET NULL / foreign-key checks when a campaign, step or variant is deleted: all ask
            # for `= some id`, which implies IS NOT NULL, so the partial indexes serve them while
            # transactional messages write none of the three.
            models.Index(
                fields=["campaign"],
                name="message_campaign_idx",
                condition=Q(campaign__isnull=False),
            ),
            models.Index(fields=["step"], name="message_step_idx", condition=Q(step__isnull=False)),
            # A digest's messages (the flush reads them); NULL on every other message.
            models.Index(
                fields=["digest"], name="message_digest_idx", condition=Q(digest__isnull=False)
            ),
            # A topic's messages (the SET NULL when a topic is deleted); NULL on the others.
            models.Index(
                fields=["topic"], name="message_topic_idx", condition=Q(topic__isnull=False)
            ),
            # notify_cancel's look-up; NULL on every message sent without a key.
            models.Index(
                fields=["cancel_key"],
                name="message_cancel_key_idx",
                condition=Q(cancel_key__isnull=False),
            ),
            models.Index(
                fields=["variant"],
                name="message_variant_idx",
                condition=Q(variant__isnull=False),
            ),
        ]

    def __str__(self) -> str:
        return f"#{self.pk} {self.type_id} → user {self.user_id}"


class PrepareRun(models.Model):
    """A prepare run of a batch of messages, from before its work starts until it ends.

    Written and committed before the work; the run's own transaction deletes it first thing, so
    it is gone once the run commits, and back if the run dies (the transaction never commits)
    or ends in an error. While the run is alive, its transaction holds the row; a row nobody
    holds is therefore a run that died, and its messages' crash counts go up by one
    (notifier.services.quarantine). A row per batch rather than a counter per message: the
    hot path writes one small row, not one new version of every message.
    """

    message_ids = models.JSONField()
    started_at = models.DateTimeField()

    def __str__(self) -> str:
        return f"prepare run of {len(self.message_ids)} messages from {self.started_at}"


class Delivery(models.Model):
    """One (message, channel): its status, reason, attempts and provider reference."""

    # Covered by the (message, channel) constraint and the (user, -created_at) index.
    message = models.ForeignKey(
        Message, on_delete=models.CASCADE, related_name="deliveries", db_index=False
    )
    user = models.ForeignKey(
        settings.AUTH_USER_MODEL,
        on_delete=models.CASCADE,
        related_name="deliveries",
        db_index=False,
    )
    channel = models.CharField(max_length=10)
    # 0 = critical ... 3 = low; held deliveries are released highest priority first.
    priority_rank = models.PositiveSmallIntegerField(default=2)
    fallback_of = models.ForeignKey(
        "self",
        null=True,
        blank=True,
        on_delete=models.SET_NULL,
        related_name="fallbacks",
        help_text="The delivery on another channel this one stands in for",
        db_index=False,  # NULL on almost every row: a partial index (Meta)
    )
    status = models.CharField(
        max_length=12, choices=DeliveryStatus.choices, default=DeliveryStatus.PENDING
    )
    reason = models.CharField(max_length=40, choices=Reason.choices, blank=True, default="")
    content = models.JSONField(default=dict, blank=True)
    attempts = models.PositiveIntegerField(default=0)
    provider = models.CharField(max_length=40, blank=True, default="")
    provider_message_id = models.CharField(max_length=255, blank=True, default="")
    last_error = models.TextField(blank=True, default="")
    created_at = models.DateTimeField()
    updated_at = models.DateTimeField()
    next_attempt_at = models.DateTimeField(null=True, blank=True)
    claimed_at = models.DateTimeField(null=True, blank=True)
    # The sender's lease on a claim: renewed between sends while it lives; the re-queue job
    # takes back only claims whose lease ran out. The token names the claim: a sender whose
    # claim was taken (and claimed again by another) finds a different token and stops.
    claimed_until = models.DateTimeField(null=True, blank=True)
    claim_token = models.UUIDField(null=True, blank=True)
    sent_at = models.DateTimeField(null=True, blank=True)
    delivered_at = models.DateTimeField(null=True, blank=True)
    opened_at = models.DateTimeField(null=True, blank=True)
    clicked_at = models.DateTimeField(null=True, blank=True)
    finished_at = models.DateTimeField(null=True, blank=True, help_text="Reached a terminal status")

    class Meta:
        verbose_name_plural = "deliveries"
        permissions = [("retry_delivery", "Can retry a failed delivery now")]
        constraints = [
            models.UniqueConstraint(fields=["message", "channel"], name="delivery_message_channel")
        ]
        indexes = [
            models.Index(fields=["user", "-created_at"], name="delivery_user_created_idx"),
            # The re-queue job's scans of work a lost broker message may have left behind.
            models.Index(
                fields=["status", "next_attempt_at"],
                name="delivery_due_idx",
                condition=Q(status__in=["queued", "sending", "held"]),
            ),
            # Claims whose lease ran out: the re-queue job looks every few seconds.
            models.Index(
                fields=["claimed_until"],
                name="delivery_lease_idx",
                condition=Q(status="sending"),
            ),
            models.Index(
                fields=["provider", "provider_message_id"],
                name="delivery_provider_ref_idx",
                condition=~Q(provider_message_id=""),
            ),
            # The re-queue job's scan for failures whose fallback never started; failed rows
            # only, which are rarely written again.
            models.Index(
                fields=["finished_at"],
                name="delivery_failed_at_idx",
                condition=Q(status="failed"),
            ),
            # Why nothing went out: dead letters and not-sent reasons. Partial, so the status
            # changes of deliveries on their way out (queued, sending, sent) never touch it.
            models.Index(
                fields=["status", "reason"],
                name="delivery_not_sent_idx",
                condition=Q(status__in=["cancelled", "failed", "held", "suppressed"]),
            ),
            # Fallbacks of a delivery (the fallback start and its lost-fallback scan, retention's
            # SET NULL, the foreign-key check on delete). Partial: a full index took an entry of
            # NULL for every version of every other delivery.
            models.Index(
                fields=["fallback_of"],
                name="delivery_fallback_of_idx",
                condition=Q(fallback_of__isnull=False),
            ),
            # Who clicked (a campaign's series stops for them: campaigns.series), asked for a
            # batch of users at a time. Partial: only a clicked delivery has an entry, so the
            # fan-out's writes never touch it.
            models.Index(
                fields=["user"],
                name="delivery_clicked_user_idx",
                condition=Q(clicked_at__isnull=False),
            ),
        ]

    def __str__(self) -> str:
        return f"{self.channel} for message #{self.message_id}: {self.status}"


class DeadLetter(Delivery):
    """Failed deliveries, for the admin's dead-letter view (a proxy: same rows)."""

    class Meta:
        proxy = True
        verbose_name = "dead letter"
        verbose_name_plural = "dead letters (failed deliveries)"


class EventKind(models.TextChoices):
    ROUTED = "routed", "Routed"
    ATTEMPT = "attempt", "Attempt"
    REQUEUED = "requeued", "Re-queued"
    RELEASED = "released", "Released from hold"
    FALLBACK = "fallback", "Fallback to another channel"
    CALLBACK = "callback", "Provider callback"
    ENGAGEMENT = "engagement", "Engagement"
    CANCELLED = "cancelled", "Cancelled"
    MANUAL = "manual", "Operator action"


class DeliveryEvent(models.Model):
    """One step in a delivery's timeline: a routing decision, an attempt, a callback."""

    delivery = models.ForeignKey(  # covered by the (delivery, at) index
        Delivery, on_delete=models.CASCADE, related_name="events", db_index=False
    )
    at = models.DateTimeField()
    kind = models.CharField(max_length=12, choices=EventKind.choices)
    status = models.CharField(max_length=12, choices=DeliveryStatus.choices)
    reason = models.CharField(max_length=40, choices=Reason.choices, blank=True, default="")
    attempt = models.PositiveIntegerField(null=True, blank=True)
    provider = models.CharField(max_length=40, blank=True, default="")
    error = models.TextField(blank=True, default="")
    detail = models.JSONField(default=dict, blank=True)

    class Meta:
        ordering = ["at", "id"]
        indexes = [models.Index(fields=["delivery", "at"], name="event_delivery_at_idx")]

    def __str__(self) -> str:
        return f"{self.kind} → {self.status}"
