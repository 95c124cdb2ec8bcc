"""`rfcls serve --workers 2` on the shipped model: one port served by two processes, each with its
own copy of the model, and /metrics counting the requests of both. (SIGTERM with two workers:
test_shutdown.py.)

Which worker takes a connection is the kernel's choice, so requests are sent in concurrent bursts
until each worker has answered some; a worker's sliding-window p50, labelled with its pid, exists
from its first answered request on and is seen whenever that worker answers the scrape.
"""

from __future__ import annotations

import math
import os
import signal
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
import numpy as np
from live_servers import ServerProcess
from prometheus_client.parser import text_string_to_metric_families

from benchmarks.live_service import descendants
from preprocessing.formats import encode

WORKERS = 2
BURST = 8
MAX_REQUESTS = 20 * BURST
SCRAPES_PER_BURST = 6
SAMPLES = 4096


def worker_pids(parent: int) -> set[int]:
    """The parent's spawned workers, not multiprocessing's resource tracker."""
    return {
        pid
        for pid in descendants(parent)
        if b"--multiprocessing-fork" in Path(f"/proc/{pid}/cmdline").read_bytes()
    }


def loads_torch(pid: int) -> bool:
    return "libtorch" in Path(f"/proc/{pid}/maps").read_text()


def samples(url: str, name: str) -> list:
    text = httpx.get(f"{url}/metrics").text
    return [s for f in text_string_to_metric_families(text) for s in f.samples if s.name == name]


def served_by_each(server: ServerProcess, workers: set[int], pool: ThreadPoolExecutor) -> int:
    """Bursts of requests, all answered 200, until every worker has answered some; how many."""
    rng = np.random.default_rng(0)
    body = encode(0.3 * (rng.standard_normal(SAMPLES) + 1j * rng.standard_normal(SAMPLES)), "cf32")

    def classify(_: int) -> int:
        url = f"{server.url}/v1/classify?format=cf32"
        headers = {"Content-Type": "application/octet-stream"}
        return httpx.post(url, content=body, headers=headers, timeout=30).status_code

    sent, served_by = 0, set()
    deadline = time.monotonic() + 60
    while served_by != workers and sent < MAX_REQUESTS and time.monotonic() < deadline:
        assert list(pool.map(classify, range(BURST))) == [200] * BURST
        sent += BURST
        for _ in range(SCRAPES_PER_BURST):
            served_by |= {
                int(s.labels["pid"])
                for s in samples(server.url, "rfcls_latency_p50_seconds")
                if not math.isnan(s.value)
            }
    assert served_by == workers, f"only {served_by} of {workers} answered in {sent} requests"
    return sent


def test_two_workers_serve_one_port_and_metrics_count_both():
    env = {"RFCLS_DEVICE": "cpu", "RFCLS_WORKERS": str(WORKERS), "RFCLS_DEADLINE_MS": "30000",
           "RFCLS_MAX_QUEUE_WAIT_MS": "30000"}  # fmt: skip
    with ServerProcess(env) as server, ThreadPoolExecutor(BURST) as pool:
        workers = worker_pids(server.process.pid)
        assert len(workers) == WORKERS
        assert all(map(loads_torch, workers)) and not loads_torch(server.process.pid)
        sent = served_by_each(server, workers, pool)

        requests = samples(server.url, "rfcls_requests_total")
        assert sum(s.value for s in requests) == sent
        ok = [s for s in requests if s.labels["outcome"] == "ok"]
        assert sum(s.value for s in ok if s.labels["route"] == "/v1/classify") == sent
        assert samples(server.url, "rfcls_inflight_requests")[0].value == 0
        assert samples(server.url, "rfcls_model_info")[0].labels["device"] == "cpu"


def test_a_worker_whose_event_loop_stops_is_killed_and_replaced():
    """A stopped process stands for a wedged event loop: it holds its connections, answers
    nothing, and its sibling answers the probes, so only the supervisor can see it."""
    env = {"RFCLS_DEVICE": "cpu", "RFCLS_WORKERS": str(WORKERS), "RFCLS_STALL_S": "2",
           "RFCLS_DEADLINE_MS": "30000", "RFCLS_MAX_QUEUE_WAIT_MS": "30000"}  # fmt: skip
    with ServerProcess(env) as server, ThreadPoolExecutor(BURST) as pool:
        workers = worker_pids(server.process.pid)
        served_by_each(server, workers, pool)  # both serve, so both have stamped a heartbeat
        wedged = min(workers)
        os.kill(wedged, signal.SIGSTOP)
        deadline = time.monotonic() + 60
        while wedged in (now := worker_pids(server.process.pid)) or len(now) < WORKERS:
            assert time.monotonic() < deadline, f"workers {now} a minute after {wedged} stopped"
            time.sleep(0.2)
        served_by_each(server, now, pool)
    assert f"worker [{wedged}]: its event loop has not run" in server.output()
