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
it, or to the campaign's seed list of staff), the funnel leaves it out, and its subject or
title reads "[Test] …" (campaigns.rendering.marked_as_test).

Both run a marketer's copy, so both are boxed in: a preview page renders within its time
budget (a `TimeBudget`), and a test send tries the copy within one too, then is prepared on the
bulk lane, where copy that burns CPU can delay only other marketing, never a receipt or a
password reset.
"""

from __future__ import annotations

import uuid
from collections.abc import Mapping
from functools import partial
from typing import Any

from django.conf import settings
from django.contrib.auth import get_user_model
from django.core.exceptions import ValidationError
from django.db import DatabaseError
from django.utils import timezone

from campaigns.models import PERSONA_CHOICES, AudienceThresholds, Campaign, StepVariant
from campaigns.personas import Persona, user_persona
from campaigns.rendering import (
    EVERYONE,
    TimeBudget,
    allowed_variables,
    compile_copy,
    copy_key,
    copy_problems,
    render_variant,
)
from campaigns.services.lifecycle import (
    CampaignError,
    campaign_channels,
    variant_copy,
    variant_problems,
)
from channels.base import Channel, Content
from notifier.links import preferences_url, unsubscribe_url
from notifier.masking import mask_email, mask_phone
from notifier.models import Message, User, recipient_for
from notifier.models.users import normalize_phone
from notifier.queues import Lane
from notifier.rendering import RenderError, render_failure, template_context
from notifier.sandbox import render_budget
from notifier.services.messages import NewMessage, messages_create
from notifier.services.pipeline import local_time_text, user_template_values
from notifier.timebox import TimeBoxExpired, time_boxed
from notifier.user_keys import UserKey, user_key_from_text

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


# (channel, locale, persona) -> part -> source: copy as typed in the editor, not yet saved.
UnsavedCopy = Mapping[tuple[str, str, str], Mapping[str, str]]


def unsaved_copy_preview(
    *,
    campaign: Campaign,
    user: User,
    copy: UnsavedCopy,
    links_user_id: UserKey | None = None,
    budget: TimeBudget,
) -> dict[Channel, Content | RenderError]:
    """Copy as the editor holds it (before it is saved), rendered for `user` on each of the
    campaign's channels: the copy they would get (their locale, their persona, as `copy_key`
    picks), checked as a save checks it, then rendered in the same sandbox and context as a
    real message, within the request's `budget`. A channel that cannot render comes back as a
    RenderError in words, never raises."""
    persona = campaign_persona(campaign, user)
    locale = recipient_for(user).locale
    allowed = allowed_variables(campaign.variables)
    results: dict[Channel, Content | RenderError] = {}
    for channel in campaign_channels(campaign):
        key = copy_key(copy.keys(), str(channel), locale, persona.copy_keys())
        if key is None:
            results[channel] = RenderError("no copy for this channel yet")
            continue
        parts = {part: source for part, source in copy[key].items() if source}
        if not parts:
            results[channel] = RenderError("no copy for this channel yet")
            continue
        problems = copy_problems(
            parts, allowed=allowed, variables=campaign.variables, budget=budget, persona=key[2]
        )
        if problems:
            results[channel] = RenderError(
                "; ".join(f"{part}: {text}" for part, found in problems.items() for text in found)
            )
            continue
        context = campaign_context(campaign, user, links_user_id=links_user_id, persona=persona)
        context["unsubscribe_url"] = unsubscribe_url(
            user_id=links_user_id or user.pk,
            category=campaign.category_id or FALLBACK_CATEGORY,
            channel=channel,
        )
        results[channel] = _render_unsaved(parts, context, budget)
    return results


def _render_unsaved(
    parts: Mapping[str, str], context: Mapping[str, Any], budget: TimeBudget
) -> Content | RenderError:
    def render() -> Content:
        rendered: dict[str, str] = {}
        with render_budget(fresh=True):  # one budget for the channel's parts, as when sent
            for part, source in parts.items():
                try:
                    rendered[part] = compile_copy(source).render(context).strip()
                except RenderError:
                    raise
                except Exception as exc:  # the copy's own complaint, in its words
                    raise render_failure(part, exc, with_kind=False) from exc
        return Content.from_dict(rendered)

    if budget.left() <= 0:
        return RenderError(f"not rendered: the preview spent its {budget.seconds:g} s already")
    try:
        return time_boxed(budget.left(), render)
    except RenderError as exc:
        return exc
    except TimeBoxExpired:
        return RenderError(f"stopped after {budget.seconds:g} s: this copy takes too long")


def variant_personas(variant: StepVariant) -> list[str]:
    """The personas a variant has copy of its own for, in the order they are listed."""
    written = {template.persona for template in variant.templates.all()} - {EVERYONE}
    return [key for key, _ in PERSONA_CHOICES if key in written]


def variant_send_test(
    *, variant: StepVariant, to_user: User, click: uuid.UUID | None = None
) -> Message:
    """Send one variant to `to_user` now, as a test message through the whole pipeline.

    Every click is a new message: `click` names it (the form's token), so the same click
    submitted twice sends once; without one, each call is a click of its own. Raises
    CampaignError when the campaign has no category or the variant's copy is incomplete or
    invalid.
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
        idempotency_key=f"campaign-test:{variant.pk}:{to_user.pk}:{(click or uuid.uuid4()).hex}",
        priority=campaign.priority,
        campaign_id=campaign.pk,
        step_id=variant.step_id,
        variant_id=variant.pk,
        is_test=True,
    )
    return messages_create(rows=[row]).messages[0]


