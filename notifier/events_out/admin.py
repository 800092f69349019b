"""Webhook endpoints in the admin: an Admin adds one (its whsec_ secret is made and shown on
the endpoint's page, for the receiver to verify signatures with), chooses its event types and
batch size, rotates its secret, sends it a test event, and re-enables it after it was disabled
for failing. Every request made to it is listed, read-only, with its answer."""

from __future__ import annotations

from typing import Any

from django import forms
from django.contrib import admin, messages
from django.contrib.admin.options import IS_POPUP_VAR
from django.db.models import QuerySet
from django.http import HttpRequest, HttpResponseRedirect
from django.urls import reverse
from django.utils.html import format_html, format_html_join
from django.utils.safestring import SafeString

from notifier.events_out.record import SUBSCRIBABLE
from notifier.events_out.sending import (
    InvalidEndpoint,
    check_endpoint,
    endpoint_enable,
    endpoint_rotate_secret,
    endpoint_test_event,
    secret_new,
)
from notifier.models import WebhookAttempt, WebhookEndpoint, WebhookEventType

RECENT_ATTEMPTS = 20


class WebhookEndpointForm(forms.ModelForm):
    url = forms.URLField(
        max_length=500,
        assume_scheme="https",
        help_text="http(s):// only, at a public address (unless the site allows private networks)",
    )
    event_types = forms.MultipleChoiceField(
        choices=[(t, label) for t, label in WebhookEventType.choices if t in SUBSCRIBABLE],
        widget=forms.CheckboxSelectMultiple,
    )

    class Meta:
        model = WebhookEndpoint
        fields = ["name", "url", "event_types", "max_batch"]

    def clean(self) -> dict[str, Any]:
        cleaned = super().clean() or {}
        if not self.errors:
            try:
                check_endpoint(
                    url=cleaned.get("url", ""),
                    event_types=cleaned.get("event_types", []),
                    max_batch=cleaned.get("max_batch") or 0,
                )
            except InvalidEndpoint as exc:
                raise forms.ValidationError(str(exc)) from exc
        return cleaned


@admin.register(WebhookEndpoint)
class WebhookEndpointAdmin(admin.ModelAdmin):
    form = WebhookEndpointForm
    list_display = ["name", "url", "active", "max_batch", "consecutive_failures", "disabled_at"]
    list_filter = ["active"]
    search_fields = ["name", "url"]
    readonly_fields = [
        "secret",
        "active",
        "disabled_at",
        "disabled_reason",
        "failing_since",
        "consecutive_failures",
        "created_at",
        "recent_attempts",
    ]
    actions = ["rotate_secret", "send_test_event", "enable"]

    def get_fields(self, request: HttpRequest, obj: Any = None) -> Any:
        editable = ["name", "url", "event_types", "max_batch"]
        return editable if obj is None else [*editable, *self.readonly_fields]

    def save_model(
        self, request: HttpRequest, obj: WebhookEndpoint, form: Any, change: bool
    ) -> None:
        if not change:
            obj.secret = secret_new()
        obj.event_types = sorted(set(obj.event_types))
        super().save_model(request, obj, form, change)

    def response_add(self, request: HttpRequest, obj: WebhookEndpoint, *args: Any) -> Any:
        """To the new endpoint's page, where its secret is."""
        if "_addanother" in request.POST or IS_POPUP_VAR in request.POST:
            return super().response_add(request, obj, *args)
        self.message_user(
            request,
            "Endpoint added. Its signing secret is on this page: give it to the receiver.",
            messages.SUCCESS,
        )
        return HttpResponseRedirect(reverse("admin:notifier_webhookendpoint_change", args=[obj.pk]))

    @admin.display(description="Recent requests")
    def recent_attempts(self, obj: WebhookEndpoint) -> SafeString:
        attempts = WebhookAttempt.objects.filter(endpoint=obj).order_by("-at", "-pk")[
            :RECENT_ATTEMPTS
        ]
        rows = format_html_join(
            "",
            "<tr><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{} ms</td><td>{}</td></tr>",
            (
                (a.at, a.webhook_id, a.events, a.status_code or "-", a.duration_ms, a.error or "")
                for a in attempts
            ),
        )
        return format_html(
            "<table><tr><th>At</th><th>webhook-id</th><th>Events</th><th>Status</th>"
            "<th>Took</th><th>Error</th></tr>{}</table>",
            rows,
        )

    @admin.action(description="Rotate the signing secret", permissions=["change"])
    def rotate_secret(self, request: HttpRequest, queryset: QuerySet[WebhookEndpoint]) -> None:
        for endpoint in queryset:
            endpoint_rotate_secret(endpoint=endpoint)
        self.message_user(
            request,
            "New secrets are in force from the next request; each is shown on its endpoint's page.",
            messages.SUCCESS,
        )

    @admin.action(description="Send a test event", permissions=["change"])
    def send_test_event(self, request: HttpRequest, queryset: QuerySet[WebhookEndpoint]) -> None:
        for endpoint in queryset:
            endpoint_test_event(endpoint=endpoint)
        self.message_user(
            request,
            "A webhook.test event is on its way; its request shows under Recent requests.",
            messages.SUCCESS,
        )

    @admin.action(description="Re-enable (send what waits)", permissions=["change"])
    def enable(self, request: HttpRequest, queryset: QuerySet[WebhookEndpoint]) -> None:
        enabled = 0
        for endpoint in queryset:
            try:
                enabled += endpoint_enable(endpoint=endpoint)
            except InvalidEndpoint as exc:
                self.message_user(request, f"Not re-enabled: {exc}", messages.ERROR)
        self.message_user(request, f"Re-enabled {enabled} endpoint(s).", messages.SUCCESS)


@admin.register(WebhookAttempt)
class WebhookAttemptAdmin(admin.ModelAdmin):
    """Every request made to an endpoint: the pipeline's record, read-only."""

    list_display = ["at", "endpoint", "webhook_id", "events", "status_code", "ok", "duration_ms"]
    list_filter = ["ok", "endpoint"]
    search_fields = ["webhook_id"]
    list_select_related = ["endpoint"]

    def has_add_permission(self, request: HttpRequest) -> bool:
        return False

    def has_change_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False

    def has_delete_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False
