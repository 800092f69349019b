"""The marketers' campaign admin: create a campaign with its 3-2-1 plan, edit its steps and A/B
copy, move it through approval and its life, preview and test-send its copy.

Pages, kept few:

- the campaign list: status, kind, event, the next step and when, audience, funnel link;
- the campaign page: settings (the segment with its live audience count), the steps (offsets
  typed in days and hours, "-3d"), each step's variants linking to their copy, a checklist of
  what stops submission, and the lifecycle buttons (submit, approve, send back, pause, resume,
  cancel with a confirmation, move the event);
- a variant's page: its weight and its copy per channel, locale and persona (everyone, or a
  spend tier or activity state), checked as it is saved;
- the preview: every step x variant x channel rendered for a chosen or sample user (their
  persona's copy), then the same user as each persona the variant has copy for, each variant
  with "send test to me";
- the funnel (campaigns.admin.stats).

Copy and steps change only while a campaign is a draft or awaiting approval (and has not
started); a change while it awaits approval sends it back to draft. Once approved, its page
shows anything that differs from what the lead approved (campaigns.services.definitions), and
a campaign back for approval shows the lead why and what changed, with the audience then and
now; the approve button carries the digest of what it showed. Every move goes through
campaigns.services.lifecycle, whose CampaignError messages are shown as they are. Support (view
permissions only) opens every page, sees no button and gets 403 on every POST. Pages show
users' emails masked, and staff without `notifier.view_contact_details` choose
the preview's customer by id only.
"""

from __future__ import annotations

import json
import keyword
import re
import uuid
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any, ClassVar

from django import forms
from django.conf import settings
from django.contrib import admin, messages
from django.contrib.admin.options import InlineModelAdmin
from django.contrib.admin.utils import quote, unquote
from django.contrib.auth import get_user_model
from django.core.exceptions import PermissionDenied, ValidationError
from django.db import transaction
from django.db.models import IntegerField, OuterRef, QuerySet, Subquery
from django.db.models.fields.json import KT
from django.db.models.functions import Cast
from django.forms.fields import InvalidJSONInput
from django.forms.models import BaseInlineFormSet
from django.http import (
    Http404,
    HttpRequest,
    HttpResponse,
    HttpResponseNotAllowed,
    HttpResponseRedirect,
)
from django.template.response import TemplateResponse
from django.urls import URLPattern, path, reverse
from django.utils import timezone
from django.utils.dateparse import parse_datetime
from django.utils.html import format_html, format_html_join
from django.utils.http import urlencode
from django.utils.safestring import SafeString, mark_safe
from django.utils.text import capfirst
from jinja2 import TemplateSyntaxError, meta

from campaigns.admin.forecast import forecast_context, forecast_urls
from campaigns.admin.segments import mask_email, normalize_locale
from campaigns.admin.stats import CHANNEL_LABELS, stats_url, stats_urls
from campaigns.models import (
    Campaign,
    CampaignKind,
    CampaignStats,
    CampaignStatus,
    CampaignStep,
    StepStatus,
    StepTiming,
    StepVariant,
    VariantTemplate,
)
from campaigns.personas import persona_label, persona_problem
from campaigns.policies import (
    DEFAULT_ACTIVE_HOUR,
    describe_offset,
    fanout_start,
    offset_words,
    step_moment,
    step_reading,
)
from campaigns.rendering import (
    CAMPAIGN_VARIABLES,
    MAX_COPY_CHARS,
    PART_FIELDS,
    TimeBudget,
    allowed_variables,
    channel_parts,
    copy_problems,
    required_parts,
    sms_length,
    variant_cache_clear,
)
from campaigns.services.definitions import (
    approval_changes,
    campaign_definition,
    definition_digest,
)
from campaigns.services.lifecycle import (
    LIVE,
    CampaignError,
    campaign_approve,
    campaign_cancel,
    campaign_channels,
    campaign_create,
    campaign_move_event,
    campaign_pause,
    campaign_problems,
    campaign_resume,
    campaign_send_back,
    campaign_submit,
    copy_variant,
    locale_problem,
    plan_of,
)
from campaigns.services.previews import (
    campaign_persona,
    seed_list_masked,
    seed_users,
    unsaved_copy_preview,
    user_by_key,
    variant_personas,
    variant_preview,
    variant_send_test,
    variant_send_test_to_seeds,
)
from campaigns.services.segments import segment_count, segment_sample, segment_users
from campaigns.services.stats import CAMPAIGN_SCOPE
from channels.base import Channel, Content
from notifier.api import MAX_CONTEXT_BYTES, MAX_CONTEXT_DEPTH
from notifier.forms import BoundedJSONField
from notifier.ids import parse_id
from notifier.models import Delivery, NotificationType, User, recipient_for
from notifier.models.types import Kind
from notifier.models.users import display_name
from notifier.rendering import COMPILE_ERRORS, SYSTEM_VARIABLES, RenderError, environment
from notifier.roles import ALLOW_QUIET_HOURS, VIEW_CONTACT_DETAILS
from notifier.status import DeliveryStatus
from notifier.text import json_value_problem, strict_json_loads
from notifier.user_keys import user_key_from_text

C = CampaignStatus
TEMPLATES = "admin/campaigns/campaign/"
EDITABLE_STATUSES = frozenset({C.DRAFT, C.AWAITING_APPROVAL})
LIVE_STATUSES = frozenset({C.SCHEDULED, C.RUNNING, C.PAUSED})
MAX_HOLDOUT_PERCENT = 50
CHANNEL_CHOICES = [(str(channel), CHANNEL_LABELS[str(channel)]) for channel in Channel]


def copy_editable(campaign: Campaign) -> bool:
    """Steps, copy and settings change only before approval (and never once it has started:
    a running campaign back for approval is approved or cancelled, not rewritten)."""
    return campaign.status in EDITABLE_STATUSES and campaign.started_at is None


def staff_user(request: HttpRequest) -> User:
    user = request.user
    if not isinstance(user, get_user_model()):  # admin views only ever see logged-in staff
        raise PermissionDenied
    return user


def channel_label(channel: str) -> str:
    return CHANNEL_LABELS.get(channel, channel)


def variant_url(variant_id: int, admin_site_name: str = "admin") -> str:
    return reverse(f"{admin_site_name}:campaigns_stepvariant_change", args=[quote(variant_id)])


def when_text(moment: datetime) -> str:
    return timezone.localtime(moment).strftime("%a %d %b %Y, %H:%M %Z")


# --- Offsets in human units --------------------------------------------------------------------

MINUTES_PER_UNIT = {
    **dict.fromkeys(("d", "day", "days"), 24 * 60),
    **dict.fromkeys(("h", "hr", "hrs", "hour", "hours"), 60),
    **dict.fromkeys(("m", "min", "mins", "minute", "minutes"), 1),
}
MAX_OFFSET_MINUTES = 366 * 24 * 60
# ASCII digits: \d would take other scripts' digits too.
_AMOUNT = re.compile(r"([0-9]+)\s*([a-z]+)")
OFFSET_HELP = (
    "“3 days before” the event, “1 hour before”, “2 days 12 hours before”, “30 minutes after”; "
    "or short: -3d, -1h, -2d 12h, +30m."
)


def parse_offset(text: str) -> int:
    """Minutes from the event, from what a marketer types: '-3d', '-1h', '-2d 12h', '+30m',
    '3 days before', '1 hour after', '0'. Raises ValidationError saying how to write it."""
    raw = " ".join(text.lower().replace(",", " ").split())
    sign = 0
    if raw[:1] in ("-", "+"):
        sign, raw = (-1 if raw[0] == "-" else 1), raw[1:].strip()
    for word, word_sign in (("before", -1), ("after", 1)):
        if raw.endswith(word):
            if sign:
                raise ValidationError(f"Use either a sign or “{word}”, not both: {OFFSET_HELP}")
            sign, raw = word_sign, raw[: -len(word)].strip()
    if raw in ("0", "at the event"):
        return 0
    amounts = _AMOUNT.findall(raw.replace(" and ", " "))
    if not amounts or _AMOUNT.sub("", raw.replace(" and ", " ")).strip():
        raise ValidationError(f"“{text}” is not a duration. {OFFSET_HELP}")
    minutes = 0
    for number, unit in amounts:
        if unit not in MINUTES_PER_UNIT:
            raise ValidationError(
                f"“{unit}” is not a unit: use d (days), h (hours) or m (minutes)."
            )
        if len(number.lstrip("0")) > len(str(MAX_OFFSET_MINUTES)):  # int() stops at 4,300 digits
            raise ValidationError("A step must be within a year of the event.")
        minutes += int(number) * MINUTES_PER_UNIT[unit]
    if minutes and not sign:
        raise ValidationError(f"Say whether it is before or after the event. {OFFSET_HELP}")
    if minutes > MAX_OFFSET_MINUTES:
        raise ValidationError("A step must be within a year of the event.")
    return sign * minutes


def step_when(campaign: Campaign, step: CampaignStep) -> str:
    """When the step goes out, in words, from the campaign's event."""
    if campaign.kind == CampaignKind.TRIGGERED:
        return "when a user enters the segment"
    if campaign.event_at is None:
        return "once the event time is set"
    moment = step_moment(campaign.event_at, plan_of(step))
    if step.timing == StepTiming.OFFSET:
        return when_text(moment)
    day = timezone.localtime(moment).strftime("%a %d %b %Y")
    if step.timing == StepTiming.LOCAL_TIME and step.local_time is not None:
        return f"{day}, {step.local_time:%H:%M} in each user's own time zone"
    return f"{day}, at each user's usual hour ({DEFAULT_ACTIVE_HOUR}:00 if not known yet)"


def past_steps(campaign: Campaign, now: datetime | None = None) -> list[CampaignStep]:
    """A one-off campaign's pending steps whose moment (their fan-out's start) has passed:
    they could not go out, and are offered to be dropped."""
    if campaign.kind != CampaignKind.ONE_OFF or campaign.event_at is None:
        return []
    now = now or timezone.now()
    event_at = campaign.event_at
    return [
        step
        for step in campaign.steps.filter(status=StepStatus.PENDING).order_by("offset_minutes")
        if fanout_start(event_at, plan_of(step)) < now
    ]


# --- The campaign form ---------------------------------------------------------------------

