"""Poison and bombs under real worker processes: the transactional lane keeps serving while they
are refused, and a message that keeps killing its worker is set aside while its batch-mates go
out.

The bombs are real: copy whose loops over `range` nest (10^10 iterations, minutes of CPU) for
one customer, sent with "send test to me", and transactional messages whose rows Python cannot
read (an expiry in the year 10000, a context nested a thousand deep), written with SQL past
notify(). The template sandbox's budget refuses such copy in milliseconds (the first test: the
lane's latency while it does); the second lifts that budget so a render runs until its worker
is killed (a SIGKILL of its process group), the layer behind the sandbox.
"""

from __future__ import annotations

import ast
import json
import time
import uuid
from typing import Any

import pytest
from django.db import connection, transaction

from campaigns.models import Segment, StepVariant, VariantTemplate
from campaigns.services.lifecycle import campaign_create
from campaigns.services.previews import variant_send_test
from notifier.api import notify, notify_many
from notifier.db import table_name
from notifier.models import Delivery, InboxItem, Message, NotificationType, PrepareRun, User
from notifier.queues import MAINTENANCE_QUEUE, Lane, lane_queues
from notifier.services.messages import NewMessage, messages_create
from notifier.status import DeliveryStatus, Reason
from tests.conftest import WorkerProcess, wait_until

pytestmark = [pytest.mark.integration, pytest.mark.django_db(transaction=True)]
S = DeliveryStatus

# For a customer named Bomb, 100,000 x 100,000 iterations of a loop: minutes of CPU for one
# render if nothing stops it. Anyone else gets "Hi": no check before sending can tell.
BOMB = (
    '{% if user.first_name == "Bomb" %}{% for i in range(100000) %}{% for j in range(100000) %}'
    "{% endfor %}{% endfor %}{% endif %}Hi"
)
YEAR_10000 = "9999-12-31 23:59:59-05:00"
# Nested deeper than any supported Python reads (3.11 and 3.12 stop near 1,000 levels, 3.13
# near 10,000) and within what PostgreSQL stores (about 14,000 with its default stack).
DEEP_CONTEXT = '{"order_number": ' + "[" * 12_000 + "]" * 12_000 + "}"
# The render refused by its soft time limit, or by the template sandbox's budget once it lands.
REFUSED = {"render_timeout", "render_failed"}  # Reason.RENDER_TIMEOUT, Reason.RENDER_FAILED


def people(prefix: str, count: int, **fields: Any) -> list[User]:
    User.objects.bulk_create(
        [
            User(
                username=f"{prefix}-{i}", email=f"{prefix}-{i}@example.com", password="!", **fields
            )
            for i in range(count)
        ]
    )
    return list(User.objects.filter(username__startswith=f"{prefix}-").order_by("pk"))


def send_test_row(variant: StepVariant, to_user: User) -> NewMessage:
    """What "send test to me" writes, in a batch of several (as the re-queue job may make)."""
    campaign = variant.step.campaign
    return NewMessage(
        user_id=to_user.pk,
        type_key=str(campaign.category_id),
        context=dict(campaign.variables),
        channels=["inapp"],
        lane=Lane.BULK,
        idempotency_key=f"test:{uuid.uuid4().hex}",
        campaign_id=campaign.pk,
        step_id=variant.step_id,
        variant_id=variant.pk,
        is_test=True,
    )


def variants_with_copy(bodies: list[str]) -> list[StepVariant]:
    """A campaign (in-app only) whose first step has one variant per body of copy."""
    creator = User.objects.create(username=f"marketer-{uuid.uuid4().hex[:6]}", is_staff=True)
    campaign = campaign_create(
        name="Double 11",
        category=NotificationType.objects.get(pk="promo.flash_sale"),
        created_by=creator,
        segment=Segment.objects.create(name=uuid.uuid4().hex),
        event_at=None,
        channels=["inapp"],
        variables={"headline": "50% off"},
    )
    step = campaign.steps.order_by("offset_minutes").first()
    assert step is not None
    variants = [step.variants.get()] + [
        StepVariant.objects.create(step=step, name=f"V{n}") for n in range(1, len(bodies))
    ]
    for variant, body in zip(variants, bodies, strict=True):
        VariantTemplate.objects.create(variant=variant, channel="inapp", title="Sale", body=body)
    return variants


