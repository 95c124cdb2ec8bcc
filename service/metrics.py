"""Every Prometheus metric the service exports, in one place (names and labels are the contract in
docs/architecture.md; deploy/ alert rules and dashboards depend on them).

One `ServiceMetrics` per app, on its own registry, so several services (tests) never share state.

With several workers (`rfcls serve --workers N`), prometheus_client's multiprocess mode: each worker
writes its samples to files in a directory the parent names in PROMETHEUS_MULTIPROC_DIR, and
/metrics, answered by whichever worker takes the scrape, reads the files of all of them. Counters
and histograms are summed over the workers (those that have exited included), the queue and
in-flight gauges over the live ones. The sliding-window p50/p99 are computed from one process's
memory at scrape time, so they cannot be merged: they describe the worker that answered the
scrape, labelled with its pid; the histograms give quantiles over all workers.
"""

from __future__ import annotations

import math
import os
import tempfile
import threading
from collections import deque
from collections.abc import Iterable, Iterator
from contextlib import contextmanager

import numpy as np
from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, multiprocess
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.registry import Collector

# Bucket edges as multiples of the latency budget: dense around 1.0 so the histogram can tell
# "just under" from "just over", and 1.0 itself so over-budget counts are exact.
BUDGET_MULTIPLES = (
    0.001, 0.003, 0.01, 0.025, 0.05, 0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.85, 0.9, 0.95,
    1.0, 1.05, 1.1, 1.2, 1.35, 1.5, 2.0, 3.0, 5.0, 10.0,
)  # fmt: skip

OUTCOMES = ("ok", "client_error", "rejected", "timeout", "cancelled", "error")
REJECTION_REASONS = (
    "queue_full",
    "deadline",
    "too_large",
    "invalid",
    "unauthorized",
    "body_timeout",
)
STAGES = ("queue", "preprocess", "inference")
DEFAULT_WINDOW = 1024
# rfmodel.data.generator.SNR_RANGE (a test holds them equal): not imported, since the parent of
# several workers imports this module and must not load torch
TRAINED_SNR_DB = (-10.0, 30.0)
# every 5 dB across the trained range and 20 dB past it either side
SNR_BUCKETS_DB = tuple(float(v) for v in range(-30, 55, 5))
# read by prometheus_client when a process imports it: the parent sets it before workers start
MULTIPROCESS_DIR_VARIABLE = "PROMETHEUS_MULTIPROC_DIR"


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
    """p50 and p99 of the last `size` request latencies, computed at scrape time; labelled with
    `pid` when it is one worker's of several."""

    def __init__(self, backend: str, size: int = DEFAULT_WINDOW, pid: int | None = None):
        self._labels = {"backend": backend} | ({} if pid is None else {"pid": str(pid)})
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
                labels=list(self._labels),
            )
            family.add_metric(list(self._labels.values()), value)
            yield family


