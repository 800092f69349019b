"""Retention on PostgreSQL: old finished messages are archived whole and deleted; recent,
in-flight, held and still-referenced ones stay; two runs at once neither collide nor fail."""

from __future__ import annotations

import gzip
import json
import threading
from datetime import timedelta
from pathlib import Path

import pytest
import time_machine
from django.core.exceptions import ImproperlyConfigured
from django.core.management import call_command
from django.db import connection, transaction
from django.utils import timezone

from campaigns.models import Campaign, CampaignStatus, Conversion
from notifier.api import notify
from notifier.models import Delivery, DeliveryEvent, InboxItem, Message
from notifier.periodic import BEAT_SCHEDULE
from notifier.services.deliveries import deliveries_deliver
from notifier.services.pipeline import messages_prepare
from notifier.services.retention import retention_run
from notifier.status import DeliveryStatus
from notifier.tasks import retention_task
from tests.factories import UserFactory, order_context

pytestmark = pytest.mark.django_db
DAYS = 180
OLD = timedelta(days=400)


def make_message(user, *, deliver: bool = True, channels=("inapp", "email")) -> Message:
    """A message through the real pipeline: prepared (routed), and delivered unless told not."""
    message = notify(user, "order.shipped", order_context(), channels=list(channels))
    messages_prepare(message_ids=[message.pk])
    if deliver:
        ids = list(Delivery.objects.filter(message=message).values_list("pk", flat=True))
        deliveries_deliver(delivery_ids=ids)
    return message


def made_long_ago(user, **kwargs) -> Message:
    with time_machine.travel(timezone.now() - OLD, tick=False):
        return make_message(user, **kwargs)


def archived(directory: Path) -> list[dict]:
    lines = []
    for path in sorted(directory.glob("*.jsonl.gz")):
        with gzip.open(path, "rt") as handle:
            lines += [json.loads(line) for line in handle]
    return lines


def exists(message: Message) -> bool:
    return Message.objects.filter(pk=message.pk).exists()


@pytest.fixture
def archive_dir(tmp_path) -> Path:
    return tmp_path / "archive"


def test_an_old_finished_message_is_archived_whole_then_deleted(published, archive_dir):
    old = made_long_ago(UserFactory())
    deliveries = {d.channel: d for d in Delivery.objects.filter(message=old)}
    assert {d.status for d in deliveries.values()} == {DeliveryStatus.SENT}
    event_ids = set(
        DeliveryEvent.objects.filter(delivery__message=old).values_list("pk", flat=True)
    )
    inbox_title = InboxItem.objects.get(message=old).title

    report = retention_run(days=DAYS, archive_dir=archive_dir)

    assert (report.messages, report.deliveries, report.events, report.inbox_items) == (
        1,
        2,
        len(event_ids),
        1,
    )
    assert report.finished
    assert not exists(old)
    assert not Delivery.objects.filter(pk__in=[d.pk for d in deliveries.values()]).exists()
    assert not DeliveryEvent.objects.filter(pk__in=event_ids).exists()
    assert not InboxItem.objects.filter(message_id=old.pk).exists()

    [line] = archived(archive_dir)
    assert line["format"] == 1
    assert (line["message"]["id"], line["message"]["type_id"]) == (old.pk, "order.shipped")
    assert line["message"]["context"]["order_number"] == "A1001"
    by_channel = {d["channel"]: d for d in line["deliveries"]}
    assert set(by_channel) == {"inapp", "email"}
    assert by_channel["email"]["status"] == "sent"
    assert by_channel["email"]["inbox_item"] is None
    assert by_channel["inapp"]["inbox_item"]["title"] == inbox_title
    assert {e["id"] for d in line["deliveries"] for e in d["events"]} == event_ids
    assert all(
        e["delivery_id"] == d["id"] for d in line["deliveries"] for e in d["events"]
    )  # events travel with their own delivery
    assert (archive_dir / Path(report.files[0]).name).stat().st_mode & 0o777 == 0o600


