"""Segments: each rule at its exact edges, the member list, count and sample, the keyset walk,
CSV import preview and confirm, and the index plans of the count on PostgreSQL."""

from __future__ import annotations

import random
from datetime import UTC, datetime, timedelta
from decimal import Decimal

import pytest
from django.db import connection
from django.test.utils import CaptureQueriesContext

from campaigns.models import Activity, AudienceThresholds, Segment, SegmentMember, SpendTier
from campaigns.services.segments import (
    MemberImportError,
    RowProblem,
    activity_of,
    segment_count,
    segment_members_add,
    segment_members_preview,
    segment_q,
    segment_sample,
    segment_users,
    segment_walk,
    spend_tier_of,
)
from notifier.models import Recipient, User
from tests.campaigns.factories import SegmentFactory, SegmentMemberFactory
from tests.factories import UserFactory

NOW = datetime(2026, 3, 1, 12, 0, tzinfo=UTC)
MICROSECOND = timedelta(microseconds=1)

db = pytest.mark.usefixtures("db")


def in_segment(segment: Segment, *, now: datetime = NOW) -> set[int]:
    return set(segment_users(segment, now=now).values_list("pk", flat=True))


def ids(*users: User) -> set[int]:
    return {user.pk for user in users}


def rules(**fields):
    return SegmentFactory(**fields)


# --- Pure: the filter itself ------------------------------------------------------------------


def test_segment_q_is_built_without_touching_the_database():
    segment = Segment(
        spend_tiers=[SpendTier.WHALE],
        activity=[Activity.CHURNED],
        tags_any=["golf"],
        tags_all=["tea", "travel"],
        locales=["en"],
        time_zones=["Asia/Shanghai"],
    )
    # No db fixture: pytest-django fails any query this would make.
    q = segment_q(segment, thresholds=AudienceThresholds(), now=NOW)
    text = str(q)
    for lookup in [
        "is_active",
        "yearly_spend__gt",
        "last_active_at__isnull",
        "interest_tags__has_any_keys",
        "interest_tags__has_keys",
        "locale__in",
        "time_zone__in",
    ]:
        assert lookup in text


def test_segment_q_rejects_a_tier_that_does_not_exist_instead_of_widening():
    with pytest.raises(ValueError, match="unknown spend tier: krill"):
        segment_q(Segment(spend_tiers=["krill"]), thresholds=AudienceThresholds(), now=NOW)
    with pytest.raises(ValueError, match="unknown activity state: asleep"):
        segment_q(Segment(activity=["asleep"]), thresholds=AudienceThresholds(), now=NOW)


@pytest.mark.parametrize(
    ("spend", "tier"),
    [
        ("499.99", SpendTier.SMALL_FISH),
        ("500", SpendTier.DOLPHIN),
        ("5000", SpendTier.DOLPHIN),
        ("5000.01", SpendTier.WHALE),
    ],
)
def test_spend_tier_of_puts_the_edges_where_the_rules_do(spend, tier):
    assert spend_tier_of(Decimal(spend), thresholds=AudienceThresholds()) == tier


@pytest.mark.parametrize(
    ("ago", "state"),
    [
        (timedelta(days=30), Activity.ACTIVE),
        (timedelta(days=30) + MICROSECOND, Activity.DORMANT),
        (timedelta(days=90), Activity.DORMANT),
        (timedelta(days=90) + MICROSECOND, Activity.CHURNED),
        (None, Activity.CHURNED),
    ],
)
def test_activity_of_puts_the_edges_where_the_rules_do(ago, state):
    last = None if ago is None else NOW - ago
    assert activity_of(last, thresholds=AudienceThresholds(), now=NOW) == state


# --- Spend tiers ------------------------------------------------------------------------------


@pytest.fixture
def spenders():
    AudienceThresholds.current()  # defaults: dolphins from 500, whales above 5000
    return {
        spend: UserFactory(yearly_spend=Decimal(spend))
        for spend in ["0", "499.99", "500", "5000", "5000.01", "99999"]
    }


