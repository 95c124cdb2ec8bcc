"""Soak: --requests (default 100,000) classification requests, valid and invalid mixed, against the
real server (`rfcls serve`, a subprocess) from a separate load process.

    python -m benchmarks.soak          # writes docs/benchmarks/soak-cpu.{json,md,png}

Every kind of request has one right answer (MIX: status, and for refusals the rejection reason),
so any other answer is an error the client did not cause. Passes when every answer is the right
one, the server's resident memory grows by at most MEMORY_BOUND_MIB from the end of the first
WARM_SHARE of the requests to the end, and the server's Prometheus counters (requests by route
and outcome, rejections by reason, frames) equal what the client counted.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import json
import sys
import time
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from benchmarks.cli import DOCS, script_main
from benchmarks.environment import command_line, hardware, hardware_lines, load_average, versions
from benchmarks.live_service import scrape, series, watched_service
from benchmarks.load import Answer, Client, Request, closed_loop, quantile
from preprocessing.formats import encode
from rfmodel.cli_args import positive_float, positive_int
from service.metrics import OUTCOMES, REJECTION_REASONS
from service.protocol.instrumentation import outcome, route_label

MEMORY_BOUND_MIB = 16
WARM_SHARE = 0.1  # requests before the memory baseline: allocator pools and caches fill first
API_KEY = "soak-key"
SAMPLES = 4096
MAX_BODY_BYTES = 65_536  # small, so the oversized-body case costs little to send
# the soak checks leaks and counting, not latency: a slow moment of a shared box must not turn
# a valid request into a 503 or 504
SERVER_SETTINGS = {
    "RFCLS_API_KEY": API_KEY,
    "RFCLS_MAX_BODY_BYTES": str(MAX_BODY_BYTES),
    "RFCLS_MAX_QUEUE_WAIT_MS": "10000",
    "RFCLS_DEADLINE_MS": "10000",
}


@dataclass(frozen=True)
class Kind:
    request: Request
    weight: int  # share of the mix
    status: int
    frames: int = 0  # classified when answered 200
    reason: str | None = None  # rfcls_rejections_total reason when refused


def mix() -> list[Kind]:
    rng = np.random.default_rng(0)
    iq = (0.3 * (rng.standard_normal(SAMPLES) + 1j * rng.standard_normal(SAMPLES))).astype(
        np.complex64
    )
    auth = {"Authorization": f"Bearer {API_KEY}"}
    binary = {**auth, "Content-Type": "application/octet-stream"}
    as_json = {**auth, "Content-Type": "application/json"}
    cf32 = encode(iq, "cf32")

    def v1_json(name: str, body: object) -> Request:
        return Request(name, "POST", "/v1/classify", json.dumps(body).encode(), as_json)

    def v2(name: str, model: str, datatype: str) -> Request:
        # a quarter of the samples: as JSON numbers they would not fit in MAX_BODY_BYTES
        part = iq[: SAMPLES // 4]
        tensor = {"name": "IQ", "shape": [1, part.size, 2], "datatype": datatype}
        tensor["data"] = np.stack([part.real, part.imag], -1).ravel().round(3).tolist()
        body = json.dumps({"inputs": [tensor]}).encode()
        return Request(name, "POST", f"/v2/models/{model}/infer", body, as_json)

    b64 = base64.b64encode(encode(iq, "ci16")).decode()
    nan = np.full(SAMPLES, np.nan, dtype=np.complex64).tobytes()
    return [
        Kind(
            Request("v1 binary cf32", "POST", "/v1/classify?format=cf32", cf32, binary), 40, 200, 1
        ),
        Kind(
            Request(
                "v1 binary 4 frames",
                "POST",
                "/v1/classify?format=cf32&frame_samples=1024",
                cf32,
                binary,
            ),
            10,
            200,
            4,
        ),
        Kind(
            v1_json("v1 JSON base64 ci16", {"frames": [{"data": b64, "format": "ci16"}]}),
            10,
            200,
            1,
        ),
        Kind(v2("v2 JSON FP32", "rfcls", "FP32"), 5, 200, 1),
        Kind(
            Request("NaN samples", "POST", "/v1/classify?format=cf32", nan, binary),
            5,
            400,
            reason="invalid",
        ),
        Kind(
            Request("odd byte count", "POST", "/v1/classify?format=cf32", cf32[:-1], binary),
            5,
            400,
            reason="invalid",
        ),
        Kind(
            Request("malformed JSON", "POST", "/v1/classify", b'{"frames": [', as_json),
            5,
            400,
            reason="invalid",
        ),
        Kind(
            Request("top_k zero", "POST", "/v1/classify?format=cf32&top_k=0", cf32, binary),
            3,
            422,
            reason="invalid",
        ),
        Kind(
            Request(
                "wrong content type",
                "POST",
                "/v1/classify",
                cf32,
                {**auth, "Content-Type": "text/plain"},
            ),
            2,
            415,
            reason="invalid",
        ),
        Kind(
            Request(
                "too many frames",
                "POST",
                "/v1/classify?format=ci8&frame_samples=256",
                encode(np.zeros(65 * 256), "ci8"),
                binary,
            ),
            3,
            413,
            reason="too_large",
        ),
        Kind(
            Request(
                "body over the limit",
                "POST",
                "/v1/classify?format=cf32",
                b"\0" * (MAX_BODY_BYTES + 8),
                binary,
            ),
            2,
            413,
            reason="too_large",
        ),
        Kind(
            Request(
                "no API key",
                "POST",
                "/v1/classify?format=cf32",
                cf32,
                {"Content-Type": "application/octet-stream"},
            ),
            4,
            401,
            reason="unauthorized",
        ),
        Kind(
            Request(
                "wrong API key",
                "POST",
                "/v1/classify?format=cf32",
                cf32,
                {**binary, "Authorization": "Bearer nope"},
            ),
            2,
            401,
            reason="unauthorized",
        ),
        Kind(v2("v2 unknown model", "nothing", "FP32"), 2, 404, reason="invalid"),
        Kind(v2("v2 bad datatype", "rfcls", "FP64"), 2, 400, reason="invalid"),
    ]


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--requests", type=positive_int, default=100_000, help="requests to send")
    p.add_argument("--concurrency", type=positive_int, default=4, help="clients in the closed loop")
    p.add_argument("--backend", default="mha", help="attention backend to serve (default mha)")
    p.add_argument(
        "--timeout", type=positive_float, default=30.0, help="client seconds per request"
    )
    p.add_argument("--out", type=Path, default=DOCS / "soak-cpu", help="path without suffix")


def sequence(kinds: list[Kind], n: int, seed: int = 0) -> list[int]:
    """Which kind the i-th request is: shuffled, in the MIX proportions."""
    weights = np.array([k.weight for k in kinds], dtype=np.float64)
    return (
        np.random.default_rng(seed).choice(len(kinds), size=n, p=weights / weights.sum()).tolist()
    )


def counters(url: str, backend: str) -> dict[str, float]:
    """The server's counters the soak compares, as flat 'name{labels}' keys."""
    metrics = scrape(url)
    out = {}
    for route in ("/v1/classify", "/v2/models/{name}/infer"):
        for name in OUTCOMES:
            key = series("rfcls_requests_total", route=route, backend=backend, outcome=name)
            out[f"requests {route} {name}"] = metrics[key]
    for reason in REJECTION_REASONS:
        out[f"rejections {reason}"] = metrics[series("rfcls_rejections_total", reason=reason)]
    out["frames"] = metrics[series("rfcls_frames_total", backend=backend)]
    return out


