"""Every Prometheus metric the service exports, in one place (names and labels are the contract in
docs/architecture.md; deploy/ alert rules and dashboards depend on them).

One `ServiceMetrics` per app, on its own registry, so several services (tests) never share state.
"""

from __future__ import annotations

import math
import threading
from collections import deque
from collections.abc import Iterable

import numpy as np
from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, Info
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.registry import Collector

# Bucket edges as multiples of the latency budget: dense around 1.0 so the histogram can tell
# "just under" from "just over", and 1.0 itself so over-budget counts are exact.
BUDGET_MULTIPLES = (
    0.001, 0.003, 0.01, 0.025, 0.05, 0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.85, 0.9, 0.95,
    1.0, 1.05, 1.1, 1.2, 1.35, 1.5, 2.0, 3.0, 5.0, 10.0,
)  # fmt: skip

OUTCOMES = ("ok", "client_error", "rejected", "timeout", "error")
REJECTION_REASONS = ("queue_full", "deadline", "too_large", "invalid", "unauthorized")
STAGES = ("queue", "preprocess", "inference")
DEFAULT_WINDOW = 1024


def budget_buckets(budget_s: float) -> list[float]:
    # 6 significant digits keep the labels readable (3e-05, not 3.0000000000000004e-05); the
    # budget itself is kept exactly
    return [budget_s if m == 1.0 else float(f"{budget_s * m:.6g}") for m in BUDGET_MULTIPLES]


def batch_buckets(max_batch: int) -> list[float]:
    edges = [1]
    while edges[-1] < max_batch:
        edges.append(min(edges[-1] * 2, max_batch))
    return [float(e) for e in edges]


class LatencyWindow(Collector):
    """p50 and p99 of the last `size` request latencies, computed at scrape time."""

    def __init__(self, backend: str, size: int = DEFAULT_WINDOW):
        self._backend = backend
        self._values: deque[float] = deque(maxlen=size)
        self._lock = threading.Lock()

    def add(self, seconds: float) -> None:
        with self._lock:
            self._values.append(seconds)

    def quantiles(self) -> tuple[float, float]:
        with self._lock:
            values = np.fromiter(self._values, dtype=np.float64)
        if values.size == 0:
            return math.nan, math.nan
        p50, p99 = np.quantile(values, [0.5, 0.99])
        return float(p50), float(p99)

    def collect(self) -> Iterable[GaugeMetricFamily]:
        p50, p99 = self.quantiles()
        for name, value, q in (("p50", p50, "median"), ("p99", p99, "99th percentile")):
            family = GaugeMetricFamily(
                f"rfcls_latency_{name}_seconds",
                f"{q} of the last {self._values.maxlen} successful request latencies",
                labels=["backend"],
            )
            family.add_metric([self._backend], value)
            yield family


class ServiceMetrics:
    def __init__(
        self,
        *,
        backend: str,
        model_version: str,
        device: str,
        budget_s: float,
        max_batch: int,
        routes: Iterable[str],
        registry: CollectorRegistry | None = None,
        window: int = DEFAULT_WINDOW,
    ):
        self.registry = registry if registry is not None else CollectorRegistry()
        self.backend = backend
        self.budget_s = budget_s
        reg = self.registry
        buckets = budget_buckets(budget_s)
        self.request_duration = Histogram(
            "rfcls_request_duration_seconds",
            "Time from request arrival to the last byte of the response",
            ["route", "backend", "outcome"],
            buckets=buckets,
            registry=reg,
        )
        self.stage_duration = Histogram(
            "rfcls_stage_duration_seconds",
            "Time a batch spends in each stage (queue: per request)",
            ["stage", "backend"],
            buckets=buckets,
            registry=reg,
        )
        self.batch_size = Histogram(
            "rfcls_batch_size",
            "Frames per model batch",
            ["backend"],
            buckets=batch_buckets(max_batch),
            registry=reg,
        )
        self.requests = Counter(
            "rfcls_requests_total",
            "Classification requests by outcome",
            ["route", "backend", "outcome"],
            registry=reg,
        )
        self.over_budget = Counter(
            "rfcls_requests_over_budget_total",
            "Classification requests that took longer than the latency budget",
            ["route", "backend"],
            registry=reg,
        )
        self.frames = Counter(
            "rfcls_frames_total", "IQ frames classified", ["backend"], registry=reg
        )
        self.budget = Gauge(
            "rfcls_latency_budget_seconds", "The end-to-end latency budget", registry=reg
        )
        self.queue_depth = Gauge(
            "rfcls_queue_depth", "Requests waiting for the model", registry=reg
        )
        self.inflight = Gauge(
            "rfcls_inflight_requests", "Classification requests being handled", registry=reg
        )
        self.rejections = Counter(
            "rfcls_rejections_total", "Requests refused, by reason", ["reason"], registry=reg
        )
        self.model_info = Info("rfcls_model", "The model being served", registry=reg)
        self.latency_window = LatencyWindow(backend, window)
        reg.register(self.latency_window)

        self.budget.set(budget_s)
        self.model_info.info({"backend": backend, "model_version": model_version, "device": device})
        # every series exists from the start, so rate() and alerts see 0 rather than nothing
        for route in routes:
            self.over_budget.labels(route, backend)
            for outcome in OUTCOMES:
                self.requests.labels(route, backend, outcome)
        for reason in REJECTION_REASONS:
            self.rejections.labels(reason)
        for stage in STAGES:
            self.stage_duration.labels(stage, backend)
        self.batch_size.labels(backend)
        self.frames.labels(backend)

    def observe_request(self, route: str, outcome: str, seconds: float) -> None:
        self.request_duration.labels(route, self.backend, outcome).observe(seconds)
        self.requests.labels(route, self.backend, outcome).inc()
        if seconds > self.budget_s:
            self.over_budget.labels(route, self.backend).inc()
        # only successes feed p50/p99: a burst of fast 4xx answers must not make the service
        # look faster than it is
        if outcome == "ok":
            self.latency_window.add(seconds)

    def observe_stage(self, stage: str, seconds: float) -> None:
        self.stage_duration.labels(stage, self.backend).observe(seconds)

    def observe_batch(self, n_frames: int) -> None:
        self.batch_size.labels(self.backend).observe(n_frames)
        self.frames.labels(self.backend).inc(n_frames)

    def reject(self, reason: str) -> None:
        self.rejections.labels(reason).inc()
