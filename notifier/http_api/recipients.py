"""`/api/v1/recipients/…`: people by the product's own id (`external_id`), their push devices,
their preferences and their marketing consent.

The same services and rules as the rest of Notifier: a recipient's fields are checked as the
admin checks them, devices move to whoever registers them last, preferences follow the
preference centre's rules (transactional and critical messages cannot be switched off), and
each consent record keeps where it came from and the words agreed to.
"""

from __future__ import annotations

from datetime import datetime, time
from decimal import Decimal
from typing import Annotated, Any, Literal

from django.http import HttpRequest
from ninja import Path, Query, Router, Schema, Status
from pydantic import Field, StrictBool, StrictStr

from notifier.api import date_clear, date_exit, date_set, topic_subscribe, topic_unsubscribe
from notifier.http_api.auth import ApiKeyAuth
from notifier.http_api.common import answers
from notifier.http_api.messages import MessageOut, recipient_messages
from notifier.models import Consent, ConsentPurpose, Device, Recipient
from notifier.models.api_keys import ApiScope
from notifier.pages.preferences import preference_centre
from notifier.request_limits import request_ip
from notifier.services.app_tokens import app_token_issue
from notifier.services.cadences import (
    digest_cadence_clear,
    digest_cadence_set,
    digest_cadences_json,
)
from notifier.services.date_series import recipient_dates_of, steps_archived
from notifier.services.devices import device_register, device_unregister, devices_of
from notifier.services.erasure import recipient_erase, recipient_export, suppressed
from notifier.services.preferences import (
    PreferenceChange,
    consent_give,
    consent_withdraw,
    preferences_update,
)
from notifier.services.recipients import recipient_get, recipient_put
from notifier.services.snoozes import (
    snooze_lift,
    snooze_set,
    snoozes_list,
    topic_snooze_lift,
    topic_snooze_set,
    topic_snoozes_list,
)
from notifier.services.topics import topics_of
from notifier.user_keys import user_key_json

router = Router(tags=["recipients"])

# Declared in the document as the service checks it (recipient_get, with a message saying what
# to fix): 1 to 255 characters, no slash or control character, no space at either end.
EXTERNAL_ID_PATTERN = r"^[^\s/\x00-\x1f\x7f](?:[^/\x00-\x1f\x7f]*[^\s/\x00-\x1f\x7f])?$"
ExternalId = Annotated[
    str,
    Path(description="Your own id for the person", max_length=255, pattern=EXTERNAL_ID_PATTERN),
]
UserKeyIn = int | StrictStr


# --- Recipients -----------------------------------------------------------------------------


class QuietHours(Schema):
    enabled: StrictBool = True
    start: time | None = Field(
        default=None, description="Local time, e.g. 22:00 (null: the site's)"
    )
    end: time | None = Field(default=None, description="Local time, e.g. 08:00 (null: the site's)")


class Attributes(Schema):
    """What segments filter on; kept in step by the product."""

    yearly_spend: Decimal | None = None
    last_active_at: datetime | None = None
    interest_tags: list[StrictStr] | None = None
    points_balance: int | None = Field(default=None, ge=0)
    points_expire_at: datetime | None = None


class RecipientIn(Schema):
    user: UserKeyIn | None = Field(
        default=None,
        description="Link to this user of the product (its key); needed to create a recipient "
        "on a site that keeps people in its own user model",
    )
    email: StrictStr | None = Field(
        default=None, max_length=254, description='An address, or "" for none'
    )
    phone: StrictStr | None = Field(
        default=None, description='E.164, e.g. +8613800138000, or "" for none'
    )
    time_zone: StrictStr | None = Field(default=None, description="IANA, e.g. Asia/Shanghai")
    locale: StrictStr | None = Field(default=None, description="e.g. en, zh-hans")
    quiet_hours: QuietHours | None = None
    marketing_frequency: Literal["as_sent", "weekly", "off"] | None = None
    attributes: Attributes | None = None


class RecipientOut(Schema):
    external_id: str
    user: int | str = Field(description="The key of the user this recipient is")
    email: str
    phone: str
    time_zone: str
    locale: str
    quiet_hours: QuietHours
    marketing_frequency: str
    attributes: Attributes
    created_at: datetime
    updated_at: datetime