RESERVED_NAMES = {
    "user": "the recipient",
    "site_name": "the site's name",
    "site_url": "the site's address",
    "preferences_url": "the recipient's preference page",
    "unsubscribe_url": "the unsubscribe link",
    "digest": "what a digest collected (a type's digests)",
    "campaign": "the campaign's name and event time",
    "event_at": "the campaign's event time",
}
assert set(RESERVED_NAMES) == SYSTEM_VARIABLES | CAMPAIGN_VARIABLES
# What the variant page lists after the campaign's own variables (see RESERVED_NAMES).
SYSTEM_EXAMPLES = (
    "user.first_name",
    "user.name",
    "campaign.name",
    "campaign.event_at",
    "site_name",
    "site_url",
    "preferences_url",
    "unsubscribe_url",
)
JINJA_WORDS = frozenset({"true", "false", "none", "and", "or", "not", "in", "is", "if", "else"})
VARIABLES_HELP = (
    "Values every template of the campaign can use: a name such as coupon_code (letters, "
    "digits and _) and its value, D11; the copy writes it as {{ coupon_code }}. Empty a row "
    "to remove it."
)

CREATE_FIELDS = [
    "name",
    "kind",
    "category",
    "segment",
    "event_at",
    "priority",
    "channels",
    "variables",
    "holdout_percent",
]
EDIT_FIELDS = [
    "name",
    "description",
    "category",
    "segment",
    "event_at",
    "priority",
    "channels",
    "variables",
    "holdout_percent",
    "attribution_hours",
    "ab_metric",
    "ab_sample_size",
    "reentry_days",
    "quiet_hours_allowed",
    "stop_series_on",
    "send_rate_per_minute",
]
# Editable in every status: a marketer may raise or lower it while the campaign runs.
SAFETY_FIELDS = ["pause_failure_percent", "seed_list"]
STATUS_FIELDS = [
    "status",
    "pause_reason",
    "created_by",
    "approved_by",
    "approved_at",
    "started_at",
    "finished_at",
]


@dataclass(frozen=True)
class VariableRow:
    name: str
    value: str
    is_json: bool = False  # a value that is not text (a number, a list): kept as it was


MAX_VARIABLES = 50
EXTRA_VARIABLE_ROWS = 2


class VariableRowsWidget(forms.Widget):
    """The campaign's variables as rows of a name and a value, two empty rows below them. It
    submits without JavaScript (a row left empty is no variable; emptying a row removes it);
    the script only adds rows. A value that is not text (a number, a list) shows as JSON and
    is read back as JSON, so saving the page never changes its type."""

    def value_from_datadict(self, data: Any, files: Any, name: str) -> Any:
        if name in data:  # one JSON object, as scripts and older clients post it
            return data[name]
        rows: list[VariableRow] = []
        for index in range(MAX_VARIABLES + EXTRA_VARIABLE_ROWS + 1):
            row_name = data.get(f"{name}-{index}-name")
            if row_name is None:
                continue
            rows.append(
                VariableRow(
                    row_name.strip(),
                    data.get(f"{name}-{index}-value", ""),
                    data.get(f"{name}-{index}-json") == "1",
                )
            )
        return rows

    def value_omitted_from_data(self, data: Any, files: Any, name: str) -> bool:
        return False

    @staticmethod
    def rows_of(value: Any) -> list[VariableRow]:
        if isinstance(value, list) and all(isinstance(row, VariableRow) for row in value):
            return list(value)
        if isinstance(value, InvalidJSONInput | str):
            try:
                value = json.loads(value) if value else {}
            except (ValueError, RecursionError):
                return []
        if not isinstance(value, dict):
            return []
        return [
            VariableRow(str(key), item, False)
            if isinstance(item, str)
            else VariableRow(str(key), json.dumps(item, ensure_ascii=False), True)
            for key, item in value.items()
        ]

    def render(
        self, name: str, value: Any, attrs: dict[str, Any] | None = None, renderer: Any = None
    ) -> SafeString:
        rows = [*self.rows_of(value), *[VariableRow("", "")] * EXTRA_VARIABLE_ROWS]
        body = format_html_join(
            "\n",
            '<tr class="variable-row"><td><input type="text" name="{0}-{1}-name" value="{2}" '
            'size="20" maxlength="64" aria-label="Variable name" placeholder="coupon_code">'
            '</td><td><input type="text" name="{0}-{1}-value" value="{3}" size="50" '
            'aria-label="Value" placeholder="D11">{4}</td></tr>',
            (
                (
                    name,
                    index,
                    row.name,
                    row.value,
                    format_html('<input type="hidden" name="{}-{}-json" value="1">', name, index)
                    if row.is_json
                    else "",
                )
                for index, row in enumerate(rows)
            ),
        )
        return format_html(
            '<table id="variables-rows" data-name="{}"><thead><tr><th>Name</th><th>Value</th>'
            "</tr></thead><tbody>{}</tbody></table>"
            '<button type="button" class="button" id="variables-add" hidden>Add a variable'
            "</button>",
            name,
            body,
        )


class VariablesField(forms.Field):
    """The rows of VariableRowsWidget as the JSON object the campaign stores (a JSON text posted
    as one value is read within notify()'s bounds, as before)."""

    widget = VariableRowsWidget

    def to_python(self, value: Any) -> Any:
        if isinstance(value, str):
            json_text = BoundedJSONField(
                required=False,
                error_messages={"invalid": 'This is not valid JSON: write {"coupon_code": "D11"}.'},
            )
            return json_text.to_python(value)
        variables: dict[str, Any] = {}
        problems: list[str] = []
        for number, row in enumerate(value or [], start=1):
            if not row.name:
                if row.value.strip():
                    problems.append(f"Row {number} has a value but no name: name it or empty it.")
                continue
            if row.name in variables:
                problems.append(f"“{row.name}” is there twice: keep one.")
                continue
            if row.is_json:
                try:
                    variables[row.name] = strict_json_loads(row.value)
                except (ValueError, RecursionError):
                    problems.append(f"The value of “{row.name}” is no longer valid JSON.")
            else:
                variables[row.name] = row.value
        if len(variables) > MAX_VARIABLES:
            problems.append(f"At most {MAX_VARIABLES} variables.")
        if problems:
            raise ValidationError(problems)
        text = json.dumps(variables, ensure_ascii=False)
        if len(text.encode("utf-8", "surrogatepass")) > MAX_CONTEXT_BYTES:
            raise ValidationError(
                f"The variables are over {MAX_CONTEXT_BYTES // 1024} KB in all; keep them shorter."
            )
        problem = json_value_problem(variables, max_depth=MAX_CONTEXT_DEPTH)
        if problem:
            raise ValidationError(f"A value {problem}; fix it.")
        return variables

    def has_changed(self, initial: Any, data: Any) -> bool:
        try:
            return bool(self.to_python(data) != (initial or {}))
        except ValidationError:
            return True


class CampaignForm(forms.ModelForm):
    # Set per request (CampaignAdmin.get_form): whether customers may be seeds, not only staff.
    seeds_anyone: ClassVar[bool] = False
    channels = forms.MultipleChoiceField(
        choices=CHANNEL_CHOICES,
        required=False,
        widget=forms.CheckboxSelectMultiple,
        help_text="None ticked: the routing rules choose among the category's channels.",
    )
    variables = VariablesField(required=False, help_text=VARIABLES_HELP)

    class Meta:
        model = Campaign
        fields = [
            *CREATE_FIELDS,
            "description",
            "attribution_hours",
            "ab_metric",
            "ab_sample_size",
            "reentry_days",
            "stop_series_on",
            "send_rate_per_minute",
            "seed_list",
        ]
        widgets = {"seed_list": forms.Textarea(attrs={"rows": 3, "cols": 40})}
        help_texts = {
            "segment": "Who gets it. The count below is how many users it reaches right now.",
            "event_at": "When the sale starts; the steps are counted from it.",
        }

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        if "category" in self.fields:
            # The lifecycle sends every campaign as a marketing type: no category, no campaign.
            self.fields["category"].required = True
            self.fields["category"].label_from_instance = (  # type: ignore[attr-defined]
                lambda category: f"{category.name} ({category.key})"
            )
        if "event_at" in self.fields:
            self.fields["event_at"].help_text += f" In {timezone.get_current_timezone_name()}."

    def clean_variables(self) -> dict[str, Any]:
        value = self.cleaned_data.get("variables")
        if value is None or value == "":
            return {}
        if not isinstance(value, dict):
            raise ValidationError(
                'Write a JSON object, in curly braces: {"coupon_code": "D11"}. ' + VARIABLES_HELP
            )
        problems: list[str] = []
        for name in value:
            if name in RESERVED_NAMES:
                problems.append(
                    f"“{name}” is already given to every template ({RESERVED_NAMES[name]}); "
                    "pick another name."
                )
            elif (
                not name.isidentifier()
                or name.startswith("_")
                or keyword.iskeyword(name)
                or name.lower() in JINJA_WORDS
            ):
                problems.append(
                    f"“{name}” cannot be a template name: use letters, digits and _, "
                    "starting with a letter, e.g. coupon_code."
                )
        if problems:
            raise ValidationError(problems)
        if self.instance.pk is not None:
            removed = set(self.instance.variables) - set(value)
            problems = copy_using(self.instance, removed)
            if problems:
                raise ValidationError(
                    [*problems, "Keep these variables, or change that copy first."]
                )
        return value

    def clean_seed_list(self) -> str:
        value = str(self.cleaned_data.get("seed_list") or "")
        _, problems = seed_users(value, anyone=self.seeds_anyone)
        if problems:
            raise ValidationError([capfirst(problem) + "." for problem in problems])
        return value

    def clean_holdout_percent(self) -> int:
        value = self.cleaned_data["holdout_percent"]
        if value > MAX_HOLDOUT_PERCENT:
            raise ValidationError(
                f"At most {MAX_HOLDOUT_PERCENT}%: the control group only needs to be large "
                "enough to compare with."
            )
        return int(value)

    def clean_event_at(self) -> datetime | None:
        value = self.cleaned_data.get("event_at")
        if value is not None and "event_at" in self.changed_data and value <= timezone.now():
            raise ValidationError("The event time is in the past.")
        return value

    def clean(self) -> dict[str, Any]:
        data = super().clean() or {}
        category, channels = data.get("category"), data.get("channels") or []
        if category is not None:
            outside = [channel for channel in channels if channel not in category.channels]
            if outside:
                self.add_error(
                    "channels",
                    f"{category.name} is sent by "
                    f"{', '.join(channel_label(c) for c in category.channels)}; "
                    f"{', '.join(channel_label(c) for c in outside)} is not one of them.",
                )
        return data