class ServiceMetrics:
    def __init__(
        self,
        *,
        backend: str,
        model_version: str,
        device: str,
        precision: str,
        budget_s: float,
        max_batch: int,
        routes: Iterable[str],
        window: int = DEFAULT_WINDOW,
        workers: int = 1,
    ):
        # what /metrics exposes
        self.registry = CollectorRegistry()
        self.backend = backend
        self.budget_s = budget_s
        if workers > 1:
            multiprocess.MultiProcessCollector(self.registry)
            reg = None  # this worker's samples reach /metrics through its files, not twice
        else:
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
            "Time a batch spends in each stage (queue: per request; a batch replayed from a CUDA "
            "graph computes its features in inference, preprocess is its copy in)",
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
        # what the air looks like, against what the model was trained on: input drift
        self.signal_snr = Histogram(
            "rfcls_signal_snr_db",
            "In-band SNR measured in each frame where a signal stands out of the noise (the "
            f"models were trained at {TRAINED_SNR_DB[0]:g} to {TRAINED_SNR_DB[1]:g} dB)",
            ["backend"],
            buckets=SNR_BUCKETS_DB,
            registry=reg,
        )
        self.frames_without_signal = Counter(
            "rfcls_frames_without_signal_total",
            "Frames in which nothing stands out of the noise (the answer's signal is null)",
            ["backend"],
            registry=reg,
        )
        # multiprocess_mode says how the workers' values combine (ignored with one process)
        self.budget = Gauge(
            "rfcls_latency_budget_seconds",
            "The end-to-end latency budget",
            registry=reg,
            multiprocess_mode="max",  # the same in every worker
        )
        self.queue_depth = Gauge(
            "rfcls_queue_depth",
            "Requests waiting for the model",
            registry=reg,
            multiprocess_mode="livesum",
        )
        self.queue_wait_limit = Gauge(
            "rfcls_queue_wait_limit_seconds",
            "Work ahead past which a new request is refused (503); steered by recent latencies",
            registry=reg,
            multiprocess_mode="liveall",  # each worker steers its own
        )
        self.loop_lag = Gauge(
            "rfcls_event_loop_lag_seconds",
            "How late the event loop runs a timer, the least of its last four samples; counted in "
            "the work ahead of a new request",
            registry=reg,
            multiprocess_mode="liveall",
        )
        # the engine's batch cost estimate (service/batch_cost.py): why batches are the size
        # they are, and how much work ahead admission allows
        self.batch_cost_fixed = Gauge(
            "rfcls_batch_cost_fixed_seconds",
            "Estimated device time a batch takes whatever its size",
            registry=reg,
            multiprocess_mode="liveall",
        )
        self.batch_cost_per_sample = Gauge(
            "rfcls_batch_cost_per_sample_seconds",
            "Estimated device time per IQ sample in a batch",
            registry=reg,
            multiprocess_mode="liveall",
        )
        self.batch_close = Gauge(
            "rfcls_batch_close_seconds",
            "Estimated work at which a batch is closed; a newcomer may wait one such batch",
            registry=reg,
            multiprocess_mode="liveall",
        )
        self.inflight = Gauge(
            "rfcls_inflight_requests",
            "Classification requests being handled",
            registry=reg,
            multiprocess_mode="livesum",
        )
        self.rejections = Counter(
            "rfcls_rejections_total", "Requests refused, by reason", ["reason"], registry=reg
        )
        # an info metric as the gauge the text format shows it as: Info has no multiprocess mode
        self.model_info = Gauge(
            "rfcls_model_info",
            "The model being served",
            ["backend", "model_version", "device", "precision"],
            registry=reg,
            multiprocess_mode="max",
        )
        self.latency_window = LatencyWindow(
            backend, window, pid=os.getpid() if workers > 1 else None
        )
        self.registry.register(self.latency_window)

        self.budget.set(budget_s)
        self.model_info.labels(backend, model_version, device, precision).set(1)
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
        self.signal_snr.labels(backend)
        self.frames_without_signal.labels(backend)

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

    def observe_signal(self, snr_db: np.ndarray) -> None:
        """The batch's measured SNRs [B] (NaN: no signal in that frame)."""
        found = snr_db[~np.isnan(snr_db)]
        self.frames_without_signal.labels(self.backend).inc(snr_db.size - found.size)
        histogram = self.signal_snr.labels(self.backend)
        for value in found:
            histogram.observe(float(value))

    def reject(self, reason: str) -> None:
        self.rejections.labels(reason).inc()


@contextmanager
def multiprocess_metrics_dir() -> Iterator[str]:
    """For the parent of several workers, around their whole life: a fresh directory for their
    metric files in PROMETHEUS_MULTIPROC_DIR, which the workers inherit; removed at exit."""
    with tempfile.TemporaryDirectory(prefix="rfcls-metrics-") as path:
        os.environ[MULTIPROCESS_DIR_VARIABLE] = path
        try:
            yield path
        finally:
            del os.environ[MULTIPROCESS_DIR_VARIABLE]


def worker_exited(pid: int) -> None:
    """An exited worker's live gauges (queue depth, in flight) stop counting; its counters and
    histograms stay in the totals."""
    multiprocess.mark_process_dead(pid)