def recipient_json(recipient: Recipient) -> dict[str, Any]:
    return {
        "external_id": recipient.external_id or "",
        "user": user_key_json(recipient.user_id),
        "email": recipient.email,
        "phone": recipient.phone,
        "time_zone": recipient.time_zone,
        "locale": recipient.locale,
        "quiet_hours": {
            "enabled": recipient.quiet_hours_enabled,
            "start": recipient.quiet_hours_start,
            "end": recipient.quiet_hours_end,
        },
        "marketing_frequency": recipient.marketing_frequency,
        "attributes": {
            "yearly_spend": recipient.yearly_spend,
            "last_active_at": recipient.last_active_at,
            "interest_tags": recipient.interest_tags,
            "points_balance": recipient.points_balance,
            "points_expire_at": recipient.points_expire_at,
        },
        "created_at": recipient.created_at,
        "updated_at": recipient.updated_at,
    }


def _fields(body: RecipientIn) -> dict[str, object]:
    """The profile fields the body sets: only those it names (explicit nulls included)."""
    sent = body.model_fields_set
    fields: dict[str, object] = {
        name: getattr(body, name)
        for name in ("email", "phone", "time_zone", "locale", "marketing_frequency")
        if name in sent
    }
    if "quiet_hours" in sent and body.quiet_hours is not None:
        hours = body.quiet_hours
        fields["quiet_hours_enabled"] = hours.enabled
        if "start" in hours.model_fields_set or "end" in hours.model_fields_set:
            fields["quiet_hours_start"] = hours.start
            fields["quiet_hours_end"] = hours.end
    if "attributes" in sent and body.attributes is not None:
        attributes = body.attributes
        fields.update({name: getattr(attributes, name) for name in attributes.model_fields_set})
    for name in ("email", "phone"):  # null means none, as ""
        if name in fields and fields[name] is None:
            fields[name] = ""
    for name in ("yearly_spend", "interest_tags", "points_balance"):
        if name in fields and fields[name] is None:
            fields[name] = {"yearly_spend": Decimal(0), "interest_tags": [], "points_balance": 0}[
                name
            ]
    return fields


@router.put(
    "/{external_id}",
    auth=ApiKeyAuth(ApiScope.RECIPIENTS),
    response=answers({200: RecipientOut, 201: RecipientOut}, 404, 409),
    summary="Create or update a recipient",
)
def recipient_save(
    request: HttpRequest, external_id: ExternalId, body: RecipientIn
) -> Status[dict[str, Any]]:
    """Sets the fields sent and keeps the others; the same call again changes nothing (200).
    201 when this external id is new."""
    saved = recipient_put(external_id, _fields(body), user=body.user)
    return Status(201 if saved.created else 200, recipient_json(saved.recipient))


@router.get(
    "/{external_id}",
    auth=ApiKeyAuth(ApiScope.RECIPIENTS, ApiScope.READ),
    response=answers({200: RecipientOut}, 404),
    summary="Read a recipient",
)
def recipient_read(request: HttpRequest, external_id: ExternalId) -> Status[dict[str, Any]]:
    return Status(200, recipient_json(recipient_get(external_id)))


@router.get(
    "/{external_id}/messages",
    auth=ApiKeyAuth(ApiScope.READ),
    response=answers({200: list[MessageOut]}, 404),
    summary="A recipient's messages, newest first",
)
def recipient_message_list(
    request: HttpRequest, external_id: ExternalId, limit: int = 20, before: int | None = None
) -> Status[list[dict[str, Any]]]:
    """Each with what happened on each channel and why anything was not sent. Page with
    `before` = the last id of the previous page."""
    recipient = recipient_get(external_id)
    return Status(200, recipient_messages(recipient, limit=limit, before=before))


class ErasedOut(Schema):
    external_id: str
    erased: bool = Field(description="Always true: the recipient's data is gone")
    already: bool = Field(description="It had been erased before this call")
    rows: int = Field(description="Rows this call deleted or anonymised")
    record: int | None = Field(description="The erasure's record, for an admin")


