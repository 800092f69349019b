"""Large values (a rendered email, a caller's context, the sandbox's copy of a send) are stored
with LZ4 on PostgreSQL servers that have it (migration `notifier.0044`): PostgreSQL's default,
pglz, costs a fan-out of real-sized emails more than the rest of writing the delivery."""

from __future__ import annotations

import pytest
from django.db import connection

from channels.models import SandboxSend
from notifier.api import notify
from notifier.migrations._compression import lz4_available
from notifier.models import Delivery, InboxItem, Message
from notifier.services.deliveries import deliveries_deliver
from notifier.services.pipeline import messages_prepare
from tests.factories import UserFactory, order_context

pytestmark = pytest.mark.django_db

LZ4_COLUMNS = [
    (Delivery, "content"),
    (Message, "context"),
    (InboxItem, "body"),
    (SandboxSend, "payload"),
]


def stored_with(model: type, column: str, pk: int) -> str | None:
    """How PostgreSQL stored this row's value: 'lz4', 'pglz', or None (not compressed)."""
    with connection.cursor() as cursor:
        cursor.execute(
            f"SELECT pg_column_compression({connection.ops.quote_name(column)}) "
            f"FROM {connection.ops.quote_name(model._meta.db_table)} WHERE id = %s",
            [pk],
        )
        return cursor.fetchone()[0]


def test_this_server_has_lz4_and_the_large_value_columns_use_it():
    assert lz4_available(connection)  # PostgreSQL 14+ built with it, as Debian's is
    with connection.cursor() as cursor:
        for model, column in LZ4_COLUMNS:
            cursor.execute(
                "SELECT attcompression FROM pg_attribute "
                "WHERE attrelid = %s::regclass AND attname = %s",
                [model._meta.db_table, column],
            )
            assert cursor.fetchone() == ("l",), (model._meta.db_table, column)
    # Small values are not compressed at all; the default for every other column is left alone.
    with connection.cursor() as cursor:
        cursor.execute(
            "SELECT attcompression FROM pg_attribute WHERE attrelid = %s::regclass "
            "AND attname = 'last_error'",
            [Delivery._meta.db_table],
        )
        assert cursor.fetchone() == ("",)


def test_a_large_email_is_written_read_and_sent_through_lz4(published):
    # A carrier line of about 40 KB reaches the email's text and HTML (real marketing HTML is
    # tens of KB), the message's context and, when sent, the sandbox's ledger.
    carrier = " ".join(f"Depot-{i} hands over to" for i in range(2_000))
    message = notify(UserFactory(), "order.shipped", order_context(carrier=carrier))
    messages_prepare(message_ids=[message.pk])
    email = Delivery.objects.get(message=message, channel="email")
    assert carrier in email.content["html"] and carrier in email.content["body"]
    assert stored_with(Delivery, "content", email.pk) == "lz4"
    assert stored_with(Message, "context", message.pk) == "lz4"

    report = deliveries_deliver(delivery_ids=[email.pk])
    assert report.sent == 1
    send = SandboxSend.objects.get(delivery_id=email.pk)
    assert carrier in send.payload["content"]["html"]
    assert stored_with(SandboxSend, "payload", send.pk) == "lz4"
