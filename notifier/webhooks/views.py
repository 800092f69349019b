"""Provider webhooks: anymail's email tracking signal, Twilio's status callback and inbound SMS.

Email: `/webhooks/anymail/<esp>/tracking/` runs django-anymail's own tracking view for that
ESP, which checks the ESP's signature or basic auth and sends `anymail.signals.tracking`;
`email_tracking_received` below hands each event to `notifier.webhooks.events`. Only the
ESPs we accept are routed at all (404 otherwise): anymail's other views, inbound mail
included, are never reachable.

Twilio (form posts, signed with X-Twilio-Signature over the URL Twilio called and the params):

POST /webhooks/twilio/status/    MessageSid, MessageStatus, ErrorCode -> the delivery's status
POST /webhooks/twilio/inbound/   From, Body: STOP / START keywords -> SMS consent; empty TwiML

A missing or wrong signature gets 403 and writes nothing; a signed request without the fields
it needs, or with values no provider sends (NUL, lone surrogates, NaN or infinite numbers, a
time out of range, deeper nesting than any ESP's events), gets 400 and writes nothing. Replays
and unknown message ids get 200 and change nothing.
"""

from __future__ import annotations

import functools
import logging
import re
from collections.abc import Callable, Mapping
from datetime import datetime
from typing import Any

from django.conf import settings
from django.core.exceptions import ValidationError
from django.db import transaction
from django.http import HttpRequest, HttpResponse, QueryDict
from django.urls import URLPattern
from django.utils import timezone
from django.views.decorators.csrf import csrf_exempt
from django.views.decorators.http import require_POST

from channels.base import Channel
from channels.email import DjangoEmailProvider
from channels.registry import provider_named, providers_for
from channels.sms import TwilioSmsProvider
from notifier.models.users import normalize_phone
from notifier.policies.providers import (
    email_event_action,
    signed_timestamp,
    sms_status_action,
    too_old,
)
from notifier.text import json_value_problem, strict_json_loads, text_problem
from notifier.webhooks.events import (
    InvalidProviderEvent,
    ProviderEventIn,
    provider_event_apply,
    sms_inbound_apply,
)

log = logging.getLogger(__name__)
security_log = logging.getLogger("django.security.webhooks")


# --- Email: anymail's tracking views and signal ----------------------------------------------


@functools.cache
def anymail_tracking_views() -> dict[str, Callable[..., HttpResponse]]:
    """anymail's tracking view per ESP key ("mailgun" -> its view), from `anymail.urls`."""
    from anymail import urls

    suffix = "_tracking_webhook"
    return {
        pattern.name.removesuffix(suffix): pattern.callback
        for pattern in urls.urlpatterns
        if isinstance(pattern, URLPattern) and pattern.name and pattern.name.endswith(suffix)
    }


# Real ESP payloads nest a handful of levels (Mailgun's: 5); anything deeper is not one.
MAX_WEBHOOK_NESTING = 32
FORM_TYPES = ("application/x-www-form-urlencoded", "multipart/form-data")


def _refused(status: int, words: str) -> HttpResponse:
    return HttpResponse(words + "\n", status=status, content_type="text/plain; charset=utf-8")


def webhook_body_problem(request: HttpRequest) -> str | None:
    """Why an ESP's webhook body cannot be taken, before anymail parses it: a body that is not
    JSON (Amazon SES posts it as text/plain; anymail's own parse raised RecursionError on deep
    nesting: a 500), nests deeper than any ESP's events, holds NaN or infinite numbers, or text
    PostgreSQL cannot store; form fields (Mailgun's legacy posts, Mandrill) holding such text.
    None when it can be handed on."""
    if request.content_type not in FORM_TYPES:  # every ESP's events are JSON but form posts
        try:
            body = strict_json_loads(request.body)
        except (ValueError, RecursionError):  # UnicodeDecodeError is a ValueError
            return "is not JSON (or nests past what a parser takes)"
        return json_value_problem(body, max_depth=MAX_WEBHOOK_NESTING)
    for key, values in request.POST.lists():
        for text in (key, *values):
            if problem := text_problem(text):
                return f"has a form field that {problem}"
    return None