def copy_using(campaign: Campaign, names: set[str]) -> list[str]:
    """Where the campaign's copy uses any of `names`, in words (for removing a variable)."""
    if not names:
        return []
    found: list[str] = []
    env = environment()
    templates = VariantTemplate.objects.filter(variant__step__campaign=campaign).select_related(
        "variant__step"
    )
    for template in templates.order_by("variant__step__offset_minutes", "variant__name", "pk"):
        for part in PART_FIELDS:
            source = getattr(template, part)
            if not source:
                continue
            try:
                used = meta.find_undeclared_variables(env.parse(source)) & names
            except COMPILE_ERRORS:  # a syntax error, or nested too deeply to read
                continue
            if used:
                found.append(
                    f"{', '.join(sorted(used))} is used by {template.variant.step.name}, variant "
                    f"{template.variant.name}, {channel_label(template.channel)} {part}"
                    + (f" ({template.locale})" if template.locale else "")
                    + (f" for {persona_label(template.persona)}" if template.persona else "")
                    + "."
                )
    return found


# --- Steps ------------------------------------------------------------------------------------


# The timing choices, short enough for the steps' table to fit the page.
TIMING_LABELS = {
    StepTiming.OFFSET: "At that moment",
    StepTiming.LOCAL_TIME: "That day, at a local time",
    StepTiming.ACTIVE_HOUR: "That day, at their usual hour",
}


class StepForm(forms.ModelForm):
    when = forms.CharField(
        label="When",
        max_length=40,
        widget=forms.TextInput(attrs={"size": 14, "placeholder": "3 days before"}),
        help_text=OFFSET_HELP,
    )

    class Meta:
        model = CampaignStep
        fields = ["name", "when", "timing", "local_time"]

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        if self.instance.pk is not None:
            self.initial["when"] = offset_words(self.instance.offset_minutes)
        if "timing" in self.fields:
            self.fields["timing"].choices = list(TIMING_LABELS.items())  # type: ignore[attr-defined]

    def clean_when(self) -> int:
        return parse_offset(self.cleaned_data["when"])

    def clean(self) -> dict[str, Any]:
        data = super().clean() or {}
        if data.get("timing") == StepTiming.LOCAL_TIME and data.get("local_time") is None:
            self.add_error("local_time", "Give the local time of day, e.g. 10:00.")
        return data

    def save(self, commit: bool = True) -> CampaignStep:
        self.instance.offset_minutes = self.cleaned_data["when"]
        step: CampaignStep = super().save(commit=commit)
        return step


class StepInline(admin.TabularInline):
    model = CampaignStep
    form = StepForm
    extra = 0
    fields = ["name", "when", "timing", "local_time", "goes_out", "copy"]
    readonly_fields = ["goes_out", "copy"]
    verbose_name_plural = "Steps (3-2-1: counted from the event)"

    def get_queryset(self, request: HttpRequest) -> QuerySet[CampaignStep]:
        return (
            super()
            .get_queryset(request)
            .select_related("campaign")
            .prefetch_related("variants")
            .order_by("offset_minutes", "pk")
        )

    def _editable(self, request: HttpRequest, obj: Campaign | None) -> bool:
        return obj is None or copy_editable(obj)

    def has_add_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return super().has_add_permission(request, obj) and self._editable(request, obj)

    def has_change_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return super().has_change_permission(request, obj) and self._editable(request, obj)

    def has_delete_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return super().has_delete_permission(request, obj) and self._editable(request, obj)

    @admin.display(description="When")
    def when(self, obj: CampaignStep) -> str:  # shown when the step is read-only
        return step_reading(plan_of(obj))

    @admin.display(description="Goes out")
    def goes_out(self, obj: CampaignStep) -> SafeString | str:
        if obj.pk is None:
            return "—"
        reading = capfirst(step_reading(plan_of(obj)))
        state = "" if obj.status == StepStatus.PENDING else str(obj.get_status_display())
        if obj.skip_reason:
            state = f"{state}: {obj.skip_reason}"
        return format_html(
            '<span class="step-reading">{}</span><br><span class="quiet">{}</span>{}',
            reading,
            step_when(obj.campaign, obj),
            format_html('<br><span class="step-state">{}</span>', state) if state else "",
        )

    @admin.display(description="Copy (A/B variants)")
    def copy(self, obj: CampaignStep) -> SafeString | str:
        if obj.pk is None:
            return "Save to write its copy."
        variants = list(obj.variants.all())
        if not variants:
            return "No variant."
        return format_html_join(
            mark_safe("<br>"),
            '<a href="{}">Variant {}</a> <span class="quiet">(weight {})</span>',
            ((variant_url(v.pk, self.admin_site.name), v.name, v.weight) for v in variants),
        )


# --- Lifecycle buttons -------------------------------------------------------------------------


@dataclass(frozen=True)
class Action:
    name: str
    label: str
    done: str  # the success message; {count} is what the service returned
    statuses: frozenset[str]
    service: Callable[..., Any]
    needs_permission: str = ""


ACTIONS: tuple[Action, ...] = (
    Action(
        "submit",
        "Submit for approval",
        "Submitted for approval: a Marketing lead other than its author approves it.",
        frozenset({C.DRAFT}),
        campaign_submit,
    ),
    Action(
        "approve",
        "Approve",
        "Approved: the campaign is scheduled and its steps go out on time.",
        frozenset({C.AWAITING_APPROVAL}),
        campaign_approve,
        needs_permission="campaigns.approve_campaign",
    ),
    Action(
        "send_back",
        "Send back to draft",
        "Back to draft: change what is needed and submit it again.",
        frozenset({C.AWAITING_APPROVAL, C.SCHEDULED}),
        campaign_send_back,
    ),
    Action(
        "pause",
        "Pause",
        "Paused: nothing more goes out; {count} queued messages are held until you resume.",
        frozenset({C.SCHEDULED, C.RUNNING}),
        campaign_pause,
    ),
    Action(
        "resume",
        "Resume",
        "Resumed: {count} held messages are released; steps whose moment passed are skipped.",
        frozenset({C.PAUSED}),
        campaign_resume,
    ),
)
ACTIONS_BY_NAME = {action.name: action for action in ACTIONS}
CANCELLABLE = frozenset({C.DRAFT, C.AWAITING_APPROVAL, C.SCHEDULED, C.RUNNING, C.PAUSED})


class MoveEventForm(forms.Form):
    event_at = forms.DateTimeField(
        label="New event time",
        widget=forms.DateTimeInput(attrs={"type": "datetime-local"}, format="%Y-%m-%dT%H:%M"),
        input_formats=["%Y-%m-%dT%H:%M", "%Y-%m-%d %H:%M", "%Y-%m-%dT%H:%M:%S"],
    )


# --- Preview ---------------------------------------------------------------------------------


@dataclass(frozen=True)
class ChannelPreview:
    channel: str
    label: str
    content: Content | None
    error: str
    note: str = ""  # an SMS's length and how many messages it takes


def channel_preview(channel: Channel, result: Content | RenderError) -> ChannelPreview:
    label = channel_label(str(channel))
    if not isinstance(result, Content):
        return ChannelPreview(str(channel), label, None, str(result))
    note = str(sms_length(result.body)) if channel is Channel.SMS else ""
    return ChannelPreview(str(channel), label, result, "", note)


@dataclass(frozen=True)
class PersonaPreview:
    """A variant's copy as one persona reads it (the customer shown, as that persona)."""

    persona: str
    label: str
    channels: list[ChannelPreview]


@dataclass(frozen=True)
class VariantPreview:
    variant: StepVariant
    url: str
    channels: list[ChannelPreview]
    personas: list[PersonaPreview] = field(default_factory=list)


@dataclass(frozen=True)
class StepPreview:
    step: CampaignStep
    when: str
    variants: list[VariantPreview]


OUTSIDE_AUDIENCE = (
    "Nobody in this campaign's segment has that id (you can preview yourself, or anyone in the "
    "segment)."
)
NOT_AN_ID = (
    "Give a customer's id (a number): looking customers up by email needs permission to see "
    "contact details."
)


def _in_audience(campaign: Campaign, user: User) -> bool:
    segment = campaign.segment
    return segment is not None and segment_users(segment).filter(pk=user.pk).exists()


user_lookup = user_by_key  # a user by id, email or phone number, or LookupError in words


# --- Campaign admin ------------------------------------------------------------------------------


