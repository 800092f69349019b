"""Every admin page x every role: allowed or denied exactly as the role matrix says.

The pages are discovered, not listed by hand: every ModelAdmin in `admin.site._registry` (its
changelist, add, change, delete and history pages), every extra URL its `get_urls()` adds
(delivery history, funnel, preview, send test, CSV import, ...), every admin action, and the
site's own URLs. The expectations below are written independently of notifier/roles.py, in
terms of what each person may do; a page, action or model that is not placed here fails the
test, so a new admin page cannot ship without someone deciding who may open it.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from datetime import UTC, datetime, time, timedelta
from typing import Any

import pytest
from django.contrib import admin
from django.contrib.auth.models import Group
from django.db.models import Model
from django.test import Client, RequestFactory
from django.urls import reverse
from django_celery_beat.models import (
    ClockedSchedule,
    CrontabSchedule,
    IntervalSchedule,
    PeriodicTask,
    SolarSchedule,
)

from campaigns.models import AudienceThresholds, Campaign, Segment, SegmentMember, StepVariant
from campaigns.services.lifecycle import campaign_create
from notifier import dispatch
from notifier.api import notify
from notifier.events_out.sending import endpoint_create
from notifier.models import (
    ApiKey,
    Consent,
    DateSeries,
    DeadLetter,
    Delivery,
    Device,
    Digest,
    DigestCadence,
    ErasedIdentifier,
    ErasureRecord,
    FrequencyCounter,
    InboxItem,
    Message,
    NotificationType,
    Preference,
    Recipient,
    RecipientDate,
    RefusedCall,
    RoutingRule,
    Snooze,
    Topic,
    TopicSend,
    TopicSnooze,
    User,
    WebhookAttempt,
    WebhookEndpoint,
    recipient_for,
)
from notifier.models.providers import (
    EventOutcome,
    ProviderEvent,
    SuppressedAddress,
    SuppressionReason,
)
from notifier.roles import roles_sync
from notifier.services.api_keys import api_key_create
from notifier.services.deliveries import deliveries_deliver
from notifier.services.erasure import recipient_erase
from notifier.services.pipeline import messages_prepare
from notifier.services.preferences import PreferenceChange, consent_give, preferences_update
from notifier.status import DeliveryStatus
from tests.factories import DeviceFactory, UserFactory, order_context

pytestmark = pytest.mark.django_db

# --- Who -----------------------------------------------------------------------------------------

ANON, STAFF, SUP, ADM = "anonymous", "staff", "Support", "Admin"
MKT, LEAD = "Marketer", "Marketing lead"
PEOPLE = (ANON, STAFF, MKT, LEAD, SUP, ADM)
NOBODY: frozenset[str] = frozenset()
ADMIN_ONLY = frozenset({ADM})
SUPPORT_ADMIN = frozenset({SUP, ADM})
MARKETING = frozenset({MKT, LEAD, ADM})
MARKETING_SUPPORT = frozenset({MKT, LEAD, SUP, ADM})


@dataclass(frozen=True)
class Access:
    """Who may see the list and an object, add, edit (the change page with Save), delete."""

    view: frozenset[str]
    add: frozenset[str]
    change: frozenset[str]
    delete: frozenset[str]


def admin_only() -> Access:
    return Access(ADMIN_ONLY, ADMIN_ONLY, ADMIN_ONLY, ADMIN_ONLY)


def read_only(view: frozenset[str]) -> Access:
    """The pipeline's records: seen by some, edited and deleted by nobody, Admin included."""
    return Access(view, NOBODY, NOBODY, NOBODY)


