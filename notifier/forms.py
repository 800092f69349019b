"""Form fields the admin shares: JSON typed by staff, read within the bounds notify() keeps."""

from __future__ import annotations

from typing import Any

from django import forms
from django.core.exceptions import ValidationError
from django.db import models
from django.forms.fields import InvalidJSONInput

from notifier.api import MAX_CONTEXT_BYTES, MAX_CONTEXT_DEPTH
from notifier.text import json_value_problem, strict_json_loads


class BoundedJSONField(forms.JSONField):
    """Django's JSON form field, refusing with a field error what it would take badly: more
    than notify()'s 64 KB (campaign variables become every message's context), nesting deeper
    than its 32 levels (Django's own parser raises RecursionError past about a thousand: a
    500), NaN or infinity, NUL or lone surrogates."""

    def to_python(self, value: Any) -> Any:
        if isinstance(value, str) and len(value.encode("utf-8", "surrogatepass")) > (
            MAX_CONTEXT_BYTES
        ):
            raise ValidationError(
                f"This is over {MAX_CONTEXT_BYTES // 1024} KB of JSON; keep it shorter.",
                code="too_long",
            )
        if isinstance(value, str) and value.strip() and not self.disabled:
            try:
                strict_json_loads(value)
            except RecursionError:
                raise ValidationError(
                    f"This nests deeper than {MAX_CONTEXT_DEPTH} levels; flatten it.",
                    code="too_deep",
                ) from None
            except ValueError:
                pass  # Django's own parse below says what is wrong, in its words
        parsed = super().to_python(value)
        problem = json_value_problem(parsed, max_depth=MAX_CONTEXT_DEPTH)
        if problem:
            raise ValidationError(f"This JSON {problem}; fix it.", code="invalid_value")
        return parsed

    def bound_data(self, data: Any, initial: Any) -> Any:
        """What the form shows again after an error: the text as typed when it cannot be read
        (Django's own catches only a JSONDecodeError, and re-showing a deep one was the 500)."""
        try:
            return super().bound_data(data, initial)
        except RecursionError:
            return InvalidJSONInput(data)


# For a ModelAdmin whose form edits a JSONField: `formfield_overrides = BOUNDED_JSON`.
BOUNDED_JSON: dict[type[models.Field[Any, Any]], dict[str, Any]] = {
    models.JSONField: {"form_class": BoundedJSONField}
}