@csrf_exempt
def email_tracking(request: HttpRequest, esp: str) -> HttpResponse:
    """Hand an ESP's tracking webhook to anymail's view for it, if we take that ESP's events.

    The whole request is one transaction: an event refused after others were applied (a batch
    from an ESP that posts several) leaves nothing written, and the ESP's retry finds nothing.
    """
    from anymail.exceptions import AnymailConfigurationError, AnymailWebhookValidationFailure

    view = anymail_tracking_views().get(esp)
    if view is None or esp not in email_webhook_esps():
        accepted = ", ".join(email_webhook_esps()) or "none (email goes out over SMTP)"
        return _refused(
            404,
            f"No email webhook for {esp!r} here. Accepted ESPs: {accepted} "
            "(EMAIL_BACKEND or NOTIFIER_EMAIL_WEBHOOK_ESPS).",
        )
    try:
        handler = view.view_class(**view.view_initkwargs)  # type: ignore[attr-defined]
    except AnymailConfigurationError as exc:  # e.g. the signing key is missing (check W102)
        log.error("email webhook for %s is not configured: %s", esp, exc)
        return _refused(
            503, f"The {esp} webhook is not configured on this site yet; try again later."
        )
    if request.method == "POST" and (problem := webhook_body_problem(request)):
        security_log.warning("%s webhook body refused: %s", esp, problem)
        return _refused(400, f"Refused: the body {problem}; send the JSON {esp} posts.")
    try:
        with transaction.atomic():
            handler.setup(request)
            return handler.dispatch(request)
    except AnymailWebhookValidationFailure as exc:  # a bad signature or basic auth, a replay
        security_log.warning("%s webhook refused: %s", esp, exc)
        return _refused(403, f"Refused: {exc}")
    except InvalidProviderEvent as exc:  # authenticated, but values we cannot take
        security_log.warning("%s webhook event refused: %s", esp, exc)
        return _refused(400, f"Refused: {exc}. Nothing was written.")
    except AnymailConfigurationError as exc:
        # Configured, so it is the body: e.g. Postmark's inbound webhook pointed at this
        # tracking URL (anymail says so in its message).
        log.warning("%s webhook body is not a tracking event: %s", esp, exc)
        return _refused(400, f"The body is not a {esp} tracking event: {exc}")
    except (
        ValueError,
        TypeError,
        KeyError,
        IndexError,
        AttributeError,
        OverflowError,
        RecursionError,
    ) as exc:
        # An authenticated body that anymail cannot parse as this ESP's events (its parsers
        # index into the JSON they expect; a time of 1e20 seconds overflows). The transaction
        # above is rolled back: nothing was applied.
        log.warning("%s webhook body not understood", esp, exc_info=True)
        return _refused(
            400,
            f"The body is not a {esp} tracking webhook ({type(exc).__name__}); send the JSON "
            f"{esp} posts for tracking events.",
        )


def _signed_at(esp_name: str, esp_event: Any) -> datetime | None:
    """The timestamp the ESP signed, for the ESPs whose signature covers one (Mailgun);
    InvalidProviderEvent when the signed value is not a Unix time in whole seconds."""
    if esp_name != "Mailgun":
        return None
    if isinstance(esp_event, Mapping) and isinstance(esp_event.get("signature"), Mapping):
        raw = esp_event["signature"].get("timestamp")
    else:  # a legacy form post: a QueryDict with the signature fields among the others
        raw = esp_event.get("timestamp") if hasattr(esp_event, "get") else None
    signed_at = signed_timestamp(raw)
    if signed_at is None:
        raise InvalidProviderEvent(
            f"the signed timestamp {str(raw)[:40]!r} is not a Unix time in whole seconds"
        )
    return signed_at


def esp_key(esp_name: str) -> str:
    """ "Amazon SES" -> "amazon_ses": the name of anymail's backend module for that ESP."""
    return esp_name.lower().replace(" ", "_")