def client_counts(kinds: list[Kind], answers: list[Answer]) -> dict[str, float]:
    by_name = {k.request.name: k for k in kinds}
    counts: Counter[str] = Counter()
    for a in answers:
        kind = by_name[a.name]
        route = route_label(kind.request.target.split("?")[0])
        counts[f"requests {route} {outcome(a.status)}"] += 1
        if a.status == kind.status and kind.reason:
            counts[f"rejections {kind.reason}"] += 1
        if a.status == 200:
            counts["frames"] += kind.frames
    return counts


def run(args: argparse.Namespace) -> int:
    load_at_start = load_average()
    kinds = mix()
    order = sequence(kinds, args.requests)
    warm_count = int(WARM_SHARE * args.requests)
    progress = {"done": 0, "warm_rss": None, "started": time.perf_counter()}

    with watched_service(args.backend, SERVER_SETTINGS, "soak") as watched:
        service, rss, model = watched.service, watched.rss, watched.model
        before = counters(service.url, args.backend)
        client = Client("127.0.0.1", service.port, args.timeout)

        def on_answer(_: Answer) -> None:
            progress["done"] += 1
            if progress["done"] == warm_count:
                progress["warm_rss"] = service.rss_bytes()
                progress["warm_at"] = time.perf_counter() - rss.started
            if progress["done"] % 10_000 == 0:
                rate = progress["done"] / (time.perf_counter() - progress["started"])
                print(f"{progress['done']} answers, {rate:.0f}/s", file=sys.stderr, flush=True)

        async def soak() -> list[Answer]:
            try:
                return await closed_loop(
                    client,
                    lambda i: kinds[order[i]].request,
                    args.concurrency,
                    count=args.requests,
                    on_answer=on_answer,
                )
            finally:
                client.close()

        started = time.perf_counter()
        answers = asyncio.run(soak())
        wall = time.perf_counter() - started
        after = counters(service.url, args.backend)
        rss_end = service.rss_bytes()
    server = {k: after[k] - before[k] for k in after}
    client_side = client_counts(kinds, answers)
    mismatched = {
        k: (server[k], client_side.get(k, 0)) for k in server if server[k] != client_side.get(k, 0)
    }
    expected = {k.request.name: k.status for k in kinds}
    wrong = Counter(
        f"{a.name}: {a.status or a.error}" for a in answers if a.status != expected[a.name]
    )
    per_kind = Counter(a.name for a in answers)
    growth_mib = (rss_end - progress["warm_rss"]) / 2**20
    latencies = [a.latency_s for a in answers if a.status == 200]
    checks = {
        "every answer is the right one (no error the client did not cause)": not wrong,
        f"RSS growth within {MEMORY_BOUND_MIB} MiB after the first {WARM_SHARE:.0%}": growth_mib
        <= MEMORY_BOUND_MIB,
        "server counters equal client counts": not mismatched,
    }
    report = {
        "command": command_line(),
        "model": {"backend": args.backend, "weights": model.weights},
        "server_settings": {k: v for k, v in SERVER_SETTINGS.items() if k != "RFCLS_API_KEY"},
        "requests": len(answers),
        "concurrency": args.concurrency,
        "wall_s": round(wall, 1),
        "requests_per_s": round(len(answers) / wall, 1),
        "mix": [
            {"kind": k.request.name, "expected_status": k.status, "sent": per_kind[k.request.name]}
            for k in kinds
        ],
        "wrong_answers": dict(wrong),
        "ok_latency_ms": {
            "p50": round(1000 * quantile(latencies, 0.5), 2) if latencies else None,
            "p99": round(1000 * quantile(latencies, 0.99), 2) if latencies else None,
        },
        "rss_mib": {
            "start": round(rss.samples[0][1] / 2**20, 1) if rss.samples else None,
            "after_warm_share": round(progress["warm_rss"] / 2**20, 1),
            "end": round(rss_end / 2**20, 1),
            "max": round(max([rss_end, *(b for _, b in rss.samples)]) / 2**20, 1),
            "growth_after_warm_share": round(growth_mib, 1),
            "bound": MEMORY_BOUND_MIB,
        },
        "server_counters": server,
        "client_counts": dict(client_side),
        "mismatched_counters": mismatched,
        "checks": checks,
        "passed": all(checks.values()),
        "hardware": cpu_hardware(load_at_start),
        "versions": versions(),
    }
    write(args.out, report, rss.samples, progress.get("warm_at"))
    for name, ok in checks.items():
        print(f"{'PASS' if ok else 'FAIL'}  {name}", file=sys.stderr)
    return 0 if report["passed"] else 1


