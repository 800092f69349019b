"""Celery tasks of outbound webhooks: thin, each calls one service of `sending`."""

from __future__ import annotations

from typing import Any

from celery import shared_task

from notifier.events_out.sending import webhooks_prune, webhooks_send, webhooks_sweep

# A run may die mid-request: acks_late re-delivers it, and the events' lease (not the broker)
# keeps a second run from posting what the first one holds.
SEND_OPTIONS: dict[str, Any] = {
    "acks_late": True,
    "reject_on_worker_lost": True,
    "ignore_result": True,
    "soft_time_limit": 45,
    "time_limit": 55,
}


@shared_task(name="notifier.webhooks_send", **SEND_OPTIONS)
def webhooks_send_task(endpoint_id: int) -> dict[str, int]:
    """Post an endpoint's due events (batches), for a bounded time."""
    report = webhooks_send(endpoint_id=endpoint_id)
    return {"requests": report.requests, "sent": report.sent, "given_up": report.given_up}


@shared_task(name="notifier.webhooks_sweep", ignore_result=True)
def webhooks_sweep_task() -> list[int]:
    """Beat: wake the senders of endpoints with due events (a lost task, a later retry)."""
    return webhooks_sweep()


@shared_task(name="notifier.webhooks_prune", ignore_result=True)
def webhooks_prune_task() -> int:
    """Beat, hourly: delete answered events and attempts past NOTIFIER_WEBHOOK_KEEP_DAYS."""
    return webhooks_prune()
