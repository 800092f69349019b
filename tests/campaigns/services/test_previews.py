"""Previews and test sends: the copy as a user would get it, and "send test to me" through the
real pipeline, past quiet hours, caps and consent."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime

import pytest
import time_machine

from campaigns.models import Segment, StepVariant, VariantTemplate
from campaigns.services.lifecycle import CampaignError, campaign_create
from campaigns.services.previews import campaign_context, variant_preview, variant_send_test
from channels.base import Channel, Content
from notifier.links import read_preferences_token, read_unsubscribe_token
from notifier.models import (
    Consent,
    Delivery,
    InboxItem,
    Message,
    NotificationType,
    recipient_update,
)
from notifier.queues import Lane
from notifier.rendering import RenderError
from notifier.services.deliveries import deliveries_deliver
from notifier.services.pipeline import messages_prepare
from notifier.status import DeliveryStatus
from tests.factories import UserFactory

pytestmark = pytest.mark.django_db
EVENT = datetime(2026, 11, 11, 4, 0, tzinfo=UTC)  # 12:00 in Shanghai
NOW = datetime(2026, 11, 1, 9, 0, tzinfo=UTC)


def write_copy(variant: StepVariant, channel: str, locale: str = "", **parts: str) -> None:
    VariantTemplate.objects.update_or_create(
        variant=variant, channel=channel, locale=locale, defaults=parts
    )


@pytest.fixture
def campaign(marketer):
    with time_machine.travel(NOW):
        campaign = campaign_create(
            name="Double 11",
            category=NotificationType.objects.get(pk="promo.flash_sale"),
            created_by=marketer,
            segment=Segment.objects.create(name=uuid.uuid4().hex),
            event_at=EVENT,
            channels=["inapp", "email"],
            variables={"headline": "50% off"},
        )
    for step in campaign.steps.all():
        variant = step.variants.get()
        write_copy(
            variant,
            "inapp",
            title="{{ campaign.name }}: {{ headline }}",
            body="Hi {{ user.first_name }}, from {{ campaign.event_at }}",
            link="{{ site_url }}/sale",
        )
        write_copy(
            variant,
            "email",
            subject="{{ headline }}",
            body="Hi {{ user.name }}\n{{ unsubscribe_url }}",
            html="<p>Hi <b>{{ user.first_name }}</b></p><a href='{{ preferences_url }}'>prefs</a>",
        )
    return campaign


def notice(campaign) -> StepVariant:
    return StepVariant.objects.select_related("step__campaign").get(
        step__campaign=campaign, step__name="Notice"
    )


# --- Context and preview -------------------------------------------------------------------------


def test_the_context_is_what_the_pipeline_gives_a_campaign_message(campaign, settings):
    user = UserFactory(first_name="Mei", time_zone="Asia/Shanghai", locale="zh-hans")
    context = campaign_context(campaign, user)
    assert context["headline"] == "50% off"
    assert context["user"]["first_name"] == "Mei"
    assert context["campaign"] == {"name": "Double 11", "event_at": "2026-11-11 12:00"}
    assert context["site_name"] == settings.NOTIFIER_SITE_NAME
    assert read_preferences_token(context["preferences_url"].rstrip("/").rsplit("/", 1)[1]) == (
        user.pk
    )


def test_a_preview_renders_the_variants_copy_for_the_user(campaign):
    user = UserFactory(first_name="Mei", time_zone="Asia/Shanghai")
    content = variant_preview(variant=notice(campaign), user=user, channel=Channel.INAPP)
    assert isinstance(content, Content)
    assert content.title == "Double 11: 50% off"
    assert content.body == "Hi Mei, from 2026-11-11 12:00"
    assert content.link.endswith("/sale")


def test_a_preview_uses_the_users_locale_and_falls_back_to_the_default_copy(campaign):
    variant = notice(campaign)
    write_copy(variant, "inapp", "zh-hans", title="双十一", body="{{ user.first_name }}, 你好")
    chinese = UserFactory(first_name="Mei", locale="zh-hans")
    german = UserFactory(first_name="Lena", locale="de")
    zh = variant_preview(variant=variant, user=chinese, channel=Channel.INAPP)
    de = variant_preview(variant=variant, user=german, channel=Channel.INAPP)
    assert isinstance(zh, Content) and isinstance(de, Content)
    assert (zh.title, zh.body) == ("双十一", "Mei, 你好")
    assert de.title == "Double 11: 50% off"


def test_a_name_never_falls_back_to_a_username_that_is_an_address(
    campaign, published, django_capture_on_commit_callbacks
):
    """{{ user.name }} of a customer who signed up with an email or phone and gave no name is
    empty, in the preview a marketer reads and in the message the pipeline sends alike."""
    for username in ("zoe.quinn@example.com", "+86 159 1234 5678"):
        customer = UserFactory(username=username, first_name="", last_name="")
        content = variant_preview(variant=notice(campaign), user=customer, channel=Channel.EMAIL)
        assert isinstance(content, Content)
        assert content.body.startswith("Hi \n")
        with django_capture_on_commit_callbacks(execute=True):
            message = variant_send_test(variant=notice(campaign), to_user=customer)
            messages_prepare(message_ids=[message.pk])
        sent = Delivery.objects.get(message=message, channel="email").content
        assert sent["body"].startswith("Hi \n"), sent["body"]
    named = UserFactory(username="zoe@example.org", first_name="Zoe", last_name="Quinn")
    content = variant_preview(variant=notice(campaign), user=named, channel=Channel.EMAIL)
    assert isinstance(content, Content) and content.body.startswith("Hi Zoe Quinn\n")


def test_a_channel_without_copy_previews_as_an_error_not_an_exception(campaign):
    result = variant_preview(variant=notice(campaign), user=UserFactory(), channel=Channel.SMS)
    assert isinstance(result, RenderError)
    assert "no sms copy" in str(result)


def test_links_in_a_preview_can_be_made_out_to_the_viewer(campaign, marketer):
    customer = UserFactory()
    content = variant_preview(
        variant=notice(campaign), user=customer, channel=Channel.EMAIL, links_user_id=marketer.pk
    )
    assert isinstance(content, Content)
    unsubscribe = content.body.splitlines()[-1].rstrip("/").rsplit("/", 1)[1]
    claim = read_unsubscribe_token(unsubscribe)
    assert (claim.user_id, claim.category, claim.channel) == (
        marketer.pk,
        "promo.flash_sale",
        "email",
    )
    assert "/preferences/" in content.html


# --- Send test to me ------------------------------------------------------------------------------


def test_each_test_send_is_a_new_test_message_of_the_variant(campaign, marketer, published):
    variant = notice(campaign)
    first = variant_send_test(variant=variant, to_user=marketer)
    second = variant_send_test(variant=variant, to_user=marketer)
    assert first.pk != second.pk
    stored = Message.objects.get(pk=first.pk)
    assert stored.is_test
    assert (stored.user_id, stored.type_id) == (marketer.pk, "promo.flash_sale")
    assert (stored.campaign_id, stored.step_id, stored.variant_id) == (
        campaign.pk,
        variant.step_id,
        variant.pk,
    )
    assert stored.channels == ["inapp", "email"]
    assert stored.context == {"headline": "50% off"}
    # The bulk lane: a test renders the marketer's copy, which must never hold up receipts.
    assert stored.lane == Lane.BULK
    assert stored.idempotency_key != Message.objects.get(pk=second.pk).idempotency_key


def test_a_test_send_of_incomplete_copy_is_refused_and_writes_nothing(campaign, marketer):
    variant = notice(campaign)
    VariantTemplate.objects.filter(variant=variant, channel="email").delete()
    with pytest.raises(CampaignError, match="write the email copy"):
        variant_send_test(variant=variant, to_user=marketer)
    assert not Message.objects.filter(campaign=campaign).exists()


def test_a_test_send_reaches_the_marketer_at_night_over_the_cap_without_consent(
    campaign, marketer, published, django_capture_on_commit_callbacks
):
    # Quiet hours on, as the model has them.
    recipient_update(marketer, time_zone="Asia/Shanghai", marketing_frequency="off")
    assert not Consent.objects.filter(user=marketer).exists()
    night = datetime(2026, 11, 1, 16, 0, tzinfo=UTC)  # midnight in Shanghai
    with time_machine.travel(night), django_capture_on_commit_callbacks(execute=True):
        message = variant_send_test(variant=notice(campaign), to_user=marketer)
    assert published.test_sends == [[message.pk]]  # on their own queue of the bulk lane
    assert published.prepare == []
    with time_machine.travel(night), django_capture_on_commit_callbacks(execute=True):
        messages_prepare(message_ids=[message.pk])
    with time_machine.travel(night):
        deliveries_deliver(delivery_ids=published.delivered_ids())
    deliveries = dict(Delivery.objects.filter(message=message).values_list("channel", "status"))
    assert deliveries == {"inapp": DeliveryStatus.SENT, "email": DeliveryStatus.SENT}
    item = InboxItem.objects.get(user=marketer, message=message)
    assert item.title == "[Test] Double 11: 50% off"  # marked as a test
