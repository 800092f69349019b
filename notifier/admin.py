"""The admin for support staff and operators.

Support staff (the "Support" group) find a person by email, phone (typed any way) or id and open
their customer page: contact points, time zone and locale, consent with its history,
preferences, caps used, devices, suppressions, support's fixes and notes, then every message
sent to them with what it said: each channel, its status, every attempt with its error, and in
words why anything was not sent. The fixes there (resend, correct a contact point, lift a
suppression, note) go through `notifier.services.support` and are recorded with who and why.
The delivery log itself is read-only here: statuses change only through the pipeline
(`notifier.services`).
"""

from __future__ import annotations

import json
import uuid
import zoneinfo
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

from django import forms
from django.conf import settings
from django.contrib import admin, messages
from django.contrib.admin.helpers import ACTION_CHECKBOX_NAME
from django.contrib.admin.utils import quote, unquote
from django.contrib.auth.admin import UserAdmin as DjangoUserAdmin
from django.contrib.auth.forms import AdminUserCreationForm, ReadOnlyPasswordHashWidget
from django.core.exceptions import PermissionDenied, ValidationError
from django.core.paginator import Page, Paginator
from django.db.models import Exists, OuterRef, Q, QuerySet
from django.http import Http404, HttpRequest, HttpResponse, HttpResponseRedirect
from django.template.response import TemplateResponse
from django.urls import URLPattern, path, reverse
from django.utils import timezone
from django.utils.html import format_html
from django.utils.http import urlencode
from django.utils.safestring import SafeString
from django.utils.text import capfirst
from django.utils.timesince import timesince
from django_celery_beat.admin import PeriodicTaskAdmin as BeatPeriodicTaskAdmin
from django_celery_beat.models import PeriodicTask

from channels.base import Channel
from notifier.api import notify_topic
from notifier.customer_page import FIX_FORMS, FixForm, Masker, customer_overview
from notifier.errors import NotifyError
from notifier.forms import BOUNDED_JSON
from notifier.models import (
    Consent,
    DateSeries,
    DeadLetter,
    Delivery,
    DeliveryEvent,
    Device,
    Digest,
    DigestCadence,
    ErasedIdentifier,
    ErasureRecord,
    FrequencyCounter,
    IdentifierKind,
    InboxItem,
    Message,
    NotificationType,
    Preference,
    ProviderEvent,
    Recipient,
    RecipientDate,
    RoutingRule,
    Snooze,
    SuppressedAddress,
    Topic,
    TopicSend,
    TopicSnooze,
    User,
    normalize_email,
    recipient_for,
    recipient_update,
)
from notifier.models.series import SERIES_KEY_PREFIX
from notifier.models.users import normalize_phone, phone_from_text
from notifier.roles import (
    ERASE_RECIPIENT,
    EXPORT_RECIPIENT,
    FIX_RECIPIENT,
    NOTIFY_TOPIC,
    VIEW_CONTACT_DETAILS,
)
from notifier.selectors import MESSAGE_CALLER_FIELDS, message_read_caller_fields, user_history
from notifier.services.deliveries import deliveries_retry_now
from notifier.services.erasure import (
    MAX_REASON,
    identifier_digests,
    recipient_erase,
    recipient_export,
    suppression_lift,
)
from notifier.services.recipients import PROFILE_FIELDS
from notifier.services.support import (
    Agent,
    SupportFixError,
    support_cancel,
    support_contact_correct,
    support_note_add,
    support_resend,
    support_suppression_lift,
)
from notifier.status import NOT_SENT, DeliveryStatus, Reason
from notifier.text import strict_json_loads
from notifier.user_keys import user_key_from_text

HISTORY_PAGE_SIZE = 25
S = DeliveryStatus

# Badge colours for the history page and the delivery list.
STATUS_TONE: dict[str, str] = {
    S.PENDING: "progress",
    S.QUEUED: "progress",
    S.SENDING: "progress",
    S.HELD: "held",
    S.SENT: "ok",
    S.DELIVERED: "ok",
    S.OPENED: "ok",
    S.READ: "ok",
    S.CLICKED: "ok",
    S.FAILED: "bad",
    S.SUPPRESSED: "off",
    S.CANCELLED: "off",
}
TONE_COLOURS: dict[str, tuple[str, str]] = {  # (background, text)
    "ok": ("#1e7e34", "#fff"),
    "bad": ("#ba2121", "#fff"),
    "off": ("#6c757d", "#fff"),
    "held": ("#e0a800", "#212529"),
    "progress": ("#2b6cb0", "#fff"),
}


def reason_label(value: str) -> str:
    """The human label of a reason code, for support staff; the code itself if unknown."""
    if not value:
        return ""
    try:
        return str(Reason(value).label)
    except ValueError:
        return value


def status_label(value: str) -> str:
    try:
        return str(DeliveryStatus(value).label)
    except ValueError:
        return value


def status_badge(value: str) -> SafeString:
    background, text = TONE_COLOURS[STATUS_TONE.get(value, "off")]
    return format_html(
        '<span class="status-badge status-{}" style="background:{};color:{};padding:1px 8px;'
        'border-radius:10px;font-size:11px;font-weight:bold;white-space:nowrap">{}</span>',
        value,
        background,
        text,
        status_label(value),
    )


# --- Users and devices ----------------------------------------------------------------------


class DeviceInline(admin.TabularInline):
    """A user's push devices. Viewers (no change permission on devices) see it read-only."""

    formfield_overrides = BOUNDED_JSON

    model = Device
    extra = 0
    fields = ["platform", "token", "active", "created_at", "deactivated_at", "deactivation_reason"]
    readonly_fields = ["created_at", "deactivated_at", "deactivation_reason"]
    ordering = ["-active", "-created_at"]


class PhoneInE164:
    """Phone numbers typed any way ("+86 138-0013-8000") are stored in E.164."""

    cleaned_data: dict[str, Any]

    def clean_phone(self) -> str:
        value = str(self.cleaned_data.get("phone") or "").strip()
        if not value:
            return ""
        try:
            return normalize_phone(value)
        except ValidationError as exc:
            raise forms.ValidationError(
                f"{exc.messages[0]}; write it with its country code, e.g. +8613800138000"
            ) from exc


# What the API may set, and the hour learned from reads, which only support sees.
RECIPIENT_ADMIN_FIELDS = (*PROFILE_FIELDS, "usual_active_hour")


class RecipientForm(PhoneInE164, forms.ModelForm):
    class Meta:
        model = Recipient
        fields = list(RECIPIENT_ADMIN_FIELDS)


class RecipientInline(admin.StackedInline):
    """The user's recipient profile: contact points, time zone, locale, quiet hours and the
    attributes segments use. Viewers (no change permission on profiles) see it read-only."""

    formfield_overrides = BOUNDED_JSON

    model = Recipient
    form = RecipientForm
    fk_name = "user"
    can_delete = False
    extra = 1
    max_num = 1
    min_num = 0
    verbose_name = "Contact and profile"
    verbose_name_plural = "Contact and profile"
    fields = list(RECIPIENT_ADMIN_FIELDS)
    readonly_fields = ["email", "usual_active_hour"]  # the address follows the user's own


class PasswordSummaryWidget(ReadOnlyPasswordHashWidget):
    """Whether a password is set, without the "Set password" button (for viewers)."""

    template_name = "admin/notifier/user/password_summary.html"


class UserPhoneCreationForm(PhoneInE164, AdminUserCreationForm):
    """The add form asks for the phone number too; it goes on the new user's profile."""

    phone = forms.CharField(
        max_length=40, required=False, help_text="With its country code, e.g. +8613800138000"
    )


