"""Recording events where they happen: the outbox rows and the signals of one write.

The writers of the core (notifier.services.transitions for delivery statuses,
notifier.services.messages for new messages, notifier.services.preferences for preferences,
consent and unsubscribes) call these inside their own transactions. Each call:

- writes the webhook events of its batch for the active endpoints subscribed to their types,
  in one INSERT ... SELECT (PostgreSQL) in the caller's transaction, so an event exists exactly
  when its change committed, and a broker that loses a task loses no event; and wakes the
  sender after commit;
- sends its signal after commit, once for the batch.

What nobody wants costs nothing: which endpoints want which type is read once per
NOTIFIER_WEBHOOK_ENDPOINTS_CACHE_S per process, a signal with no receiver is skipped, and the
changes of a batch are built only when someone wants them.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Collection, Iterable, Mapping, Sequence
from datetime import datetime
from functools import partial
from typing import Any

import redis
from django.db import connection, models, transaction
from django.dispatch import Signal
from django.utils import timezone

from notifier.db import insert_rows, table_name
from notifier.events_out import signals
from notifier.events_out.signals import DeliveryChange
from notifier.models import (
    Consent,
    Delivery,
    Message,
    Preference,
    Recipient,
    Unsubscribe,
    WebhookEndpoint,
    WebhookEvent,
    WebhookEventType,
)
from notifier.redis_client import state_client

log = logging.getLogger(__name__)
T = WebhookEventType

# The delivery statuses a webhook tells of, and the event type of each.
DELIVERY_EVENT_TYPES: dict[str, str] = {
    "sent": T.DELIVERY_SENT,
    "delivered": T.DELIVERY_DELIVERED,
    "failed": T.DELIVERY_FAILED,
    "opened": T.DELIVERY_OPENED,
    "clicked": T.DELIVERY_CLICKED,
    "read": T.DELIVERY_READ,
}

# What an endpoint may subscribe to (the admin's test event goes to one endpoint, asked or not).
SUBSCRIBABLE: tuple[str, ...] = tuple(t for t in T.values if t != T.TEST)

SEND_TASK = "notifier.webhooks_send"
WAKE_KEY = "notifier:webhooks:wake:{endpoint}"


# --- Who wants what ---------------------------------------------------------------------------

_cache_lock = threading.Lock()
_cache: tuple[float, dict[str, tuple[int, ...]]] | None = None


def endpoints_wanting(event_type: str) -> tuple[int, ...]:
    """The active endpoints subscribed to `event_type`, as this process last read them."""
    global _cache
    from django.conf import settings

    now = time.monotonic()
    cached = _cache
    if cached is None or cached[0] <= now:
        by_type: dict[str, list[int]] = {}
        for pk, types in WebhookEndpoint.objects.filter(active=True).values_list(
            "pk", "event_types"
        ):
            for name in types if isinstance(types, list) else []:
                by_type.setdefault(str(name), []).append(pk)
        frozen = {name: tuple(ids) for name, ids in by_type.items()}
        with _cache_lock:
            _cache = cached = (now + float(settings.NOTIFIER_WEBHOOK_ENDPOINTS_CACHE_S), frozen)
    return cached[1].get(event_type, ())


def endpoints_cache_clear(**_: object) -> None:
    """Forget the endpoints read (an endpoint saved in this process; tests)."""
    global _cache
    with _cache_lock:
        _cache = None


# --- After commit -----------------------------------------------------------------------------


def _send(signal: Signal, sender: type[models.Model], **kwargs: Any) -> None:
    for receiver, outcome in signal.send_robust(sender, **kwargs):
        if isinstance(outcome, Exception):
            log.error(
                "a receiver of %s raised: %r", receiver, outcome, exc_info=outcome, stack_info=False
            )


def signal_on_commit(signal: Signal, sender: type[models.Model], **kwargs: Any) -> None:
    transaction.on_commit(partial(_send, signal, sender, **kwargs), robust=True)


def sender_wake(endpoint_ids: Iterable[int]) -> None:
    """Publish a send task per endpoint, unless one is already on its way (a Redis key the
    task deletes when it starts): a campaign's hundred thousand sends, recorded one by one,
    wake each endpoint's sender once per NOTIFIER_WEBHOOK_BATCH_WAIT_S, not once per send. A
    lost task is made up for by the sweep (notifier.webhooks_sweep)."""
    from django.conf import settings

    wait = float(settings.NOTIFIER_WEBHOOK_BATCH_WAIT_S)
    client = state_client()
    for endpoint_id in endpoint_ids:
        if client is not None:
            try:
                # Expires on its own: a task lost with the broker does not keep others away.
                if not client.set(
                    WAKE_KEY.format(endpoint=endpoint_id), "1", nx=True, ex=int(wait) + 30
                ):
                    continue
            except redis.RedisError:
                log.warning("cannot reach Redis to wake webhook endpoint %s", endpoint_id)
        sender_publish(endpoint_id, countdown=wait)


def sender_publish(endpoint_id: int, *, countdown: float = 0.0) -> None:
    """One send task for the endpoint, on the webhooks queue. Never raises: the events are
    in PostgreSQL, and the sweep publishes again."""
    from celery import current_app

    from notifier.dispatch import PUBLISH_RETRY_POLICY
    from notifier.queues import WEBHOOKS_QUEUE

    try:
        current_app.send_task(
            SEND_TASK,
            args=(endpoint_id,),
            queue=WEBHOOKS_QUEUE,
            retry_policy=PUBLISH_RETRY_POLICY,
            countdown=countdown if countdown > 0 else None,
        )
    except Exception:
        log.exception("could not publish the webhook sender of endpoint %s", endpoint_id)


def sender_woken(endpoint_id: int) -> None:
    """The send task starts: the next event published wakes another one."""
    client = state_client()
    if client is not None:
        try:
            client.delete(WAKE_KEY.format(endpoint=endpoint_id))
        except redis.RedisError:
            log.warning("cannot reach Redis to clear the wake-up of endpoint %s", endpoint_id)


def _woken_on_commit(endpoint_ids: Collection[int]) -> None:
    if endpoint_ids:
        transaction.on_commit(partial(sender_wake, sorted(endpoint_ids)), robust=True)


# --- Writing outbox rows ----------------------------------------------------------------------

OUTBOX_COLUMNS = (
    "endpoint",
    "type",
    "at",
    "data",
    "state",
    "created_at",
    "next_attempt_at",
)


def _outbox_select(select: str, params: Sequence[Any]) -> set[int]:
    """INSERT the outbox rows a SELECT of (endpoint_id, type, at, data) makes; returns the
    endpoints that got any."""
    now = timezone.now()
    with connection.cursor() as cursor:
        cursor.execute(
            f"WITH written AS (INSERT INTO {table_name(WebhookEvent)} "
            "(endpoint_id, type, at, data, state, created_at, next_attempt_at, attempts, batch, "
            "last_error) "
            f"SELECT s.endpoint_id, s.type, s.at, s.data, 'pending', %s, %s, 0, '', '' "
            f"FROM ({select}) AS s RETURNING endpoint_id) "
            "SELECT DISTINCT endpoint_id FROM written",
            [now, now, *params],
        )
        return {row[0] for row in cursor.fetchall()}


def _outbox_rows(rows: Sequence[tuple[int, str, datetime, dict[str, Any]]]) -> set[int]:
    """INSERT outbox rows built here: (endpoint id, type, at, data)."""
    now = timezone.now()
    insert_rows(
        WebhookEvent,
        OUTBOX_COLUMNS,
        [(endpoint, kind, at, data, "pending", now, now) for endpoint, kind, at, data in rows],
    )
    return {row[0] for row in rows}


def _endpoint_join(types: str) -> str:
    """Active endpoints among those named (a parameter), subscribed to the type `types`."""
    return (
        f"JOIN {table_name(WebhookEndpoint)} AS e ON e.id = ANY(%s) AND e.active "
        f"AND e.event_types ? {types}"
    )


def _external_ids(user_ids: Iterable[Any]) -> dict[Any, str | None]:
    return dict(
        Recipient.objects.filter(user_id__in=set(user_ids)).values_list("user_id", "external_id")
    )


# --- Deliveries -------------------------------------------------------------------------------


def deliveries_wanted(statuses: Iterable[str]) -> bool:
    """Whether a receiver or an endpoint wants to hear of moves to any of `statuses`."""
    if signals.deliveries_changed.has_listeners(Delivery):
        return True
    return any(
        endpoints_wanting(DELIVERY_EVENT_TYPES[status])
        for status in set(statuses)
        if status in DELIVERY_EVENT_TYPES
    )


def deliveries_changed(
    statuses: Iterable[str], changes_of: Callable[[], Sequence[DeliveryChange]]
) -> None:
    """A write moved deliveries to `statuses`; `changes_of` names them (called only when a
    receiver or an endpoint wants them)."""
    listening = signals.deliveries_changed.has_listeners(Delivery)
    wanted = {
        status: endpoints_wanting(DELIVERY_EVENT_TYPES[status])
        for status in set(statuses)
        if status in DELIVERY_EVENT_TYPES
    }
    endpoints = {pk for ids in wanted.values() for pk in ids}
    if not (listening or endpoints):
        return
    changes = changes_of()
    if not changes:
        return
    if endpoints:
        told = [c for c in changes if wanted.get(c.status)]
        if told:
            _woken_on_commit(_deliveries_outbox(told, endpoints))
    if listening:
        signal_on_commit(signals.deliveries_changed, Delivery, changes=tuple(changes))


def delivery_data(
    *,
    delivery_id: int,
    message_id: int,
    channel: str,
    status: str,
    reason: str,
    notification_type: str,
    campaign_id: int | None,
    user: str,
    external_id: str | None,
) -> dict[str, Any]:
    """What a delivery.* event says (the README's "Events to your systems" documents it)."""
    return {
        "delivery_id": delivery_id,
        "message_id": message_id,
        "channel": channel,
        "status": status,
        "reason": reason,
        "notification_type": notification_type,
        "campaign_id": campaign_id,
        "user": user,
        "external_id": external_id,
    }


def _deliveries_outbox(changes: Sequence[DeliveryChange], endpoints: Collection[int]) -> set[int]:
    if connection.vendor == "postgresql":
        select = f"""
            SELECT e.id AS endpoint_id, 'delivery.' || c.status AS type, c.at AS at,
                jsonb_build_object(
                    'delivery_id', d.id, 'message_id', d.message_id, 'channel', d.channel,
                    'status', c.status, 'reason', c.reason, 'notification_type', m.type_id,
                    'campaign_id', m.campaign_id, 'user', d.user_id::text,
                    'external_id', r.external_id
                ) AS data
            FROM unnest(%s::bigint[], %s::text[], %s::text[], %s::timestamptz[])
                AS c(id, status, reason, at)
            JOIN {table_name(Delivery)} AS d ON d.id = c.id
            JOIN {table_name(Message)} AS m ON m.id = d.message_id
            LEFT JOIN {table_name(Recipient)} AS r ON r.user_id = d.user_id
            {_endpoint_join("('delivery.' || c.status)")}
        """
        return _outbox_select(
            select,
            [
                [c.delivery_id for c in changes],
                [str(c.status) for c in changes],
                [c.reason or "" for c in changes],
                [c.at for c in changes],
                sorted(endpoints),
            ],
        )
    found: dict[int, tuple[int, str, Any, str]] = {
        pk: (message_id, channel, user_id, type_key)
        for pk, message_id, channel, user_id, type_key in Delivery.objects.filter(
            pk__in=[c.delivery_id for c in changes]
        ).values_list("pk", "message_id", "channel", "user_id", "message__type_id")
    }
    campaigns = dict(
        Message.objects.filter(pk__in={v[0] for v in found.values()}).values_list(
            "pk", "campaign_id"
        )
    )
    external = _external_ids(v[2] for v in found.values())
    wanting = {name: set(endpoints_wanting(name)) & set(endpoints) for name in T.values}
    rows = []
    for change in changes:
        if change.delivery_id not in found:
            continue
        message_id, channel, user_id, type_key = found[change.delivery_id]
        kind = DELIVERY_EVENT_TYPES[str(change.status)]
        data = delivery_data(
            delivery_id=change.delivery_id,
            message_id=message_id,
            channel=channel,
            status=str(change.status),
            reason=change.reason or "",
            notification_type=type_key,
            campaign_id=campaigns.get(message_id),
            user=str(user_id),
            external_id=external.get(user_id),
        )
        rows += [(endpoint, kind, change.at, data) for endpoint in sorted(wanting[kind])]
    return _outbox_rows(rows)


# --- Messages ---------------------------------------------------------------------------------


def messages_wanted() -> bool:
    """Whether an endpoint wants message.created events (the signal needs no transaction)."""
    return bool(endpoints_wanting(T.MESSAGE_CREATED))


def messages_created(message_ids: Sequence[int]) -> None:
    """A write created these messages."""
    if not message_ids:
        return
    listening = signals.message_created.has_listeners(Message)
    endpoints = endpoints_wanting(T.MESSAGE_CREATED)
    if endpoints:
        _woken_on_commit(_messages_outbox(message_ids, endpoints))
    if listening:
        signal_on_commit(signals.message_created, Message, message_ids=tuple(message_ids))


def _messages_outbox(message_ids: Sequence[int], endpoints: Collection[int]) -> set[int]:
    if connection.vendor == "postgresql":
        select = f"""
            SELECT e.id AS endpoint_id, %s AS type, m.created_at AS at,
                jsonb_build_object(
                    'message_id', m.id, 'notification_type', m.type_id,
                    'idempotency_key', m.idempotency_key, 'campaign_id', m.campaign_id,
                    'user', m.user_id::text, 'external_id', r.external_id
                ) AS data
            FROM {table_name(Message)} AS m
            LEFT JOIN {table_name(Recipient)} AS r ON r.user_id = m.user_id
            {_endpoint_join("%s")}
            WHERE m.id = ANY(%s)
        """
        return _outbox_select(
            select,
            [str(T.MESSAGE_CREATED), sorted(endpoints), str(T.MESSAGE_CREATED), list(message_ids)],
        )
    found = list(
        Message.objects.filter(pk__in=list(message_ids)).values_list(
            "pk", "type_id", "idempotency_key", "campaign_id", "user_id", "created_at"
        )
    )
    external = _external_ids(row[4] for row in found)
    return _outbox_rows(
        [
            (
                endpoint,
                T.MESSAGE_CREATED,
                created_at,
                {
                    "message_id": pk,
                    "notification_type": type_key,
                    "idempotency_key": key,
                    "campaign_id": campaign_id,
                    "user": str(user_id),
                    "external_id": external.get(user_id),
                },
            )
            for pk, type_key, key, campaign_id, user_id, created_at in found
            for endpoint in sorted(endpoints)
        ]
    )


# --- One recipient: unsubscribes, consent, preferences ----------------------------------------


def _recipient_event(
    event_type: str, *, user_id: Any, at: datetime, data: Mapping[str, Any]
) -> None:
    endpoints = endpoints_wanting(event_type)
    if not endpoints:
        return
    active = WebhookEndpoint.objects.filter(pk__in=endpoints, active=True).values_list(
        "pk", flat=True
    )
    body = {
        "user": str(user_id),
        "external_id": _external_ids([user_id]).get(user_id),
        **data,
    }
    _woken_on_commit(_outbox_rows([(pk, event_type, at, body) for pk in sorted(active)]))


def recipient_unsubscribed(unsubscribe: Unsubscribe) -> None:
    """An unsubscribe changed something (its row is the record)."""
    fields = {
        "category": unsubscribe.category,
        "channel": unsubscribe.channel,
        "scope": unsubscribe.scope,
        "source": unsubscribe.source,
        "message_id": unsubscribe.message_id,
    }
    _recipient_event(
        T.RECIPIENT_UNSUBSCRIBED, user_id=unsubscribe.user_id, at=unsubscribe.at, data=fields
    )
    if signals.unsubscribed.has_listeners(Unsubscribe):
        signal_on_commit(signals.unsubscribed, Unsubscribe, user_id=unsubscribe.user_id, **fields)


def consent_changed(consent: Consent) -> None:
    """Consent was given or withdrawn (the appended record)."""
    fields = {
        "channel": consent.channel,
        "granted": consent.granted,
        "source": consent.source,
        "consent_id": consent.pk,
    }
    _recipient_event(T.CONSENT_CHANGED, user_id=consent.user_id, at=consent.at, data=fields)
    if signals.consent_changed.has_listeners(Consent):
        signal_on_commit(signals.consent_changed, Consent, user_id=consent.user_id, **fields)


def preferences_changed(
    *,
    user_id: Any,
    changes: Sequence[tuple[str, str, bool]],
    marketing_frequency: str | None,
) -> None:
    """A user's switches (category, channel, enabled) or marketing frequency changed."""
    _recipient_event(
        T.PREFERENCES_CHANGED,
        user_id=user_id,
        at=timezone.now(),
        data={
            "changes": [
                {"category": category, "channel": channel, "enabled": enabled}
                for category, channel, enabled in changes
            ],
            "marketing_frequency": marketing_frequency,
        },
    )
    if signals.preferences_changed.has_listeners(Preference):
        signal_on_commit(
            signals.preferences_changed,
            Preference,
            user_id=user_id,
            changes=tuple(changes),
            marketing_frequency=marketing_frequency,
        )
