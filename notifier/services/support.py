"""Support's audited fixes from the customer page: resend a message, cancel one before it goes
out, correct a contact point, lift a suppression, add a note.

Each checks its input and raises `SupportFixError` with words for the agent (nothing written),
then makes the change and its `SupportAction` row (who, when, what, why) in one transaction.
A resend is a new message through the real pipeline (`notify()`: routing, consent, quiet hours
and caps decide as for any other), keyed by the click's form token: the same token, submitted
twice (a double click, a reload), finds the first resend and sends nothing more.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from typing import Any

from django.conf import settings
from django.contrib.auth import get_user_model
from django.core.exceptions import ValidationError
from django.core.validators import validate_email
from django.db import IntegrityError, transaction
from django.utils import timezone

from notifier.api import notify
from notifier.errors import NotifyError, RecipientErased
from notifier.models import (
    Message,
    Recipient,
    SupportAction,
    SupportActionKind,
    SuppressedAddress,
    normalize_email,
)
from notifier.models.users import normalize_phone, phone_from_text
from notifier.selectors import message_read_caller_fields
from notifier.services.cancellation import message_cancel
from notifier.services.erasure import erasure_check

MAX_WHY = 2000
MAX_EMAIL = 254
CONTACT_FIELDS = ("email", "phone")


class SupportFixError(ValueError):
    """A fix that cannot be made as asked; the message says why, for the agent."""


@dataclass(frozen=True)
class Agent:
    """The staff member making a fix: kept by id and by name (the name outlives the account)."""

    user_id: Any
    name: str

    @classmethod
    def of(cls, user: Any) -> Agent:
        return cls(user_id=user.pk, name=str(user.get_username()))


@dataclass(frozen=True)
class Resend:
    action: SupportAction
    created: bool  # False: this click's resend had been made already


def _why(why: object) -> str:
    if not isinstance(why, str) or not why.strip():
        raise SupportFixError("Say why (a ticket number and what the customer asked): it is kept")
    if len(why) > MAX_WHY:
        raise SupportFixError(f"The reason is {len(why)} characters; keep it to {MAX_WHY}")
    return why.strip()


def _writable(recipient: Recipient) -> None:
    if recipient.erased_at is not None:
        raise SupportFixError(
            "This person's data was erased at their request: nothing is changed or sent"
        )


def _record(
    *,
    recipient: Recipient,
    agent: Agent,
    kind: SupportActionKind,
    why: str,
    detail: dict[str, Any],
    message: Message | None = None,
    token: uuid.UUID | None = None,
) -> SupportAction:
    return SupportAction.objects.create(
        recipient=recipient,
        kind=kind,
        at=timezone.now(),
        by_id=agent.user_id,
        by_name=agent.name[:150],
        why=why,
        detail=detail,
        message=message,
        token=token,
    )


def support_note_add(*, recipient: Recipient, agent: Agent, why: str) -> SupportAction:
    """A note on the customer's timeline (what was said on the phone, a ticket number)."""
    return _record(
        recipient=recipient, agent=agent, kind=SupportActionKind.NOTE, why=_why(why), detail={}
    )


def check_contact(field: str, value: object) -> str:
    """The corrected value as stored (email lower-cased domain kept as typed, phone in E.164),
    or SupportFixError saying what is wrong with it."""
    if field not in CONTACT_FIELDS:
        raise SupportFixError(f"Only {' or '.join(CONTACT_FIELDS)} can be corrected here")
    text = str(value or "").strip()
    if field == "email":
        if not text:
            raise SupportFixError("Type the email address; to remove one, ask an admin")
        if len(text) > MAX_EMAIL:
            raise SupportFixError(f"An email address has at most {MAX_EMAIL} characters")
        try:
            validate_email(text)
        except ValidationError as exc:
            raise SupportFixError(f"{text!r} is not an email address") from exc
        return text
    if not text:
        raise SupportFixError("Type the phone number, e.g. +8613800138000")
    region = settings.NOTIFIER_DEFAULT_REGION
    phone = phone_from_text(text, region)
    if phone is None:
        try:
            normalize_phone(text)
        except ValidationError as exc:
            hint = "" if region else " with its country code, e.g. +8613800138000"
            raise SupportFixError(f"{text!r} is not a valid phone number{hint}") from exc
        raise SupportFixError(f"{text!r} is not a valid phone number")
    return phone


def support_contact_correct(
    *, recipient: Recipient, agent: Agent, field: str, value: str, why: str
) -> SupportAction:
    """Correct the email address or phone number Notifier writes to. On the stand-alone site
    the user's own address is corrected too (the profile follows it); a host project's user
    model is the host's, and only the profile changes."""
    reason = _why(why)
    _writable(recipient)
    new = check_contact(field, value)
    try:
        erasure_check(**{field: new})
    except RecipientErased as exc:
        raise SupportFixError(str(exc).capitalize()) from exc
    with transaction.atomic():
        profile = Recipient.objects.select_for_update().get(pk=recipient.pk)
        old = str(getattr(profile, field))
        if old == new:
            raise SupportFixError(f"The {field} is {new} already")
        setattr(profile, field, new)
        profile.save(update_fields=[field, "updated_at"])
        if field == "email" and get_user_model()._meta.label == "notifier.User":
            get_user_model()._default_manager.filter(pk=profile.user_id).update(email=new)
        action = _record(
            recipient=profile,
            agent=agent,
            kind=SupportActionKind.CONTACT,
            why=reason,
            detail={"field": field, "from": old, "to": new},
        )
    setattr(recipient, field, new)
    return action


