"""Private and internal addresses are refused (NOTIFIER_WEBHOOK_ALLOW_PRIVATE_NETWORKS off):
literal or resolved, when an endpoint is saved and before every request; a refused request
disables its endpoint with an alert and keeps its events; the connection goes to the address
that was checked, with the name in the Host header and in TLS, never to a second lookup."""

from __future__ import annotations

import datetime as dt
import logging
import re
import socket
import ssl
from collections.abc import Iterator
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID
from django.urls import reverse

from notifier.events_out import record, targets
from notifier.events_out.sending import (
    InvalidEndpoint,
    endpoint_create,
    endpoint_enable,
    webhooks_send,
)
from notifier.models import WebhookAttempt, WebhookEndpoint, WebhookEvent
from tests.notifier.events_out.receiver import Receiver, receiver_running
from tests.notifier.events_out.test_sending import events_for

pytestmark = pytest.mark.django_db(transaction=True)

PUBLIC = "93.184.215.14"  # never connected to: only ever the answer of a faked lookup
NAME = "hooks.example.test"


@pytest.fixture
def private_refused(settings) -> None:
    settings.NOTIFIER_WEBHOOK_ALLOW_PRIVATE_NETWORKS = False


@pytest.fixture
def woken(monkeypatch) -> list[tuple[int, float]]:
    published: list[tuple[int, float]] = []
    monkeypatch.setattr(record, "state_client", lambda: None)
    monkeypatch.setattr(
        record,
        "sender_publish",
        lambda endpoint_id, countdown=0.0: published.append((endpoint_id, countdown)),
    )
    return published


@pytest.fixture
def dns(monkeypatch) -> dict[str, list[str]]:
    """A fake resolver for names under example.test (what the test says each resolves to);
    every other host goes to the real one. `dns["asked"]` lists the names looked up."""
    answers: dict[str, list[str]] = {"asked": []}
    real = targets.resolve

    def resolve(host: str, port: int) -> list[str]:
        if not host.endswith(".example.test"):
            return real(host, port)
        answers["asked"].append(host)
        if host not in answers:
            raise socket.gaierror(socket.EAI_NONAME, "Name or service not known")
        return list(answers[host])

    monkeypatch.setattr(targets, "resolve", resolve)
    return answers


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    with receiver_running(Receiver()) as running:
        yield running


def endpoint_at(url: str, receiver: Receiver | None = None) -> WebhookEndpoint:
    made = endpoint_create(name="crm", url=url, event_types=["delivery.sent"])
    if receiver is not None:
        receiver.secret = made.secret
    return made


# --- At save ------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("url", "why"),
    [
        ("http://127.0.0.1:8080/hooks", "127.0.0.1 is a loopback address"),
        ("https://10.20.30.40/hooks", "10.20.30.40 is a private address"),
        ("http://192.168.1.10/hooks", "192.168.1.10 is a private address"),
        ("http://169.254.169.254/latest/meta-data/", "169.254.169.254 is a link-local address"),
        ("http://[::1]:8080/hooks", "::1 is a loopback address"),
        ("http://[fd00::5]/hooks", "fd00::5 is a private address"),
        ("http://[::ffff:127.0.0.1]/hooks", "carries 127.0.0.1, a loopback address"),
        ("http://0.0.0.0:8080/hooks", "0.0.0.0 is an unspecified address"),
        ("http://localhost:8080/hooks", "localhost resolves to 127.0.0.1"),
        ("http://2130706433/hooks", "resolves to 127.0.0.1"),  # 127.0.0.1 written as a number
    ],
)
def test_a_private_address_is_refused_when_the_endpoint_is_saved(private_refused, url, why):
    with pytest.raises(InvalidEndpoint, match="NOTIFIER_WEBHOOK_ALLOW_PRIVATE_NETWORKS") as info:
        endpoint_at(url)
    assert why in str(info.value)
    assert not WebhookEndpoint.objects.exists()


def test_a_name_is_refused_if_any_of_its_addresses_is_private(private_refused, dns):
    dns[NAME] = [PUBLIC, "10.0.0.7"]
    why = f"{NAME} resolves to 10.0.0.7: 10.0.0.7 is a private address"
    with pytest.raises(InvalidEndpoint, match=re.escape(why)):
        endpoint_at(f"https://{NAME}/hooks")