def test_recent_in_flight_held_and_unrouted_messages_are_kept(published, archive_dir):
    user = UserFactory()
    queued = made_long_ago(user, deliver=False)  # routed, its deliveries still queued
    held = made_long_ago(user, deliver=False)
    Delivery.objects.filter(message=held).update(status=DeliveryStatus.HELD)
    half_sent = made_long_ago(user)  # one delivery sent, the other back in the queue
    Delivery.objects.filter(message=half_sent, channel="email").update(status=DeliveryStatus.QUEUED)
    with time_machine.travel(timezone.now() - OLD, tick=False):
        unrouted = notify(user, "order.shipped", order_context(), channels=["email"])
    gone = made_long_ago(user)
    # Made last, as in production: ids grow with created_at, which the cutoff search relies on.
    recent = make_message(user)

    report = retention_run(days=DAYS, archive_dir=archive_dir)

    assert report.messages == 1
    assert not exists(gone)
    for kept in (recent, queued, held, half_sent, unrouted):
        assert exists(kept)
    assert Delivery.objects.filter(message=half_sent).count() == 2
    assert [line["message"]["id"] for line in archived(archive_dir)] == [gone.pk]


def test_an_old_message_whose_delivery_changed_lately_is_kept(published, archive_dir):
    old = made_long_ago(UserFactory())
    # A late click: the delivery moved within the retention period.
    Delivery.objects.filter(message=old, channel="email").update(
        status=DeliveryStatus.CLICKED, updated_at=timezone.now() - timedelta(days=3)
    )
    assert retention_run(days=DAYS, archive_dir=archive_dir).messages == 0
    assert exists(old)


def test_live_campaigns_and_conversions_keep_their_messages(published, archive_dir):
    user = UserFactory()
    campaign = Campaign.objects.create(name="Evergreen", status=CampaignStatus.RUNNING)
    of_live_campaign = made_long_ago(user)
    Message.objects.filter(pk=of_live_campaign.pk).update(campaign=campaign)
    converted = made_long_ago(user)
    Conversion.objects.create(
        user=user, occurred_at=timezone.now() - OLD, reference="order:1", message=converted
    )

    assert retention_run(days=DAYS, archive_dir=archive_dir).messages == 0
    assert exists(of_live_campaign) and exists(converted)

    Campaign.objects.filter(pk=campaign.pk).update(status=CampaignStatus.DONE)
    assert retention_run(days=DAYS, archive_dir=archive_dir).messages == 1
    assert not exists(of_live_campaign)
    assert exists(converted)


def test_dry_run_counts_and_writes_nothing(published, archive_dir):
    old = made_long_ago(UserFactory())
    events = DeliveryEvent.objects.filter(delivery__message=old).count()

    report = retention_run(days=DAYS, archive_dir=archive_dir, dry_run=True)

    assert (report.messages, report.deliveries, report.events, report.inbox_items) == (
        1,
        2,
        events,
        1,
    )
    assert report.summary().startswith("would archive 1 messages, 2 deliveries")
    assert exists(old)
    assert not archive_dir.exists()


def test_off_at_zero_days_and_refused_below_the_minimum(published, archive_dir, settings):
    old = made_long_ago(UserFactory())
    settings.NOTIFIER_RETENTION_DAYS = 0
    report = retention_run(archive_dir=archive_dir)
    assert (report.cutoff, report.messages) == (None, 0)
    assert exists(old)
    with pytest.raises(ImproperlyConfigured, match="keep at least 30 days"):
        retention_run(days=7, archive_dir=archive_dir)


def test_batches_each_have_a_file_and_a_spent_budget_stops_after_one(published, archive_dir):
    user = UserFactory()
    old = [made_long_ago(user, channels=("email",)) for _ in range(5)]

    first = retention_run(days=DAYS, archive_dir=archive_dir, batch_size=2, budget_s=0)
    assert (first.batches, first.messages, first.finished) == (1, 2, False)
    assert [m.pk for m in old if not exists(m)] == [m.pk for m in old[:2]]

    rest = retention_run(days=DAYS, archive_dir=archive_dir, batch_size=2)
    assert (rest.batches, rest.messages, rest.finished) == (2, 3, True)
    assert len(list(archive_dir.glob("*.jsonl.gz"))) == 3
    assert sorted(line["message"]["id"] for line in archived(archive_dir)) == [m.pk for m in old]
    # Nothing left: a third run is a no-op.
    assert retention_run(days=DAYS, archive_dir=archive_dir, batch_size=2).messages == 0


