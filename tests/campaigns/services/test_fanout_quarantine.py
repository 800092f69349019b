"""A campaign fan-out batch never dies whole again and again: a batch whose run died (or ran
out of time rendering) hands each message to the pipeline alone, where the one that kills its
worker is set aside; a customer whose own row cannot be read gets a failed message with the
reason; copy that cannot even compile fails its messages, not the batch.

In-process, as the other service tests: WorkerDied plays the worker killed mid-batch, and a
died task runs again as the broker would re-deliver it.
"""

from __future__ import annotations

import uuid
from datetime import timedelta

import pytest
from celery.exceptions import SoftTimeLimitExceeded
from django.db import connection
from django.utils import timezone

from campaigns import hooks as campaign_hooks
from campaigns.models import (
    Campaign,
    CampaignStatus,
    CampaignStep,
    Segment,
    StepStatus,
    VariantTemplate,
)
from campaigns.services import fanout
from campaigns.services.definitions import campaign_definition
from campaigns.services.lifecycle import campaign_create
from notifier.models import Delivery, Message, NotificationType, User, recipient_ids_of
from notifier.rendering import RenderError
from notifier.status import DeliveryStatus, Reason
from notifier.tasks import prepare_messages
from tests.factories import UserFactory

pytestmark = pytest.mark.django_db
S = DeliveryStatus
POISON = "Poison"


class WorkerDied(BaseException):
    """The worker process running the task was killed (SIGKILL, out of memory, hard limit)."""


@pytest.fixture
def step(roles):
    """A running campaign's first step, with in-app copy that greets the user by name."""
    marketer = UserFactory(username=f"marketer-{uuid.uuid4().hex[:6]}", is_staff=True)
    campaign = campaign_create(
        name="Double 11",
        category=NotificationType.objects.get(pk="promo.flash_sale"),
        created_by=marketer,
        segment=Segment.objects.create(name=uuid.uuid4().hex),
        event_at=timezone.now() + timedelta(days=3, hours=-1),  # its first step: an hour ago
        channels=["inapp"],
        variables={"headline": "50% off"},
    )
    step = campaign.steps.order_by("offset_minutes").first()
    for variant in step.variants.all():
        VariantTemplate.objects.create(
            variant=variant,
            channel="inapp",
            title="{{ headline }}",
            body="Hi {{ user.first_name }}",
        )
    approve_as_it_is(campaign.pk)
    CampaignStep.objects.filter(pk=step.pk).update(status=StepStatus.RUNNING, batches_total=1)
    return CampaignStep.objects.get(pk=step.pk)


def approve_as_it_is(campaign_id: int) -> None:
    """Running, with an approval that covers the copy as it is now (approval is not under test
    here; the fan-out refuses a campaign that differs from what was approved)."""
    Campaign.objects.filter(pk=campaign_id).update(
        status=CampaignStatus.RUNNING, approved_definition=campaign_definition(campaign_id)
    )


@pytest.fixture
def users() -> list[User]:
    return [*UserFactory.create_batch(3, first_name="Ann"), UserFactory(first_name=POISON)]


def render_for(monkeypatch, poison):
    """Rendering the copy for the user named Poison does `poison()`."""
    real = campaign_hooks.render_variant

    def render_variant(variant_id, channel, context, locale, **kwargs):
        if context["user"]["first_name"] == POISON:
            poison()
        return real(variant_id, channel, context, locale, **kwargs)

    monkeypatch.setattr(campaign_hooks, "render_variant", render_variant)


def messages_of(step, users) -> dict[int, Message]:
    return {m.user_id: m for m in Message.objects.filter(step=step, user__in=users)}


def inapp(message: Message) -> tuple[str, str]:
    delivery = Delivery.objects.get(message=message, channel="inapp")
    return delivery.status, delivery.reason


def run_prepare_tasks(published, *, max_runs: int = 30) -> int:
    """Run the prepare tasks published so far (and those they publish), re-running one whose
    worker died; returns how many died."""
    queue, deaths = list(published.prepare), 0
    published.prepare.clear()
    for _ in range(max_runs):
        if not queue:
            return deaths
        batch = queue.pop(0)
        try:
            prepare_messages(batch)
        except WorkerDied:
            deaths += 1
            queue.append(batch)
        queue += published.prepare
        published.prepare.clear()
    raise AssertionError(f"still running after {max_runs} runs: never settles")


def run_batch_until_it_stops_dying(step, users, *, max_runs: int = 10) -> int:
    for deaths in range(max_runs):
        try:
            fanout.step_fanout_batch(
                step_id=step.pk, recipient_ids=recipient_ids_of(u.pk for u in users), walk_round=0
            )
        except WorkerDied:
            continue
        return deaths
    raise AssertionError(f"the batch died {max_runs} times in a row: it never gets past")


