"""Kubernetes manifests: each overlay builds with kustomize, its core objects validate strictly
against the Kubernetes schemas, and the objects agree with each other and with the service."""

from __future__ import annotations

import functools
import subprocess
import tomllib
from pathlib import Path

import pytest
import yaml
from deploy_tools import DEPLOY, ROOT, load_yaml_documents, run, tool

K8S = DEPLOY / "k8s"
OVERLAYS = ("cpu", "gpu")
# Kinds kubernetes-validate knows. The Prometheus Operator's kinds are CRDs it has no schema for;
# they are checked here instead: the PrometheusRule by promtool and against the rules file
# (test_prometheus_rules.py), the ServiceMonitor by what it selects (below).
CORE_KINDS = {
    "ConfigMap",
    "Deployment",
    "HorizontalPodAutoscaler",
    "PodDisruptionBudget",
    "Service",
    "ServiceAccount",
}
OPERATOR_KINDS = {"PrometheusRule", "ServiceMonitor"}
# the oldest release the manifests target (PDB unhealthyPodEvictionPolicy is on by default from
# 1.27) and the newest the validator knows
KUBERNETES_VERSIONS = ("1.29.0", "1.37.0")
ENDPOINT_PROPAGATION_S = 5  # the least preStop sleep that lets kube-proxy and ingresses catch up
SIGKILL_MARGIN_S = 5


@functools.cache
def build(overlay: str) -> str:
    return run([tool("kubectl"), "kustomize", str(K8S / "overlays" / overlay)]).stdout


def objects(overlay: str) -> dict[str, dict]:
    docs = load_yaml_documents(build(overlay))
    by_kind: dict[str, dict] = {}
    for doc in docs:
        assert doc["kind"] not in by_kind, f"two {doc['kind']} objects in {overlay}"
        by_kind[doc["kind"]] = doc
    return by_kind


def container(overlay: str) -> dict:
    (main,) = objects(overlay)["Deployment"]["spec"]["template"]["spec"]["containers"]
    return main


def settings(overlay: str) -> dict[str, str]:
    """The RFCLS_* variables the container gets from its ConfigMap and its own env."""
    objs = objects(overlay)
    values = dict(objs["ConfigMap"]["data"])
    assert container(overlay)["envFrom"] == [
        {"configMapRef": {"name": objs["ConfigMap"]["metadata"]["name"]}}
    ]
    values.update({e["name"]: e.get("value") for e in container(overlay)["env"]})
    return values


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_overlay_holds_exactly_the_expected_kinds(overlay: str):
    assert set(objects(overlay)) == CORE_KINDS | OPERATOR_KINDS


@pytest.mark.parametrize("version", KUBERNETES_VERSIONS)
@pytest.mark.parametrize("overlay", OVERLAYS)
def test_core_objects_validate_strictly(overlay: str, version: str, tmp_path: Path):
    core = [d for d in load_yaml_documents(build(overlay)) if d["kind"] in CORE_KINDS]
    path = tmp_path / f"{overlay}.yaml"
    path.write_text(yaml.safe_dump_all(core))
    out = run([tool("kubernetes-validate"), "--strict", "-k", version, str(path)])
    for obj in core:
        assert f"passed for resource {obj['kind'].lower()}/" in out.stdout


