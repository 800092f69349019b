"""Admin for segments (rules, imported lists, live count) and audience thresholds.

Marketers (group "Marketer") build a segment from checkboxes and comma-separated lists, see
how many users it reaches and a sample of them on the change page (the count refreshes from
the unsaved form through a small JSON endpoint), and import an explicit list from CSV in two
steps: upload and preview with an error per bad row, then confirm. Support may view only.

The CSV import is a plain two-step admin view rather than django-import-export: that
library's admin flow imports rows *of* the model it is attached to, needs its app in
INSTALLED_APPS for its templates, and looks related users up one row at a time; here every row
names a user by email, phone or id and is resolved in bulk (see `campaigns.services.segments`).

Staff without `notifier.view_contact_details` (Marketer, Marketing lead) identify customers by
their id only: the member list searches by exact user id, the import reads only a `user_id`
column, and samples show a display name (never a username that is an address) with the email
masked. Whatever takes an email or phone as input answers "does this person have an account",
and a search by substring rebuilds the address one character at a time.

A segment's rules, its list and the audience thresholds decide who receives the approved
campaigns that use them: each page warns which approved campaigns a save would send back for
approval, and every save (rules, list members added or removed, a CSV import, thresholds)
re-checks them in its own transaction (`campaigns_recheck`), telling the marketer which went
back and why.
"""

from __future__ import annotations

import functools
import json
import zoneinfo
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from django import forms
from django.contrib import admin, messages
from django.contrib.admin.utils import quote, unquote
from django.contrib.auth import get_user_model
from django.core import signing
from django.core.exceptions import PermissionDenied, ValidationError
from django.db import transaction
from django.db.models import QuerySet
from django.forms.utils import ErrorDict
from django.http import (
    Http404,
    HttpRequest,
    HttpResponse,
    HttpResponseRedirect,
    JsonResponse,
)
from django.template import engines
from django.template.backends.django import Template
from django.template.response import TemplateResponse
from django.urls import URLPattern, path, reverse
from django.utils import timezone
from django.utils.http import urlencode

from campaigns.models import (
    Activity,
    AudienceThresholds,
    Campaign,
    Segment,
    SegmentMember,
    SpendTier,
)
from campaigns.services.audience_values import segment_value_warnings, warning_texts
from campaigns.services.definitions import campaign_definition
from campaigns.services.lifecycle import LIVE, SentBack, campaigns_recheck
from campaigns.services.segments import (
    MemberImportError,
    MemberImportPreview,
    activity_of,
    segment_count,
    segment_members_add,
    segment_members_preview,
    segment_sample,
    spend_tier_of,
)
from notifier.masking import mask_email
from notifier.models import User, recipient_for, recipients_attach
from notifier.models.users import display_name
from notifier.roles import VIEW_CONTACT_DETAILS
from notifier.user_keys import user_key, user_key_from_text, user_key_json

SAMPLE_SIZE = 20
PREVIEW_ROWS_SHOWN = 500
MAX_UPLOAD_BYTES = 20 * 1024 * 1024
IMPORT_TOKEN_SALT = "campaigns.segment-member-import"
IMPORT_TOKEN_MAX_AGE_S = 3600
RULE_FIELDS = Segment.RULE_FIELDS


# --- Rule fields -----------------------------------------------------------------------------


class CommaSeparatedListField(forms.CharField):
    """A list typed as "a, b, c": trimmed, blanks and repeats dropped, each item checked by
    `normalize_item` (which returns the stored form or raises ValidationError)."""

    def __init__(self, *, normalize_item: Callable[[str], str] = str, **kwargs: Any) -> None:
        self.normalize_item = normalize_item
        kwargs.setdefault("required", False)
        kwargs.setdefault("widget", forms.TextInput(attrs={"size": 80}))
        super().__init__(**kwargs)

    def prepare_value(self, value: Any) -> Any:
        if isinstance(value, list | tuple):
            return ", ".join(str(item) for item in value)
        return value

    def to_python(self, value: Any) -> list[str]:  # type: ignore[override]
        if isinstance(value, list | tuple):
            items = [str(item) for item in value]
        else:
            items = str(value or "").split(",")
        cleaned: list[str] = []
        problems: list[str] = []
        for item in (item.strip() for item in items):
            if not item:
                continue
            try:
                normalized = self.normalize_item(item)
            except ValidationError as exc:
                problems.extend(exc.messages)
                continue
            if normalized not in cleaned:
                cleaned.append(normalized)
        if problems:
            raise ValidationError(problems)
        return cleaned


def normalize_tag(value: str) -> str:
    if len(value) > 100:
        raise ValidationError(f"“{value[:20]}…” is longer than 100 characters")
    return value


def normalize_locale(value: str) -> str:
    """'zh_Hans' -> 'zh-hans', the form user locales are stored in."""
    normalized = value.replace("_", "-").lower()
    parts = normalized.split("-")
    if not (2 <= len(parts[0]) <= 3 and all(part.isalnum() and part for part in parts)):
        raise ValidationError(f"“{value}” is not a locale, e.g. en or zh-hans")
    return normalized


@functools.cache
def _time_zone_names() -> dict[str, str]:
    return {name.lower(): name for name in zoneinfo.available_timezones()}


