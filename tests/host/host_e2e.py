"""A product with Notifier installed, end to end: its own user model (UUID keys, no first name),
Notifier under /notifications/, its own Celery app and a real worker of it, PostgreSQL and Redis.

Run in a pytest process of its own, on the host's settings:

    python -m pytest --ds=tests.host.settings --confcutdir=tests/host tests/host/host_e2e.py

tests/test_host_project.py runs it so in the suite.
"""

from __future__ import annotations

from datetime import timedelta

import pytest
from django.contrib.auth.models import Group, Permission
from django.test import Client
from django.utils import timezone

from campaigns.admin.segments import MemberConfirmForm
from campaigns.models import Campaign, CampaignStatus, Segment, SegmentMember, VariantTemplate
from campaigns.services.fanout import steps_start_due
from campaigns.services.lifecycle import campaign_approve, campaign_create, campaign_submit
from campaigns.services.segments import RowProblem, segment_members_add, segment_members_preview
from channels.models import SandboxSend
from notifier.links import preferences_url
from notifier.models import (
    Consent,
    Delivery,
    InboxItem,
    Message,
    NotificationType,
    recipient_update,
)
from notifier.status import TERMINAL
from tests.host.conftest import wait_until
from tests.host.shop.models import Customer

pytestmark = pytest.mark.django_db(transaction=True)
SITE = "https://shop.example.com"


def customer(email: str, **profile: object) -> Customer:
    person = Customer.objects.create_user(email, "a-long-password", display_name=email[:3])
    recipient_update(person, time_zone="UTC", quiet_hours_enabled=False, **profile)
    return person


def finished(message_ids: list[int]) -> bool:
    deliveries = Delivery.objects.filter(message_id__in=message_ids)
    return deliveries.exists() and all(d.status in TERMINAL for d in deliveries)


def test_notify_from_a_host_view_reaches_the_inbox_email_and_sms(host_worker):
    mei = customer("mei@example.com", phone="+8613800138000")
    client = Client()
    client.force_login(mei)

    response = client.post("/shop/orders/A1042/ship/")

    assert response.status_code == 200, response.content
    message_id = response.json()["message"]
    wait_until(lambda: finished([message_id]), what="the shipping notice's deliveries")
    statuses = dict(Delivery.objects.filter(message_id=message_id).values_list("channel", "status"))
    # No app of hers has registered a device: push says so, the rest went.
    assert statuses == {"inapp": "sent", "email": "sent", "sms": "sent", "push": "suppressed"}
    assert InboxItem.objects.get(message_id=message_id).user_id == mei.pk
    sent = dict(
        SandboxSend.objects.filter(message_id=message_id, outcome="sent").values_list(
            "channel", "recipient"
        )
    )
    assert sent == {"email": "mei@example.com", "sms": "+8613800138000"}


def test_the_inbox_page_and_preference_centre_work_under_the_prefix(host_worker):
    ola = customer("ola@example.com")
    client = Client()
    client.force_login(ola)
    message_id = client.post("/shop/orders/B7/ship/").json()["message"]
    wait_until(lambda: finished([message_id]), what="the notice's deliveries")

    inbox = client.get("/notifications/inbox/")
    assert inbox.status_code == 200
    assert "B7" in inbox.content.decode()
    assert client.get("/notifications/api/inbox/").json()["items"][0]["title"]

    link = preferences_url(user_id=ola.pk)
    assert link.startswith(f"{SITE}/notifications/preferences/")
    page = Client().get(link.removeprefix(SITE))
    assert page.status_code == 200
    changed = Client().post(link.removeprefix(SITE), {"marketing_frequency": "off"})
    assert changed.status_code in (200, 302)
    ola.notifier_recipient.refresh_from_db()
    assert ola.notifier_recipient.marketing_frequency == "off"

    # Anonymous: the host's login page, with the way back.
    assert Client().get("/notifications/inbox/")["Location"].startswith("/accounts/login/")


