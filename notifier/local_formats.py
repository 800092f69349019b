"""Dates, times and money in a message, written the way its recipient reads them: the template
filters `localdate`, `localtime`, `localdatetime` and `money`, in the recipient's locale and time
zone (the `user.locale` and `user.time_zone` of the template's context).

    {{ campaign.event_at|localdatetime }}   en: Monday 7 December, 8:00 pm
                                            zh-hans: 12月7日 星期一 20:00
    {{ event_at|localdate }}                en: Monday 7 December     zh: 12月7日 星期一
    {{ event_at|localtime }}                en: 8:00 pm               zh: 20:00
    {{ event_at|localdate("%d/%m/%Y") }}    a format of one's own (FORMAT_CODES below)
    {{ amount|money("CNY") }}               en: CN¥1,234.50           zh: ¥1,234.50

A moment is a datetime, a date, or ISO text ("2026-12-07 20:00", "2026-12-07T12:00:00Z"). One
with an offset is shown in the recipient's zone; one without is taken as already in it (the
campaign's `event_at` is given so). English and Chinese are written out here; any other locale
uses Django's own formats for it. Babel would know every locale, but it is not a dependency,
and these two are the ones the customers of the seeds read.

Every filter raises `FormatError` in words for what it cannot read: the copy check says it
when the copy is saved (`format_problem`), and a render fails with it, never with a traceback.
"""

from __future__ import annotations

import re
from datetime import date, datetime
from decimal import Decimal, InvalidOperation
from typing import Any
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from django.conf import settings
from django.utils import formats, translation
from jinja2 import pass_context
from jinja2.runtime import Context


class FormatError(ValueError):
    """A value or format a formatting filter cannot use, said for the copy's author."""


EN_WEEKDAYS = ("Monday", "Tuesday", "Wednesday", "Thursday", "Friday", "Saturday", "Sunday")
EN_MONTHS = (
    "January",
    "February",
    "March",
    "April",
    "May",
    "June",
    "July",
    "August",
    "September",
    "October",
    "November",
    "December",
)
ZH_WEEKDAYS = ("星期一", "星期二", "星期三", "星期四", "星期五", "星期六", "星期日")
ZH_SHORT_WEEKDAYS = ("周一", "周二", "周三", "周四", "周五", "周六", "周日")

# The formats a template may write, strftime's letters (the same in every locale; the names
# they print are the recipient's): nothing that depends on the server's C library.
FORMAT_CODES = {
    "A": "weekday (Monday / 星期一)",
    "a": "short weekday (Mon / 周一)",
    "d": "day of the month (7)",
    "B": "month (December / 12月)",
    "b": "short month (Dec / 12月)",
    "m": "month number (12)",
    "Y": "year (2026)",
    "H": "hour, 24-hour clock (20)",
    "I": "hour, 12-hour clock (8)",
    "M": "minutes (05)",
    "p": "am or pm (pm / 下午)",
    "Z": "time zone (CST)",
    "%": "a % sign",
}
_CODE = re.compile(r"%(.?)", re.DOTALL)
MAX_FORMAT_CHARS = 100

# Per language: date, time, and how the two are joined.
DEFAULT_FORMATS = {
    "en": ("%A %d %B", "%I:%M %p", "{date}, {time}"),
    "zh": ("%m月%d日 %A", "%H:%M", "{date} {time}"),
}

# Currency symbols as each language writes them (the CLDR's): the reader's own currency bare,
# a foreign one told apart. Digits after the point: the ISO 4217 minor unit.
SYMBOLS = {
    "en": {"CNY": "CN¥", "USD": "$", "EUR": "€", "GBP": "£", "JPY": "¥", "HKD": "HK$"},
    "zh": {"CNY": "¥", "USD": "US$", "EUR": "€", "GBP": "£", "JPY": "JP¥", "HKD": "HK$"},
}
NO_MINOR_UNIT = frozenset({"JPY", "KRW", "VND", "CLP", "ISK"})
_CURRENCY = re.compile(r"[A-Z]{3}")
MAX_AMOUNT = Decimal(10) ** 15