def normalize_time_zone(value: str) -> str:
    """An IANA name, spelled as users' profiles store it ('asia/shanghai' -> 'Asia/Shanghai')."""
    name = _time_zone_names().get(value.lower(), value)
    try:
        zoneinfo.ZoneInfo(name)
    except (zoneinfo.ZoneInfoNotFoundError, ValueError) as exc:
        raise ValidationError(f"“{value}” is not a time zone, e.g. Asia/Shanghai") from exc
    return name


def _tier_choices(thresholds: AudienceThresholds) -> list[tuple[str, str]]:
    whale, dolphin = thresholds.whale_min_spend, thresholds.dolphin_min_spend
    return [
        (SpendTier.WHALE, f"Whale: over {whale:,.0f} a year"),
        (SpendTier.DOLPHIN, f"Dolphin: {dolphin:,.0f} to {whale:,.0f}"),
        (SpendTier.SMALL_FISH, f"Small fish: under {dolphin:,.0f}"),
    ]


def _activity_choices(thresholds: AudienceThresholds) -> list[tuple[str, str]]:
    active, dormant = thresholds.active_within_days, thresholds.dormant_within_days
    return [
        (Activity.ACTIVE, f"Active: seen in the last {active} days"),
        (Activity.DORMANT, f"Dormant: last seen {active} to {dormant} days ago"),
        (Activity.CHURNED, f"Churned: not seen for over {dormant} days, or never"),
    ]


class SegmentRulesForm(forms.Form):
    """The rules alone: the change form's fields, and what the live count reads."""

    spend_tiers = forms.MultipleChoiceField(
        choices=SpendTier.choices,
        widget=forms.CheckboxSelectMultiple,
        required=False,
        help_text="None ticked: any spend.",
    )
    activity = forms.MultipleChoiceField(
        choices=Activity.choices,
        widget=forms.CheckboxSelectMultiple,
        required=False,
        help_text="None ticked: any activity.",
    )
    tags_any = CommaSeparatedListField(
        normalize_item=normalize_tag,
        label="Interest tags (any)",
        help_text="Comma-separated; users with at least one of them.",
    )
    tags_all = CommaSeparatedListField(
        normalize_item=normalize_tag,
        label="Interest tags (all)",
        help_text="Comma-separated; users with every one of them.",
    )
    locales = CommaSeparatedListField(
        normalize_item=normalize_locale, help_text="Comma-separated, e.g. en, zh-hans. Empty: any."
    )
    time_zones = CommaSeparatedListField(
        normalize_item=normalize_time_zone,
        help_text="Comma-separated IANA names, e.g. Asia/Shanghai, Europe/Berlin. Empty: any.",
    )
    points_expiring_within_days = forms.IntegerField(
        required=False,
        min_value=0,
        max_value=3650,
        label="Points expiring within (days)",
        help_text="Users whose loyalty points lapse within this many days. Empty: any.",
    )
    use_member_list = forms.BooleanField(required=False)

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        _label_choices(self.fields)


def _label_choices(fields: dict[str, forms.Field]) -> None:
    """Show the current edges next to each tier and activity state."""
    thresholds = AudienceThresholds.current()
    fields["spend_tiers"].choices = _tier_choices(thresholds)  # type: ignore[attr-defined]
    fields["activity"].choices = _activity_choices(thresholds)  # type: ignore[attr-defined]


class SegmentForm(forms.ModelForm):
    spend_tiers = SegmentRulesForm.base_fields["spend_tiers"]
    activity = SegmentRulesForm.base_fields["activity"]
    tags_any = SegmentRulesForm.base_fields["tags_any"]
    tags_all = SegmentRulesForm.base_fields["tags_all"]
    locales = SegmentRulesForm.base_fields["locales"]
    time_zones = SegmentRulesForm.base_fields["time_zones"]
    points_expiring_within_days = SegmentRulesForm.base_fields["points_expiring_within_days"]

    class Meta:
        model = Segment
        fields = ["name", "description", *Segment.AUDIENCE_FIELDS]
        help_texts = {
            "use_member_list": "Only users on the imported list (who also match the rules).",
        }

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        _label_choices(self.fields)


def segment_from_rules(form: SegmentRulesForm, *, pk: int | None) -> Segment:
    """An unsaved segment with the form's rules, to count before saving."""
    data = form.cleaned_data
    return Segment(
        pk=pk,
        use_member_list=data["use_member_list"],
        **{name: data[name] for name in RULE_FIELDS},
    )


def rules_summary(segment: Segment) -> str:
    parts = [
        ", ".join(str(SpendTier(t).label) for t in segment.spend_tiers if t in SpendTier.values),
        ", ".join(str(Activity(a).label) for a in segment.activity if a in Activity.values),
        f"any of {', '.join(segment.tags_any)}" if segment.tags_any else "",
        f"all of {', '.join(segment.tags_all)}" if segment.tags_all else "",
        ", ".join(segment.locales),
        ", ".join(segment.time_zones),
        (
            f"points expiring within {segment.points_expiring_within_days} days"
            if segment.points_expiring_within_days is not None
            else ""
        ),
        "imported list" if segment.use_member_list else "",
    ]
    return " · ".join(part for part in parts if part) or "Every active user"


