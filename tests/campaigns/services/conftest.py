"""The people of the campaign service tests: a marketer who prepares, a lead who approves."""

from __future__ import annotations

import uuid

import pytest
from django.contrib.auth.models import Group

from tests.factories import UserFactory


@pytest.fixture
def marketer(roles):
    user = UserFactory(username=f"marketer-{uuid.uuid4().hex[:6]}", is_staff=True)
    user.groups.add(Group.objects.get(name="Marketer"))
    return user


@pytest.fixture
def lead(roles):
    user = UserFactory(username=f"lead-{uuid.uuid4().hex[:6]}", is_staff=True)
    user.groups.add(Group.objects.get(name="Marketing lead"))
    return user