class PeopleAdminMixin:
    """An admin whose rows are people (the stand-alone site's users, or anyone's recipient
    profiles): search by the user's exact key, a phone number however typed ("138-0013-8000",
    "0086 138 ...", "+86 ...", national formats of NOTIFIER_DEFAULT_REGION) and an email
    address however cased, besides the usual fields; and the customer page at
    "<id>/customer/". The old delivery history, "<id>/history/", leads there (Django's change
    log moves to "<id>/admin-log/", so the change form's "History" button opens the customer
    page)."""

    key_lookup = "pk"  # the user's key, on the admin's model
    phone_lookup = "notifier_recipient__phone"
    email_lookup = "notifier_recipient__email"

    def get_search_results(
        self, request: HttpRequest, queryset: QuerySet[Any], search_term: str
    ) -> tuple[QuerySet[Any], bool]:
        results, may_have_duplicates = super().get_search_results(  # type: ignore[misc]
            request, queryset, search_term
        )
        term = search_term.strip()
        key = user_key_from_text(term)
        if key is not None:
            results |= queryset.filter(**{self.key_lookup: key})
        phone = phone_from_text(term, settings.NOTIFIER_DEFAULT_REGION)
        if phone is not None:
            results |= queryset.filter(**{self.phone_lookup: phone})
        if "@" in term and " " not in term:
            results |= queryset.filter(**{f"{self.email_lookup}__iexact": term})
        return results, may_have_duplicates

    def customer_url(self, obj: Any) -> str:
        info = self.opts.app_label, self.opts.model_name  # type: ignore[attr-defined]
        return reverse(
            "{}:{}_{}_customer".format(self.admin_site.name, *info),  # type: ignore[attr-defined]
            args=[quote(obj.pk)],
        )

    @admin.display(description="Customer page")
    def history_action(self, obj: Any) -> str:
        return format_html('<a href="{}">Customer page</a>', self.customer_url(obj))

    def delivery_history_redirect(self, request: HttpRequest, object_id: str) -> HttpResponse:
        """The old "Delivery history" URL: the customer page shows it now."""
        self._viewable(request, object_id)
        info = self.opts.app_label, self.opts.model_name  # type: ignore[attr-defined]
        url = reverse(
            "{}:{}_{}_customer".format(self.admin_site.name, *info),  # type: ignore[attr-defined]
            args=[object_id],
        )
        query = request.GET.urlencode()
        return HttpResponseRedirect(f"{url}?{query}" if query else url)

    def _viewable(self, request: HttpRequest, object_id: str) -> Any:
        obj = self.get_object(request, unquote(object_id))  # type: ignore[attr-defined]
        if obj is None:
            raise Http404(f"No {self.opts.verbose_name} with id {object_id!r}")  # type: ignore[attr-defined]
        if not self.has_view_permission(request, obj):  # type: ignore[attr-defined]
            raise PermissionDenied
        return obj

    def customer_view(self, request: HttpRequest, object_id: str) -> HttpResponse:
        obj = self._viewable(request, object_id)
        user = obj.user if isinstance(obj, Recipient) else obj
        return customer_page(self, request, user=user, original=obj)  # type: ignore[arg-type]

    def get_urls(self) -> list[URLPattern]:
        admin_site = self.admin_site  # type: ignore[attr-defined]
        info = self.opts.app_label, self.opts.model_name  # type: ignore[attr-defined]
        return [
            path(
                "<path:object_id>/customer/",
                admin_site.admin_view(self.customer_view),
                name="{}_{}_customer".format(*info),
            ),
            path(
                "<path:object_id>/history/",
                admin_site.admin_view(self.delivery_history_redirect),
                name="{}_{}_delivery_history".format(*info),
            ),
            path(
                "<path:object_id>/admin-log/",
                admin_site.admin_view(self.history_view),  # type: ignore[attr-defined]
                name="{}_{}_admin_log".format(*info),
            ),
            *super().get_urls(),  # type: ignore[misc]
        ]


def register_if(enabled: bool, model: Any) -> Any:
    """admin.register when a setting asks for it: what would be intrusive in a host project."""
    return admin.register(model) if enabled else (lambda admin_class: admin_class)


# The stand-alone site's own users (NOTIFIER_ADMIN_USER); a host keeps its own UserAdmin.
@register_if(settings.NOTIFIER_ADMIN_USER, User)
class UserAdmin(PeopleAdminMixin, DjangoUserAdmin):
    formfield_overrides = BOUNDED_JSON
    add_form = UserPhoneCreationForm
    add_fieldsets = (
        (
            None,
            {
                "classes": ("wide",),
                "fields": (
                    "username",
                    "email",
                    "phone",
                    "usable_password",
                    "password1",
                    "password2",
                ),
            },
        ),
    )
    fieldsets = (
        ("Customer page", {"fields": ("delivery_history_link",)}),
        *(DjangoUserAdmin.fieldsets or ()),
    )
    readonly_fields = ["delivery_history_link"]
    list_display = ["email", "username", "phone", "is_active", "is_staff", "history_action"]
    list_display_links = ["email", "username"]
    list_select_related = ["notifier_recipient"]
    search_fields = ["email", "notifier_recipient__phone", "username", "first_name", "last_name"]
    ordering = ["-id"]
    inlines = [RecipientInline, DeviceInline]

    @admin.display(description="Phone", ordering="notifier_recipient__phone")
    def phone(self, obj: User) -> str:
        profile = getattr(obj, "notifier_recipient", None)
        return profile.phone if profile is not None else ""

    def get_inlines(self, request: HttpRequest, obj: Any = None) -> list[Any]:
        # Adding: the user's post_save makes the profile; the add form's phone goes on it.
        return [DeviceInline] if obj is None else [RecipientInline, DeviceInline]

    def save_model(self, request: HttpRequest, obj: User, form: Any, change: bool) -> None:
        super().save_model(request, obj, form, change)
        if not change:
            recipient_update(obj, phone=form.cleaned_data.get("phone") or "")

    @admin.display(description="Customer page")
    def delivery_history_link(self, obj: User) -> str:
        if obj.pk is None:
            return "-"
        return format_html(
            '<a class="button" href="{}">Open the customer page</a> '
            '<span class="help">contact points, consent, preferences, caps, devices, '
            "suppressions, every message sent with what it said, and support's fixes</span>",
            self.customer_url(obj),
        )

    def get_form(
        self, request: HttpRequest, obj: Any = None, change: bool = False, **kwargs: Any
    ) -> Any:
        form = super().get_form(request, obj, change=change, **kwargs)
        password = form.base_fields.get("password")
        if password is not None and not self.has_change_permission(request, obj):
            # Its "Set password" button leads to a page only those who may change users open.
            password.help_text = ""
            password.widget = PasswordSummaryWidget()
        return form


@dataclass(frozen=True)
class FixResult:
    said: str


def fix_apply(fix: str, data: dict[str, Any], *, profile: Recipient, agent: Agent) -> FixResult:
    """One fix from the customer page's form, through its service; SupportFixError says why
    it cannot be made."""
    why = data["why"]
    if fix == "note":
        support_note_add(recipient=profile, agent=agent, why=why)
        return FixResult("Note added.")
    if fix == "contact":
        action = support_contact_correct(
            recipient=profile, agent=agent, field=data["field"], value=data["value"], why=why
        )
        return FixResult(f"The {data['field']} is now {action.detail['to']}.")
    if fix == "lift":
        action = support_suppression_lift(
            recipient=profile, agent=agent, suppression_id=data["suppression"], why=why
        )
        return FixResult(f"Lifted the suppression of {action.detail['address']}: sending resumes.")
    if fix == "cancel":
        action = support_cancel(
            recipient=profile,
            agent=agent,
            message_id=data["message"],
            token=data["token"],
            why=why,
        )
        count = action.detail["deliveries"]
        return FixResult(
            f"Message #{data['message']}: {count} {'delivery' if count == 1 else 'deliveries'} "
            "cancelled before going out."
        )
    resend = support_resend(
        recipient=profile,
        agent=agent,
        message_id=data["message"],
        channels=list(data["channels"]),
        token=data["token"],
        why=why,
    )
    new = resend.action.message_id
    if not resend.created:
        return FixResult(f"Message #{data['message']} was resent already by this click (#{new}).")
    return FixResult(f"Message #{data['message']} resent as #{new}; it is in the history below.")