@admin.register(Campaign)
class CampaignAdmin(admin.ModelAdmin):
    form = CampaignForm
    inlines = [StepInline]
    list_display = ["name", "kind", "status", "event_at", "next_step", "audience_size", "funnel"]
    list_filter = ["status", "kind"]
    search_fields = ["name"]
    ordering = ["-created_at", "-pk"]
    change_form_template = TEMPLATES + "change_form.html"

    # --- URLs ---

    def get_urls(self) -> list[URLPattern]:
        view = self.admin_site.admin_view
        name = f"{self.opts.app_label}_{self.opts.model_name}_"
        # The funnel and these pages first: the default "<path:object_id>/" would swallow them.
        return [
            *stats_urls(self),
            *forecast_urls(self),
            path("<path:object_id>/preview/", view(self.preview_view), name=name + "preview"),
            path("<path:object_id>/send-test/", view(self.send_test_view), name=name + "test"),
            path("<path:object_id>/cancel/", view(self.cancel_view), name=name + "cancel"),
            path("<path:object_id>/move-event/", view(self.move_view), name=name + "move"),
            path(
                "<path:object_id>/drop-step/<int:step_id>/",
                view(self.drop_step_view),
                name=name + "drop_step",
            ),
            path("<path:object_id>/write/", view(self.write_copy_view), name=name + "write"),
            path(
                "<path:object_id>/actions/<slug:action>/",
                view(self.action_view),
                name=name + "action",
            ),
            *super().get_urls(),
        ]

    def _url(self, name: str, *args: Any) -> str:
        info = self.admin_site.name, self.opts.app_label, self.opts.model_name
        return reverse("{}:{}_{}_".format(*info) + name, args=[quote(arg) for arg in args])

    def _campaign_or_404(self, request: HttpRequest, object_id: str) -> Campaign:
        campaign = self.get_object(request, unquote(object_id))
        if campaign is None:
            raise Http404(f"No campaign with id {object_id!r}")
        return campaign

    # --- List ---

    def get_queryset(self, request: HttpRequest) -> QuerySet[Campaign]:
        upcoming = CampaignStep.objects.filter(
            campaign=OuterRef("pk"), status__in=[StepStatus.PENDING, StepStatus.RUNNING]
        ).order_by("offset_minutes", "pk")
        targeted = (
            CampaignStats.objects.filter(campaign=OuterRef("pk"), scope=CAMPAIGN_SCOPE)
            .annotate(targeted=Cast(KT("data__recipients__targeted"), IntegerField()))
            .values("targeted")[:1]
        )
        return (
            super()
            .get_queryset(request)
            .annotate(
                next_step_name=Subquery(upcoming.values("name")[:1]),
                next_step_offset=Subquery(upcoming.values("offset_minutes")[:1]),
                next_step_status=Subquery(upcoming.values("status")[:1]),
                targeted=Subquery(targeted, output_field=IntegerField()),
            )
        )

    @admin.display(description="Next step")
    def next_step(self, obj: Campaign) -> str:
        name = getattr(obj, "next_step_name", None)
        if not name or obj.status in (C.DONE, C.CANCELLED):
            return "—"
        if getattr(obj, "next_step_status", "") == StepStatus.RUNNING:
            return f"{name}: sending now"
        if obj.kind == CampaignKind.TRIGGERED:
            return f"{name}: when a user enters the segment"
        if obj.event_at is None:
            return f"{name}: once the event time is set"
        offset = timedelta(minutes=getattr(obj, "next_step_offset", 0) or 0)
        return f"{name}: {when_text(obj.event_at + offset)}"

    @admin.display(description="Audience")
    def audience_size(self, obj: Campaign) -> str:
        targeted = getattr(obj, "targeted", None)
        # A draft's live count is one COUNT over users per campaign: on its page, not per row.
        return "—" if targeted is None else f"{targeted:,} targeted"

    @admin.display(description="Funnel")
    def funnel(self, obj: Campaign) -> SafeString:
        return format_html('<a href="{}">Funnel</a>', stats_url(obj.pk))

    # --- The form ---

    def get_fieldsets(self, request: HttpRequest, obj: Any = None) -> Any:
        if obj is None:
            return [
                (None, {"fields": ["name", "kind", "category", "segment", "audience"]}),
                ("When and how", {"fields": ["event_at", "priority", "channels"]}),
                ("Copy and measurement", {"fields": ["variables", "holdout_percent"]}),
            ]
        triggered = obj.kind == CampaignKind.TRIGGERED
        locked = not copy_editable(obj)
        fieldsets = [
            (None, {"fields": ["name", "description", "kind", "category", "segment", "audience"]}),
            ("When and how", {"fields": self._when_and_how(request, locked=locked)}),
            (
                "Copy and measurement",
                {
                    "fields": [
                        "variables_text" if locked else "variables",
                        "holdout_percent",
                        "attribution_hours",
                        "ab_metric",
                        "ab_sample_size",
                        # Re-entry is a triggered campaign's; a series that stops is a one-off's
                        # (campaigns.series): each page shows only its own.
                        "reentry_days" if triggered else "stop_series_on",
                        "pause_failure_percent",
                    ]
                },
            ),
            (
                "Tests",
                {"fields": ["seed_list_text" if self._seeds_hidden(request, obj) else "seed_list"]},
            ),
            ("Status", {"fields": STATUS_FIELDS, "classes": ["collapse"]}),
        ]
        return fieldsets

    def get_form(
        self, request: HttpRequest, obj: Any = None, change: bool = False, **kwargs: Any
    ) -> Any:
        form: Any = super().get_form(request, obj, change=change, **kwargs)
        form.seeds_anyone = request.user.has_perm(VIEW_CONTACT_DETAILS)
        return form

    def _when_and_how(self, request: HttpRequest, *, locked: bool = False) -> list[str]:
        fields = [
            "event_at",
            "priority",
            "channels_text" if locked else "channels",
            "send_rate_per_minute",
        ]
        # Marketing in quiet hours is a lead's decision: nobody else sees the switch, so a
        # marketer's form has no such field and a posted value is ignored.
        if request.user.has_perm(ALLOW_QUIET_HOURS):
            fields.append("quiet_hours_allowed")
        return fields

    def get_readonly_fields(self, request: HttpRequest, obj: Any = None) -> list[str]:
        if obj is None:
            return ["audience"]
        readonly = ["audience", "kind", *STATUS_FIELDS]
        if self._seeds_hidden(request, obj):
            readonly.append("seed_list_text")
        if not copy_editable(obj):
            readonly += [*EDIT_FIELDS, "variables_text", "channels_text"]
        return readonly

    def get_inlines(self, request: HttpRequest, obj: Any) -> list[type[InlineModelAdmin]]:
        return [StepInline] if obj is not None else []  # a new campaign gets the 3-2-1 plan

    def has_delete_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        # Anything past a draft is cancelled instead, so its history stays.
        return super().has_delete_permission(request, obj) and (
            obj is None or obj.status == C.DRAFT
        )

    # Read-only values as text, never as JSON.
    @admin.display(description="Variables")
    def variables_text(self, obj: Campaign) -> SafeString | str:
        if not obj.variables:
            return "None."
        return format_html(
            '<ul class="variables-list">{}</ul>',
            format_html_join(
                "",
                "<li><code>{}</code>: {}</li>",
                (
                    (name, value if isinstance(value, str) else json.dumps(value))
                    for name, value in obj.variables.items()
                ),
            ),
        )

    @staticmethod
    def _seeds_hidden(request: HttpRequest, obj: Campaign) -> bool:
        """A seed list naming people the viewer may not see (customers, put there by someone
        who may see contact details): shown masked and read-only, so neither the page nor a
        save echoes their addresses."""
        if not obj.seed_list.strip() or request.user.has_perm(VIEW_CONTACT_DETAILS):
            return False
        return bool(seed_users(obj.seed_list, anyone=False)[1])

    @admin.display(description="Seed list")
    def seed_list_text(self, obj: Campaign) -> SafeString:
        return format_html(
            '<pre class="seed-list">{}</pre><div class="help">It names people whose contact '
            "details you may not see; whoever put them there can change it.</div>",
            seed_list_masked(obj.seed_list),
        )

    @admin.display(description="Channels")
    def channels_text(self, obj: Campaign) -> str:
        if not obj.channels:
            return "Chosen by the routing rules among the category's channels."
        return ", ".join(channel_label(str(channel)) for channel in obj.channels)

    @admin.display(description="Audience now")
    def audience(self, obj: Campaign) -> SafeString:
        segment = obj.segment if obj.segment_id is not None else None
        if segment is None:
            text = "Choose a segment to see how many users it reaches."
        else:
            try:
                text = f"{segment_count(segment):,} users match the segment right now."
            except ValueError as exc:  # a rule value that no longer exists
                text = str(exc)
        return format_html('<span id="segment-audience">{}</span>', text)

    def changeform_view(
        self,
        request: HttpRequest,
        object_id: str | None = None,
        form_url: str = "",
        extra_context: dict[str, Any] | None = None,
    ) -> HttpResponse:
        if request.method == "POST" and object_id is not None:
            # Saving holds the campaign's row, so approval cannot slip in between reading the
            # status (which decides what is editable) and writing the changes.
            with transaction.atomic():
                pk = unquote(object_id)
                if (campaign_id := parse_id(pk)) is not None:
                    list(Campaign.objects.select_for_update().filter(pk=campaign_id).values("pk"))
                return super().changeform_view(request, object_id, form_url, extra_context)
        return super().changeform_view(request, object_id, form_url, extra_context)

    def save_model(self, request: HttpRequest, obj: Campaign, form: Any, change: bool) -> None:
        if not change:
            data = form.cleaned_data
            created = campaign_create(
                name=data["name"],
                category=data["category"],
                created_by=staff_user(request),
                segment=data.get("segment"),
                event_at=data.get("event_at"),
                kind=data["kind"],
                priority=data["priority"],
                channels=data.get("channels") or [],
                variables=data.get("variables") or {},
                holdout_percent=data.get("holdout_percent") or 0,
            )
            obj.pk = created.pk
            obj._state.adding = False
            obj.refresh_from_db()
            return
        changed = [name for name in form.changed_data if name in EDIT_FIELDS + SAFETY_FIELDS]
        if changed:
            # Only what the form changed: the status and approval are the lifecycle's to write.
            obj.save(update_fields=[*changed, "updated_at"])

    def save_formset(self, request: HttpRequest, form: Any, formset: Any, change: bool) -> None:
        formset.save()
        if formset.model is CampaignStep:
            for step in formset.new_objects:
                StepVariant.objects.get_or_create(step=step, name="A")

    def save_related(self, request: HttpRequest, form: Any, formsets: Any, change: bool) -> None:
        super().save_related(request, form, formsets, change)
        if change and (form.has_changed() or any(fs.has_changed() for fs in formsets)):
            back_to_draft_if_awaiting(request, form.instance)

    def response_add(
        self, request: HttpRequest, obj: Campaign, post_url_continue: str | None = None
    ) -> HttpResponse:
        response = super().response_add(request, obj, post_url_continue)
        if any(key in request.POST for key in ("_addanother", "_continue", "_popup")):
            return response
        # Next comes the copy of each step: straight to the page that writes all of it.
        messages.info(
            request,
            "It has the 3-2-1 plan (3 days before, 2 days before, 1 hour before): write each "
            "step's copy here, then save and submit it for approval.",
        )
        return HttpResponseRedirect(self._url("write", obj.pk))

    def response_change(self, request: HttpRequest, obj: Campaign) -> HttpResponse:
        if "_saveandsubmit" in request.POST:  # "Save and submit for approval"
            return self._after_writing(request, obj, submit=True)
        return super().response_change(request, obj)

    def get_changeform_initial_data(self, request: HttpRequest) -> dict[str, Any]:
        """From the URL (?segment=, as "Save and create a campaign" sends), and the marketing
        category when the site has only one."""
        initial: dict[str, Any] = dict(super().get_changeform_initial_data(request))
        if "event_at" in initial:
            # The split date/time widget takes a datetime, not the address's text (a 500).
            initial["event_at"] = event_at_from_text(initial["event_at"])
            if initial["event_at"] is None:
                del initial["event_at"]
        if "category" not in initial:
            categories = list(
                NotificationType.objects.filter(kind=Kind.MARKETING).values_list("pk", flat=True)[
                    :2
                ]
            )
            if len(categories) == 1:
                initial["category"] = categories[0]
        return initial

    def render_change_form(
        self,
        request: HttpRequest,
        context: dict[str, Any],
        add: bool = False,
        change: bool = False,
        form_url: str = "",
        obj: Campaign | None = None,
    ) -> HttpResponse:
        context["segment_count_base"] = reverse(
            f"{self.admin_site.name}:campaigns_segment_changelist"
        )
        if obj is not None and obj.pk is not None:
            context.update(self._status_context(request, obj))
            context.update(forecast_context(self, request, obj))
        return super().render_change_form(request, context, add, change, form_url, obj)

    def _status_context(self, request: HttpRequest, campaign: Campaign) -> dict[str, Any]:
        may_change = self.has_change_permission(request, campaign)
        user = request.user
        actions = [
            {"name": a.name, "label": a.label, "url": self._url("action", campaign.pk, a.name)}
            for a in ACTIONS
            if may_change
            and campaign.status in a.statuses
            and (not a.needs_permission or user.has_perm(a.needs_permission))
            # A campaign that has started is approved or cancelled, never a draft again.
            and not (a.name == "send_back" and campaign.started_at is not None)
        ]
        context: dict[str, Any] = {
            "lifecycle_actions": actions,
            "cancel_url": (
                self._url("cancel", campaign.pk)
                if may_change and campaign.status in CANCELLABLE
                else ""
            ),
            "preview_url": self._url("preview", campaign.pk),
            "may_submit": may_change and campaign.status == C.DRAFT,
            "write_url": (
                self._url("write", campaign.pk) if may_change and copy_editable(campaign) else ""
            ),
            "funnel_url": stats_url(campaign.pk),
            "problems": (
                campaign_problems(campaign) if campaign.status in EDITABLE_STATUSES else None
            ),
            "time_zone": timezone.get_current_timezone_name(),
        }
        if may_change and copy_editable(campaign) and campaign.event_at is not None:
            context["past_steps"] = [
                {
                    "name": step.name,
                    "reading": step_reading(plan_of(step)),
                    "when": when_text(step_moment(campaign.event_at, plan_of(step))),
                    "drop_url": self._url("drop_step", campaign.pk, step.pk),
                }
                for step in past_steps(campaign)
            ]
        if may_change and campaign.status in LIVE_STATUSES:
            context["move_form"] = MoveEventForm(
                initial={"event_at": timezone.localtime(campaign.event_at)}
                if campaign.event_at
                else None
            )
            context["move_url"] = self._url("move", campaign.pk)
        context.update(self._approval_context(campaign))
        if not copy_editable(campaign):
            context.update(show_save=False, show_save_and_continue=False)
            context["show_save_and_add_another"] = False
            if may_change and campaign.status == C.SCHEDULED:
                context["locked_note"] = (
                    "Approved campaigns are locked: send it back to draft to change its steps "
                    "or copy. A change to its segment, the segment's member list or the "
                    "audience thresholds sends it back for approval. Moving the event needs no "
                    "new approval."
                )
            elif may_change and campaign.status in LIVE_STATUSES:
                context["locked_note"] = (
                    "Its steps and copy are locked once it has started: pause it, cancel it or "
                    "move the event."
                )
        return context

    @staticmethod
    def _approval_context(campaign: Campaign) -> dict[str, Any]:
        """What differs from the approved definition, the audience then and now, and the digest
        the approve button carries."""
        context: dict[str, Any] = {"review_reason": campaign.review_reason}
        if campaign.status == C.AWAITING_APPROVAL:
            context["definition_seen"] = definition_digest(campaign_definition(campaign.pk))
        if campaign.approved_definition is None and campaign.status not in LIVE:
            return context  # never approved: nothing to compare with
        if campaign.status not in LIVE | {C.AWAITING_APPROVAL, C.DRAFT}:
            return context  # finished: what it sent is what it was
        changes = approval_changes(campaign)
        if not changes:
            return context
        context["approval_changes"] = [change.text for change in changes]
        if campaign.status in LIVE and campaign.approved_definition is None:
            context["approval_heading"] = (
                "Approved before approvals recorded what they cover: its next step will not "
                "start, and it goes back for approval"
            )
        elif campaign.status in LIVE:
            context["approval_heading"] = (
                "Changed since approval, outside the admin: its next step will not start, "
                "and it goes back for approval"
            )
        else:
            context["approval_heading"] = "What changed since it was last approved"
        if campaign.segment is not None and campaign.approved_audience is not None:
            try:
                now = f"{segment_count(campaign.segment):,}"
            except ValueError:  # a rule value that no longer exists
                now = "?"
            context["audience_change"] = (
                f"Audience at approval {campaign.approved_audience:,}, now {now}."
            )
        return context

    # --- Lifecycle ---

    def _may_act(self, request: HttpRequest, campaign: Campaign) -> None:
        if not self.has_change_permission(request, campaign):
            raise PermissionDenied

    def action_view(self, request: HttpRequest, object_id: str, action: str) -> HttpResponse:
        """Submit, approve, send back, pause, resume: POST only, one lifecycle service each."""
        campaign = self._campaign_or_404(request, object_id)
        self._may_act(request, campaign)
        if request.method != "POST":
            return HttpResponseNotAllowed(["POST"])
        chosen = ACTIONS_BY_NAME.get(action)
        if chosen is None:
            raise Http404(f"No action {action!r}")
        # The approve button carries the digest of the definition its page showed; a POST
        # without one approves nothing (the lead must have seen what they approve).
        seen = {"seen": request.POST.get("definition", "")} if chosen.name == "approve" else {}
        try:
            count = chosen.service(campaign=campaign, by=staff_user(request), **seen)
        except CampaignError as exc:
            messages.error(request, capfirst(str(exc)))
        else:
            self.log_change(request, campaign, chosen.label)
            messages.success(request, chosen.done.format(count=count))
        return HttpResponseRedirect(self._url("change", campaign.pk))

    def move_view(self, request: HttpRequest, object_id: str) -> HttpResponse:
        campaign = self._campaign_or_404(request, object_id)
        self._may_act(request, campaign)
        if request.method != "POST":
            return HttpResponseNotAllowed(["POST"])
        form = MoveEventForm(request.POST)
        if not form.is_valid():
            messages.error(request, "Give the new event time as a date and a time of day.")
            return HttpResponseRedirect(self._url("change", campaign.pk))
        try:
            moved = campaign_move_event(
                campaign=campaign, event_at=form.cleaned_data["event_at"], by=staff_user(request)
            )
        except CampaignError as exc:
            messages.error(request, capfirst(str(exc)))
        else:
            self.log_change(request, campaign, f"Moved the event to {campaign.event_at}")
            assert campaign.event_at is not None
            dropped = (
                f" {moved.cancelled} deliveries that no longer fit were cancelled, with the "
                "reason on each."
                if moved.cancelled
                else ""
            )
            skipped = (
                f" {len(moved.skipped_steps)} step(s) whose moment has passed were skipped."
                if moved.skipped_steps
                else ""
            )
            messages.success(
                request,
                f"The event is now {when_text(campaign.event_at)}; "
                f"the steps not yet sent moved with it.{dropped}{skipped}",
            )
        return HttpResponseRedirect(self._url("change", campaign.pk))

    def write_copy_view(self, request: HttpRequest, object_id: str) -> HttpResponse:
        """Every step's copy on one page (each variant's default copy per channel), saved
        together; "Save and submit for approval" submits it too when nothing is missing."""
        campaign = self._campaign_or_404(request, object_id)
        self._may_act(request, campaign)
        change_url = self._url("change", campaign.pk)
        if not copy_editable(campaign):
            messages.error(request, "Its copy is locked: send it back to draft to change it.")
            return HttpResponseRedirect(change_url)
        if request.method == "POST":
            with transaction.atomic():  # see changeform_view: approval cannot slip in between
                campaign = Campaign.objects.select_for_update().get(pk=campaign.pk)
                steps, forms_ = step_copy_forms(campaign, request.POST)
                if all(form.is_valid() for form in forms_):
                    changed = [
                        form
                        for form in forms_
                        if form.has_changed() and (form.instance.pk or form.has_content())
                    ]
                    for form in changed:
                        form.save()
                    variant_cache_clear()
                    if changed:
                        self.log_change(request, campaign, "Wrote the copy of its steps")
                        back_to_draft_if_awaiting(request, campaign)
                    return self._after_writing(
                        request,
                        campaign,
                        submit="_submit" in request.POST,
                        saved="The copy is saved.",
                    )
        else:
            steps, forms_ = step_copy_forms(campaign, None)
        context = {
            **self.admin_site.each_context(request),
            "opts": self.opts,
            "title": f"Write the copy: {campaign}",
            "subtitle": None,
            "campaign": campaign,
            "original": campaign,
            "change_url": change_url,
            "steps": steps,
            "errors": sum(1 for form in forms_ if form.is_bound and form.errors),
            "variables": [*sorted(campaign.variables), *SYSTEM_EXAMPLES],
        }
        request.current_app = self.admin_site.name
        return TemplateResponse(request, TEMPLATES + "write_copy.html", context)

    def _after_writing(
        self, request: HttpRequest, campaign: Campaign, *, submit: bool, saved: str = "Saved."
    ) -> HttpResponse:
        """Back to the campaign's page, submitted for approval first when asked (and it can be:
        else what stops it is said, and it stays a draft, saved)."""
        if not submit:
            messages.success(request, saved)
            return HttpResponseRedirect(self._url("change", campaign.pk))
        campaign.refresh_from_db()
        try:
            campaign_submit(campaign=campaign, by=staff_user(request))
        except CampaignError as exc:
            messages.warning(request, f"{saved} Not submitted: {exc}.")
        else:
            self.log_change(request, campaign, ACTIONS_BY_NAME["submit"].label)
            messages.success(request, f"{saved} {ACTIONS_BY_NAME['submit'].done}")
        return HttpResponseRedirect(self._url("change", campaign.pk))

    def drop_step_view(self, request: HttpRequest, object_id: str, step_id: int) -> HttpResponse:
        """POST: drop a step whose moment passed before the campaign was planned (one click,
        from the warning on the campaign's page)."""
        campaign = self._campaign_or_404(request, object_id)
        self._may_act(request, campaign)
        if request.method != "POST":
            return HttpResponseNotAllowed(["POST"])
        with transaction.atomic():
            locked = Campaign.objects.select_for_update().get(pk=campaign.pk)
            step = next((s for s in past_steps(locked) if s.pk == step_id), None)
            if not copy_editable(locked) or step is None:
                messages.error(
                    request,
                    "That step cannot be dropped here: only a step of a draft whose moment has "
                    "passed (change the others in the steps table).",
                )
                return HttpResponseRedirect(self._url("change", campaign.pk))
            reading = step_reading(plan_of(step))
            step.delete()
            self.log_change(request, campaign, f"Dropped step {step.name!r} ({reading}): past")
            back_to_draft_if_awaiting(request, locked)
        messages.success(request, f"Dropped step “{step.name}” ({reading}).")
        return HttpResponseRedirect(self._url("change", campaign.pk))

    def cancel_view(self, request: HttpRequest, object_id: str) -> HttpResponse:
        """Cancel with a confirmation: GET asks, POST with "confirm" cancels."""
        campaign = self._campaign_or_404(request, object_id)
        self._may_act(request, campaign)
        change_url = self._url("change", campaign.pk)
        if request.method == "POST" and request.POST.get("confirm") == "yes":
            try:
                count = campaign_cancel(campaign=campaign, by=staff_user(request))
            except CampaignError as exc:
                messages.error(request, capfirst(str(exc)))
            else:
                self.log_change(request, campaign, "Cancelled")
                messages.success(
                    request, f"Cancelled: nothing more goes out; {count} waiting messages dropped."
                )
            return HttpResponseRedirect(change_url)
        if campaign.status not in CANCELLABLE:
            messages.error(request, f"A {campaign.get_status_display().lower()} campaign is over.")
            return HttpResponseRedirect(change_url)
        waiting = Delivery.objects.filter(
            message__campaign_id=campaign.pk,
            status__in=[DeliveryStatus.QUEUED, DeliveryStatus.HELD, DeliveryStatus.PENDING],
        ).count()
        context = {
            **self.admin_site.each_context(request),
            "opts": self.opts,
            "title": f"Cancel “{campaign}”?",
            "subtitle": None,
            "campaign": campaign,
            "change_url": change_url,
            "steps_left": campaign.steps.filter(
                status__in=[StepStatus.PENDING, StepStatus.RUNNING]
            ).order_by("offset_minutes"),
            "waiting": waiting,
        }
        request.current_app = self.admin_site.name
        return TemplateResponse(request, TEMPLATES + "cancel_confirmation.html", context)

    # --- Preview and test sends ---

    def preview_view(self, request: HttpRequest, object_id: str) -> HttpResponse:
        """Every step x variant x channel rendered for one user, with the real context."""
        campaign = self._campaign_or_404(request, object_id)
        if not self.has_view_permission(request, campaign):
            raise PermissionDenied
        viewer = staff_user(request)
        query = request.GET.get("user", "").strip()
        user, whom, lookup_error = self._preview_user(
            campaign, query, viewer, anyone=viewer.has_perm(VIEW_CONTACT_DETAILS)
        )
        channels = campaign_channels(campaign)
        steps = list(
            campaign.steps.order_by("offset_minutes", "pk").prefetch_related("variants__templates")
        )
        # However slow the copy, the page holds this web worker only so long (see the budget).
        budget = TimeBudget(settings.NOTIFIER_PREVIEW_BUDGET_S)
        previews = [
            StepPreview(
                step=step,
                when=f"{describe_offset(step.offset_minutes)}: {step_when(campaign, step)}",
                variants=[
                    VariantPreview(
                        variant=variant,
                        url=variant_url(variant.pk, self.admin_site.name),
                        channels=[
                            self._channel_preview(variant, user, channel, viewer, budget)
                            for channel in channels
                        ],
                        # Each persona's own copy, for the same customer as that persona.
                        personas=[
                            PersonaPreview(
                                persona,
                                persona_label(persona),
                                [
                                    self._channel_preview(
                                        variant, user, channel, viewer, budget, persona=persona
                                    )
                                    for channel in channels
                                ],
                            )
                            for persona in variant_personas(variant)
                        ],
                    )
                    for variant in step.variants.all()
                ],
            )
            for step in steps
        ]
        context = {
            **self.admin_site.each_context(request),
            "opts": self.opts,
            "title": f"Preview: {campaign}",
            "subtitle": None,
            "campaign": campaign,
            "original": campaign,
            "change_url": self._url("change", campaign.pk),
            "send_test_url": self._url("test", campaign.pk),
            "may_send_test": self.has_change_permission(request, campaign),
            "click": uuid.uuid4(),  # names each send-test form's click: a double submit sends once
            "seed_count": len(
                seed_users(campaign.seed_list, anyone=viewer.has_perm(VIEW_CONTACT_DETAILS))[0]
            ),
            "previews": previews,
            "channels": [channel_label(str(c)) for c in channels],
            "preview_user": {
                "pk": user.pk,
                "name": display_name(user),
                "email": mask_email(recipient_for(user).email),
                "locale": recipient_for(user).locale,
                "time_zone": recipient_for(user).time_zone,
            },
            "whom": whom,
            "query": query,
            "by_contact": viewer.has_perm(VIEW_CONTACT_DETAILS),
            "lookup_error": lookup_error,
        }
        persona = campaign_persona(campaign, user)
        context["preview_persona"] = {
            "spend_tier": persona_label(persona.spend_tier),
            "activity": persona_label(persona.activity),
            "points": persona.points,
        }
        request.current_app = self.admin_site.name
        return TemplateResponse(request, TEMPLATES + "preview.html", context)

    @staticmethod
    def _preview_user(
        campaign: Campaign, query: str, viewer: User, *, anyone: bool
    ) -> tuple[User, str, str]:
        """(user, how they were chosen, what was wrong with the query).

        Only those who may see contact details (`anyone`) look up any customer, by id or email;
        a marketer chooses by id among the campaign's audience (or themselves), and a customer
        outside it gets the same answer as an id nobody has, so the box is no lookup of who has
        an account. An email is not even looked up for them: an answer that depended on it
        would tell whether that address is a customer's.
        """
        error = ""
        if query and not anyone and user_key_from_text(query) is None:
            error = NOT_AN_ID
        elif query:
            try:
                chosen = user_lookup(query)
                if anyone or chosen.pk == viewer.pk or _in_audience(campaign, chosen):
                    return chosen, "the user you chose", ""
                raise LookupError(OUTSIDE_AUDIENCE)
            except LookupError as exc:
                error = str(exc) if anyone else OUTSIDE_AUDIENCE
        if campaign.segment is not None:
            try:
                sample = segment_sample(campaign.segment, 1)
            except ValueError:
                sample = []
            if sample:
                return sample[0], "a sample user of the segment", error
        return viewer, "you (the segment has nobody to sample right now)", error

    @staticmethod
    def _channel_preview(
        variant: StepVariant,
        user: User,
        channel: Channel,
        viewer: User,
        budget: TimeBudget,
        *,
        persona: str | None = None,
    ) -> ChannelPreview:
        # Signed links (unsubscribe, preferences) are made for the viewer, not the customer.
        result = variant_preview(
            variant=variant,
            user=user,
            channel=channel,
            links_user_id=viewer.pk,
            budget=budget,
            persona=persona,
        )
        return channel_preview(channel, result)

    def send_test_view(self, request: HttpRequest, object_id: str) -> HttpResponse:
        """POST: send one variant to the logged-in marketer through the real pipeline."""
        campaign = self._campaign_or_404(request, object_id)
        self._may_act(request, campaign)
        if request.method != "POST":
            return HttpResponseNotAllowed(["POST"])
        variant_id = parse_id(request.POST.get("variant", ""))
        variant = (
            StepVariant.objects.select_related("step__campaign")
            .filter(pk=variant_id, step__campaign=campaign)
            .first()
            if variant_id is not None
            else None
        )
        if variant is None:
            raise Http404("No such variant in this campaign")
        back = self._url("preview", campaign.pk)
        # Back to the preview of the same customer: by id, or for those who may see contact
        # details by email too (the preview box takes nothing else from anyone else).
        query = request.POST.get("user", "").strip()
        if query and (
            user_key_from_text(query) is not None or request.user.has_perm(VIEW_CONTACT_DETAILS)
        ):
            back += "?" + urlencode({"user": query})
        click = form_click(request.POST.get("click", ""))
        if request.POST.get("to") == "seeds":  # the same page's other button: another click
            seeds_click = uuid.uuid5(click, "seeds") if click is not None else None
            return self._send_test_to_seeds(request, campaign, variant, back, seeds_click)
        try:
            message = variant_send_test(variant=variant, to_user=staff_user(request), click=click)
        except CampaignError as exc:
            messages.error(request, capfirst(str(exc)))
        else:
            channels = ", ".join(channel_label(str(c)) for c in campaign_channels(campaign))
            messages.success(
                request,
                f"Test of {variant.step.name} / variant {variant.name} sent to you (message "
                f"#{message.pk}) by {channels}: past quiet hours, caps and consent, and left "
                "out of the funnel. The in-app copy is in your inbox.",
            )
        return HttpResponseRedirect(f"{back}#variant-{variant.pk}")

    def _send_test_to_seeds(
        self,
        request: HttpRequest,
        campaign: Campaign,
        variant: StepVariant,
        back: str,
        click: uuid.UUID | None,
    ) -> HttpResponse:
        """The variant to everyone on the seed list, each a test message, recorded."""
        viewer = staff_user(request)
        anyone = viewer.has_perm(VIEW_CONTACT_DETAILS)
        seeds, problems = seed_users(campaign.seed_list, anyone=anyone, mask=not anyone)
        try:
            if problems:
                raise CampaignError("fix the seed list first: " + "; ".join(problems))
            sent = variant_send_test_to_seeds(variant=variant, seeds=seeds, click=click)
        except CampaignError as exc:
            messages.error(request, capfirst(str(exc)))
        else:
            what = f"{variant.step.name} / variant {variant.name}"
            self.log_change(
                request,
                campaign,
                f"Test of {what} sent to the seed list: messages "
                + ", ".join(f"#{message.pk}" for message in sent),
            )
            channels = ", ".join(channel_label(str(c)) for c in campaign_channels(campaign))
            messages.success(
                request,
                f"Test of {what} sent to {len(sent)} seed(s) by {channels}, marked “[Test]”: past "
                "quiet hours, caps and consent, and left out of the funnel.",
            )
        return HttpResponseRedirect(f"{back}#variant-{variant.pk}")