@db
@pytest.mark.parametrize(
    ("tiers", "expected"),
    [
        ([SpendTier.WHALE], ["5000.01", "99999"]),
        ([SpendTier.DOLPHIN], ["500", "5000"]),
        ([SpendTier.SMALL_FISH], ["0", "499.99"]),
        ([SpendTier.DOLPHIN, SpendTier.WHALE], ["500", "5000", "5000.01", "99999"]),
        ([SpendTier.SMALL_FISH, SpendTier.DOLPHIN], ["0", "499.99", "500", "5000"]),
        ([SpendTier.SMALL_FISH, SpendTier.WHALE], ["0", "499.99", "5000.01", "99999"]),
        ([], ["0", "499.99", "500", "5000", "5000.01", "99999"]),
        (list(SpendTier), ["0", "499.99", "500", "5000", "5000.01", "99999"]),
    ],
)
def test_spend_tiers_split_exactly_at_the_thresholds(spenders, tiers, expected):
    segment = rules(spend_tiers=tiers)
    assert in_segment(segment) == ids(*(spenders[spend] for spend in expected))


@db
def test_edited_spend_thresholds_change_who_is_a_whale_or_a_dolphin(spenders):
    whales, dolphins = rules(spend_tiers=[SpendTier.WHALE]), rules(spend_tiers=[SpendTier.DOLPHIN])
    thresholds = AudienceThresholds.current()
    thresholds.whale_min_spend = Decimal("499.99")
    thresholds.dolphin_min_spend = Decimal("1")
    thresholds.save()

    assert in_segment(whales) == ids(*(spenders[s] for s in ["500", "5000", "5000.01", "99999"]))
    assert in_segment(dolphins) == ids(spenders["499.99"])


# --- Activity ---------------------------------------------------------------------------------


@pytest.fixture
def visitors():
    AudienceThresholds.current()  # defaults: active within 30 days, dormant within 90
    seen = {
        "today": NOW,
        "30d": NOW - timedelta(days=30),
        "30d+": NOW - timedelta(days=30) - MICROSECOND,
        "90d": NOW - timedelta(days=90),
        "90d+": NOW - timedelta(days=90) - MICROSECOND,
        "never": None,
    }
    return {name: UserFactory(last_active_at=when) for name, when in seen.items()}


@db
@pytest.mark.parametrize(
    ("states", "expected"),
    [
        ([Activity.ACTIVE], ["today", "30d"]),
        ([Activity.DORMANT], ["30d+", "90d"]),
        ([Activity.CHURNED], ["90d+", "never"]),
        ([Activity.ACTIVE, Activity.DORMANT], ["today", "30d", "30d+", "90d"]),
        ([Activity.DORMANT, Activity.CHURNED], ["30d+", "90d", "90d+", "never"]),
        ([Activity.ACTIVE, Activity.CHURNED], ["today", "30d", "90d+", "never"]),
        (list(Activity), ["today", "30d", "30d+", "90d", "90d+", "never"]),
    ],
)
def test_activity_states_split_exactly_at_the_thresholds(visitors, states, expected):
    segment = rules(activity=states)
    assert in_segment(segment) == ids(*(visitors[name] for name in expected))


@db
def test_never_active_users_are_churned_not_dormant_or_active(visitors):
    never = visitors["never"].pk
    assert never in in_segment(rules(activity=[Activity.CHURNED]))
    assert never not in in_segment(rules(activity=[Activity.ACTIVE, Activity.DORMANT]))


@db
def test_edited_activity_thresholds_change_who_is_active_dormant_or_churned(visitors):
    active, churned = rules(activity=[Activity.ACTIVE]), rules(activity=[Activity.CHURNED])
    thresholds = AudienceThresholds.current()
    thresholds.active_within_days = 31
    thresholds.dormant_within_days = 60
    thresholds.save()

    assert in_segment(active) == ids(visitors["today"], visitors["30d"], visitors["30d+"])
    assert in_segment(churned) == ids(visitors["90d"], visitors["90d+"], visitors["never"])


