"""The local stack's compose file: docker-compose validates it, its mounts exist, and Prometheus's
scrape target is the service as compose names it."""

from __future__ import annotations

import yaml
from deploy_tools import DEPLOY, ROOT, run, tool

COMPOSE_DIR = DEPLOY / "compose"
COMPOSE_FILE = COMPOSE_DIR / "compose.yaml"


def compose() -> dict:
    return yaml.safe_load(COMPOSE_FILE.read_text())


def test_docker_compose_validates_the_file():
    run([tool("docker-compose"), "-f", str(COMPOSE_FILE), "config", "-q"], cwd=COMPOSE_DIR)


def test_bind_mounts_exist():
    for name, service in compose()["services"].items():
        for volume in service.get("volumes", []):
            source = volume.split(":", 1)[0]
            if source.startswith("."):
                assert (COMPOSE_DIR / source).exists(), f"{name}: {source} does not exist"


def test_service_builds_from_the_repository_dockerfile():
    build = compose()["services"]["rfcls"]["build"]
    assert (COMPOSE_DIR / build["context"]).resolve() == ROOT
    assert (ROOT / build["context"] / build["dockerfile"]).exists() or (
        ROOT / build["dockerfile"]
    ).exists()


def test_prometheus_scrapes_the_compose_service():
    services = compose()["services"]
    config = yaml.safe_load((DEPLOY / "prometheus" / "prometheus.yml").read_text())
    (job,) = [j for j in config["scrape_configs"] if j["job_name"] == "rfcls"]
    (target,) = [t for s in job["static_configs"] for t in s["targets"]]
    host, port = target.split(":")
    assert host in services
    published = {p.rsplit(":", 1)[1] for p in services[host]["ports"]}
    assert port in published


def test_service_container_matches_the_pod_restrictions():
    rfcls = compose()["services"]["rfcls"]
    assert rfcls["user"] == "10001:10001"
    assert rfcls["read_only"] is True
    assert rfcls["cap_drop"] == ["ALL"]
    assert rfcls["tmpfs"] == ["/tmp"]
    # torch threads from the service's default, which reads the `cpus` quota (rfmodel/cpus.py)
    assert "RFCLS_TORCH_THREADS" not in rfcls["environment"]
    # published on loopback only: a local stack is not a public service
    for service in compose()["services"].values():
        assert all(p.startswith("127.0.0.1:") for p in service.get("ports", []))
