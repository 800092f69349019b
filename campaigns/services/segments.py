"""Segments: who matches a segment's rules, how many, a sample, and CSV imports of its list.

The rules become one `Q` over the user model joined to its recipient profile (`notifier_recipient`,
`segment_q`, pure), so a count, a sample and the campaign fan-out's keyset walk are all single
queries on indexed columns of the profile: spend and last
activity as ranges on their b-tree indexes, interest tags with the jsonb `?|` / `?&` operators
the GIN index serves, locale and time zone as `IN` lists. Adjacent tiers and activity states
are merged into one range ("dolphin or whale" is `spend >= dolphin_min`), which keeps the plan
a single index range instead of an OR of two.

A CSV import has two steps: `segment_members_preview` resolves every row and reports what is
wrong with it while writing nothing; `segment_members_add` then adds the valid users in bulk and
is idempotent (the unique (segment, user) constraint and a look-up of existing members). Rows
name users by email or phone only for staff who may see contact details: for anyone else the
preview would answer "who has an account with this address", so their files name user ids.
"""

from __future__ import annotations

import csv
import io
import random
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from decimal import Decimal
from typing import Any, TypeVar, cast

from django.contrib.auth import get_user_model
from django.core.exceptions import ValidationError
from django.core.validators import validate_email
from django.db import models, transaction
from django.db.models import Exists, Max, Min, OuterRef, Q, QuerySet
from django.db.models.functions import Lower
from django.utils import timezone

from campaigns.models import Activity, AudienceThresholds, Segment, SegmentMember, SpendTier
from notifier.db import statistics_refresh
from notifier.models import IdentifierKind, Recipient, User, recipients_backfill
from notifier.models.users import normalize_phone
from notifier.services.erasure import suppressed_digests
from notifier.user_keys import UserKey, user_key_from_text

# Rows resolved per query in an import: small enough for a short IN list, large enough that
# a 100,000-row file takes a few dozen queries.
IMPORT_CHUNK = 5000
CASE_INSENSITIVE_CHUNK = 50_000
MAX_IMPORT_ROWS = 100_000
IDENTIFIER_COLUMNS = ("user_id", "email", "phone")  # the first one filled in a row is used
CONTACT_COLUMNS = ("email", "phone")

T = TypeVar("T")
E = TypeVar("E", bound=str)

_TIER_ORDER = (SpendTier.SMALL_FISH, SpendTier.DOLPHIN, SpendTier.WHALE)
_ACTIVITY_ORDER = (Activity.ACTIVE, Activity.DORMANT, Activity.CHURNED)


# --- Rules -----------------------------------------------------------------------------------


def segment_q(segment: Segment, *, thresholds: AudienceThresholds, now: datetime) -> Q:
    """The filter on the user model for a segment's rules (not its member list); runs no query.

    The attributes live on the recipient profile (`notifier.Recipient`): each condition is a
    `notifier_recipient__...` lookup, an inner join on the profile's unique `user_id`, so every
    condition can use the profile table's indexes and the fan-out's keyset walk still goes by
    user id. Empty rule lists mean "any" (and no join). Raises ValueError for a tier or activity
    state that does not exist, rather than silently widening the audience.
    """
    rules = spend_tier_q(segment.spend_tiers, thresholds=thresholds)
    rules &= activity_q(segment.activity, thresholds=thresholds, now=now)
    if segment.tags_any:
        rules &= Q(interest_tags__has_any_keys=[str(tag) for tag in segment.tags_any])
    if segment.tags_all:
        rules &= Q(interest_tags__has_keys=[str(tag) for tag in segment.tags_all])
    if segment.locales:
        rules &= Q(locale__in=list(segment.locales))
    if segment.time_zones:
        rules &= Q(time_zone__in=list(segment.time_zones))
    if segment.points_expiring_within_days is not None:
        rules &= points_expiring_q(segment.points_expiring_within_days, now=now)
    return Q(is_active=True) & on_profile(rules)


def profile_rules_q(segment: Segment, *, thresholds: AudienceThresholds, now: datetime) -> Q:
    """The segment's rules as a filter on `Recipient` (empty `Q()` for a segment without
    rules); runs no query."""
    return off_profile(segment_q(segment, thresholds=thresholds, now=now))


PROFILE = "notifier_recipient__"