@router.delete(
    "/{external_id}",
    auth=ApiKeyAuth(ApiScope.RECIPIENTS),
    response=answers({200: ErasedOut}, 404),
    summary="Erase a recipient (GDPR/PIPL)",
)
def recipient_delete(
    request: HttpRequest, external_id: ExternalId, reason: str = "erasure requested over the API"
) -> Status[dict[str, Any]]:
    """Their contact points, devices, preferences, consent, inbox, message content and
    provider ids are removed or anonymised everywhere; counts for campaign statistics stay,
    without personal data. Their identifiers go on a suppression list, so a later
    `PUT /recipients/{external_id}` or a list import does not bring them back until an admin
    lifts it. Asking again answers 200 with `already`. `?reason=`: a ticket number, kept in
    the erasure's record."""
    if (
        suppressed(external_id=external_id)
        and not Recipient.objects.filter(external_id=external_id).exists()
    ):
        return Status(
            200,
            {
                "external_id": external_id,
                "erased": True,
                "already": True,
                "rows": 0,
                "record": None,
            },
        )
    recipient = recipient_get(external_id)
    key = getattr(request, "api_key", None)
    report = recipient_erase(
        recipient, by=f"API key {getattr(key, 'prefix', '?')}", reason=reason[:500] or "API"
    )
    return Status(
        200,
        {
            "external_id": external_id,
            "erased": True,
            "already": report.repeat,
            "rows": report.rows,
            "record": report.record_id,
        },
    )


@router.get(
    "/{external_id}/export",
    auth=ApiKeyAuth(ApiScope.RECIPIENTS),
    response=answers({200: dict[str, Any]}, 404),
    summary="Everything held about a recipient, as JSON (GDPR/PIPL access)",
)
def recipient_data_export(request: HttpRequest, external_id: ExternalId) -> Status[dict[str, Any]]:
    """The profile, messages with their deliveries, events and what they said, devices,
    preferences, consent history, inbox, unsubscribes, segment memberships and earlier
    erasures: the `notifier.recipient-export/1` document the admin's export downloads."""
    return Status(200, recipient_export(recipient_get(external_id)))


class AppTokenOut(Schema):
    token: str = Field(description="Give it to the app: `Authorization: Bearer ntr_…`")
    expires_at: datetime


@router.post(
    "/{external_id}/app-token",
    auth=ApiKeyAuth(ApiScope.RECIPIENTS),
    response=answers({201: AppTokenOut}, 404),
    summary="A token for the recipient's own app",
)
def app_token_create(request: HttpRequest, external_id: ExternalId) -> Status[dict[str, Any]]:
    """Your backend calls this for the person signed in and hands the token to the app (a
    mobile app or a web page), which then registers that person's devices and reads and
    changes their preferences and consent, without holding an API key. Each token is valid
    for NOTIFIER_APP_TOKEN_MAX_AGE_S (30 days) and for that one recipient."""
    issued = app_token_issue(recipient_get(external_id))
    return Status(201, {"token": issued.token, "expires_at": issued.expires_at})


# --- Devices --------------------------------------------------------------------------------


class WebPushKeys(Schema):
    p256dh: StrictStr
    auth: StrictStr


class DeviceIn(Schema):
    platform: Literal["android", "ios", "web"] = Field(
        description="android or ios: an FCM registration token; web: a Web Push subscription"
    )
    token: StrictStr = Field(
        description="The FCM registration token, or the Web Push subscription's endpoint URL"
    )
    keys: WebPushKeys | None = Field(
        default=None, description="Web Push only: the subscription's keys"
    )


class DeviceOut(Schema):
    id: int
    platform: str
    token: str
    active: bool
    created_at: datetime
    deactivated_at: datetime | None
    deactivation_reason: str


def device_json(device: Device) -> dict[str, Any]:
    return {
        "id": device.pk,
        "platform": device.platform,
        "token": device.token,
        "active": device.active,
        "created_at": device.created_at,
        "deactivated_at": device.deactivated_at,
        "deactivation_reason": device.deactivation_reason,
    }


