"""Marketers learn nothing about a customer they may not see: the admin as an oracle.

A Marketer and a Marketing lead, logged in through the real admin login, try to recover a
customer's hidden email address and phone number through everything they can reach: the
changelist searches (the issue's one-character extension attack included), the list filters
and lookups in the query string, sortable columns, the autocomplete view for every relation,
the segment count and sample, the campaign preview's customer box, "send test to me" and the
CSV import. Each probe is made twice, once with the customer's real address and once with an
address nobody has, and the two answers must not differ in anything but the echoed query.
Support and Admin, who may see contact details, still find the customer by email and phone.
"""

from __future__ import annotations

import html
import json
import random
import re
import string
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from urllib.parse import quote, quote_plus

import pytest
from django.apps import apps
from django.contrib import admin
from django.contrib.auth.models import Group
from django.core.exceptions import FieldDoesNotExist
from django.core.files.uploadedfile import SimpleUploadedFile
from django.db import models
from django.http import HttpResponse
from django.test import Client, RequestFactory
from django.urls import reverse

from campaigns.admin import campaigns as campaign_admin
from campaigns.admin import segments as segment_admin
from campaigns.models import Campaign, Segment, SegmentMember, VariantTemplate
from campaigns.services import segments as segment_services
from campaigns.services.lifecycle import campaign_create
from notifier.models import NotificationType, SuppressedAddress, User
from notifier.roles import roles_sync
from tests.factories import UserFactory

pytestmark = pytest.mark.django_db

MKT, LEAD, SUP, ADM = "Marketer", "Marketing lead", "Support", "Admin"
MARKETERS = (MKT, LEAD)
PASSWORD = "correct horse battery staple"

# The customer signed up with their address as username and gave no name, so a name that
# falls back to the username would print the address too.
EMAIL = "zoe.quinn@example.com"
PHONE = "+8615912345678"
# Addresses nobody has, of the same shape.
NO_EMAIL = "kai.moore@example.com"
NO_PHONE = "+8615987654321"
EMAIL_ALPHABET = string.ascii_lowercase + "._-@"  # no digits: they belong to the phone attack
PHONE_ALPHABET = "+0123456789"


@dataclass
class World:
    clients: dict[str, Client]
    customer: User
    everyone: Segment  # no rules: every active user, the customer included
    golfers: Segment  # a rule the customer does not match
    vip: Segment  # an imported list with the customer on it
    campaign: Campaign  # for everyone
    golf_campaign: Campaign  # for golfers only


def log_in(who: str) -> Client:
    """A staff member in the role's group, logged in through the admin's login form."""
    user = UserFactory(
        username=f"{who.lower().replace(' ', '-')}-{uuid.uuid4().hex[:6]}", is_staff=True, phone=""
    )
    user.set_password(PASSWORD)
    user.save()
    user.groups.add(Group.objects.get(name=who))
    client = Client()
    response = client.post(
        reverse("admin:login"), {"username": user.username, "password": PASSWORD}
    )
    assert response.status_code == 302, f"{who} could not log in"
    return client


def campaign_for(segment: Segment, name: str) -> Campaign:
    campaign = campaign_create(
        name=name,
        category=NotificationType.objects.get(pk="promo.flash_sale"),
        created_by=None,
        segment=segment,
        event_at=datetime.now(UTC) + timedelta(days=10),
        channels=["inapp"],
        variables={"headline": "50% off"},
        plan=[("Notice", -3 * 24 * 60)],
    )
    variant = campaign.steps.get().variants.get()
    VariantTemplate.objects.create(
        variant=variant,
        channel="inapp",
        locale="",
        title="{{ headline }}",
        body="Hi {{ user.name }} ({{ user.first_name }} {{ user.last_name }}), {{ headline }}",
        link="https://shop.example.com/sale",
    )
    return campaign


