"""`rfcls bench batching`: the real server, one frame per request, with dynamic batching on and off.

`rfcls serve` runs in a subprocess (shipped weights of --backend, else a random-initialised model of
the same size: timing does not depend on the weights) and this process drives it over HTTP. Every
request is one frame of --samples cf32 samples, binary POST /v1/classify.

1. One at a time, default settings: warm-up requests, then --requests sequential ones. The
   client-observed p50/p99, the server's own preprocess + inference (from each answer's
   timings_ms) and the service's overhead: end-to-end p50 less the preprocess + inference p50.
2. Under concurrent load, batching on (the default settings) and off (RFCLS_MAX_BATCH=1), one
   server each: per --concurrency, a closed loop of that many clients for --duration seconds
   after a warm-up. Answered frames/s, statuses, p50/p99 of the answered requests and the
   server's mean batch (from /metrics); then on/off throughput per concurrency.

Checks: one at a time, p99 within --budget-ms and overhead under 2 ms; at the highest
concurrency, batching on gives at least 3x the frames/s of batch-1 serving and its p99 is within
the budget (exit status 1 when one fails; a --quick run reports them and exits 0: its few
requests cannot judge them, and on a CPU batching gains 1.0-1.2x, not 3x). A client refused with
503 waits about the server's Retry-After before its next request.

    rfcls bench batching                 # CPU, writes docs/benchmarks/batching-cpu.*
"""

from __future__ import annotations

import argparse
import asyncio
import dataclasses
import math
import sys
import time
from collections.abc import Awaitable, Iterator
from contextlib import AbstractContextManager
from dataclasses import dataclass
from pathlib import Path

import httpx
import numpy as np
import torch
from matplotlib.figure import Figure

from benchmarks.backends import BUDGET_MS
from benchmarks.charts import save_bar_panels
from benchmarks.cli import add_report_arguments, device_or_none, report_out, script_main
from benchmarks.environment import command_line, hardware, load_average, report_head, versions
from benchmarks.live_service import (
    Series,
    ServiceProcess,
    WatchedService,
    add_setting_argument,
    given_text,
    scrape,
    series,
    setting_pairs,
    settings_of,
    watched_service,
)
from benchmarks.load import Answer, Client, Request, closed_loop
from benchmarks.service_load import (
    REQUEST_TIMEOUT_S,
    classify_request,
    ms,
    positive_float,
    summarize,
    write_report,
)
from rfmodel.cli_args import positive_int
from rfmodel.config import BACKENDS
from service.protocol.errors import RETRY_AFTER_S

OVERHEAD_LIMIT_MS = 2.0
THROUGHPUT_RATIO_GOAL = 3.0
RETRY_AFTER_MS = 1e3 * float(RETRY_AFTER_S)
# the server settings of each mode, on top of its defaults
MODES: dict[str, dict[str, str]] = {"on": {}, "off": {"RFCLS_MAX_BATCH": "1"}}


@dataclass(frozen=True)
class Load:
    """What one run sends: the defaults are the full run's (FULL); --quick starts from QUICK;
    options override either."""

    samples: int = 32_768  # per frame, one frame per request
    requests: int = 300  # one at a time
    warmup_requests: int = 20
    concurrency: tuple[int, ...] = (16, 64)
    duration_s: float = 10.0  # per concurrency and mode
    warmup_s: float = 2.0  # a closed loop before each measured one, its answers dropped


FULL = Load()
QUICK = Load(
    samples=4096, requests=20, warmup_requests=5, concurrency=(2, 4), duration_s=1.0, warmup_s=0.3
)


def positive_ints(text: str) -> tuple[int, ...]:
    """'16,64' -> (16, 64), sorted, each at least 1."""
    try:
        values = tuple(sorted({positive_int(v) for v in text.split(",") if v.strip()}))
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a list like 16,64") from None
    if not values:
        raise argparse.ArgumentTypeError("give at least one count")
    return values


