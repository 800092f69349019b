"""notifier.Recipient: the profile everything about a person lives in, one-to-one with
AUTH_USER_MODEL, created on first use (alone or in bulk), and the migrations that moved the
stand-alone users' fields into it."""

from __future__ import annotations

from datetime import UTC, datetime, time
from decimal import Decimal
from unittest import mock

import pytest
from django.db import connection
from django.db.migrations.executor import MigrationExecutor
from django.test.utils import CaptureQueriesContext

from campaigns.models import Segment
from campaigns.services.segments import segment_count, segment_users, segment_walk
from notifier.models import (
    Recipient,
    User,
    recipient_for,
    recipients_attach,
    recipients_backfill,
    recipients_for,
)
from notifier.models.users import display_name
from tests.factories import UserFactory

NOW = datetime(2026, 3, 1, 12, 0, tzinfo=UTC)


def bare_users(count: int) -> list[User]:
    """Users without a profile, as a host's users are before Notifier is installed
    (bulk_create sends no post_save)."""
    User.objects.bulk_create(
        User(username=f"bare{i}", email=f"Bare{i}@example.com", password="!") for i in range(count)
    )
    return list(User.objects.filter(username__startswith="bare").order_by("pk"))


# --- Created on first use -------------------------------------------------------------------


def test_a_new_user_gets_a_profile_with_their_address(db):
    user = User.objects.create_user(username="ann", email="ann@example.com")
    profile = Recipient.objects.get(user=user)
    assert profile.email == "ann@example.com"
    assert (profile.time_zone, profile.locale, profile.quiet_hours_enabled) == ("UTC", "en", True)


def test_recipient_for_creates_the_profile_on_first_use_then_reads_it(db):
    [user] = bare_users(1)
    assert not Recipient.objects.filter(user=user).exists()

    profile = recipient_for(user)

    assert profile.pk is not None and profile.email == "Bare0@example.com"
    fresh = User.objects.get(pk=user.pk)
    with CaptureQueriesContext(connection) as queries:
        again = recipient_for(fresh)
    assert again.pk == profile.pk
    assert len(queries) == 1  # one read, no insert
    assert Recipient.objects.filter(user=user).count() == 1


def test_recipient_for_reads_the_row_another_worker_created_meanwhile(db):
    """The race: our read finds nothing, another worker inserts, our insert hits the unique
    user_id. The insert ran in a savepoint, so the transaction goes on and reads theirs."""
    [user] = bare_users(1)
    theirs = Recipient.objects.create(user=user, email="theirs@example.com", locale="nb")
    real_get = Recipient.objects.get
    calls = []

    def get_missing_first(*args, **kwargs):
        calls.append(kwargs)
        if len(calls) == 1:
            raise Recipient.DoesNotExist
        return real_get(*args, **kwargs)

    with mock.patch.object(Recipient.objects, "get", side_effect=get_missing_first):
        profile = recipient_for(User.objects.get(pk=user.pk))

    assert len(calls) == 2
    assert profile.pk == theirs.pk and profile.locale == "nb"
    assert Recipient.objects.filter(user=user).count() == 1
    assert User.objects.filter(pk=user.pk).exists()  # the transaction is still usable


def test_an_unsaved_user_has_the_default_profile_and_nothing_is_stored(
    db, django_assert_num_queries
):
    with django_assert_num_queries(0):
        profile = recipient_for(User(username="draft", email="draft@example.com"))
    assert (profile.pk, profile.email, profile.time_zone) == (None, "draft@example.com", "UTC")


def test_recipients_for_creates_the_missing_in_bulk_with_a_fixed_number_of_queries(
    db, django_assert_max_num_queries
):
    users = bare_users(60)
    had = recipient_for(users[0])
    with django_assert_max_num_queries(4):  # profiles read, users read, insert, profiles read
        profiles = recipients_for(u.pk for u in users)
    assert set(profiles) == {u.pk for u in users}
    assert profiles[users[0].pk].pk == had.pk
    assert profiles[users[7].pk].email == "Bare7@example.com"
    assert Recipient.objects.filter(user__in=users).count() == 60
    fresh = list(User.objects.filter(pk__in=[u.pk for u in users]).order_by("pk"))
    with django_assert_max_num_queries(1):  # all there: one read
        recipients_attach(fresh)
    with django_assert_max_num_queries(0):  # then each is at hand
        assert recipient_for(fresh[7]).email == "Bare7@example.com"


def test_recipients_backfill_gives_every_user_without_one_a_profile(db):
    bare = bare_users(5)
    UserFactory()  # has one already
    assert recipients_backfill() == 5
    assert recipients_backfill() == 0
    assert Recipient.objects.filter(user__in=bare).count() == 5


def test_a_changed_address_on_the_user_reaches_the_profile(db):
    user = UserFactory(email="old@example.com")
    user.email = "new@example.com"
    user.save()
    assert Recipient.objects.get(user=user).email == "new@example.com"
    user.last_login = NOW
    user.save(update_fields=["last_login"])  # no address in the update: not touched
    assert Recipient.objects.get(user=user).email == "new@example.com"


def test_the_factory_puts_profile_fields_on_the_profile(db):
    user = UserFactory(phone="+8613800138000", time_zone="Europe/Oslo", yearly_spend=12)
    profile = Recipient.objects.get(user=user)
    assert (profile.phone, profile.time_zone, profile.yearly_spend) == (
        "+8613800138000",
        "Europe/Oslo",
        Decimal("12.00"),
    )


