"""What a campaign's copy looks like for one user, and "send test to me".

The preview renders with the context the pipeline would use (`message_generate`): the
campaign's variables, `campaign` (name, event time in the user's zone), `user` with the
customer's segment attributes (campaigns.personas), `site_name`, `site_url`,
`preferences_url` and the channel's `unsubscribe_url`, and picks the copy of the customer's
persona as the pipeline does. It can also show the copy of another persona (`persona`): the
same customer as a whale, say, to read each persona's copy. It does not add click and open
tracking: a preview is not a message, and its clicks must not count in the funnel.

A test send is a real message through the real pipeline, marked `is_test`: routing lets it past
quiet hours, frequency caps, preferences and consent (it goes to the marketer who asked for
it), and the funnel leaves it out.

Both run a marketer's copy, so both are boxed in: a preview page renders within its time
budget (a `TimeBudget`), and a test send tries the copy within one too, then is prepared on the
bulk lane, where copy that burns CPU can delay only other marketing, never a receipt or a
password reset.
"""

from __future__ import annotations

import uuid
from functools import partial
from typing import Any

from django.conf import settings
from django.db import DatabaseError
from django.utils import timezone

from campaigns.models import PERSONA_CHOICES, AudienceThresholds, Campaign, StepVariant
from campaigns.personas import Persona, user_persona
from campaigns.rendering import EVERYONE, TimeBudget, allowed_variables, render_variant
from campaigns.services.lifecycle import (
    CampaignError,
    campaign_channels,
    variant_copy,
    variant_problems,
)
from channels.base import Channel, Content
from notifier.links import preferences_url, unsubscribe_url
from notifier.models import Message, User, recipient_for
from notifier.queues import Lane
from notifier.rendering import RenderError, template_context
from notifier.services.messages import NewMessage, messages_create
from notifier.services.pipeline import local_time_text, user_template_values
from notifier.timebox import TimeBoxExpired, time_boxed
from notifier.user_keys import UserKey

# Campaign messages are marketing; a campaign still without a category gets the links of
# marketing as a whole, so copy that uses them previews instead of failing.
FALLBACK_CATEGORY = "marketing"


def campaign_persona(campaign: Campaign, user: User) -> Persona:
    """The customer's persona as the pipeline derives it for this campaign's copy."""
    segment = campaign.segment
    days = segment.points_expiring_within_days if segment is not None else None
    return user_persona(
        user,
        thresholds=AudienceThresholds.objects.filter(pk=1).first() or AudienceThresholds(),
        points_days=settings.NOTIFIER_POINTS_EXPIRING_DAYS if days is None else days,
        now=timezone.now(),
    )


def campaign_context(
    campaign: Campaign,
    user: User,
    *,
    links_user_id: UserKey | None = None,
    persona: Persona | None = None,
) -> dict[str, Any]:
    """The context `user` gets for this campaign's copy, except the per-channel
    `unsubscribe_url` (see `variant_preview`); `persona`: theirs unless given.

    `links_user_id` signs the preference link for someone else: an admin preview of a
    customer's copy carries links for the viewer, since a signed link changes the settings of
    whoever it names.
    """
    persona = persona or campaign_persona(campaign, user)
    context = template_context(campaign.variables, user_template_values(user))
    context["user"].update(persona.template_values())
    context["preferences_url"] = preferences_url(user_id=links_user_id or user.pk)
    event_at = local_time_text(campaign.event_at, recipient_for(user).time_zone)
    context["campaign"] = {"name": campaign.name, "event_at": event_at}
    context["event_at"] = event_at
    return context


def variant_preview(
    *,
    variant: StepVariant,
    user: User,
    channel: Channel,
    links_user_id: UserKey | None = None,
    budget: TimeBudget | None = None,
    persona: str | None = None,
) -> Content | RenderError:
    """One variant's copy on one channel, rendered for `user` in their locale (or the
    default one) and for their persona, or as `persona` (a spend tier or activity state) when
    given; a RenderError, in words, when it cannot render: the template's own, or that the
    page's `budget` ran out before or while rendering it."""
    campaign = variant.step.campaign
    theirs = campaign_persona(campaign, user)
    shown = theirs.as_persona(persona) if persona is not None else theirs
    context = campaign_context(campaign, user, links_user_id=links_user_id, persona=shown)
    context["unsubscribe_url"] = unsubscribe_url(
        user_id=links_user_id or user.pk,
        category=campaign.category_id or FALLBACK_CATEGORY,
        channel=channel,
    )
    if budget is not None and budget.left() <= 0:
        return RenderError(
            f"not rendered: the preview spent its {budget.seconds:g} s on the copy before this"
        )
    try:
        # The box holds the variant's compile too (its one query, a read, is harmless to cut).
        render = partial(
            render_variant,
            variant.pk,
            channel,
            context,
            recipient_for(user).locale,
            personas=(persona,) if persona is not None else shown.copy_keys(),
        )
        return time_boxed(budget.left(), render) if budget is not None else render()
    except RenderError as exc:
        return exc
    except TimeBoxExpired:
        seconds = budget.seconds if budget is not None else 0
        return RenderError(
            f"stopped after the preview's {seconds:g} s: this copy takes too long to render"
        )
    except DatabaseError:
        raise
    except Exception as exc:  # copy that cannot even compile: said in the cell, not a 500
        return RenderError(f"{type(exc).__name__}: {exc}")


def variant_personas(variant: StepVariant) -> list[str]:
    """The personas a variant has copy of its own for, in the order they are listed."""
    written = {template.persona for template in variant.templates.all()} - {EVERYONE}
    return [key for key, _ in PERSONA_CHOICES if key in written]


def variant_send_test(*, variant: StepVariant, to_user: User) -> Message:
    """Send one variant to `to_user` now, as a test message through the whole pipeline.

    Every click is a new message (its own idempotency key). Raises CampaignError when the
    campaign has no category or the variant's copy is incomplete or invalid.
    """
    campaign = variant.step.campaign
    if campaign.category_id is None:
        raise CampaignError("choose the campaign's marketing category before sending a test")
    problems = variant_problems(
        variant_copy(variant),
        campaign_channels(campaign),
        allowed_variables(campaign.variables),
        campaign.variables,
        budget=TimeBudget(settings.NOTIFIER_COPY_CHECK_BUDGET_S),
    )
    if problems:
        raise CampaignError("fix the copy before sending a test: " + "; ".join(problems))
    row = NewMessage(
        user_id=to_user.pk,
        type_key=campaign.category_id,
        context=dict(campaign.variables),
        channels=[str(channel) for channel in campaign.channels],
        # The bulk lane: a test renders the marketer's copy, which must never hold up the lane
        # of receipts and password resets. Routing lets it past backpressure, caps and quiet
        # hours either way.
        lane=Lane.BULK,
        idempotency_key=f"campaign-test:{variant.pk}:{to_user.pk}:{uuid.uuid4().hex}",
        priority=campaign.priority,
        campaign_id=campaign.pk,
        step_id=variant.step_id,
        variant_id=variant.pk,
        is_test=True,
    )
    return messages_create(rows=[row]).messages[0]
