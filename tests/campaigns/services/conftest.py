"""The people of the campaign service tests: a marketer who prepares, a lead who approves."""

from __future__ import annotations

import pytest

from tests.factories import staff_member


@pytest.fixture
def marketer(roles):
    return staff_member("Marketer")


@pytest.fixture
def lead(roles):
    return staff_member("Marketing lead")