MODELS: dict[type[Model], Access] = {
    Group: admin_only(),
    PeriodicTask: admin_only(),
    ClockedSchedule: admin_only(),
    CrontabSchedule: admin_only(),
    SolarSchedule: admin_only(),
    IntervalSchedule: admin_only(),
    # Marketers never open the customer list: no raw contact export.
    User: Access(SUPPORT_ADMIN, ADMIN_ONLY, ADMIN_ONLY, ADMIN_ONLY),
    # The profiles: contact points, so the same people; made on first use, never added.
    Recipient: Access(SUPPORT_ADMIN, NOBODY, ADMIN_ONLY, ADMIN_ONLY),
    # Keys of the service API: Admins make and revoke them; a revoked key stays listed.
    ApiKey: Access(ADMIN_ONLY, ADMIN_ONLY, ADMIN_ONLY, NOBODY),
    # Erasure's audit trail and suppression list: Admins read them (and lift a suppression).
    ErasureRecord: read_only(ADMIN_ONLY),
    ErasedIdentifier: read_only(ADMIN_ONLY),
    # Calls to the Celery task notifier.notify that were refused: for the operator.
    RefusedCall: read_only(ADMIN_ONLY),
    # Outbound webhooks: where the product's systems are told what happened, with a signing
    # secret on the page; Admins only. Each request made is the pipeline's record.
    WebhookEndpoint: admin_only(),
    WebhookAttempt: read_only(ADMIN_ONLY),
    Message: read_only(SUPPORT_ADMIN),
    Delivery: read_only(SUPPORT_ADMIN),
    DeadLetter: read_only(SUPPORT_ADMIN),
    InboxItem: read_only(SUPPORT_ADMIN),
    Preference: read_only(SUPPORT_ADMIN),
    DigestCadence: read_only(SUPPORT_ADMIN),
    Consent: read_only(SUPPORT_ADMIN),
    FrequencyCounter: read_only(ADMIN_ONLY),
    Snooze: read_only(ADMIN_ONLY),
    # A code-defined series: only is_active may change, and it cannot be deleted.
    DateSeries: Access(MARKETING_SUPPORT, ADMIN_ONLY, ADMIN_ONLY, NOBODY),
    RecipientDate: read_only(SUPPORT_ADMIN),
    Digest: read_only(ADMIN_ONLY),
    Topic: read_only(ADMIN_ONLY),
    TopicSend: read_only(ADMIN_ONLY),
    TopicSnooze: read_only(ADMIN_ONLY),
    # Written by provider webhooks only; an admin lifts a suppression once the mailbox works.
    SuppressedAddress: Access(SUPPORT_ADMIN, NOBODY, NOBODY, ADMIN_ONLY),
    ProviderEvent: read_only(SUPPORT_ADMIN),
    Device: Access(SUPPORT_ADMIN, ADMIN_ONLY, ADMIN_ONLY, ADMIN_ONLY),
    # The object is a code-defined type: only is_active may change, and it cannot be deleted.
    NotificationType: Access(MARKETING_SUPPORT, ADMIN_ONLY, ADMIN_ONLY, NOBODY),
    RoutingRule: Access(frozenset({MKT, LEAD, ADM}), ADMIN_ONLY, ADMIN_ONLY, ADMIN_ONLY),
    Segment: Access(MARKETING_SUPPORT, MARKETING, MARKETING, MARKETING),
    # Support has no business with imported contact lists.
    SegmentMember: Access(MARKETING, MARKETING, MARKETING, MARKETING),
    AudienceThresholds: Access(MARKETING_SUPPORT, NOBODY, MARKETING, NOBODY),
    Campaign: Access(MARKETING_SUPPORT, MARKETING, MARKETING, MARKETING),
    # Variants are added with their step or by "copy"; the object is its step's only variant,
    # so nobody may delete it.
    StepVariant: Access(MARKETING_SUPPORT, NOBODY, MARKETING, NOBODY),
}

