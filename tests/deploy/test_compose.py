"""deploy/compose.yaml and deploy/env.example, parsed: the invariants the system relies on."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from notifier.queues import ALL_QUEUES, MAINTENANCE_QUEUE, WEBHOOKS_QUEUE, Lane, lane_queues
from tests.deploy.helpers import (
    DEPLOY,
    SECRET_NAME,
    URL_WITH_PASSWORD,
    is_beat,
    is_worker,
    load_all,
    option,
    probe_command_is_valid,
    queues_of,
)

ROOT = DEPLOY.parent
COMPOSE_TEXT = (DEPLOY / "compose.yaml").read_text()
[COMPOSE] = load_all(DEPLOY / "compose.yaml")
SERVICES: dict = COMPOSE["services"]
APP_SERVICES = {name: s for name, s in SERVICES.items() if "build" in s}
ENV_EXAMPLE = (DEPLOY / "env.example").read_text()


def command(name: str) -> list[str]:
    return [str(part) for part in SERVICES[name].get("command", [])]


def workers() -> dict[str, list[str]]:
    return {name: command(name) for name in SERVICES if is_worker(command(name))}


def env_example_names() -> set[str]:
    """Every variable env.example sets or shows commented out."""
    return set(re.findall(r"^#?\s?([A-Z][A-Z0-9_]+)=", ENV_EXAMPLE, flags=re.MULTILINE))


def test_exactly_one_beat_and_it_is_never_replicated():
    beats = [name for name in SERVICES if is_beat(command(name))]
    assert beats == ["beat"]
    assert SERVICES["beat"].get("deploy", {}).get("replicas", 1) == 1
    assert (
        option(command("beat"), "--scheduler", "-S")
        == "notifier.operations.beat_scheduler:ProbedScheduler"
    )


def test_every_queue_is_consumed_and_each_worker_keeps_to_one_lane():
    consumed = {queue for argv in workers().values() for queue in queues_of(argv)}
    assert consumed == set(ALL_QUEUES)
    lanes = [
        set(lane_queues(Lane.TRANSACTIONAL)),
        set(lane_queues(Lane.BULK)),
        {MAINTENANCE_QUEUE},
        {WEBHOOKS_QUEUE},
    ]
    for name, argv in workers().items():
        assert set(queues_of(argv)) in lanes, f"{name} mixes lanes: {queues_of(argv)}"
    assert set(queues_of(workers()["worker-transactional"])) == set(lane_queues(Lane.TRANSACTIONAL))
    assert set(queues_of(workers()["worker-bulk"])) == set(lane_queues(Lane.BULK))
    assert queues_of(workers()["worker-maintenance"]) == [MAINTENANCE_QUEUE]
    # Webhook posts wait on other people's servers: never on the maintenance worker.
    assert queues_of(workers()["worker-webhooks"]) == [WEBHOOKS_QUEUE]


def test_lanes_are_tuned_for_latency_and_for_throughput():
    transactional, bulk = workers()["worker-transactional"], workers()["worker-bulk"]
    assert option(transactional, "--prefetch-multiplier") == "1"
    assert option(transactional, "-O") == "fair"
    assert int(option(bulk, "-c", "--concurrency") or 0) > int(
        option(transactional, "-c", "--concurrency") or 0
    )
    # The maintenance worker has room for the retention job next to the 15-second jobs.
    assert int(option(workers()["worker-maintenance"], "-c", "--concurrency") or 0) >= 2
    # The webhooks worker is small, and a slow receiver's run holds no task an idle process
    # could take.
    webhooks = workers()["worker-webhooks"]
    assert option(webhooks, "-c", "--concurrency") == "2"
    assert option(webhooks, "--prefetch-multiplier") == "1"
    assert option(webhooks, "-O") == "fair"


def test_migrate_is_one_shot_and_every_app_service_waits_for_it():
    migrate = SERVICES["migrate"]
    # Migrations run last in the one-shot (after it empties the shared metrics directory), and
    # a failing migration fails the service.
    assert command("migrate")[-1].endswith("&& python manage.py migrate --noinput")
    assert migrate["restart"] == "no"
    assert migrate["depends_on"]["postgres"]["condition"] == "service_healthy"
    for name, service in APP_SERVICES.items():
        if name == "migrate":
            continue
        assert service["depends_on"]["migrate"] == {
            "condition": "service_completed_successfully"
        }, name


def test_every_long_running_service_has_a_healthcheck(tmp_path: Path):
    for name, service in SERVICES.items():
        if name == "migrate":
            continue
        assert service.get("healthcheck", {}).get("test"), f"{name} has no healthcheck"
    for name in workers():
        test = SERVICES[name]["healthcheck"]["test"]
        assert test[0] == "CMD"
        assert probe_command_is_valid(test[1:], tmp_path) == "worker"
    assert probe_command_is_valid(SERVICES["beat"]["healthcheck"]["test"][1:], tmp_path) == "beat"
    web_check = " ".join(SERVICES["web"]["healthcheck"]["test"])
    assert "http://127.0.0.1:8000/health/ready/" in web_check
    # Django answers 400 to a Host it does not allow.
    [allowed] = re.findall(r"^DJANGO_ALLOWED_HOSTS=(.*)$", ENV_EXAMPLE, flags=re.MULTILINE)
    assert "127.0.0.1" in allowed.split(",")


def test_mail_goes_to_mailpit_locally():
    assert "mailpit" in SERVICES
    assert re.search(r"^EMAIL_URL=smtp://mailpit:1025$", ENV_EXAMPLE, flags=re.MULTILINE)


def test_the_retention_archive_is_a_volume_on_the_maintenance_worker():
    assert "archive:/app/var/archive" in SERVICES["worker-maintenance"]["volumes"]
    assert re.search(r"^NOTIFIER_ARCHIVE_DIR=/app/var/archive$", ENV_EXAMPLE, flags=re.MULTILINE)


def test_no_secret_is_written_in_the_compose_file():
    assert not URL_WITH_PASSWORD.search(COMPOSE_TEXT)
    for name, service in SERVICES.items():
        environment = service.get("environment", {})
        for key, value in environment.items():
            if SECRET_NAME.search(key):
                assert str(value).startswith("${"), f"{name}.{key} is written in the file"
    for service in APP_SERVICES.values():
        assert service["env_file"] == "${NOTIFIER_ENV_FILE:-env.example}"


def test_secrets_appear_in_env_example_only_as_placeholders():
    for line in ENV_EXAMPLE.splitlines():
        match = re.match(r"([A-Z][A-Z0-9_]+)=(.*)", line)
        if match and SECRET_NAME.search(match[1]) and match[2]:
            assert "change-me" in match[2], line


def settings_variables() -> set[str]:
    """Every variable the site's settings read: by name, and each Notifier setting the site
    reads from the variable of the same name."""
    from notifier import conf
    from notifier_site.settings import SET_BY_THE_SITE

    sources = [
        ROOT / "notifier_site" / "settings.py",
        ROOT / "notifier_site" / "providers_config.py",
    ]
    pattern = r"env(?:\.[a-z_]+)?\(\s*\"([A-Z][A-Z0-9_]+)\""
    named = {name for path in sources for name in re.findall(pattern, path.read_text())}
    return named | (set(conf.defaults()) - SET_BY_THE_SITE)


def test_env_example_names_every_setting_the_project_reads():
    missing = settings_variables() - env_example_names()
    assert not missing, f"add these to deploy/env.example with a comment: {sorted(missing)}"


def test_every_variable_the_compose_file_interpolates_is_in_env_example():
    interpolated = set(re.findall(r"\$\{([A-Z][A-Z0-9_]+)", COMPOSE_TEXT)) - {"NOTIFIER_ENV_FILE"}
    assert interpolated <= env_example_names()


@pytest.mark.parametrize(
    "name", ["worker-transactional", "worker-bulk", "worker-maintenance", "worker-webhooks"]
)
def test_workers_are_named_per_lane_for_flower_and_inspect(name):
    lane = name.removeprefix("worker-")
    assert option(workers()[name], "-n", "--hostname") == f"{lane}@%h"


def test_postgres_runs_without_jit():
    """Short statements: a plan priced high by stale statistics must not be compiled."""
    assert command("postgres")[:1] == ["postgres"]
    assert "jit=off" in command("postgres")
