"""What a marketer's copy may cost, and what checking it may cost the site.

Copy is tried for one customer under limits far below the runtime budget (a campaign pays it for
every recipient); every request tries copy within one time budget for all its parts, checks are
remembered per process, a variant has copy for a bounded number of locales, and approval tries
the copy before it takes the campaign's row lock, approving exactly what it tried.
"""

from __future__ import annotations

import time
import uuid

import pytest
import time_machine
from django.db import connections
from django.db.utils import OperationalError

from campaigns.models import Campaign, CampaignStatus, VariantTemplate
from campaigns.rendering import allowed_variables, template_problems
from campaigns.services.lifecycle import (
    CampaignError,
    campaign_approve,
    campaign_problems,
    campaign_submit,
)
from campaigns.services.previews import variant_send_test
from notifier.rendering import environment
from notifier.sandbox import BudgetedTemplate, render_budget
from tests.campaigns.test_campaign_admin import NOW, make_campaign, notice_variant, person

pytestmark = pytest.mark.django_db


@pytest.fixture
def marketer(roles):
    return person("Marketer", "marketer")


@pytest.fixture
def lead(roles):
    return person("Marketing lead", "lead")


@pytest.fixture
def renders(monkeypatch) -> list[int]:
    """Every template render, counted (the id of the campaign whose row lock, if any, the
    render saw held is appended by tests that look)."""
    calls: list[int] = []
    render = BudgetedTemplate.render

    def counted(self, *args, **kwargs):
        calls.append(1)
        return render(self, *args, **kwargs)

    monkeypatch.setattr(BudgetedTemplate, "render", counted)
    return calls


def unique(text: str) -> str:
    """Copy no other test has written: its check is not remembered from before."""
    return f"{text} {uuid.uuid4().hex}"


# --- The cost of copy, for one customer ----------------------------------------------------------


def loop_steps(iterations: int) -> int:
    with render_budget((10**9, 10**9, 3600.0)) as budget:
        environment().from_string(loop(iterations)).render()
    return budget.max_steps - budget.steps_left


def loop(iterations: int) -> str:
    return f"{{% for i in range({iterations}) %}}{{% endfor %}}"


def test_copy_over_its_step_limit_is_refused_every_time_and_copy_at_it_never(settings):
    """The step meter is exact: copy that takes NOTIFIER_COPY_MAX_STEPS saves, one step more is
    refused, however often it is tried (the time limit is set out of the way: it has its own
    test in tests/security)."""
    settings.NOTIFIER_COPY_MAX_SECONDS = 60
    limit = settings.NOTIFIER_COPY_MAX_STEPS
    at_limit = 1000 + limit - loop_steps(1000)
    assert loop_steps(at_limit) == limit
    allowed = allowed_variables({})
    for attempt in range(10):
        # Not remembered: each attempt is a new copy (a trailing space more).
        padding = " " * attempt
        assert template_problems(loop(at_limit) + padding, allowed=allowed) == []
        [problem] = template_problems(loop(at_limit + 1) + padding, allowed=allowed)
        assert problem.startswith(f"this copy needs more than {limit:,} steps to render")


PRODUCT_LOOP = """<table role="presentation" width="100%">
{% for p in products %}
<tr{% if loop.index is even %} style="background:#f7f7f7"{% endif %}>
<td><a href="{{ p.url }}"><img src="{{ p.image }}" alt="{{ p.name|e }}" width="96"></a></td>
<td><a href="{{ p.url }}" style="color:#8a4b2a">{{ p.name|title|truncate(40) }}</a>
{% if 'new' in p.tags %}<span class="badge">New</span>{% endif %}</td>
<td>{% if p.was %}<s>{{ '%.2f'|format(p.was) }}</s> {% endif %}
<b>{{ '%.2f'|format(p.price) }}</b></td>
</tr>
{% endfor %}
</table>
<p>Hi {{ user.first_name }}, {{ headline|capitalize }}: {{ products|length }} picks for you.</p>
<p><a href="{{ unsubscribe_url }}">No more offers like this</a></p>"""
PRODUCTS = [
    {
        "name": f"Vintage card no. {i} in mint condition",
        "price": 12.5 + i,
        "was": 20 + i if i % 3 == 0 else None,
        "url": f"https://shop.example.com/p/{i}?utm_source=email",
        "image": f"https://cdn.example.com/i/{i}.jpg",
        "tags": ["sale", "new"] if i % 2 else ["sale"],
    }
    for i in range(50)
]