def cpu_hardware(load_at_start: list[float]) -> dict:
    import torch

    return hardware(torch.device("cpu"), load_at_start)


def write(out: Path, report: dict, rss: list[tuple[float, int]], warm_at: float | None) -> None:
    out.parent.mkdir(parents=True, exist_ok=True)
    out.with_suffix(".json").write_text(json.dumps(report, indent=2) + "\n")
    out.with_suffix(".md").write_text(markdown(report, out.with_suffix(".png").name))
    plot(out.with_suffix(".png"), report, rss, warm_at)


def markdown(r: dict, png: str) -> str:
    m = r["rss_mib"]
    lines = [
        f"# Soak ({r['hardware']['cpu_model']}, CPU)",
        "",
        f"Command: `{r['command']}`",
        "",
        *hardware_lines(r["hardware"]),
        f"- versions: {', '.join(f'{k} {v}' for k, v in r['versions'].items())}",
        f"- model: {r['model']['backend']}, {r['model']['weights']} weights; API key on; "
        f"settings {r['server_settings']}",
        f"- {r['requests']} requests from {r['concurrency']} closed-loop clients in "
        f"{r['wall_s']} s ({r['requests_per_s']}/s); 200 answers p50 "
        f"{r['ok_latency_ms']['p50']} ms, p99 {r['ok_latency_ms']['p99']} ms",
        f"- server RSS (MiB): {m['start']} at the start, {m['after_warm_share']} after the first "
        f"{WARM_SHARE:.0%} of requests, {m['end']} at the end, max {m['max']}; growth "
        f"{m['growth_after_warm_share']} (bound {m['bound']})",
        f"- answers other than the expected one: {r['wrong_answers'] or 'none'}",
        "",
        "| request kind | expected status | sent |",
        "| --- | ---: | ---: |",
        *(f"| {k['kind']} | {k['expected_status']} | {k['sent']} |" for k in r["mix"]),
        "",
        "| server counter (delta over the run) | server | client |",
        "| --- | ---: | ---: |",
        *(
            f"| {k} | {v:g} | {r['client_counts'].get(k, 0):g} |"
            for k, v in r["server_counters"].items()
        ),
        "",
        "| check | result |",
        "| --- | --- |",
        *(f"| {k} | {'pass' if ok else 'FAIL'} |" for k, ok in r["checks"].items()),
        "",
        f"![server memory over the run]({png})",
        "",
    ]
    return "\n".join(lines)


def plot(path: Path, r: dict, rss: list[tuple[float, int]], warm_at: float | None) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(9, 4))
    ax.plot([t for t, _ in rss], [b / 2**20 for _, b in rss])
    if warm_at is not None:
        ax.axvline(warm_at, color="k", ls=":", label=f"first {WARM_SHARE:.0%} of requests")
        ax.legend()
    ax.set_xlabel("seconds")
    ax.set_ylabel("server RSS (MiB)")
    ax.set_title(f"{r['requests']} requests, valid and invalid mixed")
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def main(argv: list[str] | None = None) -> int:
    return script_main(sys.modules[__name__], argv)


if __name__ == "__main__":
    sys.exit(main())