def customer_page(
    model_admin: admin.ModelAdmin[Any], request: HttpRequest, *, user: Any, original: Any
) -> HttpResponse:
    """Support's page for one person: who they are and how to reach them, what they agreed to
    and chose, and every message, each channel, every attempt, what it said, and why anything
    was not sent; with the audited fixes for those with `notifier.fix_recipient`. Opened from
    the user (the stand-alone site's UserAdmin) or from their recipient profile (any project:
    a host keeps its own user admin)."""
    site, opts = model_admin.admin_site, model_admin.opts
    profile = recipient_for(user)
    may_fix = bool(request.user.has_perm(FIX_RECIPIENT)) and profile.erased_at is None
    bound: FixForm | None = None
    if request.method == "POST":
        if not may_fix:
            raise PermissionDenied
        fix = request.POST.get("fix", "")
        form_class = FIX_FORMS.get(fix)
        if form_class is None:
            return HttpResponse("Unknown fix", status=400, content_type="text/plain")
        bound = form_class(request.POST)
        if bound.is_valid():
            try:
                done = fix_apply(
                    fix, bound.cleaned_data, profile=profile, agent=Agent.of(request.user)
                )
            except SupportFixError as exc:
                bound.add_error(None, str(exc))
            else:
                model_admin.message_user(request, done.said, messages.SUCCESS)
                return HttpResponseRedirect(request.get_full_path() + "#fixes")
    masker = Masker.for_person(
        full=bool(request.user.has_perm(VIEW_CONTACT_DETAILS)), user=user, profile=profile
    )
    overview = customer_overview(user=user, profile=profile, masker=masker)
    filters = HistoryFilters.from_request(request)
    page = Paginator(filters.apply(user_history(user_id=user.pk)), HISTORY_PAGE_SIZE).get_page(
        request.GET.get("page")
    )
    links = AdminLinks.for_request(request, site)
    rows = [MessageRow.of(message, filters, links, masker) for message in page.object_list]
    for action in overview.actions:
        action.message_url = links.message(action.message_id) if action.message_id else ""  # type: ignore[attr-defined]
    route = f"{site.name}:{opts.app_label}_{opts.model_name}"
    name = masker.text(str(user)) if not masker.full else str(user)
    context = {
        **site.each_context(request),
        "opts": opts,
        "title": f"Customer: {name}",
        "subtitle": None,
        "original": original,
        "original_label": name,
        "person": user,
        "overview": overview,
        "user_tz": _zone(profile.time_zone),
        "may_fix": may_fix,
        "default_region": settings.NOTIFIER_DEFAULT_REGION,
        "bound": bound,
        "bound_fix": bound.data.get("fix") if bound is not None else "",
        "bound_target": _bound_target(bound),
        "fix_forms": {k: v() for k, v in FIX_FORMS.items()},
        # Not "messages": that name belongs to django.contrib.messages in admin templates.
        "history_messages": rows,
        "page_obj": page,
        "page_links": filters.page_links(page),
        "filters": filters,
        "channel_links": filters.channel_links(),
        "not_sent_link": filters.query_string(not_sent="" if filters.not_sent else "1"),
        "change_url": reverse(f"{route}_change", args=[quote(original.pk)]),
        "change_label": capfirst(opts.verbose_name),
        "admin_log_url": reverse(f"{route}_admin_log", args=[quote(original.pk)]),
    }
    request.current_app = site.name
    return TemplateResponse(
        request, "admin/notifier/user/history.html", context, status=400 if bound else 200
    )


def _bound_target(form: FixForm | None) -> str:
    if form is None:
        return ""
    return str(form.data.get("message") or form.data.get("suppression") or "")


@admin.register(Recipient)
class RecipientAdmin(PeopleAdminMixin, admin.ModelAdmin):
    """Everyone Notifier has written to or may write to, whatever the project's user model:
    support finds a person by email, phone or user id and opens their delivery history. The
    profile itself (contact points, time zone, quiet hours, segment attributes) is edited here
    too; profiles are made on first use, never added by hand. Contact details: only for staff
    with `notifier.view_contact_details` as well as the view permission."""

    key_lookup = "user_id"
    phone_lookup = "phone"
    email_lookup = "email"

    formfield_overrides = BOUNDED_JSON
    form = RecipientForm
    fields = ["user", *RECIPIENT_ADMIN_FIELDS]
    readonly_fields = ["user", "email", "usual_active_hour"]  # the address follows the user's
    list_display = ["email", "phone", "user", "time_zone", "locale", "erased_at", "history_action"]
    list_display_links = ["email", "phone"]
    list_filter = [("erased_at", admin.EmptyFieldListFilter)]
    list_select_related = ["user"]
    search_fields = ["email", "phone"]
    ordering = ["-id"]

    def has_add_permission(self, request: HttpRequest) -> bool:
        return False

    def has_view_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return super().has_view_permission(request, obj) and request.user.has_perm(
            VIEW_CONTACT_DETAILS
        )

    def has_change_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        if obj is not None and obj.erased_at is not None:
            return False  # erased: stays empty (notifier.services.erasure)
        return super().has_change_permission(request, obj) and request.user.has_perm(
            VIEW_CONTACT_DETAILS
        )

    # --- Erasure and export (GDPR/PIPL) ---------------------------------------------------

    actions = ["erase_selected", "export_json"]

    def has_erase_permission(self, request: HttpRequest) -> bool:
        return bool(request.user.has_perm(ERASE_RECIPIENT))

    def has_export_permission(self, request: HttpRequest) -> bool:
        return bool(request.user.has_perm(EXPORT_RECIPIENT))

    @admin.action(description="Erase the selected recipients (GDPR/PIPL)", permissions=["erase"])
    def erase_selected(
        self, request: HttpRequest, queryset: QuerySet[Recipient]
    ) -> HttpResponse | None:
        """A confirmation page asking for the reason first; then each person is erased in a
        transaction of their own (notifier.services.erasure)."""
        profiles = list(queryset.order_by("pk"))
        form = ReasonForm(request.POST if request.POST.get("post") == "yes" else None)
        if not form.is_valid():
            context = {
                **self.admin_site.each_context(request),
                "opts": self.opts,
                "title": "Erase recipients",
                "profiles": profiles,
                "form": form,
                "action_checkbox_name": ACTION_CHECKBOX_NAME,
            }
            request.current_app = self.admin_site.name
            return TemplateResponse(
                request, "admin/notifier/recipient/erase_confirmation.html", context
            )
        by = f"admin:{request.user.get_username()}"
        rows = 0
        for profile in profiles:
            report = recipient_erase(profile, by=by, reason=form.cleaned_data["reason"])
            rows += report.rows
        self.message_user(
            request,
            f"Erased {len(profiles)} recipient{'s' if len(profiles) != 1 else ''} "
            f"({rows} rows deleted or emptied); their identifiers are on the suppression list.",
            messages.SUCCESS,
        )
        return None

    @admin.action(description="Export the selected recipients as JSON", permissions=["export"])
    def export_json(self, request: HttpRequest, queryset: QuerySet[Recipient]) -> HttpResponse:
        profiles = list(queryset.select_related("user").order_by("pk"))
        body = {
            "format": "notifier.recipient-exports/1",
            "exports": [recipient_export(profile) for profile in profiles],
        }
        name = (
            f"recipient-{profiles[0].pk}.json" if len(profiles) == 1 else "recipients-export.json"
        )
        response = HttpResponse(
            json.dumps(body, ensure_ascii=False, indent=2),
            content_type="application/json; charset=utf-8",
        )
        response["Content-Disposition"] = f'attachment; filename="{name}"'
        return response


class ReasonForm(forms.Form):
    reason = forms.CharField(
        max_length=MAX_REASON,
        widget=forms.Textarea(attrs={"rows": 3, "cols": 60}),
        help_text="Kept in the record: a ticket number, not the person's own words",
    )


def _zone(name: str) -> zoneinfo.ZoneInfo | None:
    try:
        return zoneinfo.ZoneInfo(name)
    except (zoneinfo.ZoneInfoNotFoundError, ValueError):
        return None


# --- The history page's rows ----------------------------------------------------------------