def on_profile(q: Q) -> Q:
    """A `Q` written on `Recipient`'s fields, as the same filter on the user model."""
    moved = Q()
    moved.connector, moved.negated = q.connector, q.negated
    for child in q.children:
        if isinstance(child, Q):
            moved.children.append(on_profile(child))
        else:
            lookup, value = cast(tuple[str, Any], child)
            moved.children.append((PROFILE + lookup, value))
    return moved


def off_profile(q: Q) -> Q:
    """The profile conditions of a `segment_q`, back on `Recipient`'s own fields (the user's
    `is_active` is left out: the walk checks it on the user)."""
    moved = Q()
    moved.connector, moved.negated = q.connector, q.negated
    for child in q.children:
        if isinstance(child, Q):
            inner = off_profile(child)
            if inner.children:
                moved.children.append(inner)
        else:
            lookup, value = cast(tuple[str, Any], child)
            if lookup.startswith(PROFILE):
                moved.children.append((lookup[len(PROFILE) :], value))
    return moved


def points_expiring_q(days: int, *, now: datetime) -> Q:
    """Users with a points balance that has not expired yet and will within `days` days."""
    if days < 0:
        raise ValueError(f"points expiring within {days} days: use 0 or more days")
    return Q(
        points_balance__gt=0,
        points_expire_at__gte=now,
        points_expire_at__lte=now + timedelta(days=days),
    )


def spend_tier_q(tiers: Iterable[str], *, thresholds: AudienceThresholds) -> Q:
    """Whale: spend > whale line; dolphin: dolphin line <= spend <= whale line; small fish:
    below the dolphin line. Empty or all three: no condition."""
    chosen = _checked(tiers, _TIER_ORDER, "spend tier")
    whale_line, dolphin_line = thresholds.whale_min_spend, thresholds.dolphin_min_spend
    ranges = {
        # One range per run of adjacent tiers: (lowest tier, highest tier) -> condition.
        (SpendTier.SMALL_FISH, SpendTier.SMALL_FISH): Q(yearly_spend__lt=dolphin_line),
        (SpendTier.SMALL_FISH, SpendTier.DOLPHIN): Q(yearly_spend__lte=whale_line),
        (SpendTier.DOLPHIN, SpendTier.DOLPHIN): Q(
            yearly_spend__gte=dolphin_line, yearly_spend__lte=whale_line
        ),
        (SpendTier.DOLPHIN, SpendTier.WHALE): Q(yearly_spend__gte=dolphin_line),
        (SpendTier.WHALE, SpendTier.WHALE): Q(yearly_spend__gt=whale_line),
    }
    return _union(ranges[run] for run in _runs(chosen, _TIER_ORDER))


def activity_q(states: Iterable[str], *, thresholds: AudienceThresholds, now: datetime) -> Q:
    """Active: seen within `active_within_days`; dormant: within `dormant_within_days` but not
    active; churned: seen longer ago than that, or never. Empty or all three: no condition."""
    chosen = _checked(states, _ACTIVITY_ORDER, "activity state")
    active_since = now - timedelta(days=thresholds.active_within_days)
    dormant_since = now - timedelta(days=thresholds.dormant_within_days)
    never = Q(last_active_at__isnull=True)
    ranges = {
        (Activity.ACTIVE, Activity.ACTIVE): Q(last_active_at__gte=active_since),
        (Activity.ACTIVE, Activity.DORMANT): Q(last_active_at__gte=dormant_since),
        (Activity.DORMANT, Activity.DORMANT): Q(
            last_active_at__gte=dormant_since, last_active_at__lt=active_since
        ),
        (Activity.DORMANT, Activity.CHURNED): Q(last_active_at__lt=active_since) | never,
        (Activity.CHURNED, Activity.CHURNED): Q(last_active_at__lt=dormant_since) | never,
    }
    return _union(ranges[run] for run in _runs(chosen, _ACTIVITY_ORDER))


def spend_tier_of(spend: Decimal, *, thresholds: AudienceThresholds) -> SpendTier:
    """The tier one yearly spend falls in; the same edges as `spend_tier_q`."""
    if spend > thresholds.whale_min_spend:
        return SpendTier.WHALE
    if spend >= thresholds.dolphin_min_spend:
        return SpendTier.DOLPHIN
    return SpendTier.SMALL_FISH


