"""deploy/: scripts/check_deploy.sh (kustomize, kubernetes-validate --strict, the KEDA CRD and
compose schemas, hadolint) must pass, and the rendered manifests must keep the properties the
platform relies on, which no schema checks."""

from __future__ import annotations

import json
import os
import re
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from llmops_services.jobs.queue import JOB_QUEUE

ROOT = Path(__file__).resolve().parents[2]
OVERLAYS = ("cpu", "gpu")
GRPC_SERVICES = ("registry", "training", "eval", "inference")

# A cold run installs kustomize (go install) and the tool venv first.
pytestmark = pytest.mark.timeout(900)

Manifest = dict[str, Any]


@pytest.fixture(scope="module")
def rendered(tmp_path_factory: pytest.TempPathFactory) -> dict[str, list[Manifest]]:
    """Runs scripts/check_deploy.sh (it fails the tests if it fails) and returns each overlay's
    rendered objects."""
    out = tmp_path_factory.mktemp("deploy")
    result = subprocess.run(
        ["scripts/check_deploy.sh"],
        cwd=ROOT,
        env={**os.environ, "CHECK_DEPLOY_OUT": str(out)},
        capture_output=True,
        text=True,
        timeout=880,
        check=False,
    )
    assert result.returncode == 0, (
        f"scripts/check_deploy.sh failed:\n{result.stdout}\n{result.stderr}"
    )
    return {
        overlay: [d for d in yaml.safe_load_all((out / f"{overlay}.yaml").read_text()) if d]
        for overlay in OVERLAYS
    }


def _kind(objects: list[Manifest], kind: str) -> dict[str, Manifest]:
    return {o["metadata"]["name"]: o for o in objects if o["kind"] == kind}


def _pod_specs(objects: list[Manifest]) -> Iterator[tuple[str, Manifest]]:
    for o in objects:
        if o["kind"] in ("Deployment", "StatefulSet", "Job"):
            yield f"{o['kind']}/{o['metadata']['name']}", o["spec"]["template"]["spec"]


def test_check_deploy_passes(rendered: dict[str, list[Manifest]]) -> None:
    for overlay in OVERLAYS:
        assert _kind(rendered[overlay], "Deployment"), overlay


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_every_deployment_has_probes(rendered: dict[str, list[Manifest]], overlay: str) -> None:
    deployments = _kind(rendered[overlay], "Deployment") | _kind(rendered[overlay], "StatefulSet")
    for name, deployment in deployments.items():
        for container in deployment["spec"]["template"]["spec"]["containers"]:
            assert "readinessProbe" in container, f"{overlay}: {name} has no readiness probe"
            assert "livenessProbe" in container, f"{overlay}: {name} has no liveness probe"
    for service in GRPC_SERVICES:
        container = deployments[f"llmops-{service}"]["spec"]["template"]["spec"]["containers"][0]
        assert container["args"] == ["serve", service]
        for probe in ("readinessProbe", "livenessProbe"):
            assert container[probe]["grpc"] == {"port": 50051}, f"{service} {probe}"


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_containers_run_as_non_root(rendered: dict[str, list[Manifest]], overlay: str) -> None:
    for name, spec in _pod_specs(rendered[overlay]):
        pod = spec.get("securityContext", {})
        assert pod.get("runAsNonRoot") is True, f"{overlay}: {name}"
        assert pod.get("runAsUser", 0) != 0, f"{overlay}: {name}"
        for container in spec["containers"]:
            context = container.get("securityContext", {})
            assert context.get("allowPrivilegeEscalation") is False, f"{overlay}: {name}"
            assert context.get("capabilities", {}).get("drop") == ["ALL"], f"{overlay}: {name}"


