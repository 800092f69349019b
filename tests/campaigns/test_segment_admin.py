"""The segment admin: Marketers build rules, see the live count and a sample, import lists from
CSV (preview, then confirm) and edit the thresholds; Support can look but not change."""

from __future__ import annotations

import importlib
import re
from datetime import timedelta
from decimal import Decimal

import pytest
from django.contrib.auth.models import Group, Permission
from django.core.files.uploadedfile import SimpleUploadedFile
from django.urls import reverse
from django.utils import timezone

from campaigns.models import Activity, AudienceThresholds, Segment, SegmentMember, SpendTier
from tests.campaigns.factories import SegmentFactory, SegmentMemberFactory
from tests.factories import UserFactory

ROLES = importlib.import_module("campaigns.migrations.0003_marketing_roles")

pytestmark = pytest.mark.usefixtures("db")


# --- Roles ------------------------------------------------------------------------------------


def role(name: str, app_label: str, codenames: list[str]) -> Group:
    """The group as the migration makes it (re-granted if a transactional test flushed it)."""
    group, _ = Group.objects.get_or_create(name=name)
    group.permissions.add(
        *Permission.objects.filter(content_type__app_label=app_label, codename__in=codenames)
    )
    return group


@pytest.fixture
def marketer():
    user = UserFactory(username="marketer", is_staff=True)
    user.groups.add(role("Marketer", "campaigns", ROLES.marketer_codenames()))
    return user


@pytest.fixture
def support():
    views = [f"view_{m}" for m in ROLES.EDITABLE + ROLES.VIEW_ONLY if m != "segmentmember"]
    user = UserFactory(username="support-agent", is_staff=True)
    user.groups.add(role("Support", "campaigns", views))
    return user


@pytest.fixture
def marketer_client(client, marketer):
    client.force_login(marketer)
    return client


@pytest.fixture
def support_client(client, support):
    client.force_login(support)
    return client


def url(name: str, *args: object) -> str:
    return reverse(f"admin:campaigns_{name}", args=args)


def form_data(segment: Segment | None = None, **overrides: object) -> dict[str, object]:
    data: dict[str, object] = {
        "name": segment.name if segment else "Spring whales",
        "description": "",
        "spend_tiers": [],
        "activity": [],
        "tags_any": "",
        "tags_all": "",
        "locales": "",
        "time_zones": "",
        "_save": "Save",
    }
    data.update(overrides)
    return data


# --- The change page: rules, count, sample ----------------------------------------------------


def test_marketer_sees_the_live_count_and_a_sample_of_matching_users(marketer_client):
    whales = {UserFactory(yearly_spend=Decimal("9000"), email=f"w{i}@x.com").pk for i in range(3)}
    UserFactory(yearly_spend=Decimal("10"))
    UserFactory(yearly_spend=Decimal("9000"), is_active=False)
    segment = SegmentFactory(spend_tiers=[SpendTier.WHALE])

    response = marketer_client.get(url("segment_change", segment.pk))

    assert response.status_code == 200
    audience = response.context["audience"]
    assert audience["count_text"] == "3"
    assert {row.pk for row in audience["sample"]} == whales
    html = response.content.decode()
    assert re.search(r'id="audience-count"\s+data-url="[^"]+/count/">3<', html)
    assert html.count('class="sample-user"') == 3
    assert "w*@x.com" in html  # emails are masked in the sample
    assert "w0@x.com" not in html


def test_change_page_shows_rule_checkboxes_with_the_current_edges(marketer_client):
    thresholds = AudienceThresholds.current()
    thresholds.whale_min_spend = Decimal("8000")
    thresholds.save()
    segment = SegmentFactory(spend_tiers=[SpendTier.WHALE], time_zones=["Asia/Shanghai"])

    html = marketer_client.get(url("segment_change", segment.pk)).content.decode()

    assert re.search(r'type="checkbox" name="spend_tiers" value="whale"[^>]*checked', html)
    assert 'type="checkbox" name="activity" value="churned"' in html
    assert "Whale: over 8,000 a year" in html
    assert 'name="time_zones" value="Asia/Shanghai"' in html