def corrupt(message_id: int, column: str, value: str) -> None:
    cast = "::jsonb" if column == "context" else ""
    with connection.cursor() as cursor:
        cursor.execute(
            f"UPDATE notifier_message SET {column} = %s{cast} WHERE id = %s", [value, message_id]
        )


def running(workers: list[WorkerProcess], message_id: int) -> bool:
    """Whether a prepare task with this message in it is running on one of the workers."""
    names = [w.name for w in workers]
    active = workers[0].app.control.inspect(names, timeout=1.0).active() or {}
    for tasks in active.values():
        for task in tasks:
            args: Any = task.get("args")
            if isinstance(args, str):
                args = ast.literal_eval(args)
            if task.get("name") == "notifier.prepare_messages" and message_id in args[0]:
                return True
    return False


def run_under_way(message_id: int) -> bool:
    """Whether a prepare run with this message in it has recorded itself and is at work: its
    PrepareRun row exists and a live transaction holds it (notifier.services.quarantine). A
    worker killed before that point dies without a trace, and no crash is counted."""
    table = table_name(PrepareRun)
    with connection.cursor() as cursor:
        cursor.execute(
            f"SELECT id FROM {table} WHERE message_ids @> %s::jsonb", [json.dumps([message_id])]
        )
        runs = [row[0] for row in cursor.fetchall()]
        if not runs:
            return False
        with transaction.atomic():
            cursor.execute(
                f"SELECT id FROM {table} WHERE id = ANY(%s) FOR KEY SHARE SKIP LOCKED", [runs]
            )
            free = {row[0] for row in cursor.fetchall()}
    return any(run not in free for run in runs)


def inapp(message_id: int) -> tuple[str, str] | None:
    row = Delivery.objects.filter(message_id=message_id, channel="inapp").first()
    return (row.status, row.reason) if row else None


def refused(message_id: int) -> bool:
    outcome = inapp(message_id)
    return outcome is not None and outcome[0] == S.FAILED and outcome[1] in REFUSED


def test_the_transactional_lane_keeps_serving_while_bombs_and_poison_are_refused(
    rig, report_figure
):
    limits = {"NOTIFIER_PREPARE_SOFT_TIME_LIMIT_S": "3", "NOTIFIER_PREPARE_TIME_LIMIT_S": "8"}
    transactional = rig.worker(queues=lane_queues(Lane.TRANSACTIONAL), **limits)
    bulk = rig.worker(queues=[*lane_queues(Lane.BULK), MAINTENANCE_QUEUE], **limits)
    workers = [transactional, bulk]
    (marketer,) = people("bomb", 1, first_name="Bomb", is_staff=True)
    customer, *batch_users = people("lane", 6)
    (bomb,) = variants_with_copy([BOMB])

    # A marketer clicks "Send test to me" twice on copy that burns CPU (the attack pinned
    # both transactional worker processes this way)...
    bombs = [variant_send_test(variant=bomb, to_user=marketer).pk for _ in range(2)]
    # ...and a transactional batch carries two rows no worker can read.
    with transaction.atomic():
        batch = notify_many(
            batch_users, "account.password_changed", {"changed_at": "today"}, channels=["inapp"]
        ).message_ids
        corrupt(batch[1], "expires_at", YEAR_10000)
        corrupt(batch[2], "context", DEEP_CONTEXT)

    # While the bombs are being rendered (or once refused, if the sandbox's budget was quicker):
    wait_until(
        lambda: any(running(workers, pk) or refused(pk) for pk in bombs),
        timeout=60,
        interval=0.2,
        message="a bomb to be rendered",
    )
    sent_at = time.monotonic()
    receipt = notify(
        customer, "account.password_changed", {"changed_at": "now"}, channels=["inapp"]
    )
    wait_until(
        lambda: InboxItem.objects.filter(message_id=receipt.pk).exists(),
        timeout=60,
        interval=0.02,
        message="the password-changed notification to arrive",
    )
    latency = time.monotonic() - sent_at
    report_figure(f"password-changed notification in the inbox after {latency * 1000:.0f} ms")
    assert latency < 5.0, f"the transactional lane took {latency:.1f} s while bombs were refused"

    # The bombs are refused with a reason support can read, the poison rows fail alone with
    # theirs, and their batch-mates go out.
    wait_until(lambda: all(refused(pk) for pk in bombs), timeout=60, message="bombs refused")
    for pk, words in (
        (batch[1], "This message could not be read: its expiry date is out of range"),
        (batch[2], "This message could not be read: its context is nested too deeply to read"),
    ):
        wait_until(lambda pk=pk: inapp(pk) is not None, timeout=30, message="poison failed")
        assert inapp(pk) == (S.FAILED, Reason.UNREADABLE)
        assert Delivery.objects.get(message_id=pk).last_error == words
    mates = [batch[0], *batch[3:]]
    wait_until(
        lambda: all(inapp(pk) == (S.SENT, "") for pk in mates),
        timeout=30,
        message="the poison's batch-mates to be sent",
    )