@dataclass(frozen=True)
class HistoryFilters:
    channel: str = ""
    not_sent: bool = False

    @classmethod
    def from_request(cls, request: HttpRequest) -> HistoryFilters:
        channel = request.GET.get("channel", "")
        return cls(
            channel=channel if channel in Channel.__members__.values() else "",
            not_sent=request.GET.get("not_sent") in ("1", "on", "true", "yes"),
        )

    @property
    def active(self) -> bool:
        return bool(self.channel or self.not_sent)

    def delivery_q(self) -> Q:
        q = Q()
        if self.channel:
            q &= Q(channel=self.channel)
        if self.not_sent:
            q &= Q(status__in=NOT_SENT)
        return q

    def apply(self, messages: QuerySet[Message]) -> QuerySet[Message]:
        """Only messages with at least one matching delivery (EXISTS: no duplicate rows)."""
        if not self.active:
            return messages
        matching = Delivery.objects.filter(self.delivery_q(), message=OuterRef("pk"))
        return messages.filter(Exists(matching))

    def matches(self, delivery: Delivery) -> bool:
        """The same test as delivery_q, on prefetched rows (no query)."""
        if self.channel and delivery.channel != self.channel:
            return False
        return not (self.not_sent and delivery.status not in NOT_SENT)

    def channel_links(self) -> list[tuple[str, str, bool]]:
        """(label, query string, selected) for "all channels" and each channel."""
        return [("All channels", self.query_string(channel=""), not self.channel)] + [
            (c.value, self.query_string(channel=c.value), self.channel == c.value) for c in Channel
        ]

    def page_links(self, page: Page[Message]) -> list[tuple[str, str, bool]]:
        """(label, query string or "" for an ellipsis, current) for the pagination row."""
        links: list[tuple[str, str, bool]] = []
        for number in page.paginator.get_elided_page_range(page.number):
            if number == page.paginator.ELLIPSIS:
                links.append((str(number), "", False))
            else:
                links.append(
                    (str(number), self.query_string(page=str(number)), number == page.number)
                )
        return links

    def query_string(self, **overrides: str) -> str:
        params = {"channel": self.channel, "not_sent": "1" if self.not_sent else ""}
        params.update(overrides)
        return "?" + urlencode({k: v for k, v in params.items() if v})


@dataclass(frozen=True)
class AdminLinks:
    """Change-page URLs for messages and deliveries, when the viewer may open them."""

    site_name: str
    messages: bool
    deliveries: bool
    campaigns: bool = False

    @classmethod
    def for_request(cls, request: HttpRequest, site: admin.AdminSite) -> AdminLinks:
        def can_view(model: type[Any]) -> bool:
            model_admin = site.get_model_admin(model) if site.is_registered(model) else None
            return model_admin is not None and model_admin.has_view_permission(request)

        # The campaigns app's model, named through the relation: the core never imports it.
        campaign_model = Message._meta.get_field("campaign").related_model
        return cls(
            site_name=site.name,
            messages=can_view(Message),
            deliveries=can_view(Delivery),
            campaigns=isinstance(campaign_model, type) and can_view(campaign_model),
        )

    def campaign(self, pk: int | None) -> str:
        if not self.campaigns or pk is None:
            return ""
        return reverse(f"{self.site_name}:campaigns_campaign_change", args=[pk])

    def message(self, pk: int) -> str:
        if not self.messages:
            return ""
        return reverse(f"{self.site_name}:notifier_message_change", args=[pk])

    def delivery(self, pk: int) -> str:
        if not self.deliveries:
            return ""
        return reverse(f"{self.site_name}:notifier_delivery_change", args=[pk])


@dataclass(frozen=True)
class EventRow:
    at: datetime
    kind: str
    status: str
    status_badge: SafeString
    reason: str
    reason_label: str
    attempt: int | None
    provider: str
    error: str
    detail: list[tuple[str, Any]]

    @classmethod
    def of(cls, event: DeliveryEvent) -> EventRow:
        detail = event.detail if isinstance(event.detail, dict) else {"value": event.detail}
        return cls(
            at=event.at,
            kind=event.get_kind_display(),
            status=event.status,
            status_badge=status_badge(event.status),
            reason=event.reason,
            reason_label=reason_label(event.reason),
            attempt=event.attempt,
            provider=event.provider,
            error=event.error,
            detail=sorted(detail.items()),
        )


@dataclass(frozen=True)
class DeliveryRow:
    pk: int
    channel: str
    status: str
    status_badge: SafeString
    not_sent: bool
    reason: str
    reason_label: str
    attempts: int
    provider: str
    provider_message_id: str
    last_error: str
    created_at: datetime
    updated_at: datetime
    sent_at: datetime | None
    finished_at: datetime | None
    next_attempt_at: datetime | None
    url: str
    events: list[EventRow] = field(default_factory=list)
    # What it said, as rendered when it was routed (Delivery.content), masked for staff who
    # may not see the customer's details.
    content: list[tuple[str, str]] = field(default_factory=list)
    html_chars: int = 0

    @classmethod
    def of(cls, delivery: Delivery, links: AdminLinks, masker: Masker) -> DeliveryRow:
        stored = delivery.content if isinstance(delivery.content, dict) else {}
        return cls(
            pk=delivery.pk,
            channel=delivery.channel,
            status=delivery.status,
            status_badge=status_badge(delivery.status),
            not_sent=delivery.status in NOT_SENT,
            reason=delivery.reason,
            reason_label=reason_label(delivery.reason),
            attempts=delivery.attempts,
            provider=delivery.provider,
            provider_message_id=delivery.provider_message_id,
            last_error=delivery.last_error,
            created_at=delivery.created_at,
            updated_at=delivery.updated_at,
            sent_at=delivery.sent_at,
            finished_at=delivery.finished_at,
            next_attempt_at=delivery.next_attempt_at,
            url=links.delivery(delivery.pk),
            events=[EventRow.of(e) for e in delivery.events.all()],
            content=[
                (part, masker.text(str(stored[part])))
                for part in ("subject", "title", "body", "link")
                if stored.get(part)
            ],
            html_chars=len(str(stored.get("html") or "")),
        )


@dataclass(frozen=True)
class MessageRow:
    pk: int
    created_at: datetime
    type_key: str
    type_name: str
    lane: str
    channels: Sequence[str]
    campaign: str
    idempotency_key: str
    routed_at: datetime | None
    url: str
    deliveries: list[DeliveryRow]
    hidden_deliveries: int
    campaign_url: str = ""
    sent_on: list[str] = field(default_factory=list)  # channels a resend may use
    resendable: bool = False
    resend_token: str = ""
    send_at: str = ""  # the send time a caller scheduled it for, as the column holds it
    cancel_key: str = ""
    cancellable: bool = False  # something of it has not gone out yet
    digest: str = ""  # collected into a digest, or a digest's own message: in words
    topic: str = ""  # the topic whose send handed it out (its snooze mutes it)
    series: str = ""  # a step of a person's date series: which, in words

    @classmethod
    def of(
        cls, message: Message, filters: HistoryFilters, links: AdminLinks, masker: Masker
    ) -> MessageRow:
        every = list(message.deliveries.all())  # prefetched by user_history()
        shown = [d for d in every if filters.matches(d)]
        return cls(
            pk=message.pk,
            created_at=message.created_at,
            type_key=message.type.key,
            type_name=message.type.name,
            lane=message.lane,
            channels=_channels_asked(getattr(message, "channels_text", None)),
            campaign=str(message.campaign) if message.campaign is not None else "",
            idempotency_key=message.idempotency_key or "",
            routed_at=message.routed_at,
            url=links.message(message.pk),
            deliveries=[DeliveryRow.of(d, links, masker) for d in shown],
            hidden_deliveries=len(every) - len(shown),
            campaign_url=links.campaign(message.campaign_id),
            sent_on=sorted(d.channel for d in every),
            resendable=bool(every) and message.variant_id is None and not message.is_test,
            resend_token=str(uuid.uuid4()),
            send_at=getattr(message, "not_before_text", None) or "",
            cancel_key=message.cancel_key or "",
            cancellable=message.routed_at is None or any(d.status in CANCELLABLE for d in every),
            digest=_digest_words(message),
            topic=message.topic.key if message.topic is not None else "",
            series=_series_words(message.idempotency_key or ""),
        )