def may_see_contacts(request: HttpRequest) -> bool:
    """Full email addresses and phone numbers (Support, Admin); everyone else sees them masked."""
    return bool(request.user.has_perm(VIEW_CONTACT_DETAILS))


# --- Approved campaigns a change sends back --------------------------------------------------


@dataclass(frozen=True)
class ApprovedCampaign:
    name: str
    status: str
    url: str


def approved_campaigns(campaigns: QuerySet[Campaign], admin_site: str) -> list[ApprovedCampaign]:
    """The live (approved) campaigns among `campaigns`, for a page's warning."""
    return [
        ApprovedCampaign(
            name=campaign.name,
            status=str(campaign.get_status_display()).lower(),
            url=reverse(f"{admin_site}:campaigns_campaign_change", args=[quote(campaign.pk)]),
        )
        for campaign in campaigns.filter(status__in=LIVE).order_by("name", "pk")
    ]


def announce_sent_back(request: HttpRequest, sent: list[SentBack]) -> None:
    for item in sent:
        messages.warning(
            request, f"Campaign “{item.campaign.name}” goes back for approval: {item.reason}."
        )


def approval_warning(approved: list[ApprovedCampaign], detail: str) -> str:
    return _template(APPROVAL_WARNING).render(
        {"approved": approved, "approval_warning_detail": detail}
    )


# Shown above a form whose saving sends approved campaigns back; `approved` is their list.
APPROVAL_WARNING = """{% if approved %}<p class="errornote" id="approval-warning">
{% with n=approved|length %}Saving sends {{ n }} approved campaign{{ n|pluralize }} back for
approval:{% endwith %}{% for c in approved %}{% if not forloop.first %}, {% endif %}
<a href="{{ c.url }}">{{ c.name }}</a> ({{ c.status }}){% endfor %}.
{{ approval_warning_detail }}</p>{% endif %}"""


# --- Templates (inline: the admin pages of this module are small) ---------------------------

CHANGE_FORM_TEMPLATE = """{% extends "admin/change_form.html" %}
{% block extrastyle %}{{ block.super }}
<style>
  /* The admin sizes every form label to the 160px label column, which folds each tier's
     and state's description over two or three lines. */
  #id_spend_tiers label, #id_activity label { width: auto; min-width: 0; }
</style>
{% endblock %}
{% block form_top %}{{ block.super }}{{ approval_warning }}{% endblock %}
{% block submit_buttons_bottom %}{{ block.super }}{% if new_campaign_button %}
<div class="submit-row" id="segment-next"><input type="submit" name="_campaign"
  value="Save and create a campaign for it" class="default" id="save-and-campaign"></div>
{% endif %}{% endblock %}
{% block object-tools-items %}
  {% if members_url %}<li><a href="{{ members_url }}">Members</a></li>{% endif %}
  {% if import_url %}<li><a href="{{ import_url }}">Import members (CSV)</a></li>{% endif %}
  {{ block.super }}
{% endblock %}
{% block after_field_sets %}{{ block.super }}
<fieldset class="module aligned" id="segment-audience">
  <h2>Audience</h2>
  <div class="form-row"><div class="flex-container">
    <label>Users reached now:</label>
    <div>
      <strong id="audience-count"
        data-url="{{ audience.count_url }}">{{ audience.count_text }}</strong>
      <button type="button" class="button" id="audience-refresh">Refresh from the form</button>
      <div class="help" id="audience-note">{{ audience.note }}</div>
      <ul id="segment-warnings" class="errorlist">{% for warning in audience.warnings %}
        <li class="errornote">{{ warning }}</li>{% endfor %}</ul>
    </div>
  </div></div>
  {% if audience.members is not None %}
  <div class="form-row"><div class="flex-container">
    <label>Imported list:</label>
    <div>{{ audience.members }} member{{ audience.members|pluralize }}
      {% if not original.use_member_list %}
        <span class="help">(not used: “Use member list” is off)</span>
      {% endif %}
    </div>
  </div></div>
  {% endif %}
  {% if audience.sample %}
  <div class="form-row">
    <table id="audience-sample" style="width: 100%">
      <caption>A sample of {{ audience.sample|length }} matching users</caption>
      <thead><tr>
        <th>User</th><th>Email</th><th>Spend tier</th><th>Activity</th>
        <th>Locale</th><th>Time zone</th><th>Interest tags</th>
      </tr></thead>
      <tbody>
      {% for row in audience.sample %}
        <tr class="sample-user" data-user-id="{{ row.pk }}">
          <td>{% if row.url %}<a href="{{ row.url }}">{{ row.name }}</a>
              {% else %}{{ row.name }}{% endif %}</td>
          <td>{{ row.email }}</td><td>{{ row.tier }}</td><td>{{ row.activity }}</td>
          <td>{{ row.locale }}</td><td>{{ row.time_zone }}</td><td>{{ row.tags|join:", " }}</td>
        </tr>
      {% endfor %}
      </tbody>
    </table>
  </div>
  {% endif %}
</fieldset>
<script>
(function () {
  const count = document.getElementById("audience-count");
  const note = document.getElementById("audience-note");
  const fields = {{ rule_fields_json|safe }};
  document.getElementById("audience-refresh").addEventListener("click", function () {
    const params = new URLSearchParams();
    const inputs = fields.flatMap((name) => Array.from(document.getElementsByName(name)));
    if (inputs.length) {
      params.append("rules", "1");
      for (const input of inputs) {
        if (input.type === "checkbox") {
          if (input.checked) params.append(input.name, input.value);
        } else {
          params.append(input.name, input.value);
        }
      }
    }
    count.textContent = "…";
    fetch(count.dataset.url + "?" + params.toString(), {credentials: "same-origin"})
      .then((response) => response.json())
      .then((data) => {
        if (data.errors) {
          count.textContent = "?";
          note.textContent = Object.values(data.errors).flat().join(" ");
        } else {
          count.textContent = data.count_text;
          note.textContent = "Counted from the form as it is now (not saved yet).";
          const list = document.getElementById("segment-warnings");
          list.replaceChildren(...(data.warnings || []).map((text) => {
            const item = document.createElement("li");
            item.className = "errornote";
            item.textContent = text;
            return item;
          }));
        }
      })
      .catch(() => { count.textContent = "?"; note.textContent = "Could not count."; });
  });
})();
</script>
{% endblock %}
"""