# Extra admin URLs from get_urls(): url name -> (method, who may use it). A POST that a person
# may make is one that would do its work (it may still refuse for a business reason).
EXTRA_PAGES: dict[str, tuple[str, frozenset[str]]] = {
    "notifier_user_customer": ("GET", SUPPORT_ADMIN),
    # The customer page's fixes (an empty POST is refused as an unknown fix, 400, for them).
    "notifier_user_customer:POST": ("POST", SUPPORT_ADMIN),
    "notifier_user_delivery_history": ("GET", SUPPORT_ADMIN),  # leads to the customer page
    "notifier_user_admin_log": ("GET", SUPPORT_ADMIN),
    "notifier_recipient_customer": ("GET", SUPPORT_ADMIN),
    "notifier_recipient_customer:POST": ("POST", SUPPORT_ADMIN),
    "notifier_recipient_delivery_history": ("GET", SUPPORT_ADMIN),
    "notifier_recipient_admin_log": ("GET", SUPPORT_ADMIN),
    "auth_user_password_change": ("GET", ADMIN_ONLY),  # Django's own, named "auth_user_..."
    # Notifying a topic's followers (notifier.notify_topic): an empty POST is a form with errors.
    "notifier_topic_notify": ("GET", ADMIN_ONLY),
    "notifier_topic_notify:POST": ("POST", ADMIN_ONLY),
    "campaigns_segment_count_new": ("GET", MARKETING_SUPPORT),
    "campaigns_segment_count": ("GET", MARKETING_SUPPORT),
    "campaigns_segment_import": ("GET", MARKETING),
    "campaigns_campaign_stats": ("GET", MARKETING_SUPPORT),
    "campaigns_campaign_stats:POST": ("POST", MARKETING),  # "refresh now"
    # Live progress of a sending step (JSON polled by the campaign and funnel pages) and the
    # calendar of campaigns: read-only, for everyone who reads campaigns.
    "campaigns_campaign_progress": ("GET", MARKETING_SUPPORT),
    "campaigns_campaign_calendar": ("GET", MARKETING_SUPPORT),
    "campaigns_campaign_preview": ("GET", MARKETING_SUPPORT),
    "campaigns_campaign_forecast": ("GET", MARKETING_SUPPORT),  # counts only, no one's data
    "campaigns_campaign_test": ("POST", MARKETING),
    "campaigns_campaign_cancel": ("GET", MARKETING),
    "campaigns_campaign_move": ("POST", MARKETING),
    "campaigns_campaign_action": ("POST", MARKETING),
    "campaigns_stepvariant_copy": ("POST", MARKETING),
    # The variant editor's live preview: Support reads the saved copy there too.
    "campaigns_stepvariant_live_preview": ("POST", MARKETING_SUPPORT),
    "campaigns_campaign_write": ("GET", MARKETING),
    # Nothing is past on this campaign: the drop is refused in words, no 403.
    "campaigns_campaign_drop_step": ("POST", MARKETING),
}

# Admin actions (the changelist's "Action" menu), per admin: action name -> who is offered it.
ACTIONS: dict[type[Model], dict[str, frozenset[str]]] = {
    Group: {"delete_selected": ADMIN_ONLY},
    PeriodicTask: {
        "delete_selected": ADMIN_ONLY,
        "enable_tasks": ADMIN_ONLY,
        "disable_tasks": ADMIN_ONLY,
        "toggle_tasks": ADMIN_ONLY,
        "run_tasks": ADMIN_ONLY,
    },
    ClockedSchedule: {"delete_selected": ADMIN_ONLY},
    CrontabSchedule: {"delete_selected": ADMIN_ONLY},
    SolarSchedule: {"delete_selected": ADMIN_ONLY},
    IntervalSchedule: {"delete_selected": ADMIN_ONLY},
    User: {"delete_selected": ADMIN_ONLY},
    # Erasing a person and exporting all their data (GDPR/PIPL): Admins only.
    Recipient: {
        "delete_selected": ADMIN_ONLY,
        "erase_selected": ADMIN_ONLY,
        "export_json": ADMIN_ONLY,
    },
    ErasureRecord: {"delete_selected": NOBODY},
    ErasedIdentifier: {"delete_selected": NOBODY, "lift": ADMIN_ONLY},
    ApiKey: {"delete_selected": NOBODY, "revoke": ADMIN_ONLY},
    RefusedCall: {"delete_selected": NOBODY},
    WebhookEndpoint: {
        "delete_selected": ADMIN_ONLY,
        "rotate_secret": ADMIN_ONLY,
        "send_test_event": ADMIN_ONLY,
        "enable": ADMIN_ONLY,
    },
    WebhookAttempt: {"delete_selected": NOBODY},
    Message: {"delete_selected": NOBODY},
    Delivery: {"delete_selected": NOBODY, "retry_now": SUPPORT_ADMIN},
    DeadLetter: {"delete_selected": NOBODY, "retry_now": SUPPORT_ADMIN},
    InboxItem: {"delete_selected": NOBODY},
    Preference: {"delete_selected": NOBODY},
    DigestCadence: {"delete_selected": NOBODY},
    Consent: {"delete_selected": NOBODY},
    FrequencyCounter: {"delete_selected": NOBODY},
    Snooze: {"delete_selected": NOBODY},
    DateSeries: {"delete_selected": ADMIN_ONLY},
    RecipientDate: {"delete_selected": NOBODY},
    Digest: {"delete_selected": NOBODY},
    Topic: {"delete_selected": NOBODY},
    TopicSend: {"delete_selected": NOBODY},
    TopicSnooze: {"delete_selected": NOBODY},
    SuppressedAddress: {"delete_selected": ADMIN_ONLY},
    ProviderEvent: {"delete_selected": NOBODY},
    Device: {"delete_selected": ADMIN_ONLY},
    NotificationType: {"delete_selected": ADMIN_ONLY},  # deletes only types not in code
    RoutingRule: {"delete_selected": ADMIN_ONLY},
    Segment: {"delete_selected": MARKETING},
    SegmentMember: {"delete_selected": MARKETING},
    AudienceThresholds: {"delete_selected": NOBODY},
    Campaign: {"delete_selected": MARKETING},  # drafts only, checked per object
    StepVariant: {"delete_selected": MARKETING},
}