# --- Tags, locale, time zone ------------------------------------------------------------------


@pytest.fixture
def tagged():
    return {
        "golf": UserFactory(interest_tags=["golf"]),
        "tea": UserFactory(interest_tags=["tea"]),
        "golf+tea": UserFactory(interest_tags=["tea", "golf", "travel"]),
        "none": UserFactory(interest_tags=[]),
    }


@db
def test_tags_any_matches_users_with_at_least_one_of_the_tags(tagged):
    segment = rules(tags_any=["golf", "tea"])
    assert in_segment(segment) == ids(tagged["golf"], tagged["tea"], tagged["golf+tea"])


@db
def test_tags_all_matches_only_users_with_every_tag(tagged):
    segment = rules(tags_all=["golf", "tea"])
    assert in_segment(segment) == ids(tagged["golf+tea"])


@db
def test_tags_any_and_all_together_must_both_hold(tagged):
    only_tea_lovers = rules(tags_any=["tea"], tags_all=["travel"])
    assert in_segment(only_tea_lovers) == ids(tagged["golf+tea"])


@db
def test_locale_rule_matches_the_listed_locales_only():
    english, chinese = UserFactory(locale="en"), UserFactory(locale="zh-hans")
    UserFactory(locale="de")
    assert in_segment(rules(locales=["en", "zh-hans"])) == ids(english, chinese)


@db
def test_time_zone_rule_matches_the_listed_zones_only():
    berlin = UserFactory(time_zone="Europe/Berlin")
    UserFactory(time_zone="Asia/Shanghai")
    assert in_segment(rules(time_zones=["Europe/Berlin"])) == ids(berlin)


@db
def test_points_rule_matches_balances_that_lapse_within_the_window_only():
    soon = UserFactory(points_balance=1200, points_expire_at=NOW + timedelta(days=3))
    edge = UserFactory(points_balance=10, points_expire_at=NOW + timedelta(days=7))
    UserFactory(points_balance=1200, points_expire_at=NOW + timedelta(days=7, seconds=1))
    UserFactory(points_balance=1200, points_expire_at=NOW - timedelta(seconds=1))  # lapsed
    UserFactory(points_balance=0, points_expire_at=NOW + timedelta(days=1))  # nothing to lose
    UserFactory(points_balance=1200, points_expire_at=None)  # never expire
    assert in_segment(rules(points_expiring_within_days=7)) == ids(soon, edge)
    assert in_segment(rules(points_expiring_within_days=None)) == ids(
        *User.objects.filter(is_active=True)
    )


@db
def test_every_filled_in_rule_must_hold_at_once():
    match = UserFactory(
        yearly_spend=Decimal("9000"), last_active_at=NOW, interest_tags=["golf"], locale="en"
    )
    UserFactory(
        yearly_spend=Decimal("9000"), last_active_at=NOW, interest_tags=["golf"], locale="de"
    )
    UserFactory(yearly_spend=Decimal("10"), last_active_at=NOW, interest_tags=["golf"], locale="en")
    UserFactory(
        yearly_spend=Decimal("9000"), last_active_at=None, interest_tags=["golf"], locale="en"
    )
    segment = rules(
        spend_tiers=[SpendTier.WHALE],
        activity=[Activity.ACTIVE],
        tags_any=["golf"],
        locales=["en"],
    )
    assert in_segment(segment) == ids(match)


@db
def test_inactive_users_are_never_in_a_segment():
    active = UserFactory()
    inactive = UserFactory(is_active=False)
    everyone = rules()
    listed = rules(use_member_list=True)
    SegmentMemberFactory(segment=listed, user=inactive)
    assert in_segment(everyone) == ids(active)
    assert in_segment(listed) == set()


# --- Member list ------------------------------------------------------------------------------