def support_suppression_lift(
    *, recipient: Recipient, agent: Agent, suppression_id: int, why: str
) -> SupportAction:
    """Take one of the customer's addresses off the suppression list (a bounce or complaint),
    e.g. once they fixed their mailbox: sending to it resumes. The row goes; the record keeps
    what it said."""
    reason = _why(why)
    _writable(recipient)
    with transaction.atomic():
        row = (
            SuppressedAddress.objects.select_for_update()
            .filter(pk=suppression_id, address__in=_addresses(recipient))
            .first()
        )
        if row is None:
            raise SupportFixError(
                "That suppression is not on this customer's addresses any more (lifted already?)"
            )
        detail = {
            "channel": row.channel,
            "address": row.address,
            "reason": row.reason,
            "source": row.source,
            "since": row.at.isoformat(),
        }
        row.delete()
        return _record(
            recipient=recipient,
            agent=agent,
            kind=SupportActionKind.UNSUPPRESS,
            why=reason,
            detail=detail,
        )


def _addresses(recipient: Recipient) -> list[str]:
    return [a for a in (normalize_email(recipient.email), recipient.phone) if a]


def support_resend(
    *,
    recipient: Recipient,
    agent: Agent,
    message_id: int,
    channels: list[str],
    token: uuid.UUID,
    why: str,
) -> Resend:
    """Send a message again: a new message of the same type and context to the same person on
    the channels chosen, through the pipeline. Idempotent per `token` (the click)."""
    reason = _why(why)
    done = SupportAction.objects.filter(token=token).first()
    if done is not None:
        if done.recipient_id != recipient.pk or done.detail.get("resent") != message_id:
            raise SupportFixError("This form was used for another resend: reload the page")
        return Resend(action=done, created=False)
    _writable(recipient)
    original = (
        Message.objects.filter(pk=message_id, user_id=recipient.user_id)
        .select_related("type")
        .first()
    )
    if original is None:
        raise SupportFixError(f"Message #{message_id} is not this customer's")
    if original.variant_id is not None or original.is_test:
        raise SupportFixError(
            "Campaign messages and test sends are not resent from here: their copy belongs to "
            "the campaign"
        )
    unreadable = message_read_caller_fields(original)
    if unreadable:
        raise SupportFixError("; ".join(unreadable.values()))
    sent_on = sorted(original.deliveries.values_list("channel", flat=True))
    if not channels:
        raise SupportFixError("Choose at least one channel")
    if any(c not in sent_on for c in channels):
        raise SupportFixError(
            f"Message #{message_id} went out on {', '.join(sent_on) or 'no channel'}: resend "
            "on those"
        )
    try:
        with transaction.atomic():
            action = _record(
                recipient=recipient,
                agent=agent,
                kind=SupportActionKind.RESEND,
                why=reason,
                detail={"resent": message_id, "channels": sorted(channels)},
                token=token,
            )
            try:
                message = notify(
                    original.user_id,
                    original.type_id,
                    original.context,
                    channels=sorted(channels),
                    idempotency_key=f"support-resend:{token}",
                )
            except NotifyError as exc:
                raise SupportFixError(f"Cannot resend: {exc}") from exc
            action.message = message
            action.save(update_fields=["message"])
    except IntegrityError:
        # The same click, submitted at the same moment: the first one's row stands.
        done = SupportAction.objects.filter(token=token).first()
        if done is None:
            raise
        return Resend(action=done, created=False)
    return Resend(action=action, created=True)


def support_cancel(
    *, recipient: Recipient, agent: Agent, message_id: int, token: uuid.UUID, why: str
) -> SupportAction:
    """Cancel what has not gone out of one of the customer's messages (a scheduled reminder
    they asked not to get, a held promotion): its scheduled, held and queued deliveries are
    cancelled with the reason, and the fix is on the support log. What went out stays. The
    same click (`token`) twice finds the first one's record."""
    reason = _why(why)
    done = SupportAction.objects.filter(token=token).first()
    if done is not None:
        if done.recipient_id != recipient.pk or done.detail.get("cancelled") != message_id:
            raise SupportFixError("This form was used for another fix: reload the page")
        return done
    if not Message.objects.filter(pk=message_id, user_id=recipient.user_id).exists():
        raise SupportFixError(f"Message #{message_id} is not this customer's")
    with transaction.atomic():
        report = message_cancel(message_id=message_id, by=agent.name)
        if report.cancelled == 0:
            raise SupportFixError(
                f"Message #{message_id} has nothing left to cancel: it has gone out or was "
                "stopped already"
            )
        return _record(
            recipient=recipient,
            agent=agent,
            kind=SupportActionKind.CANCEL,
            why=reason,
            detail={"cancelled": message_id, "deliveries": report.cancelled},
            message=Message(pk=message_id),
            token=token,
        )
