"""Dates, times and money in the recipient's locale and zone: the formatting itself (pure), and
the filters in the template sandbox, where a bad format is a RenderError in words."""

from __future__ import annotations

from datetime import UTC, date, datetime
from decimal import Decimal

import pytest

from notifier.local_formats import FormatError, format_money, format_problem, local_text
from notifier.rendering import environment
from notifier.sandbox import render_budget

EVENT = "2026-12-07 20:00"  # as campaign.event_at reaches the copy: already in the reader's zone


@pytest.mark.parametrize(
    ("locale", "kind", "expected"),
    [
        ("en", "datetime", "Monday 7 December, 8:00 pm"),
        ("en", "date", "Monday 7 December"),
        ("en", "time", "8:00 pm"),
        ("zh-hans", "datetime", "12月7日 星期一 20:00"),
        ("zh-hans-cn", "date", "12月7日 星期一"),
        ("zh", "time", "20:00"),
    ],
)
def test_a_moment_reads_as_its_reader_writes_it(locale, kind, expected):
    assert local_text(EVENT, kind=kind, locale=locale, time_zone="Asia/Shanghai") == expected


def test_a_moment_with_an_offset_is_shown_in_the_readers_zone():
    noon_utc = datetime(2026, 12, 7, 12, 0, tzinfo=UTC)
    assert local_text(noon_utc, kind="time", locale="zh-hans", time_zone="Asia/Shanghai") == (
        "20:00"
    )
    assert local_text(
        "2026-12-07T12:00:00Z", kind="datetime", locale="en", time_zone="America/New_York"
    ) == ("Monday 7 December, 7:00 am")


def test_other_locales_use_djangos_formats_for_them():
    assert local_text(EVENT, kind="date", locale="fr", time_zone="Europe/Paris") == (
        "7 décembre 2026"
    )


def test_a_format_of_ones_own_uses_the_readers_names():
    fmt = "%a %d %b %Y, %H:%M"
    assert local_text(EVENT, kind="date", locale="en", time_zone="UTC", fmt=fmt) == (
        "Mon 7 Dec 2026, 20:00"
    )
    assert local_text(EVENT, kind="date", locale="zh-hans", time_zone="UTC", fmt="%Y年%B%d日") == (
        "2026年12月7日"
    )


@pytest.mark.parametrize(
    ("fmt", "complaint"),
    [
        ("%%%", "a lone % at the end"),
        ("%q", "%q is not a date format code"),
        ("%-d", "%- is not a date format code"),
        ("x" * 101, "at most 100 characters"),
        (5, "text in quotes"),
    ],
)
def test_a_format_it_cannot_use_is_said_in_words(fmt, complaint):
    assert complaint in (format_problem(fmt) or "")
    with pytest.raises(FormatError, match="format"):
        local_text(EVENT, kind="date", locale="en", time_zone="UTC", fmt=fmt)


@pytest.mark.parametrize("value", ["next Tuesday", "", 42, None, ["2026-12-07"], "9" * 500])
def test_what_is_not_a_date_is_said_in_words(value):
    with pytest.raises(FormatError, match="is not a date or time"):
        local_text(value, kind="date", locale="en", time_zone="UTC")


@pytest.mark.parametrize(
    ("value", "zone"),
    [("0001-01-01T00:00+14:00", "UTC"), ("9999-12-31T23:00+00:00", "Asia/Shanghai")],
)
def test_a_moment_at_the_end_of_the_calendar_is_said_in_words(value, zone):
    with pytest.raises(FormatError, match="too close to year 1 or 9999"):
        local_text(value, kind="datetime", locale="en", time_zone=zone)


def test_a_day_has_no_time_of_day():
    assert local_text(date(2026, 12, 7), kind="date", locale="en", time_zone="UTC") == (
        "Monday 7 December"
    )
    with pytest.raises(FormatError, match="use localdate"):
        local_text("2026-12-07", kind="time", locale="en", time_zone="UTC")


@pytest.mark.parametrize(
    ("amount", "currency", "locale", "expected"),
    [
        (1234.5, "CNY", "en", "CN¥1,234.50"),
        (Decimal("1234.5"), "CNY", "zh-hans", "¥1,234.50"),
        ("99", "USD", "en", "$99.00"),
        (99, "USD", "zh-hans", "US$99.00"),
        (-5, "EUR", "en", "-€5.00"),
        (1500, "JPY", "en", "¥1,500"),
        (12, "CHF", "en", "CHF 12.00"),
    ],
)
def test_money_reads_as_its_reader_writes_it(amount, currency, locale, expected):
    assert format_money(amount, currency, locale=locale) == expected


@pytest.mark.parametrize(
    ("amount", "currency", "complaint"),
    [
        (5, None, "say which currency"),
        (5, "yuan", "not a currency code"),
        ("lots", "CNY", "not one"),
        (True, "CNY", "needs a number"),
        ("NaN", "CNY", "not an amount"),
        (10**20, "CNY", "not an amount"),
    ],
)
def test_money_it_cannot_write_is_said_in_words(amount, currency, complaint):
    with pytest.raises(FormatError, match=complaint):
        format_money(amount, currency, locale="en")


def render(source: str, **context):
    with render_budget(fresh=True):
        return environment().from_string(source).render(context)


def test_the_filters_work_in_the_sandbox_for_the_recipient():
    reader = {"locale": "zh-hans", "time_zone": "Asia/Shanghai"}
    text = render(
        '{{ event_at|localdatetime }} {{ price|money("CNY") }}',
        user=reader,
        event_at=EVENT,
        price=Decimal("88"),
    )
    assert text == "12月7日 星期一 20:00 ¥88.00"


def test_a_hostile_format_in_the_sandbox_is_an_error_in_words_not_a_crash():
    with pytest.raises(FormatError, match="lone %"):
        render('{{ x|localdate("%%%") }}', user={}, x=EVENT)
    # Django's way of writing a filter's argument is a Jinja syntax error, said as one.
    with pytest.raises(Exception, match="expected token"):
        environment().parse('{{ x|localdate:"%%%" }}')