def test_the_gateway_routes_to_every_inference_replica(
    rendered: dict[str, list[Manifest]],
) -> None:
    """The gateway's Inference backends are exactly the StatefulSet's pods, by their stable
    names under its headless Service (a replica missing from the list would get no traffic)."""
    for overlay in OVERLAYS:
        inference = _kind(rendered[overlay], "StatefulSet")["llmops-inference"]
        service = _kind(rendered[overlay], "Service")["llmops-inference"]
        assert service["spec"]["clusterIP"] == "None"
        assert inference["spec"]["serviceName"] == "llmops-inference"
        gateway = _kind(rendered[overlay], "Deployment")["llmops-gateway"]
        env = {
            e["name"]: e.get("value")
            for e in gateway["spec"]["template"]["spec"]["containers"][0]["env"]
        }
        pods = [
            f"llmops-inference-{n}.llmops-inference:50051"
            for n in range(inference["spec"]["replicas"])
        ]
        assert env["LLMOPS_GATEWAY_INFERENCE_BACKENDS"].split(",") == pods, overlay


def test_gpu_workers_request_a_gpu(rendered: dict[str, list[Manifest]]) -> None:
    def resources(overlay: str, deployment: str) -> Manifest:
        spec = _kind(rendered[overlay], "Deployment")[deployment]["spec"]["template"]["spec"]
        return dict(spec["containers"][0]["resources"])

    gpu = resources("gpu", "llmops-worker")
    assert gpu["requests"]["nvidia.com/gpu"] == gpu["limits"]["nvidia.com/gpu"] == 1
    assert "nvidia.com/gpu" in resources("gpu", "llmops-vllm")["limits"]
    assert "nvidia.com/gpu" not in json.dumps(rendered["cpu"])
    assert "llmops-vllm" not in _kind(rendered["cpu"], "Deployment")


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_workers_scale_on_the_arq_queue(rendered: dict[str, list[Manifest]], overlay: str) -> None:
    objects = rendered[overlay]
    (scaled,) = _kind(objects, "ScaledObject").values()
    assert scaled["spec"]["scaleTargetRef"]["name"] in _kind(objects, "Deployment")
    assert scaled["spec"]["minReplicaCount"] == 0
    (trigger,) = scaled["spec"]["triggers"]
    assert trigger["type"] == "redis"
    assert trigger["metadata"]["listName"] == JOB_QUEUE
    assert trigger["authenticationRef"]["name"] in _kind(objects, "TriggerAuthentication")
    worker = _kind(objects, "Deployment")[scaled["spec"]["scaleTargetRef"]["name"]]
    assert "replicas" not in worker["spec"], "KEDA owns the worker count"


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_secrets_come_from_the_secret_object(
    rendered: dict[str, list[Manifest]], overlay: str
) -> None:
    objects = rendered[overlay]
    assert not _kind(objects, "Secret"), "no secret values are committed"
    text = json.dumps(objects)
    names = set(re.findall(r'"secretKeyRef": \{[^}]*"name": "([^"]+)"', text))
    names |= {
        ref["name"]
        for auth in _kind(objects, "TriggerAuthentication").values()
        for ref in auth["spec"]["secretTargetRef"]
    }
    assert names == {"llmops-secrets"}
    assert "password" not in json.dumps(_kind(objects, "ConfigMap")).lower()
    (job,) = _kind(objects, "Job").values()
    assert "migrate()" in " ".join(job["spec"]["template"]["spec"]["containers"][0]["command"])


def test_router_routes_every_service(rendered: dict[str, list[Manifest]]) -> None:
    envoy = yaml.safe_load((ROOT / "deploy/k8s/base/envoy.yaml").read_text())
    clusters = {c["name"] for c in envoy["static_resources"]["clusters"]}
    (manager,) = envoy["static_resources"]["listeners"][0]["filter_chains"][0]["filters"]
    routes = manager["typed_config"]["route_config"]["virtual_hosts"][0]["routes"]
    by_prefix = {r["match"]["prefix"]: r["route"]["cluster"] for r in routes}
    protos = "\n".join(p.read_text() for p in (ROOT / "protos/llmops/v1").glob("*.proto"))
    services = set(re.findall(r"^service (\w+)Service", protos, re.M))
    assert {s.lower() for s in services} == set(GRPC_SERVICES)
    assert clusters == set(GRPC_SERVICES)
    for service in services:
        cluster = by_prefix.get(f"/llmops.v1.{service}Service/", by_prefix["/"])
        assert cluster == service.lower()
    for cluster in clusters:
        address = f"llmops-{cluster}"
        assert address in _kind(rendered["cpu"], "Service")
        assert _kind(rendered["cpu"], "Service")[address]["spec"]["clusterIP"] == "None"


