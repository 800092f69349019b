"""Provider webhooks: anymail's email tracking signal, Twilio's status callback and inbound SMS.

Email: `/webhooks/anymail/<esp>/tracking/` runs django-anymail's own tracking view for that
ESP, which checks the ESP's signature or basic auth and sends `anymail.signals.tracking`;
`email_tracking_received` below hands each event to `notifier.services.webhooks`. Only the
ESPs we accept are routed at all (404 otherwise): anymail's other views, inbound mail
included, are never reachable.

Twilio (form posts, signed with X-Twilio-Signature over the URL Twilio called and the params):

POST /webhooks/twilio/status/    MessageSid, MessageStatus, ErrorCode -> the delivery's status
POST /webhooks/twilio/inbound/   From, Body: STOP / START keywords -> SMS consent; empty TwiML

A missing or wrong signature gets 403 and writes nothing; a signed request without the fields
it needs gets 400. Replays and unknown message ids get 200 and change nothing.
"""

from __future__ import annotations

import functools
import logging
from collections.abc import Callable, Mapping
from datetime import UTC, datetime
from typing import Any

from django.conf import settings
from django.core.exceptions import ValidationError
from django.http import HttpRequest, HttpResponse
from django.urls import URLPattern
from django.utils import timezone
from django.views.decorators.csrf import csrf_exempt
from django.views.decorators.http import require_POST

from channels.email import DjangoEmailProvider
from channels.sms import TwilioSmsProvider
from notifier.models.users import normalize_phone
from notifier.policies.providers import email_event_action, sms_status_action, too_old
from notifier.services.webhooks import ProviderEventIn, provider_event_apply, sms_inbound_apply

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


@csrf_exempt
def email_tracking(request: HttpRequest, esp: str) -> HttpResponse:
    """Hand an ESP's tracking webhook to anymail's view for it, if we take that ESP's events."""
    from anymail.exceptions import AnymailConfigurationError, AnymailWebhookValidationFailure

    view = anymail_tracking_views().get(esp)
    if view is None or esp not in email_webhook_esps():
        accepted = ", ".join(email_webhook_esps()) or "none (email goes out over SMTP)"
        return HttpResponse(
            f"No email webhook for {esp!r} here. Accepted ESPs: {accepted} "
            "(EMAIL_BACKEND or NOTIFIER_EMAIL_WEBHOOK_ESPS).\n",
            status=404,
            content_type="text/plain; charset=utf-8",
        )
    try:
        return view(request)
    except AnymailWebhookValidationFailure as exc:  # a bad signature or basic auth, a replay
        security_log.warning("%s webhook refused: %s", esp, exc)
        return HttpResponse(
            f"Refused: {exc}\n", status=403, content_type="text/plain; charset=utf-8"
        )
    except AnymailConfigurationError as exc:  # e.g. the signing key is missing (check W102)
        log.error("email webhook for %s is not configured: %s", esp, exc)
        return HttpResponse(
            f"The {esp} webhook is not configured on this site yet; try again later.\n",
            status=503,
            content_type="text/plain; charset=utf-8",
        )
    except (ValueError, TypeError, KeyError, IndexError, AttributeError) as exc:
        # An authenticated body that anymail cannot parse as this ESP's events (its parsers
        # index into the JSON they expect). Nothing was applied: each event is its own
        # transaction, and parsing comes before the first.
        log.warning("%s webhook body not understood", esp, exc_info=True)
        return HttpResponse(
            f"The body is not a {esp} tracking webhook ({type(exc).__name__}); send the JSON "
            f"{esp} posts for tracking events.\n",
            status=400,
            content_type="text/plain; charset=utf-8",
        )


def _signed_at(esp_name: str, esp_event: Any) -> datetime | None:
    """The timestamp the ESP signed, for the ESPs whose signature covers one (Mailgun)."""
    if esp_name != "Mailgun":
        return None
    if isinstance(esp_event, Mapping) and isinstance(esp_event.get("signature"), Mapping):
        raw = esp_event["signature"].get("timestamp")
    else:  # a legacy form post: a QueryDict with the signature fields among the others
        raw = esp_event.get("timestamp") if hasattr(esp_event, "get") else None
    try:
        return datetime.fromtimestamp(float(raw), tz=UTC)
    except (TypeError, ValueError):
        return None