@db
def test_member_list_is_intersected_with_the_rules():
    listed_whale = UserFactory(yearly_spend=Decimal("9000"))
    listed_small = UserFactory(yearly_spend=Decimal("10"))
    UserFactory(yearly_spend=Decimal("9000"))  # a whale not on the list
    segment = rules(spend_tiers=[SpendTier.WHALE], use_member_list=True)
    for user in (listed_whale, listed_small):
        SegmentMemberFactory(segment=segment, user=user)
    other = rules()
    SegmentMemberFactory(segment=other, user=UserFactory(yearly_spend=Decimal("9000")))

    assert in_segment(segment) == ids(listed_whale)


@db
def test_member_list_is_ignored_while_use_member_list_is_off():
    listed, unlisted = UserFactory(), UserFactory()
    segment = rules(use_member_list=False)
    SegmentMemberFactory(segment=segment, user=listed)
    assert in_segment(segment) == ids(listed, unlisted)


# --- Count, sample, walk ----------------------------------------------------------------------


@db
def test_count_is_the_number_of_matching_users():
    for _ in range(3):
        UserFactory(locale="en")
    UserFactory(locale="de")
    UserFactory(locale="en", is_active=False)
    assert segment_count(rules(locales=["en"])) == 3


@db
def test_sample_returns_n_distinct_matching_users_from_any_starting_point():
    english = {UserFactory(locale="en").pk for _ in range(8)}
    for _ in range(4):
        UserFactory(locale="de")
    segment = rules(locales=["en"])
    for seed in range(10):
        sample = segment_sample(segment, 5, rng=random.Random(seed))
        pks = [user.pk for user in sample]
        assert len(pks) == 5
        assert len(set(pks)) == 5
        assert set(pks) <= english


@db
def test_sample_of_a_small_segment_is_the_whole_segment():
    english = {UserFactory(locale="en").pk for _ in range(3)}
    UserFactory(locale="de")
    for seed in range(5):
        sample = segment_sample(rules(locales=["en"]), 20, rng=random.Random(seed))
        assert {user.pk for user in sample} == english


@db
def test_sample_of_an_empty_segment_is_empty():
    UserFactory(locale="de")
    assert segment_sample(rules(locales=["en"]), 20) == []


@db
def test_keyset_walk_visits_every_member_once_in_id_order():
    whales = [UserFactory(yearly_spend=Decimal("9000")).pk for _ in range(7)]
    UserFactory(yearly_spend=Decimal("1"))
    segment = rules(spend_tiers=[SpendTier.WHALE], use_member_list=True)
    for pk in whales:
        SegmentMember.objects.create(segment=segment, user_id=pk)
    walked: list[int] = []
    cursor = 0
    while batch := list(
        segment_users(segment).filter(pk__gt=cursor).order_by("pk").values_list("pk", flat=True)[:3]
    ):
        walked += batch
        cursor = batch[-1]
    assert walked == sorted(whales)


# --- CSV import -------------------------------------------------------------------------------


def csv_bytes(*lines: str) -> bytes:
    return ("\n".join(lines) + "\n").encode()


def writes_in(queries: CaptureQueriesContext) -> list[str]:
    return [
        q["sql"]
        for q in queries.captured_queries
        if q["sql"].lstrip().upper().startswith(("INSERT", "UPDATE", "DELETE"))
    ]


@pytest.fixture
def segment() -> Segment:
    return rules(use_member_list=True)