@pytest.fixture
def world(monkeypatch) -> World:
    roles_sync()
    # The preview and the segment page sample customers from a random start; a fixed one
    # makes two answers comparable (the randomness does not depend on the customer).
    for module in (campaign_admin, segment_admin):
        monkeypatch.setattr(
            module,
            "segment_sample",
            lambda segment, n=20, **kw: segment_services.segment_sample(
                segment, n, rng=random.Random(7), **{k: v for k, v in kw.items() if k != "rng"}
            ),
        )
    customer = UserFactory(
        username=EMAIL, email=EMAIL, phone=PHONE, first_name="", last_name="", locale="en"
    )
    everyone = Segment.objects.create(name="Everyone")
    golfers = Segment.objects.create(name="Golfers", tags_any=["golf"])
    vip = Segment.objects.create(name="VIP list", use_member_list=True)
    SegmentMember.objects.create(segment=vip, user=customer)
    return World(
        clients={who: log_in(who) for who in (MKT, LEAD, SUP, ADM)},
        customer=customer,
        everyone=everyone,
        golfers=golfers,
        vip=vip,
        campaign=campaign_for(everyone, "Winter sale"),
        golf_campaign=campaign_for(golfers, "Golf days"),
    )


# --- Comparing two answers ------------------------------------------------------------------------

_TOKENS = re.compile(r'(name="(?:csrfmiddlewaretoken|token|click)" value=")[^"]*(")')


# Right after a URL escape (once or twice) or a JSON one ("\u201c1234"), or after no letter,
# digit or point.
_ALONE_BEFORE = (
    r"(?:(?<=%[0-9A-Fa-f]{2})|(?<=%25[0-9A-Fa-f]{2})|(?<=\\u[0-9A-Fa-f]{4})|(?<![0-9A-Za-z.]))"
)


def answer(response: HttpResponse, query: str) -> str:
    """What an attacker reads in a response, with the query's own echo and the per-request
    tokens (CSRF, the import's signed confirmation) taken out."""
    body = response.content.decode(errors="replace")
    text = f"{response.status_code} {response.get('Location', '')}\n{body}"
    text = _TOKENS.sub(r"\1-\2", text)
    text = re.sub(r"message #\d+", "message #N", text)  # a test send's new message id
    for form in sorted(echoes(query), key=len, reverse=True):
        if query.isdigit():
            # A customer's id is a number that may also be inside the page's own numbers
            # ("11px", "#797979", "1.79"), which are not its echo: only a whole number counts,
            # one standing alone or right after an escape (_ALONE_BEFORE).
            text = re.sub(_ALONE_BEFORE + re.escape(form) + r"(?![0-9A-Za-z])", "«query»", text)
        else:
            text = text.replace(form, "«query»")
    return text


def echoes(query: str) -> set[str]:
    """The ways a page writes back what it was asked: as is, escaped, URL-encoded (twice, in
    the admin's "_changelist_filters"), in JSON."""
    once = {html.escape(query), quote_plus(query), quote(query), json.dumps(query)[1:-1]}
    twice = {encode(form) for form in once for encode in (quote, quote_plus)}
    return {query, *once, *twice, *(html.escape(form) for form in twice)}


def differences(
    probe: Callable[[str], HttpResponse], pairs: list[tuple[str, str]]
) -> list[tuple[str, str]]:
    """The (real, unknown) pairs whose answers differ: each is a bit about the customer."""
    return [
        (real, unknown)
        for real, unknown in pairs
        if answer(probe(real), real) != answer(probe(unknown), unknown)
    ]


# The customer's email (which is also their username), phone and parts of each, with
# same-shaped values nobody has.
PAIRS = [
    (EMAIL, NO_EMAIL),
    (EMAIL.upper(), NO_EMAIL.upper()),
    (EMAIL.split("@")[0], NO_EMAIL.split("@")[0]),
    (EMAIL[:3], NO_EMAIL[:3]),
    (PHONE, NO_PHONE),
    (PHONE[3:], NO_PHONE[3:]),
    (PHONE[6:10], NO_PHONE[6:10]),
]
# Fewer where every relation of every model is tried.
SOME_PAIRS = [PAIRS[0], PAIRS[3], PAIRS[4], PAIRS[6]]


def rebuild(matches: Callable[[str], bool], alphabet: str, start: str = "") -> str:
    """The attack of the issue: extend a guess one character at a time, to the right and then
    to the left, keeping each extension the search still matches."""
    found = start
    for to_the_right in (True, False):
        grown = True
        while grown and len(found) < 64:
            guesses = (found + char if to_the_right else char + found for char in alphabet)
            longer = next((guess for guess in guesses if matches(guess)), None)
            grown = longer is not None
            found = longer or found
    return found