def add_arguments(p: argparse.ArgumentParser) -> None:
    add_report_arguments(
        p,
        __doc__,
        "batching",
        f"a smoke run: {QUICK.samples} samples, {QUICK.duration_s:g} s per phase, "
        f"concurrency {','.join(map(str, QUICK.concurrency))}",
        "server's device",
    )
    p.add_argument("--backend", choices=BACKENDS, default="mha", help="default mha")
    p.add_argument("--samples", type=positive_int, help=f"per frame (default {FULL.samples})")
    p.add_argument("--requests", type=positive_int, help=f"one at a time (default {FULL.requests})")
    p.add_argument(
        "--concurrency",
        type=positive_ints,
        help=f"comma-separated clients (default {','.join(map(str, FULL.concurrency))})",
    )
    p.add_argument(
        "--duration",
        type=positive_float,
        help=f"seconds per concurrency and mode (default {FULL.duration_s:g})",
    )
    p.add_argument("--budget-ms", type=positive_float, default=BUDGET_MS)
    add_setting_argument(p, "both modes")
    p.add_argument(
        "--pause-after-503-ms",
        type=positive_float,
        default=RETRY_AFTER_MS,
        help="how long a refused client waits before its next request (default the server's "
        f"Retry-After, {RETRY_AFTER_MS:g} ms)",
    )


@dataclass(frozen=True)
class Plan:
    load: Load
    backend: str
    device: torch.device
    budget_ms: float
    pause_after_503_ms: float
    settings: dict[str, str] = dataclasses.field(default_factory=dict)  # RFCLS_* for both modes

    @classmethod
    def of(cls, args: argparse.Namespace, device: torch.device) -> Plan:
        given = {
            "samples": args.samples,
            "requests": args.requests,
            "concurrency": args.concurrency,
            "duration_s": args.duration,
        }
        preset = QUICK if args.quick else FULL
        load = dataclasses.replace(preset, **{k: v for k, v in given.items() if v is not None})
        settings = setting_pairs(args.setting)
        return cls(load, args.backend, device, args.budget_ms, args.pause_after_503_ms, settings)


# ---- measuring -------------------------------------------------------------------------------


def server_env(mode: str, plan: Plan) -> dict[str, str]:
    return {
        "RFCLS_DEVICE": plan.device.type,
        "RFCLS_LATENCY_BUDGET_MS": f"{plan.budget_ms:g}",
        **plan.settings,
        **MODES[mode],
    }


def batching_server(mode: str, plan: Plan) -> AbstractContextManager[WatchedService]:
    return watched_service(plan.backend, server_env(mode, plan), f"batching-{mode}")


async def one_at_a_time(port: int, plan: Plan, request: Request) -> dict:
    client = Client("127.0.0.1", port, REQUEST_TIMEOUT_S)
    try:
        await closed_loop(client, lambda _: request, 1, count=plan.load.warmup_requests)
        start = time.perf_counter()
        answers = await closed_loop(client, lambda _: request, 1, count=plan.load.requests)
        elapsed = time.perf_counter() - start
    finally:
        client.close()
    return sequential_summary(summarize(answers, elapsed, plan.budget_ms))


def sequential_summary(summary: dict) -> dict:
    """summarize()'s figures and the service's overhead: end-to-end p50 less the p50 of the
    server's preprocess + inference."""
    model_ms = summary["server_model_median_ms"]
    overhead = None if model_ms is None else summary["p50_ms"] - model_ms
    return {**summary, "overhead_ms": overhead}


async def under_load(service: ServiceProcess, plan: Plan, request: Request) -> dict[str, dict]:
    """Per concurrency, summarize()'s figures, and from the server's metrics its mean batch and
    its own share of answers within the budget over the measured closed loop, and its batch cost
    estimate at the end."""
    client = Client("127.0.0.1", service.port, REQUEST_TIMEOUT_S)
    results = {}
    try:
        for clients in plan.load.concurrency:
            await clients_loop(client, request, clients, plan.load.warmup_s, plan)
            metrics = scrape(service.url)
            before = batch_totals(metrics, plan.backend)
            timed_before = answered_in_budget(metrics, plan.backend, plan.budget_ms)
            start = time.perf_counter()
            answers = await clients_loop(client, request, clients, plan.load.duration_s, plan)
            elapsed = time.perf_counter() - start
            metrics = scrape(service.url)
            timed = answered_in_budget(metrics, plan.backend, plan.budget_ms)
            results[str(clients)] = {
                **summarize(answers, elapsed, plan.budget_ms),
                "server_within_budget": ratio_between(timed_before, timed),
                "mean_batch": ratio_between(before, batch_totals(metrics, plan.backend)),
                "engine_estimate_ms": engine_estimate_ms(metrics, plan.load.samples),
            }
    finally:
        client.close()
    return results


def clients_loop(
    client: Client, request: Request, clients: int, duration_s: float, plan: Plan
) -> Awaitable[list[Answer]]:
    return closed_loop(
        client,
        lambda _: request,
        clients,
        duration_s=duration_s,
        pause_after_503_s=plan.pause_after_503_ms / 1e3,
    )