IMPORT_TEMPLATE = """{% extends "admin/base_site.html" %}
{% load i18n admin_urls %}
{% block breadcrumbs %}
<div class="breadcrumbs">
<a href="{% url 'admin:index' %}">{% translate 'Home' %}</a>
&rsaquo; <a href="{% url 'admin:app_list' app_label=opts.app_label %}">
  {{ opts.app_config.verbose_name }}</a>
&rsaquo; <a href="{% url opts|admin_urlname:'changelist' %}">
  {{ opts.verbose_name_plural|capfirst }}</a>
&rsaquo; <a href="{{ change_url }}">{{ segment }}</a>
&rsaquo; Import members
</div>
{% endblock %}
{% block content %}
<div id="content-main">
{% if preview %}
  <p id="import-summary">
    <strong>{{ preview.to_add|length }}</strong> to add,
    <strong>{{ preview.already_members|length }}</strong> already on the list,
    <strong>{{ preview.errors|length }}</strong> with errors
    ({{ preview.rows|length }} row{{ preview.rows|length|pluralize }} read from {{ filename }}).
    Nothing has been saved yet.
  </p>
  {% if preview.errors %}
  <h2>Rows with errors (not imported)</h2>
  <table id="import-errors">
    <thead><tr><th>Line</th><th>Column</th><th>Value</th><th>Problem</th><th>Detail</th></tr></thead>
    <tbody>
    {% for row in errors_shown %}
      <tr class="import-error" data-line="{{ row.line }}" data-problem="{{ row.problem }}">
        <td>{{ row.line }}</td><td>{{ row.column }}</td><td>{{ row.value }}</td>
        <td>{{ row.problem.label }}</td><td>{{ row.message }}</td>
      </tr>
    {% endfor %}
    </tbody>
  </table>
  {% if errors_hidden %}<p class="help">… and {{ errors_hidden }} more.</p>{% endif %}
  {% endif %}
  {% if preview.to_add %}
  <h2>Rows to add</h2>
  <table id="import-to-add">
    <thead><tr><th>Line</th><th>Column</th><th>Value</th><th>User id</th></tr></thead>
    <tbody>
    {% for row in to_add_shown %}
      <tr class="import-add" data-line="{{ row.line }}" data-user-id="{{ row.user_id }}">
        <td>{{ row.line }}</td><td>{{ row.column }}</td><td>{{ row.value }}</td>
        <td>{{ row.user_id }}</td>
      </tr>
    {% endfor %}
    </tbody>
  </table>
  {% if to_add_hidden %}<p class="help">… and {{ to_add_hidden }} more.</p>{% endif %}
  {{ approval_warning }}
  <form method="post" id="import-confirm">{% csrf_token %}
    {{ confirm_form }}
    <div class="submit-row">
      <input type="submit" class="default"
        value="Add {{ preview.to_add|length }} member{{ preview.to_add|length|pluralize }}">
      <a href="{{ import_url }}" class="closelink">Start over</a>
    </div>
  </form>
  {% else %}
  <p>No new members to add. <a href="{{ import_url }}">Upload another file</a></p>
  {% endif %}
{% else %}
  {% if by_contact %}
  <p>Upload a CSV file whose first row names a column <code>email</code>, <code>phone</code>
  (international form, e.g. +8613800138000) or <code>user_id</code>. You will see every row's
  problems before anything is saved; importing the same file again adds nobody twice.</p>
  {% else %}
  <p>Upload a CSV file whose first row names a column <code>user_id</code>, one customer's id
  per row (importing by email or phone needs permission to see contact details: an Admin has
  it). You will see every row's problems before anything is saved; importing the same file
  again adds nobody twice.</p>
  {% endif %}
  <form method="post" enctype="multipart/form-data" id="import-upload">{% csrf_token %}
    {{ upload_form.as_p }}
    <div class="submit-row"><input type="submit" class="default" value="Preview"></div>
  </form>
{% endif %}
</div>
{% endblock %}
"""


@functools.cache
def _template(source: str) -> Template:
    return engines["django"].from_string(source)  # type: ignore[return-value]


# --- CSV import forms ------------------------------------------------------------------------