@db
def test_preview_reports_each_kind_of_row_error_and_writes_nothing(segment):
    ok = UserFactory(email="ok@example.com", phone="+8613700137000")
    UserFactory(email="gone@example.com", is_active=False)
    UserFactory(email="twin@example.com")
    UserFactory(email="twin@example.com")
    data = csv_bytes(
        "email,phone,user_id,name",
        "ok@example.com,,",  # line 2: fine
        "not-an-email,,",  # 3
        ",12345,",  # 4: not a phone in international form
        ",,abc",  # 5
        "nobody@example.com,,",  # 6
        "gone@example.com,,",  # 7
        "OK@example.com,,",  # 8: the same address as line 2
        ",+8613700137000,",  # 9: the same user as line 2, by phone
        "twin@example.com,,",  # 10: two users have it
        ",,999999999",  # 11
        ",,,Alice",  # 12: names nobody
        ",,99999999999999999999",  # 13: beyond any id
        ",,,",  # blank: skipped without a word
    )
    with CaptureQueriesContext(connection) as queries:
        preview = segment_members_preview(segment=segment, data=data)

    problems = {row.line: row.problem for row in preview.rows}
    assert problems == {
        2: None,
        3: RowProblem.MALFORMED,
        4: RowProblem.MALFORMED,
        5: RowProblem.MALFORMED,
        6: RowProblem.UNKNOWN_USER,
        7: RowProblem.INACTIVE_USER,
        8: RowProblem.DUPLICATE_ROW,
        9: RowProblem.DUPLICATE_ROW,
        10: RowProblem.AMBIGUOUS,
        11: RowProblem.UNKNOWN_USER,
        12: RowProblem.MALFORMED,
        13: RowProblem.MALFORMED,
    }
    assert preview.user_ids_to_add == [ok.pk]
    assert "line 2" in next(row.message for row in preview.rows if row.line == 9)
    assert writes_in(queries) == []
    assert not SegmentMember.objects.exists()


@db
def test_preview_finds_users_by_id_by_phone_and_by_email_in_any_case(segment):
    by_id, by_phone = UserFactory(), UserFactory(phone="+8613900139000")
    by_email = UserFactory(email="Mixed.Case@Example.com")
    data = csv_bytes(
        "user_id,phone,email",
        f"{by_id.pk},,",
        ",+8613900139000,",
        ",,mixed.case@example.com",
    )
    preview = segment_members_preview(segment=segment, data=data)
    assert preview.errors == []
    assert preview.user_ids_to_add == [by_id.pk, by_phone.pk, by_email.pk]


@db
def test_preview_marks_users_already_on_the_list_without_calling_them_errors(segment):
    member, newcomer = UserFactory(), UserFactory()
    SegmentMemberFactory(segment=segment, user=member)
    preview = segment_members_preview(
        segment=segment, data=csv_bytes("email", member.email, newcomer.email)
    )
    assert preview.errors == []
    assert [row.user_id for row in preview.already_members] == [member.pk]
    assert preview.user_ids_to_add == [newcomer.pk]


@db
def test_preview_reads_an_excel_csv_with_a_byte_order_mark_and_blank_rows(segment):
    user = UserFactory()
    data = "\ufeffEmail\r\n".encode() + f"{user.email}\r\n,\r\n\r\n".encode()
    preview = segment_members_preview(segment=segment, data=data)
    assert preview.user_ids_to_add == [user.pk]
    assert len(preview.rows) == 1


@db
@pytest.mark.parametrize(
    ("data", "message"),
    [
        (b"name,city\nAlice,Paris\n", "must name a column user_id, email or phone"),
        (b"", "must name a column"),
        ("email\nzoë@example.com\n".encode("utf-16"), "not UTF-8"),
        (b"email\n" + b"x" * 200_000 + b"\n", "Line 2 is not valid CSV"),
    ],
)
def test_preview_rejects_a_file_it_cannot_read(segment, data, message):
    with pytest.raises(MemberImportError, match=message):
        segment_members_preview(segment=segment, data=data)


@db
@pytest.mark.parametrize("header", ["email", "phone", "user_id,email", "Name,Phone,User_ID"])
def test_without_contact_details_a_file_naming_addresses_is_refused_before_any_lookup(
    segment, header
):
    user = UserFactory()
    data = f"{header}\n{user.email}\n".encode()
    with (
        CaptureQueriesContext(connection) as queries,
        pytest.raises(MemberImportError, match="importing by email or phone needs permission"),
    ):
        segment_members_preview(segment=segment, data=data, by_contact=False)
    assert len(queries) == 0