@router.post(
    "/{external_id}/devices",
    auth=ApiKeyAuth(ApiScope.DEVICES, app=True),
    response=answers({200: DeviceOut, 201: DeviceOut}, 404),
    summary="Register a push device",
)
def device_add(
    request: HttpRequest, external_id: ExternalId, body: DeviceIn
) -> Status[dict[str, Any]]:
    """A token already registered moves to this recipient and is live again (200); a new one
    is 201. Call it whenever the app starts or its token changes."""
    recipient = recipient_get(external_id)
    keys = body.keys.model_dump() if body.keys is not None else None
    registered = device_register(recipient, platform=body.platform, token=body.token, keys=keys)
    return Status(201 if registered.created else 200, device_json(registered.device))


@router.get(
    "/{external_id}/devices",
    auth=ApiKeyAuth(ApiScope.DEVICES, ApiScope.READ, app=True),
    response=answers({200: list[DeviceOut]}, 404),
    summary="A recipient's push devices",
)
def device_list(request: HttpRequest, external_id: ExternalId) -> Status[list[dict[str, Any]]]:
    return Status(200, [device_json(d) for d in devices_of(recipient_get(external_id))])


@router.delete(
    "/{external_id}/devices",
    auth=ApiKeyAuth(ApiScope.DEVICES, app=True),
    response=answers({200: DeviceOut}, 404),
    summary="Unregister a push device",
)
def device_remove(
    request: HttpRequest, external_id: ExternalId, token: str
) -> Status[dict[str, Any]]:
    """`?token=` the FCM token or Web Push endpoint (URL-encoded): no more pushes to it."""
    device = device_unregister(recipient_get(external_id), token=token)
    return Status(200, device_json(device))


# --- Preferences and consent ----------------------------------------------------------------


class CategoryOut(Schema):
    category: str
    name: str
    description: str
    locked: bool = Field(description="Transactional or critical: cannot be switched off")
    channels: dict[str, bool]


class KindOut(CategoryOut):
    types: list[CategoryOut]


class ConsentNow(Schema):
    granted: bool
    at: datetime | None


class PreferencesOut(Schema):
    channels: list[str]
    categories: list[KindOut]
    marketing_frequency: str
    marketing_frequency_choices: list[str]
    consent: dict[str, ConsentNow]


class Switch(Schema):
    category: StrictStr = Field(description='A kind ("marketing") or a type ("promo.flash_sale")')
    channel: StrictStr = Field(description='A channel, or "all"')
    enabled: StrictBool


class PreferencesIn(Schema):
    preferences: list[Switch] = Field(default_factory=list, max_length=200)
    marketing_frequency: Literal["as_sent", "weekly", "off"] | None = None


@router.get(
    "/{external_id}/preferences",
    auth=ApiKeyAuth(ApiScope.RECIPIENTS, ApiScope.READ, app=True),
    response=answers({200: PreferencesOut}, 404),
    summary="A recipient's preferences, as the preference centre shows them",
)
def preferences_read(request: HttpRequest, external_id: ExternalId) -> Status[dict[str, Any]]:
    recipient = recipient_get(external_id)
    return Status(200, preference_centre(user_id=recipient.user_id).as_json())


@router.patch(
    "/{external_id}/preferences",
    auth=ApiKeyAuth(ApiScope.RECIPIENTS, app=True),
    response=answers({200: PreferencesOut}, 404),
    summary="Change a recipient's preferences",
)
def preferences_change(
    request: HttpRequest, external_id: ExternalId, body: PreferencesIn
) -> Status[dict[str, Any]]:
    """All the switches sent, or none of them (422 names the one refused: transactional and
    critical messages cannot be switched off)."""
    recipient = recipient_get(external_id)
    preferences_update(
        user_id=recipient.user_id,
        changes=[
            PreferenceChange(category=s.category, channel=s.channel, enabled=s.enabled)
            for s in body.preferences
        ],
        marketing_frequency=body.marketing_frequency,
    )
    return Status(200, preference_centre(user_id=recipient.user_id).as_json())


class ConsentIn(Schema):
    channel: StrictStr = Field(description='A channel that asks for consent, or "all"')
    granted: StrictBool
    source: StrictStr = Field(
        min_length=1, max_length=100, description="Where: signup_form, app_settings, …"
    )
    wording: StrictStr = Field(
        default="",
        max_length=2000,
        description="The exact words the person agreed to (required to grant)",
    )
    ip_address: StrictStr | None = Field(default=None, description="The person's address")