def _series_words(idempotency_key: str) -> str:
    """A date series' step says so (its key: series:<date>:<version>:<step>), with no query:
    the date itself is in the page's Dates section."""
    date, _, rest = idempotency_key.removeprefix(SERIES_KEY_PREFIX).partition(":")
    version, _, step = rest.partition(":")
    if not idempotency_key.startswith(SERIES_KEY_PREFIX) or not step:
        return ""
    return f"Step {step} of the reminders around date #{date} (as set the {_nth(version)} time)"


def _nth(number: str) -> str:
    suffix = {"1": "st", "2": "nd", "3": "rd"}.get(number[-1:], "th")
    return f"{number}{'th' if number[-2:-1] == '1' else suffix}"


def _digest_words(message: Message) -> str:
    """What a digest did with the message, for support: collected (and sent as which
    message), or the digest's own message (of how many)."""
    digest = message.digest
    if digest is None:
        return ""
    if digest.message_id == message.pk:
        return f"The digest of {digest.count} messages under key {digest.key or '(the type)'}"
    # Over its type's throttle, it was folded in rather than dropped: support says why.
    why = "Over its throttle (key full), folded" if message.throttled_into_digest else "Collected"
    if digest.message_id is not None:
        return f"{why} into digest #{digest.pk}, sent as message #{digest.message_id}"
    return f"{why} into digest #{digest.pk}, which goes out at {digest.due_at:%Y-%m-%d %H:%M}"


# What support may still cancel of a message (notifier.services.cancellation).
CANCELLABLE = frozenset({DeliveryStatus.PENDING, DeliveryStatus.HELD, DeliveryStatus.QUEUED})


def _channels_asked(text: str | None) -> list[str]:
    """The channels a message's caller named, from the column's text (user_history): a value
    that does not decode is shown as unreadable instead of failing the page."""
    try:
        channels = json.loads(text or "[]")
    except (ValueError, RecursionError):
        return ["(unreadable)"]
    return [str(c) for c in channels] if isinstance(channels, list) else ["(unreadable)"]


# --- The delivery log (read-only) -----------------------------------------------------------

# Field lists, as tuples so they may serve as fields and readonly_fields alike.
DELIVERY_INLINE_FIELDS = (
    "channel",
    "status",
    "reason",
    "attempts",
    "provider",
    "provider_message_id",
    "last_error",
    "updated_at",
)
DELIVERY_EVENT_INLINE_FIELDS = (
    "at",
    "kind",
    "status",
    "reason",
    "attempt",
    "provider",
    "error",
    "detail",
)
MESSAGE_FIELDS = (
    "user",
    "type",
    "lane",
    "channels",
    "context",
    "campaign",
    "idempotency_key",
    "not_before",
    "cancel_key",
    "throttle_key",
    "digest_key",
    "digest",
    "created_at",
    "routed_at",
)
DELIVERY_FIELDS = (
    "message",
    "user",
    "channel",
    "status",
    "reason",
    "reason_text",
    "attempts",
    "provider",
    "provider_message_id",
    "last_error",
    "content",
    "created_at",
    "updated_at",
    "next_attempt_at",
    "claimed_at",
    "sent_at",
    "delivered_at",
    "opened_at",
    "clicked_at",
    "finished_at",
)
INBOX_ITEM_FIELDS = (
    "user",
    "message",
    "delivery",
    "category",
    "type_key",
    "title",
    "body",
    "link",
    "created_at",
    "read_at",
    "archived_at",
    "feedback",
    "feedback_at",
    "group_key",
    "group_count",
)
NOTIFICATION_TYPE_FIELDS = (
    "key",
    "name",
    "description",
    "kind",
    "priority",
    "channels",
    "optional_context",
    "throttle_limit",
    "throttle_window_s",
    "escalation",
    "digest_window_s",
    "digest_first_now",
    "digest_cadence",
    "throttle_over",
    "is_active",
    "code_defined",
    "updated_at",
)


class ReadOnlyMixin:
    """Nothing can be added, changed or deleted here; the pipeline writes these rows. They are
    the record of what was sent and agreed to (the delivery log, the consent log): not even an
    Admin edits them by hand. Deleting a user removes theirs with them."""

    def has_add_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False

    def has_change_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False

    def has_delete_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False


class ReadOnlyTabularInline(ReadOnlyMixin, admin.TabularInline):
    extra = 0
    can_delete = False


class ChannelFilter(admin.SimpleListFilter):
    """Channels from the enum, not a DISTINCT over the whole delivery table."""

    title = "channel"
    parameter_name = "channel"

    def lookups(self, request: HttpRequest, model_admin: Any) -> list[tuple[str, str]]:
        return [(c.value, c.value) for c in Channel]

    def queryset(self, request: HttpRequest, queryset: QuerySet[Any]) -> QuerySet[Any]:
        value = self.value()
        return queryset.filter(channel=value) if value else queryset


class DeliveryInline(ReadOnlyTabularInline):
    model = Delivery
    fields = DELIVERY_INLINE_FIELDS
    readonly_fields = DELIVERY_INLINE_FIELDS
    ordering = ["channel"]
    show_change_link = True


class DeliveryEventInline(ReadOnlyTabularInline):
    model = DeliveryEvent
    fields = DELIVERY_EVENT_INLINE_FIELDS
    readonly_fields = DELIVERY_EVENT_INLINE_FIELDS
    ordering = ["at", "id"]


@admin.register(Message)
class MessageAdmin(ReadOnlyMixin, admin.ModelAdmin):
    list_display = ["id", "user", "type", "lane", "created_at", "routed_at"]
    list_select_related = ["user", "type"]
    list_filter = ["type", "lane"]
    search_fields = [
        "user__notifier_recipient__email",
        "user__notifier_recipient__phone",
        "=idempotency_key",
    ]
    ordering = ["-id"]
    show_full_result_count = False
    inlines = [DeliveryInline]
    fields = MESSAGE_FIELDS
    readonly_fields = (*MESSAGE_FIELDS, "could_not_read")

    def get_queryset(self, request: HttpRequest) -> QuerySet[Message]:
        # What a caller wrote may not read (a date past 9999, JSON a thousand deep): the list
        # never loads it, and the change page reads it field by field (get_object).
        return super().get_queryset(request).defer(*MESSAGE_CALLER_FIELDS)

    def get_object(
        self, request: HttpRequest, object_id: str, from_field: str | None = None
    ) -> Message | None:
        message = super().get_object(request, object_id, from_field)
        if message is not None:
            message.unreadable_fields = message_read_caller_fields(message)
        return message

    def get_fields(self, request: HttpRequest, obj: Message | None = None) -> tuple[str, ...]:
        if obj is not None and getattr(obj, "unreadable_fields", None):
            return ("could_not_read", *MESSAGE_FIELDS)
        return MESSAGE_FIELDS

    @admin.display(description="could not be read")
    def could_not_read(self, obj: Message) -> str:
        return "; ".join(getattr(obj, "unreadable_fields", {}).values()) or "-"