def test_add_page_renders_for_a_marketer(marketer_client):
    response = marketer_client.get(url("segment_add"))
    assert response.status_code == 200
    assert response.context["audience"]["count_url"] == url("segment_count_new")


def test_marketer_saves_rules_from_checkboxes_and_comma_separated_lists(marketer_client):
    response = marketer_client.post(
        url("segment_add"),
        form_data(
            spend_tiers=[SpendTier.WHALE, SpendTier.DOLPHIN],
            activity=[Activity.CHURNED],
            tags_any="golf, tea , golf,",
            tags_all="travel",
            locales="en, zh_Hans",
            time_zones="asia/shanghai, Europe/Berlin",
            use_member_list="on",
        ),
    )

    assert response.status_code == 302, response.context["adminform"].form.errors
    segment = Segment.objects.get(name="Spring whales")
    assert segment.spend_tiers == ["whale", "dolphin"]
    assert segment.activity == ["churned"]
    assert segment.tags_any == ["golf", "tea"]
    assert segment.tags_all == ["travel"]
    assert segment.locales == ["en", "zh-hans"]
    assert segment.time_zones == ["Asia/Shanghai", "Europe/Berlin"]
    assert segment.use_member_list is True


def test_unknown_time_zone_is_rejected_with_a_message(marketer_client):
    segment = SegmentFactory(time_zones=["Asia/Shanghai"])

    response = marketer_client.post(
        url("segment_change", segment.pk),
        form_data(segment, time_zones="Asia/Shanghai, Mars/Olympus_Mons"),
    )

    assert response.status_code == 200
    errors = response.context["adminform"].form.errors
    assert errors["time_zones"] == ["“Mars/Olympus_Mons” is not a time zone, e.g. Asia/Shanghai"]
    segment.refresh_from_db()
    assert segment.time_zones == ["Asia/Shanghai"]


def test_malformed_locale_is_rejected_with_a_message(marketer_client):
    response = marketer_client.post(url("segment_add"), form_data(locales="en, english!"))
    assert response.status_code == 200
    assert response.context["adminform"].form.errors["locales"] == [
        "“english!” is not a locale, e.g. en or zh-hans"
    ]
    assert not Segment.objects.exists()


def test_segment_list_summarises_the_rules(marketer_client):
    SegmentFactory(name="Golfers", tags_any=["golf"], locales=["en"])
    html = marketer_client.get(url("segment_changelist")).content.decode()
    assert "any of golf · en" in html


# --- The count endpoint -----------------------------------------------------------------------


def test_count_endpoint_counts_the_saved_rules(marketer_client):
    UserFactory(locale="pt")
    UserFactory(locale="pt")
    UserFactory(locale="de")
    segment = SegmentFactory(locales=["pt"])

    response = marketer_client.get(url("segment_count", segment.pk))

    assert response.status_code == 200
    assert response.json() == {"count": 2, "count_text": "2", "warnings": []}


def test_count_endpoint_counts_the_unsaved_rules_of_the_form(marketer_client):
    UserFactory(locale="en")
    UserFactory(locale="de", time_zone="Europe/Berlin")
    segment = SegmentFactory(locales=["en"])

    response = marketer_client.get(
        url("segment_count", segment.pk),
        {"rules": "1", "locales": "de", "time_zones": "europe/berlin"},
    )

    assert response.json()["count"] == 1
    segment.refresh_from_db()
    assert segment.locales == ["en"]  # counting saved nothing


def test_count_endpoint_of_the_add_page_counts_rules_without_a_segment(marketer_client):
    UserFactory(yearly_spend=Decimal("9000"))
    UserFactory(yearly_spend=Decimal("1"))
    response = marketer_client.get(url("segment_count_new"), {"rules": "1", "spend_tiers": "whale"})
    assert response.json()["count"] == 1


