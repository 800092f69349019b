"""Parts of campaign copy that read nothing of the customer are rendered once a batch and
reused: the same text for every recipient as rendering each, the same budget spent."""

from __future__ import annotations

import contextlib

import pytest

from campaigns.models import VariantTemplate
from campaigns.rendering import Reused, render_variant, variant_cache_clear
from channels.base import Channel
from notifier.rendering import RenderBudgetExceeded
from tests.campaigns.test_campaign_admin import make_campaign, notice_variant, person

pytestmark = pytest.mark.django_db


@pytest.fixture
def variant(roles):
    variant_cache_clear()
    yield notice_variant(make_campaign(person("Marketer", "marketer")))
    variant_cache_clear()


def write(variant, channel: str, **parts: str) -> None:
    VariantTemplate.objects.filter(variant=variant, channel=channel).update(**parts)
    variant_cache_clear()


def context_of(first_name: str, zone_time: str, **values: object) -> dict[str, object]:
    return {
        "headline": "50% off",
        "tags": ["shoes", "hats"],
        "price": 1.0,
        **values,
        "user": {"first_name": first_name, "time_zone": "Asia/Shanghai", "locale": "en"},
        "campaign": {"name": "Double 11", "event_at": zone_time},
        "event_at": zone_time,
        "site_name": "Shop",
        "site_url": "https://shop.example.com",
        "preferences_url": "https://notify.example.com/preferences/x/",
        "unsubscribe_url": f"https://notify.example.com/unsubscribe/{first_name}/",
    }


RECIPIENTS = [
    context_of("Mei", "2030-11-11 20:00"),
    context_of("Ann", "2030-11-11 13:00"),
    context_of("Li", "2030-11-11 20:00"),
    context_of("Bo", "2030-11-11 20:00", headline="Last call"),
    context_of("Jo", "2030-11-11 20:00", price=True),  # prints otherwise than 1.0
    context_of("Al", "2030-11-11 20:00", price=-0.0),
]


def test_a_batch_gets_the_same_text_as_rendering_each_and_renders_constant_parts_once(variant):
    write(
        variant,
        "email",
        subject="{{ campaign.name }}: {{ headline }} {{ price }}",
        body=(
            "{% for tag in tags %}{{ tag|upper }} {% endfor %}at {{ event_at }}\n"
            "Hi {{ user.first_name }} {{ unsubscribe_url }}"
        ),
        html="<p>{{ headline|title }} from {{ site_name }}</p>",
    )
    reused: Reused = {}
    for context in RECIPIENTS:
        alone = render_variant(variant.pk, Channel.EMAIL, context, "en")
        in_batch = render_variant(variant.pk, Channel.EMAIL, context, "en", reused=reused)
        assert in_batch == alone
    # The subject by (headline, price, the campaign's local time), the html by headline; the
    # body reads the customer.
    texts = sorted(text for text, _, _ in reused.values())
    assert texts == sorted(
        [
            "Double 11: 50% off 1.0",
            "Double 11: 50% off 1.0",  # the other time zone's campaign value
            "Double 11: Last call 1.0",
            "Double 11: 50% off True",
            "Double 11: 50% off -0.0",
            "<p>50% Off from Shop</p>",
            "<p>Last Call from Shop</p>",
        ]
    )


@pytest.mark.parametrize(
    "source",
    [
        "{{ ['a', 'b', 'c', 'd', 'e', 'f', 'g', 'h']|random }}",  # differs at every render
        "{{ event_at|localdatetime }}",  # reads the customer's zone from the context
        "{{ headline.upper() }}",  # a call: a method may change what a later part reads
        "{% include 'promo.flash_sale/inapp.title.txt' %}",  # brought in with the whole context
        "{{ user.first_name }}",
    ],
)
def test_parts_that_can_differ_per_customer_are_rendered_for_each(variant, source):
    write(variant, "inapp", title=source, body="Hi", link="")
    reused: Reused = {}
    for context in RECIPIENTS[:3]:
        with contextlib.suppress(Exception):  # whether it renders is not the point
            render_variant(variant.pk, Channel.INAPP, context, "en", reused=reused)
    assert {text for text, _, _ in reused.values()} <= {"Hi"}  # the body at most, never the title


def test_a_reused_part_spends_the_budget_it_spent_when_rendered(variant, settings):
    """Copy over its budget is over it for every recipient, whether its constant part was
    rendered for them or reused."""
    write(
        variant,
        "inapp",
        title="{% for tag in tags %}{% for again in tags %}{{ tag }}{% endfor %}{% endfor %}",
        body="{% for tag in tags %}{{ user.first_name }}{% endfor %}",
        link="",
    )
    many = {"tags": [f"tag{n}" for n in range(40)]}
    settings.NOTIFIER_RENDER_MAX_STEPS = 100_000
    reused: Reused = {}
    fits = [context_of(name, "2030-11-11 20:00", **many) for name in ("Mei", "Ann")]
    for context in fits:
        assert render_variant(
            variant.pk, Channel.INAPP, context, "en", reused=reused
        ) == render_variant(variant.pk, Channel.INAPP, context, "en")
    ((_, steps, chars),) = reused.values()
    assert steps > 1600 and chars > 0
    # Room for the title alone: the body, after it, goes over, reused or not.
    settings.NOTIFIER_RENDER_MAX_STEPS = steps + 20
    for context in fits:
        with pytest.raises(RenderBudgetExceeded, match="more than"):
            render_variant(variant.pk, Channel.INAPP, context, "en")
        with pytest.raises(RenderBudgetExceeded, match="more than"):
            render_variant(variant.pk, Channel.INAPP, context, "en", reused=reused)


@pytest.mark.parametrize(
    "source",
    [
        # A filter that reads the customer's locale, called by name through another filter.
        "{{ [event_at]|map('localdatetime')|join }}",
        "{{ [event_at]|map('localdate')|first }}",
    ],
)
def test_a_filter_named_through_map_still_reads_each_customers_locale(variant, source):
    write(variant, "inapp", title=source, body="Hi", link="")
    english = context_of("Mei", "2030-11-11T20:00:00+08:00", price=1234.5)
    german = context_of("Ann", "2030-11-11T20:00:00+08:00", price=1234.5)
    german["user"] = {**german["user"], "locale": "de"}  # type: ignore[dict-item]
    reused: Reused = {}
    for context in (english, german):
        alone = render_variant(variant.pk, Channel.INAPP, context, "en")
        assert render_variant(variant.pk, Channel.INAPP, context, "en", reused=reused) == alone
    assert render_variant(variant.pk, Channel.INAPP, english, "en") != render_variant(
        variant.pk, Channel.INAPP, german, "en"
    )