def test_a_public_name_or_one_that_does_not_resolve_yet_is_accepted(private_refused, dns):
    dns["public.example.test"] = [PUBLIC]
    endpoint_at("https://public.example.test/hooks")
    # Not in DNS yet (a receiver being set up): accepted, and checked before every request.
    endpoint_at(f"https://{NAME}/hooks")
    assert WebhookEndpoint.objects.count() == 2


def test_with_private_networks_allowed_an_internal_receiver_is_accepted(settings):
    settings.NOTIFIER_WEBHOOK_ALLOW_PRIVATE_NETWORKS = True
    endpoint_at("http://10.20.30.40/hooks")
    endpoint_at("http://localhost:8080/hooks")
    assert WebhookEndpoint.objects.count() == 2


@pytest.mark.django_db
def test_the_admin_form_says_why_it_refuses_an_internal_address(admin_client, private_refused):
    response = admin_client.post(
        reverse("admin:notifier_webhookendpoint_add"),
        {
            "name": "CRM",
            "url": "http://169.254.169.254/latest/meta-data/",
            "event_types": ["delivery.sent"],
            "max_batch": 100,
        },
    )
    assert response.status_code == 200 and not WebhookEndpoint.objects.exists()
    page = response.content.decode()
    assert "169.254.169.254 is a link-local address" in page
    assert "NOTIFIER_WEBHOOK_ALLOW_PRIVATE_NETWORKS=true" in page


# --- Before every request -----------------------------------------------------------------------


def test_a_refused_request_disables_the_endpoint_with_an_alert_and_keeps_its_events(
    receiver, woken, settings, caplog
):
    endpoint = endpoint_at(receiver.url, receiver)  # saved while allowed
    events = events_for(endpoint, 3)
    settings.NOTIFIER_WEBHOOK_ALLOW_PRIVATE_NETWORKS = False
    with caplog.at_level(logging.WARNING, logger="notifier.events_out.sending"):
        report = webhooks_send(endpoint_id=endpoint.pk)

    assert (report.requests, report.sent, report.failed_requests) == (1, 0, 1)
    assert report.disabled and report.given_up == 0
    assert receiver.hosts == []  # no connection was made
    attempt = WebhookAttempt.objects.get()
    assert (attempt.ok, attempt.status_code, attempt.events) == (False, None, 3)
    assert attempt.error.startswith("refused: 127.0.0.1 is a loopback address")
    endpoint.refresh_from_db()
    assert not endpoint.active and endpoint.disabled_at is not None
    assert endpoint.disabled_reason.startswith("refused to call it: 127.0.0.1 is a loopback")
    assert endpoint.disabled_reason.endswith("fix its URL, then re-enable it")
    [alert] = [r for r in caplog.records if getattr(r, "alert", "") == "webhook_endpoint_disabled"]
    assert "127.0.0.1 is a loopback address" in alert.getMessage()
    # Not retried, not given up: the events wait for an Admin, as for any disabled endpoint.
    assert woken == []
    rows = WebhookEvent.objects.filter(pk__in=[e.pk for e in events])
    assert set(rows.values_list("state", "attempts", "claimed_until")) == {("pending", 1, None)}
    assert webhooks_send(endpoint_id=endpoint.pk).requests == 0

    # Re-enabling is refused while the address still is; once allowed, what waited goes out.
    with pytest.raises(InvalidEndpoint, match=re.escape("127.0.0.1 is a loopback address")):
        endpoint_enable(endpoint=endpoint)
    settings.NOTIFIER_WEBHOOK_ALLOW_PRIVATE_NETWORKS = True
    assert endpoint_enable(endpoint=endpoint)
    assert webhooks_send(endpoint_id=endpoint.pk).sent == 3
    assert sorted(e["id"] for e in receiver.events()) == sorted(e.event_id for e in events)