@admin.register(Delivery)
class DeliveryAdmin(ReadOnlyMixin, admin.ModelAdmin):
    list_display = [
        "id",
        "message",
        "user",
        "channel",
        "status_badge",
        "reason_text",
        "attempts",
        "provider",
        "updated_at",
    ]
    list_select_related = ["message", "user"]
    list_filter = [ChannelFilter, "status", "reason", "provider"]
    search_fields = [
        "user__notifier_recipient__email",
        "user__notifier_recipient__phone",
        "=provider_message_id",
    ]
    ordering = ["-id"]
    show_full_result_count = False
    inlines = [DeliveryEventInline]
    fields = DELIVERY_FIELDS
    readonly_fields = DELIVERY_FIELDS

    def get_queryset(self, request: HttpRequest) -> QuerySet[Delivery]:
        # The message is shown by its id and type: what its caller wrote is never loaded here.
        return (
            super()
            .get_queryset(request)
            .select_related("message", "user")
            .defer(*(f"message__{name}" for name in MESSAGE_CALLER_FIELDS))
        )

    @admin.display(description="status", ordering="status")
    def status_badge(self, obj: Delivery) -> SafeString:
        return status_badge(obj.status)

    @admin.display(description="why", ordering="reason")
    def reason_text(self, obj: Delivery) -> str:
        return reason_label(obj.reason) or "-"

    actions = ["retry_now"]

    def has_retry_permission(self, request: HttpRequest) -> bool:
        return bool(request.user.has_perm("notifier.retry_delivery"))

    @admin.action(description="Retry the selected failed deliveries now", permissions=["retry"])
    def retry_now(self, request: HttpRequest, queryset: QuerySet[Delivery]) -> None:
        ids = list(queryset.values_list("pk", flat=True))
        retried = deliveries_retry_now(delivery_ids=ids, actor=str(request.user))
        skipped = len(ids) - retried
        self.message_user(
            request,
            f"{retried} queued for a fresh round of attempts"
            + (f"; {skipped} skipped (not failed)" if skipped else ""),
            messages.SUCCESS if retried else messages.WARNING,
        )


class FailedAgeFilter(admin.SimpleListFilter):
    """How long ago the delivery failed for good (its finished_at, indexed for failed rows)."""

    title = "failed"
    parameter_name = "failed"
    WINDOWS = {
        "1h": ("in the last hour", 1),
        "24h": ("in the last 24 hours", 24),
        "7d": ("in the last 7 days", 24 * 7),
    }

    def lookups(self, request: HttpRequest, model_admin: Any) -> list[tuple[str, str]]:
        return [(k, label) for k, (label, _) in self.WINDOWS.items()] + [
            ("older", "more than 7 days ago")
        ]

    def queryset(self, request: HttpRequest, queryset: QuerySet[Any]) -> QuerySet[Any]:
        value = self.value()
        now = timezone.now()
        if value in self.WINDOWS:
            return queryset.filter(finished_at__gte=now - timedelta(hours=self.WINDOWS[value][1]))
        if value == "older":
            return queryset.filter(finished_at__lt=now - timedelta(days=7))
        return queryset


class FailureReasonFilter(admin.SimpleListFilter):
    """The reasons dead letters have (a DISTINCT over failed rows, on their partial index), not
    every reason there is."""

    title = "why"
    parameter_name = "reason"

    def lookups(self, request: HttpRequest, model_admin: Any) -> list[tuple[str, str]]:
        found = (
            Delivery.objects.filter(status=S.FAILED)
            .order_by("reason")
            .values_list("reason", flat=True)
            .distinct()
        )
        return [(r, reason_label(r) or "(none)") for r in found]

    def queryset(self, request: HttpRequest, queryset: QuerySet[Any]) -> QuerySet[Any]:
        value = self.value()
        return queryset.filter(reason=value) if value is not None else queryset


# A dead-letter row's cells: the last error at most two lines, cut with an ellipsis (the whole
# of it, up to ERROR_TOOLTIP_CHARS, in the tooltip and on the delivery's own page); a long
# address breaks anywhere rather than widening its column; the reason wraps in a column wide
# enough for three lines.
ERROR_TOOLTIP_CHARS = 1000
ERROR_CSS = (
    "display:-webkit-box;-webkit-line-clamp:2;-webkit-box-orient:vertical;overflow:hidden;"
    "overflow-wrap:anywhere;min-width:8em"
)
PERSON_CSS = "display:block;max-width:9em;overflow:hidden;text-overflow:ellipsis;white-space:nowrap"
REASON_CSS = "display:block;min-width:12em"


@admin.register(DeadLetter)
class DeadLetterAdmin(DeliveryAdmin):
    """Deliveries that failed for good: why, with the last error, and a way to try again.

    Laid out for a 1440 px screen: seven columns, none a word wide (the error two lines at most,
    its whole text in the tooltip), and four filters (channel, provider, why, when)."""

    list_display = [
        "id",
        "person",
        "message",
        "channel_provider",
        "failure_reason",
        "error_excerpt",
        "failed_ago",
    ]
    list_filter = [ChannelFilter, "provider", FailureReasonFilter, FailedAgeFilter]
    list_display_links = ["id"]

    def get_queryset(self, request: HttpRequest) -> QuerySet[Delivery]:
        return super().get_queryset(request).filter(status=S.FAILED)

    def get_list_display(self, request: HttpRequest) -> list[Any]:
        links = AdminLinks.for_request(request, self.admin_site)
        return [
            "message_link" if name == "message" and links.messages else name
            for name in self.list_display
        ]

    @admin.display(description="message", ordering="message")
    def message_link(self, obj: Delivery) -> SafeString:
        url = reverse(f"{self.admin_site.name}:notifier_message_change", args=[obj.message_id])
        return format_html(
            '<a href="{}" style="white-space:nowrap">#{}</a> {}',
            url,
            obj.message_id,
            obj.message.type_id,
        )

    @admin.display(description="customer", ordering="user")
    def person(self, obj: Delivery) -> SafeString:
        name = str(obj.user)
        return format_html('<span title="{}" style="{}">{}</span>', name, PERSON_CSS, name)

    @admin.display(description="why", ordering="reason")
    def failure_reason(self, obj: Delivery) -> SafeString:
        return format_html(
            '<span style="{}">{}</span>', REASON_CSS, reason_label(obj.reason) or "-"
        )

    @admin.display(description="via", ordering="channel")
    def channel_provider(self, obj: Delivery) -> SafeString:
        return format_html("{}<br>{}", obj.channel, obj.provider or "—")

    @admin.display(description="last error")
    def error_excerpt(self, obj: Delivery) -> SafeString:
        error = " ".join(obj.last_error.split())
        return format_html(
            '<span class="error-excerpt" title="{}" style="{}">{}</span>',
            error[:ERROR_TOOLTIP_CHARS],
            ERROR_CSS,
            error or "—",
        )

    @admin.display(description="failed", ordering="finished_at")
    def failed_ago(self, obj: Delivery) -> SafeString:
        at = obj.finished_at or obj.updated_at
        return format_html(
            '<span title="{}">{} ago</span>',
            at.isoformat(timespec="seconds"),
            timesince(at, depth=1),
        )


@admin.register(InboxItem)
class InboxItemAdmin(ReadOnlyMixin, admin.ModelAdmin):
    list_display = [
        "id",
        "user",
        "type_key",
        "title",
        "created_at",
        "read_at",
        "archived_at",
        "feedback",
    ]
    list_select_related = ["user"]
    list_filter = ["category", "feedback"]
    search_fields = ["user__notifier_recipient__email", "user__notifier_recipient__phone", "title"]
    ordering = ["-id"]
    show_full_result_count = False
    fields = INBOX_ITEM_FIELDS
    readonly_fields = INBOX_ITEM_FIELDS


@admin.register(Device)
class DeviceAdmin(admin.ModelAdmin):
    list_display = [
        "id",
        "user",
        "platform",
        "active",
        "created_at",
        "deactivated_at",
        "deactivation_reason",
    ]
    list_select_related = ["user"]
    list_filter = ["platform", "active"]
    search_fields = ["user__notifier_recipient__email", "user__notifier_recipient__phone", "=token"]
    raw_id_fields = ["user"]
    readonly_fields = ["created_at"]
    ordering = ["-id"]


