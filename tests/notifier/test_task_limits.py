"""Every task that renders a marketer's copy has soft and hard time limits, from settings, and
limits that do not fit together stop `manage.py check`."""

from __future__ import annotations

import pytest
from django.conf import settings

from campaigns.tasks import fanout_batch, fanout_recipients, walk_step
from notifier.operations.checks import check_task_time_limits
from notifier.tasks import deliver, prepare_messages


@pytest.mark.parametrize(
    ("task", "soft", "hard"),
    [
        (prepare_messages, "NOTIFIER_PREPARE_SOFT_TIME_LIMIT_S", "NOTIFIER_PREPARE_TIME_LIMIT_S"),
        (fanout_batch, "NOTIFIER_PREPARE_SOFT_TIME_LIMIT_S", "NOTIFIER_PREPARE_TIME_LIMIT_S"),
        (fanout_recipients, "NOTIFIER_PREPARE_SOFT_TIME_LIMIT_S", "NOTIFIER_PREPARE_TIME_LIMIT_S"),
        (walk_step, "NOTIFIER_PREPARE_SOFT_TIME_LIMIT_S", "NOTIFIER_PREPARE_TIME_LIMIT_S"),
        (deliver, "NOTIFIER_DELIVER_SOFT_TIME_LIMIT_S", "NOTIFIER_DELIVER_TIME_LIMIT_S"),
    ],
    ids=lambda value: getattr(value, "name", None),
)
def test_every_task_that_renders_has_soft_and_hard_time_limits(task, soft, hard):
    assert (task.soft_time_limit, task.time_limit) == (
        getattr(settings, soft),
        getattr(settings, hard),
    )
    assert 0 < task.soft_time_limit < task.time_limit


def test_the_defaults_pass_the_check():
    assert check_task_time_limits() == []


@pytest.mark.parametrize(
    ("overrides", "error"),
    [
        ({"NOTIFIER_PREPARE_SOFT_TIME_LIMIT_S": 60, "NOTIFIER_PREPARE_TIME_LIMIT_S": 60}, "E011"),
        ({"NOTIFIER_DELIVER_SOFT_TIME_LIMIT_S": 0}, "E011"),
        ({"NOTIFIER_CLAIM_LEASE_S": 10, "EMAIL_TIMEOUT": 10}, "E012"),
    ],
)
def test_limits_that_do_not_fit_together_are_errors(settings, overrides, error):
    for name, value in overrides.items():
        setattr(settings, name, value)
    assert [e.id for e in check_task_time_limits()] == [f"notifier.{error}"]


def test_email_without_a_timeout_is_a_warning_not_a_crash(settings):
    """Django's default EMAIL_TIMEOUT is None (a host project that never set it): the check
    warns that an SMTP send could outlast the claim lease, instead of failing on None."""
    settings.EMAIL_TIMEOUT = None
    [warning] = check_task_time_limits()
    assert warning.id == "notifier.W013"
    assert "EMAIL_TIMEOUT" in warning.msg