def test_points_rule_is_saved_and_counted_from_the_form(marketer_client):
    soon = timezone.now() + timedelta(days=2)
    UserFactory(points_balance=300, points_expire_at=soon)
    UserFactory(points_balance=300, points_expire_at=soon + timedelta(days=30))
    segment = SegmentFactory(name="Points lapsing")

    counted = marketer_client.get(
        url("segment_count", segment.pk), {"rules": "1", "points_expiring_within_days": "7"}
    )
    refused = marketer_client.get(
        url("segment_count", segment.pk), {"rules": "1", "points_expiring_within_days": "-1"}
    )
    saved = marketer_client.post(
        url("segment_change", segment.pk),
        form_data(segment, points_expiring_within_days="7"),
    )

    assert counted.json()["count"] == 1
    assert refused.status_code == 400
    assert "points_expiring_within_days" in refused.json()["errors"]
    assert saved.status_code == 302
    segment.refresh_from_db()
    assert segment.points_expiring_within_days == 7


def test_count_endpoint_reports_invalid_rules_with_a_message(marketer_client):
    response = marketer_client.get(
        url("segment_count_new"), {"rules": "1", "time_zones": "Nowhere/Land"}
    )
    assert response.status_code == 400
    assert response.json() == {
        "errors": {"time_zones": ["“Nowhere/Land” is not a time zone, e.g. Asia/Shanghai"]}
    }


# --- Support: view only -----------------------------------------------------------------------


def test_support_sees_the_segment_and_its_count_but_no_import(support_client):
    UserFactory(locale="pt")
    segment = SegmentFactory(locales=["pt"])

    response = support_client.get(url("segment_change", segment.pk))

    assert response.status_code == 200
    assert response.context["audience"]["count_text"] == "1"
    assert "import_url" not in response.context
    assert "Import members" not in response.content.decode()
    assert support_client.get(url("segment_count", segment.pk)).json()["count"] == 1


def test_support_gets_403_on_every_change(support_client):
    segment = SegmentFactory(name="Golfers", tags_any=["golf"])
    csv_file = SimpleUploadedFile("list.csv", b"email\na@example.com\n")

    assert (
        support_client.post(url("segment_change", segment.pk), form_data(segment)).status_code
        == 403
    )
    assert support_client.post(url("segment_add"), form_data()).status_code == 403
    assert support_client.get(url("segment_import", segment.pk)).status_code == 403
    assert (
        support_client.post(url("segment_import", segment.pk), {"file": csv_file}).status_code
        == 403
    )
    assert support_client.get(url("segmentmember_changelist")).status_code == 403
    segment.refresh_from_db()
    assert segment.tags_any == ["golf"]
    assert not SegmentMember.objects.exists()


# --- CSV import through the admin -------------------------------------------------------------


def upload(client, segment: Segment, content: bytes):
    return client.post(
        url("segment_import", segment.pk),
        {"file": SimpleUploadedFile("list.csv", content, content_type="text/csv")},
    )


def confirm_token(response) -> str:
    match = re.search(r'name="token" value="([^"]+)"', response.content.decode())
    assert match, "the preview has no confirm form"
    return match.group(1)


def test_import_page_renders_the_upload_form_for_a_marketer(marketer_client):
    segment = SegmentFactory()
    response = marketer_client.get(url("segment_import", segment.pk))
    assert response.status_code == 200
    assert 'id="import-upload"' in response.content.decode()


def test_upload_previews_every_row_error_and_writes_nothing(marketer_client):
    good, asleep = UserFactory(), UserFactory(is_active=False)
    segment = SegmentFactory(use_member_list=True)
    content = (
        f"user_id,name\n{good.pk},Good\n{good.pk + 999},Nobody\nabc,Typo\n"
        f"{'9' * 5000},Pasted a hash\n٣,Arabic-Indic three\n{good.pk},Again\n{asleep.pk},Asleep\n"
    ).encode()

    response = upload(marketer_client, segment, content)

    assert response.status_code == 200
    html = response.content.decode()
    errors = dict(re.findall(r'class="import-error" data-line="(\d+)" data-problem="(\w+)"', html))
    assert errors == {
        "3": "unknown_user",
        "4": "malformed",
        "5": "malformed",  # int() would raise on 5,000 digits
        "6": "malformed",
        "7": "duplicate_row",
        "8": "inactive_user",
    }
    assert re.findall(r'class="import-add" data-line="(\d+)" data-user-id="(\d+)"', html) == [
        ("2", str(good.pk))
    ]
    assert "Nothing has been saved yet" in html
    assert not SegmentMember.objects.exists()