def members_url(world: World, **params: str) -> str:
    query = "&".join(f"{k}={quote_plus(v)}" for k, v in params.items())
    return (
        reverse("admin:campaigns_segmentmember_changelist")
        + f"?segment__id__exact={world.vip.pk}&{query}"
    )


# --- Searches -----------------------------------------------------------------------------------


@pytest.mark.parametrize("who", MARKETERS)
def test_the_member_search_does_not_rebuild_a_hidden_address_one_character_at_a_time(world, who):
    client, customer = world.clients[who], world.customer
    requests = 0

    def listed(guess: str) -> bool:
        nonlocal requests
        requests += 1
        page = client.get(members_url(world, q=guess)).content.decode()
        return f"#{customer.pk} " in page

    # What the list shows anyway: the first letter and the domain of the email.
    masked = client.get(members_url(world)).content.decode()
    assert f"#{customer.pk} z********@example.com" in masked

    email = rebuild(listed, EMAIL_ALPHABET, start="z")
    phone = rebuild(listed, PHONE_ALPHABET)

    assert email != EMAIL and EMAIL.split("@")[0] not in email, f"rebuilt {email} in {requests}"
    # (Digits alone are searched as an id: the guess may grow into the customer's id.)
    assert PHONE[4:] not in phone, f"rebuilt {phone} in {requests} requests"
    # Searching by the exact id is what these roles have instead.
    assert listed(str(customer.pk))
    assert not listed(f"{customer.pk}0")


@pytest.mark.parametrize("who", MARKETERS)
def test_no_changelist_search_answers_differently_for_a_customers_address(world, who):
    client = world.clients[who]
    leaks = {}
    for model in admin.site._registry:
        changelist = reverse(f"admin:{model._meta.app_label}_{model._meta.model_name}_changelist")
        found = differences(lambda q, url=changelist: client.get(url, {"q": q}), SOME_PAIRS)
        if found:
            leaks[model._meta.label] = found
    assert not leaks, f"{who}: searches tell a customer's address from an unknown one: {leaks}"


@pytest.mark.parametrize("who", MARKETERS)
def test_no_query_string_filter_on_the_member_list_answers_for_an_address(world, who):
    client = world.clients[who]
    lookups = [
        "user__email",
        "user__email__startswith",
        "user__email__icontains",
        "user__email__regex",
        "user__phone",
        "user__phone__startswith",
        "user__username",
        "user__username__istartswith",
    ]
    leaks = {
        lookup: found
        for lookup in lookups
        if (
            found := differences(
                lambda q, lookup=lookup: client.get(members_url(world, **{lookup: q})), PAIRS
            )
        )
    }
    assert not leaks, f"{who}: {leaks}"


@pytest.mark.parametrize("who", MARKETERS)
def test_the_autocomplete_view_answers_alike_for_every_relation(world, who):
    """Django's autocomplete searches the related model's admin for any relation of any model;
    only its search fields and view permission stand between a marketer and the users."""
    client = world.clients[who]
    url = reverse("admin:autocomplete")
    leaks, tried = {}, 0
    for model in apps.get_models():
        for field in model._meta.get_fields():
            if not (field.is_relation and field.concrete and field.related_model):
                continue
            params = {
                "app_label": model._meta.app_label,
                "model_name": model._meta.model_name,
                "field_name": field.name,
            }
            tried += 1
            found = differences(
                lambda q, params=params: client.get(url, {**params, "term": q}), SOME_PAIRS
            )
            if found:
                leaks[f"{model._meta.label}.{field.name}"] = found
    assert tried > 20
    assert not leaks, f"{who}: {leaks}"


# --- The segment page: count and sample --------------------------------------------------------


@pytest.mark.parametrize("who", MARKETERS)
def test_the_segment_count_and_sample_show_no_address(world, who):
    client = world.clients[who]
    page = client.get(reverse("admin:campaigns_segment_change", args=[world.everyone.pk]))
    body = page.content.decode()
    assert f'data-user-id="{world.customer.pk}"' in body  # the customer is in the sample
    assert "z********@example.com" in body  # with the email masked
    assert EMAIL not in body and PHONE not in body  # and no name that is the address

    count = reverse("admin:campaigns_segment_count", args=[world.everyone.pk])
    rules = ["tags_any", "tags_all", "locales", "time_zones"]
    leaks = {
        rule: found
        for rule in rules
        if (
            found := differences(
                lambda q, rule=rule: client.get(count, {"rules": "1", rule: q}), PAIRS
            )
        )
    }
    assert not leaks, f"{who}: {leaks}"