def batch_totals(metrics: dict[Series, float], backend: str) -> tuple[float, float]:
    """Frames and batches the server had run at a scrape (its rfcls_batch_size histogram)."""
    return (
        metrics[series("rfcls_batch_size_sum", backend=backend)],
        metrics[series("rfcls_batch_size_count", backend=backend)],
    )


def answered_in_budget(
    metrics: dict[Series, float], backend: str, budget_ms: float
) -> tuple[float, float]:
    """How many answered /v1/classify requests the server had timed within the budget at a
    scrape (its duration histogram has a bucket edge exactly there), and how many in all:
    beside the client's figures, what the server itself saw, without the load generator's own
    delays."""
    labels = {"route": "/v1/classify", "backend": backend, "outcome": "ok"}
    within = [
        value
        for (name, pairs), value in metrics.items()
        if name == "rfcls_request_duration_seconds_bucket"
        and labels.items() <= dict(pairs).items()
        and math.isclose(float(dict(pairs)["le"]), budget_ms / 1e3)
    ]
    return within[0], metrics[series("rfcls_request_duration_seconds_count", **labels)]


def engine_estimate_ms(metrics: dict[Series, float], frame_samples: int) -> dict[str, float]:
    """The engine's batch cost estimate at a scrape: what sized its batches and how much work
    ahead its admission allowed."""
    gauge = {name: value for (name, _), value in metrics.items()}
    return {
        "fixed": 1e3 * gauge["rfcls_batch_cost_fixed_seconds"],
        "per_frame": 1e3 * gauge["rfcls_batch_cost_per_sample_seconds"] * frame_samples,
        "close": 1e3 * gauge["rfcls_batch_close_seconds"],
        "queue_wait_limit": 1e3 * gauge["rfcls_queue_wait_limit_seconds"],
    }


def ratio_between(before: tuple[float, float], after: tuple[float, float]) -> float | None:
    """(numerator, denominator) counters at two scrapes -> how much the first grew per unit of
    the second over the interval (frames per batch; answers within the budget per answer)."""
    numerator, denominator = after[0] - before[0], after[1] - before[1]
    return numerator / denominator if denominator else None


# ---- the verdict -----------------------------------------------------------------------------


def throughput_ratios(concurrent: dict[str, dict[str, dict]]) -> dict[str, float | None]:
    """Batching on over off, answered frames/s, per concurrency; None where off answered none."""
    on, off = concurrent["on"], concurrent["off"]
    return {
        clients: on[clients]["throughput_per_s"] / off[clients]["throughput_per_s"]
        if off[clients]["throughput_per_s"]
        else None
        for clients in on
    }


def checks(
    sequential: dict, concurrent: dict[str, dict[str, dict]], budget_ms: float
) -> dict[str, bool]:
    top = max(concurrent["on"], key=int)
    ratio = throughput_ratios(concurrent)[top]
    top_p99 = concurrent["on"][top]["p99_ms"]
    overhead = sequential["overhead_ms"]
    return {
        f"one at a time: p99 <= {budget_ms:g} ms": within(sequential["p99_ms"], budget_ms),
        f"one at a time: service overhead < {OVERHEAD_LIMIT_MS:g} ms": (
            overhead is not None and overhead < OVERHEAD_LIMIT_MS
        ),
        f"{top} clients: batching on >= {THROUGHPUT_RATIO_GOAL:g}x the frames/s of batch-1": (
            ratio is not None and ratio >= THROUGHPUT_RATIO_GOAL
        ),
        f"{top} clients: batching on p99 <= {budget_ms:g} ms": within(top_p99, budget_ms),
    }


def within(p99_ms: float | None, budget_ms: float) -> bool:
    """No answered request is no evidence of meeting the budget."""
    return p99_ms is not None and p99_ms <= budget_ms