# The admin site's own pages: each is login-gated and none shows model data by itself.
SITE_URLS = {
    "index",
    "login",
    "logout",
    "password_change",
    "password_change_done",
    "autocomplete",
    "jsi18n",
    "view_on_site",
    "app_list",
}
STANDARD = ("changelist", "add", "history", "delete", "change")


# --- Discovery -----------------------------------------------------------------------------------


def registry() -> dict[type[Model], admin.ModelAdmin[Any]]:
    return dict(admin.site._registry)


def extra_url_names(model_admin: admin.ModelAdmin[Any]) -> list[str]:
    info = model_admin.opts.app_label, model_admin.opts.model_name
    standard = {"{}_{}_{}".format(*info, page) for page in STANDARD}
    return [p.name for p in model_admin.get_urls() if p.name and p.name not in standard]


def test_every_registered_admin_is_in_the_matrix():
    assert set(registry()) == set(MODELS), (
        "place every registered model in MODELS (and ACTIONS) with who may view, add, change "
        "and delete it"
    )


def test_every_extra_admin_url_is_in_the_matrix():
    found = {name for ma in registry().values() for name in extra_url_names(ma)}
    declared = {name.split(":")[0] for name in EXTRA_PAGES}
    assert found == declared, "place every get_urls() extra in EXTRA_PAGES with who may use it"


def test_every_admin_action_is_in_the_matrix():
    for model, model_admin in registry().items():
        names = {name for _, name, _ in model_admin._get_base_actions()}
        assert names == set(ACTIONS[model]), f"{model.__name__}: place its actions in ACTIONS"


def test_the_admin_site_adds_no_page_outside_the_matrix():
    names = {p.name for p in admin.site.get_urls() if getattr(p, "name", None)}
    assert names == SITE_URLS


# --- People and objects --------------------------------------------------------------------------


@pytest.fixture
def people() -> dict[str, Client]:
    roles_sync()
    clients = {ANON: Client()}
    for who in PEOPLE[1:]:
        user = UserFactory(username=f"{who.lower().replace(' ', '-')}-{uuid.uuid4().hex[:6]}")
        user.is_staff = True
        user.save()
        if who != STAFF:
            user.groups.add(Group.objects.get(name=who))
        client = Client()
        client.force_login(user)
        clients[who] = client
    return clients