def _defined_metrics() -> set[str]:
    """Every metric name the Python code defines (prometheus_client appends `_total` to a
    counter's name unless it ends with it), plus the process collector's CPU counter."""
    names = {"process_cpu_seconds_total"}
    pattern = re.compile(
        r"(Counter|Gauge|Histogram|Summary|GaugeMetricFamily)\(\s*\"([a-z_:]+)\"", re.S
    )
    for folder in ("services", "workers"):
        for path in (ROOT / folder).rglob("*.py"):
            for kind, name in pattern.findall(path.read_text()):
                counter = kind == "Counter" and not name.endswith("_total")
                names.add(f"{name}_total" if counter else name)
    return names


def _metric_names(expr: str) -> set[str]:
    """The platform's metric names (llmops_*, grpc_server_*, process_*) a PromQL query reads."""
    return set(re.findall(r"\b((?:llmops|grpc_server|process)_[a-z_]+)", expr))


def _unknown(used: set[str]) -> set[str]:
    defined = _defined_metrics()
    return {
        name
        for name in used
        if name not in defined and re.sub(r"_(bucket|sum|count)$", "", name) not in defined
    }


def _alert_rules() -> list[Manifest]:
    rules = yaml.safe_load((ROOT / "deploy/prometheus/alerts.yaml").read_text())
    return [rule for group in rules["groups"] for rule in group["rules"]]


def test_the_metric_name_check_knows_the_code() -> None:
    defined = _defined_metrics()
    for name in (
        "llmops_jobs",
        "llmops_jobs_queue_oldest_age_seconds",
        "llmops_worker_busy",
        "grpc_server_handled_total",
        "llmops_training_tokens_total",
        "llmops_inference_time_to_first_token_seconds",
    ):
        assert name in defined
    assert _unknown({"llmops_inference_time_to_first_token_seconds_bucket"}) == set()
    assert _unknown({"llmops_jobs_renamed", "grpc_server_handled"}) == {
        "llmops_jobs_renamed",
        "grpc_server_handled",
    }


def test_dashboard_uses_metrics_the_code_exposes() -> None:
    dashboard = json.loads((ROOT / "deploy/compose/grafana/dashboards/llmops.json").read_text())
    used: set[str] = set()
    for panel in dashboard["panels"]:
        for target in panel["targets"]:
            used |= _metric_names(target["expr"])
    assert used
    unknown = _unknown(used)
    assert not unknown, f"the dashboard queries metrics no code defines: {sorted(unknown)}"
    titles = " ".join(panel["title"].lower() for panel in dashboard["panels"])
    for topic in ("state", "queue", "worker", "cpu", "tokens", "first token", "adapter", "error"):
        assert topic in titles
    for name in ("llmops_jobs", "llmops_jobs_queue_oldest_age_seconds", "llmops_worker_busy"):
        assert name in used
    assert "process_cpu_seconds_total" in used


def test_alert_rules_use_metrics_the_code_exposes() -> None:
    rules = _alert_rules()
    used = {name for rule in rules for name in _metric_names(rule["expr"])}
    unknown = _unknown(used)
    assert not unknown, f"the alert rules read metrics no code defines: {sorted(unknown)}"
    assert {
        "llmops_jobs",
        "llmops_jobs_queue_oldest_age_seconds",
        "llmops_worker_busy",
        "grpc_server_handled_total",
        "llmops_inference_time_to_first_token_seconds_bucket",
    } <= used


