"""A preview page of copy that burns CPU answers within its time budget, and each cell that was
cut off, or never reached, says so; copy that cannot even compile is a cell's reason, not a 500.

The slow copy is real: loops over `range` inside loops over `range` (each `range` is within the
sandbox's limit of 100,000 items), about ten seconds of rendering on this machine if nothing
stops it. The sandbox's own render budget refuses such copy in milliseconds; the page budget is
the layer behind it (for whatever the sandbox lets through), so its test lifts the sandbox's
limits to reach it.
"""

from __future__ import annotations

import time
import uuid

import pytest
from django.urls import reverse

from campaigns.models import Campaign, Segment, StepVariant, VariantTemplate
from campaigns.services.lifecycle import campaign_create
from notifier.models import NotificationType
from tests.factories import staff_member

pytestmark = pytest.mark.django_db

# 100,000 x 2,500 iterations: about ten seconds in Jinja, 0.4 microseconds each.
BURNING = "{% for i in range(100000) %}{% for j in range(2500) %}{% endfor %}{% endfor %}x"
NESTED_21 = "".join(f"{{% for i{n} in [1] %}}" for n in range(21)) + "x" + "{% endfor %}" * 21
BUDGET_S = 1.0


@pytest.fixture
def marketer(roles):
    return staff_member("Marketer")


def campaign_with_copy(creator) -> Campaign:
    campaign = campaign_create(
        name="Double 11",
        category=NotificationType.objects.get(pk="promo.flash_sale"),
        created_by=creator,
        segment=Segment.objects.create(name=uuid.uuid4().hex),
        event_at=None,
        channels=["inapp", "email"],
        variables={"headline": "50% off"},
    )
    for variant in StepVariant.objects.filter(step__campaign=campaign):
        VariantTemplate.objects.create(
            variant=variant, channel="inapp", title="{{ headline }}", body="Hi {{ user.name }}"
        )
        VariantTemplate.objects.create(
            variant=variant, channel="email", subject="{{ headline }}", body="Hi {{ user.name }}"
        )
    return campaign


def set_copy(campaign: Campaign, step: str, channel: str, body: str) -> None:
    VariantTemplate.objects.filter(
        variant__step__campaign=campaign, variant__step__name=step, channel=channel
    ).update(body=body)


def preview(client, campaign: Campaign) -> tuple[float, str]:
    started = time.monotonic()
    response = client.get(reverse("admin:campaigns_campaign_preview", args=[campaign.pk]))
    took = time.monotonic() - started
    assert response.status_code == 200
    return took, response.content.decode()


def cell(page: str, step: str, channel: str) -> str:
    """The HTML of one step's cell for one channel."""
    section = page[page.index(f"<h2>{step} ") :]
    start = section.index(f'class="channel channel-{channel}"')
    return section[start : section.index("</div>", start)]


def test_copy_that_burns_cpu_is_cut_off_at_the_page_budget_and_each_cell_says_why(
    client, marketer, settings
):
    settings.NOTIFIER_PREVIEW_BUDGET_S = BUDGET_S
    # Only the page budget may stop it here: the sandbox's limits are lifted out of reach.
    settings.NOTIFIER_RENDER_MAX_STEPS = 10**12
    settings.NOTIFIER_RENDER_MAX_CHARS = 10**12
    settings.NOTIFIER_RENDER_MAX_SECONDS = 3600
    campaign = campaign_with_copy(marketer)
    set_copy(campaign, "Reminder", "inapp", BURNING)
    client.force_login(marketer)

    took, page = preview(client, campaign)

    assert took < BUDGET_S + 3, f"the preview held the web worker {took:.1f} s"
    # Before the slow copy: rendered. The slow copy: stopped. After it: not rendered, because
    # the page's time is spent.
    assert "Hi " in cell(page, "Notice", "inapp") and "Cannot render" not in cell(
        page, "Notice", "email"
    )
    slow = cell(page, "Reminder", "inapp")
    assert "Cannot render:" in slow
    assert "stopped after the preview" in slow
    later = [cell(page, "Reminder", "email"), cell(page, "Last call", "inapp")]
    assert all("not rendered: the preview spent its 1 s" in c for c in later)


def test_with_the_sandboxs_budget_the_same_copy_is_refused_at_once_and_the_rest_renders(
    client, marketer, settings
):
    settings.NOTIFIER_PREVIEW_BUDGET_S = BUDGET_S
    campaign = campaign_with_copy(marketer)
    set_copy(campaign, "Reminder", "inapp", BURNING)
    client.force_login(marketer)

    took, page = preview(client, campaign)

    assert took < BUDGET_S, f"the preview took {took:.1f} s"
    slow = cell(page, "Reminder", "inapp")
    assert "Cannot render:" in slow
    assert "stopped after the preview" not in slow  # the render's own budget refused it
    for step, channel in (("Reminder", "email"), ("Last call", "inapp"), ("Last call", "email")):
        assert "Hi " in cell(page, step, channel)


def test_copy_that_cannot_compile_is_said_in_its_cell_not_a_server_error(client, marketer):
    """21 nested loops make Python's compiler give up (SyntaxError, not a template error)."""
    campaign = campaign_with_copy(marketer)
    set_copy(campaign, "Notice", "email", NESTED_21)
    client.force_login(marketer)
    _, page = preview(client, campaign)
    compile_error = cell(page, "Notice", "email")
    assert "Cannot render:" in compile_error
    assert "to compile" in compile_error and "split it into simpler pieces" in compile_error
    assert "Hi " in cell(page, "Reminder", "email")  # the other variants render