@pytest.fixture
def objects(monkeypatch) -> dict[type[Model], Model]:
    """One real row of every registered model, made through the services where there is one."""
    monkeypatch.setattr(dispatch, "publish_prepare", lambda *args, **kwargs: None)
    monkeypatch.setattr(dispatch, "publish_deliver", lambda *args, **kwargs: None)
    # Signed up with the address as username and gave no name: a page that names a customer by
    # a username fallback would print it.
    customer = UserFactory(
        username="customer@example.com", email="customer@example.com", first_name="", last_name=""
    )
    message = notify(customer, "order.shipped", order_context(), channels=["inapp", "email"])
    messages_prepare(message_ids=[message.pk])
    deliveries_deliver(
        delivery_ids=list(Delivery.objects.filter(message=message).values_list("pk", flat=True))
    )
    failed = Delivery.objects.get(message=message, channel="email")
    Delivery.objects.filter(pk=failed.pk).update(status=DeliveryStatus.FAILED)
    preferences_update(
        user_id=customer.pk,
        changes=[PreferenceChange(category="marketing", channel="sms", enabled=False)],
    )
    consent_give(user_id=customer.pk, channel="email", source="test", wording="Yes")
    interval = IntervalSchedule.objects.create(every=10, period=IntervalSchedule.SECONDS)
    erased = recipient_erase(
        recipient_for(UserFactory(email="erased@example.com")), by="test", reason="ticket 1"
    )
    segment = Segment.objects.create(name="Fans")
    topic = Topic.objects.create(key="product:1", created_at=datetime.now(UTC))
    campaign = campaign_create(
        name="Winter sale",
        category=NotificationType.objects.get(key="promo.flash_sale"),
        created_by=None,
        segment=segment,
        event_at=datetime.now(UTC) + timedelta(days=10),
        channels=["inapp"],
    )
    webhook = endpoint_create(
        name="CRM", url="https://crm.example.com/hooks", event_types=["delivery.sent"]
    )
    return {
        Group: Group.objects.get(name="Support"),
        PeriodicTask: PeriodicTask.objects.create(
            name=f"t-{uuid.uuid4().hex[:6]}", task="x", interval=interval
        ),
        ClockedSchedule: ClockedSchedule.objects.create(clocked_time=datetime.now(UTC)),
        CrontabSchedule: CrontabSchedule.objects.create(),
        SolarSchedule: SolarSchedule.objects.create(event="sunrise", latitude=1, longitude=1),
        IntervalSchedule: interval,
        User: customer,
        Recipient: recipient_for(customer),
        ApiKey: api_key_create(name="checkout", scopes=["notify"]).key,
        ErasureRecord: ErasureRecord.objects.get(pk=erased.record_id),
        ErasedIdentifier: ErasedIdentifier.objects.filter(erasure_id=erased.record_id).first(),
        RefusedCall: RefusedCall.objects.create(
            at=datetime.now(UTC),
            source="celery task notifier.notify",
            error_type="InvalidCall",
            message="type is required",
        ),
        WebhookEndpoint: webhook,
        WebhookAttempt: WebhookAttempt.objects.create(
            endpoint=webhook, webhook_id="msg_1", events=1, at=datetime.now(UTC), status_code=500
        ),
        Message: message,
        Delivery: failed,
        DeadLetter: DeadLetter.objects.get(pk=failed.pk),
        InboxItem: InboxItem.objects.get(message=message),
        Preference: Preference.objects.get(user=customer),
        DigestCadence: DigestCadence.objects.create(
            user=customer, scope="", cadence="daily", at=time(9, 0)
        ),
        Consent: Consent.objects.get(user=customer),
        FrequencyCounter: FrequencyCounter.objects.create(
            user=customer, period="day", window_start=datetime.now(UTC).date()
        ),
        Device: DeviceFactory(user=customer),
        Snooze: Snooze.objects.create(
            user=customer, type_id="promo.flash_sale", at=datetime.now(UTC)
        ),
        DateSeries: DateSeries.objects.get(key="subscription.renewal"),
        RecipientDate: RecipientDate.objects.create(
            user=customer,
            series_id="subscription.renewal",
            key="plan:1",
            at=datetime.now(UTC) + timedelta(days=10),
            created_at=datetime.now(UTC),
            updated_at=datetime.now(UTC),
        ),
        Digest: Digest.objects.create(
            user=customer,
            type_id="social.new_comment",
            key="post:1",
            opened_at=datetime.now(UTC),
            due_at=datetime.now(UTC),
        ),
        Topic: topic,
        TopicSend: TopicSend.objects.create(
            topic=topic,
            type_id="social.new_follower",
            created_at=datetime.now(UTC),
            updated_at=datetime.now(UTC),
        ),
        TopicSnooze: TopicSnooze.objects.create(
            user=customer, topic=topic, until=None, at=datetime.now(UTC)
        ),
        SuppressedAddress: SuppressedAddress.objects.create(
            address="customer@example.com",
            reason=SuppressionReason.BOUNCED,
            source="mailgun",
            delivery=failed,
            at=datetime.now(UTC),
        ),
        ProviderEvent: ProviderEvent.objects.create(
            provider="mailgun",
            event_id="evt-1",
            event_type="bounced",
            provider_message_id="<m@x>",
            delivery=failed,
            outcome=EventOutcome.MOVED,
            received_at=datetime.now(UTC),
        ),
        NotificationType: NotificationType.objects.get(key="order.shipped"),
        RoutingRule: RoutingRule.objects.first(),
        Segment: segment,
        SegmentMember: SegmentMember.objects.create(segment=segment, user=customer),
        AudienceThresholds: AudienceThresholds.current(),
        Campaign: campaign,
        StepVariant: StepVariant.objects.filter(step__campaign=campaign).first(),
    }


