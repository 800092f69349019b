"""A render interrupted at the worst moment leaves nothing behind for the next one.

Celery's soft time limit and a preview's time box raise their exception between any two
bytecodes of the code running, and so also inside `render_budget.__exit__`, before it resets
the context variable that holds the render's budget. The budget, part spent, then stays set in
a worker process (which runs the next task in the same context) or in a web thread (which
serves the next request). The tests make that moment happen every time: `sandbox._current` is
wrapped so that its next reset raises the exception instead of resetting.
"""

from __future__ import annotations

import uuid
from typing import Any

import pytest
from celery.exceptions import SoftTimeLimitExceeded

from campaigns.models import Segment, StepVariant, VariantTemplate
from campaigns.rendering import TimeBudget
from campaigns.services.lifecycle import campaign_create
from campaigns.services.previews import variant_preview
from channels.base import Channel
from notifier import sandbox
from notifier.models import NotificationType
from notifier.rendering import RenderError, render
from notifier.timebox import TimeBoxExpired
from tests.factories import UserFactory, order_context

pytestmark = pytest.mark.django_db


class Interruptible:
    """`sandbox._current`, whose next reset can be made to raise instead, as an asynchronous
    exception landing just before it would; it remembers every budget set through it."""

    def __init__(self, var: Any) -> None:
        self.var = var
        self.budgets: list[sandbox.RenderBudget] = []
        self.interrupt: BaseException | None = None

    def get(self) -> Any:
        return self.var.get()

    def set(self, budget: Any) -> Any:
        if budget is not None:
            self.budgets.append(budget)
        return self.var.set(budget)

    def reset(self, token: Any) -> None:
        if self.interrupt is not None:
            exc, self.interrupt = self.interrupt, None
            raise exc
        self.var.reset(token)


@pytest.fixture
def current(monkeypatch) -> Interruptible:
    wrapped = Interruptible(sandbox._current)
    monkeypatch.setattr(sandbox, "_current", wrapped)
    token = sandbox._current.var.set(None)
    yield wrapped
    wrapped.var.reset(token)


def render_shipped() -> None:
    render("order.shipped", Channel.INAPP, {**order_context(), "user": {"first_name": "Ann"}}, "en")


def test_the_next_render_after_a_soft_limit_in_the_budgets_exit_gets_a_whole_budget(
    current,
):
    render_shipped()
    full = sandbox.limits()[0]
    spent = full - current.budgets[-1].steps_left
    assert spent > 0

    current.interrupt = SoftTimeLimitExceeded()
    with pytest.raises(SoftTimeLimitExceeded):
        render_shipped()
    stale = current.budgets[-1]
    assert current.get() is stale, "the interruption did not leave the budget set"

    render_shipped()  # the next task in this worker process

    # Its own budget, whole: not what the interrupted render left (a render that went on from
    # a part-spent budget would be refused for steps or CPU time it never spent).
    fresh = current.budgets[-1]
    assert fresh is not stale
    assert (fresh.steps_left, stale.steps_left) == (full - spent, full - spent)


@pytest.fixture
def variant() -> StepVariant:
    marketer = UserFactory(username=f"marketer-{uuid.uuid4().hex[:6]}", is_staff=True)
    campaign = campaign_create(
        name="Double 11",
        category=NotificationType.objects.get(pk="promo.flash_sale"),
        created_by=marketer,
        segment=Segment.objects.create(name=uuid.uuid4().hex),
        event_at=None,
        channels=["inapp"],
        variables={"headline": "50% off"},
    )
    variant = StepVariant.objects.filter(step__campaign=campaign).first()
    VariantTemplate.objects.create(
        variant=variant, channel="inapp", title="{{ headline }}", body="Hi {{ user.name }}"
    )
    return variant


def test_a_preview_cut_off_in_the_budgets_exit_leaves_the_web_thread_no_budget(current, variant):
    user = UserFactory(first_name="Ann")
    current.interrupt = TimeBoxExpired()

    cut = variant_preview(
        variant=variant, user=user, channel=Channel.INAPP, budget=TimeBudget(30.0)
    )

    assert isinstance(cut, RenderError) and "stopped after the preview" in str(cut)
    assert current.budgets, "the preview did not render under a budget"
    # The thread serves the next request with nothing of the interrupted render set.
    assert current.get() is None
    shown = variant_preview(
        variant=variant, user=user, channel=Channel.INAPP, budget=TimeBudget(30.0)
    )
    assert not isinstance(shown, RenderError) and shown.body == "Hi Ann"
