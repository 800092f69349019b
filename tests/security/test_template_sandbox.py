"""Templates written in the admin reach only the values given to them.

At render time the sandbox refuses internals (`__class__`, `__globals__`, `mro`), knows no
settings or ORM (`user` is a plain dict), and bounds the operators that could exhaust a worker.
At save time the marketer is told, on the field, before anything is stored.
"""

from __future__ import annotations

import uuid

import pytest
from django.contrib.auth.models import Group
from jinja2.exceptions import SecurityError, UndefinedError

from campaigns.models import VariantTemplate
from campaigns.rendering import render_variant, template_problems
from campaigns.services.previews import campaign_context
from channels.base import Channel
from notifier.rendering import SYSTEM_VARIABLES, USER_FIELDS, RenderError, environment
from notifier.roles import roles_sync
from tests.campaigns.test_campaign_admin import (
    copy_prefix,
    field_errors,
    make_campaign,
    notice_variant,
    post_data,
    url,
)
from tests.factories import UserFactory

ESCAPES = {
    "class_mro": "{{ ''.__class__.__mro__[1].__subclasses__() }}",
    "user_class": "{{ user.__class__ }}",
    "globals": "{{ cycler.__init__.__globals__ }}",
    "lipsum_globals": "{{ lipsum.__globals__['os'] }}",
    "attr_filter": "{{ user|attr('__class__') }}",
    "getitem_dunder": "{{ user['__class__'] }}",
    "format_string": "{{ '{0.__class__}'.format(user) }}",
    "mro_call": "{{ ''.__class__.mro() }}",
    "repeat_bomb": "{{ 'x' * 1000000000 }}",
    "list_bomb": "{{ [1] * 1000000000 }}",
    "power_bomb": "{{ 9 ** 999999 }}",
    "chained_power": "{{ ((2 ** 64) ** 64) ** 64 }}",
    "big_product": "{% set n = 10 ** 60 %}{{ n * n * n * n * n * n * n * n * n * n * n * n "
    "* n * n * n * n * n * n * n * n * n * n * n * n * n * n * n * n * n * n * n * n }}",
    "huge_range": "{{ range(10**9)|list|length }}",
}
NOT_GIVEN = {
    "settings": "{{ settings.SECRET_KEY }}",
    "config": "{{ config }}",
    "request": "{{ request.user }}",
    "password": "{{ user.password }}",
    "orm": "{{ user.delivery_set.all() }}",
    "objects": "{{ user.objects }}",
}


def context() -> dict[str, object]:
    return {
        "user": {"first_name": "Mei", "last_name": "Li", "name": "Mei Li", "locale": "en"},
        "site_name": "Shop",
        "site_url": "https://shop.example.com",
        "campaign": {"name": "Sale", "event_at": "Tuesday"},
        "headline": "Half off",
    }


@pytest.mark.parametrize("name", list(ESCAPES))
def test_escapes_are_refused_by_the_sandbox_when_rendered(name):
    with pytest.raises((SecurityError, OverflowError)):
        environment().from_string(ESCAPES[name]).render(context())


@pytest.mark.parametrize("name", list(NOT_GIVEN))
def test_what_was_not_given_is_undefined(name):
    with pytest.raises(UndefinedError):
        environment().from_string(NOT_GIVEN[name]).render(context())


def test_ordinary_copy_still_renders():
    source = "{{ user.first_name|upper }}: {{ 'ab' * 3 }} {{ 2 ** 10 }} {{ range(3)|list }}"
    assert environment().from_string(source).render(context()) == "MEI: ababab 1024 [0, 1, 2]"


@pytest.mark.django_db
def test_the_campaign_context_holds_plain_values_only():
    """What a campaign's copy sees for a real customer: strings in dicts, never a model."""
    from campaigns.models import Campaign, CampaignKind
    from notifier.models import NotificationType

    campaign = Campaign(
        name="Sale",
        category=NotificationType.objects.get(key="promo.flash_sale"),
        kind=CampaignKind.ONE_OFF,
        variables={"headline": "Half off"},
    )
    values = campaign_context(campaign, UserFactory())
    assert set(values["user"]) == USER_FIELDS
    assert set(values) <= SYSTEM_VARIABLES | {"campaign", "headline"}

    def plain(value: object) -> bool:
        if isinstance(value, dict):
            return all(isinstance(k, str) and plain(v) for k, v in value.items())
        return value is None or isinstance(value, str | int | float | bool)

    assert all(plain(v) for v in values.values())


ALLOWED = frozenset(SYSTEM_VARIABLES | {"campaign", "headline"})


@pytest.mark.parametrize(
    ("source", "problem"),
    [
        ("{{ user.__class__ }}", "line 1: '__class__' is internal"),
        ("{{ headline._meta }}", "line 1: '_meta' is internal"),
        ("{{ ''.mro }}", "line 1: 'mro' is internal"),
        ("{{ user|attr('__dict__') }}", "line 1: '__dict__' is internal"),
        ("{{ user['__class__'] }}", "line 1: '__class__' is internal"),
        ("Hi\n{{ user.password }}", "line 2: user has no 'password'; it has first_name, last_name"),
        ("{{ user.delivery_set }}", "line 1: user has no 'delivery_set'"),
        ("{{ campaign.segment }}", "line 1: campaign has no 'segment'; it has event_at, name"),
    ],
)
def test_the_marketer_is_told_at_save_time(source, problem):
    problems = template_problems(source, allowed=ALLOWED)
    assert problems, source
    assert problems[0].startswith(problem)


def test_copy_that_only_uses_what_is_given_has_no_problems():
    source = "{{ user.first_name }}, {{ headline }} — {{ campaign.name }} {{ campaign.event_at }}"
    assert template_problems(source, allowed=ALLOWED) == []


@pytest.mark.django_db
def test_rendering_an_escape_stored_by_other_means_fails_as_a_render_error():
    """Copy that reached the database without the form (a script, an old row) still cannot
    escape: rendering fails with a RenderError naming the variant, and nothing is sent."""
    marketer = UserFactory(username=f"m-{uuid.uuid4().hex[:6]}")
    variant = notice_variant(make_campaign(marketer))
    VariantTemplate.objects.filter(variant=variant, channel="inapp").update(
        body="{{ user.__class__.__mro__ }}"
    )
    with pytest.raises(RenderError, match=f"variant {variant.pk} inapp body"):
        render_variant(variant.pk, Channel.INAPP, context(), "en", fresh=True)


@pytest.mark.django_db
def test_the_admin_form_shows_the_error_on_the_field_and_saves_nothing(client):
    roles_sync()
    marketer = UserFactory(username=f"marketer-{uuid.uuid4().hex[:6]}", is_staff=True)
    marketer.groups.add(Group.objects.get(name="Marketer"))
    variant = notice_variant(make_campaign(marketer))
    client.force_login(marketer)
    page = client.get(url("stepvariant_change", variant.pk))
    inapp = copy_prefix(page, "inapp")
    response = client.post(
        url("stepvariant_change", variant.pk),
        post_data(page, **{f"{inapp}-body": "Hi {{ user.password }}"}),
    )
    assert response.status_code == 200
    [error] = field_errors(response, inapp, "body")
    assert error == "Line 1: user has no 'password'; it has first_name, last_name, locale, name"
    assert VariantTemplate.objects.get(variant=variant, channel="inapp").body == (
        "Hi {{ user.first_name }}, {{ headline }}"
    )
