"""End to end on loopback: the real Prometheus server, configured from deploy/prometheus (scrape job
and rule files), scrapes a real `python -m service serve` and evaluates the project's recording
rules; the p99 and over-budget rules read back through the HTTP API agree with the service's own
histogram."""

from __future__ import annotations

import math
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import numpy as np
import pytest
import yaml
from deploy_tools import DEPLOY, ROOT, contract_metrics, tool
from prometheus_client.parser import text_string_to_metric_families

# the service tests' helpers start the real server on a tiny random model
sys.path.insert(0, str(ROOT / "tests" / "service"))
from live_servers import ServerProcess, build_tiny_bundle, free_port

pytestmark = pytest.mark.slow

INTERVAL = "1s"  # scrape and rule evaluation, so the test waits seconds, not minutes
N_REQUESTS = 200
SAMPLES_PER_REQUEST = 4096
P99 = "backend:rfcls_request_duration_seconds:p99_rate5m"
OVER_BUDGET = "backend:rfcls_request_duration_over_budget:ratio_rate5m"
BUDGET_S = 0.03


def wait_for(check, timeout: float, what: str):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        result = check()
        if result is not None:
            return result
        time.sleep(0.2)
    pytest.fail(f"timed out after {timeout} s waiting for {what}")


def prometheus_config(service_port: int) -> dict:
    config = yaml.safe_load((DEPLOY / "prometheus" / "prometheus.yml").read_text())
    config["global"].update(scrape_interval=INTERVAL, evaluation_interval=INTERVAL)
    config["rule_files"] = [str(DEPLOY / "prometheus" / "rules" / "*.yml")]
    (job,) = [j for j in config["scrape_configs"] if j["job_name"] == "rfcls"]
    job["static_configs"] = [{"targets": [f"127.0.0.1:{service_port}"]}]
    config["scrape_configs"] = [job]
    return config


class PrometheusProcess:
    def __init__(self, config: dict, workdir: Path):
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        config_file = workdir / "prometheus.yml"
        config_file.write_text(yaml.safe_dump(config))
        self.log = workdir / "prometheus.log"
        self.process = subprocess.Popen(
            [
                tool("prometheus"),
                f"--config.file={config_file}",
                f"--storage.tsdb.path={workdir / 'data'}",
                f"--web.listen-address=127.0.0.1:{self.port}",
                "--log.level=warn",
            ],
            stdout=self.log.open("w"),
            stderr=subprocess.STDOUT,
        )

    def wait_ready(self) -> None:
        def ready():
            assert self.process.poll() is None, f"prometheus exited:\n{self.log.read_text()}"
            try:
                return httpx.get(f"{self.url}/-/ready", timeout=1).status_code == 200 or None
            except httpx.TransportError:
                return None

        wait_for(ready, 20, "Prometheus to be ready")

    def query(self, expr: str) -> list[dict]:
        answer = httpx.get(f"{self.url}/api/v1/query", params={"query": expr}, timeout=5).json()
        assert answer["status"] == "success", answer
        return answer["data"]["result"]

    def stop(self) -> None:
        self.process.terminate()
        try:
            self.process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()


@pytest.fixture
def stack(tmp_path: Path) -> Iterator[tuple[ServerProcess, PrometheusProcess]]:
    tool("prometheus")  # skips (or, in CI, fails) before anything is started
    bundle = build_tiny_bundle(tmp_path / "tiny-mha")
    # both start at once: Prometheus scrapes a target that is not up yet as simply down
    server = ServerProcess(
        {"RFCLS_MODEL_DIR": str(bundle), "RFCLS_DEVICE": "cpu", "RFCLS_TORCH_THREADS": "1"}
    )
    prometheus = PrometheusProcess(prometheus_config(server.port), tmp_path)
    try:
        prometheus.wait_ready()
        with server:
            yield server, prometheus
    finally:
        prometheus.stop()


def duration_buckets(service: ServerProcess) -> dict[float, float]:
    """{le: cumulative count} of the service's request-duration histogram, from its /metrics."""
    text = httpx.get(f"{service.url}/metrics", timeout=5).text
    buckets: dict[float, float] = {}
    for family in text_string_to_metric_families(text):
        if family.name == "rfcls_request_duration_seconds":
            for sample in family.samples:
                if sample.name.endswith("_bucket"):
                    le = float(sample.labels["le"])
                    buckets[le] = buckets.get(le, 0.0) + sample.value
    return buckets