def test_validator_rejects_an_unknown_field(tmp_path: Path):
    """The strict check above can fail: a misspelt probe field does not pass it."""
    deployment = objects("cpu")["Deployment"]
    deployment["spec"]["template"]["spec"]["containers"][0]["livenessProbe"]["periodSecond"] = 1
    path = tmp_path / "bad.yaml"
    path.write_text(yaml.safe_dump(deployment))
    result = subprocess.run(
        [tool("kubernetes-validate"), "--strict", str(path)], capture_output=True, text=True
    )
    assert result.returncode != 0
    assert "periodSecond" in result.stdout + result.stderr


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_selectors_and_references_agree(overlay: str):
    objs = objects(overlay)
    deployment, service = objs["Deployment"], objs["Service"]
    pod_labels = deployment["spec"]["template"]["metadata"]["labels"]
    selector = deployment["spec"]["selector"]["matchLabels"]
    assert selector.items() <= pod_labels.items()
    assert service["spec"]["selector"].items() <= pod_labels.items()
    assert objs["PodDisruptionBudget"]["spec"]["selector"]["matchLabels"] == selector
    target = objs["HorizontalPodAutoscaler"]["spec"]["scaleTargetRef"]
    assert (target["kind"], target["name"]) == ("Deployment", deployment["metadata"]["name"])
    assert "replicas" not in deployment["spec"], "the HPA owns the replica count"

    port_names = {p["name"] for p in container(overlay)["ports"]}
    assert {p["targetPort"] for p in service["spec"]["ports"]} <= port_names
    monitor = objs["ServiceMonitor"]["spec"]
    assert monitor["selector"]["matchLabels"].items() <= service["metadata"]["labels"].items()
    assert {e["port"] for e in monitor["endpoints"]} <= {
        p["name"] for p in service["spec"]["ports"]
    }
    assert {e["path"] for e in monitor["endpoints"]} == {"/metrics"}
    # RfclsTargetDown matches job="rfcls": the operator names the job after the Service
    assert service["metadata"]["name"] == "rfcls"


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_probes_use_the_service_health_endpoints(overlay: str):
    main = container(overlay)
    paths = {
        kind: main[kind]["httpGet"]["path"]
        for kind in ("startupProbe", "readinessProbe", "livenessProbe")
    }
    assert paths == {
        "startupProbe": "/healthz/live",
        "readinessProbe": "/healthz/ready",
        "livenessProbe": "/healthz/live",
    }
    port_names = {p["name"] for p in main["ports"]}
    assert all(main[kind]["httpGet"]["port"] in port_names for kind in paths)
    assert settings(overlay)["RFCLS_HOST"] == "0.0.0.0"
    assert int(settings(overlay)["RFCLS_PORT"]) == main["ports"][0]["containerPort"]


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_cpu_requests_equal_limits_and_torch_threads_leave_a_cpu_to_each_event_loop(overlay: str):
    resources = container(overlay)["resources"]
    assert resources["requests"] == resources["limits"], "Guaranteed QoS: requests == limits"
    assert float(resources["limits"]["cpu"]).is_integer(), "whole CPUs"
    cpus, workers = int(resources["limits"]["cpu"]), int(settings(overlay)["RFCLS_WORKERS"])
    # service.loading.default_torch_threads where it sees the limit's CPUs (its cgroup quota):
    # each worker its share less one CPU for its event loop; set explicitly, it must say the same
    expected = max(1, cpus // workers - 1)
    given = [e for e in container(overlay).get("env", []) if e["name"] == "RFCLS_TORCH_THREADS"]
    assert all("valueFrom" not in e and int(e["value"]) == expected for e in given)


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_pod_runs_locked_down(overlay: str):
    pod = objects(overlay)["Deployment"]["spec"]["template"]["spec"]
    assert pod["securityContext"]["runAsNonRoot"] is True
    assert pod["securityContext"]["runAsUser"] == 10001  # the image's USER
    assert pod["securityContext"]["seccompProfile"] == {"type": "RuntimeDefault"}
    assert pod["automountServiceAccountToken"] is False
    assert pod["enableServiceLinks"] is False, "service links inject RFCLS_* variables"
    ctx = container(overlay)["securityContext"]
    assert ctx["readOnlyRootFilesystem"] is True
    assert ctx["allowPrivilegeEscalation"] is False
    assert ctx["capabilities"]["drop"] == ["ALL"]
    assert "add" not in ctx["capabilities"]
    # the one writable path is the image's HOME
    mounts = {m["mountPath"]: m["name"] for m in container(overlay)["volumeMounts"]}
    assert mounts == {"/tmp": "tmp"}
    assert {"name": "tmp", "emptyDir": {"sizeLimit": "256Mi"}} in pod["volumes"]


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_grace_period_covers_prestop_and_the_servers_drain(overlay: str):
    server = pytest.importorskip("service.server")
    pod = objects(overlay)["Deployment"]["spec"]["template"]["spec"]
    command = container(overlay)["lifecycle"]["preStop"]["exec"]["command"]
    assert command[0] == "sleep"
    pre_stop = int(command[1])
    assert pre_stop >= ENDPOINT_PROPAGATION_S
    # the grace period runs from the start of preStop; SIGTERM comes after it, and uvicorn then
    # waits at most GRACEFUL_SHUTDOWN_S for open requests
    needed = pre_stop + server.GRACEFUL_SHUTDOWN_S + SIGKILL_MARGIN_S
    assert pod["terminationGracePeriodSeconds"] >= needed


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_settings_are_valid_service_settings(overlay: str):
    """Every RFCLS_* value the overlay sets is accepted by the service's own settings model."""
    service_settings = pytest.importorskip("service.settings")
    values = {k: v for k, v in settings(overlay).items() if v is not None}
    fields = {k.removeprefix("RFCLS_").lower(): v for k, v in values.items()}
    unknown = set(fields) - set(service_settings.Settings.model_fields)
    assert unknown == set(), "variables the service does not know"
    loaded = service_settings.Settings(**fields)
    assert loaded.attn_backend == values["RFCLS_ATTN_BACKEND"]
    assert loaded.latency_budget_ms == 30.0, "the rules' le=0.03 edge assumes the 30 ms budget"


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_hpa_scales_on_a_metric_the_adapter_serves(overlay: str):
    hpa = objects(overlay)["HorizontalPodAutoscaler"]["spec"]
    adapter = yaml.safe_load((K8S / "prometheus-adapter" / "values.yaml").read_text())
    served = {rule["name"]["as"] for rule in adapter["rules"]["custom"]}
    targets = {
        m["pods"]["metric"]["name"]: float(m["pods"]["target"]["averageValue"])
        for m in hpa["metrics"]
    }
    assert all(m["type"] == "Pods" for m in hpa["metrics"]) and set(targets) <= served
    assert set(targets) == {"rfcls_inflight_requests", "rfcls_queue_full_rejections_per_second"}
    # the queue refuses before it holds half a batch per worker: a target there is never reached
    values = settings(overlay)
    assert (
        0
        < targets["rfcls_inflight_requests"]
        < int(values["RFCLS_WORKERS"]) * int(values["RFCLS_MAX_BATCH"]) / 2
    )
    assert 2 <= hpa["minReplicas"] < hpa["maxReplicas"]
    assert hpa["behavior"]["scaleDown"]["stabilizationWindowSeconds"] >= 300


def test_gpu_rollouts_need_no_spare_gpu():
    cpu = objects("cpu")["Deployment"]["spec"]["strategy"]["rollingUpdate"]
    gpu = objects("gpu")["Deployment"]["spec"]["strategy"]["rollingUpdate"]
    assert (cpu["maxSurge"], cpu["maxUnavailable"]) == (1, 0)  # never below the current count
    assert (gpu["maxSurge"], gpu["maxUnavailable"]) == (0, 1)  # a surge pod would need a GPU
    assert gpu["maxUnavailable"] <= objects("gpu")["PodDisruptionBudget"]["spec"]["maxUnavailable"]


def test_cpu_overlay_runs_on_cpu():
    assert settings("cpu")["RFCLS_DEVICE"] == "cpu"
    assert container("cpu")["image"].endswith("-cpu")
    assert "nvidia.com/gpu" not in container("cpu")["resources"]["limits"]


def test_gpu_overlay_asks_for_a_gpu_node():
    pod = objects("gpu")["Deployment"]["spec"]["template"]["spec"]
    assert container("gpu")["resources"]["limits"]["nvidia.com/gpu"] == "1"
    assert {"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"} in pod[
        "tolerations"
    ]
    # the GPU request places the pod; a node label would differ between GPU operator and cloud
    assert "nodeSelector" not in pod
    assert settings("gpu")["RFCLS_DEVICE"] == "cuda"
    assert container("gpu")["image"].endswith("-cuda")


def test_each_overlay_picks_its_backend_through_the_configmap():
    backends = {o: settings(o)["RFCLS_ATTN_BACKEND"] for o in OVERLAYS}
    assert backends == {"cpu": "mha", "gpu": "flash"}
    # the ConfigMap's hashed name is what rolls the pods when the backend changes
    names = {o: objects(o)["ConfigMap"]["metadata"]["name"] for o in OVERLAYS}
    assert names["cpu"] != names["gpu"]
    assert all(n.startswith("rfcls-config-") for n in names.values())


def test_images_are_tagged_with_the_package_version():
    """rfcls:<version>-cpu / -cuda, the tags the Dockerfile's build lines and compose produce."""
    version = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["version"]
    dockerfile = (ROOT / "Dockerfile").read_text()
    for overlay, variant in (("cpu", "cpu"), ("gpu", "cuda")):
        image = f"rfcls:{version}-{variant}"
        assert container(overlay)["image"] == image
        assert f"-t {image} ." in dockerfile