class MemberUploadForm(forms.Form):
    file = forms.FileField(label="CSV file")

    def clean_file(self) -> Any:
        upload = self.cleaned_data["file"]
        if upload.size > MAX_UPLOAD_BYTES:
            raise ValidationError(f"The file is larger than {MAX_UPLOAD_BYTES // 2**20} MB.")
        return upload


class MemberConfirmForm(forms.Form):
    """Carries the previewed user ids, signed, so the confirm step adds exactly those."""

    token = forms.CharField(widget=forms.HiddenInput)

    def __init__(self, *args: Any, segment: Segment, **kwargs: Any) -> None:
        self.segment = segment
        super().__init__(*args, **kwargs)

    @staticmethod
    def token_for(*, segment: Segment, user_ids: list[Any]) -> str:
        ordered = sorted(user_ids)
        claim: dict[str, Any] = {"segment": segment.pk}
        if all(isinstance(pk, int) for pk in ordered):
            # Deltas of sorted ids compress to a few bytes per user.
            claim["deltas"] = [b - a for a, b in zip([0, *ordered], ordered, strict=False)]
        else:  # UUID or text keys, as JSON carries them
            claim["keys"] = [user_key_json(pk) for pk in ordered]
        return signing.dumps(claim, salt=IMPORT_TOKEN_SALT, compress=True)

    def clean_token(self) -> list[Any]:
        try:
            payload = signing.loads(
                self.cleaned_data["token"], salt=IMPORT_TOKEN_SALT, max_age=IMPORT_TOKEN_MAX_AGE_S
            )
        except signing.SignatureExpired as exc:
            raise ValidationError(
                "The preview is over an hour old; upload the file again."
            ) from exc
        except signing.BadSignature as exc:
            raise ValidationError("The preview could not be read; upload the file again.") from exc
        if payload.get("segment") != self.segment.pk:
            raise ValidationError("This preview was made for another segment.")
        if "keys" in payload:
            keys = [user_key(value) for value in payload["keys"]]
            if None in keys:
                raise ValidationError("The preview could not be read; upload the file again.")
            return keys
        user_ids: list[Any] = []
        total = 0
        for delta in payload["deltas"]:
            total += delta
            user_ids.append(total)
        return user_ids


# --- Admin -----------------------------------------------------------------------------------


@dataclass(frozen=True)
class SampleRow:
    pk: int
    name: str
    email: str
    url: str
    tier: str
    activity: str
    locale: str
    time_zone: str
    tags: list[str]


