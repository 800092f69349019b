"""How customers are named: never by a username that is their email address or phone number."""

from __future__ import annotations

import pytest

from notifier.models import User
from notifier.models.users import display_name, username_is_contact


@pytest.mark.parametrize(
    ("first", "last", "username", "name"),
    [
        ("Zoe", "Quinn", "zoe.quinn@example.com", "Zoe Quinn"),
        ("Zoe", "", "zoe.quinn@example.com", "Zoe"),
        ("", "Quinn", "zoe.quinn@example.com", "Quinn"),
        ("", "", "zoe.quinn@example.com", ""),
        ("", "", "zoe.quinn\uff20example.com", ""),  # a fullwidth at sign reads the same
        ("", "", "+8615912345678", ""),
        ("", "", "+86 159-1234-5678", ""),
        ("", "", "(021) 6123 4567", ""),
        (
            "",
            "",
            "\uff11\uff15\uff19\uff11\uff12\uff13\uff14\uff15\uff16\uff17\uff18",
            "",
        ),  # fullwidth digits
        ("", "", "zoe_q", "zoe_q"),
        ("", "", "player12345", "player12345"),
        ("", "", "1999", "1999"),  # too short for a phone number
    ],
)
def test_display_name_is_the_name_else_a_username_that_is_no_address(first, last, username, name):
    user = User(first_name=first, last_name=last, username=username)
    assert display_name(user) == name
    if not first and not last:
        assert username_is_contact(username) == (name == "")