def email_webhook_esps() -> list[str]:
    """The ESPs whose webhooks we accept: NOTIFIER_EMAIL_WEBHOOK_ESPS, else the anymail ESPs
    that EMAIL_BACKEND and the email instances of NOTIFIER_PROVIDER_INSTANCES send through
    (none for plain SMTP)."""
    if settings.NOTIFIER_EMAIL_WEBHOOK_ESPS:
        return [esp_key(name) for name in settings.NOTIFIER_EMAIL_WEBHOOK_ESPS]
    backends = [settings.EMAIL_BACKEND] + [
        str(definition.get("backend") or "")
        for name, definition in (settings.NOTIFIER_PROVIDER_INSTANCES or {}).items()
        if isinstance(definition, Mapping)
        and definition.get("class") == DjangoEmailProvider.name
        and name in settings.NOTIFIER_PROVIDERS.get("email", [])
    ]
    esps: list[str] = []
    for backend in backends:
        parts = backend.split(".")
        if parts[:2] == ["anymail", "backends"] and len(parts) > 2 and parts[2] not in esps:
            esps.append(parts[2])
    return esps


def email_webhook_refusal(sender: Any, esp_name: str) -> str | None:
    """Why an ESP webhook that anymail accepted is still refused, or None.

    `email_tracking` routes only our ESPs; this says it again where the event arrives. An ESP whose
    webhooks carry no signature is accepted only with basic auth (WEBHOOK_SECRET) configured:
    anymail merely warns without it, and its endpoint would be open to anyone.
    """
    if esp_key(esp_name) not in email_webhook_esps():
        return (
            f"{esp_name} webhooks are not accepted here: this site sends email through "
            f"{', '.join(email_webhook_esps()) or 'SMTP'} (NOTIFIER_EMAIL_WEBHOOK_ESPS)"
        )
    if getattr(sender, "warn_if_no_basic_auth", False) and not settings.ANYMAIL.get(
        "WEBHOOK_SECRET"
    ):
        return f"{esp_name} webhooks need basic auth: set WEBHOOK_SECRET in ANYMAIL"
    return None


def _soft_bounce(esp_name: str, esp_event: Any) -> bool:
    """A bounce the ESP itself calls temporary, where anymail's event type cannot say so."""
    if esp_name == "Postmark" and isinstance(esp_event, Mapping):
        return esp_event.get("Type") == "SoftBounce"
    return False


class EventNotApplied(Exception):
    """Our own handling of an ESP's event failed (a bug, the database): the request answers
    500, so the ESP retries later. Kept apart from the errors of anymail's parsing, which say
    the body is not the ESP's and answer 400 (an ESP does not retry a 4xx: a bug of ours
    answered 400 would lose its events silently)."""


def email_provider_of_esp(esp: str) -> str:
    """Delivery.provider of the emails an ESP's webhook speaks of: the configured instance
    whose backend is that ESP's anymail backend, else "django" (EMAIL_BACKEND)."""
    backend_prefix = f"anymail.backends.{esp}."
    for provider in providers_for(Channel.EMAIL):
        if isinstance(provider, DjangoEmailProvider) and str(
            provider.options.get("backend") or ""
        ).startswith(backend_prefix):
            return provider.name
    return DjangoEmailProvider.name


def email_tracking_received(sender: Any, event: Any, esp_name: str, **kwargs: Any) -> None:
    """Receiver of `anymail.signals.tracking`: one normalised ESP event per call."""
    from anymail.exceptions import AnymailWebhookValidationFailure

    try:
        _email_event_apply(sender, event, esp_name)
    except (AnymailWebhookValidationFailure, InvalidProviderEvent):
        raise  # refusals of the request: 403 and 400
    except Exception as exc:
        raise EventNotApplied(f"applying a {esp_name} {event.event_type} event failed") from exc