def histogram_quantile(q: float, buckets: dict[float, float]) -> float:
    """Prometheus's estimate, written out: find the bucket holding rank q * total and interpolate
    linearly inside it (from 0 for the first bucket)."""
    edges = sorted(buckets)
    rank = q * buckets[math.inf]
    k = next(k for k, le in enumerate(edges) if buckets[le] >= rank)
    lower, below = (edges[k - 1], buckets[edges[k - 1]]) if k > 0 else (0.0, 0.0)
    if edges[k] == math.inf:
        return lower
    return lower + (edges[k] - lower) * (rank - below) / (buckets[edges[k]] - below)


def test_prometheus_records_p99_and_budget_share_from_the_live_service(stack):
    service, prometheus = stack
    rng = np.random.default_rng(11)
    client = httpx.Client(base_url=service.url, timeout=10)

    def classify(n: int) -> None:
        for _ in range(n):
            iq = rng.standard_normal(2 * SAMPLES_PER_REQUEST).astype(np.float32).tobytes()
            response = client.post(
                "/v1/classify",
                params={"format": "cf32"},
                content=iq,
                headers={"content-type": "application/octet-stream"},
            )
            assert response.status_code == 200, response.text

    def scraped_total(total: int):
        def check():
            result = prometheus.query('sum(rfcls_request_duration_seconds_count{job="rfcls"})')
            return True if result and float(result[0]["value"][1]) == total else None

        wait_for(check, 15, f"a scrape showing {total} requests")

    # The histogram's series appear with the first request; once Prometheus holds them, its
    # first sample is exactly `before`, and rate() over the window sees after - before.
    classify(1)
    scraped_total(1)
    before = duration_buckets(service)
    classify(N_REQUESTS)
    scraped_total(1 + N_REQUESTS)
    after = duration_buckets(service)
    time.sleep(2.5)  # at least two rule evaluations read the final scrape

    p99_series = prometheus.query(P99)
    assert len(p99_series) == 1, p99_series
    (series,) = p99_series
    assert series["metric"] == {"__name__": P99, "job": "rfcls", "backend": "mha"}
    p99 = float(series["value"][1])

    delta = {le: after[le] - before[le] for le in after}
    assert delta[math.inf] == N_REQUESTS
    # rate() extrapolates each bucket by a slightly different factor (by how close its first
    # sample is to zero), about a percent here; that moves the quantile Prometheus estimates by
    # about a percent of rank, which across a sparse tail bucket can be most of its width
    exact = histogram_quantile(0.99, delta)
    low, high = histogram_quantile(0.98, delta), histogram_quantile(0.999, delta)
    assert low <= p99 <= high, f"p99 {p99}: exact {exact}, allowed [{low}, {high}]"
    assert p99 > float(
        prometheus.query("backend:rfcls_request_duration_seconds:p50_rate5m")[0]["value"][1]
    )

    (share,) = prometheus.query(OVER_BUDGET)
    expected_share = 1 - delta[BUDGET_S] / delta[math.inf]
    assert float(share["value"][1]) == pytest.approx(expected_share, abs=0.02)


def test_the_service_exports_exactly_the_contract_metrics(tmp_path: Path):
    """What dashboards, rules and alerts are checked against (docs/architecture.md) is what the
    service serves: every metric in the table, of its type, and no rfcls metric outside it."""
    bundle = build_tiny_bundle(tmp_path / "tiny-mha")
    with ServerProcess({"RFCLS_MODEL_DIR": str(bundle), "RFCLS_DEVICE": "cpu"}) as server:
        iq = np.random.default_rng(3).standard_normal(2 * 1024).astype(np.float32).tobytes()
        answer = httpx.post(
            f"{server.url}/v1/classify",
            params={"format": "cf32"},
            content=iq,
            headers={"content-type": "application/octet-stream"},
        )
        assert answer.status_code == 200, answer.text
        text = httpx.get(f"{server.url}/metrics", timeout=5).text
    exported = {}
    for family in text_string_to_metric_families(text):
        # prometheus_client adds a _created timestamp beside each counter and histogram, which
        # the text parser reads as gauges of their own
        if family.name.startswith("rfcls_") and not family.name.endswith("_created"):
            # the parser names a counter's family without its _total suffix
            name = family.name + "_total" if family.type == "counter" else family.name
            exported[name] = family.type
    assert exported == contract_metrics()