def test_heavy_but_legitimate_copy_passes_with_room_to_spare(settings):
    """A 50-product HTML list, the heaviest copy a marketer writes, takes about 1,500 steps and
    1.3 ms: well inside what copy may cost, on a busy machine too."""
    values = {"headline": "everything vintage is 30% off", "products": PRODUCTS}
    allowed = allowed_variables(values)
    assert template_problems(unique(PRODUCT_LOOP), allowed=allowed, variables=values) == []
    with render_budget((10**9, 10**9, 3600.0)) as budget:
        environment().from_string(PRODUCT_LOOP).render(
            values, user={"first_name": "Mei"}, unsubscribe_url="https://x.example/u"
        )
    assert budget.max_steps - budget.steps_left < settings.NOTIFIER_COPY_MAX_STEPS / 2


def test_a_channels_parts_share_one_budget(marketer, settings):
    """The parts of one channel render for each recipient under one budget: a subject, body and
    html that each fit but together do not are refused, on the part that went over."""
    settings.NOTIFIER_COPY_MAX_SECONDS = 60
    limit = settings.NOTIFIER_COPY_MAX_STEPS
    iterations = 1000 + limit * 2 // 5 - loop_steps(1000)  # 40% of the limit each
    variant = notice_variant(make_campaign(marketer))
    row = VariantTemplate.objects.get(variant=variant, channel="email")
    row.subject, row.body = loop(iterations), loop(iterations) + "\n{{ unsubscribe_url }}"
    row.html = loop(iterations) + unique("<p>hi</p>")
    row.save()
    with time_machine.travel(NOW):
        problems = campaign_problems(variant.step.campaign)
    assert problems == [
        f"step 'Notice', variant A: email html: this copy needs more than {limit:,} steps to "
        "render: a loop or a macro calling itself, or long text compared or searched again and "
        "again?"
    ]


# --- What checking copy may cost a request ------------------------------------------------------


def test_unchanged_copy_is_not_tried_again(marketer, renders):
    """Submitting, approving, sending a test and saving each check all the copy: a check of
    copy already checked (the same text, values and limits) is remembered, and renders
    nothing."""
    campaign = make_campaign(marketer)
    VariantTemplate.objects.filter(channel="inapp", variant__step__campaign=campaign).update(
        body=unique("Hi {{ user.first_name }}")
    )
    with time_machine.travel(NOW):
        assert campaign_problems(campaign) == []
        assert renders, "the first check renders the copy"
        renders.clear()
        assert campaign_problems(campaign) == []
        assert renders == []
        row = VariantTemplate.objects.get(channel="inapp", variant=notice_variant(campaign))
        row.body = unique("Hello {{ user.first_name }}")
        row.save()
        assert campaign_problems(campaign) == []
    assert len(renders) == 3  # that channel's copy only: title, body, link


# Copy as big as copy may be (5,000 elements): compiling it is what takes the time.
BIG_COPY = "{{ headline }}, " * 2_400


def test_one_time_budget_covers_every_trial_render_of_a_submit(marketer, settings):
    """A campaign with many parts of copy never before checked: submitting answers within its
    time budget, saying what it could not check yet; each try goes on where the last one
    stopped (checks are remembered), until the whole campaign is checked."""
    settings.NOTIFIER_COPY_CHECK_BUDGET_S = 0.3
    campaign = make_campaign(marketer)
    rows = VariantTemplate.objects.filter(variant__step__campaign=campaign)
    for row in rows:
        row.body = unique(BIG_COPY)
        row.save()
    assert rows.count() == 6
    with time_machine.travel(NOW):
        started = time.monotonic()
        with pytest.raises(CampaignError, match="not checked yet: trying the copy took more than"):
            campaign_submit(campaign=campaign, by=marketer)
        one_try = time.monotonic() - started
        assert one_try < 0.3 + 1.0, f"{one_try:.2f} s"  # the budget, and the row it was on
        for _ in range(len(rows)):
            problems = campaign_problems(campaign)
            assert all("not checked yet" in problem for problem in problems)
            if not problems:
                break
        campaign_submit(campaign=campaign, by=marketer)
    assert Campaign.objects.get(pk=campaign.pk).status == CampaignStatus.AWAITING_APPROVAL


def many_locales(variant, count: int) -> None:
    VariantTemplate.objects.bulk_create(
        VariantTemplate(
            variant=variant, channel="inapp", locale=f"xx-{n:03}", title=unique("Hi"), body="Hi"
        )
        for n in range(count)
    )


