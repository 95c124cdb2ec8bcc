"""service/metrics.py: bucket edges from the budget, the sliding-window quantiles, the counters."""

from __future__ import annotations

import math
import shutil
import subprocess

import numpy as np
import pytest
from live_servers import metric
from prometheus_client import generate_latest, values

from preprocessing.occupancy import FIELDS
from rfmodel.data.generator import SNR_RANGE
from service.engine import SNR_DB
from service.metrics import (
    MULTIPROCESS_DIR_VARIABLE,
    TRAINED_SNR_DB,
    LatencyWindow,
    ServiceMetrics,
    batch_buckets,
    budget_buckets,
    worker_exited,
)

ROUTE = "/v1/classify"


def make(budget_s: float = 0.03, window: int = 100, workers: int = 1) -> ServiceMetrics:
    return ServiceMetrics(
        backend="gqa",
        model_version="v7",
        device="cpu",
        precision="bfloat16",
        budget_s=budget_s,
        max_batch=16,
        routes=[ROUTE],
        window=window,
        workers=workers,
    )


@pytest.mark.parametrize("budget_s", [0.03, 0.007, 1 / 3, 0.25])
def test_buckets_have_an_edge_exactly_at_the_budget_and_are_dense_around_it(budget_s):
    edges = budget_buckets(budget_s)
    assert budget_s in edges
    assert edges == sorted(set(edges))
    assert sum(0.79 * budget_s <= e <= 1.21 * budget_s for e in edges) >= 8  # 0.8 to 1.2


def test_batch_buckets():
    assert batch_buckets(16) == [1.0, 2.0, 4.0, 8.0, 16.0]
    assert batch_buckets(12) == [1.0, 2.0, 4.0, 8.0, 12.0]


def linear_quantile(values: list[float], q: float) -> float:
    """The textbook definition (numpy's default 'linear'), written out."""
    xs = sorted(values)
    h = (len(xs) - 1) * q
    lo, hi = math.floor(h), math.ceil(h)
    return xs[lo] + (h - lo) * (xs[hi] - xs[lo])


def test_window_quantiles_cover_only_the_latest_requests():
    rng = np.random.default_rng(4)
    window = LatencyWindow("mha", size=200)
    assert all(math.isnan(v) for v in window.quantiles())
    old = rng.uniform(1.0, 2.0, 300).tolist()  # pushed out by the newer ones
    new = rng.lognormal(-4.0, 0.5, 200).tolist()
    for v in old + new:
        window.add(v)
    p50, p99 = window.quantiles()
    assert p50 == pytest.approx(linear_quantile(new, 0.5), rel=1e-12)
    assert p99 == pytest.approx(linear_quantile(new, 0.99), rel=1e-12)


def test_requests_feed_counters_histogram_and_window():
    m = make()
    m.observe_request(ROUTE, "ok", 0.010)
    m.observe_request(ROUTE, "ok", 0.030)  # exactly the budget: not over it
    m.observe_request(ROUTE, "ok", 0.045)
    m.observe_request(ROUTE, "client_error", 0.001)  # not in the latency window
    text = generate_latest(m.registry).decode()
    labels = {"route": ROUTE, "backend": "gqa"}
    assert metric(text, "rfcls_requests_total", outcome="ok", **labels) == 3
    assert metric(text, "rfcls_requests_over_budget_total", **labels) == 1
    bucket = {"le": "0.03", "outcome": "ok", **labels}
    assert metric(text, "rfcls_request_duration_seconds_bucket", **bucket) == 2
    assert metric(text, "rfcls_latency_p50_seconds", backend="gqa") == pytest.approx(0.030)
    info = {"backend": "gqa", "device": "cpu", "precision": "bfloat16", "model_version": "v7"}
    assert metric(text, "rfcls_model_info", **info) == 1
    assert metric(text, "rfcls_latency_budget_seconds") == 0.03
    # every outcome and rejection reason exists before it first happens
    assert metric(text, "rfcls_requests_total", outcome="timeout", **labels) == 0
    assert metric(text, "rfcls_rejections_total", reason="unauthorized") == 0


def test_measured_snr_and_frames_without_a_signal():
    m = make()
    text = generate_latest(m.registry).decode()
    assert metric(text, "rfcls_frames_without_signal_total", backend="gqa") == 0
    m.observe_signal(np.array([np.nan, -12.0, 3.0, 31.0, np.nan], dtype=np.float32))
    text = generate_latest(m.registry).decode()
    assert metric(text, "rfcls_frames_without_signal_total", backend="gqa") == 2
    assert metric(text, "rfcls_signal_snr_db_count", backend="gqa") == 3
    # the trained range's edges are bucket edges: what falls outside it can be counted
    assert metric(text, "rfcls_signal_snr_db_bucket", backend="gqa", le="-10.0") == 1
    assert metric(text, "rfcls_signal_snr_db_bucket", backend="gqa", le="30.0") == 2
    # no _sum: OpenMetrics drops it from a histogram with negative buckets (it would not rise)
    assert "rfcls_signal_snr_db_sum" not in text


def test_the_snr_metric_knows_the_measurements_and_the_trained_range():
    assert FIELDS[SNR_DB] == "snr_db"
    assert TRAINED_SNR_DB == SNR_RANGE


def test_workers_metrics_add_up_over_the_workers(tmp_path, monkeypatch):
    """Two workers' metrics, as prometheus_client's multiprocess mode keeps them: in files, one set
    per process id (faked here; a real worker's is set when prometheus_client is imported)."""
    monkeypatch.setenv(MULTIPROCESS_DIR_VARIABLE, str(tmp_path))
    workers = []
    for pid in (101, 102):
        monkeypatch.setattr(values, "ValueClass", values.MultiProcessValue(lambda pid=pid: pid))
        m = make(workers=2)
        m.observe_request(ROUTE, "ok", 0.010)
        m.inflight.inc()
        workers.append(m)
    labels = {"route": ROUTE, "backend": "gqa", "outcome": "ok"}
    text = generate_latest(workers[0].registry).decode()  # either worker answers a scrape
    assert metric(text, "rfcls_requests_total", **labels) == 2
    assert metric(text, "rfcls_inflight_requests") == 2
    assert metric(text, "rfcls_latency_budget_seconds") == 0.03
    info = {"backend": "gqa", "device": "cpu", "precision": "bfloat16", "model_version": "v7"}
    assert metric(text, "rfcls_model_info", **info) == 1
    worker_exited(102)
    text = generate_latest(workers[0].registry).decode()
    assert metric(text, "rfcls_requests_total", **labels) == 2  # what it served still counts
    assert metric(text, "rfcls_inflight_requests") == 1  # what it held does not


@pytest.mark.skipif(shutil.which("promtool") is None, reason="promtool not installed")
def test_promtool_accepts_a_populated_registry():
    m = make()
    m.observe_request(ROUTE, "ok", 0.02)
    m.observe_stage("queue", 0.0001)
    m.observe_batch(5)
    m.observe_signal(np.array([np.nan, 12.5]))
    m.reject("queue_full")
    result = subprocess.run(
        ["promtool", "check", "metrics"],
        input=generate_latest(m.registry).decode(),
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert result.returncode == 0, result.stdout + result.stderr
