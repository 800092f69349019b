"""The rate grammar shared by provider limits and request limits, and its one error."""

from __future__ import annotations

import re

import pytest

from notifier.rates import InvalidRate, Rate, RateText, parse_rate_text


@pytest.mark.parametrize(
    ("text", "amount", "period", "per_second"),
    [
        ("10/s", 10, "s", 10.0),
        ("600/m", 600, "m", 10.0),
        ("3600/h", 3600, "h", 1.0),
        ("0.5/s", 0.5, "s", 0.5),
        ("90/m", 90, "m", 1.5),
        (" 25 / s ", 25, "s", 25.0),
    ],
)
def test_amount_per_second_minute_or_hour(text, amount, period, per_second):
    parsed = parse_rate_text(text)

    assert parsed == RateText(amount, period)
    assert parsed.per_second == per_second


@pytest.mark.parametrize(
    "text",
    [
        "",
        "10",
        "/s",
        "10/",
        "10/d",
        "10/S",
        "10 per s",
        "ten/s",
        "-1/s",
        "+1/s",
        "0/s",
        "0.0/m",
        "1e3/s",
        ".5/s",
        "5./s",
        "10/s/s",
        "10/sec",
        "\u0661\u0660/s",  # Arabic-Indic digits: ASCII only
        "off",
    ],
)
def test_anything_else_is_an_invalid_rate_quoting_it_and_showing_the_form(text):
    with pytest.raises(InvalidRate) as caught:
        parse_rate_text(text)

    message = str(caught.value)
    assert message.startswith(f"invalid rate {text!r}: ")
    assert "use <number>/<s|m|h> with a number above zero, e.g. '10/s'" in message


def test_an_invalid_rate_is_a_value_error():
    """Callers that caught ValueError before the typed error existed still catch it."""
    assert issubclass(InvalidRate, ValueError)


def test_a_whole_amount_where_it_is_also_a_bucket_size():
    assert parse_rate_text("30/m", whole=True) == RateText(30, "m")
    for bad in ("1.5/s", "30.0/m", "0/m"):
        with pytest.raises(InvalidRate, match=re.escape("use <whole number>/<s|m|h>")):
            parse_rate_text(bad, whole=True)


def test_text_that_is_not_a_string_is_an_invalid_rate_not_a_type_error():
    with pytest.raises(InvalidRate, match=r"invalid rate 10: use <number>"):
        parse_rate_text(10)  # type: ignore[arg-type]


def test_a_bucket_defaults_to_about_one_seconds_worth():
    assert Rate(20).burst == 20
    assert Rate(2.5).burst == 3
    assert Rate(0.2).burst == 1
    assert Rate(20, burst=5).burst == 5


@pytest.mark.parametrize(
    ("per_second", "burst", "message"),
    [
        (0.0, 0, "a rate must be a positive number per second, not 0.0"),
        (-1.0, 0, "a rate must be a positive number per second, not -1.0"),
        (float("inf"), 0, "a rate must be a positive number per second, not inf"),
        (float("nan"), 0, "a rate must be a positive number per second, not nan"),
        (1.0, -1, "a burst must be at least 1 token, not -1"),
    ],
)
def test_an_impossible_bucket_is_an_invalid_rate(per_second, burst, message):
    with pytest.raises(InvalidRate, match=re.escape(message)):
        Rate(per_second, burst)


def test_an_amount_too_large_for_a_float_is_an_invalid_rate():
    for whole in (False, True):
        with pytest.raises(InvalidRate, match="above zero"):
            parse_rate_text("9" * 400 + "/s", whole=whole)