@db
def test_without_contact_details_rows_name_users_by_id(segment):
    user = UserFactory()
    data = f"user_id,name\n{user.pk},Ann\n,Bob\n{'9' * 5000},Carl\n".encode()
    preview = segment_members_preview(segment=segment, data=data, by_contact=False)
    assert preview.user_ids_to_add == [user.pk]
    assert [(row.line, row.message) for row in preview.errors] == [
        (3, "no user_id on this row"),
        (4, f"“{'9' * 40}” is not a user id"),
    ]


@db
def test_confirm_adds_the_valid_members_once_even_when_imported_twice(segment):
    users = [UserFactory() for _ in range(3)]
    data = csv_bytes("email", *(user.email for user in users), "nobody@example.com")
    preview = segment_members_preview(segment=segment, data=data)

    first = segment_members_add(segment=segment, user_ids=preview.user_ids_to_add)
    again = segment_members_preview(segment=segment, data=data)
    second = segment_members_add(segment=segment, user_ids=preview.user_ids_to_add)

    assert (first.added, first.already_members) == (3, 0)
    assert again.user_ids_to_add == []
    assert (second.added, second.already_members) == (0, 3)
    assert set(segment.members.values_list("user_id", flat=True)) == ids(*users)


@db
def test_confirm_skips_users_deactivated_since_the_preview(segment):
    stays, leaves = UserFactory(), UserFactory()
    preview = segment_members_preview(
        segment=segment, data=csv_bytes("email", stays.email, leaves.email)
    )
    User.objects.filter(pk=leaves.pk).update(is_active=False)

    result = segment_members_add(segment=segment, user_ids=preview.user_ids_to_add)

    assert (result.added, result.skipped) == (1, 1)
    assert list(segment.members.values_list("user_id", flat=True)) == [stays.pk]


# --- Index plans on PostgreSQL ----------------------------------------------------------------

TEMPLATE_USERS = 1_000
COPIES = 60  # 60,000 users in all


@pytest.fixture
def many_users() -> None:
    """60,000 users: 1% whales, 2% active, 0.2% into golf; everyone else alike.

    1,000 users come from bulk_create; SQL then copies each 59 more times, which takes a
    second where bulk_create of all 60,000 takes most of the time budget of this test.
    """
    if connection.vendor != "postgresql":
        pytest.skip("the plans asserted here are PostgreSQL's")
    AudienceThresholds.current()
    rng = random.Random(7)
    long_ago = NOW - timedelta(days=400)
    templates = User.objects.bulk_create(
        User(username=f"bulk{i}", email=f"bulk{i}@example.com", password="!")
        for i in range(TEMPLATE_USERS)
    )
    Recipient.objects.bulk_create(
        Recipient(
            user=user,
            email=user.email,
            yearly_spend=Decimal(9000 if i % 100 == 0 else rng.randint(0, 400)),
            last_active_at=(
                NOW - timedelta(days=rng.randint(0, 20))
                if i % 50 == 0
                else long_ago - timedelta(days=rng.randint(0, 300))
            ),
            interest_tags=["golf", "news"] if i % 500 == 7 else ["news", "sport"],
            points_balance=500 if i % 100 == 3 else 0,
            points_expire_at=NOW + timedelta(days=rng.randint(1, 20)) if i % 100 == 3 else None,
        )
        for i, user in enumerate(templates)
    )
    fields = [f for f in User._meta.concrete_fields if not f.primary_key]
    quote = connection.ops.quote_name
    columns = ", ".join(quote(f.column) for f in fields)
    # Unique columns (username) get the copy number appended; everything else is copied.
    values = ", ".join(
        f"{quote(f.column)} || '-' || copy_number" if f.unique else quote(f.column) for f in fields
    )
    # Each copy's profile is its template's ("bulk7-3" is a copy of "bulk7").
    profile_fields = [
        f.column for f in Recipient._meta.concrete_fields if f.name not in ("id", "user")
    ]
    profile_columns = ", ".join(quote(c) for c in profile_fields)
    profile_values = ", ".join(f"r.{quote(c)}" for c in profile_fields)
    with connection.cursor() as cursor:
        cursor.execute(
            f"INSERT INTO notifier_user ({columns}) SELECT {values} FROM notifier_user "
            "CROSS JOIN generate_series(2, %s) AS copy_number WHERE id = ANY(%s)",
            [COPIES, [user.pk for user in templates]],
        )
        cursor.execute(
            f"INSERT INTO notifier_recipient (user_id, {profile_columns}) "
            f"SELECT copy.id, {profile_values} FROM notifier_user copy "
            "JOIN notifier_user t ON t.username = split_part(copy.username, '-', 1) "
            "JOIN notifier_recipient r ON r.user_id = t.id "
            "WHERE copy.username LIKE 'bulk%%-%%'"
        )
        cursor.execute("ANALYZE notifier_user")
        cursor.execute("ANALYZE notifier_recipient")
    assert User.objects.count() >= TEMPLATE_USERS * COPIES
    assert Recipient.objects.count() >= TEMPLATE_USERS * COPIES