def test_a_variant_with_copy_for_too_many_locales_is_refused_at_once(marketer, lead, renders):
    """Copy stored for 200 locales (locale is free text): submitting, approving and sending a
    test refuse it for that, at once, without trying any of it."""
    campaign = make_campaign(marketer)
    variant = notice_variant(campaign)
    many_locales(variant, 200)
    expected = (
        "step 'Notice', variant A: it has copy for 201 locales; a variant may have at most 30 "
        "(the default included): remove some"
    )
    with time_machine.travel(NOW):
        started = time.monotonic()
        with pytest.raises(CampaignError) as refused:
            campaign_submit(campaign=campaign, by=marketer)
        assert expected in str(refused.value)
        Campaign.objects.filter(pk=campaign.pk).update(status=CampaignStatus.AWAITING_APPROVAL)
        with pytest.raises(CampaignError) as refused:
            campaign_approve(campaign=campaign, by=lead)
        assert expected in str(refused.value)
        with pytest.raises(CampaignError, match="copy for 201 locales"):
            variant_send_test(variant=variant, to_user=marketer)
        assert time.monotonic() - started < 2.0
    # The other variants' copy is tried; none of the 200 rows is.
    assert len(renders) < 3 * 5 * 3


# --- Approval tries the copy before the row lock ------------------------------------------------


def campaign_row_is_locked(campaign_id: int) -> bool:
    """Whether another transaction holds the campaign's row lock now (asked from a connection
    of its own, which does not wait for it)."""
    other = connections.create_connection("default")
    try:
        with other.cursor() as cursor:
            cursor.execute(
                f"SELECT id FROM {Campaign._meta.db_table} WHERE id = %s FOR UPDATE NOWAIT",
                [campaign_id],
            )
        return False
    except OperationalError:
        return True
    finally:
        other.close()


def awaiting_approval(marketer) -> Campaign:
    """A campaign awaiting approval whose copy no process has checked yet."""
    campaign = make_campaign(marketer)
    for row in VariantTemplate.objects.filter(variant__step__campaign=campaign):
        row.body = unique(row.body)
        row.save()
    Campaign.objects.filter(pk=campaign.pk).update(status=CampaignStatus.AWAITING_APPROVAL)
    return Campaign.objects.get(pk=campaign.pk)


@pytest.mark.django_db(transaction=True)
def test_approval_renders_nothing_while_it_holds_the_campaigns_row(marketer, lead, monkeypatch):
    campaign = awaiting_approval(marketer)
    locked_while_rendering: list[bool] = []
    render = BudgetedTemplate.render

    def watched(self, *args, **kwargs):
        locked_while_rendering.append(campaign_row_is_locked(campaign.pk))
        return render(self, *args, **kwargs)

    monkeypatch.setattr(BudgetedTemplate, "render", watched)
    with time_machine.travel(NOW):
        campaign_approve(campaign=campaign, by=lead)
    assert locked_while_rendering, "approval tried the copy"
    assert not any(locked_while_rendering)
    assert Campaign.objects.get(pk=campaign.pk).status == CampaignStatus.SCHEDULED


@pytest.mark.django_db(transaction=True)
def test_approval_covers_exactly_the_copy_it_tried(marketer, lead, monkeypatch):
    """Copy changed while approval was trying it (between its check and its lock) is not
    approved unchecked: approval refuses, and approves once the new copy is tried."""
    campaign = awaiting_approval(marketer)
    row = VariantTemplate.objects.get(variant=notice_variant(campaign), channel="inapp")
    render = BudgetedTemplate.render
    changed: list[bool] = []

    def changes_the_copy(self, *args, **kwargs):
        if not changed:
            changed.append(True)
            other = connections.create_connection("default")
            try:
                with other.cursor() as cursor:
                    cursor.execute(
                        f"UPDATE {VariantTemplate._meta.db_table} SET body = %s WHERE id = %s",
                        ["{{ 'x' * 10 ** 9 }}", row.pk],
                    )
            finally:
                other.close()
        return render(self, *args, **kwargs)

    monkeypatch.setattr(BudgetedTemplate, "render", changes_the_copy)
    with time_machine.travel(NOW):
        with pytest.raises(CampaignError, match="changed while it was being checked"):
            campaign_approve(campaign=campaign, by=lead)
        assert Campaign.objects.get(pk=campaign.pk).status == CampaignStatus.AWAITING_APPROVAL
        with pytest.raises(CampaignError, match="inapp body: repeating would make about"):
            campaign_approve(campaign=campaign, by=lead)