def event_at_from_text(text: object) -> datetime | None:
    """ "2026-12-07 20:00" (in the current time zone) as a datetime, or None."""
    try:
        moment = parse_datetime(str(text)[:40])
    except ValueError:  # well formed but impossible, "2026-13-45 99:00"
        return None
    if moment is None:
        return None
    return timezone.make_aware(moment) if timezone.is_naive(moment) else moment


def back_to_draft_if_awaiting(request: HttpRequest, campaign: Campaign) -> None:
    """A change to a campaign awaiting approval is not what was submitted: back to draft. Not
    one that has started (only its safety settings can change then: it stays for approval)."""
    campaign.refresh_from_db(fields=["status", "started_at"])
    if campaign.status != C.AWAITING_APPROVAL or campaign.started_at is not None:
        return
    campaign_send_back(campaign=campaign, by=staff_user(request))
    messages.warning(
        request, "Changed while awaiting approval, so it is a draft again: submit it when ready."
    )


# --- Variants and their copy -----------------------------------------------------------------


# `{{ x|localdate:"%d" }}`: Django's way of giving a filter its argument, which Jinja reads as a
# syntax error.
DJANGO_FILTER_ARGUMENT = re.compile(r"\|\s*[A-Za-z_]\w*\s*:")


def form_click(text: str) -> uuid.UUID | None:
    """The click a test-send form names (a UUID written into the page), so a form submitted
    twice sends once; None for anything else (each such post is a click of its own)."""
    try:
        return uuid.UUID(text[:64])
    except ValueError:
        return None