# --- Segments filter on the profile table -----------------------------------------------------


def test_segment_rules_match_on_the_profile_and_walk_by_profile_id(db):
    whale = UserFactory(yearly_spend=Decimal("9000"), locale="zh-hans")
    UserFactory(yearly_spend=Decimal("9000"), locale="en")
    retired = UserFactory(yearly_spend=Decimal("9000"), locale="zh-hans", is_active=False)
    UserFactory(yearly_spend=Decimal("10"), locale="zh-hans")
    segment = Segment.objects.create(name="zh whales", spend_tiers=["whale"], locales=["zh-hans"])

    assert list(segment_users(segment, now=NOW)) == [whale]
    assert segment_count(segment, now=NOW) == 1
    # The walk reads profiles by their own id; the deactivated one moves the cursor, sends
    # nothing.
    ids, seen = segment_walk(segment, after=0, limit=10, now=NOW)
    profile_of = {user: recipient_for(user).pk for user in (whale, retired)}
    assert ids == [profile_of[whale]] and seen == max(profile_of.values())
    assert segment_walk(segment, after=seen, limit=10, now=NOW) == ([], None)


def test_a_walk_gives_users_without_a_profile_one_and_matches_its_defaults(db):
    bare = bare_users(3)
    segment = Segment.objects.create(name="small fish", spend_tiers=["small_fish"])
    ids, _ = segment_walk(segment, after=0, limit=10, now=NOW)
    assert Recipient.objects.filter(user__in=bare).count() == 3
    assert ids == sorted(Recipient.objects.filter(user__in=bare).values_list("pk", flat=True))


# --- The migrations: a stand-alone deployment upgraded in place -------------------------------

BEFORE_COPY = [("notifier", "0023_recipient")]


def _latest() -> list[tuple[str, str]]:
    executor = MigrationExecutor(connection)
    return executor.loader.graph.leaf_nodes()


@pytest.mark.django_db(transaction=True)
def test_upgrading_in_place_keeps_each_users_contact_points_and_preferences():
    executor = MigrationExecutor(connection)
    executor.migrate(BEFORE_COPY)  # the user table has the profile columns again
    try:
        old = executor.loader.project_state(BEFORE_COPY).apps
        OldUser = old.get_model("notifier", "User")
        mei = OldUser.objects.create(
            username="mei",
            email="mei@example.com",
            phone="+8613800138000",
            time_zone="Asia/Shanghai",
            locale="zh-hans",
            quiet_hours_enabled=False,
            quiet_hours_start=time(23, 0),
            quiet_hours_end=time(7, 30),
            marketing_frequency="weekly",
            yearly_spend=Decimal("5400.50"),
            last_active_at=NOW,
            interest_tags=["tea", "golf"],
            points_balance=320,
            points_expire_at=NOW,
            usual_active_hour=20,
        )
        OldUser.objects.create(username="plain", email="plain@example.com")
    finally:
        executor = MigrationExecutor(connection)
        executor.loader.build_graph()
        executor.migrate(_latest())

    profile = Recipient.objects.get(user_id=mei.pk)
    assert profile.email == "mei@example.com"
    assert profile.phone == "+8613800138000"
    assert (profile.time_zone, profile.locale) == ("Asia/Shanghai", "zh-hans")
    assert profile.quiet_hours_enabled is False
    assert (profile.quiet_hours_start, profile.quiet_hours_end) == (time(23, 0), time(7, 30))
    assert profile.marketing_frequency == "weekly"
    assert profile.yearly_spend == Decimal("5400.50")
    assert profile.last_active_at == NOW and profile.points_expire_at == NOW
    assert profile.interest_tags == ["tea", "golf"]
    assert (profile.points_balance, profile.usual_active_hour) == (320, 20)
    plain = Recipient.objects.get(user__username="plain")
    assert (plain.email, plain.time_zone, plain.marketing_frequency) == (
        "plain@example.com",
        "UTC",
        "as_sent",
    )
    with connection.cursor() as cursor:
        described = connection.introspection.get_table_description(cursor, "notifier_user")
    columns = {c.name for c in described}
    assert not columns & {"phone", "time_zone", "yearly_spend", "interest_tags"}


@pytest.mark.django_db(transaction=True)
def test_migrating_back_puts_the_profile_fields_on_the_user_again():
    user = UserFactory(phone="+4791234567", time_zone="Europe/Oslo", interest_tags=["ski"])
    executor = MigrationExecutor(connection)
    try:
        executor.migrate(BEFORE_COPY)
        old = MigrationExecutor(connection).loader.project_state(BEFORE_COPY).apps
        back = old.get_model("notifier", "User").objects.get(pk=user.pk)
        assert (back.phone, back.time_zone, back.interest_tags) == (
            "+4791234567",
            "Europe/Oslo",
            ["ski"],
        )
    finally:
        executor = MigrationExecutor(connection)
        executor.loader.build_graph()
        executor.migrate(_latest())
    assert Recipient.objects.get(user=user).phone == "+4791234567"


def test_a_host_user_without_names_is_called_as_it_names_itself_unless_that_is_an_address():
    class Customer:  # a host's user model: no username, no full name
        def __init__(self, shown: str) -> None:
            self.shown = shown

        def __str__(self) -> str:
            return self.shown

    assert display_name(Customer("Ann")) == "Ann"
    assert display_name(Customer("ann@example.com")) == ""