def outcome(response: Any) -> str:
    """allowed, denied (403) or login (sent to the login page)."""
    if response.status_code in (301, 302) and "/admin/login/" in response["Location"]:
        return "login"
    if response.status_code == 403:
        return "denied"
    assert response.status_code < 500, response.status_code
    return "allowed"


def expect(who: str, allowed: frozenset[str]) -> str:
    if who == ANON:
        return "login"
    return "allowed" if who in allowed else "denied"


def url_of(model: type[Model], page: str, obj: Model) -> str:
    info = model._meta.app_label, model._meta.model_name
    args = [] if page in ("changelist", "add") else [obj.pk]
    return reverse("admin:{}_{}_{}".format(*info, page), args=args)


# --- The matrix ----------------------------------------------------------------------------------


@pytest.mark.parametrize("model", list(MODELS), ids=lambda m: m._meta.label)
def test_standard_pages(model, people, objects):
    access, obj = MODELS[model], objects[model]
    expected_pages = {
        "changelist": access.view,
        "add": access.add,
        "change": access.view,
        "delete": access.delete,
        "history": access.view,
    }
    if model is StepVariant:
        # The variant list redirects every staff member to the campaign list, which checks.
        expected_pages["changelist"] = frozenset(PEOPLE) - {ANON}
    wrong = []
    for who, client in people.items():
        for page, allowed in expected_pages.items():
            response = client.get(url_of(model, page, obj))
            got, want = outcome(response), expect(who, allowed)
            if got == want and page == "change" and got == "allowed":
                # Viewing is not editing: the page offers Save only to those who may change.
                got = "edit" if response.context["has_change_permission"] else "view"
                want = "edit" if who in access.change else "view"
            if got != want:
                wrong.append(f"{who} {page}: {got}, expected {want}")
    assert not wrong, f"{model._meta.label}: " + "; ".join(wrong)


def extra_url(name: str, objects: dict[type[Model], Model]) -> str:
    if name in ("campaigns_segment_count_new", "campaigns_campaign_calendar"):
        return reverse(f"admin:{name}")
    if name == "campaigns_campaign_action":
        # "pause" on a draft is refused by the lifecycle: nothing changes either way.
        return reverse(f"admin:{name}", args=[objects[Campaign].pk, "pause"])
    if name == "campaigns_campaign_drop_step":
        step = objects[Campaign].steps.first()  # type: ignore[attr-defined]
        return reverse(f"admin:{name}", args=[objects[Campaign].pk, step.pk])
    model = {
        "notifier_user": User,
        "notifier_recipient": Recipient,
        "notifier_topic": Topic,
        "auth_user": User,
        "campaigns_segment": Segment,
        "campaigns_campaign": Campaign,
        "campaigns_stepvariant": StepVariant,
    }["_".join(name.split("_")[:2])]
    return reverse(f"admin:{name}", args=[objects[model].pk])