def test_a_message_that_keeps_killing_its_worker_is_set_aside_and_its_batch_mates_go_out(rig):
    # Time limits far away: here the worker dies by SIGKILL (out of memory, an operator), twice.
    # The sandbox's render budget would refuse this copy in milliseconds; it is lifted out of
    # reach so the render runs long enough to be killed: whatever might get past the sandbox,
    # a message that kills its worker must still be set aside.
    env = {
        "NOTIFIER_PREPARE_SOFT_TIME_LIMIT_S": "300",
        "NOTIFIER_PREPARE_TIME_LIMIT_S": "360",
        "NOTIFIER_PREPARE_MAX_CRASHES": "2",
        "NOTIFIER_RENDER_MAX_STEPS": str(10**12),
        "NOTIFIER_RENDER_MAX_CHARS": str(10**12),
        "NOTIFIER_RENDER_MAX_SECONDS": "3600",
    }
    worker = rig.worker(concurrency=1, **env)
    users = people("poison", 4)
    (bomb_user,) = people("bomb", 1, first_name="Bomb")
    (variant,) = variants_with_copy([BOMB])
    rows = [send_test_row(variant, user) for user in users]
    rows.insert(2, send_test_row(variant, bomb_user))
    ids = [m.pk for m in messages_create(rows=rows).messages]  # one prepare task for all five
    poison, mates = ids[2], ids[:2] + ids[3:]

    kills = 0
    for _ in range(6):
        rig.drain(
            lambda w=worker: (
                (running([w], poison) and run_under_way(poison)) or inapp(poison) is not None
            ),
            timeout=120,
        )
        if inapp(poison) is not None:
            break
        worker.kill()  # mid-render, as the kernel's OOM killer would
        kills += 1
        worker = rig.worker(concurrency=1, **env)
    rig.drain(lambda: inapp(poison) is not None and all(inapp(pk) for pk in mates), timeout=120)

    assert kills == 2
    failed = Delivery.objects.get(message_id=poison)
    assert (failed.status, failed.reason) == (S.FAILED, Reason.PREPARE_CRASHED)
    assert failed.last_error.startswith("Preparing this message stopped its worker 2 times")
    rig.drain(lambda: all(inapp(pk) == (S.SENT, "") for pk in mates), timeout=60)
    assert not InboxItem.objects.filter(message_id=poison).exists()
    assert not Message.objects.filter(pk__in=ids, routed_at__isnull=True).exists()