def test_every_alert_is_tested_and_documented() -> None:
    tests = yaml.safe_load((ROOT / "deploy/prometheus/alerts_test.yaml").read_text())
    tested = {case["alertname"] for test in tests["tests"] for case in test["alert_rule_test"]}
    firing = {
        case["alertname"]
        for test in tests["tests"]
        for case in test["alert_rule_test"]
        if case["exp_alerts"]
    }
    doc = (ROOT / "docs/observability.md").read_text()
    anchors = {
        re.sub(r"[^a-z0-9 -]", "", line.lstrip("#").strip().lower()).replace(" ", "-")
        for line in doc.splitlines()
        if line.startswith("#")
    }
    for rule in _alert_rules():
        name = rule["alert"]
        assert name in firing and name in tested, f"{name}: no promtool test makes it fire"
        assert rule["labels"]["severity"] in ("warning", "critical"), name
        runbook = rule["annotations"]["runbook"]
        assert runbook == f"docs/observability.md#{name.lower()}", name
        assert name.lower() in anchors, f"docs/observability.md has no section {name}"


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_alert_rules_ship_as_a_configmap(rendered: dict[str, list[Manifest]], overlay: str) -> None:
    rules = _kind(rendered[overlay], "ConfigMap")["llmops-prometheus-rules"]
    assert rules["data"]["alerts.yaml"] == (ROOT / "deploy/prometheus/alerts.yaml").read_text()


def test_worker_threads_match_the_cores_requested(rendered: dict[str, list[Manifest]]) -> None:
    for overlay in OVERLAYS:
        spec = _kind(rendered[overlay], "Deployment")["llmops-worker"]["spec"]["template"]["spec"]
        (container,) = spec["containers"]
        assert container["args"] == ["worker", "--threads", "$(WORKER_THREADS)"]
        threads = {e["name"]: e.get("value") for e in container["env"]}["WORKER_THREADS"]
        assert threads == str(container["resources"]["requests"]["cpu"]), overlay


def test_compose_runs_the_stack_and_scrapes_it() -> None:
    compose = yaml.safe_load((ROOT / "deploy/compose/compose.yaml").read_text())
    wanted = {"postgres", "redis", "minio", "migrate", "services", "worker", "gateway"}
    wanted |= {"otel-collector", "jaeger", "prometheus", "grafana", "vllm"}
    assert wanted <= set(compose["services"])
    default = {n for n, s in compose["services"].items() if "profiles" not in s}
    assert {"services", "worker", "gateway", "prometheus", "grafana"} <= default
    prometheus = yaml.safe_load((ROOT / "deploy/compose/prometheus.yml").read_text())
    targets = json.dumps(prometheus["scrape_configs"])
    for target in ("services:9464", "gateway:9466", '"worker"', "vllm:8000", "otel-collector:8888"):
        assert target in targets
    # the alert rules are mounted beside prometheus.yml, where its rule_files finds them
    assert prometheus["rule_files"] == ["alerts.yaml"]
    mounts = compose["services"]["prometheus"]["volumes"]
    assert "../prometheus/alerts.yaml:/etc/prometheus/alerts.yaml:ro" in mounts
    assert "./prometheus.yml:/etc/prometheus/prometheus.yml:ro" in mounts
    assert compose["services"]["services"]["depends_on"]["migrate"] == {
        "condition": "service_completed_successfully"
    }


def test_images_are_pinned() -> None:
    compose = yaml.safe_load((ROOT / "deploy/compose/compose.yaml").read_text())
    for name, service in compose["services"].items():
        image = service["image"]
        assert ":" in image and not image.endswith(":latest"), f"{name}: {image}"
    for dockerfile in (ROOT / "deploy/docker").glob("*.Dockerfile"):
        for line in dockerfile.read_text().splitlines():
            if line.startswith("FROM "):
                image = line.split()[1]
                if image.startswith("gcr.io/distroless/"):
                    # distroless publishes no version tags, only `nonroot` and digests: pinned
                    # by digest at build time (docs/deploy.md#images), never `latest`.
                    assert image.endswith(":nonroot") or "@sha256:" in image, line
                    continue
                assert re.search(r":v?\d[\w.-]*", image), f"{dockerfile.name}: {line}"