@admin.register(NotificationType)
class NotificationTypeAdmin(admin.ModelAdmin):
    """Types from notifier/catalog.py are synced after migrate: only is_active is editable."""

    formfield_overrides = BOUNDED_JSON

    list_display = ["key", "name", "kind", "priority", "channel_list", "is_active", "code_defined"]
    list_filter = ["kind", "priority", "is_active", "code_defined"]
    search_fields = ["key", "name"]
    fields = NOTIFICATION_TYPE_FIELDS

    @admin.display(description="channels")
    def channel_list(self, obj: NotificationType) -> str:
        return ", ".join(str(c) for c in obj.channels or [])

    def get_readonly_fields(self, request: HttpRequest, obj: Any = None) -> list[str]:
        if obj is None:
            return ["code_defined", "updated_at"]
        if obj.code_defined:
            return [f for f in NOTIFICATION_TYPE_FIELDS if f != "is_active"]
        return ["key", "code_defined", "updated_at"]

    def has_delete_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        if obj is not None and obj.code_defined:
            return False
        return super().has_delete_permission(request, obj)


# --- Delivery policies ------------------------------------------------------------------------


@admin.register(RoutingRule)
class RoutingRuleAdmin(admin.ModelAdmin):
    """Which channels a message uses when its caller names none (see README, "Routing")."""

    formfield_overrides = BOUNDED_JSON

    list_display = ["name", "type", "kind", "priority", "send_all", "fallback_chain", "is_active"]
    list_filter = ["kind", "priority", "is_active"]
    list_editable = ["is_active"]


@admin.register(Preference)
class PreferenceAdmin(ReadOnlyMixin, admin.ModelAdmin):
    """Users' overrides; changed by users themselves (preference centre, unsubscribe links)."""

    list_display = ["user", "category", "channel", "enabled", "updated_at"]
    list_select_related = ["user"]
    list_filter = ["channel", "enabled"]
    search_fields = [
        "user__notifier_recipient__email",
        "user__notifier_recipient__phone",
        "category",
    ]


@admin.register(DigestCadence)
class DigestCadenceAdmin(ReadOnlyMixin, admin.ModelAdmin):
    """How often people want their digests (for all types, or one); chosen by them (preference
    centre, the service API), like their other preferences."""

    list_display = ["user", "scope", "cadence", "at", "weekday", "updated_at"]
    list_select_related = ["user"]
    list_filter = ["cadence"]
    search_fields = ["user__notifier_recipient__email", "scope"]


@admin.register(Consent)
class ConsentAdmin(ReadOnlyMixin, admin.ModelAdmin):
    """The consent log: append-only, the newest row per channel holds."""

    list_display = ["user", "purpose", "channel", "granted", "at", "source", "ip_address"]
    list_select_related = ["user"]
    list_filter = ["purpose", "channel", "granted", "source"]
    search_fields = ["user__notifier_recipient__email", "user__notifier_recipient__phone"]
    ordering = ["-at"]


@admin.register(FrequencyCounter)
class FrequencyCounterAdmin(ReadOnlyMixin, admin.ModelAdmin):
    list_display = ["user", "period", "window_start", "count"]
    list_select_related = ["user"]
    list_filter = ["period"]
    search_fields = ["user__notifier_recipient__email"]


@admin.register(Snooze)
class SnoozeAdmin(ReadOnlyMixin, admin.ModelAdmin):
    """Types people muted for a while (their inbox still gets them): set by them, not here."""

    list_display = ["user", "type", "until", "at"]
    list_select_related = ["user"]
    list_filter = ["type"]
    search_fields = ["user__notifier_recipient__email"]
    ordering = ["-at"]


# --- Workflows: date series, digests and topics ----------------------------------------------

DATE_SERIES_FIELDS = ("key", "name", "type", "steps", "exit_on", "is_active", "code_defined")


@admin.register(DateSeries)
class DateSeriesAdmin(admin.ModelAdmin):
    """Reminders around each person's own date. Series from a catalog are synced after
    migrate: only is_active is editable; one made here is validated as a catalog's is."""

    formfield_overrides = BOUNDED_JSON

    list_display = ["key", "name", "type", "steps", "exit_on", "is_active", "code_defined"]
    list_filter = ["is_active", "code_defined", "exit_on"]
    search_fields = ["key", "name"]
    fields = DATE_SERIES_FIELDS

    def get_readonly_fields(self, request: HttpRequest, obj: Any = None) -> list[str]:
        if obj is not None and obj.code_defined:
            return [f for f in DATE_SERIES_FIELDS if f != "is_active"]
        return ["code_defined"] if obj is None else ["key", "code_defined"]

    def has_delete_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        if obj is not None and obj.code_defined:
            return False
        return super().has_delete_permission(request, obj)


@admin.register(RecipientDate)
class RecipientDateAdmin(ReadOnlyMixin, admin.ModelAdmin):
    """People's own dates (set by the product through the API): each one's steps are on the
    person's customer page, with what became of each. Version 0 is a tombstone, never set: a
    clear or exit with as_of that came before the date's set (which it makes ignored)."""

    list_display = ["id", "user", "series", "key", "at", "state", "version", "as_of", "updated_at"]
    list_select_related = ["user"]
    list_filter = ["state", "series"]
    search_fields = ["=key", "user__notifier_recipient__email"]
    ordering = ["-updated_at"]
    exclude = ["context"]
    show_full_result_count = False


@admin.register(Digest)
class DigestAdmin(ReadOnlyMixin, admin.ModelAdmin):
    """Messages collected per person and key; the flush sends each as one message."""

    list_display = ["id", "user", "type", "key", "state", "count", "opened_at", "due_at"]
    list_select_related = ["user"]
    list_filter = ["state", "type"]
    search_fields = ["=key", "user__notifier_recipient__email"]
    ordering = ["-id"]
    show_full_result_count = False


@admin.register(Topic)
class TopicAdmin(ReadOnlyMixin, admin.ModelAdmin):
    """Objects people follow (by the product's key); notify_topic notifies the followers, and
    so does this admin's *Notify followers* page for staff with `notifier.notify_topic`."""

    list_display = ["key", "name", "followers", "created_at"]
    search_fields = ["=key", "name"]
    ordering = ["key"]

    @admin.display(description="followers")
    def followers(self, obj: Topic) -> int:
        return obj.subscriptions.count()

    def get_urls(self) -> list[URLPattern]:
        info = self.opts.app_label, self.opts.model_name
        return [
            path(
                "<path:object_id>/notify/",
                self.admin_site.admin_view(self.notify_view),
                name="{}_{}_notify".format(*info),
            ),
            *super().get_urls(),
        ]

    def render_change_form(
        self, request: HttpRequest, context: dict[str, Any], *args: Any, **kwargs: Any
    ) -> HttpResponse:
        context["may_notify"] = request.user.has_perm(NOTIFY_TOPIC)
        return super().render_change_form(request, context, *args, **kwargs)

    def notify_view(self, request: HttpRequest, object_id: str) -> HttpResponse:
        """A type and its context (JSON), checked as notify_topic checks them; nothing is
        written until all is well. The form's token is the send's idempotency key: the same
        submission twice (a double click, a reload) starts one send."""
        if not request.user.has_perm(NOTIFY_TOPIC):
            raise PermissionDenied
        topic = self.get_object(request, unquote(object_id))
        if topic is None:
            raise Http404("no such topic")
        form = TopicNotifyForm(request.POST if request.method == "POST" else None)
        if form.is_valid():
            send = form.start(topic)
            if send is not None:
                self.log_change(
                    request,
                    topic,
                    f"Notified its followers: {send.type_id} (topic send {send.pk}, "
                    f"key {send.idempotency_key})",
                )
                self.message_user(
                    request,
                    f"Topic send {send.pk} started: {send.type_id} to the followers of "
                    f"{topic.key}.",
                    messages.SUCCESS,
                )
                return HttpResponseRedirect(
                    reverse("admin:notifier_topicsend_change", args=[send.pk])
                )
        context = {
            **self.admin_site.each_context(request),
            "opts": self.opts,
            "original": topic,
            "title": f"Notify the followers of {topic.key}",
            "followers": topic.subscriptions.count(),
            "form": form,
        }
        request.current_app = self.admin_site.name
        return TemplateResponse(request, "admin/notifier/topic/notify.html", context)