def activity_of(
    last_active_at: datetime | None, *, thresholds: AudienceThresholds, now: datetime
) -> Activity:
    """The activity state of one user; the same edges as `activity_q`."""
    if last_active_at is None:
        return Activity.CHURNED
    if last_active_at >= now - timedelta(days=thresholds.active_within_days):
        return Activity.ACTIVE
    if last_active_at >= now - timedelta(days=thresholds.dormant_within_days):
        return Activity.DORMANT
    return Activity.CHURNED


def _checked(values: Iterable[str], order: Sequence[str], what: str) -> set[str]:
    chosen = set(values)
    unknown = chosen - set(order)
    if unknown:
        raise ValueError(f"unknown {what}: {', '.join(sorted(map(str, unknown)))}")
    return chosen


def _runs(chosen: set[str], order: Sequence[E]) -> Iterator[tuple[E, E]]:
    """(first, last) of each run of adjacent chosen values; nothing when all or none are."""
    if len(chosen) in (0, len(order)):
        return
    start: E | None = None
    previous = order[0]
    for value in order:
        if value in chosen:
            start = start or value
            previous = value
        elif start is not None:
            yield start, previous
            start = None
    if start is not None:
        yield start, previous


def _union(conditions: Iterable[Q]) -> Q:
    result = Q()
    for condition in conditions:
        result |= condition
    return result


# --- Reads -----------------------------------------------------------------------------------


def segment_users(
    segment: Segment,
    *,
    now: datetime | None = None,
    thresholds: AudienceThresholds | None = None,
) -> QuerySet[User]:
    """Active users matching the rules, and on the imported list when the segment uses one.

    Unordered and without joins, so callers can walk it by key:
    `.filter(pk__gt=cursor).order_by("pk").values_list("pk", flat=True)[:batch]`.
    """
    users = get_user_model()._default_manager.filter(
        segment_q(
            segment,
            thresholds=thresholds or AudienceThresholds.current(),
            now=now or timezone.now(),
        )
    )
    if segment.use_member_list:
        # EXISTS, not a join: a semi-join never repeats a user and keeps the PK walk possible.
        users = users.filter(
            Exists(SegmentMember.objects.filter(segment_id=segment.pk, user_id=OuterRef("pk")))
        )
    return users


def segment_walk(
    segment: Segment,
    *,
    after: int,
    limit: int,
    now: datetime | None = None,
    thresholds: AudienceThresholds | None = None,
) -> tuple[list[int], int | None]:
    """The fan-out's keyset walk: the recipient ids (`notifier.Recipient.pk`) of the segment's
    active users among the next `limit` profiles after recipient id `after`, in id order, and
    the last id looked at (the next cursor; None when nothing is left).

    The walk goes along the profile table's primary key (or through the index of a narrow
    rule), stopping after `limit` profiles; then one primary-key look-up keeps the active
    users among them. Never the whole user table, whatever the planner thinks of joining it,
    and the same for any user model: its keys may be integers, UUIDs or text, the profile's
    are integers. Users without a profile yet get one at the start of a walk
    (`recipients_backfill`), so they match with the profile's defaults.
    """
    now = now or timezone.now()
    rules = profile_rules_q(segment, thresholds=thresholds or AudienceThresholds.current(), now=now)
    if after == 0:
        recipients_backfill()
        # The next batch's plan depends on how common the rules' values are: after a bulk
        # change autovacuum has not seen yet (a million people tagged at once), a plan made on
        # the old statistics read every matching profile for each batch of a thousand.
        statistics_refresh(Recipient)
    # Erased people (notifier.services.erasure) are in no audience.
    profiles = Recipient.objects.filter(rules, pk__gt=after, erased_at__isnull=True)
    if segment.use_member_list:
        profiles = profiles.filter(
            Exists(SegmentMember.objects.filter(segment_id=segment.pk, user_id=OuterRef("user_id")))
        )
    return recipients_active(profiles.order_by("pk"), limit=limit)


def recipients_active(profiles: QuerySet[Recipient], *, limit: int) -> tuple[list[int], int | None]:
    """The ids of the first `limit` of `profiles` (ordered by id) whose users are active, and
    the last id looked at (None when there were none)."""
    candidates = list(profiles.values_list("pk", "user_id")[:limit])
    if not candidates:
        return [], None
    active = set(
        get_user_model()
        ._default_manager.filter(pk__in=[user for _, user in candidates], is_active=True)
        .values_list("pk", flat=True)
    )
    return [pk for pk, user in candidates if user in active], candidates[-1][0]


