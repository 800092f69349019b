"""Copy is refused at save time when it cannot run: more work than a render's budget for a
representative customer, or code Python cannot compile; copy stored by other means that cannot
compile fails its own messages as a RenderError, and nothing else."""

from __future__ import annotations

import pytest

from campaigns.models import VariantTemplate
from campaigns.rendering import (
    MAX_COPY_CHARS,
    MAX_COPY_ELEMENTS,
    allowed_variables,
    compile_copy,
    render_variant,
    template_problems,
    variant_templates,
)
from campaigns.services.previews import variant_preview
from channels.base import Channel
from notifier.rendering import RenderBudgetExceeded, RenderError
from tests.campaigns.test_campaign_admin import (
    copy_prefix,
    field_errors,
    make_campaign,
    notice_variant,
    person,
    post_data,
    url,
)

pytestmark = pytest.mark.django_db


@pytest.fixture
def marketer(roles):
    return person("Marketer", "marketer")


NESTING = (
    "It nests too deeply to compile (brackets, loops, conditions or a long chain of + or ~): "
    "split it into simpler pieces"
)
REFUSED = {
    "over the budget": (
        "{% macro f(n) %}{% if n %}{{ f(n - 1) }}{{ f(n - 1) }}{% endif %}{% endmacro %}"
        "{{ f(30) }}",
        "This copy needs more than 5,000 steps to render: a loop or a macro calling itself, or "
        "long text compared or searched again and again?",
    ),
    "100 nested parentheses": ("{{ " + "(" * 100 + "1" + ")" * 100 + " }}", NESTING),
    "a 3,000-term sum": ("{{ " + " + ".join(["1"] * 3000) + " }}", NESTING),
    "21 nested loops": ("{% for x in [1] %}" * 21 + "{{ x }}" + "{% endfor %}" * 21, NESTING),
    "an unknown filter": (
        "Hi {{ user.first_name|shout }}",
        "Line 1: No filter named 'shout'.",
    ),
    "too long": (
        "x" * (MAX_COPY_CHARS + 1),
        f"It is {MAX_COPY_CHARS + 1:,} characters long; copy may have at most {MAX_COPY_CHARS:,}",
    ),
    "too many elements": (
        "{{ headline }}," * (MAX_COPY_ELEMENTS // 2) + ".",
        f"It has {MAX_COPY_ELEMENTS + 1:,} elements (text, tags, variables, filters); copy may "
        f"have at most {MAX_COPY_ELEMENTS:,}: split it, or repeat less",
    ),
}
ORIGINAL_BODY = "Hi {{ user.first_name }}, {{ headline }}"


EVERYDAY_BODY = (
    "{% for word in headline.split() %}{{ word|capitalize }}{% if not loop.last %} "
    "{% endif %}{% endfor %}, {{ user.first_name }}!"
)


@pytest.mark.parametrize("case", list(REFUSED))
def test_the_marketer_is_told_on_the_field_and_nothing_is_saved(case, client, marketer, settings):
    """Then everyday copy, with a loop and a filter, saves from the same form and renders as
    written."""
    settings.NOTIFIER_COPY_MAX_SECONDS = 60  # the step meter's refusal, whatever the machine
    source, error = REFUSED[case]
    variant = notice_variant(make_campaign(marketer))
    client.force_login(marketer)
    page = client.get(url("stepvariant_change", variant.pk))
    inapp = copy_prefix(page, "inapp")
    response = client.post(
        url("stepvariant_change", variant.pk), post_data(page, **{f"{inapp}-body": source})
    )
    assert response.status_code == 200
    assert field_errors(response, inapp, "body") == [error]
    assert VariantTemplate.objects.get(variant=variant, channel="inapp").body == ORIGINAL_BODY

    response = client.post(
        url("stepvariant_change", variant.pk),
        post_data(page, **{f"{inapp}-body": EVERYDAY_BODY}),
    )
    assert response.status_code == 302
    assert VariantTemplate.objects.get(variant=variant, channel="inapp").body == EVERYDAY_BODY
    context = {"headline": "50% off today", "user": {"first_name": "Mei"}}
    context["campaign"] = {"name": "Sale"}
    rendered = render_variant(variant.pk, Channel.INAPP, context, "en", fresh=True)
    assert rendered.body == "50% Off Today, Mei!"


def test_the_trial_render_uses_the_campaign_values(client, marketer):
    """Copy whose cost depends on a campaign value is tried with that value."""
    variant = notice_variant(make_campaign(marketer))
    campaign = variant.step.campaign
    body = "{{ 'x' * (repeat|int) }}"
    allowed = allowed_variables({"repeat": ""})
    assert template_problems(body, allowed=allowed, variables={"repeat": "20"}) == []
    [problem] = template_problems(body, allowed=allowed, variables={"repeat": "2000000"})
    assert problem.startswith("repeating would make about 2,000,000 characters")

    campaign.variables = {"headline": "50% off", "repeat": "2000000"}
    campaign.save()
    client.force_login(marketer)
    page = client.get(url("stepvariant_change", variant.pk))
    inapp = copy_prefix(page, "inapp")
    response = client.post(
        url("stepvariant_change", variant.pk), post_data(page, **{f"{inapp}-body": body})
    )
    [error] = field_errors(response, inapp, "body")
    assert error.startswith("Repeating would make about 2,000,000 characters")


def test_the_trial_customer_has_long_names():
    """A loop over the customer's name is tried with the longest name a customer can have."""
    allowed = allowed_variables({})
    loop = (
        "{% for a in user.first_name %}{% for b in user.last_name %}{% for c in user.first_name %}"
        ".{% endfor %}{% endfor %}{% endfor %}"
    )
    [problem] = template_problems(loop, allowed=allowed)
    assert problem.startswith("this copy needs more than 5,000 steps")
    everyday = {"user": {"first_name": "Mei", "last_name": "Li"}}
    assert compile_copy(loop).render(everyday) == "." * 18


@pytest.mark.parametrize("case", ["100 nested parentheses", "a 3,000-term sum", "21 nested loops"])
def test_stored_copy_that_cannot_compile_fails_its_variant_alone(case, marketer):
    """Copy that reached the database without the form (a script, an old row): the batch
    that renders it gets a RenderError for that variant's channel, the other channel and the
    other variants still render, and the preview says why instead of failing."""
    source = REFUSED[case][0]
    campaign = make_campaign(marketer)
    variant = notice_variant(campaign)
    VariantTemplate.objects.filter(variant=variant, channel="inapp").update(body=source)
    compiled = variant_templates(variant.pk)
    assert isinstance(compiled[("inapp", "", "")]["body"], RenderError)
    context = {"headline": "50% off", "user": {"first_name": "Mei"}, "campaign": {"name": "Sale"}}
    context["unsubscribe_url"] = "https://shop.example.com/u/1"
    with pytest.raises(RenderError, match=f"variant {variant.pk} inapp body: it nests too deeply"):
        render_variant(variant.pk, Channel.INAPP, context, "en")
    assert render_variant(variant.pk, Channel.EMAIL, context, "en").body
    preview = variant_preview(variant=variant, user=marketer, channel=Channel.INAPP)
    assert isinstance(preview, RenderError)
    assert not isinstance(preview, RenderBudgetExceeded)


def add_copy_form(page, data: dict, **fields: str) -> str:
    """A new row of copy in the variant page's formset; returns its prefix."""
    formset = copy_prefix(page, "inapp").rsplit("-", 1)[0]
    total = int(data[f"{formset}-TOTAL_FORMS"])
    prefix = f"{formset}-{total}"
    data[f"{formset}-TOTAL_FORMS"] = str(total + 1)
    data.update({f"{prefix}-{name}": value for name, value in fields.items()})
    return prefix


def test_copy_for_one_locale_too_many_is_refused_on_its_field(client, marketer, settings):
    """A variant has copy for at most NOTIFIER_COPY_MAX_LOCALES locales, the default included:
    the form says so on the locale of the row beyond, and saves nothing."""
    variant = notice_variant(make_campaign(marketer))
    limit = settings.NOTIFIER_COPY_MAX_LOCALES
    VariantTemplate.objects.bulk_create(
        VariantTemplate(
            variant=variant, channel="inapp", locale=f"xx-{n:02}", title="Hi", body="Hi"
        )
        for n in range(limit - 1)
    )
    client.force_login(marketer)
    page = client.get(url("stepvariant_change", variant.pk))
    data = post_data(page)
    extra = add_copy_form(page, data, channel="inapp", locale="fr", title="Salut", body="Salut")
    response = client.post(url("stepvariant_change", variant.pk), data)
    assert response.status_code == 200
    assert field_errors(response, extra, "locale") == [
        f"It has copy for {limit + 1} locales; a variant may have at most {limit} (the default "
        "included): remove some."
    ]
    assert not VariantTemplate.objects.filter(variant=variant, locale="fr").exists()


PRODUCTS = [
    {
        "name": f"Vintage card no. {i} in mint condition",
        "price": 12.5 + i,
        "url": f"https://shop.example.com/p/{i}",
        "tags": ["sale", "new"] if i % 2 else ["sale"],
    }
    for i in range(50)
]
PRODUCT_HTML = (
    '<table>{% for p in products %}<tr><td><a href="{{ p.url }}">{{ p.name|title|truncate(40) }}'
    "</a>{% if 'new' in p.tags %} <b>New</b>{% endif %}</td><td>{{ '%.2f'|format(p.price) }}</td>"
    "</tr>{% endfor %}</table><p>Hi {{ user.first_name }}, {{ headline }}</p>"
)


def test_a_fifty_product_list_saves_from_the_form(client, marketer):
    """The heaviest copy a marketer writes, a list of 50 products in HTML, saves as it did."""
    variant = notice_variant(make_campaign(marketer))
    campaign = variant.step.campaign
    campaign.variables = {"headline": "50% off", "products": PRODUCTS}
    campaign.save()
    client.force_login(marketer)
    page = client.get(url("stepvariant_change", variant.pk))
    email = copy_prefix(page, "email")
    response = client.post(
        url("stepvariant_change", variant.pk), post_data(page, **{f"{email}-html": PRODUCT_HTML})
    )
    assert response.status_code == 302
    assert VariantTemplate.objects.get(variant=variant, channel="email").html == PRODUCT_HTML