def test_a_batch_whose_run_died_hands_each_message_to_the_pipeline_alone(
    step, users, published, monkeypatch, django_capture_on_commit_callbacks
):
    def die():
        raise WorkerDied

    render_for(monkeypatch, die)
    with django_capture_on_commit_callbacks(execute=True):
        deaths = run_batch_until_it_stops_dying(step, users)
    assert deaths == 1  # the second run did not render: it wrote the messages unrouted
    written = messages_of(step, users)
    assert len(written) == 4
    assert all(m.routed_at is None for m in written.values())
    assert sorted(published.prepare) == sorted([m.pk] for m in written.values())
    # The batch counts once towards closing the step, and its attempt row is gone.
    assert CampaignStep.objects.get(pk=step.pk).batches_done == 1
    from campaigns.models import FanoutAttempt  # here: the model is new with the fix

    assert not FanoutAttempt.objects.filter(step=step).exists()

    # Each message then in its own prepare task: the poison kills its own worker until it is
    # set aside; everyone else's goes out.
    run_prepare_tasks(published)
    poison = written.pop(users[-1].pk)
    assert inapp(Message.objects.get(pk=poison.pk)) == (S.FAILED, Reason.PREPARE_CRASHED)
    assert {inapp(m) for m in written.values()} == {(S.SENT, "")}  # went out as routed


def out_of_time():
    """What Celery's soft time limit looks like through the template engine: raised inside the
    render, reported as the engine's own error."""
    try:
        raise SoftTimeLimitExceeded
    except SoftTimeLimitExceeded as exc:
        raise RenderError("variant 1 inapp body: SoftTimeLimitExceeded") from exc


def test_the_soft_time_limit_mid_batch_blames_nobody_and_each_message_goes_on_alone(
    step, users, published, monkeypatch, django_capture_on_commit_callbacks
):
    """The limit is the batch's: the message rendering when it strikes may have had the bad
    luck to come last. Nobody fails; each message is prepared in a task of its own."""
    render_for(monkeypatch, out_of_time)
    with django_capture_on_commit_callbacks(execute=True):
        report = fanout.step_fanout_batch(
            step_id=step.pk, recipient_ids=recipient_ids_of(u.pk for u in users), walk_round=0
        )
    assert report.one_by_one == 4
    written = messages_of(step, users)
    assert len(written) == 4
    assert not Delivery.objects.filter(message__in=written.values()).exists()
    assert sorted(published.prepare) == sorted([m.pk] for m in written.values())

    # Alone, the one the limit struck while it rendered had the time to itself: it was the
    # copy that cannot render for this customer after all, so it is failed, with the reason;
    # the others go out.
    with django_capture_on_commit_callbacks(execute=True):
        run_prepare_tasks(published)
    slow = written.pop(users[-1].pk)
    delivery = Delivery.objects.get(message=slow)
    assert (delivery.status, delivery.reason) == (S.FAILED, Reason.RENDER_TIMEOUT)
    assert "stopped after" in delivery.last_error
    assert {inapp(m) for m in written.values()} == {(S.SENT, "")}  # went out as routed


def test_the_soft_time_limit_on_a_batch_of_one_fails_its_message(
    step, users, published, monkeypatch, django_capture_on_commit_callbacks
):
    render_for(monkeypatch, out_of_time)
    alone = users[-1]
    with django_capture_on_commit_callbacks(execute=True):
        fanout.step_fanout_batch(
            step_id=step.pk, recipient_ids=recipient_ids_of([alone.pk]), walk_round=0
        )
    (message,) = messages_of(step, [alone]).values()
    assert inapp(message) == (S.FAILED, Reason.RENDER_TIMEOUT)
    assert published.prepare == []


def test_a_customer_whose_row_cannot_be_read_gets_a_failed_message_and_the_batch_goes_out(
    step, users, published
):
    unreadable = users[1]
    with connection.cursor() as cursor:  # past the year 9999: PostgreSQL stores it
        cursor.execute(
            "UPDATE notifier_recipient SET last_active_at = '9999-12-31 23:59:59-05:00' "
            "WHERE user_id = %s",
            [unreadable.pk],
        )
    report = fanout.step_fanout_batch(
        step_id=step.pk, recipient_ids=recipient_ids_of(u.pk for u in users), walk_round=0
    )
    assert report.unreadable == 1
    written = messages_of(step, users)
    assert len(written) == 4
    failed = Delivery.objects.get(message=written.pop(unreadable.pk))
    assert (failed.status, failed.reason) == (S.FAILED, Reason.UNREADABLE)
    assert failed.last_error == (
        "This message could not be read: its recipient's last active at is out of range"
    )
    assert {inapp(m) for m in written.values()} == {(S.SENT, "")}  # went out as routed


def test_copy_that_cannot_compile_fails_its_messages_not_the_batch(step, users, published):
    """21 nested loops pass the save check and then make Python's compiler refuse the
    template (SyntaxError, not a RenderError): every batch that rendered it crashed."""
    nested = "".join(f"{{% for i{n} in [1] %}}" for n in range(21)) + "x" + "{% endfor %}" * 21
    VariantTemplate.objects.filter(variant__step=step).update(body=nested)
    approve_as_it_is(step.campaign_id)  # as if it got past the save check and approval
    fanout.step_fanout_batch(
        step_id=step.pk, recipient_ids=recipient_ids_of(u.pk for u in users), walk_round=0
    )
    written = messages_of(step, users)
    assert len(written) == 4
    assert {inapp(m)[1] for m in written.values()} == {Reason.RENDER_FAILED}
    assert CampaignStep.objects.get(pk=step.pk).batches_done == 1
