"""Erasure in a host project whose user model is its own (UUID keys): Notifier empties its profile,
suppresses the identifiers and refuses the person, and leaves the host's user row as it is.
Run by tests/test_host_project.py in a pytest process of its own."""

from __future__ import annotations

import pytest
from django.contrib.auth import get_user_model

from notifier.api import notify
from notifier.errors import RecipientErased
from notifier.models import Recipient, recipient_for
from notifier.services.erasure import recipient_erase, recipient_export, suppressed

pytestmark = pytest.mark.django_db


def test_a_host_users_erasure_leaves_the_host_user_alone():
    model = get_user_model()
    user = model._default_manager.create_user(email="host.person@example.org", password="x")
    Recipient.objects.filter(user=user).update(external_id="shop-42", phone="+8613800138777")
    export = recipient_export(recipient_for(user))
    assert export["user"]["email"] == "host.person@example.org"
    report = recipient_erase(recipient_for(user), by="t", reason="r")
    user.refresh_from_db()
    assert user.email == "host.person@example.org" and user.is_active
    assert Recipient.objects.get(user=user).erased_at is not None
    assert report.identifiers == 3 and suppressed(external_id="shop-42")
    assert "shop.Customer" not in report.counts
    user.save()
    assert Recipient.objects.get(user=user).email == ""
    with pytest.raises(RecipientErased):
        notify(user, "account.password_changed", {"changed_at": "today"})