def language_of(locale: str) -> str:
    return (locale or "en").lower().replace("_", "-").split("-")[0]


def zone_of(time_zone: str) -> ZoneInfo:
    try:
        return ZoneInfo(time_zone or settings.TIME_ZONE)
    except (ZoneInfoNotFoundError, ValueError):
        return ZoneInfo("UTC")


def format_problem(fmt: Any) -> str | None:
    """What is wrong with a date format a template gives, in words; None when it is usable."""
    if not isinstance(fmt, str):
        return f'a date format is text in quotes, e.g. localdate("%d %B"), not {fmt!r}'
    if len(fmt) > MAX_FORMAT_CHARS:
        return f"a date format may have at most {MAX_FORMAT_CHARS} characters"
    for match in _CODE.finditer(fmt):
        letter = match.group(1)
        if letter not in FORMAT_CODES:
            shown = f"%{letter}" if letter else "a lone % at the end"
            return f"{shown!s} is not a date format code; use " + ", ".join(
                f"%{code} {meaning}" for code, meaning in FORMAT_CODES.items()
            )
    return None


def as_moment(value: Any, zone: ZoneInfo) -> datetime | date:
    """The value as a datetime in `zone`, or a date; FormatError when it is neither, or when
    it is a moment so near year 1 or 9999 that the reader's clock would fall off the calendar."""
    if isinstance(value, datetime):
        try:
            return value.astimezone(zone) if value.tzinfo else value.replace(tzinfo=zone)
        except (OverflowError, ValueError):
            raise FormatError(
                f"{value.isoformat()} is too close to year 1 or 9999 to show in the "
                "customer's time zone"
            ) from None
    if isinstance(value, date):
        return value
    if isinstance(value, str) and 0 < len(value) <= 40:
        text = value.strip()
        try:
            parsed = datetime.fromisoformat(text.replace("Z", "+00:00"))
        except ValueError:
            pass
        else:
            if len(text) == 10:  # "2026-12-07": a day, not its midnight
                return parsed.date()
            return as_moment(parsed, zone)
    shown = repr(value) if len(repr(value)) <= 60 else repr(value)[:60] + "…"
    raise FormatError(
        f"{shown} is not a date or time; give a date like 2026-12-07 or 2026-12-07 20:00"
    )


def _field(code: str, moment: datetime | date, language: str) -> str:
    weekday, month = moment.weekday(), moment.month
    zh = language == "zh"
    if code == "A":
        return ZH_WEEKDAYS[weekday] if zh else EN_WEEKDAYS[weekday]
    if code == "a":
        return ZH_SHORT_WEEKDAYS[weekday] if zh else EN_WEEKDAYS[weekday][:3]
    if code in "Bb":
        if zh:
            return f"{month}月"
        return EN_MONTHS[month - 1] if code == "B" else EN_MONTHS[month - 1][:3]
    if code == "d":
        return str(moment.day)
    if code == "m":
        return str(month)
    if code == "Y":
        return str(moment.year)
    if code == "%":
        return "%"
    if not isinstance(moment, datetime):
        raise FormatError(f"%{code} needs a time of day, and this is a date only")
    if code == "H":
        return f"{moment.hour:02d}"
    if code == "I":
        return str(moment.hour % 12 or 12)
    if code == "M":
        return f"{moment.minute:02d}"
    if code == "p":
        if zh:
            return "上午" if moment.hour < 12 else "下午"
        return "am" if moment.hour < 12 else "pm"
    if code == "Z":
        return moment.tzname() or ""
    raise FormatError(format_problem(f"%{code}") or f"%{code} is not a date format code")


def format_moment(moment: datetime | date, fmt: str, language: str) -> str:
    problem = format_problem(fmt)
    if problem is not None:
        raise FormatError(problem)
    return _CODE.sub(lambda match: _field(match.group(1), moment, language), fmt)


