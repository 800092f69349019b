"""System checks that say at start-up when provider webhooks could not work."""

from __future__ import annotations

from notifier.operations.checks import check_provider_webhooks


def ids() -> list[str]:
    return [message.id or "" for message in check_provider_webhooks()]


def test_smtp_and_the_sandbox_need_no_webhooks(settings):
    settings.EMAIL_BACKEND = "django.core.mail.backends.smtp.EmailBackend"
    settings.NOTIFIER_EMAIL_WEBHOOK_ESPS = []
    settings.NOTIFIER_PROVIDERS = {**settings.NOTIFIER_PROVIDERS, "sms": ["sandbox"]}
    assert ids() == []


def test_mailgun_without_its_signing_key_is_named(settings):
    settings.EMAIL_BACKEND = "anymail.backends.mailgun.EmailBackend"
    settings.ANYMAIL = {}
    [warning] = check_provider_webhooks()
    assert warning.id == "notifier.W102"
    assert "WEBHOOK_SIGNING_KEY" in warning.msg

    settings.ANYMAIL = {"MAILGUN_WEBHOOK_SIGNING_KEY": "key"}
    assert ids() == []


def test_an_unsigned_esp_without_basic_auth_is_named(settings):
    settings.EMAIL_BACKEND = "anymail.backends.postmark.EmailBackend"
    settings.ANYMAIL = {"POSTMARK_SERVER_TOKEN": "token"}
    assert ids() == ["notifier.W103"]

    settings.ANYMAIL = {"POSTMARK_SERVER_TOKEN": "token", "WEBHOOK_SECRET": "hook:s3cret"}
    assert ids() == []


def test_twilio_with_a_callback_url_it_cannot_reach_is_named(settings):
    settings.EMAIL_BACKEND = "django.core.mail.backends.smtp.EmailBackend"
    settings.NOTIFIER_PROVIDERS = {**settings.NOTIFIER_PROVIDERS, "sms": ["twilio"]}
    settings.NOTIFIER_TWILIO_WEBHOOK_BASE_URL = ""
    settings.NOTIFIER_SITE_URL = "http://localhost:8000"
    assert ids() == ["notifier.W104"]

    settings.NOTIFIER_TWILIO_WEBHOOK_BASE_URL = "https://notify.example.com"
    assert ids() == []