def esp_key(esp_name: str) -> str:
    """ "Amazon SES" -> "amazon_ses": the name of anymail's backend module for that ESP."""
    return esp_name.lower().replace(" ", "_")


def email_webhook_esps() -> list[str]:
    """The ESPs whose webhooks we accept: NOTIFIER_EMAIL_WEBHOOK_ESPS, else the anymail ESP
    that EMAIL_BACKEND sends through (none for plain SMTP)."""
    if settings.NOTIFIER_EMAIL_WEBHOOK_ESPS:
        return [esp_key(name) for name in settings.NOTIFIER_EMAIL_WEBHOOK_ESPS]
    parts = settings.EMAIL_BACKEND.split(".")
    if parts[:2] == ["anymail", "backends"] and len(parts) > 2:
        return [parts[2]]
    return []


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


def email_tracking_received(sender: Any, event: Any, esp_name: str, **kwargs: Any) -> None:
    """Receiver of `anymail.signals.tracking`: one normalised ESP event per call."""
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
            delivery_provider=DjangoEmailProvider.name,
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

    TWILIO_WEBHOOK_BASE_URL (the public https origin) wins when set. Otherwise Django's own
    view of the request: it honours X-Forwarded-Proto / X-Forwarded-Host only when
    DJANGO_TRUST_PROXY_HEADERS told it to (SECURE_PROXY_SSL_HEADER, USE_X_FORWARDED_HOST).
    """
    base = settings.TWILIO_WEBHOOK_BASE_URL.rstrip("/")
    if base:
        return f"{base}{request.get_full_path()}"
    return request.build_absolute_uri()


def twilio_signature_ok(request: HttpRequest) -> bool:
    from twilio.request_validator import (
        SIGNATURE_HEADER,
        SIGNATURE_SETTINGS_HEADER,
        RequestValidator,
        get_signature_algorithm,
    )

    signature = request.headers.get(SIGNATURE_HEADER, "")
    if not signature or not settings.TWILIO_AUTH_TOKEN:
        return False
    return bool(
        RequestValidator(settings.TWILIO_AUTH_TOKEN).validate(
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


@csrf_exempt
@require_POST
def twilio_status(request: HttpRequest) -> HttpResponse:
    if not twilio_signature_ok(request):
        return _forbidden()
    sid = request.POST.get("MessageSid", "").strip()
    status = request.POST.get("MessageStatus", "").strip().lower()
    if not sid or not status:
        return _bad_request("MessageSid and MessageStatus are required")
    error_code = request.POST.get("ErrorCode", "").strip()
    action = sms_status_action(status, error_code)
    result = provider_event_apply(
        ProviderEventIn(
            source="twilio",
            # Twilio reports each status of a message once; the same pair again is a replay.
            event_id=f"{sid}:{status}",
            event_type=status,
            delivery_provider=TwilioSmsProvider.name,
            provider_message_id=sid,
            recipient=request.POST.get("To", ""),
            # Twilio's ErrorCode is in the action's words and the event's detail.
            detail={"error_code": error_code} if error_code else {},
        ),
        action,
    )
    log.info("twilio %s for %s: %s", status, sid, result.outcome or "replayed")
    return HttpResponse(status=200)


@csrf_exempt
@require_POST
def twilio_inbound(request: HttpRequest) -> HttpResponse:
    from twilio.twiml.messaging_response import MessagingResponse

    if not twilio_signature_ok(request):
        return _forbidden()
    sid = request.POST.get("MessageSid", "").strip()
    sender = request.POST.get("From", "").strip()
    if not sid or not sender:
        return _bad_request("MessageSid and From are required")
    try:
        phone = normalize_phone(sender)
    except ValidationError:
        phone = ""  # a short code or an alphanumeric sender: no user of ours
    result = sms_inbound_apply(
        source="twilio", event_id=sid, phone=phone, body=request.POST.get("Body", "")
    )
    log.info("twilio inbound %s: %s", sid, result.outcome or "replayed")
    # Empty TwiML: Twilio's own opt-out handling sends the carrier-mandated confirmation.
    return HttpResponse(str(MessagingResponse()), content_type="text/xml")
