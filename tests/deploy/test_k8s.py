"""deploy/k8s/, parsed: one beat, probes and resources everywhere, KEDA on the right queues."""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml
from django.urls import resolve

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

K8S = DEPLOY / "k8s"
FILES = {path.name: load_all(path) for path in sorted(K8S.glob("*.yaml"))}
KUSTOMIZATION = FILES.pop("kustomization.yaml")[0]
OBJECTS = [(name, doc) for name, docs in FILES.items() for doc in docs]


def of_kind(kind: str) -> dict[str, dict[str, Any]]:
    return {doc["metadata"]["name"]: doc for _, doc in OBJECTS if doc["kind"] == kind}


DEPLOYMENTS = of_kind("Deployment")
SCALED_OBJECTS = of_kind("ScaledObject")
CONFIG = of_kind("ConfigMap")["notifier-config"]["data"]
SECRET = of_kind("Secret")["notifier-secrets"]["stringData"]


def pod(deployment: dict[str, Any]) -> dict[str, Any]:
    return deployment["spec"]["template"]["spec"]


def main_command(deployment: dict[str, Any]) -> list[str]:
    container = pod(deployment)["containers"][0]  # the main container comes first
    return [str(part) for part in container["command"]]


def worker_deployments() -> dict[str, list[str]]:
    return {name: main_command(d) for name, d in DEPLOYMENTS.items() if is_worker(main_command(d))}


def test_kustomization_lists_every_manifest_and_nothing_else():
    assert set(KUSTOMIZATION["resources"]) == set(FILES)
    assert KUSTOMIZATION["namespace"] == "notifier"
    assert [image["name"] for image in KUSTOMIZATION["images"]] == ["notifier"]


def test_exactly_one_beat_with_recreate_and_nothing_scaling_it():
    beats = [name for name, d in DEPLOYMENTS.items() if is_beat(main_command(d))]
    assert beats == ["beat"]
    spec = DEPLOYMENTS["beat"]["spec"]
    assert spec["replicas"] == 1
    assert spec["strategy"] == {"type": "Recreate"}
    assert option(main_command(DEPLOYMENTS["beat"]), "--scheduler") == (
        "notifier.operations.beat_scheduler:ProbedScheduler"
    )
    scaled = [so["spec"]["scaleTargetRef"]["name"] for so in SCALED_OBJECTS.values()]
    scaled += [
        h["spec"]["scaleTargetRef"]["name"] for h in of_kind("HorizontalPodAutoscaler").values()
    ]
    assert "beat" not in scaled


@pytest.mark.parametrize("name", sorted(DEPLOYMENTS))
def test_every_deployment_has_probes_and_resources(name):
    spec = pod(DEPLOYMENTS[name])
    for container in spec["containers"]:
        assert container.get("livenessProbe"), f"{name}/{container['name']}: no liveness probe"
        assert container.get("readinessProbe"), f"{name}/{container['name']}: no readiness probe"
    for container in spec["containers"] + spec.get("initContainers", []):
        resources = container.get("resources", {})
        assert {"cpu", "memory"} <= set(resources.get("requests", {})), (name, container["name"])
        assert "memory" in resources.get("limits", {}), (name, container["name"])
    assert spec["securityContext"]["runAsNonRoot"] is True


@pytest.mark.parametrize("name", sorted(DEPLOYMENTS))
def test_every_app_deployment_waits_for_migrations(name):
    if name == "flower":  # reads no table
        return
    [init] = pod(DEPLOYMENTS[name])["initContainers"]
    assert "manage.py migrate --check" in " ".join(init["command"])


def test_the_migrate_job_runs_migrate_once():
    job = of_kind("Job")["notifier-migrate"]
    [container] = job["spec"]["template"]["spec"]["containers"]
    assert container["command"] == ["python", "manage.py", "migrate", "--noinput"]
    assert job["spec"]["template"]["spec"]["restartPolicy"] == "Never"


def exec_probes(deployment: dict[str, Any]) -> list[list[str]]:
    container = pod(deployment)["containers"][0]
    probes = [container.get(key) for key in ("startupProbe", "livenessProbe", "readinessProbe")]
    return [probe["exec"]["command"] for probe in probes if probe and "exec" in probe]