def test_a_name_that_moves_to_a_private_address_is_refused_before_the_request(
    receiver, woken, private_refused, dns
):
    port = receiver.url.split(":")[2].split("/")[0]
    dns[NAME] = [PUBLIC]
    endpoint = endpoint_at(f"http://{NAME}:{port}/hooks/notifier", receiver)  # public at save
    events_for(endpoint, 1)
    dns[NAME] = ["127.0.0.1"]  # then the name points inside
    webhooks_send(endpoint_id=endpoint.pk)
    assert receiver.hosts == []
    error = WebhookAttempt.objects.get().error
    assert error.startswith(f"refused: {NAME} resolves to 127.0.0.1: 127.0.0.1 is a loopback")
    assert not WebhookEndpoint.objects.get().active


def test_a_name_that_does_not_resolve_is_an_ordinary_failure_retried(woken, private_refused, dns):
    endpoint = endpoint_at(f"https://{NAME}/hooks")  # not in DNS: accepted at save
    events_for(endpoint, 1)
    report = webhooks_send(endpoint_id=endpoint.pk)
    assert report.failed_requests == 1 and not report.disabled
    assert "gaierror" in WebhookAttempt.objects.get().error
    assert WebhookEndpoint.objects.get().active
    assert [endpoint_id for endpoint_id, _ in woken] == [endpoint.pk]  # the retry is published


def test_the_request_goes_to_the_checked_address_with_the_name_as_host(
    receiver, woken, settings, dns, monkeypatch
):
    """Resolved once, by the check; the socket is opened to that address, so a DNS answer that
    changes after the check (rebinding) is never used."""
    settings.NOTIFIER_WEBHOOK_ALLOW_PRIVATE_NETWORKS = True  # the receiver is on loopback
    port = receiver.url.split(":")[2].split("/")[0]
    dns[NAME] = ["127.0.0.1"]
    endpoint = endpoint_at(f"http://{NAME}:{port}/hooks/notifier", receiver)
    events_for(endpoint, 2)
    looked_up: list[str] = []
    real_getaddrinfo = socket.getaddrinfo

    def getaddrinfo(host, *args, **kwargs):
        looked_up.append(host)
        return real_getaddrinfo(host, *args, **kwargs)

    monkeypatch.setattr(socket, "getaddrinfo", getaddrinfo)
    dns["asked"].clear()
    report = webhooks_send(endpoint_id=endpoint.pk)
    assert report.sent == 2 and receiver.refused == []
    assert receiver.hosts == [f"{NAME}:{port}"]
    assert dns["asked"] == [NAME]  # one lookup, the checked one
    assert NAME not in looked_up  # the connection never asked for the name again


def self_signed(tmp_path: Path, name: str) -> tuple[Path, Path]:
    key = ec.generate_private_key(ec.SECP256R1())
    subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name)])
    now = dt.datetime.now(dt.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(minutes=5))
        .not_valid_after(now + dt.timedelta(hours=1))
        .add_extension(x509.SubjectAlternativeName([x509.DNSName(name)]), critical=False)
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .sign(key, hashes.SHA256())
    )
    cert_path, key_path = tmp_path / "cert.pem", tmp_path / "key.pem"
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_path.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    return cert_path, key_path


def test_https_to_the_checked_address_sends_the_name_for_sni_and_the_certificate(
    woken, settings, dns, monkeypatch, tmp_path
):
    settings.NOTIFIER_WEBHOOK_ALLOW_PRIVATE_NETWORKS = True
    cert, key = self_signed(tmp_path, NAME)
    server_names: list[str | None] = []
    tls = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    tls.load_cert_chain(cert, key)
    tls.sni_callback = lambda sock, server_name, context: server_names.append(server_name)
    # The sender trusts the receiver's certificate, as it would a public CA's.
    monkeypatch.setenv("SSL_CERT_FILE", str(cert))
    with receiver_running(Receiver(), tls=tls, host=NAME) as receiver:
        dns[NAME] = ["127.0.0.1"]
        endpoint = endpoint_at(receiver.url, receiver)
        events_for(endpoint, 1)
        report = webhooks_send(endpoint_id=endpoint.pk)
    assert report.sent == 1, WebhookAttempt.objects.values_list("error", flat=True)
    assert server_names == [NAME]
    assert receiver.hosts == [f"{NAME}:{receiver.url.split(':')[2].split('/')[0]}"]