def syntax_hint(source: str) -> str:
    if len(source) > MAX_COPY_CHARS:
        return ""
    try:
        environment().parse(source)
    except TemplateSyntaxError:
        if DJANGO_FILTER_ARGUMENT.search(source):
            return (
                ' A filter takes its argument in brackets: {{ amount|money("CNY") }}, '
                '{{ event_at|localdate("%d %B") }}.'
            )
        return " Variables are written {{ name }}; conditions {% if … %}…{% endif %}."
    except COMPILE_ERRORS:  # nested too deeply to read: the problem says so
        return ""
    return ""


class VariantTemplateForm(forms.ModelForm):
    channel = forms.ChoiceField(choices=CHANNEL_CHOICES)
    # Set per request by the inline: the campaign's names and values (for the trial render),
    # and the time the request may spend trying copy, shared by all its forms.
    allowed: ClassVar[frozenset[str]] = frozenset()
    variables: ClassVar[Mapping[str, Any]] = {}
    checks: ClassVar[TimeBudget | None] = None

    class Meta:
        model = VariantTemplate
        fields = ["channel", "locale", "persona", *PART_FIELDS]
        widgets = {
            "subject": forms.TextInput(attrs={"size": 90}),
            "title": forms.TextInput(attrs={"size": 90}),
            "body": forms.Textarea(attrs={"rows": 5, "cols": 90}),
            "html": forms.Textarea(attrs={"rows": 8, "cols": 90}),
            "link": forms.TextInput(attrs={"size": 90}),
        }
        help_texts = {
            "locale": "Empty: the default copy. Or a locale such as zh-hans for those users.",
            "persona": "Everyone, or the copy for one spend tier or one activity state (one "
            "or the other per variant); the others get the copy for everyone in their locale. "
            "The copy reads {{ user.spend_tier }}, {{ user.activity }}, {{ user.interests }}, "
            "{{ user.points }}, {{ user.points_expiring }} and {{ user.points_expire_on }}.",
            "html": "Optional HTML version of the email; the body above is its text version.",
        }

    def clean_locale(self) -> str:
        value = (self.cleaned_data.get("locale") or "").strip()
        return normalize_locale(value) if value else ""

    def clean(self) -> dict[str, Any]:
        data = super().clean() or {}
        # A part the channel does not send (an SMS subject, an email link) is ignored and
        # stored empty: the page hides those boxes, and what a hidden box kept after the
        # channel was changed must not become copy nobody sees.
        used = channel_parts(data.get("channel") or self.instance.channel or "")
        for part in PART_FIELDS:
            if part not in used:
                data[part] = ""
        # The channel's parts are tried together, as they render for each recipient.
        parts = {part: data.get(part) or "" for part in PART_FIELDS}
        found = copy_problems(
            parts,
            allowed=self.allowed,
            variables=self.variables,
            budget=self.checks,
            persona=data.get("persona") or "",
        )
        for part, problems in found.items():
            for problem in problems:
                self.add_error(part, capfirst(problem) + syntax_hint(parts[part]))
        link = (data.get("link") or "").strip()
        if link and not link.startswith(("http://", "https://", "{{")):
            self.add_error("link", "Start the link with https:// (or a variable: {{ site_url }}…).")
        return data