def test_worker_and_beat_exec_probes_are_commands_the_code_has(tmp_path: Path):
    for name in worker_deployments():
        commands = exec_probes(DEPLOYMENTS[name])
        assert len(commands) == 3, name
        assert {probe_command_is_valid(argv, tmp_path) for argv in commands} == {"worker"}
        liveness = pod(DEPLOYMENTS[name])["containers"][0]["livenessProbe"]["exec"]["command"]
        assert liveness[-1] == "live"  # a lost broker must not restart the pod
        mounts = pod(DEPLOYMENTS[name])["containers"][0]["volumeMounts"]
        assert {"name": "probe", "mountPath": CONFIG["NOTIFIER_PROBE_DIR"]} in mounts
    assert {probe_command_is_valid(a, tmp_path) for a in exec_probes(DEPLOYMENTS["beat"])} == {
        "beat"
    }


def test_web_probes_point_at_the_health_views():
    container = pod(DEPLOYMENTS["web"])["containers"][0]
    live = container["livenessProbe"]["httpGet"]["path"]
    ready = container["readinessProbe"]["httpGet"]["path"]
    assert resolve(live).url_name == "health-live"
    assert ready == "/health/ready/?beat=0"
    assert resolve(ready.split("?")[0]).url_name == "health-ready"
    # Django answers 400 to a Host it does not allow; the kubelet's would be the pod IP.
    allowed = CONFIG["DJANGO_ALLOWED_HOSTS"].split(",")
    for key in ("startupProbe", "livenessProbe", "readinessProbe"):
        headers = container[key]["httpGet"]["httpHeaders"]
        assert {"name": "Host", "value": "localhost"} in headers
    assert "localhost" in allowed
    hpa = of_kind("HorizontalPodAutoscaler")["web"]
    assert hpa["spec"]["scaleTargetRef"]["name"] == "web"
    assert hpa["spec"]["minReplicas"] >= 2


def multiproc_dir_mounts(container: dict[str, Any]) -> set[str]:
    """The volumes this container mounts at its PROMETHEUS_MULTIPROC_DIR."""
    env = {e["name"]: e.get("value") for e in container.get("env", [])}
    path = env.get("PROMETHEUS_MULTIPROC_DIR")
    return {m["name"] for m in container.get("volumeMounts", []) if m["mountPath"] == path}


@pytest.mark.parametrize("name", sorted(worker_deployments()))
def test_every_worker_pod_exports_its_processes_metrics_through_a_sidecar(name):
    spec = pod(DEPLOYMENTS[name])
    worker, *sidecars = spec["containers"]
    [exporter] = [c for c in sidecars if c["name"] == "metrics"]
    assert exporter["command"][:3] == ["python", "manage.py", "metrics_exporter"]
    # Both mount the same emptyDir at their multiprocess directory, so the sidecar reads what
    # the prefork children write, and a new pod starts from an empty directory.
    shared = multiproc_dir_mounts(worker) & multiproc_dir_mounts(exporter)
    assert shared, "worker and exporter must share PROMETHEUS_MULTIPROC_DIR"
    volumes = {v["name"]: v for v in spec["volumes"]}
    assert all("emptyDir" in volumes[v] for v in shared)
    assert "NOTIFIER_METRICS_TOKEN" in SECRET


def test_the_web_pods_processes_share_a_metrics_directory():
    spec = pod(DEPLOYMENTS["web"])
    assert multiproc_dir_mounts(spec["containers"][0])


def test_every_queue_is_consumed_and_each_lane_has_its_own_deployment():
    consumed = {q for argv in worker_deployments().values() for q in queues_of(argv)}
    assert consumed == set(ALL_QUEUES)
    assert queues_of(worker_deployments()["worker-maintenance"]) == [MAINTENANCE_QUEUE]
    assert queues_of(worker_deployments()["worker-webhooks"]) == [WEBHOOKS_QUEUE]
    for lane in Lane:
        assert queues_of(worker_deployments()[f"worker-{lane}"]) == lane_queues(lane)