@admin.register(Segment)
class SegmentAdmin(admin.ModelAdmin):
    form = SegmentForm
    list_display = ["name", "rules", "use_member_list", "updated_at"]
    search_fields = ["name", "description"]
    fieldsets = [
        (None, {"fields": ["name", "description"]}),
        ("Rules (every filled-in rule must match)", {"fields": list(RULE_FIELDS)}),
        ("Imported list", {"fields": ["use_member_list"]}),
    ]

    @property
    def change_form_template(self) -> Template:  # type: ignore[override]
        return _template(CHANGE_FORM_TEMPLATE)

    @admin.display(description="Rules")
    def rules(self, obj: Segment) -> str:
        return rules_summary(obj)

    def get_urls(self) -> list[URLPattern]:
        info = self.opts.app_label, self.opts.model_name
        view = self.admin_site.admin_view
        # Before the defaults: their "<path:object_id>/" would swallow "count/".
        return [
            path("count/", view(self.count_view), name="{}_{}_count_new".format(*info)),
            path(
                "<path:object_id>/count/",
                view(self.count_view),
                name="{}_{}_count".format(*info),
            ),
            path(
                "<path:object_id>/import/",
                view(self.import_view),
                name="{}_{}_import".format(*info),
            ),
            *super().get_urls(),
        ]

    def _url(self, name: str, *args: Any) -> str:
        info = self.admin_site.name, self.opts.app_label, self.opts.model_name
        return reverse("{}:{}_{}_".format(*info) + name, args=[quote(arg) for arg in args])

    def _segment_or_404(self, request: HttpRequest, object_id: str) -> Segment:
        segment = self.get_object(request, unquote(object_id))
        if segment is None:
            raise Http404(f"No segment with id {object_id!r}")
        return segment

    def may_import(self, request: HttpRequest, segment: Segment | None) -> bool:
        return self.has_change_permission(request, segment) and request.user.has_perm(
            f"{SegmentMember._meta.app_label}.add_segmentmember"
        )

    # --- The change page's audience box ---

    def render_change_form(
        self,
        request: HttpRequest,
        context: dict[str, Any],
        add: bool = False,
        change: bool = False,
        form_url: str = "",
        obj: Segment | None = None,
    ) -> HttpResponse:
        context["audience"] = self._audience(request, obj)
        context["new_campaign_button"] = self.has_change_permission(
            request, obj
        ) and request.user.has_perm(f"{Campaign._meta.app_label}.add_campaign")
        context["rule_fields_json"] = json.dumps(Segment.AUDIENCE_FIELDS)
        if obj is not None and obj.pk is not None:
            if request.user.has_perm(f"{SegmentMember._meta.app_label}.view_segmentmember"):
                context["members_url"] = (
                    reverse(f"{self.admin_site.name}:campaigns_segmentmember_changelist")
                    + "?"
                    + urlencode({"segment__id__exact": obj.pk})
                )
            if self.may_import(request, obj):
                context["import_url"] = self._url("import", obj.pk)
            if self.has_change_permission(request, obj):
                context["approval_warning"] = approval_warning(
                    approved_campaigns(Campaign.objects.filter(segment=obj), self.admin_site.name),
                    "Its rules and “Use member list” decide who receives them; its name and "
                    "description do not.",
                )
        return super().render_change_form(request, context, add, change, form_url, obj)

    def response_add(
        self, request: HttpRequest, obj: Segment, post_url_continue: str | None = None
    ) -> HttpResponse:
        return self._to_new_campaign(request, obj) or super().response_add(
            request, obj, post_url_continue
        )

    def response_change(self, request: HttpRequest, obj: Segment) -> HttpResponse:
        return self._to_new_campaign(request, obj) or super().response_change(request, obj)

    def _to_new_campaign(self, request: HttpRequest, segment: Segment) -> HttpResponse | None:
        """ "Save and create a campaign for it": the new campaign's page, this segment chosen."""
        if "_campaign" not in request.POST:
            return None
        url = reverse(f"{self.admin_site.name}:campaigns_campaign_add")
        return HttpResponseRedirect(url + "?" + urlencode({"segment": segment.pk}))

    def save_model(self, request: HttpRequest, obj: Segment, form: Any, change: bool) -> None:
        super().save_model(request, obj, form, change)
        if change:  # in the admin's transaction: the change and the send-backs commit together
            sent = campaigns_recheck(campaigns=Campaign.objects.filter(segment=obj))
            announce_sent_back(request, sent)
        for warning in segment_value_warnings(obj):  # saved all the same: a warning, no error
            messages.warning(request, warning.text)

    def _audience(self, request: HttpRequest, segment: Segment | None) -> dict[str, Any]:
        if segment is None or segment.pk is None:
            return {
                "count_url": self._url("count_new"),
                "count_text": "-",
                "note": "Fill in the rules and press Refresh to count them before saving.",
                "members": None,
                "sample": [],
                "warnings": [],
            }
        audience: dict[str, Any] = {
            "count_url": self._url("count", segment.pk),
            "members": SegmentMember.objects.filter(segment=segment).count(),
            "note": "Counted from the saved rules.",
            "sample": [],
            "warnings": warning_texts(segment_value_warnings(segment)),
        }
        try:
            now = timezone.now()
            count = segment_count(segment, now=now)
            sample = segment_sample(segment, SAMPLE_SIZE, now=now)
        except ValueError as exc:  # a rule value that no longer exists
            return {**audience, "count_text": "?", "note": str(exc)}
        audience["count_text"] = f"{count:,}"
        audience["sample"] = self._sample_rows(request, sample, now=now)
        return audience

    def _sample_rows(self, request: HttpRequest, users: list[User], *, now: datetime) -> list[Any]:
        thresholds = AudienceThresholds.current()
        may_view_users = request.user.has_perm(f"{User._meta.app_label}.view_user")
        recipients_attach(users)  # one query for the sample's profiles
        return [
            SampleRow(
                pk=user.pk,
                name=display_name(user),
                email=mask_email(recipient_for(user).email),
                url=(
                    reverse(f"{self.admin_site.name}:notifier_user_change", args=[user.pk])
                    if may_view_users
                    else ""
                ),
                tier=str(spend_tier_of(profile.yearly_spend, thresholds=thresholds).label),
                activity=str(
                    activity_of(profile.last_active_at, thresholds=thresholds, now=now).label
                ),
                locale=profile.locale,
                time_zone=profile.time_zone,
                tags=[str(tag) for tag in profile.interest_tags or []],
            )
            for user, profile in ((user, recipient_for(user)) for user in users)
        ]

    def count_view(self, request: HttpRequest, object_id: str | None = None) -> JsonResponse:
        """The audience count as JSON: of the saved segment, or with `rules=1` of the rules in
        the query string (the unsaved form)."""
        segment = self._segment_or_404(request, object_id) if object_id else None
        if not self.has_view_permission(request, segment):
            raise PermissionDenied
        if request.GET.get("rules"):
            form = SegmentRulesForm(request.GET)
            if not form.is_valid():
                return JsonResponse({"errors": _messages(form.errors)}, status=400)
            segment = segment_from_rules(form, pk=segment.pk if segment else None)
        if segment is None:
            return JsonResponse({"errors": {"rules": ["No rules given."]}}, status=400)
        try:
            count = segment_count(segment)
        except ValueError as exc:
            return JsonResponse({"errors": {"rules": [str(exc)]}}, status=400)
        return JsonResponse(
            {
                "count": count,
                "count_text": f"{count:,}",
                "warnings": warning_texts(segment_value_warnings(segment)),
            }
        )

    # --- CSV import ---

    def import_view(self, request: HttpRequest, object_id: str) -> HttpResponse:
        """Upload -> preview (per-row errors, nothing written) -> confirm (bulk add)."""
        segment = self._segment_or_404(request, object_id)
        if not self.may_import(request, segment):
            raise PermissionDenied
        context: dict[str, Any] = {
            **self.admin_site.each_context(request),
            "opts": self.opts,
            "title": f"Import members into “{segment}”",
            "segment": segment,
            "change_url": self._url("change", segment.pk),
            "import_url": self._url("import", segment.pk),
            "upload_form": MemberUploadForm(),
            "by_contact": may_see_contacts(request),
        }
        if request.method == "POST" and "token" in request.POST:
            confirm = MemberConfirmForm(request.POST, segment=segment)
            if not confirm.is_valid():
                for error in confirm.errors.get("token", []):
                    messages.error(request, str(error))
                return HttpResponseRedirect(context["import_url"])
            with transaction.atomic():
                result = segment_members_add(
                    segment=segment, user_ids=confirm.cleaned_data["token"]
                )
                sent = campaigns_recheck(campaigns=Campaign.objects.filter(segment=segment))
            announce_sent_back(request, sent)
            self.log_change(request, segment, f"Imported {result.added} members from CSV.")
            messages.success(
                request,
                f"Added {result.added:,} members; {result.already_members:,} were already on the "
                f"list"
                + (
                    f"; {result.skipped:,} skipped (deleted or deactivated since the preview)."
                    if result.skipped
                    else "."
                ),
            )
            if not segment.use_member_list:
                messages.warning(request, "The list is not used until “Use member list” is ticked.")
            return HttpResponseRedirect(context["change_url"])
        if request.method == "POST":
            upload = MemberUploadForm(request.POST, request.FILES)
            context["upload_form"] = upload
            if upload.is_valid():
                file = upload.cleaned_data["file"]
                try:
                    preview = segment_members_preview(
                        segment=segment, data=file.read(), by_contact=context["by_contact"]
                    )
                except MemberImportError as exc:
                    upload.add_error("file", str(exc))
                else:
                    context.update(self._preview_context(segment, preview, filename=file.name))
        request.current_app = self.admin_site.name
        return TemplateResponse(request, _template(IMPORT_TEMPLATE), context)

    def _preview_context(
        self, segment: Segment, preview: MemberImportPreview, *, filename: str
    ) -> dict[str, Any]:
        errors, to_add = preview.errors, preview.to_add
        token = MemberConfirmForm.token_for(segment=segment, user_ids=preview.user_ids_to_add)
        approved = (
            approved_campaigns(Campaign.objects.filter(segment=segment), self.admin_site.name)
            if segment.use_member_list
            else []
        )
        return {
            "approval_warning": approval_warning(
                approved, "The segment uses its member list: adding members changes who they reach."
            ),
            "preview": preview,
            "filename": filename,
            "errors_shown": errors[:PREVIEW_ROWS_SHOWN],
            "errors_hidden": max(len(errors) - PREVIEW_ROWS_SHOWN, 0),
            "to_add_shown": to_add[:PREVIEW_ROWS_SHOWN],
            "to_add_hidden": max(len(to_add) - PREVIEW_ROWS_SHOWN, 0),
            "confirm_form": MemberConfirmForm(initial={"token": token}, segment=segment),
        }