def segment_count(segment: Segment, *, now: datetime | None = None) -> int:
    """How many users the segment reaches right now."""
    return segment_users(segment, now=now).count()


def segment_sample(
    segment: Segment,
    n: int = 20,
    *,
    now: datetime | None = None,
    rng: random.Random | None = None,
) -> list[User]:
    """Up to `n` matching users, in profile id order from a random starting id (wrapping
    around); users without a profile get theirs first (one anti-join when none is missing).

    Two short keyset reads instead of `ORDER BY random()`, which would sort the whole audience.
    """
    recipients_backfill()
    users = segment_users(segment, now=now)
    bounds = Recipient.objects.aggregate(low=Min("pk"), high=Max("pk"))
    if bounds["low"] is None or n <= 0:
        return []
    # Pivot on the profiles' integer ids: the users' own keys may be UUIDs or text.
    pivot = (rng or random.Random()).randint(bounds["low"], bounds["high"])
    order = f"{PROFILE}pk"
    sample = list(users.filter(**{f"{order}__gte": pivot}).order_by(order)[:n])
    if len(sample) < n:
        sample += users.filter(**{f"{order}__lt": pivot}).order_by(order)[: n - len(sample)]
    return sample


# --- CSV import of an explicit list ----------------------------------------------------------


class MemberImportError(ValueError):
    """The file as a whole cannot be read (encoding, header, size); nothing is previewed."""


class RowProblem(models.TextChoices):
    MALFORMED = "malformed", "Malformed value"
    UNKNOWN_USER = "unknown_user", "Unknown user"
    INACTIVE_USER = "inactive_user", "Deactivated user"
    AMBIGUOUS = "ambiguous", "Several users match"
    ERASED = "erased", "Erased at their request"
    DUPLICATE_ROW = "duplicate_row", "Duplicate row"


@dataclass
class ImportRow:
    """One data row of the file: which user it names, or what is wrong with it."""

    line: int  # as a spreadsheet numbers it: the header is line 1
    column: str  # "user_id", "email" or "phone"
    value: str  # as written in the file
    key: str = ""  # the normalized value users are looked up by
    user_id: UserKey | None = None
    problem: RowProblem | None = None
    message: str = ""
    already_member: bool = False

    @property
    def will_add(self) -> bool:
        return self.problem is None and not self.already_member

    def fail(self, problem: RowProblem, message: str) -> None:
        self.problem, self.message, self.user_id = problem, message, None


@dataclass
class MemberImportPreview:
    segment_id: int
    rows: list[ImportRow] = field(default_factory=list)

    @property
    def errors(self) -> list[ImportRow]:
        return [row for row in self.rows if row.problem is not None]

    @property
    def to_add(self) -> list[ImportRow]:
        return [row for row in self.rows if row.will_add]

    @property
    def already_members(self) -> list[ImportRow]:
        return [row for row in self.rows if row.problem is None and row.already_member]

    @property
    def user_ids_to_add(self) -> list[int]:
        return [row.user_id for row in self.to_add if row.user_id is not None]


@dataclass(frozen=True)
class MembersAdded:
    added: int
    already_members: int
    skipped: int  # deleted or deactivated since the preview


def segment_members_preview(
    *, segment: Segment, data: bytes, by_contact: bool = True
) -> MemberImportPreview:
    """Read a CSV (a header with `user_id`, `email` or `phone`), resolve each row to a user and
    report every row's problem: malformed value, unknown, inactive or ambiguous user, duplicate
    row. Writes nothing. Raises MemberImportError when the file cannot be read at all.

    `by_contact=False` (staff without `notifier.view_contact_details`): the file must name
    users by `user_id` only; one with an email or phone column is refused before any row is
    looked up, since "unknown user" against "user 9" would tell who has an account.
    """
    columns = IDENTIFIER_COLUMNS if by_contact else ("user_id",)
    preview = MemberImportPreview(segment_id=segment.pk, rows=_read_rows(data, columns))
    for row in preview.rows:
        _normalize(row)
    _mark_duplicates(preview.rows, lambda row: (row.column, row.key))
    _mark_erased_identifiers(preview.rows)
    _resolve_users(preview.rows)
    _mark_duplicates(preview.rows, lambda row: ("user", str(row.user_id)))
    _mark_members(preview.rows, segment_id=segment.pk)
    return preview