def _django_format(moment: datetime | date, kind: str, locale: str) -> str:
    """Another language than those written out: Django's formats for it (or its defaults)."""
    with translation.override(locale):
        if kind == "date" or not isinstance(moment, datetime):
            return str(formats.date_format(moment, "DATE_FORMAT"))
        if kind == "time":
            return str(formats.time_format(moment, "TIME_FORMAT"))
        return str(formats.date_format(moment, "DATETIME_FORMAT"))


def local_text(
    value: Any, *, kind: str, locale: str, time_zone: str, fmt: str | None = None
) -> str:
    """`value` written for a reader of `locale` in `time_zone`: kind is "date", "time" or
    "datetime"; `fmt` a format of the template's own."""
    moment = as_moment(value, zone_of(time_zone))
    language = language_of(locale)
    if fmt is not None:
        return format_moment(moment, fmt, language)
    if kind != "date" and not isinstance(moment, datetime):
        raise FormatError(f"{value!r} is a date without a time of day: use localdate")
    if language not in DEFAULT_FORMATS:
        return _django_format(moment, kind, locale)
    date_fmt, time_fmt, joined = DEFAULT_FORMATS[language]
    if kind == "date":
        return format_moment(moment, date_fmt, language)
    if kind == "time":
        return format_moment(moment, time_fmt, language)
    return joined.format(
        date=format_moment(moment, date_fmt, language),
        time=format_moment(moment, time_fmt, language),
    )


def currency_problem(currency: Any) -> str | None:
    if currency is None:
        return 'say which currency, e.g. money("CNY")'
    if not isinstance(currency, str) or not _CURRENCY.fullmatch(currency):
        return f'{currency!r} is not a currency code; use three capital letters, e.g. "CNY"'
    return None


def format_money(amount: Any, currency: Any, *, locale: str) -> str:
    """An amount in `currency` as a reader of `locale` writes it: "CN¥1,234.50", "¥1,234.50"."""
    problem = currency_problem(currency)
    if problem is not None:
        raise FormatError(problem)
    if isinstance(amount, bool) or not isinstance(amount, int | float | Decimal | str):
        raise FormatError(f"money needs a number, not {type(amount).__name__}")
    try:
        number = Decimal(str(amount).strip()[:40]) if isinstance(amount, str) else Decimal(amount)
    except (InvalidOperation, ValueError):
        raise FormatError(f"money needs a number, and {str(amount)[:40]!r} is not one") from None
    if not number.is_finite() or abs(number) >= MAX_AMOUNT:
        raise FormatError(f"{str(amount)[:40]} is not an amount of money")
    places = 0 if currency in NO_MINOR_UNIT else 2
    digits = f"{abs(number):,.{places}f}"
    symbols = SYMBOLS.get(language_of(locale), SYMBOLS["en"])
    symbol = symbols.get(currency)
    text = f"{symbol}{digits}" if symbol else f"{currency} {digits}"
    return f"-{text}" if number < 0 else text


# --- The filters ------------------------------------------------------------------------------


def _reader(context: Context) -> tuple[str, str]:
    """The recipient's locale and time zone, from the template's `user`."""
    user = context.get("user")
    if isinstance(user, dict):
        return str(user.get("locale") or "en"), str(user.get("time_zone") or "")
    return "en", ""


def _moment_filter(kind: str) -> Any:
    @pass_context
    def moment_filter(context: Context, value: Any, fmt: str | None = None) -> str:
        locale, time_zone = _reader(context)
        return local_text(value, kind=kind, locale=locale, time_zone=time_zone, fmt=fmt)

    moment_filter.__name__ = f"local{kind}"
    return moment_filter


@pass_context
def money_filter(context: Context, amount: Any, currency: Any = None) -> str:
    locale, _ = _reader(context)
    return format_money(amount, currency, locale=locale)


FILTERS = {
    "localdate": _moment_filter("date"),
    "localtime": _moment_filter("time"),
    "localdatetime": _moment_filter("datetime"),
    "money": money_filter,
}
MOMENT_FILTERS = frozenset({"localdate", "localtime", "localdatetime"})