# --- The campaign preview and "send test to me" -------------------------------------------------


def preview_url(campaign: Campaign) -> str:
    return reverse("admin:campaigns_campaign_preview", args=[campaign.pk])


@pytest.mark.parametrize("who", MARKETERS)
def test_the_preview_box_answers_alike_for_a_customers_address_and_an_unknown_one(world, who):
    client = world.clients[who]
    for campaign in (world.campaign, world.golf_campaign):
        url = preview_url(campaign)
        found = differences(lambda q, url=url: client.get(url, {"user": q}), PAIRS)
        assert not found, f"{who}, {campaign}: the preview box tells {found}"


@pytest.mark.parametrize("who", MARKETERS)
def test_the_preview_box_answers_alike_for_an_id_outside_the_segment_and_a_missing_id(world, who):
    client, customer = world.clients[who], world.customer
    missing = str(User.objects.order_by("-pk").values_list("pk", flat=True)[0] + 1000)
    found = differences(
        lambda q: client.get(preview_url(world.golf_campaign), {"user": q}),
        [(str(customer.pk), missing)],
    )
    assert not found
    # Inside the segment the id is how a marketer chooses the customer: the name and masked
    # email are shown, never the address, even where the copy says {{ user.name }}.
    page = client.get(preview_url(world.campaign), {"user": str(customer.pk)}).content.decode()
    assert f"user #{customer.pk}</strong>" in page
    assert "z********@example.com" in page
    assert EMAIL not in page and PHONE not in page


@pytest.mark.parametrize("who", MARKETERS)
def test_send_test_answers_alike_for_a_customers_address_and_an_unknown_one(world, who):
    client = world.clients[who]
    variant = world.campaign.steps.get().variants.get()
    url = reverse("admin:campaigns_campaign_test", args=[world.campaign.pk])

    def send_test(query: str) -> HttpResponse:
        return client.post(url, {"variant": variant.pk, "user": query}, follow=True)

    found = differences(send_test, PAIRS)
    assert not found, f"{who}: send test tells {found}"


@pytest.mark.parametrize("who", MARKETERS)
def test_the_live_preview_box_answers_alike_for_a_customers_address_and_an_unknown_one(world, who):
    """The variant editor's live preview takes the same box as the preview page."""
    client = world.clients[who]
    variant = world.golf_campaign.steps.get().variants.get()
    url = reverse("admin:campaigns_stepvariant_live_preview", args=[variant.pk])
    found = differences(lambda q: client.post(url, {"preview_user": q}), PAIRS)
    assert not found, f"{who}: the live preview tells {found}"


@pytest.mark.parametrize("who", MARKETERS)
def test_the_seed_list_answers_alike_for_a_customers_address_and_an_unknown_one(world, who):
    """Only staff may be seeds for a marketer: a customer's address reads like nobody's."""
    client = world.clients[who]
    url = reverse("admin:campaigns_campaign_change", args=[world.campaign.pk])

    def seeds(query: str) -> str:
        response = client.post(url, {"name": world.campaign.name, "seed_list": query})
        form = response.context["adminform"].form if response.context else None
        return str(form.errors.get("seed_list")).replace(query, "«query»") if form else ""

    assert "no staff member has it" in seeds(EMAIL)
    assert all(seeds(real) == seeds(unknown) for real, unknown in PAIRS)


# --- The CSV import -----------------------------------------------------------------------------


def upload(client: Client, segment: Segment, content: str) -> HttpResponse:
    return client.post(
        reverse("admin:campaigns_segment_import", args=[segment.pk]),
        {"file": SimpleUploadedFile("list.csv", content.encode(), content_type="text/csv")},
    )