def run(args: argparse.Namespace) -> int:
    device = device_or_none(args, "batching")
    if device is None:
        return 2
    plan = Plan.of(args, device)
    request = classify_request(plan.load.samples)
    load_at_start, started = load_average(), time.perf_counter()
    with batching_server("on", plan) as server:
        weights = server.model.weights
        precision = httpx.get(f"{server.service.url}/v1/model", timeout=10).json()["precision"]
        # one at a time on the default settings, which are also batching on
        sequential = asyncio.run(one_at_a_time(server.service.port, plan, request))
        concurrent = {"on": asyncio.run(under_load(server.service, plan, request))}
    print_mode("on", concurrent["on"])
    with batching_server("off", plan) as server:
        concurrent["off"] = asyncio.run(under_load(server.service, plan, request))
    print_mode("off", concurrent["off"])
    verdict = checks(sequential, concurrent, plan.budget_ms)
    report = {
        "command": command_line(),
        "device": str(device),
        "hardware": hardware(device, load_at_start),
        "versions": versions(),
        "model": {"backend": plan.backend, "weights": weights, "precision": precision},
        "latency_budget_ms": plan.budget_ms,
        "load": {**dataclasses.asdict(plan.load), "pause_after_503_ms": plan.pause_after_503_ms},
        "given_settings": plan.settings,
        "settings": {mode: served_settings(mode, plan) for mode in MODES},
        "one_at_a_time": sequential,
        "concurrent": concurrent,
        "throughput_ratio": throughput_ratios(concurrent),
        "checks": verdict,
        "passed": all(verdict.values()),
        "elapsed_s": round(time.perf_counter() - started, 1),
    }
    write_report(report, report_out(args, "batching", device.type), plot_batching, markdown)
    for name, ok in verdict.items():
        print(f"{'PASS' if ok else 'FAIL'}  {name}", file=sys.stderr)
    if args.quick:  # a smoke run's few requests and clients cannot judge the goals
        print("(a --quick run: the checks are reported, not judged)", file=sys.stderr)
        return 0
    return 0 if report["passed"] else 1


def served_settings(mode: str, plan: Plan) -> dict:
    settings = settings_of(server_env(mode, plan))
    return {
        "max_batch": settings.max_batch,
        "max_wait_ms": settings.max_wait_ms,
        "max_queue_wait_ms": settings.effective_max_queue_wait_ms,
        "max_queue_wait_ceiling_ms": settings.effective_max_queue_wait_ceiling_ms,
        "max_queue": settings.max_queue,
        "deadline_ms": settings.effective_deadline_ms,
        "cuda_graphs": settings.cuda_graphs,
        "workers": settings.workers,
    }


def print_mode(mode: str, results: dict[str, dict]) -> None:
    for clients, r in results.items():
        print(
            f"batching {mode}, {clients} clients: {r['throughput_per_s']:.1f} frames/s, "
            f"p99 {ms(r['p99_ms'])} ms, statuses {r['statuses']}",
            file=sys.stderr,
            flush=True,
        )


# ---- the report ------------------------------------------------------------------------------


def markdown(report: dict) -> str:
    load, budget, seq = report["load"], report["latency_budget_ms"], report["one_at_a_time"]
    on, off = report["settings"]["on"], report["settings"]["off"]
    model = report["model"]
    lines = [
        *report_head(f"Dynamic batching ({report['device']})", report),
        f"- model: {model['backend']}, {model['weights']} weights, served in {model['precision']}; "
        f"each request one frame of {load['samples']} cf32 samples, binary POST /v1/classify",
        f"- server: `rfcls serve` in a subprocess, {given_text(report['given_settings'])} "
        f"({on['workers']} worker process(es), CUDA graphs {'on' if on['cuda_graphs'] else 'off'}"
        f" where the device is a GPU; batching on: max batch {on['max_batch']}, max wait "
        f"{on['max_wait_ms']:g} ms, queue-wait limit "
        f"{on['max_queue_wait_ms']:g} ms rising to {on['max_queue_wait_ceiling_ms']:g} ms while "
        "answers are quick); batching off: the same with max batch "
        f"{off['max_batch']}; torch threads: the usable cores less one; load from this "
        "benchmark's process on the same machine",
        f"- latency: client-observed, from writing the request to reading the answer; "
        f"nearest-rank p50/p99 of the answered (200) requests; budget {budget:g} ms",
        "",
        f"## One at a time ({load['requests']} sequential requests after "
        f"{load['warmup_requests']} warm-up)",
        "",
        "| requests | statuses | p50 ms | p99 ms | server preprocess + inference p50 ms "
        "| overhead ms |",
        "| ---: | --- | ---: | ---: | ---: | ---: |",
        f"| {seq['requests']} | {seq['statuses']} | {ms(seq['p50_ms'])} | {ms(seq['p99_ms'])} "
        f"| {ms(seq['server_model_median_ms'])} | {ms(seq['overhead_ms'])} |",
        "",
        f"## Concurrent clients ({load['duration_s']:g} s each after {load['warmup_s']:g} s "
        "of warm-up)",
        "",
        "| batching | clients | frames/s | requests | statuses | p50 ms | p99 ms "
        f"| within {budget:g} ms | server: within {budget:g} ms | mean batch | on/off frames/s "
        "| engine estimate ms: fixed + frame / close / limit |",
        "| --- | ---: | ---: | ---: | --- | ---: | ---: | ---: | ---: | ---: | ---: | --- |",
        *concurrent_rows(report),
        "",
        "| check | result |",
        "| --- | --- |",
        *(f"| {name} | {'PASS' if ok else 'FAIL'} |" for name, ok in report["checks"].items()),
        "",
        "Notes:",
        "",
        "- overhead: end-to-end p50 less the median of each answer's preprocess + inference "
        "(timings_ms): HTTP, reading and decoding the body, queueing, the JSON answer, and the "
        "client's own time, which shares the cores with the server",
        f"- a client refused with 503 waits about {load['pause_after_503_ms']:g} ms (0.5x to "
        "1.5x, at random, so refused clients do not come back in lock-step) before its next "
        "request (--pause-after-503-ms, default the server's Retry-After): one that comes back "
        f"sooner sends {load['samples'] * 8 // 1024} KiB bodies the server reads only to refuse, "
        "and the figures then describe that flood; frames/s, p50 and p99 count only the "
        "answered requests, so read the statuses beside them (503: refused on arrival, its "
        f"queue too long; 504: dropped after waiting past its {on['deadline_ms']:g} ms deadline)",
        "- server: within the budget: the share of the loop's answered requests the server "
        "itself timed within the budget (rfcls_request_duration_seconds, whose buckets have an "
        "edge at the budget): from the arrival of the request to its answer's last byte, "
        "without the load generator's own delays",
        "- mean batch: frames per model batch over the measured loop, from the server's "
        "rfcls_batch_size histogram (/metrics)",
        "- engine estimate: at the end of the loop, the engine's fitted batch cost (a fixed part "
        "plus a part per frame of this length), the work at which it closes a batch and the "
        "queue-wait limit (service/batch_cost.py, service/admission.py; /metrics)",
        "",
        f"![throughput and p99]({report['charts'][0]})",
        "",
    ]
    return "\n".join(lines)