class ConsentRecordOut(Schema):
    purpose: str
    channel: str
    granted: bool
    at: datetime
    source: str
    wording: str


class ConsentOut(Schema):
    current: dict[str, ConsentNow]
    history: list[ConsentRecordOut] = Field(description="Newest first, at most 100")


def consent_json(recipient: Recipient) -> dict[str, Any]:
    history = Consent.objects.filter(
        user_id=recipient.user_id, purpose=ConsentPurpose.MARKETING
    ).order_by("-at", "-id")[:100]
    return {
        "current": preference_centre(user_id=recipient.user_id).as_json()["consent"],
        "history": [
            {
                "purpose": c.purpose,
                "channel": c.channel,
                "granted": c.granted,
                "at": c.at,
                "source": c.source,
                "wording": c.wording,
            }
            for c in history
        ],
    }


@router.get(
    "/{external_id}/consent",
    auth=ApiKeyAuth(ApiScope.RECIPIENTS, ApiScope.READ, app=True),
    response=answers({200: ConsentOut}, 404),
    summary="A recipient's marketing consent and its history",
)
def consent_read(request: HttpRequest, external_id: ExternalId) -> Status[dict[str, Any]]:
    return Status(200, consent_json(recipient_get(external_id)))


@router.post(
    "/{external_id}/consent",
    auth=ApiKeyAuth(ApiScope.RECIPIENTS, app=True),
    response=answers({200: ConsentOut}, 404),
    summary="Record marketing consent given or withdrawn",
)
def consent_record(
    request: HttpRequest, external_id: ExternalId, body: ConsentIn
) -> Status[dict[str, Any]]:
    """Each grant is kept with its source and wording, even when consent was already given;
    a withdrawal with none in force records nothing."""
    recipient = recipient_get(external_id)
    # From the person's own app: where they were when they said it, unless the app says.
    ip = body.ip_address
    if ip is None and getattr(request, "app_caller", None) is not None:
        ip = request_ip(request) or None
    if body.granted:
        consent_give(
            user_id=recipient.user_id,
            channel=body.channel,
            source=body.source,
            wording=body.wording,
            ip_address=ip,
        )
    else:
        consent_withdraw(
            user_id=recipient.user_id,
            channel=body.channel,
            source=body.source,
            ip_address=ip,
        )
    return Status(200, consent_json(recipient))


class SnoozeOut(Schema):
    type: str
    until: datetime | None = Field(description="When it ends; null: until unmuted")


class SnoozesOut(Schema):
    snoozes: list[SnoozeOut] = Field(description="Running now, soonest to end first")


class SnoozeIn(Schema):
    length: Literal["day", "week", "until_unmuted"] = Field(
        alias="for", description="How long: a day, a week, or until unmuted"
    )


def snoozes_json(user_id: Any) -> dict[str, Any]:
    return {
        "snoozes": [{"type": s.type_key, "until": s.until} for s in snoozes_list(user_id=user_id)]
    }


@router.get(
    "/{external_id}/snoozes",
    auth=ApiKeyAuth(ApiScope.RECIPIENTS, ApiScope.READ, app=True),
    response=answers({200: SnoozesOut}, 404),
    summary="The types a recipient muted for now",
)
def snoozes_read(request: HttpRequest, external_id: ExternalId) -> Status[dict[str, Any]]:
    return Status(200, snoozes_json(recipient_get(external_id).user_id))


@router.put(
    "/{external_id}/snoozes/{type_key}",
    auth=ApiKeyAuth(ApiScope.RECIPIENTS, app=True),
    response=answers({200: SnoozesOut}, 404),
    summary="Snooze a type for a recipient",
)
def snooze_put(
    request: HttpRequest, external_id: ExternalId, type_key: str, body: SnoozeIn
) -> Status[dict[str, Any]]:
    """Until it ends, the type reaches them in the inbox only (no email, SMS or push). `for`:
    `day`, `week` or `until_unmuted`; again replaces it. Transactional and critical types
    cannot be snoozed (422)."""
    recipient = recipient_get(external_id)
    snooze_set(user_id=recipient.user_id, type_key=type_key, length=body.length)
    return Status(200, snoozes_json(recipient.user_id))