def test_extra_pages(people, objects):
    wrong = []
    for key, (method, allowed) in EXTRA_PAGES.items():
        url = extra_url(key.split(":")[0], objects)
        for who, client in people.items():
            response = client.get(url) if method == "GET" else client.post(url, {})
            got, want = outcome(response), expect(who, allowed)
            if got != want:
                wrong.append(f"{who} {method} {key}: {got}, expected {want}")
    assert not wrong, "; ".join(wrong)


def test_actions_offered(people, objects):
    factory = RequestFactory()
    users = {
        who: User.objects.get(pk=c.session["_auth_user_id"])
        for who, c in people.items()
        if who != ANON
    }
    wrong = []
    for model, model_admin in registry().items():
        for who, user in users.items():
            request = factory.get("/")
            request.user = user
            offered = set(model_admin.get_actions(request))
            expected = {name for name, allowed in ACTIONS[model].items() if who in allowed}
            if offered != expected:
                wrong.append(f"{model.__name__} {who}: {sorted(offered)} != {sorted(expected)}")
    assert not wrong, "; ".join(wrong)


def test_retry_action_runs_for_support_only(people, objects):
    """Posting the retry action: Support's retries the failed delivery; a Marketer's is refused
    and the delivery stays failed."""
    failed = objects[Delivery]
    url = reverse("admin:notifier_deadletter_changelist")
    data = {"action": "retry_now", "_selected_action": [failed.pk]}
    for who in (ANON, STAFF, MKT, LEAD):
        response = people[who].post(url, data)
        assert outcome(response) == expect(who, SUPPORT_ADMIN)
        assert Delivery.objects.get(pk=failed.pk).status == DeliveryStatus.FAILED
    response = people[SUP].post(url, data)
    assert response.status_code == 302
    assert Delivery.objects.get(pk=failed.pk).status != DeliveryStatus.FAILED


def test_marketers_see_list_members_masked_and_support_cannot_list_them(people, objects):
    url = reverse("admin:campaigns_segmentmember_changelist")
    page = people[MKT].get(url).content.decode()
    assert "c*******@example.com" in page
    assert "customer@example.com" not in page
    change = people[MKT].get(url_of(SegmentMember, "change", objects[SegmentMember]))
    assert "customer@example.com" not in change.content.decode()
    assert "customer@example.com" in people[ADM].get(url).content.decode()


def test_the_member_add_form_does_not_reveal_the_email_of_an_id(people, objects):
    """A bad add form re-renders with the user id given; it must not print whose id it is."""
    customer = objects[User]
    response = people[MKT].post(
        reverse("admin:campaigns_segmentmember_add"), {"user": customer.pk, "segment": ""}
    )
    assert response.status_code == 200  # the form again, with its error
    assert "customer@example.com" not in response.content.decode()


def test_no_page_a_marketer_can_open_shows_a_customers_full_contact_details(people, objects):
    """Every admin page, extra page and search a Marketer or Marketing lead may open, with a
    customer in a segment, a list, a campaign preview: the full email and phone never appear."""
    customer = objects[User]
    secrets = [customer.email, customer.notifier_recipient.phone]
    pages = [
        url_of(model, page, objects[model])
        for model in MODELS
        for page in STANDARD
        if page != "add" or model is not User
    ]
    pages += [
        extra_url(name, objects) for name, (method, _) in EXTRA_PAGES.items() if method == "GET"
    ]
    pages += [
        reverse("admin:campaigns_segmentmember_changelist") + "?q=customer",
        reverse("admin:campaigns_campaign_preview", args=[objects[Campaign].pk])
        + f"?user={customer.pk}",
        reverse("admin:index"),
    ]
    opened = 0
    for who in (MKT, LEAD):
        for page in pages:
            response = people[who].get(page, follow=True)
            if response.status_code != 200:
                continue
            opened += 1
            body = response.content.decode()
            leaked = [s for s in secrets if s in body]
            assert not leaked, f"{who} sees {leaked} on {page}"
    assert opened > 40  # the check ran on the pages marketers really open