def _email_event_apply(sender: Any, event: Any, esp_name: str) -> None:
    from anymail.exceptions import AnymailWebhookValidationFailure

    refusal = email_webhook_refusal(sender, esp_name)
    if refusal is not None:  # a SuspiciousOperation: Django answers 400
        raise AnymailWebhookValidationFailure(refusal)
    signed_at = _signed_at(esp_name, event.esp_event)
    if too_old(
        signed_at, now=timezone.now(), max_age_s=settings.NOTIFIER_WEBHOOK_MAX_AGE_S
    ):  # a SuspiciousOperation: Django answers 400
        raise AnymailWebhookValidationFailure(
            f"{esp_name} webhook signed at {signed_at:%Y-%m-%d %H:%M:%S} UTC is older than "
            f"NOTIFIER_WEBHOOK_MAX_AGE_S ({settings.NOTIFIER_WEBHOOK_MAX_AGE_S}s); refused"
        )
    source = esp_key(esp_name)
    event_type = str(event.event_type or "unknown")
    message_id = str(event.message_id or "")
    event_id = str(event.event_id or "") or (
        f"{message_id}:{event_type}:{event.timestamp.isoformat() if event.timestamp else ''}"
    )
    words = "; ".join(str(w) for w in (event.description, event.mta_response) if w)
    result = provider_event_apply(
        ProviderEventIn(
            source=source,
            event_id=event_id,
            event_type=event_type,
            delivery_provider=email_provider_of_esp(source),
            provider_message_id=message_id,
            occurred_at=event.timestamp,
            recipient=str(event.recipient or ""),
            error=words,
            detail={
                k: v
                for k, v in {
                    "reject_reason": event.reject_reason,
                    "recipient": event.recipient,
                    "click_url": event.click_url,
                    "description": words or None,
                }.items()
                if v
            },
        ),
        email_event_action(
            event_type,
            event.reject_reason,
            soft_bounce=_soft_bounce(esp_name, event.esp_event),
        ),
    )
    log.info("%s %s for %s: %s", esp_name, event_type, message_id, result.outcome or "replayed")


# --- Twilio ------------------------------------------------------------------------------------


def twilio_called_url(request: HttpRequest) -> str:
    """The URL as Twilio called it, which is what Twilio signed.

    NOTIFIER_TWILIO_WEBHOOK_BASE_URL (the public https origin) wins when set. Otherwise Django's own
    view of the request: it honours X-Forwarded-Proto / X-Forwarded-Host only when
    DJANGO_TRUST_PROXY_HEADERS told it to (SECURE_PROXY_SSL_HEADER, USE_X_FORWARDED_HOST).
    """
    base = settings.NOTIFIER_TWILIO_WEBHOOK_BASE_URL.rstrip("/")
    if base:
        return f"{base}{request.get_full_path()}"
    return request.build_absolute_uri()


def twilio_provider(request: HttpRequest) -> TwilioSmsProvider | None:
    """The Twilio account a callback is for: the instance its URL names (?provider=, see
    channels.sms.status_callback_url), else the NOTIFIER_TWILIO_* one; None for a name that is not a
    configured Twilio instance of the SMS chain."""
    name = request.GET.get("provider", "")
    if not name:
        return TwilioSmsProvider()
    provider = provider_named(Channel.SMS, name)
    return provider if isinstance(provider, TwilioSmsProvider) else None


def twilio_signature_ok(request: HttpRequest) -> bool:
    """False too where the twilio SDK (the `sms` extra) is not installed: no Twilio account
    sends through this deployment, so nothing Twilio posts here is for it."""
    try:
        from twilio.request_validator import (
            SIGNATURE_HEADER,
            SIGNATURE_SETTINGS_HEADER,
            RequestValidator,
            get_signature_algorithm,
        )
    except ImportError:
        return False

    signature = request.headers.get(SIGNATURE_HEADER, "")
    provider = twilio_provider(request)
    token = provider.account()[1] if provider is not None else ""
    if not signature or not token:
        return False
    return bool(
        RequestValidator(token).validate(
            twilio_called_url(request),
            request.POST,
            signature,
            algorithm=get_signature_algorithm(request.headers.get(SIGNATURE_SETTINGS_HEADER)),
        )
    )


def _forbidden() -> HttpResponse:
    return HttpResponse(
        "The X-Twilio-Signature header is missing or does not match this request",
        status=403,
        content_type="text/plain",
    )