class StepCopyForm(VariantTemplateForm):
    """One channel's default copy (the default locale, for everyone) of one variant, on the page
    that writes every step's copy at once: only the parts its channel sends."""

    channel = None  # type: ignore[assignment]  # fixed by the instance

    class Meta(VariantTemplateForm.Meta):
        fields = list(PART_FIELDS)

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        used = channel_parts(self.instance.channel)
        for part in PART_FIELDS:
            if part not in used:
                del self.fields[part]
            else:
                self.fields[part].widget.attrs.setdefault("aria-label", part)

    def clean(self) -> dict[str, Any]:
        self.cleaned_data["channel"] = self.instance.channel
        self.cleaned_data["persona"] = ""
        data = super().clean()
        # Only this form's boxes are saved from it; a part its channel does not send is empty.
        for name in [*PART_FIELDS, "channel", "persona"]:
            if name not in self.fields:
                data.pop(name, None)
                if name in PART_FIELDS:
                    setattr(self.instance, name, "")
        return data

    def has_content(self) -> bool:
        return any(self.cleaned_data.get(part) for part in PART_FIELDS)


@dataclass
class StepCopy:
    """The copy boxes of one step on the write-everything page."""

    step: CampaignStep
    reading: str
    when: str
    variants: list[tuple[StepVariant, list[tuple[str, StepCopyForm]]]]


def step_copy_forms(
    campaign: Campaign, data: Mapping[str, Any] | None
) -> tuple[list[StepCopy], list[StepCopyForm]]:
    """Every step's variants, each with a form per channel of the campaign for its default
    copy (bound to `data` when given)."""
    names = campaign.variables
    form_class = type(
        "StepCopyForm",
        (StepCopyForm,),
        {
            "allowed": allowed_variables(names),
            "variables": names,
            "checks": TimeBudget(settings.NOTIFIER_COPY_CHECK_BUDGET_S),
        },
    )
    channels = [str(c) for c in campaign_channels(campaign)]
    steps = campaign.steps.order_by("offset_minutes", "pk").prefetch_related("variants__templates")
    pages: list[StepCopy] = []
    forms_: list[StepCopyForm] = []
    for step in steps:
        variants = []
        for variant in sorted(step.variants.all(), key=lambda v: v.name):
            existing = {
                t.channel: t for t in variant.templates.all() if not t.locale and not t.persona
            }
            boxes = []
            for channel in channels:
                instance = existing.get(channel) or VariantTemplate(
                    variant=variant, channel=channel, locale="", persona=""
                )
                form = form_class(data, instance=instance, prefix=f"v{variant.pk}-{channel}")
                boxes.append((channel_label(channel), form))
                forms_.append(form)
            variants.append((variant, boxes))
        pages.append(
            StepCopy(
                step=step,
                reading=step_reading(plan_of(step)),
                when=step_when(campaign, step),
                variants=variants,
            )
        )
    return pages, forms_


class VariantTemplateFormSet(BaseInlineFormSet):
    def clean(self) -> None:
        seen: set[tuple[str, str, str]] = set()
        locales: set[str] = set()
        personas: set[str] = set()
        for form in self.forms:
            data = getattr(form, "cleaned_data", None)
            if not data or data.get("DELETE"):
                continue
            key = (data.get("channel", ""), data.get("locale", ""), data.get("persona", ""))
            if key in seen:
                form.add_error(
                    "locale",
                    f"There is already {channel_label(key[0])} copy for "
                    f"{key[1] or 'the default locale'}"
                    + (f" and {persona_label(key[2])}" if key[2] else "")
                    + " above: change that one instead.",
                )
            seen.add(key)
            if key[2] not in personas:
                personas.add(key[2])
                mixed = persona_problem(personas)
                if mixed is not None:
                    form.add_error("persona", capfirst(mixed) + ".")
            if key[1] not in locales:
                locales.add(key[1])
                too_many = locale_problem(len(locales))
                if too_many is not None:
                    form.add_error("locale", capfirst(too_many) + ".")
        super().clean()


class VariantTemplateInline(admin.StackedInline):
    model = VariantTemplate
    form = VariantTemplateForm
    formset = VariantTemplateFormSet
    extra = 0
    fields = ["channel", "locale", "persona", *PART_FIELDS]
    verbose_name = "copy"
    verbose_name_plural = "Copy per channel, locale and persona"

    def get_formset(self, request: HttpRequest, obj: Any = None, **kwargs: Any) -> Any:
        names = obj.step.campaign.variables if obj is not None else {}
        checks = TimeBudget(settings.NOTIFIER_COPY_CHECK_BUDGET_S)
        kwargs["form"] = type(
            "VariantTemplateForm",
            (VariantTemplateForm,),
            {"allowed": allowed_variables(names), "variables": names, "checks": checks},
        )
        return super().get_formset(request, obj, **kwargs)

    def get_extra(self, request: HttpRequest, obj: Any = None, **kwargs: Any) -> int:
        return len(missing_channels(obj)) if obj is not None and copy_editable_variant(obj) else 0

    def has_add_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return super().has_add_permission(request, obj) and copy_editable_variant(obj)

    def has_change_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return super().has_change_permission(request, obj) and copy_editable_variant(obj)

    def has_delete_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return super().has_delete_permission(request, obj) and copy_editable_variant(obj)


MAX_POSTED_COPY = 100


def posted_copy(data: Mapping[str, str]) -> dict[tuple[str, str, str], dict[str, str]]:
    """The copy rows of the variant editor's form as posted (unsaved), keyed as `copy_key` reads
    them; rows marked for deletion and parts their channel does not use are left out."""
    copy: dict[tuple[str, str, str], dict[str, str]] = {}
    try:
        total = min(int(data.get("templates-TOTAL_FORMS", "0")), MAX_POSTED_COPY)
    except ValueError:
        return copy
    for index in range(total):
        prefix = f"templates-{index}-"
        channel = data.get(prefix + "channel", "")
        if not channel or data.get(prefix + "DELETE"):
            continue
        try:
            locale = normalize_locale(data.get(prefix + "locale", "").strip() or "en")
        except ValidationError:
            continue
        if not data.get(prefix + "locale", "").strip():
            locale = ""
        key = (channel, locale, data.get(prefix + "persona", ""))
        copy.setdefault(key, {part: data.get(prefix + part, "") for part in channel_parts(channel)})
    return copy