def _messages(errors: ErrorDict) -> dict[str, list[str]]:
    return {name: [str(message) for message in errors[name]] for name in errors}


@admin.register(SegmentMember)
class SegmentMemberAdmin(admin.ModelAdmin):
    """The imported lists; filter by segment. Added by the CSV import, removed here.

    Marketers see each member as an id and a masked email: a list of a segment's members must
    not become a way to export customers' contact details (see notifier/roles.py). Staff with
    `notifier.view_contact_details` see the full address and search by email, phone or
    username; everyone else searches by exact user id only, since a substring search over an
    address they see masked would let them rebuild it one character at a time.
    """

    list_filter = ["segment"]
    list_select_related = ["user", "segment"]
    # The profile's own copy of the address: a host's user model may have no `email` (or no
    # `username`, searched only where it exists).
    search_fields = ["user__notifier_recipient__email", "user__notifier_recipient__phone"]
    search_help_text = "A user id, or (with access to contact details) an email, phone or username."
    # Lists reach millions of rows: no COUNT(*) of the whole table on every page.
    show_full_result_count = False

    def get_queryset(self, request: HttpRequest) -> QuerySet[SegmentMember]:
        return super().get_queryset(request).order_by("-pk")

    def get_search_fields(self, request: HttpRequest) -> list[str]:
        if may_see_contacts(request):
            fields = list(super().get_search_fields(request))
            if any(f.name == "username" for f in get_user_model()._meta.fields):
                fields.append("user__username")
            return fields
        return ["user_id"]  # read as an exact id by get_search_results

    def get_search_results(
        self, request: HttpRequest, queryset: QuerySet[SegmentMember], search_term: str
    ) -> tuple[QuerySet[SegmentMember], bool]:
        term = search_term.strip()
        if may_see_contacts(request) or not term:
            return super().get_search_results(request, queryset, search_term)
        user_id = user_key_from_text(term)
        return (queryset.none() if user_id is None else queryset.filter(user_id=user_id)), False

    @staticmethod
    def _member_field(request: HttpRequest) -> str:
        return "member_with_contact" if may_see_contacts(request) else "member"

    def get_list_display(self, request: HttpRequest) -> list[str]:  # type: ignore[override]
        return [self._member_field(request), "segment", "added_at"]

    def get_fields(self, request: HttpRequest, obj: Any = None) -> list[str]:  # type: ignore[override]
        # An existing member is shown, never re-pointed at another user; the add form's user
        # field takes an id and shows no label (a label would print the email of any id).
        if obj is None:
            return ["user", "segment"]
        return [self._member_field(request), "segment", "added_at"]

    def get_readonly_fields(self, request: HttpRequest, obj: Any = None) -> list[str]:
        return [] if obj is None else [self._member_field(request), "segment", "added_at"]

    def formfield_for_foreignkey(self, db_field: Any, request: HttpRequest, **kwargs: Any) -> Any:
        if db_field.name == "user":
            return forms.ModelChoiceField(
                queryset=get_user_model()._default_manager.all(),
                widget=forms.NumberInput,
                label="User id",
                help_text="The id of the user to add (to add many, import a CSV on the segment).",
            )
        return super().formfield_for_foreignkey(db_field, request, **kwargs)

    # A list a segment uses decides who its approved campaigns reach: adding or removing
    # members re-checks them in the same transaction.

    def save_model(self, request: HttpRequest, obj: SegmentMember, form: Any, change: bool) -> None:
        super().save_model(request, obj, form, change)
        self._recheck(request, [obj.segment_id])

    def delete_model(self, request: HttpRequest, obj: SegmentMember) -> None:
        super().delete_model(request, obj)
        self._recheck(request, [obj.segment_id])

    def delete_queryset(self, request: HttpRequest, queryset: QuerySet[SegmentMember]) -> None:
        with transaction.atomic():
            segment_ids = list(set(queryset.values_list("segment_id", flat=True)))
            super().delete_queryset(request, queryset)
            self._recheck(request, segment_ids)

    @staticmethod
    def _recheck(request: HttpRequest, segment_ids: list[int]) -> None:
        sent = campaigns_recheck(campaigns=Campaign.objects.filter(segment_id__in=segment_ids))
        announce_sent_back(request, sent)

    @admin.display(description="Member", ordering="user_id")
    def member(self, obj: SegmentMember) -> str:
        return f"#{obj.user_id} {mask_email(obj.user.email)}".strip()

    @admin.display(description="Member", ordering="user__notifier_recipient__email")
    def member_with_contact(self, obj: SegmentMember) -> str:
        return f"#{obj.user_id} {obj.user.email}".strip()