def test_a_marketers_file_with_emails_or_phones_is_refused_before_any_lookup(marketer_client):
    """Resolving an address would tell a marketer who has an account ("user 9" against
    "unknown user"): a file with such a column is refused whatever its rows say."""
    UserFactory(email="good@example.com")
    segment = SegmentFactory()
    for header in ("email", "phone", "user_id,email", "name,phone"):
        response = upload(marketer_client, segment, f"{header}\ngood@example.com\n".encode())
        html = response.content.decode()
        assert response.status_code == 200
        assert "importing by email or phone needs permission to see customers&#x27;" in html
        assert 'id="import-errors"' not in html and 'id="import-to-add"' not in html
    page = marketer_client.get(url("segment_import", segment.pk)).content.decode()
    assert "names a column <code>user_id</code>, one customer" in page


def test_an_admin_imports_by_email_and_phone_with_every_row_error(admin_client):
    good = UserFactory(email="good@example.com")
    UserFactory(email="asleep@example.com", is_active=False)
    segment = SegmentFactory(use_member_list=True)
    content = (
        b"email,phone\n"
        b"good@example.com,\n"
        b"nobody@example.com,\n"
        b"not-an-email,\n"
        b",0800 CALL ME\n"
        b"good@example.com,\n"
        b"asleep@example.com,\n"
    )

    response = upload(admin_client, segment, content)

    assert response.status_code == 200
    html = response.content.decode()
    errors = dict(re.findall(r'class="import-error" data-line="(\d+)" data-problem="(\w+)"', html))
    assert errors == {
        "3": "unknown_user",
        "4": "malformed",
        "5": "malformed",
        "6": "duplicate_row",
        "7": "inactive_user",
    }
    assert re.findall(r'class="import-add" data-line="(\d+)" data-user-id="(\d+)"', html) == [
        ("2", str(good.pk))
    ]
    assert "Nothing has been saved yet" in html
    assert not SegmentMember.objects.exists()


def test_confirm_adds_the_previewed_members_once(marketer_client):
    users = [UserFactory() for _ in range(3)]
    segment = SegmentFactory(use_member_list=True)
    content = ("user_id\n" + "\n".join(str(user.pk) for user in users) + "\n").encode()

    token = confirm_token(upload(marketer_client, segment, content))
    response = marketer_client.post(url("segment_import", segment.pk), {"token": token})

    assert response.status_code == 302
    assert response.url == url("segment_change", segment.pk)
    assert set(segment.members.values_list("user_id", flat=True)) == {u.pk for u in users}

    again = upload(marketer_client, segment, content)
    assert "No new members to add" in again.content.decode()
    # Confirming the first preview a second time adds nobody twice either.
    replay = marketer_client.post(url("segment_import", segment.pk), {"token": token}, follow=True)
    assert "Added 0 members; 3 were already on the list." in replay.content.decode()
    assert segment.members.count() == 3


def test_confirm_refuses_a_tampered_or_foreign_preview(marketer_client):
    user = UserFactory()
    segment, other = SegmentFactory(), SegmentFactory()
    token = confirm_token(upload(marketer_client, other, f"user_id\n{user.pk}\n".encode()))

    foreign = marketer_client.post(url("segment_import", segment.pk), {"token": token}, follow=True)
    tampered = marketer_client.post(
        url("segment_import", segment.pk), {"token": token[:-2] + "xx"}, follow=True
    )

    assert "This preview was made for another segment." in foreign.content.decode()
    assert "The preview could not be read" in tampered.content.decode()
    assert not SegmentMember.objects.exists()


def test_upload_without_an_identifier_column_shows_the_problem(marketer_client, admin_client):
    segment = SegmentFactory()
    response = upload(marketer_client, segment, b"name\nAlice\n")
    assert response.status_code == 200
    assert "must name a column user_id; found name" in response.content.decode()
    # admin_client (pytest-django's): a superuser, who may see contact details.
    response = upload(admin_client, segment, b"name\nAlice\n")
    assert "must name a column user_id, email or phone; found name" in response.content.decode()