class TopicNotifyForm(forms.Form):
    type = forms.ModelChoiceField(
        queryset=NotificationType.objects.filter(is_active=True).order_by("key"),
        to_field_name="key",
        help_text="What the followers are sent",
    )
    context = forms.CharField(
        widget=forms.Textarea(attrs={"rows": 8, "cols": 70}),
        initial="{}",
        help_text='The template variables as a JSON object, e.g. {"product_name": "Kettle"}',
    )
    # Drawn when the form is shown: the send's idempotency key.
    token = forms.UUIDField(widget=forms.HiddenInput, initial=uuid.uuid4)

    def clean_context(self) -> dict[str, Any]:
        try:
            value = strict_json_loads(self.cleaned_data["context"])
        except (ValueError, RecursionError) as exc:
            raise ValidationError(f"This is not JSON: {exc}") from exc
        if not isinstance(value, dict):
            raise ValidationError('Write a JSON object, e.g. {"product_name": "Kettle"}')
        return value

    def start(self, topic: Topic) -> TopicSend | None:
        """Start the send through notify_topic; None, with the error on the form, when it
        refuses (a missing template variable, a bad value): nothing is written then."""
        try:
            send: TopicSend = notify_topic(
                topic.key,
                self.cleaned_data["type"].key,
                self.cleaned_data["context"],
                idempotency_key=f"admin-topic:{self.cleaned_data['token'].hex}",
            )
        except NotifyError as exc:
            self.add_error("context", str(exc))
            return None
        return send


@admin.register(TopicSend)
class TopicSendAdmin(ReadOnlyMixin, admin.ModelAdmin):
    """Each notification to a topic and how far its walk has come."""

    list_display = ["id", "topic", "type", "status", "sent", "created_at", "updated_at"]
    list_select_related = ["topic"]
    list_filter = ["status", "type"]
    ordering = ["-id"]
    exclude = ["context"]


@admin.register(TopicSnooze)
class TopicSnoozeAdmin(ReadOnlyMixin, admin.ModelAdmin):
    """Topics people muted for a while (their inbox still gets what the topic's sends hand
    out): set by them, not here."""

    list_display = ["user", "topic", "until", "at"]
    list_select_related = ["user", "topic"]
    search_fields = ["=topic__key"]
    ordering = ["-at"]


# --- Providers: the suppression list and webhook events ---------------------------------------


@admin.register(SuppressedAddress)
class SuppressedAddressAdmin(ReadOnlyMixin, admin.ModelAdmin):
    """Addresses never sent to again, put here by a hard bounce or a spam complaint.

    Written only by provider webhooks; support staff can look an address up; an admin (delete
    permission) removes one, e.g. once the user fixed their mailbox, and sending resumes.
    """

    list_display = ["address", "channel", "reason", "source", "at", "delivery"]
    list_filter = ["channel", "reason", "source"]
    search_fields = ["address"]
    ordering = ["-at"]
    raw_id_fields = ["delivery"]
    show_full_result_count = False

    def has_delete_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        # Unlike the delivery log, a suppression is lifted by hand: the Admin role may.
        return admin.ModelAdmin.has_delete_permission(self, request, obj)

    def get_search_results(
        self, request: HttpRequest, queryset: QuerySet[SuppressedAddress], search_term: str
    ) -> tuple[QuerySet[SuppressedAddress], bool]:
        """Addresses are stored normalised: so is the search, typed any way."""
        return super().get_search_results(request, queryset, normalize_email(search_term))


@admin.register(ProviderEvent)
class ProviderEventAdmin(ReadOnlyMixin, admin.ModelAdmin):
    """Every webhook event processed, once each: what it was and what it did."""

    list_display = [
        "received_at",
        "provider",
        "event_type",
        "outcome",
        "provider_message_id",
        "delivery",
    ]
    list_filter = ["provider", "outcome", "event_type"]
    search_fields = ["=provider_message_id", "=event_id"]
    ordering = ["-received_at"]
    raw_id_fields = ["delivery"]
    show_full_result_count = False

    def has_delete_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False  # the record that makes replays harmless


# --- Periodic jobs (django-celery-beat) ------------------------------------------------------


class PeriodicTaskAdmin(BeatPeriodicTaskAdmin):
    """django-celery-beat's admin, with its actions (enable, disable, toggle, run now) offered
    only to those who may change periodic tasks: beat declares no permission on them, so anyone
    allowed to see the list could otherwise run a job."""

    CHANGING_ACTIONS = ("enable_tasks", "disable_tasks", "toggle_tasks", "run_tasks")

    def get_actions(self, request: HttpRequest) -> dict[str, Any]:
        actions = super().get_actions(request)
        if not self.has_change_permission(request):
            for name in self.CHANGING_ACTIONS:
                actions.pop(name, None)
        return actions


# Only where asked (NOTIFIER_ADMIN_REPLACE_BEAT): a host may have its own beat admin.
if settings.NOTIFIER_ADMIN_REPLACE_BEAT:
    admin.site.unregister(PeriodicTask)
    admin.site.register(PeriodicTask, PeriodicTaskAdmin)


# --- Erasure (GDPR/PIPL) ----------------------------------------------------------------------


@admin.register(ErasureRecord)
class ErasureRecordAdmin(ReadOnlyMixin, admin.ModelAdmin):
    """Every erasure: who, when, why and how many rows per table; no personal data."""

    list_display = ["at", "recipient_id", "user_key", "by", "identifiers", "repeat"]
    list_filter = ["repeat"]
    search_fields = ["=user_key", "=recipient__id", "by"]
    ordering = ["-at"]
    fields = ["at", "recipient", "user_key", "by", "reason", "counts", "identifiers", "repeat"]
    raw_id_fields = ["recipient"]


@admin.register(ErasedIdentifier)
class ErasedIdentifierAdmin(ReadOnlyMixin, admin.ModelAdmin):
    """The suppression list of erased people's identifiers, as digests: search by typing the
    email address, phone number or external id itself. An admin lifts a suppression when the
    person came back (the row stays, lifted, with who and why)."""

    list_display = ["__str__", "kind", "at", "erasure", "lifted_at", "lifted_by"]
    list_filter = ["kind", ("lifted_at", admin.EmptyFieldListFilter)]
    ordering = ["-at"]
    search_fields = ["digest"]
    raw_id_fields = ["erasure"]
    actions = ["lift"]

    def get_search_results(
        self, request: HttpRequest, queryset: QuerySet[ErasedIdentifier], search_term: str
    ) -> tuple[QuerySet[ErasedIdentifier], bool]:
        """Typed as people write them: the digests of the term, as each kind of identifier."""
        term = search_term.strip()
        if not term:
            return queryset, False
        digests = {digest for kind in IdentifierKind for digest in identifier_digests(kind, term)}
        return queryset.filter(digest__in=digests), False

    def has_lift_permission(self, request: HttpRequest) -> bool:
        return bool(request.user.has_perm("notifier.change_erasedidentifier"))

    @admin.action(description="Lift the selected suppressions", permissions=["lift"])
    def lift(
        self, request: HttpRequest, queryset: QuerySet[ErasedIdentifier]
    ) -> HttpResponse | None:
        identifiers = list(queryset.order_by("pk"))
        form = ReasonForm(request.POST if request.POST.get("post") == "yes" else None)
        if not form.is_valid():
            context = {
                **self.admin_site.each_context(request),
                "opts": self.opts,
                "title": "Lift suppressions",
                "identifiers": identifiers,
                "form": form,
                "action_checkbox_name": ACTION_CHECKBOX_NAME,
            }
            request.current_app = self.admin_site.name
            return TemplateResponse(
                request, "admin/notifier/erasedidentifier/lift_confirmation.html", context
            )
        by = f"admin:{request.user.get_username()}"
        lifted = sum(
            suppression_lift(identifier=i, by=by, reason=form.cleaned_data["reason"])
            for i in identifiers
        )
        self.message_user(request, f"Lifted {lifted} suppression(s).", messages.SUCCESS)
        return None


# The service API's keys live in its own room (notifier/http_api/admin.py).
# Outbound webhooks' endpoints and attempts live with the rest of events out.
from notifier.events_out import admin as _events_out_admin  # noqa: E402, F401
from notifier.http_api import admin as _service_api_admin  # noqa: E402, F401
