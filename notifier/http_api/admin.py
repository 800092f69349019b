"""API keys in the admin: an Admin creates one (the key is shown once, on the page after
saving), sees when each was last used, and revokes it. Nobody edits or deletes a key: a
revoked key stays listed, with when it was revoked. Calls refused with nobody to answer (the
Celery task `notifier.notify` sent bad arguments) are listed for the operator."""

from __future__ import annotations

from typing import Any

from django import forms
from django.contrib import admin, messages
from django.db.models import QuerySet
from django.http import HttpRequest, HttpResponse
from django.template.response import TemplateResponse
from django.urls import reverse

from notifier.models.api_keys import ApiKey, ApiScope, RefusedCall
from notifier.services.api_keys import (
    InvalidApiKey,
    api_key_create,
    api_key_revoke,
    parse_key_rate,
)


class ApiKeyForm(forms.ModelForm):
    scopes = forms.MultipleChoiceField(
        choices=ApiScope.choices, widget=forms.CheckboxSelectMultiple
    )

    class Meta:
        model = ApiKey
        fields = ["name", "scopes", "rate_limit"]

    def clean_rate_limit(self) -> str:
        text = str(self.cleaned_data.get("rate_limit") or "").strip()
        if text:
            try:
                parse_key_rate(text)
            except InvalidApiKey as exc:
                raise forms.ValidationError(str(exc)) from exc
        return text


@admin.register(ApiKey)
class ApiKeyAdmin(admin.ModelAdmin):
    form = ApiKeyForm
    list_display = ["name", "key_prefix", "scope_list", "created_at", "last_used_at", "revoked_at"]
    list_filter = [("revoked_at", admin.EmptyFieldListFilter)]
    search_fields = ["name", "prefix"]
    readonly_fields = ["key_prefix", "created_at", "created_by", "last_used_at", "revoked_at"]
    actions = ["revoke"]

    def get_fields(self, request: HttpRequest, obj: Any = None) -> Any:
        if obj is None:
            return ["name", "scopes", "rate_limit"]
        return ["name", "key_prefix", "scopes", "rate_limit", *self.readonly_fields[1:]]

    def has_delete_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False  # revoke instead: the key's record stays

    @admin.display(description="Key")
    def key_prefix(self, obj: ApiKey) -> str:
        return f"ntf_{obj.prefix}_…" if obj.prefix else "-"

    @admin.display(description="Scopes")
    def scope_list(self, obj: ApiKey) -> str:
        return ", ".join(obj.scopes)

    def save_model(self, request: HttpRequest, obj: ApiKey, form: Any, change: bool) -> None:
        if change:
            super().save_model(request, obj, form, change)
            return
        made = api_key_create(
            name=form.cleaned_data["name"],
            scopes=form.cleaned_data["scopes"],
            rate_limit=form.cleaned_data.get("rate_limit") or "",
            created_by=request.user if request.user.is_authenticated else None,
        )
        obj.pk = made.key.pk
        obj._token = made.token  # type: ignore[attr-defined]  # for response_add, once

    def response_add(
        self, request: HttpRequest, obj: ApiKey, post_url_continue: str | None = None
    ) -> HttpResponse:
        key = ApiKey.objects.get(pk=obj.pk)
        context = {
            **self.admin_site.each_context(request),
            "opts": self.opts,
            "title": f"API key created: {key.name}",
            "key": key,
            "token": getattr(obj, "_token", ""),
            "api_root": request.build_absolute_uri(reverse("notifier:api-v1:api-root")),
        }
        response = TemplateResponse(request, "admin/notifier/apikey/created.html", context)
        response["Cache-Control"] = "no-store"  # the key must not stay in a cache
        return response

    @admin.action(description="Revoke the selected keys", permissions=["change"])
    def revoke(self, request: HttpRequest, queryset: QuerySet[ApiKey]) -> None:
        revoked = sum(api_key_revoke(key=key) for key in queryset)
        self.message_user(
            request,
            f"Revoked {revoked} key{'s' if revoked != 1 else ''}; calls with "
            f"{'them' if revoked != 1 else 'it'} are refused from now on.",
            messages.SUCCESS,
        )


@admin.register(RefusedCall)
class RefusedCallAdmin(admin.ModelAdmin):
    """Read only: what another codebase sent that could not be sent, and what to fix."""

    list_display = ["at", "source", "error_type", "type_key", "message", "caller"]
    list_filter = ["source", "error_type"]
    search_fields = ["=caller", "type_key", "error_type"]
    date_hierarchy = "at"
    ordering = ["-at"]

    def has_add_permission(self, request: HttpRequest) -> bool:
        return False

    def has_change_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False

    def has_delete_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False