@transaction.atomic
def segment_members_add(*, segment: Segment, user_ids: Sequence[UserKey]) -> MembersAdded:
    """Add users to a segment's list in bulk; users already on it are left alone."""
    added = already = skipped = 0
    for chunk in _chunks(sorted(set(user_ids)), IMPORT_CHUNK):
        existing = set(
            SegmentMember.objects.filter(segment=segment, user_id__in=chunk).values_list(
                "user_id", flat=True
            )
        )
        addable = set(
            get_user_model()
            ._default_manager.filter(pk__in=chunk, is_active=True)
            .exclude(notifier_recipient__erased_at__isnull=False)
            .values_list("pk", flat=True)
        )
        new = sorted(addable - existing)
        skipped += len(set(chunk) - addable - existing)
        # ignore_conflicts: an import confirmed twice at once still adds each user once.
        SegmentMember.objects.bulk_create(
            [SegmentMember(segment=segment, user_id=pk) for pk in new], ignore_conflicts=True
        )
        added += len(new)
        already += len(existing)
    return MembersAdded(added=added, already_members=already, skipped=skipped)


def _read_rows(data: bytes, allowed: Sequence[str]) -> list[ImportRow]:
    try:
        text = data.decode("utf-8-sig")  # Excel writes a byte-order mark
    except UnicodeDecodeError as exc:
        raise MemberImportError("The file is not UTF-8 text; save it as “CSV UTF-8”.") from exc
    reader = csv.reader(io.StringIO(text))
    try:
        header = [name.strip().lower() for name in next(reader, [])]
    except csv.Error as exc:
        raise MemberImportError(f"The first line is not valid CSV: {exc}.") from exc
    refused = [name for name in CONTACT_COLUMNS if name in header and name not in allowed]
    if refused:
        raise MemberImportError(
            f"The file has {' and '.join(refused)} column{'s' if len(refused) > 1 else ''}: "
            "importing by email or phone needs permission to see customers' contact details "
            "(an Admin has it). Give each row's user_id in a column named user_id instead."
        )
    columns = {name: index for index, name in enumerate(header) if name in allowed}
    if not columns:
        raise MemberImportError(
            f"The first row must name a column {_either(allowed)}; "
            f"found {', '.join(header) or 'nothing'}."
        )
    rows: list[ImportRow] = []
    try:
        for cells in reader:
            if len(rows) >= MAX_IMPORT_ROWS:
                raise MemberImportError(
                    f"The file has more than {MAX_IMPORT_ROWS:,} rows; split it into smaller files."
                )
            values = {
                name: cells[index].strip() for name, index in columns.items() if index < len(cells)
            }
            # The first identifier filled in wins.
            named = next(((name, values[name]) for name in allowed if values.get(name)), None)
            if named is not None:
                rows.append(ImportRow(line=reader.line_num, column=named[0], value=named[1]))
            elif any(cell.strip() for cell in cells):  # blank rows (",,,") are not worth a word
                row = ImportRow(line=reader.line_num, column="", value=",".join(cells))
                row.fail(RowProblem.MALFORMED, f"no {_either(allowed)} on this row")
                rows.append(row)
    except csv.Error as exc:
        raise MemberImportError(f"Line {reader.line_num} is not valid CSV: {exc}.") from exc
    return rows


def _either(columns: Sequence[str]) -> str:
    """("user_id", "email", "phone") -> "user_id, email or phone"."""
    return " or ".join(filter(None, [", ".join(columns[:-1]), columns[-1]]))


def _normalize(row: ImportRow) -> None:
    if row.problem is not None:
        return
    if row.column == "user_id":
        user_id = user_key_from_text(row.value)
        if user_id is None:
            row.fail(RowProblem.MALFORMED, f"“{row.value[:40]}” is not a user id")
        else:
            row.key = str(user_id)
    elif row.column == "email":
        try:
            validate_email(row.value)
        except ValidationError:
            row.fail(RowProblem.MALFORMED, f"“{row.value}” is not an email address")
        else:
            row.key = row.value.lower()
    else:
        try:
            row.key = normalize_phone(row.value)
        except ValidationError:
            row.fail(
                RowProblem.MALFORMED,
                f"“{row.value}” is not a phone number in international form (+86…)",
            )


def _mark_duplicates(rows: list[ImportRow], key_of: Callable[[ImportRow], tuple[str, str]]) -> None:
    first_line: dict[tuple[str, str], int] = {}
    for row in rows:
        if row.problem is not None:
            continue
        key = key_of(row)
        if key in first_line:
            row.fail(RowProblem.DUPLICATE_ROW, f"the same user as line {first_line[key]}")
        else:
            first_line[key] = row.line