def _bad_request(words: str) -> HttpResponse:
    return HttpResponse(words, status=400, content_type="text/plain")


# The shapes of the Twilio fields we keep: a message SID ("SM" + 32 hex digits; MM for MMS),
# a status word, a numeric error code, an address (E.164, a short code or an alphanumeric id).
TWILIO_FIELDS = {
    "MessageSid": re.compile(r"[A-Za-z0-9]{0,64}"),
    "MessageStatus": re.compile(r"[A-Za-z_-]{0,40}"),
    "ErrorCode": re.compile(r"[0-9]{0,10}"),
    "From": re.compile(r"[^\x00-\x1f\x7f]{0,64}"),
    "To": re.compile(r"[^\x00-\x1f\x7f]{0,64}"),
}
MAX_TWILIO_BODY = 10_000  # a long SMS is 1,600 characters; WhatsApp allows 4,096


def twilio_params_problem(params: QueryDict) -> str | None:
    """Why a signed Twilio request's fields cannot be taken, in words; None when they can.
    Twilio sends none of this: checked before anything is written."""
    for key, values in params.lists():
        for text in (key, *values):
            if problem := text_problem(text):
                return f"{key[:40]!r} {problem}"
    for name, shape in TWILIO_FIELDS.items():
        value = params.get(name, "").strip()
        if not shape.fullmatch(value):
            return f"{name} {value[:40]!r} is not one Twilio sends"
    if len(params.get("Body", "")) > MAX_TWILIO_BODY:
        return f"Body is longer than {MAX_TWILIO_BODY} characters"
    return None


@csrf_exempt
@require_POST
def twilio_status(request: HttpRequest) -> HttpResponse:
    if not twilio_signature_ok(request):
        return _forbidden()
    if problem := twilio_params_problem(request.POST):
        return _bad_request(f"Refused: {problem}. Nothing was written.")
    sid = request.POST.get("MessageSid", "").strip()
    status = request.POST.get("MessageStatus", "").strip().lower()
    if not sid or not status:
        return _bad_request("MessageSid and MessageStatus are required")
    error_code = request.POST.get("ErrorCode", "").strip()
    action = sms_status_action(status, error_code)
    event = ProviderEventIn(
        source="twilio",
        # Twilio reports each status of a message once; the same pair again is a replay.
        event_id=f"{sid}:{status}",
        event_type=status,
        delivery_provider=request.GET.get("provider", "") or TwilioSmsProvider.name,
        provider_message_id=sid,
        recipient=request.POST.get("To", ""),
        # Twilio's ErrorCode is in the action's words and the event's detail.
        detail={"error_code": error_code} if error_code else {},
    )
    try:
        result = provider_event_apply(event, action)
    except InvalidProviderEvent as exc:
        return _bad_request(f"Refused: {exc}. Nothing was written.")
    log.info("twilio %s for %s: %s", status, sid, result.outcome or "replayed")
    return HttpResponse(status=200)


@csrf_exempt
@require_POST
def twilio_inbound(request: HttpRequest) -> HttpResponse:
    if not twilio_signature_ok(request):
        return _forbidden()
    from twilio.twiml.messaging_response import MessagingResponse  # installed: signature ok

    if problem := twilio_params_problem(request.POST):
        return _bad_request(f"Refused: {problem}. Nothing was written.")
    sid = request.POST.get("MessageSid", "").strip()
    sender = request.POST.get("From", "").strip()
    if not sid or not sender:
        return _bad_request("MessageSid and From are required")
    try:
        phone = normalize_phone(sender)
    except ValidationError:
        phone = ""  # a short code or an alphanumeric sender: no user of ours
    try:
        result = sms_inbound_apply(
            source="twilio", event_id=sid, phone=phone, body=request.POST.get("Body", "")
        )
    except InvalidProviderEvent as exc:
        return _bad_request(f"Refused: {exc}. Nothing was written.")
    log.info("twilio inbound %s: %s", sid, result.outcome or "replayed")
    # Empty TwiML: Twilio's own opt-out handling sends the carrier-mandated confirmation.
    return HttpResponse(str(MessagingResponse()), content_type="text/xml")