@pytest.mark.django_db(transaction=True)
def test_a_batch_locked_by_another_run_is_skipped_not_waited_for(published, archive_dir):
    user = UserFactory()
    locked, free = made_long_ago(user), made_long_ago(user)
    holding, release = threading.Event(), threading.Event()

    def other_run_holds_a_lock() -> None:
        try:
            with transaction.atomic():
                list(Message.objects.select_for_update().filter(pk=locked.pk))
                holding.set()
                release.wait(timeout=30)
        finally:
            connection.close()

    thread = threading.Thread(target=other_run_holds_a_lock)
    thread.start()
    try:
        assert holding.wait(timeout=10)
        report = retention_run(days=DAYS, archive_dir=archive_dir)
        assert release.is_set() is False  # we did not wait for the lock to go
    finally:
        release.set()
        thread.join(timeout=30)
    assert report.messages == 1
    assert exists(locked) and not exists(free)


@pytest.mark.django_db(transaction=True)
def test_two_runs_at_once_archive_each_message_exactly_once(published, archive_dir):
    user = UserFactory()
    old = [made_long_ago(user, channels=("email",)) for _ in range(40)]
    start = threading.Barrier(2)
    reports, errors = [], []

    def run() -> None:
        try:
            start.wait(timeout=10)
            reports.append(retention_run(days=DAYS, archive_dir=archive_dir, batch_size=3))
        except Exception as exc:  # collected and asserted below
            errors.append(exc)
        finally:
            connection.close()

    threads = [threading.Thread(target=run) for _ in range(2)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=120)

    assert errors == []
    assert sum(r.messages for r in reports) == 40
    ids = [line["message"]["id"] for line in archived(archive_dir)]
    assert sorted(ids) == sorted(m.pk for m in old)  # each once: none twice, none missing
    assert not Message.objects.filter(pk__in=[m.pk for m in old]).exists()


def test_the_command_runs_it_by_hand(published, archive_dir, capsys):
    old = made_long_ago(UserFactory())
    call_command("retention", "--dry-run", "--days", str(DAYS), "--archive-dir", str(archive_dir))
    assert "would archive 1 messages" in capsys.readouterr().out
    assert exists(old)
    call_command("retention", "--days", str(DAYS), "--archive-dir", str(archive_dir))
    out = capsys.readouterr().out
    assert out.startswith("archived and deleted 1 messages, 2 deliveries")
    assert str(archive_dir) in out
    assert not exists(old)


def test_it_runs_nightly_on_the_maintenance_queue():
    job = BEAT_SCHEDULE["delivery-log-retention"]
    assert job["task"] == "notifier.retention"
    assert job["options"]["queue"] == "maintenance"
    assert (job["schedule"].hour, job["schedule"].minute) == ({2}, {45})


def test_the_beat_task_runs_the_service_with_the_settings(published, tmp_path, settings):
    old = made_long_ago(UserFactory())
    settings.NOTIFIER_RETENTION_DAYS = DAYS
    settings.NOTIFIER_ARCHIVE_DIR = tmp_path
    result = retention_task.run()
    assert (result["messages"], result["deliveries"]) == (1, 2)
    [path] = result["files"]
    assert path.startswith(str(tmp_path))
    assert not exists(old)


def test_an_old_message_python_cannot_read_is_archived_as_stored_text(published, archive_dir):
    """An expiry past the year 9999 (what notify() once let in) made every nightly run fail."""
    unreadable, fine = made_long_ago(UserFactory()), made_long_ago(UserFactory())
    with connection.cursor() as cursor:
        cursor.execute(
            "UPDATE notifier_message SET expires_at = '9999-12-31 23:59:59-05:00' WHERE id = %s",
            [unreadable.pk],
        )

    report = retention_run(days=DAYS, archive_dir=archive_dir)

    assert report.messages == 2
    assert not exists(unreadable) and not exists(fine)
    lines = {line["message"]["id"]: line["message"] for line in archived(archive_dir)}
    assert lines[unreadable.pk]["expires_at"].startswith("10000-01-01")
    assert json.loads(lines[unreadable.pk]["context"]) == order_context()  # the stored text
    assert lines[fine.pk]["context"] == order_context()