def _resolve_users(rows: list[ImportRow]) -> None:
    pending = [row for row in rows if row.problem is None]
    found: dict[tuple[str, str], dict[int, bool]] = {}  # (column, key) -> {user id: is active}

    def remember(column: str, rows: Iterable[tuple[int, str, bool]]) -> None:
        for pk, key, is_active in rows:
            key = {"user_id": str(pk), "email": key.lower(), "phone": key}[column]
            found.setdefault((column, key), {})[pk] = is_active

    users = get_user_model()._default_manager
    for column in ("user_id", "email", "phone"):
        # Exact matches first: they use the primary key and the profiles' email and phone
        # indexes (contact points live on notifier.Recipient).
        keys = {row.key for row in pending if row.column == column}
        if column == "email":
            keys |= {row.value for row in pending if row.column == column}
        for chunk in _chunks(sorted(keys), IMPORT_CHUNK):
            if column == "user_id":
                remember(
                    column,
                    (
                        (pk, "", active)
                        for pk, active in users.filter(pk__in=chunk).values_list("pk", "is_active")
                    ),
                )
            else:
                remember(
                    column,
                    Recipient.objects.filter(**{f"{column}__in": chunk}).values_list(
                        "user_id", column, "user__is_active"
                    ),
                )
    # Addresses stored with capitals that the file writes differently: one scan for the rest.
    missing = sorted(
        {row.key for row in pending if row.column == "email" and ("email", row.key) not in found}
    )
    for chunk in _chunks(missing, CASE_INSENSITIVE_CHUNK):
        remember(
            "email",
            Recipient.objects.alias(email_lower=Lower("email"))
            .filter(email_lower__in=chunk)
            .values_list("user_id", "email", "user__is_active"),
        )

    erased = _erased_users(pk for matches in found.values() for pk in matches)
    for row in pending:
        matches = found.get((row.column, row.key), {})
        if not matches:
            row.fail(RowProblem.UNKNOWN_USER, f"no user with {row.column} {row.value}")
        elif len(matches) > 1:
            row.fail(
                RowProblem.AMBIGUOUS,
                f"{len(matches)} users have {row.column} {row.value}; use user_id",
            )
        else:
            [(pk, is_active)] = matches.items()
            if pk in erased:
                row.fail(RowProblem.ERASED, f"user {pk}: {ERASED_MESSAGE}")
            elif is_active:
                row.user_id = pk
            else:
                row.fail(RowProblem.INACTIVE_USER, f"user {pk} is deactivated")


ERASED_MESSAGE = (
    "erased at their request (GDPR/PIPL); an admin can lift the suppression if they came back"
)


def _mark_erased_identifiers(rows: list[ImportRow]) -> None:
    """Rows naming an email address or phone number of an erased person: refused, whoever
    holds that address now (notifier.services.erasure keeps their digests)."""
    for column, kind in (("email", IdentifierKind.EMAIL), ("phone", IdentifierKind.PHONE)):
        named = [row for row in rows if row.problem is None and row.column == column]
        if not named:
            continue
        erased = suppressed_digests(kind, {row.key for row in named})
        for row in named:
            if row.key in erased:
                row.fail(RowProblem.ERASED, f"{row.column} {row.value}: {ERASED_MESSAGE}")


def _erased_users(user_ids: Iterable[UserKey]) -> set[UserKey]:
    ids = sorted(set(user_ids))
    erased: set[UserKey] = set()
    for chunk in _chunks(ids, IMPORT_CHUNK):
        erased |= set(
            Recipient.objects.filter(user_id__in=chunk, erased_at__isnull=False).values_list(
                "user_id", flat=True
            )
        )
    return erased


def _mark_members(rows: list[ImportRow], *, segment_id: int) -> None:
    by_user = {row.user_id: row for row in rows if row.user_id is not None}
    for chunk in _chunks(list(by_user), IMPORT_CHUNK):
        for user_id in SegmentMember.objects.filter(
            segment_id=segment_id, user_id__in=chunk
        ).values_list("user_id", flat=True):
            by_user[user_id].already_member = True


def _chunks(items: Sequence[T], size: int) -> Iterator[Sequence[T]]:
    for start in range(0, len(items), size):
        yield items[start : start + size]