@router.delete(
    "/{external_id}/snoozes/{type_key}",
    auth=ApiKeyAuth(ApiScope.RECIPIENTS, app=True),
    response=answers({200: SnoozesOut}, 404),
    summary="Unmute a type for a recipient",
)
def snooze_delete(
    request: HttpRequest, external_id: ExternalId, type_key: str
) -> Status[dict[str, Any]]:
    recipient = recipient_get(external_id)
    snooze_lift(user_id=recipient.user_id, type_key=type_key)
    return Status(200, snoozes_json(recipient.user_id))


class CadenceOut(Schema):
    type: str | None = Field(description="A type's key; null: every type that honours it")
    cadence: str
    at: str = Field(description="Daily and weekly: the local time, HH:MM")
    weekday: str = Field(description="Weekly: the day, monday .. sunday")


class CadencesOut(Schema):
    cadences: list[CadenceOut] = Field(description="Their choices, the one for all types first")
    types: list[str] = Field(description="The types that come as digests at their cadence")
    choices: list[str]


class CadenceIn(Schema):
    type: StrictStr | None = Field(
        default=None, description="A type's key; null or absent: every type that honours it"
    )
    cadence: Literal["immediately", "hourly", "daily", "weekly"]
    at: StrictStr | None = Field(default=None, description='Local time, "09:00" if absent')
    weekday: StrictStr | None = Field(default=None, description='"monday" if absent')


@router.get(
    "/{external_id}/digest-cadence",
    auth=ApiKeyAuth(ApiScope.RECIPIENTS, ApiScope.READ, app=True),
    response=answers({200: CadencesOut}, 404),
    summary="How often a recipient's digests come",
)
def digest_cadence_read(request: HttpRequest, external_id: ExternalId) -> Status[dict[str, Any]]:
    return Status(200, digest_cadences_json(user_id=recipient_get(external_id).user_id))


@router.put(
    "/{external_id}/digest-cadence",
    auth=ApiKeyAuth(ApiScope.RECIPIENTS, app=True),
    response=answers({200: CadencesOut}, 404),
    summary="Choose how often a recipient's digests come",
)
def digest_cadence_put(
    request: HttpRequest, external_id: ExternalId, body: CadenceIn
) -> Status[dict[str, Any]]:
    """For every type that honours it (`type` null) or for one (which wins): `immediately`
    (each as it comes), `hourly`, `daily` at `at` or `weekly` on `weekday` at `at`, on their
    own clock. The next digest that opens follows it. A type that is not sent as digests, or
    a time or day that is not one, is refused (422)."""
    recipient = recipient_get(external_id)
    digest_cadence_set(
        user_id=recipient.user_id,
        scope=body.type,
        cadence=body.cadence,
        at=body.at,
        weekday=body.weekday,
    )
    return Status(200, digest_cadences_json(user_id=recipient.user_id))


@router.delete(
    "/{external_id}/digest-cadence",
    auth=ApiKeyAuth(ApiScope.RECIPIENTS, app=True),
    response=answers({200: CadencesOut}, 404),
    summary="Forget a recipient's cadence choice",
)
def digest_cadence_delete(
    request: HttpRequest, external_id: ExternalId, type: str | None = None
) -> Status[dict[str, Any]]:
    """`?type=` the type's choice (back to the one for all types); without it, the one for
    all types (back to each type's own window)."""
    recipient = recipient_get(external_id)
    digest_cadence_clear(user_id=recipient.user_id, scope=type)
    return Status(200, digest_cadences_json(user_id=recipient.user_id))


class TopicsOut(Schema):
    topics: list[str] = Field(description="The topics they follow, by key")


@router.get(
    "/{external_id}/topics",
    auth=ApiKeyAuth(ApiScope.RECIPIENTS, ApiScope.READ, app=True),
    response=answers({200: TopicsOut}, 404),
    summary="The topics a recipient follows",
)
def topics_read(request: HttpRequest, external_id: ExternalId) -> Status[dict[str, Any]]:
    return Status(200, {"topics": topics_of(user_id=recipient_get(external_id).user_id)})