def copy_editable_variant(variant: StepVariant | None) -> bool:
    return variant is None or copy_editable(variant.step.campaign)


def missing_channels(variant: StepVariant) -> list[str]:
    """The campaign's channels that have no default copy on this variant yet."""
    written = {
        channel
        for channel, locale, persona in variant.templates.values_list(
            "channel", "locale", "persona"
        )
        if not locale and not persona
    }
    return [str(c) for c in campaign_channels(variant.step.campaign) if str(c) not in written]


def next_variant_name(step: CampaignStep) -> str:
    taken = set(step.variants.values_list("name", flat=True))
    letters = (chr(code) for code in range(ord("A"), ord("Z") + 1))
    return next((name for name in letters if name not in taken), f"V{len(taken) + 1}")


class VariantForm(forms.ModelForm):
    class Meta:
        model = StepVariant
        fields = ["name", "weight"]
        help_texts = {
            "weight": "Its share of the step's audience is its weight over the sum of weights; "
            "0 switches it off. The same user always gets the same variant.",
        }

    def clean_name(self) -> str:
        name = self.cleaned_data["name"].strip()
        others = StepVariant.objects.filter(step_id=self.instance.step_id, name=name)
        if others.exclude(pk=self.instance.pk).exists():
            raise ValidationError(f"This step already has a variant {name}.")
        return name


@admin.register(StepVariant)
class StepVariantAdmin(admin.ModelAdmin):
    """A variant's page, reached from its campaign: weight and copy. Not in the index."""

    form = VariantForm
    inlines = [VariantTemplateInline]
    fields = ["campaign_link", "step_when", "name", "weight"]
    readonly_fields = ["campaign_link", "step_when"]
    change_form_template = TEMPLATES + "variant_change_form.html"

    def get_model_perms(self, request: HttpRequest) -> dict[str, bool]:
        return {}  # reached from the campaign page only

    def get_queryset(self, request: HttpRequest) -> QuerySet[StepVariant]:
        return super().get_queryset(request).select_related("step__campaign__category")

    def get_urls(self) -> list[URLPattern]:
        name = f"{self.opts.app_label}_{self.opts.model_name}_"
        view = self.admin_site.admin_view
        return [
            path("<path:object_id>/copy/", view(self.copy_view), name=name + "copy"),
            path(
                "<path:object_id>/live-preview/",
                view(self.live_preview_view),
                name=name + "live_preview",
            ),
            *super().get_urls(),
        ]

    def _campaign_url(self, variant: StepVariant) -> str:
        return reverse(
            f"{self.admin_site.name}:campaigns_campaign_change",
            args=[quote(variant.step.campaign_id)],
        )

    def has_add_permission(self, request: HttpRequest) -> bool:
        return False  # variants start as "A" with their step, or as a copy of another

    def has_change_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return super().has_change_permission(request, obj) and copy_editable_variant(obj)

    def has_delete_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        if not super().has_delete_permission(request, obj):
            return False
        return obj is None or (
            copy_editable_variant(obj) and obj.step.variants.exclude(pk=obj.pk).exists()
        )

    def changelist_view(
        self, request: HttpRequest, extra_context: dict[str, Any] | None = None
    ) -> HttpResponse:
        return HttpResponseRedirect(
            reverse(f"{self.admin_site.name}:campaigns_campaign_changelist")
        )

    @admin.display(description="Campaign")
    def campaign_link(self, obj: StepVariant) -> SafeString:
        campaign = obj.step.campaign
        return format_html(
            '<a href="{}">{}</a> ({})',
            self._campaign_url(obj),
            campaign,
            campaign.get_status_display(),
        )

    @admin.display(description="Step")
    def step_when(self, obj: StepVariant) -> str:
        step = obj.step
        return (
            f"{step.name}: {describe_offset(step.offset_minutes)} "
            f"({step_when(step.campaign, step)})"
        )

    def render_change_form(
        self,
        request: HttpRequest,
        context: dict[str, Any],
        add: bool = False,
        change: bool = False,
        form_url: str = "",
        obj: StepVariant | None = None,
    ) -> HttpResponse:
        if obj is not None:
            campaign = obj.step.campaign
            may_change = self.has_change_permission(request, obj)
            context.update(
                campaign=campaign,
                campaign_url=self._campaign_url(obj),
                preview_url=reverse(
                    f"{self.admin_site.name}:campaigns_campaign_preview",
                    args=[quote(campaign.pk)],
                )
                + f"#variant-{obj.pk}",
                copy_url=(
                    reverse(
                        f"{self.admin_site.name}:campaigns_stepvariant_copy", args=[quote(obj.pk)]
                    )
                    if may_change
                    else ""
                ),
                title=f"{obj.step.name}, variant {obj.name}: weight and copy",
                live_preview_url=reverse(
                    f"{self.admin_site.name}:campaigns_stepvariant_live_preview",
                    args=[quote(obj.pk)],
                ),
                by_contact=request.user.has_perm(VIEW_CONTACT_DETAILS),
                channel_parts={str(c): channel_parts(str(c)) for c in Channel},
                variables=[*sorted(campaign.variables), *SYSTEM_EXAMPLES],
                campaign_variables=sorted(campaign.variables),
                required=[
                    (channel_label(str(c)), ", ".join(required_parts(c)))
                    for c in campaign_channels(campaign)
                ],
                locked=not copy_editable(campaign),
            )
        return super().render_change_form(request, context, add, change, form_url, obj)

    def get_formset_kwargs(
        self, request: HttpRequest, obj: Any, inline: Any, prefix: str
    ) -> dict[str, Any]:
        kwargs = super().get_formset_kwargs(request, obj, inline, prefix)
        if isinstance(inline, VariantTemplateInline) and copy_editable_variant(obj):
            # One empty form per channel still missing its copy, its channel filled in.
            kwargs["initial"] = [{"channel": channel} for channel in missing_channels(obj)]
        return kwargs

    def changeform_view(
        self,
        request: HttpRequest,
        object_id: str | None = None,
        form_url: str = "",
        extra_context: dict[str, Any] | None = None,
    ) -> HttpResponse:
        if request.method == "POST" and object_id is not None:
            with transaction.atomic():  # see CampaignAdmin.changeform_view
                pk = unquote(object_id)
                if (variant_id := parse_id(pk)) is not None:
                    list(
                        Campaign.objects.select_for_update()
                        .filter(steps__variants=variant_id)
                        .values("pk")
                    )
                return super().changeform_view(request, object_id, form_url, extra_context)
        return super().changeform_view(request, object_id, form_url, extra_context)

    def save_related(self, request: HttpRequest, form: Any, formsets: Any, change: bool) -> None:
        super().save_related(request, form, formsets, change)
        variant_cache_clear()  # this process renders the new copy at once (others within 30 s)
        if form.has_changed() or any(fs.has_changed() for fs in formsets):
            back_to_draft_if_awaiting(request, form.instance.step.campaign)

    def response_post_save_change(
        self, request: HttpRequest, obj: StepVariant
    ) -> HttpResponseRedirect:
        return HttpResponseRedirect(self._campaign_url(obj))

    def delete_model(self, request: HttpRequest, obj: StepVariant) -> None:
        campaign = obj.step.campaign
        request._campaign_url = self._campaign_url(obj)  # type: ignore[attr-defined]
        super().delete_model(request, obj)
        back_to_draft_if_awaiting(request, campaign)

    def response_delete(self, request: HttpRequest, obj_display: str, obj_id: Any) -> HttpResponse:
        response = super().response_delete(request, obj_display, obj_id)
        url = getattr(request, "_campaign_url", "")
        return HttpResponseRedirect(url) if url else response

    def live_preview_view(self, request: HttpRequest, object_id: str) -> HttpResponse:
        """POST (the editor's form as it stands, unsaved): its copy rendered for a customer, as
        an HTML fragment for the side panel. Problems are said in the fragment, never a 500."""
        variant = self.get_object(request, unquote(object_id))
        if variant is None:
            raise Http404(f"No variant with id {object_id!r}")
        if not self.has_view_permission(request, variant):
            raise PermissionDenied
        if request.method != "POST":
            return HttpResponseNotAllowed(["POST"])
        campaign = variant.step.campaign
        viewer = staff_user(request)
        query = request.POST.get("preview_user", "").strip()[:200]
        user, whom, lookup_error = CampaignAdmin._preview_user(
            campaign, query, viewer, anyone=viewer.has_perm(VIEW_CONTACT_DETAILS)
        )
        # A read-only page (locked, or Support) has no boxes: its saved copy is shown.
        editable = self.has_change_permission(request, variant)
        copy = posted_copy(request.POST) if editable else None
        if copy is None:
            copy = {
                (t.channel, t.locale, t.persona): {part: getattr(t, part) for part in PART_FIELDS}
                for t in variant.templates.all()
            }
        results = unsaved_copy_preview(
            campaign=campaign,
            user=user,
            copy=copy,
            links_user_id=viewer.pk,
            budget=TimeBudget(settings.NOTIFIER_PREVIEW_BUDGET_S),
        )
        context = {
            "channels": [channel_preview(channel, result) for channel, result in results.items()],
            "whom": whom,
            "lookup_error": lookup_error,
            "preview_user": {
                "pk": user.pk,
                "name": display_name(user),
                "locale": recipient_for(user).locale,
                "time_zone": recipient_for(user).time_zone,
            },
        }
        return TemplateResponse(request, TEMPLATES + "_live_preview.html", context)

    def copy_view(self, request: HttpRequest, object_id: str) -> HttpResponse:
        """POST: a new variant of the same step, starting from this one's copy."""
        source = self.get_object(request, unquote(object_id))
        if source is None:
            raise Http404(f"No variant with id {object_id!r}")
        if not self.has_change_permission(request, source):
            raise PermissionDenied
        if request.method != "POST":
            return HttpResponseNotAllowed(["POST"])
        with transaction.atomic():
            variant = copy_variant(source=source, name=next_variant_name(source.step))
            back_to_draft_if_awaiting(request, source.step.campaign)
        self.log_addition(request, variant, f"Copied from variant {source.name}")
        messages.success(
            request, f"Variant {variant.name} starts as a copy of {source.name}: change its copy."
        )
        return HttpResponseRedirect(variant_url(variant.pk, self.admin_site.name))