def count_plan(segment: Segment) -> str:
    """EXPLAIN of exactly the SQL segment_count runs."""
    with CaptureQueriesContext(connection) as queries:
        segment_count(segment, now=NOW)
    sql = queries.captured_queries[-1]["sql"]
    assert "COUNT(" in sql.upper()
    with connection.cursor() as cursor:
        cursor.execute(f"EXPLAIN {sql}")
        return "\n".join(row[0] for row in cursor.fetchall())


@db
def test_count_and_keyset_walk_use_indexes_not_a_sequential_scan(many_users):
    """One test for all plans: generating the users is the slow part."""
    for fields, index in [
        ({"spend_tiers": [SpendTier.WHALE]}, "recipient_spend_idx"),
        ({"activity": [Activity.ACTIVE]}, "recipient_last_active_idx"),
        ({"tags_any": ["golf", "chess"]}, "recipient_interest_tags_gin"),
        ({"tags_all": ["golf", "news"]}, "recipient_interest_tags_gin"),
        ({"points_expiring_within_days": 7}, "recipient_points_expire_idx"),
    ]:
        plan = count_plan(rules(**fields))
        # The rules filter the profile table on its indexes; users are joined by key (the
        # planner hashes or loops, as the sizes say).
        assert "Seq Scan on notifier_recipient" not in plan, plan
        assert "Index Scan" in plan and index in plan, plan

    # The fan-out's keyset batch walks the profiles: a narrow segment through its rule's
    # index, a broad one along the profiles' primary key, stopping after the batch; each
    # user it yields is checked (is_active) by primary key. Never a whole table.
    for tiers, index in [
        ([SpendTier.WHALE], "recipient_spend_idx"),
        ([SpendTier.SMALL_FISH], "notifier_recipient_pkey"),
    ]:
        segment = rules(spend_tiers=tiers)
        segment_walk(segment, after=0, limit=500, now=NOW)  # the backfill: nothing to make
        with CaptureQueriesContext(connection) as queries:
            ids, seen = segment_walk(segment, after=1, limit=500, now=NOW)
        assert len(ids) == 500 and seen == ids[-1]
        [walk] = [q["sql"] for q in queries.captured_queries if "LIMIT 500" in q["sql"]]
        with connection.cursor() as cursor:
            cursor.execute(f"EXPLAIN {walk}")
            plan = "\n".join(row[0] for row in cursor.fetchall())
        assert "Seq Scan on notifier_user" not in plan, plan
        assert "Seq Scan on notifier_recipient" not in plan, plan
        assert "Index Scan" in plan and index in plan, plan