@router.put(
    "/{external_id}/topics/{topic}",
    auth=ApiKeyAuth(ApiScope.RECIPIENTS, app=True),
    response=answers({200: TopicsOut}, 404),
    summary="A recipient follows a topic",
)
def topic_follow(
    request: HttpRequest, external_id: ExternalId, topic: str
) -> Status[dict[str, Any]]:
    recipient = recipient_get(external_id)
    topic_subscribe(topic, [recipient.user_id])
    return Status(200, {"topics": topics_of(user_id=recipient.user_id)})


@router.delete(
    "/{external_id}/topics/{topic}",
    auth=ApiKeyAuth(ApiScope.RECIPIENTS, app=True),
    response=answers({200: TopicsOut}, 404),
    summary="A recipient stops following a topic",
)
def topic_unfollow(
    request: HttpRequest, external_id: ExternalId, topic: str
) -> Status[dict[str, Any]]:
    recipient = recipient_get(external_id)
    topic_unsubscribe(topic, [recipient.user_id])
    return Status(200, {"topics": topics_of(user_id=recipient.user_id)})


class TopicSnoozeOut(Schema):
    topic: str
    until: datetime | None = Field(description="When it ends; null: until unmuted")


class TopicSnoozesOut(Schema):
    snoozes: list[TopicSnoozeOut] = Field(description="Running now, soonest to end first")


def topic_snoozes_json(user_id: Any) -> dict[str, Any]:
    return {
        "snoozes": [
            {"topic": s.topic_key, "until": s.until} for s in topic_snoozes_list(user_id=user_id)
        ]
    }


@router.get(
    "/{external_id}/topic-snoozes",
    auth=ApiKeyAuth(ApiScope.RECIPIENTS, ApiScope.READ, app=True),
    response=answers({200: TopicSnoozesOut}, 404),
    summary="The topics a recipient muted for now",
)
def topic_snoozes_read(request: HttpRequest, external_id: ExternalId) -> Status[dict[str, Any]]:
    return Status(200, topic_snoozes_json(recipient_get(external_id).user_id))


@router.put(
    "/{external_id}/topic-snoozes/{topic}",
    auth=ApiKeyAuth(ApiScope.RECIPIENTS, app=True),
    response=answers({200: TopicSnoozesOut}, 404),
    summary="Snooze a topic a recipient follows",
)
def topic_snooze_put(
    request: HttpRequest, external_id: ExternalId, topic: str, body: SnoozeIn
) -> Status[dict[str, Any]]:
    """Until it ends, what the topic's sends hand out reaches them in the inbox only (no
    email, SMS or push; transactional and critical types still go everywhere). `for`: `day`,
    `week` or `until_unmuted`; again replaces it. A topic they do not follow: 422."""
    recipient = recipient_get(external_id)
    topic_snooze_set(user_id=recipient.user_id, topic_key=topic, length=body.length)
    return Status(200, topic_snoozes_json(recipient.user_id))


@router.delete(
    "/{external_id}/topic-snoozes/{topic}",
    auth=ApiKeyAuth(ApiScope.RECIPIENTS, app=True),
    response=answers({200: TopicSnoozesOut}, 404),
    summary="Unmute a topic for a recipient",
)
def topic_snooze_delete(
    request: HttpRequest, external_id: ExternalId, topic: str
) -> Status[dict[str, Any]]:
    recipient = recipient_get(external_id)
    topic_snooze_lift(user_id=recipient.user_id, topic_key=topic)
    return Status(200, topic_snoozes_json(recipient.user_id))


# --- Dates: reminders around each person's own date ------------------------------------------


class DateStepOut(Schema):
    step: int
    at: datetime = Field(description="When it goes (or would have gone)")
    message_id: int | None = Field(description="Its message; null: not sent")
    skipped: str | None = Field(description='"past": its time had gone when the date was set')
    archived: bool = Field(
        description="Retention archived its message: message_id is in the archive, no longer "
        "in the delivery log"
    )


class DateOut(Schema):
    series: str
    key: str
    at: datetime
    state: Literal["active", "removed", "exited"]
    note: str = Field(description="Why it stopped, when it did")
    version: int = Field(description="How many times it was set or moved")
    steps: list[DateStepOut] = Field(description="The steps of its latest date")


class DatesOut(Schema):
    dates: list[DateOut] = Field(description="Soonest first")