class AudienceThresholdsForm(forms.ModelForm):
    class Meta:
        model = AudienceThresholds
        fields = [
            "whale_min_spend",
            "dolphin_min_spend",
            "active_within_days",
            "dormant_within_days",
        ]

    def clean(self) -> dict[str, Any]:
        data = super().clean() or {}
        whale, dolphin = data.get("whale_min_spend"), data.get("dolphin_min_spend")
        if whale is not None and dolphin is not None and dolphin >= whale:
            self.add_error("dolphin_min_spend", "Must be below the whale line.")
        active, dormant = data.get("active_within_days"), data.get("dormant_within_days")
        if active is not None and dormant is not None and active >= dormant:
            self.add_error("dormant_within_days", "Must be more days than “active”.")
        return data


@admin.register(AudienceThresholds)
class AudienceThresholdsAdmin(admin.ModelAdmin):
    """The one row of edges; changing it moves users between tiers and states at once."""

    form = AudienceThresholdsForm
    readonly_fields = ["updated_at"]

    @property
    def change_form_template(self) -> Template:  # type: ignore[override]
        return _template(
            '{% extends "admin/change_form.html" %}'
            "{% block form_top %}{{ block.super }}{{ approval_warning }}{% endblock %}"
        )

    def render_change_form(
        self,
        request: HttpRequest,
        context: dict[str, Any],
        add: bool = False,
        change: bool = False,
        form_url: str = "",
        obj: AudienceThresholds | None = None,
    ) -> HttpResponse:
        if self.has_change_permission(request, obj):
            # The edges their definitions hold: the segment's tier or activity rules, or copy
            # written per spend tier or activity state.
            following = [
                pk
                for pk in Campaign.objects.filter(status__in=LIVE).values_list("pk", flat=True)
                if campaign_definition(pk, members=False)["thresholds"]
            ]
            context["approval_warning"] = approval_warning(
                approved_campaigns(Campaign.objects.filter(pk__in=following), self.admin_site.name),
                "Their segments' spend tier or activity rules, or their copy per spend tier or "
                "activity, follow these edges.",
            )
        return super().render_change_form(request, context, add, change, form_url, obj)

    def save_model(
        self, request: HttpRequest, obj: AudienceThresholds, form: Any, change: bool
    ) -> None:
        super().save_model(request, obj, form, change)
        announce_sent_back(request, campaigns_recheck())

    def has_add_permission(self, request: HttpRequest) -> bool:
        return False

    def has_delete_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False

    def changelist_view(
        self, request: HttpRequest, extra_context: dict[str, Any] | None = None
    ) -> HttpResponse:
        if not self.has_view_or_change_permission(request):
            raise PermissionDenied
        thresholds = AudienceThresholds.current()
        info = self.admin_site.name, self.opts.app_label, self.opts.model_name
        return HttpResponseRedirect(
            reverse("{}:{}_{}_change".format(*info), args=[quote(thresholds.pk)])
        )
