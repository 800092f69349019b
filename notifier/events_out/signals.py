"""The signals Notifier sends after a change commits, for code in the same process.

Each is sent once per batch (one write of the pipeline), from `transaction.on_commit`, so a
receiver never sees a change that was rolled back, and with `send_robust`, so a receiver that
raises is logged and never undoes or stops the pipeline. Nothing is built for a signal nobody
listens to. Connect in your AppConfig.ready()::

    from notifier.events_out.signals import deliveries_changed

    def on_deliveries(sender, changes, **kwargs):
        for change in changes:  # DeliveryChange(delivery_id, status, reason, at)
            ...

    deliveries_changed.connect(on_deliveries, dispatch_uid="myapp-deliveries")
"""

from __future__ import annotations

from datetime import datetime
from typing import NamedTuple

from django.dispatch import Signal


class DeliveryChange(NamedTuple):
    """One delivery's new status (a plain tuple: a fan-out batch carries thousands)."""

    delivery_id: int
    status: str
    reason: str
    at: datetime


# sender=Message; message_ids: tuple[int, ...] (the messages one write created).
message_created = Signal()
# sender=Delivery; changes: tuple[DeliveryChange, ...] (one write's status changes: new
# deliveries in their first status, claims, sends, callbacks, engagement, cancellations).
deliveries_changed = Signal()
# sender=Unsubscribe; user_id, category, channel, scope ("this", "channel", "all"), source,
# message_id (the message whose link was used, or None).
unsubscribed = Signal()
# sender=Consent; user_id, channel, granted (bool), source, consent_id (the appended record).
consent_changed = Signal()
# sender=Preference; user_id, changes: tuple[tuple[category, channel, enabled], ...] (the
# switches that changed anything), marketing_frequency (the new one, or None if unchanged).
preferences_changed = Signal()

ALL_SIGNALS = (
    message_created,
    deliveries_changed,
    unsubscribed,
    consent_changed,
    preferences_changed,
)