@pytest.mark.parametrize("who", MARKETERS)
def test_the_csv_import_takes_ids_only_and_answers_alike_for_addresses(world, who):
    client, customer = world.clients[who], world.customer
    files = [
        lambda q: f"email\n{q}\n",
        lambda q: f"phone\n{q}\n",
        lambda q: f"user_id,email\n,{q}\n",
        lambda q: f"name,email,phone\nZoe,{q},{q}\n",
    ]
    for file in files:
        found = differences(lambda q, file=file: upload(client, world.golfers, file(q)), PAIRS)
        assert not found, f"{who}: the import of {file('…')!r} tells {found}"
    refused = upload(client, world.golfers, f"email\n{EMAIL}\n").content.decode()
    assert "importing by email or phone needs permission" in refused
    assert 'id="import-to-add"' not in refused and 'id="import-errors"' not in refused

    by_id = upload(client, world.golfers, f"user_id\n{customer.pk}\n").content.decode()
    assert f'data-user-id="{customer.pk}"' in by_id
    assert EMAIL not in by_id and PHONE not in by_id


# --- Every column, filter and search field these roles are given -----------------------------

CONTACT_FIELDS = {
    (User, "email"),
    (User, "phone"),
    (User, "username"),
    (SuppressedAddress, "address"),
}


def contact_field(model: type[models.Model], path: str) -> str | None:
    """The contact field `path` ends on ("user__email" on a member -> "User.email"), if any."""
    for part in path.lstrip("^=@-").split("__"):
        try:
            field = model._meta.get_field("id" if part == "pk" else part)
        except FieldDoesNotExist:  # a lookup ("startswith") or a transform, or no field at all
            return None
        if (model, field.name) in CONTACT_FIELDS:
            return f"{model.__name__}.{field.name}"
        if not field.is_relation or field.related_model is None:
            return None
        model = field.related_model
    return None


@pytest.mark.parametrize("who", MARKETERS)
def test_no_admin_these_roles_open_searches_filters_or_sorts_on_contact_fields(world, who):
    """The principle, checked on every ModelAdmin (so a new one cannot forget it): a role
    without contact details identifies customers by id only."""
    staff = User.objects.filter(groups__name=who).get()
    request = RequestFactory().get("/admin/")
    request.user = staff
    wrong = []
    opened = 0
    for model, model_admin in admin.site._registry.items():
        if not model_admin.has_view_permission(request):
            continue
        opened += 1
        for path in model_admin.get_search_fields(request):
            if found := contact_field(model, path):
                wrong.append(f"{model.__name__} searches {found}")
        for item in model_admin.get_list_filter(request):
            path = item if isinstance(item, str) else item[0] if isinstance(item, tuple) else ""
            if found := contact_field(model, path):
                wrong.append(f"{model.__name__} filters on {found}")
        sortable = model_admin.get_sortable_by(request)
        for column in model_admin.get_list_display(request):
            if column not in sortable:
                continue
            attr = (
                getattr(model_admin, column, None) or getattr(model, column, None)
                if isinstance(column, str)
                else column
            )
            ordering = getattr(attr, "admin_order_field", None) or (
                column if isinstance(column, str) else None
            )
            for path in [ordering] if isinstance(ordering, str) else []:
                if found := contact_field(model, path):
                    wrong.append(f"{model.__name__} sorts column {column} by {found}")
        for path in model_admin.get_ordering(request) or []:
            if isinstance(path, str) and (found := contact_field(model, path)):
                wrong.append(f"{model.__name__} is ordered by {found}")
    assert opened >= 5
    assert not wrong, f"{who}: " + "; ".join(wrong)


# --- Those who may see contact details still find customers by them ---------------------------


def test_support_and_admin_still_find_a_customer_by_email_and_phone(world):
    customer = world.customer
    users = reverse("admin:notifier_user_changelist")
    for who in (SUP, ADM):
        for query in (EMAIL, PHONE, EMAIL[:6]):
            page = world.clients[who].get(users, {"q": query}).content.decode()
            assert f"/admin/notifier/user/{customer.pk}/change/" in page, (who, query)
        preview = world.clients[who].get(preview_url(world.golf_campaign), {"user": EMAIL})
        assert f"user #{customer.pk}</strong>" in preview.content.decode()

    admin_client = world.clients[ADM]
    for query in (EMAIL, PHONE, "quinn"):
        page = admin_client.get(members_url(world, q=query)).content.decode()
        assert f"#{customer.pk} {EMAIL}" in page, query
    imported = upload(admin_client, world.golfers, f"email,phone\n{EMAIL},\n,{PHONE}\n")
    assert f'data-user-id="{customer.pk}"' in imported.content.decode()
