"""`rfcls bench service`: the real server under load, per attention backend.

For each backend, `rfcls serve` starts in a subprocess (RFCLS_ATTN_BACKEND picks the backend; the
shipped weights, or a random-initialised default model while none are shipped: timing does not
depend on the weights) and this process drives it over HTTP: first a closed loop (--concurrency
clients, each sending its next request when the last is answered, or about Retry-After after a
503), then Poisson arrivals at
--poisson-load times the closed loop's throughput (open loop: latency counts from each request's
scheduled time, so a stalled server is not hidden by requests that were never sent). Every
request is one recording of --samples cf32 samples.

    rfcls bench service                 # CPU, writes docs/benchmarks/service-load-cpu.*
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
import tempfile
import time
from collections import Counter
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch
from matplotlib.figure import Figure

from benchmarks.backends import BUDGET_MS, DEFAULT_INPUT_SAMPLES, add_backends_argument
from benchmarks.charts import save_bar_panels
from benchmarks.cli import add_report_arguments, device_or_none, report_out, script_main
from benchmarks.environment import command_line, hardware, load_average, report_head, versions
from benchmarks.live_service import (
    ServiceProcess,
    add_setting_argument,
    given_text,
    model_bundle,
    setting_pairs,
)
from benchmarks.load import Answer, Client, Request, closed_loop, open_loop, quantile
from preprocessing.formats import encode
from rfmodel.cli_args import positive_float, positive_int
from service.protocol.errors import RETRY_AFTER_S

WARMUP_REQUESTS = 20
REQUEST_TIMEOUT_S = 30.0


def add_arguments(p: argparse.ArgumentParser) -> None:
    add_report_arguments(
        p, __doc__, "service-load", "a smoke run: 2 s per phase", "server's device"
    )
    add_backends_argument(p)
    p.add_argument("--concurrency", type=positive_int, default=2, help="closed-loop clients")
    p.add_argument("--duration", type=positive_float, default=15.0, help="seconds per phase")
    p.add_argument(
        "--poisson-load",
        type=positive_float,
        default=0.7,
        help="Poisson arrival rate as a fraction of the closed loop's throughput (default 0.7)",
    )
    p.add_argument("--samples", type=positive_int, default=DEFAULT_INPUT_SAMPLES)
    p.add_argument("--budget-ms", type=positive_float, default=BUDGET_MS)
    add_setting_argument(p, "every backend")


def classify_request(samples: int) -> Request:
    iq = np.random.default_rng(0).standard_normal((samples, 2), dtype=np.float32)
    body = encode(iq.view(np.complex64)[:, 0], "cf32")
    headers = {"Content-Type": "application/octet-stream"}
    return Request("classify", "POST", "/v1/classify?format=cf32&top_k=1", body, headers)


def summarize(answers: list[Answer], elapsed_s: float, budget_ms: float) -> dict:
    """Client-observed latency (ms) of the answered requests, counted from the scheduled send
    time, and the server's own timings from the answers' timings_ms."""
    ok = [a for a in answers if a.status == 200]
    latency_ms = [1e3 * (a.latency_s + a.sent_late_s) for a in ok]
    server = [json.loads(a.body)["timings_ms"] for a in ok]
    return {
        "requests": len(answers),
        "answered_ok": len(ok),
        "statuses": {str(k): v for k, v in sorted(Counter(a.status for a in answers).items())},
        "elapsed_s": round(elapsed_s, 2),
        "throughput_per_s": len(ok) / elapsed_s,
        "p50_ms": quantile(latency_ms, 0.5),
        "p99_ms": quantile(latency_ms, 0.99),
        "within_budget": sum(v <= budget_ms for v in latency_ms) / len(ok) if ok else None,
        # what a client sees: a refusal or a timeout is an answer outside the budget too, so an
        # overload that is refused fast does not look like one that is served fast
        "ok_within_budget_of_all": (
            sum(v <= budget_ms for v in latency_ms) / len(answers) if answers else None
        ),
        # how late the load generator sent (open loop): large values mean the client, sharing
        # the CPU with the server, could not keep the schedule
        "send_lag_p99_ms": quantile([1e3 * a.sent_late_s for a in answers], 0.99),
        "server_median_ms": {
            stage: median([t[stage] for t in server])
            for stage in ("queue", "preprocess", "inference", "total")
        },
        # the model's own time per request, summed per answer before the median: the median of
        # the sums, not the sum of the medians
        "server_model_median_ms": median([t["preprocess"] + t["inference"] for t in server]),
    }


def median(values: list[float]) -> float | None:
    return float(np.median(values)) if values else None


async def drive(url_port: int, args: argparse.Namespace, duration_s: float) -> dict:
    request = classify_request(args.samples)
    client = Client("127.0.0.1", url_port, REQUEST_TIMEOUT_S)
    try:
        await closed_loop(client, lambda _: request, concurrency=1, count=WARMUP_REQUESTS)
        start, cpu_start = time.perf_counter(), time.process_time()
        # a refused client honours Retry-After, as real ones do: re-sent at once, refusals turn
        # into a storm the figures then describe (mha's closed loop here: 8,334 503s to 1,430
        # answers once a request came to cost more than the 6 ms queue-wait floor)
        answers = await closed_loop(
            client,
            lambda _: request,
            args.concurrency,
            duration_s=duration_s,
            pause_after_503_s=float(RETRY_AFTER_S),
        )
        closed = summarize(answers, time.perf_counter() - start, args.budget_ms)
        closed["client_cpu_share"] = client_cpu_share(start, cpu_start)
        rate = args.poisson_load * closed["throughput_per_s"]
        start, cpu_start = time.perf_counter(), time.process_time()
        answers = await open_loop(client, request, rate, duration_s)
        poisson = summarize(answers, time.perf_counter() - start, args.budget_ms)
        poisson["client_cpu_share"] = client_cpu_share(start, cpu_start)
    finally:
        client.close()
    return {"closed_loop": closed, "poisson": {"rate_per_s": rate, **poisson}}


def client_cpu_share(start: float, cpu_start: float) -> float:
    """The load generator's CPU time over the phase's wall time: near 1 (a whole core), its own
    sending and reading may be what the latencies measure, on both sides of the wire."""
    return (time.process_time() - cpu_start) / (time.perf_counter() - start)


def measure_backend(
    backend: str, args: argparse.Namespace, device: torch.device, given: dict[str, str]
) -> dict:
    duration_s = 2.0 if args.quick else args.duration
    settings = {
        **given,
        "RFCLS_ATTN_BACKEND": backend,
        "RFCLS_DEVICE": device.type,
    }
    log = Path(tempfile.gettempdir()) / f"rfcls-bench-service-{backend}.log"
    with model_bundle(backend) as model:
        settings["RFCLS_MODEL_DIR"] = str(model.path)
        with ServiceProcess(settings, log) as service:
            result = asyncio.run(drive(service.port, args, duration_s))
    return {"weights": model.weights, **result}


def run(args: argparse.Namespace) -> int:
    device = device_or_none(args, "service")
    if device is None:
        return 2
    given = setting_pairs(args.setting)  # a malformed one ends the run before any server starts
    load_at_start = load_average()
    started = time.perf_counter()
    results = {}
    for backend in args.backends:
        results[backend] = measure_backend(backend, args, device, given)
        closed, poisson = results[backend]["closed_loop"], results[backend]["poisson"]
        print(
            f"{backend}: closed loop {closed['throughput_per_s']:.1f}/s p99 "
            f"{ms(closed['p99_ms'])} ms; Poisson {poisson['rate_per_s']:.1f}/s p99 "
            f"{ms(poisson['p99_ms'])} ms",
            file=sys.stderr,
            flush=True,
        )
    report = {
        "command": command_line(),
        "device": str(device),
        "hardware": hardware(device, load_at_start),
        "versions": versions(),
        "latency_budget_ms": args.budget_ms,
        "given_settings": given,
        "load": {
            "samples_per_request": args.samples,
            "concurrency": args.concurrency,
            "duration_s": 2.0 if args.quick else args.duration,
            "poisson_load": args.poisson_load,
            "warmup_requests": WARMUP_REQUESTS,
        },
        "backends": results,
        "elapsed_s": round(time.perf_counter() - started, 1),
    }
    out = report_out(args, "service-load", device.type)
    write_report(report, out, plot_service_load, markdown)
    return 0


def write_report(
    report: dict, out: Path, plot: Callable[[dict, Path], Path], render: Callable[[dict], str]
) -> None:
    """OUT.png (its name recorded in the report as its chart), OUT.json and OUT.md."""
    out.parent.mkdir(parents=True, exist_ok=True)
    chart = plot(report, out.with_suffix(".png"))
    report["charts"] = [chart.name]
    out.with_suffix(".json").write_text(json.dumps(report, indent=2) + "\n")
    out.with_suffix(".md").write_text(render(report))
    print(f"wrote {out.with_suffix('.json')}, {out.with_suffix('.md')}, {chart}")


def markdown(report: dict) -> str:
    load, budget = report["load"], report["latency_budget_ms"]
    lines = [
        *report_head(f"Service under load ({report['device']})", report),
        f"- server: `rfcls serve` in a subprocess with its "
        f"{given_text(report['given_settings'])} (torch threads: the usable cores less "
        "one); load from the benchmark process on the same machine, which shares the CPU with "
        "the server",
        f"- each request: one recording of {load['samples_per_request']} cf32 samples, binary "
        f"POST /v1/classify; {load['warmup_requests']} warm-up requests first",
        f"- closed loop: {load['concurrency']} clients for {load['duration_s']:g} s, a refused "
        f"one waiting about Retry-After ({RETRY_AFTER_S} s) before its next request; Poisson: "
        f"{load['poisson_load']:g}x the closed loop's throughput for {load['duration_s']:g} s, "
        "latency counted from each request's scheduled time",
        "- latency: client-observed, nearest-rank p50/p99 of the answered (200) requests; "
        f"budget {budget:g} ms: the share of the answered requests within it, and the share of "
        "all requests answered (200) within it (refusals and timeouts count against it); "
        "server ms: medians of the server's own timings_ms; send lag: p99 of how late the "
        "generator sent a Poisson request (its own CPU starvation); client CPU: the load "
        "generator's CPU time over the phase's wall time (near 100 %, it may be the bottleneck)",
        "",
        "| backend | weights | load | req/s | requests | statuses | p50 ms | p99 ms "
        f"| answered within {budget:g} ms | all answered 200 within {budget:g} ms "
        "| server queue / preprocess / inference ms | send lag ms | client CPU |",
        "| --- | --- | --- | ---: | ---: | --- | ---: | ---: | ---: | ---: | --- | ---: | ---: |",
    ]
    for backend, r in report["backends"].items():
        for phase, label in (("closed_loop", "closed loop"), ("poisson", "Poisson")):
            s = r[phase]
            if phase == "poisson":
                label += f" {s['rate_per_s']:.1f}/s"
            server = s["server_median_ms"]
            stages = " / ".join(
                "-" if server[k] is None else f"{server[k]:.2f}"
                for k in ("queue", "preprocess", "inference")
            )
            within, of_all = (
                "-" if s[key] is None else f"{100 * s[key]:.1f}%"
                for key in ("within_budget", "ok_within_budget_of_all")
            )
            lines.append(
                f"| {backend} | {r['weights']} | {label} | {s['throughput_per_s']:.1f} "
                f"| {s['requests']} | {s['statuses']} | {ms(s['p50_ms'])} | {ms(s['p99_ms'])} "
                f"| {within} | {of_all} | {stages} | {ms(s['send_lag_p99_ms'])} "
                f"| {100 * s['client_cpu_share']:.0f}% |"
            )
    lines += ["", f"![service load]({report['charts'][0]})", ""]
    return "\n".join(lines)


def ms(value: float | None) -> str:
    return "-" if value is None else f"{value:.2f}"


def plot_service_load(report: dict, path: Path) -> Path:
    names = list(report["backends"])
    fig = Figure(figsize=(12, 4.5))
    left, right = fig.subplots(1, 2)
    x = np.arange(len(names))
    for offset, phase in ((-0.2, "closed_loop"), (0.2, "poisson")):
        rows = [report["backends"][b][phase] for b in names]
        left.bar(x + offset, [r["throughput_per_s"] for r in rows], 0.4, label=phase)
        p99 = [r["p99_ms"] or 0.0 for r in rows]
        p50 = [r["p50_ms"] or 0.0 for r in rows]
        right.bar(x + offset, p99, 0.4, label=f"{phase} p99", alpha=0.6)
        right.scatter(x + offset, p50, marker="_", s=200, color="black")
    right.axhline(report["latency_budget_ms"], color="red", linestyle="--", label="budget")
    left.set(ylabel="answered requests/s", title=f"Throughput ({report['device']})")
    right.set(ylabel="ms (bars p99, ticks p50)", title="Client-observed latency")
    return save_bar_panels(fig, [left, right], x, names, path)


def main(argv: list[str] | None = None) -> int:
    return script_main(sys.modules[__name__], argv)


if __name__ == "__main__":
    sys.exit(main())