def seed_entry_masked(entry: str) -> str:
    """A seed list's line as shown to staff who may not see contact details: an email address
    or a phone number masked, an id as it is."""
    if "@" in entry:
        return mask_email(entry)
    if entry.startswith("+"):
        return mask_phone(entry)
    return entry


def seed_list_masked(text: str) -> str:
    return "\n".join(seed_entry_masked(line.strip()) for line in text.splitlines() if line.strip())


def seed_users(text: str, *, anyone: bool, mask: bool = False) -> tuple[list[User], list[str]]:
    """The people of a seed list (one email, phone number or id a line) and, in words, the
    lines that name nobody it may hold. Without `anyone` (permission to see customers' contact
    details) only staff may be seeds, and a line naming a customer reads like one naming
    nobody: the list is no way to learn who has an account. `mask`: quote the lines masked (a
    list someone else wrote, with addresses its reader may not see)."""
    users: list[User] = []
    problems: list[str] = []
    seen: set[Any] = set()
    for line in text.splitlines():
        entry = line.strip()
        if not entry:
            continue
        try:
            user = user_by_key(entry)
        except LookupError as exc:
            user = None
            problem = str(exc)
        if user is not None and not anyone and not getattr(user, "is_staff", False):
            user, problem = None, ""
        if user is None:
            shown = seed_entry_masked(entry) if mask else entry
            problems.append(f"“{shown[:80]}”: " + (problem if anyone else "no staff member has it"))
        elif user.pk not in seen:
            seen.add(user.pk)
            users.append(user)
    if len(users) > MAX_SEEDS:
        problems.append(f"at most {MAX_SEEDS} seeds: a test is not a send")
    return users, problems


MAX_SEEDS = 50


def user_by_key(query: str) -> User:
    """A user by id, email or phone number (international, with its +), or LookupError in
    words."""
    query = query.strip()
    manager = get_user_model()._default_manager
    user_id = user_key_from_text(query)
    if user_id is not None:
        user = manager.filter(pk=user_id).first()
        if user is None:
            raise LookupError(f"No user has id {query}.")
        return user
    if "@" in query:
        found = list(manager.filter(notifier_recipient__email__iexact=query)[:2])
        what = "that email address"
    elif query.startswith("+"):
        try:
            phone = normalize_phone(query)
        except ValidationError:
            raise LookupError("That is not a phone number (write it +86 138 0013 8000).") from None
        found = list(manager.filter(notifier_recipient__phone=phone)[:2])
        what = "that phone number"
    else:
        raise LookupError("Give a user id, an email address or a phone number (+86…).")
    if not found:
        raise LookupError(f"No user has {what}.")
    if len(found) > 1:
        raise LookupError(f"Several users have {what}; give the user id.")
    return found[0]


def variant_send_test_to_seeds(
    *, variant: StepVariant, seeds: list[User], click: uuid.UUID | None = None
) -> list[Message]:
    """ "Send test to seed list": the variant to every seed, each a test message (marked
    "[Test] ", past quiet hours and caps, out of the funnel: `variant_send_test`), once per
    `click`."""
    if not seeds:
        raise CampaignError("the campaign's seed list is empty: add staff to it first")
    return [variant_send_test(variant=variant, to_user=seed, click=click) for seed in seeds]