AS_OF_DESCRIPTION = (
    "When the change happened in your system, with its time zone (ISO 8601), at most a day "
    "ahead of this server's clock. A call older than the date's last applied one changes "
    "nothing (a retry behind a newer call); without it, calls apply in the order they arrive"
)


class DateIn(Schema):
    at: datetime = Field(description="The date, with its time zone (ISO 8601)")
    context: dict[str, Any] = Field(
        default_factory=dict, description="What the steps' templates see (besides series_date)"
    )
    as_of: datetime | None = Field(default=None, description=AS_OF_DESCRIPTION)


class DateExitIn(Schema):
    reason: StrictStr = Field(default="", description='Why, e.g. "renewed" (support reads it)')
    as_of: datetime | None = Field(default=None, description=AS_OF_DESCRIPTION)


def dates_json(user_id: Any) -> dict[str, Any]:
    dates = recipient_dates_of(user_id=user_id)
    archived = steps_archived(dates)
    return {
        "dates": [
            {
                "series": date.series_id,
                "key": date.key,
                "at": date.at,
                "state": date.state,
                "note": date.state_note,
                "version": date.version,
                "steps": [
                    {
                        "step": step["step"],
                        "at": step["at"],
                        "message_id": step.get("message"),
                        "skipped": step.get("skipped"),
                        "archived": step.get("message") in archived,
                    }
                    for step in date.plan
                ],
            }
            for date in dates
        ]
    }


@router.get(
    "/{external_id}/dates",
    auth=ApiKeyAuth(ApiScope.RECIPIENTS, ApiScope.READ),
    response=answers({200: DatesOut}, 404),
    summary="A recipient's dates and the reminders around them",
)
def dates_read(request: HttpRequest, external_id: ExternalId) -> Status[dict[str, Any]]:
    return Status(200, dates_json(recipient_get(external_id).user_id))


@router.put(
    "/{external_id}/dates/{series}/{key}",
    auth=ApiKeyAuth(ApiScope.RECIPIENTS),
    response=answers({200: DatesOut}, 404, 422),
    summary="Set or move a recipient's date in a series",
)
def date_put(
    request: HttpRequest, external_id: ExternalId, series: str, key: str, body: DateIn
) -> Status[dict[str, Any]]:
    """The series' steps are scheduled around `at`; a date set before under the same key has
    its pending steps cancelled (moved). Steps already past are not sent. The same body again
    changes nothing, and so does one whose `as_of` is older than the date's: the answer is
    always the dates as they stand."""
    recipient = recipient_get(external_id)
    date_set(recipient.user_id, series, body.at, key=key, context=body.context, as_of=body.as_of)
    return Status(200, dates_json(recipient.user_id))


@router.delete(
    "/{external_id}/dates/{series}/{key}",
    auth=ApiKeyAuth(ApiScope.RECIPIENTS),
    response=answers({200: DatesOut}, 404, 422),
    summary="Remove a recipient's date: its pending steps are cancelled",
)
def date_delete(
    request: HttpRequest,
    external_id: ExternalId,
    series: str,
    key: str,
    as_of: Annotated[datetime | None, Query(description=AS_OF_DESCRIPTION)] = None,
) -> Status[dict[str, Any]]:
    """No such date is no error. With `as_of`, a date not set yet stays unset when its set,
    older, arrives later. The answer is the dates as they stand."""
    recipient = recipient_get(external_id)
    date_clear(recipient.user_id, series, key=key, as_of=as_of)
    return Status(200, dates_json(recipient.user_id))


@router.post(
    "/{external_id}/dates/{series}/{key}/exit",
    auth=ApiKeyAuth(ApiScope.RECIPIENTS),
    response=answers({200: DatesOut}, 404, 422),
    summary="The recipient acted (renewed, converted): the rest of the steps stop",
)
def date_exit_route(
    request: HttpRequest, external_id: ExternalId, series: str, key: str, body: DateExitIn
) -> Status[dict[str, Any]]:
    """With `as_of`, as DELETE's. The answer is the dates as they stand."""
    recipient = recipient_get(external_id)
    date_exit(recipient.user_id, series, key=key, reason=body.reason, as_of=body.as_of)
    return Status(200, dates_json(recipient.user_id))
