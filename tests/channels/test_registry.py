"""The provider registry: start-up configuration checks and one provider instance per channel."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
from django.core.exceptions import ImproperlyConfigured

from channels import registry
from channels.base import Channel
from channels.email import DjangoEmailProvider
from channels.push import FcmWebPushProvider
from channels.registry import check_providers_configured, provider_class, provider_for
from channels.sandbox import SandboxEmailProvider, SandboxPushProvider, SandboxSmsProvider
from channels.sms import TwilioSmsProvider

ROOT = Path(__file__).resolve().parents[2]
SANDBOX = {"inapp": ["inapp"], "email": ["sandbox"], "sms": ["sandbox"], "push": ["sandbox"]}


@pytest.fixture
def no_credentials(settings):
    settings.NOTIFIER_PROVIDERS = dict(SANDBOX)
    settings.NOTIFIER_TWILIO_ACCOUNT_SID = ""
    settings.NOTIFIER_TWILIO_AUTH_TOKEN = ""
    settings.NOTIFIER_TWILIO_FROM_NUMBER = ""
    settings.NOTIFIER_TWILIO_MESSAGING_SERVICE_SID = ""
    settings.NOTIFIER_FCM_CREDENTIALS_FILE = ""
    settings.NOTIFIER_WEBPUSH_VAPID_PRIVATE_KEY = ""
    settings.NOTIFIER_WEBPUSH_VAPID_SUBJECT = ""
    registry.reset_providers()
    return settings


def use(settings, **channels: list[str]) -> None:
    settings.NOTIFIER_PROVIDERS = {**SANDBOX, **channels}
    registry.reset_providers()


def test_sandbox_defaults_pass(no_credentials):
    check_providers_configured()


def test_the_test_settings_defaults_pass():
    check_providers_configured()


def test_twilio_without_credentials_names_the_missing_settings(no_credentials):
    use(no_credentials, sms=["twilio"])

    with pytest.raises(ImproperlyConfigured) as excinfo:
        check_providers_configured()

    message = str(excinfo.value)
    assert "sms provider 'twilio'" in message
    assert "TWILIO_ACCOUNT_SID" in message
    assert "TWILIO_AUTH_TOKEN" in message
    assert "TWILIO_FROM_NUMBER" in message


def test_twilio_without_a_sender_names_the_from_number(no_credentials):
    no_credentials.NOTIFIER_TWILIO_ACCOUNT_SID = "AC123"
    no_credentials.NOTIFIER_TWILIO_AUTH_TOKEN = "secret"
    use(no_credentials, sms=["twilio"])

    with pytest.raises(ImproperlyConfigured, match="TWILIO_FROM_NUMBER") as excinfo:
        check_providers_configured()

    assert "TWILIO_ACCOUNT_SID" not in str(excinfo.value)


def test_twilio_with_credentials_passes(no_credentials):
    no_credentials.NOTIFIER_TWILIO_ACCOUNT_SID = "AC123"
    no_credentials.NOTIFIER_TWILIO_AUTH_TOKEN = "secret"
    no_credentials.NOTIFIER_TWILIO_FROM_NUMBER = "+15005550006"
    use(no_credentials, sms=["twilio"])

    check_providers_configured()


def test_push_without_fcm_or_vapid_names_both_settings(no_credentials):
    use(no_credentials, push=["push"])

    with pytest.raises(ImproperlyConfigured) as excinfo:
        check_providers_configured()

    message = str(excinfo.value)
    assert "push provider 'push'" in message
    assert "FCM_CREDENTIALS_FILE" in message
    assert "WEBPUSH_VAPID_PRIVATE_KEY" in message


def test_push_with_a_vapid_key_but_no_subject_names_the_subject(no_credentials):
    no_credentials.NOTIFIER_WEBPUSH_VAPID_PRIVATE_KEY = "a-key"
    use(no_credentials, push=["push"])

    with pytest.raises(ImproperlyConfigured, match="WEBPUSH_VAPID_SUBJECT"):
        check_providers_configured()


def test_push_with_fcm_credentials_passes(no_credentials):
    no_credentials.NOTIFIER_FCM_CREDENTIALS_FILE = "/etc/notifier/fcm.json"
    use(no_credentials, push=["push"])

    check_providers_configured()


def test_an_unknown_provider_name_is_refused_with_the_choices(no_credentials):
    use(no_credentials, sms=["nexmo"])

    with pytest.raises(ImproperlyConfigured) as excinfo:
        check_providers_configured()

    message = str(excinfo.value)
    assert "'nexmo'" in message
    assert "NOTIFIER_SMS_PROVIDERS" in message
    assert "sandbox, twilio" in message


def test_a_provider_of_another_channel_is_refused(no_credentials):
    use(no_credentials, email=["twilio"])

    with pytest.raises(ImproperlyConfigured, match="'twilio', which is not a email provider"):
        check_providers_configured()


def test_a_channel_without_providers_is_refused(no_credentials):
    no_credentials.NOTIFIER_PROVIDERS = {k: v for k, v in SANDBOX.items() if k != "push"}

    with pytest.raises(ImproperlyConfigured, match="no provider is configured for push"):
        check_providers_configured()


def test_every_problem_is_reported_at_once(no_credentials):
    use(no_credentials, sms=["twilio"], push=["push"])

    with pytest.raises(ImproperlyConfigured) as excinfo:
        check_providers_configured()

    message = str(excinfo.value)
    assert "TWILIO_ACCOUNT_SID" in message
    assert "FCM_CREDENTIALS_FILE" in message


def test_smtp_email_without_a_host_names_email_url(no_credentials):
    no_credentials.EMAIL_BACKEND = "django.core.mail.backends.smtp.EmailBackend"
    no_credentials.EMAIL_HOST = ""
    use(no_credentials, email=["django"])

    with pytest.raises(ImproperlyConfigured, match="EMAIL_URL"):
        check_providers_configured()


@pytest.mark.parametrize(
    ("channel", "name", "cls"),
    [
        (Channel.EMAIL, "django", DjangoEmailProvider),
        (Channel.EMAIL, "sandbox", SandboxEmailProvider),
        (Channel.SMS, "twilio", TwilioSmsProvider),
        (Channel.SMS, "sandbox", SandboxSmsProvider),
        (Channel.PUSH, "push", FcmWebPushProvider),
        (Channel.PUSH, "sandbox", SandboxPushProvider),
    ],
)
def test_provider_class_resolves_every_registered_provider(channel, name, cls):
    resolved = provider_class(channel, name)

    assert resolved is cls
    assert resolved.channel is channel
    assert resolved.name == name


def test_provider_for_uses_the_first_name_once_per_process(no_credentials):
    use(no_credentials, sms=["sandbox", "twilio"])

    provider = provider_for(Channel.SMS)

    assert isinstance(provider, SandboxSmsProvider)
    assert provider_for(Channel.SMS) is provider


def test_reset_providers_picks_up_changed_settings(no_credentials):
    use(no_credentials, email=["sandbox"])
    assert isinstance(provider_for(Channel.EMAIL), SandboxEmailProvider)

    no_credentials.NOTIFIER_PROVIDERS = {**SANDBOX, "email": ["django"]}
    assert isinstance(provider_for(Channel.EMAIL), SandboxEmailProvider)  # still cached
    registry.reset_providers()

    assert isinstance(provider_for(Channel.EMAIL), DjangoEmailProvider)


# --- Provider SDKs are extras: a chain naming a provider without its SDK fails at start ---------


@pytest.fixture
def without(monkeypatch):
    """Make modules uninstalled for this test: `import x` raises ImportError and
    importlib.util.find_spec("x") finds nothing, as when the extra was never installed."""

    def hide(*modules: str) -> None:
        for module in modules:
            monkeypatch.setitem(sys.modules, module, None)

    return hide


def twilio_credentials(settings) -> None:
    settings.NOTIFIER_TWILIO_ACCOUNT_SID = "AC123"
    settings.NOTIFIER_TWILIO_AUTH_TOKEN = "secret"
    settings.NOTIFIER_TWILIO_FROM_NUMBER = "+15005550006"


def test_twilio_without_its_sdk_names_the_sms_extra(no_credentials, without):
    twilio_credentials(no_credentials)
    use(no_credentials, sms=["twilio"])
    without("twilio")

    with pytest.raises(ImproperlyConfigured) as excinfo:
        check_providers_configured()

    assert str(excinfo.value) == (
        "NOTIFIER_SMS_PROVIDERS names twilio but the twilio SDK is not installed: "
        "pip install 'notifier[sms]'"
    )


def test_a_named_plivo_instance_without_its_sdk_names_the_instance_and_extra(
    no_credentials, without
):
    no_credentials.NOTIFIER_PROVIDER_INSTANCES = {
        "plivo_eu": {"class": "plivo", "auth_id": "MA1", "auth_token": "t", "from_number": "+1"}
    }
    twilio_credentials(no_credentials)
    use(no_credentials, sms=["twilio", "plivo_eu"])
    without("plivo")

    with pytest.raises(ImproperlyConfigured) as excinfo:
        check_providers_configured()

    message = str(excinfo.value)
    assert "NOTIFIER_SMS_PROVIDERS names plivo_eu but the plivo SDK is not installed" in message
    assert "pip install 'notifier[sms]'" in message
    assert "twilio SDK" not in message  # twilio is installed: only the missing one is named


def test_fcm_without_firebase_admin_names_the_push_extra(no_credentials, without):
    no_credentials.NOTIFIER_FCM_CREDENTIALS_FILE = "/etc/notifier/fcm.json"
    use(no_credentials, push=["push"])
    without("firebase_admin", "pywebpush")

    with pytest.raises(ImproperlyConfigured) as excinfo:
        check_providers_configured()

    # Web Push is not configured, so its SDK is not asked for.
    assert str(excinfo.value) == (
        "NOTIFIER_PUSH_PROVIDERS names push but the firebase_admin SDK is not installed: "
        "pip install 'notifier[push]'"
    )


def test_web_push_without_pywebpush_names_the_push_extra(no_credentials, without):
    no_credentials.NOTIFIER_WEBPUSH_VAPID_PRIVATE_KEY = "a-key"
    no_credentials.NOTIFIER_WEBPUSH_VAPID_SUBJECT = "mailto:ops@example.com"
    use(no_credentials, push=["push"])
    without("firebase_admin", "pywebpush")

    with pytest.raises(ImproperlyConfigured, match="pywebpush SDK is not installed") as excinfo:
        check_providers_configured()

    assert "firebase_admin" not in str(excinfo.value)


def test_sandboxes_start_without_any_provider_sdk(no_credentials, without):
    without("twilio", "plivo", "firebase_admin", "pywebpush")

    check_providers_configured()


def test_a_process_configured_for_twilio_without_the_sdk_refuses_to_start(tmp_path):
    """The real start-up: django.setup() in a fresh interpreter where `import twilio` fails."""
    script = tmp_path / "start.py"
    script.write_text(
        "import sys\n"
        "class NoTwilio:\n"
        "    def find_spec(self, name, path=None, target=None):\n"
        "        if name == 'twilio' or name.startswith('twilio.'):\n"
        "            raise ModuleNotFoundError(name)\n"
        "sys.meta_path.insert(0, NoTwilio())\n"
        "import django\n"
        "django.setup()\n"
    )
    env = {
        **os.environ,
        "DJANGO_SETTINGS_MODULE": "notifier_site.settings",
        # The site is imported from the repository (it is not in the installed package).
        "PYTHONPATH": str(ROOT),
        "DJANGO_SECRET_KEY": "start-up-test",
        "NOTIFIER_SMS_PROVIDERS": "twilio",
        "TWILIO_ACCOUNT_SID": "AC123",
        "TWILIO_AUTH_TOKEN": "secret",
        "TWILIO_FROM_NUMBER": "+15005550006",
    }
    started = subprocess.run(
        [sys.executable, str(script)],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )

    assert started.returncode != 0
    assert (
        "ImproperlyConfigured: NOTIFIER_SMS_PROVIDERS names twilio but the twilio SDK is not "
        "installed: pip install 'notifier[sms]'"
    ) in started.stderr