def test_a_marketer_searches_the_members_by_id_only(marketer_client):
    """A search by substring of an address shown masked rebuilds it one letter at a time."""
    member = SegmentMemberFactory(user=UserFactory(username="listed", email="listed@example.com"))
    changelist = url("segmentmember_changelist")
    for query in (
        "listed",
        "l",
        "@example.com",
        member.user.notifier_recipient.phone,
        f"{member.user_id}0",
        "²",
    ):
        page = marketer_client.get(changelist, {"q": query}).content.decode()
        assert f"#{member.user_id} " not in page, query
    page = marketer_client.get(changelist, {"q": f" {member.user_id} "}).content.decode()
    assert f"#{member.user_id} l*****@example.com" in page


def test_an_admin_searches_the_members_by_email_phone_and_username(admin_client):
    member = SegmentMemberFactory(user=UserFactory(username="listed", email="listed@example.com"))
    for query in ("listed@example.com", "sted@", member.user.notifier_recipient.phone, "listed"):
        page = admin_client.get(url("segmentmember_changelist"), {"q": query}).content.decode()
        assert f"#{member.user_id} listed@example.com" in page, query


def test_members_list_renders_for_a_marketer_with_emails_masked(marketer_client):
    member = SegmentMemberFactory(user=UserFactory(email="listed@example.com"))
    response = marketer_client.get(
        url("segmentmember_changelist"), {"segment__id__exact": member.segment_id}
    )
    assert response.status_code == 200
    page = response.content.decode()
    assert f"#{member.user_id} l*****@example.com" in page
    assert "listed@example.com" not in page


# --- Thresholds -------------------------------------------------------------------------------


def threshold_data(**overrides: object) -> dict[str, object]:
    return {
        "whale_min_spend": "5000",
        "dolphin_min_spend": "500",
        "active_within_days": "30",
        "dormant_within_days": "90",
        **overrides,
    }


def test_thresholds_list_opens_the_single_row(marketer_client):
    response = marketer_client.get(url("audiencethresholds_changelist"))
    assert response.status_code == 302
    assert response.url == url("audiencethresholds_change", AudienceThresholds.current().pk)
    assert AudienceThresholds.objects.count() == 1


def test_thresholds_cannot_be_added_or_deleted(marketer_client):
    thresholds = AudienceThresholds.current()
    assert marketer_client.get(url("audiencethresholds_add")).status_code == 403
    assert marketer_client.get(url("audiencethresholds_delete", thresholds.pk)).status_code == 403


def test_marketer_edits_the_thresholds_and_membership_follows(marketer_client):
    thresholds = AudienceThresholds.current()
    UserFactory(yearly_spend=Decimal("3000"))
    segment = SegmentFactory(spend_tiers=[SpendTier.WHALE])

    response = marketer_client.post(
        url("audiencethresholds_change", thresholds.pk), threshold_data(whale_min_spend="2000")
    )

    assert response.status_code == 302
    thresholds.refresh_from_db()
    assert thresholds.whale_min_spend == Decimal("2000")
    assert marketer_client.get(url("segment_count", segment.pk)).json()["count"] == 1


def test_thresholds_with_crossed_edges_are_rejected(marketer_client):
    thresholds = AudienceThresholds.current()
    response = marketer_client.post(
        url("audiencethresholds_change", thresholds.pk),
        threshold_data(dolphin_min_spend="6000", dormant_within_days="10"),
    )
    assert response.status_code == 200
    errors = response.context["adminform"].form.errors
    assert errors["dolphin_min_spend"] == ["Must be below the whale line."]
    assert errors["dormant_within_days"] == ["Must be more days than “active”."]
    thresholds.refresh_from_db()
    assert thresholds.dolphin_min_spend == Decimal("500")


def test_support_views_the_thresholds_but_gets_403_on_post(support_client):
    thresholds = AudienceThresholds.current()
    assert support_client.get(url("audiencethresholds_change", thresholds.pk)).status_code == 200
    response = support_client.post(
        url("audiencethresholds_change", thresholds.pk), threshold_data(whale_min_spend="1")
    )
    assert response.status_code == 403
    thresholds.refresh_from_db()
    assert thresholds.whale_min_spend == Decimal("5000")