def test_the_support_timeline_opens_a_host_user(host_worker):
    sam = customer("sam@example.com")
    client = Client()
    client.force_login(sam)
    message_id = client.post("/shop/orders/C3/ship/").json()["message"]
    wait_until(lambda: finished([message_id]), what="the notice's deliveries")
    agent = Customer.objects.create_superuser("agent@example.com", "a-long-password")
    support = Client()
    support.force_login(agent)

    page = support.get(f"/admin/notifier/recipient/{sam.notifier_recipient.pk}/customer/")

    assert page.status_code == 200
    text = page.content.decode()
    assert "order.shipped" in text and "sam@example.com" in text


def test_a_campaign_to_a_segment_of_host_users_goes_out(host_worker):
    fans = [customer(f"fan{n}@example.com", interest_tags=["winter"]) for n in range(3)]
    customer("other@example.com", interest_tags=["summer"])
    for fan in fans:
        Consent.objects.create(
            user=fan, channel="all", granted=True, at=timezone.now(), source="test", wording="x"
        )
    marketer = Customer.objects.create_user("marketer@example.com", "pw", is_staff=True)
    lead = Customer.objects.create_user("lead@example.com", "pw", is_staff=True)
    for person, perms in ((marketer, []), (lead, ["approve_campaign"])):
        group = Group.objects.create(name=f"g-{person.email}")
        group.permissions.add(*Permission.objects.filter(content_type__app_label="campaigns"))
        group.permissions.add(*Permission.objects.filter(codename__in=perms))
        person.groups.add(group)
    segment = Segment.objects.create(name="Winter fans", tags_any=["winter"])
    campaign = campaign_create(
        name="Winter sale",
        category=NotificationType.objects.get(pk="promo.flash_sale"),
        created_by=marketer,
        segment=segment,
        event_at=timezone.now() + timedelta(hours=1, minutes=5),
        channels=["inapp"],
        variables={"headline": "30% off"},
        plan=[("last call", -60)],
    )
    for variant in [v for s in campaign.steps.all() for v in s.variants.all()]:
        VariantTemplate.objects.create(
            variant=variant, channel="inapp", title="{{ headline }}", body="Winter sale"
        )
    campaign_submit(campaign=campaign, by=marketer)
    campaign_approve(
        campaign=Campaign.objects.get(pk=campaign.pk), by=Customer.objects.get(pk=lead.pk)
    )

    started = steps_start_due(now=timezone.now() + timedelta(minutes=6))

    assert started.started
    wait_until(
        lambda: Message.objects.filter(campaign=campaign).count() == len(fans),
        what="the campaign's messages",
    )
    ids = list(Message.objects.filter(campaign=campaign).values_list("pk", flat=True))
    wait_until(lambda: finished(ids), what="the campaign's deliveries")
    assert set(Message.objects.filter(campaign=campaign).values_list("user_id", flat=True)) == {
        fan.pk for fan in fans
    }
    assert Campaign.objects.get(pk=campaign.pk).status in (CampaignStatus.RUNNING, "done")


def test_members_are_imported_by_their_uuid_and_support_finds_them_by_address(transactional_db):
    fans = [customer(f"imp{n}@example.com") for n in range(2)]
    segment = Segment.objects.create(name="VIP list", use_member_list=True)
    csv = ("user_id\n" + "\n".join(str(fan.pk) for fan in fans) + "\n12345\n").encode()

    # A marketer's file names people by user_id only: here, the customers' UUIDs.
    preview = segment_members_preview(segment=segment, data=csv, by_contact=False)

    assert sorted(map(str, preview.user_ids_to_add)) == sorted(str(fan.pk) for fan in fans)
    assert [row.problem for row in preview.errors] == [RowProblem.MALFORMED]
    token = MemberConfirmForm.token_for(segment=segment, user_ids=preview.user_ids_to_add)
    confirm = MemberConfirmForm({"token": token}, segment=segment)
    assert confirm.is_valid(), confirm.errors
    segment_members_add(segment=segment, user_ids=confirm.cleaned_data["token"])
    assert set(SegmentMember.objects.values_list("user_id", flat=True)) == {f.pk for f in fans}

    # Support searches the list by address (the profile's: Customer has no username).
    agent = Customer.objects.create_superuser("support@example.com", "a-long-password")
    support = Client()
    support.force_login(agent)
    page = support.get("/admin/campaigns/segmentmember/", {"q": "imp0@"})
    assert page.status_code == 200
    assert "imp0@example.com" in page.content.decode()
    assert "imp1@example.com" not in page.content.decode()