def test_the_webhooks_worker_is_small_and_fair():
    webhooks = worker_deployments()["worker-webhooks"]
    assert option(webhooks, "-c", "--concurrency") == "2"
    assert option(webhooks, "--prefetch-multiplier") == "1"
    assert option(webhooks, "-O") == "fair"
    assert "worker-webhooks" not in SCALED_OBJECTS  # replicas by hand, as the comment says


def rabbitmq_variant(path: Path) -> list[dict[str, Any]]:
    """The commented-out RabbitMQ triggers, uncommented and parsed."""
    text = path.read_text()
    block = text.split("# rabbitmq-variant:begin\n")[1].split("# rabbitmq-variant:end")[0]
    lines = [line[2:] for line in block.splitlines() if line.startswith("# ") or line == "#"]
    body = "\n".join(line for line in lines if line.startswith(("triggers:", " ")))
    return yaml.safe_load(body)["triggers"]


@pytest.mark.parametrize("lane", list(Lane))
def test_each_lanes_scaled_object_watches_exactly_that_lanes_queues(lane):
    scaled = SCALED_OBJECTS[f"worker-{lane}"]["spec"]
    assert scaled["scaleTargetRef"]["name"] == f"worker-{lane}"
    assert scaled["minReplicaCount"] >= 1
    triggers = scaled["triggers"]
    assert {t["type"] for t in triggers} == {"redis"}
    assert sorted(t["metadata"]["listName"] for t in triggers) == sorted(lane_queues(lane))
    # Scaled on the sum of the lane's queues: the formula names every trigger once.
    formula = scaled["advanced"]["scalingModifiers"]["formula"]
    assert sorted(re.findall(r"[a-z]+", formula)) == sorted(t["name"] for t in triggers)
    for trigger in triggers:
        assert trigger["metadata"]["addressFromEnv"] in CONFIG
        assert trigger["metadata"]["passwordFromEnv"] in SECRET

    rabbit = rabbitmq_variant(K8S / f"worker-{lane}.yaml")
    assert {t["type"] for t in rabbit} == {"rabbitmq"}
    assert sorted(t["metadata"]["queueName"] for t in rabbit) == sorted(lane_queues(lane))
    assert {t["metadata"]["hostFromEnv"] for t in rabbit} == {"CELERY_BROKER_URL"}


def test_secrets_live_only_in_the_example_secret():
    for filename, doc in OBJECTS:
        if doc["kind"] == "Secret":
            assert filename.endswith(".example.yaml")
            assert all(not v or "change-me" in v for v in doc["stringData"].values())
    assert not [key for key in CONFIG if SECRET_NAME.search(key)]
    for filename in FILES:
        if not filename.endswith(".example.yaml"):
            assert not URL_WITH_PASSWORD.search((K8S / filename).read_text()), filename
    for name, deployment in DEPLOYMENTS.items():
        for container in pod(deployment)["containers"] + pod(deployment).get("initContainers", []):
            # Settings come from envFrom; a container's own env holds only plain paths.
            for entry in container.get("env", []):
                assert not SECRET_NAME.search(entry["name"]), f"{name}: {entry['name']}"
                assert set(entry) == {"name", "value"}, f"{name}: {entry['name']}"
            refs = {next(iter(ref.values()))["name"] for ref in container["envFrom"]}
            assert refs <= {"notifier-config", "notifier-secrets"}


@pytest.mark.skipif(shutil.which("kubectl") is None, reason="kubectl is not installed")
def test_kustomize_builds_the_whole_set_into_the_namespace():
    built = subprocess.run(
        ["kubectl", "kustomize", str(K8S)], capture_output=True, text=True, timeout=60, check=True
    ).stdout
    docs = [doc for doc in yaml.safe_load_all(built) if doc]
    assert len(docs) == len(OBJECTS)
    assert {d["metadata"].get("namespace") for d in docs if d["kind"] != "Namespace"} == {
        "notifier"
    }
    images = {
        c["image"]
        for d in docs
        if d["kind"] in ("Deployment", "Job")
        for c in d["spec"]["template"]["spec"]["containers"]
    }
    assert images == {"registry.example.com/notifier:0.1.0"}
