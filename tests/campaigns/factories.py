"""factory-boy factories for the campaigns models."""

from __future__ import annotations

import factory

from campaigns.models import Segment, SegmentMember
from tests.factories import UserFactory


class SegmentFactory(factory.django.DjangoModelFactory):
    class Meta:
        model = Segment

    name = factory.Sequence(lambda n: f"Segment {n}")


class SegmentMemberFactory(factory.django.DjangoModelFactory):
    class Meta:
        model = SegmentMember

    segment = factory.SubFactory(SegmentFactory)
    user = factory.SubFactory(UserFactory)
