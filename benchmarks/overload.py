"""Overload: the real server (`rfcls serve`, a subprocess) offered FACTOR x its measured capacity
by a separate load process, with Poisson arrivals.

    python -m benchmarks.overload    # writes docs/benchmarks/overload-{cpu,cuda}.{json,md,png}

First WARMUP_S seconds of the request, unmeasured; then the capacity: the most classifications
per second a closed loop of --concurrency clients gets answered (--capacity skips this and takes
a figure from the benchmarks). Then --factor x that rate for --duration seconds. Passes when
every request is answered, the admitted requests' p99 is within the latency budget, every refusal
is a 503 with Retry-After answered within the budget, and the server's resident memory at the end
is within MEMORY_BOUND_MIB of where it was before (with --setting RFCLS_WORKERS=N, the memory of
the server and its workers together).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
import time
from collections import Counter
from pathlib import Path

import numpy as np

from benchmarks.cli import DOCS, script_main
from benchmarks.environment import command_line, hardware, hardware_lines, load_average, versions
from benchmarks.live_service import (
    ServiceProcess,
    scrape,
    series,
    setting_pairs,
    settings_of,
    watched_service,
)
from benchmarks.load import Answer, Client, Request, closed_loop, open_loop, quantile
from preprocessing.formats import encode
from rfmodel.cli_args import pick_device, positive_float, positive_int
from service.protocol.errors import RETRY_AFTER_S
from service.protocol.instrumentation import outcome

MEMORY_BOUND_MIB = 32
WARMUP_S = 2.0
DEFAULT_SAMPLES = 4096  # the default input length of the service benchmarks (31 tokens)
# below this share of admitted answers the closed loop measured refusals, not a capacity
CAPACITY_ADMITTED_SHARE = 0.9


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--backend", default="mha", help="attention backend to serve (default mha)")
    p.add_argument(
        "--samples", type=positive_int, default=DEFAULT_SAMPLES, help="IQ samples per request"
    )
    p.add_argument("--factor", type=positive_float, default=3.0, help="offered load / capacity")
    p.add_argument("--duration", type=positive_float, default=30.0, help="seconds of overload")
    p.add_argument("--capacity", type=positive_float, help="requests/s; default: measure it first")
    p.add_argument(
        "--capacity-duration", type=positive_float, default=15.0, help="seconds to measure it"
    )
    p.add_argument(
        "--concurrency", type=positive_int, default=8, help="clients measuring the capacity"
    )
    p.add_argument(
        "--timeout", type=positive_float, default=10.0, help="client seconds per request"
    )
    p.add_argument(
        "--setting",
        action="append",
        default=[],
        metavar="RFCLS_NAME=VALUE",
        help="a server setting other than its default (repeatable)",
    )
    p.add_argument(
        "--out", type=Path, help="path without suffix (default docs/benchmarks/overload-DEVICE)"
    )


def classify_request(samples: int) -> Request:
    rng = np.random.default_rng(0)
    iq = 0.3 * (rng.standard_normal(samples) + 1j * rng.standard_normal(samples))
    return Request(
        "classify",
        "POST",
        "/v1/classify?format=cf32",
        encode(iq, "cf32"),
        {"Content-Type": "application/octet-stream"},
    )


def ms(seconds: float | None) -> float | None:
    return None if seconds is None else round(1000 * seconds, 2)


def latency_summary(answers: list[Answer]) -> dict:
    latencies = [a.latency_s for a in answers]
    return {
        "count": len(answers),
        "p50_ms": ms(quantile(latencies, 0.5)),
        "p99_ms": ms(quantile(latencies, 0.99)),
        "max_ms": ms(max(latencies, default=None)),
    }


async def measure(service: ServiceProcess, args: argparse.Namespace, request: Request) -> dict:
    client = Client("127.0.0.1", service.port, args.timeout)
    # this request's shapes once through the device first: the server warms up at its longest
    # default frame, and on a GPU a shape's first batches are no measure of its capacity
    # the closed loops' clients honour Retry-After as real ones do: re-sent at once, a refusal
    # becomes a storm the server spends its time refusing (a capacity of 2-4 requests/s measured
    # on an H100 that serves 500)
    pause = float(RETRY_AFTER_S)
    warmup = await closed_loop(
        client, lambda _: request, args.concurrency, duration_s=WARMUP_S, pause_after_503_s=pause
    )
    capacity, capacity_answers = args.capacity, []
    if capacity is None:
        capacity_answers = await closed_loop(
            client,
            lambda _: request,
            args.concurrency,
            duration_s=args.capacity_duration,
            pause_after_503_s=pause,
        )
        ok = sum(a.status == 200 for a in capacity_answers)
        capacity = ok / args.capacity_duration
    rate = args.factor * capacity
    rss_before = service.rss_bytes()
    started = time.perf_counter()
    answers = await open_loop(client, request, rate, args.duration)
    client.close()
    return {
        "capacity": capacity,
        "capacity_answers": capacity_answers,
        "warmup_answers": warmup,
        "rate": rate,
        "answers": answers,
        "stale_retries": client.stale_retries,
        "started": started,
        "rss_before": rss_before,
    }


def run(args: argparse.Namespace) -> int:
    load_at_start = load_average()
    overrides = setting_pairs(args.setting)
    # what the service runs with: its defaults and the overrides
    settings = settings_of(overrides)
    device = pick_device(settings.device)  # where the server will run the model
    budget_ms = settings.latency_budget_ms
    request = classify_request(args.samples)
    with watched_service(args.backend, overrides, "overload") as watched:
        service, rss, model = watched.service, watched.rss, watched.model
        before = requests_by_outcome(service.url, args.backend)
        result = asyncio.run(measure(service, args, request))
        after = requests_by_outcome(service.url, args.backend)
        window = window_p99(service.url, args.backend)
        rss_after = service.rss_bytes()
    rss_before, overload_began = result["rss_before"], result["started"] - rss.started
    answers: list[Answer] = result["answers"]
    by_status = statuses(answers)
    admitted = [a for a in answers if a.status == 200]
    refused = [a for a in answers if a.status == 503]
    unanswered = [a for a in answers if a.status == 0]
    client_outcomes = {name: 0 for name in after}
    for a in result["warmup_answers"] + result["capacity_answers"] + answers:
        if a.status:
            client_outcomes[outcome(a.status)] += 1
    server_outcomes = {k: after[k] - before[k] for k in after}
    growth_mib = (rss_after - rss_before) / 2**20
    admitted_summary = latency_summary(admitted)
    refused_summary = latency_summary(refused)
    # every scheduled arrival is sent (open_loop), so the rate sent is the schedule's, over its
    # window: whether the generator kept up shows in how late it sent them
    sent_rate = len(answers) / args.duration
    lateness_p99 = quantile([a.sent_late_s for a in answers], 0.99) or 0.0
    checks = judge(
        answers,
        result["capacity_answers"] if args.capacity is None else None,
        budget_ms,
        growth_mib,
        server_outcomes == client_outcomes,
    )
    report = {
        "command": command_line(),
        "model": {"backend": args.backend, "weights": model.weights},
        "settings": {
            "latency_budget_ms": budget_ms,
            "max_queue_wait_ms": settings.effective_max_queue_wait_ms,
            "max_queue_wait_ceiling_ms": settings.effective_max_queue_wait_ceiling_ms,
            "max_batch": settings.max_batch,
            "max_queue": settings.max_queue,
            "deadline_ms": settings.effective_deadline_ms,
            "workers": settings.workers,
            "samples_per_request": args.samples,
        },
        "capacity_per_s": round(result["capacity"], 1),
        "capacity_measured": args.capacity is None,
        "capacity_answers_by_status": {
            str(k): v for k, v in sorted(statuses(result["capacity_answers"]).items())
        },
        "capacity_closed_loop": latency_summary(
            [a for a in result["capacity_answers"] if a.status == 200]
        ),
        "factor": args.factor,
        "offered_per_s": round(result["rate"], 1),
        "sent": len(answers),
        "sent_per_s": round(sent_rate, 1),
        "send_lateness_p99_ms": ms(lateness_p99),
        "answers_by_status": {str(k): v for k, v in sorted(by_status.items())},
        "admitted": admitted_summary,
        "admitted_per_s": round(len(admitted) / args.duration, 1),
        "server_p99_ms_last_1024_admitted": ms(window),
        "refused_503": refused_summary,
        "refused_with_retry_after": sum(1 for a in refused if a.retry_after),
        "unanswered": len(unanswered),
        "resent_on_closed_idle_connections": result["stale_retries"],
        "unanswered_errors": sorted({a.error or "" for a in unanswered})[:5],
        "server_requests_total": server_outcomes,
        "client_requests_by_outcome": client_outcomes,
        "rss_mib": {
            "before": round(rss_before / 2**20, 1),
            "after": round(rss_after / 2**20, 1),
            "max": round(max(r for _, r in rss.samples) / 2**20, 1),
            "growth": round(growth_mib, 1),
            "bound": MEMORY_BOUND_MIB,
        },
        "checks": checks,
        "passed": all(checks.values()),
        "hardware": hardware(device, load_at_start),
        "versions": versions(),
    }
    write(
        args.out or DOCS / f"overload-{device.type}", report, answers, rss.samples, overload_began
    )
    for name, ok in checks.items():
        print(f"{'PASS' if ok else 'FAIL'}  {name}", file=sys.stderr)
    return 0 if report["passed"] else 1


def judge(
    answers: list[Answer],
    capacity_answers: list[Answer] | None,
    budget_ms: float,
    growth_mib: float,
    counts_agree: bool,
) -> dict[str, bool]:
    """The run's checks by name. capacity_answers: the closed loop's, None when --capacity gave
    the capacity."""
    admitted = latency_summary([a for a in answers if a.status == 200])
    refused = [a for a in answers if a.status == 503]
    refused_p99_ms = latency_summary(refused)["p99_ms"]
    lateness_p99 = quantile([a.sent_late_s for a in answers], 0.99) or 0.0
    capacity_admitted = capacity_answers is None or sum(
        a.status == 200 for a in capacity_answers
    ) >= CAPACITY_ADMITTED_SHARE * len(capacity_answers)
    return {
        # else 3x "capacity" is no overload at all
        f"capacity phase admitted (>= {CAPACITY_ADMITTED_SHARE:.0%} answered 200)": (
            capacity_admitted
        ),
        # else the figures describe the load generator, not the server
        "load generator kept up (p99 send lateness <= 10 ms)": lateness_p99 <= 0.010,
        "every request answered": all(a.status for a in answers),
        # none admitted is no evidence of admitted latency
        "admitted p99 within the budget": admitted["count"] > 0 and admitted["p99_ms"] <= budget_ms,
        "refusals are 503 with Retry-After": all(a.retry_after for a in refused)
        and set(statuses(answers)) <= {200, 503},
        "refusals within the budget (p99)": (refused_p99_ms or 0) <= budget_ms,
        f"RSS growth within {MEMORY_BOUND_MIB} MiB": growth_mib <= MEMORY_BOUND_MIB,
        "server counts equal client counts": counts_agree,
    }


def statuses(answers: list[Answer]) -> dict[int, int]:
    """How many answers of each HTTP status (0: none)."""
    return dict(Counter(a.status for a in answers))


def requests_by_outcome(url: str, backend: str) -> dict[str, float]:
    metrics = scrape(url)
    return {
        name: metrics[
            series("rfcls_requests_total", route="/v1/classify", backend=backend, outcome=name)
        ]
        for name in ("ok", "client_error", "rejected", "timeout", "error")
    }


def window_p99(url: str, backend: str) -> float:
    """The server's p99 over its last admitted requests; with several workers, the p99 of the one
    that answered the scrape (the series has its pid as a label)."""
    return next(
        value
        for (name, labels), value in scrape(url).items()
        if name == "rfcls_latency_p99_seconds" and ("backend", backend) in labels
    )


def write(
    out: Path, report: dict, answers: list[Answer], rss: list[tuple[float, int]], began: float
) -> None:
    out.parent.mkdir(parents=True, exist_ok=True)
    out.with_suffix(".json").write_text(json.dumps(report, indent=2) + "\n")
    out.with_suffix(".md").write_text(markdown(report, out.with_suffix(".png").name))
    plot(out.with_suffix(".png"), report, answers, rss, began)


def markdown(r: dict, png: str) -> str:
    s, a, x = r["settings"], r["admitted"], r["refused_503"]
    one_worker = " (one worker's)" if s["workers"] > 1 else ""
    rows = [
        ("capacity (closed loop, measured)" if r["capacity_measured"] else "capacity (given)",
         f"{r['capacity_per_s']} requests/s; answers by status "
         + ", ".join(f"{k}: {v}" for k, v in r["capacity_answers_by_status"].items())),
        ("offered (Poisson)", f"{r['offered_per_s']} requests/s ({r['factor']}x); sent "
         f"{r['sent']} at {r['sent_per_s']}/s, p99 send lateness {r['send_lateness_p99_ms']} ms"),
        ("answers by status", ", ".join(f"{k}: {v}" for k, v in r["answers_by_status"].items())),
        ("admitted (200)", f"{a['count']} ({r['admitted_per_s']}/s); p50 {a['p50_ms']} ms, "
         f"p99 {a['p99_ms']} ms, max {a['max_ms']} ms; budget {s['latency_budget_ms']} ms; "
         f"server-side p99 of the last 1024{one_worker}: "
         f"{r['server_p99_ms_last_1024_admitted']} ms"),
        ("refused (503)", f"{x['count']}, {r['refused_with_retry_after']} with Retry-After; "
         f"p50 {x['p50_ms']} ms, p99 {x['p99_ms']} ms, max {x['max_ms']} ms"),
        ("unanswered", str(r["unanswered"])),
        ("server RSS (MiB)", f"{r['rss_mib']['before']} before, {r['rss_mib']['after']} after, "
         f"max {r['rss_mib']['max']}; growth {r['rss_mib']['growth']} "
         f"(bound {r['rss_mib']['bound']})"),
        ("rfcls_requests_total vs client", f"{r['server_requests_total']} / "
         f"{r['client_requests_by_outcome']}"),
    ]  # fmt: skip
    lines = [
        f"# Overload ({r['hardware']['gpu'] or r['hardware']['cpu_model'] + ', CPU'})",
        "",
        f"Command: `{r['command']}`",
        "",
        *hardware_lines(r["hardware"]),
        f"- versions: {', '.join(f'{k} {v}' for k, v in r['versions'].items())}",
        f"- model: {r['model']['backend']}, {r['model']['weights']} weights; "
        f"{s['samples_per_request']} cf32 samples per request (v1 binary)",
        f"- service settings: budget {s['latency_budget_ms']} ms, queue-wait limit "
        f"{s['max_queue_wait_ms']} ms rising to {s['max_queue_wait_ceiling_ms']} ms while "
        f"answers are quick, max batch {s['max_batch']}, max queue {s['max_queue']}, "
        f"deadline {s['deadline_ms']} ms, {s['workers']} worker process(es)",
        "- latencies are client-side, from writing the request to the end of the answer; the "
        "load generator runs on the same cores as the server",
        "",
        "| what | measured |",
        "| --- | --- |",
        *(f"| {k} | {v} |" for k, v in rows),
        "",
        "| check | result |",
        "| --- | --- |",
        *(f"| {k} | {'pass' if ok else 'FAIL'} |" for k, ok in r["checks"].items()),
        "",
        f"![latency and memory over time]({png})",
        "",
    ]
    return "\n".join(lines)


def plot(
    path: Path, r: dict, answers: list[Answer], rss: list[tuple[float, int]], began: float
) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (top, bottom) = plt.subplots(2, 1, figsize=(9, 7))
    first = min((a.sent_at for a in answers), default=0.0)
    for status, colour, label in ((200, "tab:blue", "admitted (200)"), (503, "tab:red", "503")):
        chosen = [a for a in answers if a.status == status]
        top.scatter(
            [a.sent_at - first for a in chosen],
            [1000 * a.latency_s for a in chosen],
            s=2,
            c=colour,
            label=label,
        )
    top.axhline(r["settings"]["latency_budget_ms"], color="k", ls="--", label="budget")
    top.set_yscale("log")
    top.set_xlabel("seconds into the overload (when the request was sent)")
    top.set_ylabel("latency (ms)")
    top.set_title(f"{r['offered_per_s']} requests/s offered ({r['factor']}x capacity)")
    top.legend(markerscale=4)
    bottom.plot([t for t, _ in rss], [b / 2**20 for _, b in rss])
    bottom.axvline(began, color="k", ls=":", label="overload starts")
    bottom.set_xlabel("seconds since the server was ready")
    bottom.set_ylabel("server RSS (MiB)")
    bottom.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def main(argv: list[str] | None = None) -> int:
    return script_main(sys.modules[__name__], argv)


if __name__ == "__main__":
    sys.exit(main())