def concurrent_rows(report: dict) -> Iterator[str]:
    for mode, results in report["concurrent"].items():
        for clients, r in results.items():
            ratio = report["throughput_ratio"][clients]
            e = r["engine_estimate_ms"]
            yield (
                f"| {mode} | {clients} | {r['throughput_per_s']:.1f} | {r['requests']} "
                f"| {r['statuses']} | {ms(r['p50_ms'])} | {ms(r['p99_ms'])} "
                f"| {percent(r['within_budget'])} | {percent(r['server_within_budget'])} "
                f"| {ms(r['mean_batch'])} | {times(ratio) if mode == 'on' else ''} "
                f"| {e['fixed']:.2f} + {e['per_frame']:.2f} / {e['close']:.2f} "
                f"/ {e['queue_wait_limit']:.2f} |"
            )


def percent(share: float | None) -> str:
    return "-" if share is None else f"{100 * share:.1f}%"


def times(ratio: float | None) -> str:
    return "-" if ratio is None else f"{ratio:.2f}x"


def plot_batching(report: dict, path: Path) -> Path:
    clients = list(report["concurrent"]["on"])
    x = np.arange(len(clients))
    fig = Figure(figsize=(12, 4.5))
    left, right = fig.subplots(1, 2)
    for offset, mode in ((-0.2, "on"), (0.2, "off")):
        rows = [report["concurrent"][mode][c] for c in clients]
        bars = left.bar(x + offset, [r["throughput_per_s"] for r in rows], 0.4, label=mode)
        left.bar_label(bars, fmt="%.0f", fontsize="small")
        right.bar(x + offset, [r["p99_ms"] or 0.0 for r in rows], 0.4, label=f"{mode} p99")
    right.axhline(
        report["one_at_a_time"]["p99_ms"] or 0.0,
        color="gray",
        linestyle=":",
        label="one at a time p99",
    )
    right.axhline(report["latency_budget_ms"], color="red", linestyle="--", label="budget")
    left.set(
        ylabel="answered frames/s", title=f"Throughput, batching on vs off ({report['device']})"
    )
    right.set(ylabel="ms", title="Client-observed p99 of the answered requests")
    for ax in (left, right):
        ax.margins(y=0.3)  # room for the legend above the bars
    return save_bar_panels(fig, [left, right], x, [f"{c} clients" for c in clients], path)


def main(argv: list[str] | None = None) -> int:
    return script_main(sys.modules[__name__], argv)


if __name__ == "__main__":
    sys.exit(main())
